"""Is a missed motion the model's motion or the prompt's wording? (issue 5)

    python benchmarks/motion_wording.py [MODEL] [--prompts 12] [--eval-dir runs/eval_sb]

1. Generates ``--prompts`` clips per direction with the training phrasing
   (``a small {colour} {shape} moving {direction} on a black background``, seeds 0..N-1) and
   judges their motion with ``evals.shapes``: the model's motion, the wording held fixed.
2. With ``--eval-dir`` (a judged ``studio eval shapes`` run), tallies how often the motion was
   right for each held-out motion phrase of the one-object prompts: the wording's share.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from evals.contract import parse_caption
from evals.shapes import SUITE_MOTIONS, judge
from pipelines.text_to_video import to_uint8
from studio.generate import load_pipeline

DIRECTIONS = ("up", "down", "left", "right")
COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")


def training_phrasing(pipe, prompts: int, frames: int = 16, **kw) -> dict[str, list[bool]]:
    """{direction: [motion right?]} for ``prompts`` training-phrased prompts per direction."""
    out: dict[str, list[bool]] = {d: [] for d in DIRECTIONS}
    for i in range(prompts):
        for d in DIRECTIONS:
            prompt = f"a small {COLOURS[i % 4]} {SHAPES[i % 3]} moving {d} on a black background"
            generator = torch.Generator().manual_seed(i)
            clip = pipe(prompt, num_frames=frames, generator=generator, **kw).frames[0]
            verdict = judge(to_uint8(clip), parse_caption(prompt))
            out[d].append(bool(verdict["motion"]))
    return out


def per_phrase(eval_json: dict) -> dict[str, list[bool]]:
    """{held-out motion phrase: [motion right?]} over the one-object items of a judged run."""
    phrases = {
        form: participle
        for forms in SUITE_MOTIONS.values()
        for participle, third in forms
        for form in (participle, third)
    }
    out: dict[str, list[bool]] = defaultdict(list)
    for item in eval_json["items"]:
        if len(item.get("expect", {}).get("objects", [])) != 1:
            continue
        prompt = item["prompt"].lower()
        found = [p for form, p in phrases.items() if form in prompt]
        if found:
            out[found[0]].append(bool(item.get("motion")))
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--eval-dir", default=None, help="a judged `studio eval shapes` folder")
    args = ap.parse_args()
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    results = training_phrasing(pipe, args.prompts)
    print("| training phrasing | motion right |\n|---|---:|")
    for d, v in results.items():
        print(f"| moving {d} | {sum(v)}/{len(v)} |")
    if args.eval_dir:
        table = per_phrase(json.loads((Path(args.eval_dir) / "eval.json").read_text()))
        print("\n| held-out phrase | motion right |\n|---|---:|")
        for phrase, v in sorted(table.items()):
            print(f"| {phrase} | {sum(v)}/{len(v)} |")


if __name__ == "__main__":
    main()
