"""The shipped default model: loads offline, stays small, and generates a 16-frame 64×64 clip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evals.detect import detect
from studio.cli import main
from studio.generate import GenerateRequest, generate, load_pipeline
from studio.shipped import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.skipif(
    not (DEFAULT_MODEL_DIR / "model_index.json").is_file(), reason="no shipped model"
)


def test_shipped_weights_are_safetensors_and_small():
    files = list(DEFAULT_MODEL_DIR.rglob("*"))
    weights = [f for f in files if f.suffix in (".safetensors", ".bin", ".pkl", ".pt", ".ckpt")]
    assert weights and all(f.suffix == ".safetensors" for f in weights)
    # the budget covers every shipped weight: the default model and the default scorer
    shipped = list(DEFAULT_MODEL_DIR.parent.rglob("*.safetensors"))
    assert sum(f.stat().st_size for f in shipped) < 60 * 2**20
    index = json.loads((DEFAULT_MODEL_DIR / "model_index.json").read_text())
    assert index["text_encoder"] == [None, None]  # MiniLM comes from its package, not a copy
    assert index["transformer"][1] == "VideoDiT"


def test_cli_generates_a_16_frame_clip(tmp_path):
    out = tmp_path / "clip.mp4"
    code = main(
        [
            "generate",
            "a red square moving right on a black background",
            "--out",
            str(out),
            "--steps",
            "12",
            "--seed",
            "0",
            "--quiet",
        ]
    )
    assert code == 0
    from pipelines.video_io import read_video

    frames, fps = read_video(out)
    assert frames.shape == (16, 64, 64, 3)
    assert abs(fps - 8) < 0.1
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["frames"] == 16 and sidecar["weights_hash"]


def test_follows_the_background_colour():
    """Backgrounds are the easiest attribute; a model that ignores the prompt fails this."""
    pipe = load_pipeline()
    found = []
    for bg in ("black", "white", "gray", "beige"):
        video = pipe(
            f"a red circle moving left on a {bg} background",
            num_inference_steps=12,
            generator=torch.Generator().manual_seed(0),
        ).frames[0]
        found.append(detect((np.clip(video, 0, 1) * 255).round().astype(np.uint8)).background)
    assert found == ["black", "white", "gray", "beige"]


def test_same_request_same_frames(tmp_path):
    request = GenerateRequest(
        prompt="a blue square moving up on a gray background", steps=4, seed=3
    )
    a = generate(request, tmp_path / "a.mp4").frames
    b = generate(request, tmp_path / "b.mp4").frames
    assert np.array_equal(a, b)


def _recipes_from_the_shipped_model():
    """Every DiT recipe (configs/train, benchmarks/gpu_train) whose ``init_from``, after its
    ``base:`` chain, is the shipped model: what a newcomer runs on a fresh clone."""
    from pathlib import Path

    from train.config import DiTTrainConfig, load_config

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "configs/train").glob("dit_*.yaml"))
    files += sorted((root / "benchmarks/gpu_train").glob("*.yaml"))
    out = []
    for f in files:
        cfg = load_config(DiTTrainConfig, str(f), [])
        if cfg.init_from == "studio/default_model":
            out.append((f.relative_to(root), cfg))
    return out


def test_recipes_that_start_from_the_shipped_model_match_its_architecture():
    """When the shipped model changes (a new latent, text refiner layers), the recipes that
    fine-tune it must still load it: init_from refuses weights it has no place for."""
    from train.checkpoint import init_weights_from
    from train.train_dit import build_model

    recipes = _recipes_from_the_shipped_model()
    names = {str(name) for name, _ in recipes}
    assert {"configs/train/dit_lora.yaml", "configs/train/dit_elements.yaml"} <= names
    assert "benchmarks/gpu_train/train.yaml" in names
    shipped = json.loads((DEFAULT_MODEL_DIR / "transformer" / "config.json").read_text())
    for name, cfg in recipes:
        model = build_model(
            cfg, shipped["in_channels"], shipped["text_dim"], shipped["sample_size"]
        )
        fresh = init_weights_from(model, DEFAULT_MODEL_DIR)  # raises on a mismatch
        # what a recipe adds starts fresh: a reference path, a guidance input, refiner layers
        added = ("ref_", "norm_r.", "guidance_embed.", "text_refiner.")
        assert all(any(a in k for a in added) for k in fresh), (name, fresh[:5])
