"""Ceiling that the VAE sets for elements-to-video: the held-out elements suite rendered by
the renderer (ground truth), passed through a VAE (encode → decode) and judged by
``studio eval elements``. No diffusion model can score above this on that VAE.

    python benchmarks/elements_vae_ceiling.py VAE_DIR [VAE_DIR ...] [--out runs/vae_ceiling]

``VAE_DIR``: a diffusers AutoencoderKL folder, or a pipeline folder with a ``vae`` subfolder.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from evals.elements import ELEMENTS_SUITE_PATH, evaluate_elements_dir, load_elements_suite
from pipelines.video_io import read_video, write_video
from studio.elements_batch import render_ground_truth_run

KEYS = ("identity_one_ref", "identity_two_refs", "motion", "shape", "colours")


def load_vae(path: str) -> AutoencoderKL:
    folder = Path(path)
    if (folder / "vae").is_dir():
        folder = folder / "vae"
    return AutoencoderKL.from_pretrained(folder, use_safetensors=True).eval()


@torch.no_grad()
def roundtrip_dir(vae: AutoencoderKL, run_dir: Path) -> None:
    """Replace every video of ``run_dir`` by its VAE reconstruction (H.264 again)."""
    for path in sorted(run_dir.glob("*.mp4")):
        frames, fps = read_video(path)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
        write_video(
            path, ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy(), fps
        )


def summary(report: dict) -> dict[str, float | None]:
    """The report's rates under short names (see evals/elements.py)."""
    return {k: report["overall"].get(k) for k in KEYS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vaes", nargs="+")
    ap.add_argument("--out", default="runs/vae_ceiling")
    args = ap.parse_args()
    out = Path(args.out)
    truth = out / "ground_truth"
    if not (truth / "manifest.jsonl").is_file():
        render_ground_truth_run(load_elements_suite(ELEMENTS_SUITE_PATH), truth)
    rows = [("renderer (no VAE)", summary(evaluate_elements_dir(truth)))]
    for i, vae_dir in enumerate(args.vaes):
        run = out / f"vae{i}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(truth, run)
        roundtrip_dir(load_vae(vae_dir), run)
        rows.append((vae_dir, summary(evaluate_elements_dir(run))))
    print("| videos | " + " | ".join(KEYS) + " |")
    print("|---" * (len(KEYS) + 1) + "|")
    for name, s in rows:
        cells = " | ".join("–" if s[k] is None else f"{s[k]:.0%}" for k in KEYS)
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
