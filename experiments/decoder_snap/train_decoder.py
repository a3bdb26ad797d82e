"""Fine-tune the VAE's decoder on the generator's own latents (pairs.py), encoder frozen.

    python experiments/decoder_snap/train_decoder.py PAIRS.pt OUT_PIPELINE
        [--model studio/default_model] [--steps 3000] [--batch 32] [--lr 2e-4] [--clean 0.25]

Each batch mixes redrawn latents → their renders with a share (``--clean``) of rendered
frames through the frozen encoder → themselves, so a clean latent still decodes as before.
The loss is the VAE trainer's (foreground-weighted MSE + L1). The encoder, the latent
scaling and every other component stay as they are: OUT_PIPELINE is MODEL with the new
decoder, ready for ``studio eval ... --model OUT_PIPELINE``. Checkpoints every 500 steps
(``OUT_PIPELINE.ckpt``) resume exactly.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from train.train_vae import foreground_weight, frame_batch
from world.shapes_world import ShapesWorld


def loss_fn(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    w = foreground_weight(x, 4.0)
    err = (recon - x) ** 2 + (recon - x).abs()
    return (err * w).mean() / w.mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs")
    ap.add_argument("out")
    ap.add_argument("--model", default="studio/default_model")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--clean", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument(
        "--sprite-mix",
        action="store_true",
        help="clean frames in the sprite VAE's mix (half patterned sprites), for a VAE that "
        "must keep them (configs/train/vae_sprites.yaml)",
    )
    args = ap.parse_args()
    out, ckpt = Path(args.out), Path(args.out + ".ckpt")

    vae = AutoencoderKL.from_pretrained(Path(args.model) / "vae")
    vae.encoder.requires_grad_(False)
    if vae.quant_conv is not None:
        vae.quant_conv.requires_grad_(False)
    shift, scale = vae.config.shift_factor, vae.config.scaling_factor
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / args.steps))
    )
    data = torch.load(args.pairs, weights_only=True)
    n = len(data["latents"])
    n_val = max(64, n // 20)  # the last 5 %: validation
    z_all = data["latents"].float() / scale + shift  # raw latents, as the decoder reads them
    x_all = data["frames"].float() / 127.5 - 1.0
    mix = (
        {"image": 0.15, "video1": 0.15, "video2": 0.1, "reference": 0.5, "continuation": 0.1}
        if args.sprite_mix
        else None
    )
    world = ShapesWorld(size=64, seed=args.seed, mix=mix)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = state["step"]
        print(f"resumed at step {start}")

    @torch.no_grad()
    def validate() -> float:
        vae.eval()
        losses = [
            loss_fn(
                vae.decode(z_all[n - n_val + i : n - n_val + i + 64]).sample,
                x_all[n - n_val + i : n - n_val + i + 64],
            ).item()
            for i in range(0, n_val, 64)
        ]
        vae.train()
        return sum(losses) / len(losses)

    print(f"{n} pairs, {n_val} held out; validation loss at start {validate():.4f}", flush=True)
    n_clean = round(args.batch * args.clean)
    t0 = time.time()
    for step in range(start, args.steps):
        g = torch.Generator().manual_seed(args.seed * 100_003 + step)
        idx = torch.randint(0, n - n_val, (args.batch - n_clean,), generator=g)
        z, x = z_all[idx], x_all[idx]
        if n_clean:
            clean = frame_batch(world, step, n_clean, 0, args.seed)
            with torch.no_grad():
                zc = vae.encode(clean).latent_dist.mean
            z, x = torch.cat([z, zc]), torch.cat([x, clean])
        loss = loss_fn(vae.decode(z).sample, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1} loss {loss.item():.4f} {time.time() - t0:.0f} s", flush=True)
        if (step + 1) % 500 == 0 or step + 1 == args.steps:
            tmp = ckpt.with_suffix(".tmp")
            torch.save(
                {
                    "vae": vae.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "step": step + 1,
                },
                tmp,
            )
            tmp.replace(ckpt)
            print(f"step {step + 1}: validation loss {validate():.4f}", flush=True)

    # the pipeline: MODEL with the new decoder
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(args.model, out)
    vae.eval().save_pretrained(out / "vae")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
