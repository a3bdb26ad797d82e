"""Does a margin over counterfactual captions help the pick? The raw cosine of a clip with its
caption is not comparable across prompts, and within a prompt it barely separates a clip
that holds its shape from one that drifts. The margin asks instead how much better the clip
matches its caption than the same caption with one shape (or colour) word changed.

    python experiments/scorer_generated/probe_margin.py studio/default_scorer DIR [DIR ...]

For each batch folder (several samples per prompt, judged by evals.shapes): pooled pick AUC
and split prompts picked right for the clip's cosine, the margin over shape-changed captions,
over shape- and colour-changed captions, and cosine + margin. Counterfactuals are made on the
text (every shape word, then every colour word, replaced by each other one of the world's),
so they work on any wording that names shapes and colours with the world's words. Choose on
training-prompt folders (runs/scorer_gen_train*), then read the held-out folders once.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import torch

from evals.best_of import auc
from evals.shapes import evaluate_dir
from pipelines.scoring import VideoTextScorer
from pipelines.video_io import read_video
from world.shapes_world import OBJECT_COLORS, SHAPES


def counterfactuals(caption: str, words: tuple[str, ...]) -> list[str]:
    """``caption`` with one occurrence of one of ``words`` replaced by another of them."""
    out = []
    for m in re.finditer(r"\b(" + "|".join(words) + r")\b", caption):
        for other in words:
            if other != m.group(1):
                out.append(caption[: m.start()] + other + caption[m.end() :])
    return out


@torch.no_grad()
def features(scorer: VideoTextScorer, run_dir: Path, items: list[dict]) -> dict[str, dict]:
    cache = run_dir / "scores_margin.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    prompts = sorted({it["prompt"] for it in items})
    cf = {
        p: {
            "shape": counterfactuals(p, SHAPES),
            "colour": counterfactuals(p, tuple(OBJECT_COLORS)),
        }
        for p in prompts
    }
    texts = sorted({*prompts, *(c for d in cf.values() for v in d.values() for c in v)})
    emb = dict(zip(texts, scorer.text_embeds(texts)))
    out = {}
    for it in items:
        frames, _ = read_video(run_dir / it["video"])
        v = scorer.video_embeds([frames])[0]
        p = it["prompt"]
        cos = float(v @ emb[p])
        shape = [float(v @ emb[c]) for c in cf[p]["shape"]]
        colour = [float(v @ emb[c]) for c in cf[p]["colour"]]
        out[it["video"]] = {
            "clip": cos,
            "margin_shape": cos - max(shape) if shape else 0.0,
            "margin_all": cos - max(shape + colour) if shape + colour else 0.0,
        }
    cache.write_text(json.dumps(out))
    return out


def pick_stats(groups: dict[str, list[dict]], score: dict[str, float]) -> tuple[float, int, int]:
    items = [it for g in groups.values() for it in g]
    area = auc([score[it["video"]] for it in items], [bool(it["all_correct"]) for it in items])
    split = [g for g in groups.values() if len({it["all_correct"] for it in g}) == 2]
    right = sum(bool(max(g, key=lambda it: score[it["video"]])["all_correct"]) for g in split)
    return area, right, len(split)


RULES = {
    "clip": lambda f: f["clip"],
    "margin shape": lambda f: f["margin_shape"],
    "margin shape+colour": lambda f: f["margin_all"],
    "clip + margin shape": lambda f: f["clip"] + f["margin_shape"],
    "clip + margin shape+colour": lambda f: f["clip"] + f["margin_all"],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scorer")
    p.add_argument("run_dirs", nargs="+")
    args = p.parse_args()
    scorer = VideoTextScorer.from_pretrained(args.scorer)
    print("| folder | " + " | ".join(RULES) + " |")
    print("|---|" + "---:|" * len(RULES))
    for d in map(Path, args.run_dirs):
        items = [it for it in evaluate_dir(d)["items"] if it["status"] == "ok"]
        groups: dict[str, list[dict]] = defaultdict(list)
        for it in items:
            groups[it["prompt"]].append(it)
        feats = features(scorer, d, items)
        cells = []
        for rule in RULES.values():
            area, right, n = pick_stats(groups, {v: rule(f) for v, f in feats.items()})
            cells.append(f"{area:.3f}, {right}/{n}")
        print(f"| {d} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
