"""Carry a trained pipeline onto another VAE's latent space (issue 33: the 16-channel VAE
that keeps sprites) by linear maps between the two latents, before any retraining.

    python -m train.latent_bridge PIPELINE NEW_VAE OUT [--clips 400]

Both VAEs encode the same Shapes World frames (clips and images, as the video model trains
on); per patch of the transformer (p × p latent pixels, all channels) two linear maps are
fitted on them: old patch ← new patch, orthonormal (Procrustes, so that white noise stays
white noise), and new patch ← old patch, a ridge regression. The patch embedding
reads a new latent through the first (its convolution composed with the map), and the
output layer writes a new latent through the second (the model predicts the clean sample,
``prediction_type: sample``, so its output is a latent). Every other weight is kept, so the
carried model draws in the new latent space what it drew in the old one, as far as a linear
map can say it; what the old latent could not hold (sprite patterns) it has yet to learn.
Both transformers (the video model and the first-frame image model, each at its own patch
size) are carried; OUT is the pipeline with the new VAE, saved in fp32 for training on.
Held-out fits (R² on a quarter of the patches) are printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from models.video_dit import VideoDiT
from pipelines.components import load_vae
from pipelines.text_to_video import ShapesVideoPipeline
from train.latent_cache import encode_videos
from world.shapes_world import ShapesWorld

KINDS = ("video1", "video2", "image")
SEED = 424_242  # Shapes World indices apart from the training caches' (seed 0)


def frames(n: int, per_clip: int = 4) -> torch.Tensor:
    """(n, per_clip, 3, 64, 64) pixels in [-1, 1]: the first frames of Shapes World samples
    of the kinds the video model trains on (an image repeated)."""
    world = ShapesWorld(size=64, frames=16, seed=SEED)
    clips = []
    for i in range(n):
        f = world.sample(i, kind=KINDS[i % len(KINDS)]).frames
        clips.append(np.resize(f, (per_clip, *f.shape[1:])))
    px = torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3).float()
    return px / 127.5 - 1.0


def patches(z: torch.Tensor, p: int) -> torch.Tensor:
    """Latents (B, C, F, H, W) → (B·F·H/p·W/p, p·p·C), each row one patch in the order
    (row, column, channel) that VideoDiT's output layer writes."""
    b, c, f, h, w = z.shape
    z = z.permute(0, 2, 3, 4, 1).reshape(b, f, h // p, p, w // p, p, c)
    return z.permute(0, 1, 2, 4, 3, 5, 6).reshape(-1, p * p * c)


def held_out_r2(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean over output dimensions of 1 − residual / total sum of squares."""
    r2 = 1 - ((pred - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    return float(r2.mean())


def procrustes(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """y − ȳ ≈ (x − x̄) @ W with W (Dx, Dy) of orthonormal columns (Dx ≥ Dy), fitted on 3/4
    of the rows, as [W; ȳ − x̄ W] → (that (Dx + 1, Dy), held-out mean R²). Orthonormal, the
    map sends white noise to white noise: a noised new latent reaches the patch embedding
    as the noised old latent it was trained on would, noise included."""
    x, y = x.double(), y.double()
    n = len(x) * 3 // 4
    mx, my = x[:n].mean(0), y[:n].mean(0)
    u, _, vh = torch.linalg.svd((x[:n] - mx).T @ (y[:n] - my), full_matrices=False)
    w = u @ vh  # (Dx, Dy), WᵀW = I
    full = torch.cat([w, (my - mx @ w)[None]])
    return full.float(), held_out_r2(x[n:] @ w + full[-1], y[n:])


def ridge(x: torch.Tensor, y: torch.Tensor, lam: float = 1e-3) -> tuple[torch.Tensor, float]:
    """y ≈ [x, 1] @ W fitted on 3/4 of the rows → (W (Dx + 1, Dy), held-out mean R²)."""
    x1 = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    y = y.double()
    n = len(x1) * 3 // 4
    gram = x1[:n].T @ x1[:n] + lam * n * torch.eye(x1.shape[1], dtype=x1.dtype)
    w = torch.linalg.solve(gram, x1[:n].T @ y[:n])
    return w.float(), held_out_r2(x1[n:] @ w, y[n:])


@torch.no_grad()
def carry(model: VideoDiT, z_old: torch.Tensor, z_new: torch.Tensor) -> VideoDiT:
    """``model`` (trained on ``z_old``'s latent) with its patch embedding and output layer
    composed with the fitted maps, reading and writing ``z_new``'s."""
    if model.config.prediction_type != "sample":
        raise ValueError("the output map needs a model that predicts the clean sample")
    p, c_new = model.config.patch_size, z_new.shape[1]
    old, new = patches(z_old, p), patches(z_new, p)
    a, r2_in = procrustes(new, old)  # old patch ≈ [new patch, 1] @ a, noise kept white
    b, r2_out = ridge(old, new)  # new patch ≈ [old patch, 1] @ b
    print(f"patch {p}: R² old←new {r2_in:.3f}, new←old {r2_out:.3f}")
    carried = VideoDiT.from_config({**model.config, "in_channels": c_new}).float()
    state = {
        k: v for k, v in model.state_dict().items() if not k.startswith(("patch.", "proj_out."))
    }
    missing = carried.load_state_dict(state, strict=False).missing_keys
    assert set(missing) == {"patch.weight", "patch.bias", "proj_out.weight", "proj_out.bias"}, (
        missing
    )
    w = model.patch.weight.float()  # (D, C_old, p, p)
    d = w.shape[0]
    w_flat = w.permute(0, 2, 3, 1).reshape(d, -1)  # (D, p·p·C_old), patch order
    new_flat = w_flat @ a[:-1].T  # (D, p·p·C_new)
    carried.patch.weight.copy_(new_flat.reshape(d, p, p, c_new).permute(0, 3, 1, 2))
    carried.patch.bias.copy_(model.patch.bias.float() + w_flat @ a[-1])
    wo, bo = model.proj_out.weight.float(), model.proj_out.bias.float()  # (p·p·C_old, D)
    carried.proj_out.weight.copy_(b[:-1].T @ wo)
    carried.proj_out.bias.copy_(b[:-1].T @ bo + b[-1])
    return carried


def bridge(pipe: ShapesVideoPipeline, new_vae, clips: int = 400) -> ShapesVideoPipeline:
    """``pipe`` with ``new_vae`` and its transformers carried onto that VAE's latent (fp32),
    fitted on ``clips`` Shapes World samples; ``pipe`` itself is changed in place."""
    px = frames(clips)
    with torch.no_grad():
        z_old = encode_videos(pipe.vae.float().eval(), px).float()
        z_new = encode_videos(new_vae.float().eval(), px).float()
    modules = {"vae": new_vae, "transformer": carry(pipe.transformer.float(), z_old, z_new)}
    if getattr(pipe, "image_transformer", None) is not None:
        modules["image_transformer"] = carry(pipe.image_transformer.float(), z_old, z_new)
    pipe.register_modules(**modules)
    return pipe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("vae", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--clips", type=int, default=400)
    args = parser.parse_args(argv)
    pipe = ShapesVideoPipeline.from_pretrained(args.pipeline)
    bridge(pipe, load_vae(str(args.vae)), args.clips)
    pipe.save_pretrained(args.out, save_text_encoder=False)
    print(f"{args.pipeline} on {args.vae} -> {args.out}")


if __name__ == "__main__":
    main()
