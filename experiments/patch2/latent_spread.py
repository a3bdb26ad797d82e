"""Per-frame spread of generated latents against real ones, per background colour.

A frame whose latent has collapsed towards a constant (std far below the real clips') decodes
to artefacts; this prints, for each background, the per-frame std of generated latents and of
real Shapes World clips encoded by the same VAE.

    python experiments/patch2/latent_spread.py [--model PATH] [--seeds 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from studio.generate import load_pipeline
from world.shapes_world import ShapesWorld

BACKGROUNDS = ("black", "white", "gray", "beige")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    pipe = load_pipeline(args.model)
    world = ShapesWorld(seed=0)
    print(
        "| background | real: per-frame std (min / mean) | generated: min / mean over frames, per seed |"
    )
    print("|---|---|---|")
    for bg in BACKGROUNDS:
        real = []
        for i in range(200):
            clip = world.sample(i, kind="video1", frames=16)
            if bg in clip.caption:
                x = torch.from_numpy(clip.frames).float().div(127.5).sub(1).permute(0, 3, 1, 2)
                with torch.no_grad():
                    z = pipe.encode_frames(x[None])  # (1, C, F, h, w)
                real.append(z[0].std(dim=(0, 2, 3)).numpy())
            if len(real) >= 3:
                break
        gen = []
        for seed in range(args.seeds):
            lat = pipe(
                f"a yellow circle moving left on a {bg} background",
                num_frames=16,
                num_inference_steps=25,
                guidance_scale=4.0,
                generator=torch.Generator().manual_seed(seed),
                output_type="latent",
            ).frames
            lat = (lat[0] if isinstance(lat, (list, tuple)) else lat).float()[0]
            s = lat.std(dim=(0, 2, 3)).numpy()
            gen.append(f"{s.min():.2f} / {s.mean():.2f}")
        real_txt = f"{np.min(real):.2f} / {np.mean(real):.2f}" if real else "(none drawn)"
        print(f"| {bg} | {real_txt} | {'; '.join(gen)} |")


if __name__ == "__main__":
    main()
