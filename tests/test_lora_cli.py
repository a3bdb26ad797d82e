"""``--lora PATH[:SCALE]`` on generate, batch and storyboard: the adapter changes the video,
scale 0 gives the base model's frames, the sidecar records it, bad specs are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.video_io import read_video


@pytest.fixture
def adapter(lora_adapter):
    return lora_adapter


def _frames(cli, tmp_path, model, name, *extra):
    out = tmp_path / f"{name}.mp4"
    code, _, err = cli(
        "generate", "a red square moving right", "--model", model, "--out", out,
        "--steps", "2", "--frames", "2", "--height", "16", "--width", "16", "--quiet", *extra,
    )  # fmt: skip
    assert code == 0, err
    return read_video(out)[0], json.loads(out.with_suffix(".json").read_text())


def test_generate_with_a_lora_adapter(cli, tmp_path, tiny_pipeline_dir, adapter):
    base, _ = _frames(cli, tmp_path, tiny_pipeline_dir, "base")
    adapted, record = _frames(cli, tmp_path, tiny_pipeline_dir, "lora", "--lora", adapter)
    off, _ = _frames(cli, tmp_path, tiny_pipeline_dir, "off", "--lora", f"{adapter}:0")
    assert np.abs(adapted.astype(int) - base.astype(int)).max() > 0
    np.testing.assert_array_equal(off, base)
    assert record["lora"] == str(adapter)
    # the sidecar gives the same frames again
    code, _, err = cli(
        "generate", "--from-sidecar", tmp_path / "lora.json", "--model", tiny_pipeline_dir,
        "--out", tmp_path / "again.mp4", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    np.testing.assert_array_equal(read_video(tmp_path / "again.mp4")[0], adapted)


@pytest.mark.parametrize(
    "spec, message", [("missing-folder", "no LoRA adapter at"), ("ADAPTER:1e9", "LoRA scale")]
)
def test_bad_lora_specs_are_one_error_line(
    cli, tmp_path, tiny_pipeline_dir, adapter, spec, message
):
    spec = spec.replace("ADAPTER", str(adapter))
    code, _, err = cli(
        "generate", "a red square", "--model", tiny_pipeline_dir, "--lora", spec,
        "--out", tmp_path / "x.mp4", "--steps", "1", "--frames", "2", "--quiet",
    )  # fmt: skip
    assert code == 2 and err.strip().startswith("error:") and message in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x.mp4").exists()


class _Marker:
    """Unpickling this writes a file: the proof that a pickle ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickled_adapter_is_refused_unread(cli, tmp_path, tiny_pipeline_dir, adapter):
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    marker = tmp_path / "ran"
    state = load_file(str(adapter / "pytorch_lora_weights.safetensors"))
    torch.save({**state, "x": _Marker(marker)}, pickled / "pytorch_lora_weights.bin")
    code, _, err = cli(
        "generate", "a red square", "--model", tiny_pipeline_dir, "--lora", pickled,
        "--out", tmp_path / "x.mp4", "--steps", "1", "--frames", "2", "--quiet",
    )  # fmt: skip
    assert code == 2 and "could not load the LoRA adapter" in err and ".safetensors" in err
    assert "pytorch_lora_weights.bin" not in err  # never opened, not merely failed to unpickle
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "x.mp4").exists()
