"""docs/training.md's walkthrough, run as written (training shortened with max_steps=2 and
generation with --steps 2), in a fresh folder that sees the repository's configs and shipped
model: shards → LoRA on the shipped model → generate with the adapter."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHORTER = {"train": ["max_steps=2", "log_every=1"], "generate": ["--steps", "2"]}


def walkthrough_commands() -> list[list[str]]:
    text = (ROOT / "docs" / "training.md").read_text()
    block = re.search(r"<!-- walkthrough -->\s*```bash\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.startswith("studio ")]


@pytest.mark.skipif(
    not (ROOT / "studio" / "default_model" / "model_index.json").is_file(), reason="no model"
)
def test_the_training_walkthrough_runs_as_written(tmp_path):
    commands = walkthrough_commands()
    assert [c[1] for c in commands] == ["data", "train", "generate", "generate"]
    for name in ("configs", "studio"):  # what the recipe names, relative to the root
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "2"}
    for command in commands:
        args = command[1:] + SHORTER.get(command[1], [])
        done = subprocess.run(
            [sys.executable, "-m", "studio.cli", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, (command, done.stderr[-3000:])
    adapter = tmp_path / "runs" / "lora_walk" / "lora" / "pytorch_lora_weights.safetensors"
    assert adapter.is_file()
    assert (tmp_path / "lora.mp4").is_file() and (tmp_path / "lora_half.mp4").is_file()
    assert (tmp_path / "lora.mp4").read_bytes() != (tmp_path / "lora_half.mp4").read_bytes()
