"""No code runs from a model folder we load: a text encoder or scorer folder whose config asks
for its own code (``auto_map``) is refused before transformers reads it, and transformers is
always called with ``trust_remote_code=False``, so no "run the custom code? [y/N]" prompt
can be answered yes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def evil_folder(root: Path, marker: Path) -> Path:
    folder = root / "evil"
    folder.mkdir()
    config = {
        "model_type": "evil",
        "architectures": ["EvilModel"],
        "auto_map": {
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModel": "modeling_evil.EvilModel",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    code += "from transformers import PretrainedConfig\n"
    code += "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    (folder / "configuration_evil.py").write_text(code)
    (folder / "modeling_evil.py").write_text(code)
    return folder


def test_text_encoder_with_custom_code_is_refused(tmp_path):
    from pipelines.components import load_text_encoder

    marker = tmp_path / "ran"
    folder = evil_folder(tmp_path, marker)
    with pytest.raises(ValueError, match="asks to run its own code"):
        load_text_encoder(str(folder))
    assert not marker.exists()


def test_clip_scorer_with_custom_code_is_refused(tmp_path):
    from pipelines.scoring import load_scorer

    marker = tmp_path / "ran"
    folder = evil_folder(tmp_path, marker)
    with pytest.raises(ValueError, match="asks to run its own code"):
        load_scorer(f"clip:{folder}")
    assert not marker.exists()


def test_a_pipeline_naming_such_an_encoder_fails_with_one_line_even_if_yes_is_typed(
    tmp_path, tiny_pipeline_dir
):
    """A tampered model folder whose text encoder spec points at the custom-code folder:
    ``studio generate`` with "y" on standard input prints one error line, exits 2, and the
    folder's code never runs."""
    import shutil

    marker = tmp_path / "ran"
    folder = evil_folder(tmp_path, marker)
    model = tmp_path / "model"
    shutil.copytree(tiny_pipeline_dir, model)
    index = json.loads((model / "model_index.json").read_text())
    index["text_encoder_spec"] = str(folder)
    (model / "model_index.json").write_text(json.dumps(index))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "studio.cli", "generate", "a red square", "--model", model]
    cmd += ["--out", tmp_path / "x.mp4", "--steps", "1", "--frames", "2"]
    done = subprocess.run(
        list(map(str, cmd)), input="y\ny\n", capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error:")
    assert "own code" in done.stderr
    assert not marker.exists() and not (tmp_path / "x.mp4").exists()


def test_a_pipeline_whose_weights_are_a_pickle_is_refused(tmp_path, tiny_pipeline_dir):
    """A model folder whose transformer weights were swapped for a pickled ``.bin`` (with a
    payload) is refused: weights load from safetensors only."""
    import shutil

    import torch

    from pipelines.text_to_video import ShapesVideoPipeline

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    model = tmp_path / "model"
    shutil.copytree(tiny_pipeline_dir, model)
    for weights in (model / "transformer").glob("*.safetensors"):
        weights.unlink()
    torch.save({"x": Payload()}, model / "transformer" / "diffusion_pytorch_model.bin")
    with pytest.raises(Exception, match="safetensors|no file named"):
        ShapesVideoPipeline.from_pretrained(model)
    assert not marker.exists()
