"""Upper bound set by the VAE: judge ground-truth clips after an encode → decode round trip.

    python benchmarks/vae_roundtrip.py [MODEL_DIR] [N]

Renders N held-out Shapes World clips (one and two objects, exclusions off, seed 555),
passes them through the model's VAE and judges them with `studio eval`'s judge. 100 % means
the VAE is not what limits the generated videos' scores.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from diffusers import AutoencoderKL

from evals.contract import Expectation, ExpectedObject
from evals.shapes import judge
from studio.generate import default_model_path
from world.shapes_world import ShapesWorld


def main(model_dir: str, n: int = 40) -> dict[str, float]:
    vae = AutoencoderKL.from_pretrained(model_dir, subfolder="vae", use_safetensors=True).eval()
    world = ShapesWorld(seed=555, exclusions=False)
    results = []
    for i in range(n):
        sample = world.sample(i, kind="video1" if i % 2 else "video2")
        x = torch.from_numpy(sample.frames).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            y = vae.decode(vae.encode(x).latent_dist.mean).sample
        frames = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        objects = [
            ExpectedObject(o["color"], o["shape"], o["size"], o["motion"])
            for o in sample.meta["objects"]
        ]
        results.append(judge(frames, Expectation(objects, sample.meta["background"])))
    keys = ("colour", "shape", "motion", "background", "size", "all_correct")
    summary = {k: float(np.mean([bool(r[k]) for r in results])) for k in keys}
    print("| clips | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    print(f"| {n} | " + " | ".join(f"{summary[k]:.0%}" for k in keys) + " |")
    return summary


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else str(default_model_path()),
        int(sys.argv[2]) if len(sys.argv) > 2 else 40,
    )
