"""Train the frame-wise VAE (diffusers ``AutoencoderKL``) on Shapes World frames.

    studio train vae --config configs/train/vae_shapes.yaml [key=value ...]

Reconstruction (L1 + MSE) with a small KL term; frames are rendered on the fly, one random
frame per sample, so the VAE sees images and video frames alike. At the end the latent
statistics set ``scaling_factor``/``shift_factor`` so the diffusion model sees unit-variance
latents, and the model is saved in diffusers layout to ``<output_dir>/final``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from pipelines.components import VAE_MODELS
from world.shapes_world import ShapesWorld

from .checkpoint import InterruptFlag, optimizer_step, resume, start_run
from .config import VAETrainConfig, resolve_mixed_precision


def frame_batch(
    world: ShapesWorld, step: int, batch_size: int, rank: int, seed: int, kinds: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Deterministic batch for (seed, step, rank): (B, 3, S, S) in [-1, 1]; with ``kinds``
    also (B,) bool, True for frames of reference samples (patterned sprites) — half of
    those are the reference image itself rather than a clip frame."""
    rng = np.random.default_rng([seed, step, rank])
    frames, sprite = [], []
    for _ in range(batch_size):
        sample = world.sample(int(rng.integers(1 << 62)))
        is_ref = bool(sample.references)
        if is_ref and rng.random() < 0.5:
            frames.append(sample.references[rng.integers(len(sample.references))])
        else:
            frames.append(sample.frames[rng.integers(len(sample.frames))])
        sprite.append(is_ref)
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return (x, torch.tensor(sprite)) if kinds else x


class ReconstructionModel(torch.nn.Module):
    """Wraps the VAE so one ``forward`` gives reconstruction, KL and the posterior mean (the
    anchor loss's input) from one encoding (DDP syncs on forward)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(
        self, x: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x).latent_dist
        recon = self.vae.decode(posterior.sample(generator=generator)).sample
        return recon, posterior.kl(), posterior.mean


def foreground_weight(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weight (B, 1, H, W): 1 on the background, 1 + ``weight`` elsewhere.

    Objects cover a few percent of a Shapes World frame; without this the loss is dominated by
    the flat background and the VAE learns object colours late (yellow, orange and red blur into
    one). The background is the per-channel median of each frame's border ring.
    """
    border = torch.cat(
        [x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1
    )  # (B, 3, 4S)
    bg = border.median(dim=-1).values[..., None, None]  # (B, 3, 1, 1)
    fg = ((x - bg).abs().amax(dim=1, keepdim=True) > 0.05).to(x.dtype)
    return 1.0 + weight * fg


@torch.no_grad()
def latent_stats(vae, world: ShapesWorld, n: int, seed: int) -> tuple[float, float]:
    x = frame_batch(world, 10**9, n, 0, seed).to(vae.device)
    z = vae.encode(x).latent_dist.mean
    return z.mean().item(), z.std().item()


def main(cfg: VAETrainConfig) -> Path:
    # ---------------------------------------------------------------- setup
    accelerator, out = start_run(cfg, resolve_mixed_precision(cfg.mixed_precision))
    world = ShapesWorld(size=cfg.size, seed=cfg.seed, mix=cfg.mix)
    if cfg.init:
        vae = AutoencoderKL.from_pretrained(cfg.init, use_safetensors=True)
        # frozen copy of the starting encoder: the anchor for plain frames' latents
        anchor = (
            copy.deepcopy(vae).requires_grad_(False).eval().to(accelerator.device)
            if cfg.anchor_weight
            else None
        )
    else:
        vae = VAE_MODELS[cfg.model](**{"sample_size": cfg.size, **cfg.model_kwargs})
        anchor = None
    model = ReconstructionModel(vae)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / max(1, cfg.warmup))
            * 0.5
            * (1 + math.cos(math.pi * min(s / cfg.steps, 1.0)))
        ),
    )
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)

    # ---------------------------------------------------------------- resume
    start = resume(accelerator, out)

    # ---------------------------------------------------------------- train
    log = (out / "log.jsonl").open("a") if accelerator.is_main_process else None
    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        desc="vae",
        disable=not accelerator.is_main_process,
    )
    t0, seen = time.time(), 0
    interrupt = InterruptFlag()  # Ctrl-C: finish the step, checkpoint it, then stop
    try:
        for step in bar:
            x, sprite = frame_batch(
                world, step, cfg.batch_size, accelerator.process_index, cfg.seed, kinds=True
            )
            x = x.to(accelerator.device)
            generator = torch.Generator(x.device).manual_seed(cfg.seed * 7919 + step)
            with accelerator.autocast():
                recon, kl, mean = model(x, generator)
            recon = recon.float()
            w = foreground_weight(x, cfg.foreground_weight)
            err = (recon - x) ** 2 + cfg.l1_weight * (recon - x).abs()
            loss_rec = (err * w).mean() / w.mean()
            loss_kl = kl.float().mean() / x[0].numel()
            loss = loss_rec + cfg.kl_weight * loss_kl
            plain = (~sprite).to(x.device)
            if anchor is not None and plain.any():
                # the encoder's means of plain frames stay where the diffusion model knows them
                with torch.no_grad():
                    target = anchor.encode(x[plain]).latent_dist.mean
                loss = loss + cfg.anchor_weight * torch.nn.functional.mse_loss(
                    mean[plain].float(), target
                )
            # the rate this step trains at (the step advances it)
            lr_used = schedule.get_last_lr()[0]
            optimizer_step(accelerator, model, optimizer, schedule, loss, grad_clip=1.0)
            seen += x.shape[0] * accelerator.num_processes
            if (step + 1) % cfg.log_every == 0:
                loss_avg = accelerator.reduce(loss_rec.detach(), reduction="mean").item()
                rate = seen / (time.time() - t0)
                bar.set_postfix(loss=f"{loss_avg:.4f}", fps=f"{rate:.0f}")
                if log:
                    entry = {
                        "step": step + 1,
                        "loss": loss_avg,
                        "frames_per_s": rate,
                        "lr": lr_used,
                        "processes": accelerator.num_processes,
                    }
                    log.write(json.dumps(entry) + "\n")
                    log.flush()
            due = (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps
            interrupt.checkpoint(accelerator, out, step + 1, due)
    finally:  # on any way out: a later Ctrl-C in this process acts as usual
        interrupt.restore()

    # ---------------------------------------------------------------- export
    accelerator.wait_for_everyone()
    final = out / "final"
    if accelerator.is_main_process:
        vae = accelerator.unwrap_model(model).vae.eval()
        if cfg.init:  # fine-tuned: the starting VAE's scaling, which the DiT was trained with
            mean, std = vae.config.shift_factor, 1.0 / vae.config.scaling_factor
        else:
            mean, std = latent_stats(vae, world, 256, cfg.seed)
            vae.register_to_config(shift_factor=mean, scaling_factor=1.0 / std)
        vae.save_pretrained(final)
        accelerator.print(f"saved VAE to {final} (latent mean {mean:.3f}, std {std:.3f})")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the process group (see studio/batch.py)
    return final
