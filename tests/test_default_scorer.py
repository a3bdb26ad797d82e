"""The shipped Shapes World scorer: loads offline by its spec and reads what a clip shows."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.scoring import load_scorer
from studio.shipped import DEFAULT_MODEL_DIR, scorer_spec
from studio.shipped import DEFAULT_SCORER_DIR as DEFAULT_SCORER_PATH
from world.shapes_world import ClipSpec, ObjectSpec, render

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SCORER_PATH / "config.json").is_file(), reason="no shipped scorer"
)


def test_all_shipped_weights_are_safetensors_under_60_mb():
    files = [*DEFAULT_MODEL_DIR.rglob("*"), *DEFAULT_SCORER_PATH.rglob("*")]
    weights = [f for f in files if f.suffix in (".safetensors", ".bin", ".pkl", ".pt", ".ckpt")]
    assert any(f.parent == DEFAULT_SCORER_PATH for f in weights)
    assert all(f.suffix == ".safetensors" for f in weights)
    assert sum(f.stat().st_size for f in weights) < 60 * 2**20


def test_default_scorer_reads_colour_background_and_direction():
    """What the shipped scorer does reliably (BENCHMARKS.md: colour and direction
    counterfactuals 100 %): the true caption beats a wrong colour, a wrong background and the
    reversed direction, and the time-reversed clip prefers the reversed caption."""
    scorer = load_scorer(scorer_spec("default"))
    clip = render(ClipSpec([ObjectSpec("square", "red", "large", "right", 4, 20)], "black"))
    true = "a large red square moving right on a black background"
    wrong = [
        "a large green square moving right on a black background",
        "a large blue square moving right on a black background",
        "a large red square moving right on a white background",
        "a large red square moving left on a black background",
    ]
    scores = [scorer.score(clip, c).score for c in [true, *wrong]]
    assert int(np.argmax(scores)) == 0, scores
    reversed_clip = clip[::-1].copy()  # the square now moves left
    assert scorer.score(reversed_clip, wrong[-1]).score > scorer.score(reversed_clip, true).score
