"""The README's commands on a fresh clone: every input file they name is in the repository
(examples/) or made by a command above it, and the example files do what the README says:
the prompts batch, the story renders, the manifest packs and the pairs score."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (command words, the position of its input file among the words after them)
INPUTS = {
    ("batch",): 0,
    ("storyboard",): 0,
    ("score",): 0,
    ("data", "pack"): 0,
    ("data", "encode"): 0,
}


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## What you can do\s*```bash\n(.*?)```", text, re.S).group(1)
    block = block.replace("\\\n", " ")
    out = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if "studio.cli" in words:  # torchrun ... -m studio.cli ARGS
            words = ["studio", *words[words.index("studio.cli") + 1 :]]
        if words[:1] == ["studio"]:
            out.append(words[1:])
    return out


def test_every_input_file_the_readme_names_exists_or_is_made_above():
    made = {"clip.mp4", "clip.json", "film.mp4", "film.json", "sprite.png"}  # earlier lines
    commands = readme_commands()
    assert len(commands) > 20
    checked = 0
    for words in commands:
        inputs = [
            w for i, w in enumerate(words) if i and words[i - 1] in ("--config", "--from-sidecar")
        ]
        for head, position in INPUTS.items():
            if tuple(words[: len(head)]) == head:
                word = words[len(head) + position]
                inputs += [] if word.startswith("-") else [word]
        for name in inputs:
            if name.startswith("runs/"):  # a batch folder made by a command above
                continue
            assert (ROOT / name).is_file() or name in made, f"{' '.join(words)}: no {name}"
            checked += 1
    assert checked >= 12


def test_the_example_shards_config_loads_as_a_training_config():
    from train.config import DiTTrainConfig, load_config

    cfg = load_config(DiTTrainConfig, ROOT / "examples" / "my_shards.yaml")
    assert cfg.training == "lora" and cfg.init_from == "studio/default_model"
    assert cfg.data.source == "shards" and list(cfg.data.shards) == ["data/mine"]
    assert cfg.data.split_by == "samples" and cfg.stages[0].batch_size == 2


def test_the_example_files_run(cli, tmp_path, tiny_pipeline_dir, monkeypatch):
    """From a root holding examples/: the story renders, the prompts batch, the manifest packs
    (its rows name the clip and the film, cut), the pairs score with the shipped scorer."""
    from pipelines.video_io import read_video

    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    small = ["--model", tiny_pipeline_dir, "--steps", "1", "--height", "16", "--width", "16"]
    code, _, err = cli("generate", "a red circle", "--out", "clip.mp4", *small, "--quiet")
    assert code == 0, err
    code, _, err = cli("storyboard", "examples/story.yaml", "--out", "film.mp4", *small, "--quiet")
    assert code == 0, err
    assert read_video(tmp_path / "film.mp4")[0].shape[0] == 37  # 20 + 1.5 s at 8 fps + 5

    code, _, err = cli("batch", "examples/prompts.txt", "--out-dir", "b", *small, "--quiet")
    assert code == 0, err
    assert len(list((tmp_path / "b").glob("*.mp4"))) == 3

    code, out, err = cli("data", "pack", "examples/manifest.csv", "--out", "data/mine", "--quiet")
    assert code == 0, err
    report = json.loads((tmp_path / "data/mine/pack_report.json").read_text())
    assert report["written"] == 4 and report["failed"] == 0, report

    code, out, err = cli("score", "examples/pairs.jsonl", "--out", "scores.jsonl", "--quiet")
    assert code == 0, err
    rows = [json.loads(x) for x in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(r.get("score"), float) for r in rows), rows


def test_the_worlds_contract_ships_verbatim():
    """docs/shapes_world.md is the contract a fresh clone reads; where the workspace holds the
    original (../shared/shapes_world.md), the copy is the same text."""
    copy = ROOT / "docs" / "shapes_world.md"
    assert "# Shapes World" in copy.read_text()
    original = ROOT.parent / "shared" / "shapes_world.md"
    if original.is_file():
        assert copy.read_text() == original.read_text(), "update docs/shapes_world.md"
