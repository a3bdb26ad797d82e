"""The shipped Shapes World scorer: loads offline by its spec and reads what a clip shows."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.scoring import DEFAULT_SCORER_PATH, load_scorer
from studio.generate import DEFAULT_MODEL_DIR
from train.shapes_world import ClipSpec, ObjectSpec, render

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SCORER_PATH / "config.json").is_file(), reason="no shipped scorer"
)


def test_all_shipped_weights_are_safetensors_under_60_mb():
    files = [*DEFAULT_MODEL_DIR.rglob("*"), *DEFAULT_SCORER_PATH.rglob("*")]
    weights = [f for f in files if f.suffix in (".safetensors", ".bin", ".pkl", ".pt", ".ckpt")]
    assert any(f.parent == DEFAULT_SCORER_PATH for f in weights)
    assert all(f.suffix == ".safetensors" for f in weights)
    assert sum(f.stat().st_size for f in weights) < 60 * 2**20


def test_default_scorer_prefers_the_true_caption_over_its_counterfactuals():
    scorer = load_scorer("default")
    clip = render(ClipSpec([ObjectSpec("square", "red", "large", "right", 4, 20)], "black"))
    captions = [
        "a large red square moving right on a black background",  # true
        "a large red square moving left on a black background",  # reversed direction
        "a large green square moving right on a black background",  # colour
        "a large red circle moving right on a black background",  # shape
    ]
    scores = [scorer.score(clip, c).score for c in captions]
    assert int(np.argmax(scores)) == 0, scores
    # the same frames reversed now match "left" better than "right"
    rev = clip[::-1].copy()
    assert scorer.score(rev, captions[1]).score > scorer.score(rev, captions[0]).score
