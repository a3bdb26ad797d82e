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
