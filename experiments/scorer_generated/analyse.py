"""How sure is a change in best-of-N? Per-prompt detail and a bootstrap over prompts.

    python experiments/scorer_generated/analyse.py runs/eval_heldout \
        studio/default_scorer runs/scorer_generated/ft/model [...]

For each scorer folder: the pooled pick AUC (as ``studio eval scorer --generated``), the
within-prompt accuracy on the prompts whose samples the judge splits (one right, one wrong:
the only prompts where the pick can matter), split by what the wrong sample got wrong, and a
paired bootstrap over prompts (2000 resamples) of the AUC difference to the first scorer
named. Scores are cached in ``DIR/scores_<name>.json``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from evals.best_of import auc
from evals.shapes import evaluate_dir
from pipelines.scoring import VideoTextScorer
from pipelines.video_io import read_video

CRITERIA = ("colour", "shape", "motion", "size", "count", "background")


def scores_of(model: str, run_dir: Path, items: list[dict]) -> dict[str, float]:
    cache = run_dir / f"scores_{Path(model).parent.name}_{Path(model).name}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    scorer = VideoTextScorer.from_pretrained(model, use_safetensors=True)
    out = {}
    for it in items:
        frames, _ = read_video(run_dir / it["video"])
        out[it["video"]] = float(scorer.scores([frames], it["prompt"])[0])
    cache.write_text(json.dumps(out))
    return out


def auc_over(prompts: list[str], groups: dict[str, list[dict]], scores: dict[str, float]) -> float:
    its = [it for p in prompts for it in groups[p]]
    return auc([scores[it["video"]] for it in its], [bool(it["all_correct"]) for it in its])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("models", nargs="+")
    args = p.parse_args()
    run_dir = Path(args.run_dir)
    items = [it for it in evaluate_dir(run_dir)["items"] if it["status"] == "ok"]
    groups: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        groups[it["prompt"]].append(it)
    prompts = sorted(groups)
    split = [p for p in prompts if len({it["all_correct"] for it in groups[p]}) == 2]
    all_scores = {m: scores_of(m, run_dir, items) for m in args.models}
    rng = np.random.default_rng(0)
    boot = [rng.choice(len(prompts), len(prompts)) for _ in range(2000)]
    base = args.models[0]
    print(f"{len(prompts)} prompts, {len(items)} videos; {len(split)} prompts split by the judge\n")
    print(
        "| scorer | pick AUC | Δ AUC vs first (95 % bootstrap) | split prompts picked right | by what the wrong one got wrong |"
    )
    print("|---|---:|---:|---:|---|")
    for m in args.models:
        s = all_scores[m]
        area = auc_over(prompts, groups, s)
        diffs = [
            auc_over([prompts[i] for i in b], groups, s)
            - auc_over([prompts[i] for i in b], groups, all_scores[base])
            for b in boot
        ]
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        by_kind: dict[str, list[bool]] = defaultdict(list)
        for prompt in split:
            right = max(
                (it for it in groups[prompt] if it["all_correct"]), key=lambda it: s[it["video"]]
            )
            wrong = max(
                (it for it in groups[prompt] if not it["all_correct"]),
                key=lambda it: s[it["video"]],
            )
            kind = "+".join(c for c in CRITERIA if wrong.get(c) is False) or "other"
            by_kind[kind].append(s[right["video"]] > s[wrong["video"]])
        hits = sum(sum(v) for v in by_kind.values())
        detail = ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(by_kind.items()))
        delta = "—" if m == base else f"{np.mean(diffs):+.3f} [{lo:+.3f}, {hi:+.3f}]"
        print(f"| {m} | {area:.3f} | {delta} | {hits}/{len(split)} | {detail} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
