"""Does reading each frame alone help the pick? A shape that drifts between square and disc
shows in how many frames it is the named one; the clip embedding averages that away.

    python experiments/scorer_generated/probe_framewise.py studio/default_scorer DIR [DIR ...]

For each batch folder (several samples per prompt, judged by evals.shapes): the pooled pick
AUC and the split prompts picked right for the clip's cosine with its caption, the mean and
the lowest per-frame cosine (each sampled frame embedded as a one-frame video, as the scorer
embeds images), and clip + w · frame-mean for a few w. Choose w on training-prompt folders
(runs/scorer_gen_train*), then read the held-out folders once.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from evals.best_of import auc
from evals.shapes import evaluate_dir
from pipelines.scoring import VideoTextScorer
from pipelines.video_io import read_video

WEIGHTS = (0.25, 0.5, 1.0, 2.0)


@torch.no_grad()
def clip_features(scorer: VideoTextScorer, run_dir: Path, items: list[dict]) -> dict[str, dict]:
    """Per video: the clip cosine and the per-frame cosines' mean and minimum (cached)."""
    cache = run_dir / "scores_framewise.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    text = {p: scorer.text_embeds([p])[0] for p in {it["prompt"] for it in items}}
    out = {}
    for it in items:
        frames, _ = read_video(run_dir / it["video"])
        t = text[it["prompt"]]
        x = scorer.frames_to_tensor(frames)  # (F', 3, S, S)
        per_frame = scorer.model.encode_video(x[:, None]).float()  # each frame alone, (F', E)
        cos_f = per_frame @ t
        clip = scorer.model.encode_video(x[None]).float()[0] @ t
        out[it["video"]] = {
            "clip": float(clip),
            "frame_mean": float(cos_f.mean()),
            "frame_min": float(cos_f.min()),
        }
    cache.write_text(json.dumps(out))
    return out


def pick_stats(groups: dict[str, list[dict]], score: dict[str, float]) -> tuple[float, int, int]:
    """Pooled pick AUC against the judge's all-correct, and the split prompts (samples the
    judge calls right and wrong) whose best-scored sample is a right one, of how many."""
    items = [it for g in groups.values() for it in g]
    area = auc([score[it["video"]] for it in items], [bool(it["all_correct"]) for it in items])
    split = [g for g in groups.values() if len({it["all_correct"] for it in g}) == 2]
    right = sum(bool(max(g, key=lambda it: score[it["video"]])["all_correct"]) for g in split)
    return area, right, len(split)


def rules_table(argv: list[str] | None, rules: dict[str, Callable[[dict], float]], features) -> int:
    """The probes' command line (SCORER DIR [DIR ...]) → a markdown row per folder: each
    rule (per-video features → score) as pick AUC, split prompts picked right."""
    p = argparse.ArgumentParser()
    p.add_argument("scorer")
    p.add_argument("run_dirs", nargs="+")
    args = p.parse_args(argv)
    scorer = VideoTextScorer.from_pretrained(args.scorer)
    print("| folder | " + " | ".join(rules) + " |")
    print("|---|" + "---:|" * len(rules))
    for d in map(Path, args.run_dirs):
        items = [it for it in evaluate_dir(d)["items"] if it["status"] == "ok"]
        groups: dict[str, list[dict]] = defaultdict(list)
        for it in items:
            groups[it["prompt"]].append(it)
        feats = features(scorer, d, items)
        cells = []
        for rule in rules.values():
            area, right, n = pick_stats(groups, {v: rule(f) for v, f in feats.items()})
            cells.append(f"{area:.3f}, {right}/{n}")
        print(f"| {d} | " + " | ".join(cells) + " |")
    return 0


RULES: dict[str, Callable[[dict], float]] = {
    "clip": lambda f: f["clip"],
    "frame_mean": lambda f: f["frame_mean"],
    "frame_min": lambda f: f["frame_min"],
    **{f"clip + {w} frame_mean": (lambda f, w=w: f["clip"] + w * f["frame_mean"]) for w in WEIGHTS},
}


def main(argv: list[str] | None = None) -> int:
    return rules_table(argv, RULES, clip_features)


if __name__ == "__main__":
    raise SystemExit(main())
