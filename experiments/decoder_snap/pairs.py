"""Pairs for a decoder that knows the generator's latents (issue 35: squares come out round).

    python experiments/decoder_snap/pairs.py OUT.pt [--model studio/default_model]
        [--clips 1200] [--images 3000] [--seed 77]

The generator's clips are judged after the VAE decodes them, and the VAE's decoder has only
ever seen latents of rendered frames. A generated latent is not one: its squares sit between
the rendered square's latent and the circle's, and the decoder draws them round. Here the
shipped generator redraws rendered training samples from part-way down its own schedule
(SDEdit: the rendered latent noised to sigma, then the pipeline's sampler from there to 0 at
its guidance), so each redrawn latent has the generator's faults and a rendered frame it
came from. Pairs whose redrawn object moved or vanished (foreground IoU of the old decoder's
frame against the render < ``--min-iou``) are dropped: the decoder must sharpen what is
there, not draw what is not.

Video pairs: whole clips by the video model (12 Euler steps at guidance 3, started at sigma
0.83, 0.71 or 0.29, the schedule's last three); image pairs: single frames by the first-frame
image model (25 stochastic steps, shift 4, guidance 2, started at sigma 0.45-0.87). Prompts
are the renderer's training captions (seed apart from the training caches'); never the
evaluation suites'.

OUT holds ``latents`` (N, C, h, w) float16 normalised as the pipeline's, ``frames`` (N, 3, H,
W) uint8 renders, ``kind`` (N,) 0 video / 1 image, ``sigma`` (N,) the start.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from pipelines.text_to_video import ShapesVideoPipeline
from world.shapes_world import ShapesWorld


def foreground(px: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] → (N, H, W) bool: pixels away from the border's median."""
    border = torch.cat([px[..., 0, :], px[..., -1, :], px[..., :, 0], px[..., :, -1]], dim=-1)
    bg = border.median(dim=-1).values[..., None, None]
    return (px - bg).abs().amax(dim=1) > 0.25


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


@torch.no_grad()
def redraw(pipe, model, scheduler, z, captions, start, guidance, generator):
    """SDEdit: normalised latents z (B, C, F, h, w) noised to the schedule's ``start``-th sigma
    and sampled from there to 0 as the pipeline does (guided, x0 → velocity)."""
    text, mask = pipe.encode_prompt(captions, [""] * len(captions), z.device)
    scheduler.set_timesteps(len(scheduler.timesteps))  # resets the step index
    sigma0 = scheduler.sigmas[start]
    noise = torch.randn(z.shape, generator=generator)
    latents = (1 - sigma0) * z + sigma0 * noise
    scheduler.set_begin_index(start)
    kw = {"generator": generator} if scheduler.config.stochastic_sampling else {}
    for t in scheduler.timesteps[start:]:
        sigma = t / scheduler.config.num_train_timesteps
        model_in = torch.cat([latents, latents])
        out = model(model_in, t.expand(model_in.shape[0]), text, mask).sample.float()
        uncond, cond = model.to_velocity(out, model_in, sigma).chunk(2)
        velocity = uncond + guidance * (cond - uncond)
        latents = scheduler.step(velocity, t, latents, return_dict=False, **kw)[0]
    return latents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--model", default="studio/default_model")
    ap.add_argument("--clips", type=int, default=1200)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=77)
    ap.add_argument("--min-iou", type=float, default=0.5)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    pipe = ShapesVideoPipeline.from_pretrained(args.model)
    space = pipe.latent_space
    world = ShapesWorld(size=64, frames=16, seed=args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    video_sched = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    video_sched.set_timesteps(12)
    image_sched = FlowMatchEulerDiscreteScheduler.from_config(
        pipe.scheduler.config,
        shift=pipe.config.get("image_shift") or pipe.scheduler.config.shift,
        stochastic_sampling=bool(pipe.config.get("image_stochastic")),
    )
    image_sched.set_timesteps(pipe.config.get("first_frame_steps") or 25)
    jobs = [("video", n) for n in range(0, args.clips, args.batch)]
    jobs += [("image", n) for n in range(0, args.images, args.batch * 8)]
    lat, px, kinds, sigmas, kept, seen = [], [], [], [], 0, 0
    t0 = time.time()
    for j, (kind, n0) in enumerate(jobs):
        if kind == "video":
            idx = range(n0, min(n0 + args.batch, args.clips))
            samples = [world.sample(i, kind=("video1", "video2")[i % 2]) for i in idx]
            sched, model, guidance = video_sched, pipe.transformer, 3.0
            start = int(rng.choice([9, 10, 11]))
        else:
            idx = range(n0, min(n0 + args.batch * 8, args.images))
            samples = [world.sample(10**7 + i, kind="image") for i in idx]
            sched, model = image_sched, pipe.image_transformer
            guidance = pipe.config.get("first_frame_guidance") or 2.0
            start = int(rng.integers(8, 21))  # sigma 0.87 .. 0.45
        frames = torch.from_numpy(np.stack([s.frames for s in samples]))  # (B, F, H, W, 3)
        pixels = frames.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0  # (B, F, 3, H, W)
        z = space.encode(pixels)
        out = redraw(
            pipe, model, sched, z, [s.caption for s in samples], start, guidance, generator
        )
        flat_z = out.permute(0, 2, 1, 3, 4).reshape(-1, *out.shape[1:2], *out.shape[3:])
        flat_px = pixels.reshape(-1, *pixels.shape[2:])
        old = space.decode(out).reshape(-1, *pixels.shape[2:]) * 2 - 1
        ok = iou(foreground(old), foreground(flat_px)) >= args.min_iou
        seen += len(ok)
        kept += int(ok.sum())
        lat.append(flat_z[ok].half())
        px.append(frames.reshape(-1, *frames.shape[2:]).permute(0, 3, 1, 2)[ok])
        kinds.append(torch.full((int(ok.sum()),), int(kind == "image")))
        sigmas.append(torch.full((int(ok.sum()),), float(sched.sigmas[start])))
        if j % 10 == 0:
            print(
                f"{j + 1}/{len(jobs)} {kind} kept {kept}/{seen} frames, {time.time() - t0:.0f} s",
                flush=True,
            )
    torch.save(
        {
            "latents": torch.cat(lat),
            "frames": torch.cat(px),
            "kind": torch.cat(kinds),
            "sigma": torch.cat(sigmas),
            "model": args.model,
        },
        args.out,
    )
    print(f"saved {kept} of {seen} frames to {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
