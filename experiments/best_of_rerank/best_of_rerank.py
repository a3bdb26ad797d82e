"""Does picking the best of a prompt's samples by a scorer raise the judge's accuracy? (issues 3/4)

    python experiments/best_of_rerank/best_of_rerank.py EVAL_DIR [SCORER_SPEC ...]

EVAL_DIR is a judged held-out run (``studio eval shapes DIR --generate --samples K``): its
``eval.json`` holds the analytical judge's verdict on every video. For each prompt, each scorer
(``default``, ``shapes:PATH``, ``clip:PATH_OR_ID``, ...; default: ``default``) scores the K
samples against the prompt and keeps the highest — what ``studio generate --best-of K`` does —
and the judge's verdicts on the kept videos are tallied per category. Beside them: sample 0
alone, the mean over all samples (what the suite reports), and the oracle (a sample the judge
marks all-correct whenever one exists: the ceiling of any reranker). Nothing is generated; the
numbers come from videos already judged, so they cost seconds.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipelines.scoring import load_scorer
from pipelines.video_io import read_video
from studio.shipped import scorer_spec

CRITERIA = ("colour", "shape", "motion", "all_correct")


def tally(picks: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """{category: [verdicts]} → {category: {criterion: accuracy}} (plus "all")."""
    out = {}
    every = [v for vs in picks.values() for v in vs]
    for cat, vs in [*sorted(picks.items()), ("all", every)]:
        out[cat] = {c: float(np.mean([bool(v.get(c)) for v in vs])) for c in CRITERIA}
        out[cat]["n"] = len(vs)
    return out


def main(run_dir: str, specs: list[str]) -> dict:
    run = Path(run_dir)
    items = [i for i in json.loads((run / "eval.json").read_text())["items"] if i["status"] == "ok"]
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        by_prompt[item["prompt"]].append(item)
    methods: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for samples in by_prompt.values():
        samples.sort(key=lambda i: i["sample"])
        cat = samples[0]["category"]
        methods["sample 0"][cat].append(samples[0])
        methods["all samples"][cat] += samples
        methods["oracle"][cat].append(max(samples, key=lambda i: bool(i["all_correct"])))
    frames = {i["video"]: read_video(run / i["video"])[0] for i in items}
    for spec in specs:
        scorer = load_scorer(scorer_spec(spec))
        for prompt, samples in by_prompt.items():
            scores = [scorer.score(frames[i["video"]], prompt).score for i in samples]
            methods[f"best of {len(samples)} by {spec}"][samples[0]["category"]].append(
                samples[int(np.argmax(scores))]
            )
    report = {name: tally(picks) for name, picks in methods.items()}
    cats = list(next(iter(report.values())))
    print(
        f"{run}: {len(by_prompt)} prompts, {len(items)} videos; all-correct (motion) per category"
    )
    n = report["sample 0"]
    print("| method | " + " | ".join(f"{c} (n={n[c]['n']})" for c in cats) + " |")
    print("|---|" + "---:|" * len(cats))
    for name, r in report.items():
        cells = [f"{r[c]['all_correct']:.2f} ({r[c]['motion']:.2f})" for c in cats]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return report


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:] or ["default"])
