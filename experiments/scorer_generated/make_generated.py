"""Generated training clips for the scorer (issue 34), in three resumable steps:

    python experiments/scorer_generated/make_generated.py runs/scorer_gen_train \
        --prompts 150 --samples 2 --seed 2000

1. ``DIR/prompts.jsonl``: ``--prompts`` training-grammar prompts with the contract's
   exclusions and none of the evaluation suites' prompts (train.scorer_data.training_prompts),
   each line with the judge's ``expect``, its ``spec`` and ``caption_seed``. Deterministic in
   ``--prompt-seed``, so a rerun writes the same file.
2. ``studio batch DIR/prompts.jsonl --out-dir DIR --samples N --seed S`` with the shipped
   model (or ``--model``): skips the videos already written, so an interrupted run resumes.
3. The judge (``evals.shapes``, as ``studio eval shapes DIR``): ``DIR/labels.jsonl`` (what
   the scorer trainer reads: train.scorer_data.judge_generated) and the usual report
   (``eval.md``, ``eval.json``, ``contact_sheet.png``).

``--judge-only`` skips 1–2 (e.g. on a folder generated elsewhere); ``--avoid FILE…`` leaves out
the prompts of earlier prompt files (a second set with other prompts).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from evals.report import write_shapes_report
from evals.shapes import evaluate_dir
from train.scorer_data import judge_generated, read_labels, training_prompts, write_prompts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--prompts", type=int, default=150)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--seed", type=int, default=2000, help="sampling seed of `studio batch`")
    p.add_argument("--prompt-seed", type=int, default=34)
    p.add_argument("--two-object-prob", type=float, default=0.3)
    p.add_argument("--model", default=None)
    p.add_argument(
        "--avoid", nargs="*", default=[], help="prompt JSONL files whose prompts to leave out"
    )
    p.add_argument("--judge-only", action="store_true")
    args = p.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if not args.judge_only:
        prompts = out / "prompts.jsonl"
        avoid = {
            json.loads(line)["prompt"]
            for path in args.avoid
            for line in Path(path).read_text().splitlines()
            if line.strip()
        }
        rows = training_prompts(args.prompts, args.prompt_seed, args.two_object_prob, avoid=avoid)
        write_prompts(prompts, rows)
        print(f"wrote {len(rows)} training prompts to {prompts}", flush=True)
        cmd = ["studio", "batch", str(prompts), "--out-dir", str(out),
               "--samples", str(args.samples), "--seed", str(args.seed), "--quiet"]  # fmt: skip
        if args.model:
            cmd += ["--model", args.model]
        print(" ".join(cmd), flush=True)
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            print(f"studio batch exited {rc}; judging what is there", file=sys.stderr)

    labels = judge_generated(out)
    rows = read_labels(out)
    correct = sum(bool(r["all_correct"]) for r in rows)
    print(f"{labels}: {len(rows)} judged clips, {correct} all correct")
    paths = write_shapes_report(evaluate_dir(out), out)
    print(f"report: {paths['markdown']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
