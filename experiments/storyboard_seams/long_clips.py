"""Clips longer than the training clips: one pipeline call or 16-frame windows? (issue 5)

    python experiments/storyboard_seams/long_clips.py [MODEL] [--prompts 16] [--frames 32] [--window 16]

For the first N single-object validation prompts (``evals/suites/shapes_val.jsonl``, never the
held-out suite; seed 500 + i), generates a clip of ``--frames`` frames twice — in one call of
the pipeline, and as a one-scene storyboard in windows (``pipelines.storyboard``, the default
context and full windows) — and judges both with ``evals.shapes`` (colour, shape,
motion, count, all correct).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from evals.contract import Expectation
from evals.shapes import judge
from pipelines.storyboard import Scene, generate_storyboard
from pipelines.text_to_video import to_uint8
from studio.generate import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("colour", "shape", "motion", "count", "all_correct")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--window", type=int, default=16)
    args = ap.parse_args()
    lines = (ROOT / "evals/suites/shapes_val.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    entries = [e for e in entries if e["category"] == "single"][: args.prompts]
    pipe = load_pipeline(args.model)
    verdicts: dict[str, list[dict]] = {"one call": [], f"windows of {args.window}": []}
    for i, entry in enumerate(entries):
        expect = Expectation.from_dict(entry["expect"])
        generator = torch.Generator().manual_seed(500 + i)
        clip = pipe(entry["prompt"], num_frames=args.frames, generator=generator).frames[0]
        verdicts["one call"].append(judge(to_uint8(clip), expect))
        story = [Scene(entry["prompt"], args.frames)]
        video, _ = generate_storyboard(pipe, story, seed=500 + i, window=args.window)
        verdicts[f"windows of {args.window}"].append(judge(video, expect))
    print(f"{len(entries)} single-object validation prompts, {args.frames} frames")
    print("| generated as | " + " | ".join(KEYS) + " |\n|---|" + "---:|" * len(KEYS))
    for name, vs in verdicts.items():
        cells = [f"{np.mean([bool(v[k]) for v in vs]):.0%}" for k in KEYS]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
