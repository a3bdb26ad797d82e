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

import json
import re
from pathlib import Path

import torch
from probe_framewise import rules_table  # this folder (the script's own directory)

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
    emb = dict(zip(texts, scorer.text_embeds(texts), strict=True))
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


RULES = {
    "clip": lambda f: f["clip"],
    "margin shape": lambda f: f["margin_shape"],
    "margin shape+colour": lambda f: f["margin_all"],
    "clip + margin shape": lambda f: f["clip"] + f["margin_shape"],
    "clip + margin shape+colour": lambda f: f["clip"] + f["margin_all"],
}


def main(argv: list[str] | None = None) -> int:
    return rules_table(argv, RULES, features)


if __name__ == "__main__":
    raise SystemExit(main())
