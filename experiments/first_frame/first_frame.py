"""How good is the first frame an image-first model starts from? (issue 3)

    python experiments/first_frame/first_frame.py [MODEL] [--samples 2] [--guidance 4 2] [--shift 20 3]
                                     [--rerank K] [--stochastic] [--steps 25]
                                     [--prompts evals/suites/shapes_val.jsonl]

An image-first pipeline (``image_first`` in its ``model_index.json``) draws frame 0 as an image
and then continues it, so a clip can be no better than its first frame. This generates only
frame 0 for every prompt of a suite (validation prompts by default, never the held-out suite)
and judges it as an image with ``evals.shapes``: colour, shape, size and count, motion
ignored ("right" = all four), and for single-object prompts how often the named shape is
drawn, per shape. One row per (guidance, scheduler shift) setting. A pipeline with a
first-frame image model (``image_transformer``) draws frame 0 with it, at its ``image_shift``.

``--rerank K`` draws K first frames per prompt instead, scores each against the prompt with the
shipped scorer (``pipelines.scoring``, as ``--best-of`` does for whole clips) and reports the
first candidate, the scorer's pick and the oracle (a right frame whenever one of the K is).

``--from-run DIR`` generates nothing: for a judged run (``studio eval shapes DIR``, its
``eval.json``) it judges frame 0 of every video as above and counts how the clips' all-correct
verdicts split by whether their first frame was right.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from evals.contract import Expectation
from evals.shapes import judge
from pipelines.text_to_video import to_uint8
from studio.generate import default_model_path, load_pipeline

ROOT = Path(__file__).resolve().parents[2]


def frame_right(frame: np.ndarray, expect: dict) -> dict[str, bool]:
    """Judge one uint8 (1, H, W, 3) frame against an entry's expectation, motion ignored."""
    exp = copy.deepcopy(expect)
    for o in exp["objects"]:
        o["motion"] = None
    r = judge(frame, Expectation.from_dict(exp))
    size = r["size"] is not False
    right = r["colour"] and r["shape"] and r["count"] and size
    objects = expect["objects"]
    return {
        "colour": r["colour"],
        "shape": r["shape"],
        "size": size,
        "count": r["count"],
        "right": right,
        "named_shape": objects[0]["shape"] if len(objects) == 1 else None,
    }


def first_frames(
    pipe, prompts: list[str], seeds: list[int], guidance: float, steps: int = 25, batch: int = 26
):
    """Frame 0 of every prompt, as an image-first pipeline draws it → list of (1, H, W, 3) uint8."""
    out = []
    for b in range(0, len(prompts), batch):
        gens = [torch.Generator().manual_seed(s) for s in seeds[b : b + batch]]
        frames = pipe(
            prompts[b : b + batch],
            num_frames=1,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            image_first=False,
        ).frames
        out += [to_uint8(f) for f in frames]
    return out


def table(rows: list[tuple[str, dict[str, list[dict]]]], keys: tuple[str, ...]) -> str:
    cats = sorted({c for _, by_cat in rows for c in by_cat})
    shapes = ("circle", "square", "triangle")
    head = (
        "| setting | "
        + " | ".join(keys)
        + " | "
        + " | ".join(f"right: {c}" for c in cats)
        + " | "
        + " | ".join(f"shape, one {s}" for s in shapes)
        + " |"
    )
    lines = [head, "|" + "---|" * (1 + len(keys) + len(cats) + len(shapes))]
    for name, by_cat in rows:
        every = [v for vs in by_cat.values() for v in vs]
        cells = [f"{np.mean([v[k] for v in every]):.0%}" for k in keys]
        cells += [f"{sum(v['right'] for v in by_cat[c])}/{len(by_cat[c])}" for c in cats]
        for shape in shapes:  # single-object prompts naming this shape: shape judged right
            named = [v["shape"] for v in every if v.get("named_shape") == shape]
            cells.append(f"{sum(named)}/{len(named)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def from_run(run_dir: Path) -> str:
    """Cross-tabulate a judged run's clip verdicts (all-correct) by first-frame verdicts."""
    from pipelines.video_io import read_video

    items = json.loads((run_dir / "eval.json").read_text())["items"]
    counts: dict[tuple[bool, bool], int] = defaultdict(int)
    for item in items:
        if item.get("status") != "ok":
            continue
        frame = read_video(run_dir / item["video"])[0][:1]
        counts[frame_right(frame, item["expect"])["right"], bool(item["all_correct"])] += 1
    lines = ["| first frame | clips | clip all-correct |", "|---|---:|---:|"]
    for right in (True, False):
        n = counts[right, True] + counts[right, False]
        lines.append(f"| {'right' if right else 'wrong'} | {n} | {counts[right, True]} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=str(default_model_path()))
    ap.add_argument("--prompts", default=str(ROOT / "evals/suites/shapes_val.jsonl"))
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--guidance", type=float, nargs="+", default=[4.0])
    ap.add_argument("--shift", type=float, nargs="+", default=[None])
    ap.add_argument("--steps", type=int, default=25, help="denoising steps for the frame")
    ap.add_argument("--rerank", type=int, default=0, help="K first frames per prompt, scorer picks")
    ap.add_argument(
        "--stochastic",
        action="store_true",
        help="diffusers' stochastic flow sampler for the frame (image_stochastic)",
    )
    ap.add_argument("--scorer", default="default")
    ap.add_argument("--from-run", help="judged run directory: frame-0 vs clip verdicts")
    args = ap.parse_args()
    if args.from_run:
        print(from_run(Path(args.from_run)))
        return

    pipe = load_pipeline(args.model)
    entries = [json.loads(line) for line in Path(args.prompts).read_text().splitlines() if line]
    prompts = [e["prompt"] for e in entries]
    base = dict(pipe.scheduler.config)
    scorer = text = None
    if args.rerank:
        from pipelines.scoring import load_scorer
        from studio.shipped import scorer_spec

        scorer = load_scorer(scorer_spec(args.scorer))
        text = scorer.text_embeds(prompts)
    rows = []
    # a pipeline with a first-frame image model draws frame 0 with its own shift (image_shift)
    image_shift = pipe.config.get("image_shift")
    for shift in args.shift:
        shift = (image_shift or base["shift"]) if shift is None else shift
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            base, shift=shift, stochastic_sampling=args.stochastic
        )
        if image_shift is not None:
            pipe.register_to_config(image_shift=shift, image_stochastic=args.stochastic or None)
        for g in args.guidance:
            n = max(args.samples, args.rerank)
            verdicts = np.empty((len(prompts), n), dtype=object)
            frames = []
            for k in range(n):
                seeds = [args.seed + 1000 * k + i for i in range(len(prompts))]
                frames.append(first_frames(pipe, prompts, seeds, g, args.steps))
                for i, e in enumerate(entries):
                    verdicts[i, k] = frame_right(frames[-1][i], e["expect"])
            name = f"guidance {g:g}, shift {shift:g}, {args.steps} steps"
            if not args.rerank:
                by_cat = defaultdict(list)
                for i, e in enumerate(entries):
                    by_cat[e["category"]] += list(verdicts[i])
                rows.append((name, by_cat))
                continue
            scores = np.stack([(scorer.video_embeds(f) * text).sum(-1).numpy() for f in frames], 1)
            picks = {
                "candidate 0": np.zeros(len(prompts), int),
                f"scorer's pick of {n}": scores.argmax(1),
                f"oracle of {n}": np.array(
                    [int(np.argmax([v["right"] for v in r])) for r in verdicts]
                ),
            }
            for label, idx in picks.items():
                by_cat = defaultdict(list)
                for i, e in enumerate(entries):
                    by_cat[e["category"]].append(verdicts[i, idx[i]])
                rows.append((f"{name}: {label}", by_cat))
    print(f"model {args.model}, prompts {args.prompts}, seed {args.seed}")
    print(table(rows, ("colour", "shape", "size", "count", "right")))


if __name__ == "__main__":
    main()
