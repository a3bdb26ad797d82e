"""studio.cli: generate writes a video and its sidecar; a sidecar regenerates the same frames;
user errors exit 2 with one ``error:`` line and leave no file behind; ``--help`` everywhere."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.text_to_video import DEFAULT_GUIDANCE
from pipelines.video_io import read_video
from studio import generate as generate_mod
from studio.generate import (
    GenerateRequest,
    generate,
    load_pipeline,
    request_from_sidecar,
    weights_hash,
)

SIDECAR_FIELDS = {
    "prompt",
    "image_first",
    "negative_prompt",
    "seed",
    "steps",
    "guidance",
    "frames",
    "fps",
    "height",
    "width",
    "model",
    "weights_hash",
    "versions",
    "timings",
}


@pytest.fixture
def small(tiny_pipeline_dir):
    """Options for a fast generation with the saved tiny pipeline."""
    return [
        "--model",
        str(tiny_pipeline_dir),
        "--frames",
        "4",
        "--height",
        "16",
        "--width",
        "16",
        "--steps",
        "2",
        "--quiet",
    ]


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    import re

    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


# -------------------------------------------------------------------------- generate
def test_generate_writes_mp4_and_sidecar(cli, small, tmp_path, tiny_pipeline_dir):
    out = tmp_path / "clip.mp4"
    code, stdout, err = cli(
        "generate", "a red square moving right", "--out", out, "--seed", 3, *small
    )
    assert code == 0, err
    assert out.is_file() and f"wrote {out}" in stdout
    frames, fps = read_video(out)
    assert frames.shape == (4, 16, 16, 3) and fps == pytest.approx(8)
    assert out.read_bytes()[4:8] == b"ftyp"

    record = json.loads((tmp_path / "clip.json").read_text())
    assert SIDECAR_FIELDS <= set(record)
    assert record["prompt"] == "a red square moving right"
    assert record["negative_prompt"] is None
    assert (record["seed"], record["steps"], record["frames"]) == (3, 2, 4)
    assert (record["height"], record["width"], record["fps"]) == (16, 16, 8)
    assert record["guidance"] == DEFAULT_GUIDANCE
    assert record["model"] == str(tiny_pipeline_dir)
    assert record["weights_hash"] == weights_hash(tiny_pipeline_dir)
    assert len(record["weights_hash"]) == 16
    assert {"python", "torch", "diffusers", "transformers"} <= set(record["versions"])
    assert record["timings"]["generate_s"] >= 0
    # time to the first denoising step, from the call (model load included): it was reached
    assert isinstance(record["timings"]["first_step_s"], float)
    assert record["timings"]["first_step_s"] > 0
    # nothing but the video and its sidecar (no temporary files left)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.json", "clip.mp4"]


@pytest.mark.parametrize("ext", [".gif", ".webm"])
def test_generate_other_formats(cli, small, tmp_path, ext):
    out = tmp_path / f"clip{ext}"
    code, _, err = cli("generate", "a blue circle", "--out", out, "--fps", 4, *small)
    assert code == 0, err
    frames, fps = read_video(out)
    assert frames.shape[1:] == (16, 16, 3) and 1 <= frames.shape[0] <= 4
    assert fps == pytest.approx(4)
    assert json.loads((tmp_path / "clip.json").read_text())["output"] == out.name


def test_sidecar_regenerates_identical_frames(cli, small, tmp_path, tiny_pipeline_dir):
    first = tmp_path / "first.mp4"
    assert cli("generate", "a green triangle", "--out", first, "--seed", 5, *small)[0] == 0
    # no --model: the sidecar's model is used
    again = tmp_path / "again.mp4"
    code, _, err = cli(
        "generate", "--from-sidecar", tmp_path / "first.json", "--out", again, "--quiet"
    )
    assert code == 0, err
    np.testing.assert_array_equal(read_video(again)[0], read_video(first)[0])
    a = json.loads((tmp_path / "first.json").read_text())
    b = json.loads((tmp_path / "again.json").read_text())
    for key in SIDECAR_FIELDS - {"timings"}:
        assert a[key] == b[key], key

    # and the uint8 frames themselves, before encoding
    request = request_from_sidecar(tmp_path / "first.json")
    assert request == GenerateRequest(
        prompt="a green triangle",
        seed=5,
        steps=2,
        frames=4,
        height=16,
        width=16,
        image_first=False,  # the tiny model's own setting, recorded as used
    )
    pipe = load_pipeline(tiny_pipeline_dir)
    x = generate(request, tmp_path / "x.mp4", model=tiny_pipeline_dir, pipe=pipe).frames
    y = generate(request, tmp_path / "y.mp4", model=tiny_pipeline_dir, pipe=pipe).frames
    assert x.dtype == np.uint8 and x.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(x, y)
    other = GenerateRequest(**{**request.__dict__, "seed": 6})
    z = generate(other, tmp_path / "z.mp4", model=tiny_pipeline_dir, pipe=pipe).frames
    assert np.abs(x.astype(int) - z.astype(int)).max() > 0


def test_progress_callback_counts_steps(tiny_pipeline_dir, tmp_path):
    seen = []
    generate(
        GenerateRequest(prompt="a square", steps=3, frames=2, height=16, width=16),
        tmp_path / "p.mp4",
        model=tiny_pipeline_dir,
        progress=lambda i, n: seen.append((i, n)),
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]


# -------------------------------------------------------------------------- user errors
@pytest.mark.parametrize(
    "prompt, extra, pattern",
    [
        ("", [], "prompt is empty"),
        ("   ", [], "prompt is empty"),
        ("a square", ["--frames", "0"], r"^error: frames .*got 0$"),
        ("a square", ["--frames", "1000"], r"^error: frames .*got 1000$"),
        ("a square", ["--height", "30"], r"height .*multiple of 4.*got 30$"),
        ("a square", ["--width", "0"], r"width .*got 0$"),
        ("a square", ["--steps", "0"], r"^error: steps .*got 0$"),
        ("a square", ["--steps", "100000"], r"^error: steps .*got 100000$"),
        ("a square", ["--guidance", "-2"], r"^error: guidance .*got -2\.0$"),
    ],
)
def test_generate_bad_request(cli, small, tmp_path, prompt, extra, pattern):
    out = tmp_path / "clip.mp4"
    code, stdout, err = cli("generate", prompt, "--out", out, *small, *extra)
    assert_one_line_error(code, err, pattern)
    assert list(tmp_path.iterdir()) == []  # no video, no sidecar, no temporary file


def test_generate_bad_request_without_quiet_prints_only_the_error(cli, small, tmp_path):
    small = [a for a in small if a != "--quiet"]
    code, _, err = cli("generate", "a square", "--out", tmp_path / "c.mp4", *small, "--frames", "0")
    assert_one_line_error(code, err, r"got 0$")  # no half-drawn progress bar


def test_generate_unknown_extension(cli, small, tmp_path):
    code, _, err = cli("generate", "a square", "--out", tmp_path / "clip.avi", *small)
    assert_one_line_error(code, err, r"'\.avi'.*\.mp4")
    assert list(tmp_path.iterdir()) == []


def test_generate_missing_output_folder(cli, small, tmp_path):
    missing = tmp_path / "nowhere"
    code, _, err = cli("generate", "a square", "--out", missing / "clip.mp4", *small)
    assert_one_line_error(code, err, f"does not exist: {missing}")
    assert not missing.exists()


def test_generate_output_that_is_a_folder_or_inside_a_file(cli, small, tmp_path):
    (tmp_path / "d.mp4").mkdir()
    code, _, err = cli("generate", "a square", "--out", tmp_path / "d.mp4", *small)
    assert_one_line_error(code, err, "d.mp4 is a folder")
    (tmp_path / "f.png").write_bytes(b"x")
    code, _, err = cli("generate", "a square", "--out", tmp_path / "f.png" / "x.mp4", *small)
    assert_one_line_error(code, err, "f.png is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.mp4", "f.png"]


def test_a_sidecar_of_another_video_is_not_taken_over(cli, small, tmp_path):
    # clip.mp4 and clip.gif would share clip.json: the second write is refused
    assert cli("generate", "a red square", "--out", tmp_path / "clip.mp4", *small)[0] == 0
    code, _, err = cli("generate", "a blue circle", "--out", tmp_path / "clip.gif", *small)
    assert_one_line_error(code, err, "clip.json is the record of .*clip.mp4")
    assert not (tmp_path / "clip.gif").exists()
    record = json.loads((tmp_path / "clip.json").read_text())
    assert record["output"] == "clip.mp4" and record["prompt"] == "a red square"
    # the same name again replaces both, and once clip.mp4 is gone clip.gif may take the name
    assert cli("generate", "a green square", "--out", tmp_path / "clip.mp4", *small)[0] == 0
    (tmp_path / "clip.mp4").unlink()
    assert cli("generate", "a blue circle", "--out", tmp_path / "clip.gif", *small)[0] == 0
    assert json.loads((tmp_path / "clip.json").read_text())["output"] == "clip.gif"


def test_generate_unwritable_output_folder(cli, small, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o500)
    else:  # root writes anywhere: make the permission check see what a user would
        real_access = os.access

        def access(path, mode, *a, **kw):
            if os.fspath(path) == os.fspath(locked) and mode & os.W_OK:
                return False
            return real_access(path, mode, *a, **kw)

        monkeypatch.setattr(os, "access", access)
    try:
        code, _, err = cli("generate", "a square", "--out", locked / "clip.mp4", *small)
    finally:
        locked.chmod(0o700)
    assert_one_line_error(code, err, f"not writable: {locked}")
    assert list(locked.iterdir()) == []


def test_generate_missing_model(cli, tmp_path):
    missing = tmp_path / "no_model"
    code, _, err = cli("generate", "a square", "--out", tmp_path / "c.mp4", "--model", missing)
    assert_one_line_error(code, err, f"no model at {missing}")
    assert not (tmp_path / "c.mp4").exists()


def test_generate_corrupt_weights(cli, tmp_path, tiny_pipeline_dir):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline_dir, broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage" * 10)
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = cli("generate", "a square", "--out", out / "c.mp4", "--model", broken, "--quiet")
    assert_one_line_error(code, err, f"could not load the model at {broken}")
    assert list(out.iterdir()) == []


def test_image_first_flag_overrides_the_model_and_is_recorded(cli, small, tmp_path):
    clips = {}
    for flag in ("--image-first", "--no-image-first"):
        out = tmp_path / f"{flag.strip('-')}.mp4"
        code, _, err = cli("generate", "a red square moving right", "--out", out, *small, flag)
        assert code == 0, err
        record = json.loads(out.with_suffix(".json").read_text())
        assert record["image_first"] is (flag == "--image-first")
        clips[flag] = read_video(out)[0]
    # frame 0 drawn as an image first changes the clip
    assert not np.array_equal(clips["--image-first"], clips["--no-image-first"])
    # without the flag the model's own setting (off for the tiny model) is used and recorded
    plain = tmp_path / "plain.mp4"
    assert cli("generate", "a red square moving right", "--out", plain, *small)[0] == 0
    assert json.loads(plain.with_suffix(".json").read_text())["image_first"] is False
    np.testing.assert_array_equal(read_video(plain)[0], clips["--no-image-first"])
    # a sidecar reruns image-first even on a model whose default is not
    again = tmp_path / "again.mp4"
    sidecar = tmp_path / "image-first.json"
    assert cli("generate", "--from-sidecar", sidecar, "--out", again, "--quiet")[0] == 0
    np.testing.assert_array_equal(read_video(again)[0], clips["--image-first"])


def test_a_sidecar_replays_from_another_folder_or_install(
    cli, small, tmp_path, tiny_pipeline_dir, monkeypatch
):
    """The model is recorded as an absolute path (it was typed relative to another folder),
    and a sidecar naming a folder that is not here replays on the shipped model when its
    weights are the shipped model's; otherwise one error line asks for --model."""
    from studio import generate as generate_mod

    monkeypatch.chdir(tiny_pipeline_dir.parent)
    relative = [tiny_pipeline_dir.name if a == str(tiny_pipeline_dir) else a for a in small]
    first = tmp_path / "first.mp4"
    assert cli("generate", "a red square", "--out", first, "--seed", 2, *relative)[0] == 0
    record = json.loads((tmp_path / "first.json").read_text())
    assert record["model"] == str(tiny_pipeline_dir)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("generate", "--from-sidecar", "first.json", "--out", "again.mp4")
    assert code == 0, err
    np.testing.assert_array_equal(read_video(tmp_path / "again.mp4")[0], read_video(first)[0])

    moved = {**record, "model": "/another/install/studio/default_model"}
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    monkeypatch.setattr(generate_mod, "DEFAULT_MODEL_DIR", tiny_pipeline_dir)  # as shipped
    code, _, err = cli("generate", "--from-sidecar", "moved.json", "--out", "moved.mp4")
    assert code == 0, err
    np.testing.assert_array_equal(read_video(tmp_path / "moved.mp4")[0], read_video(first)[0])

    (tmp_path / "changed.json").write_text(json.dumps({**record, "weights_hash": "0" * 16}))
    code, _, err = cli("generate", "--from-sidecar", "changed.json", "--out", "changed.mp4")
    assert code == 0 and "holds other weights than changed.json was made with" in err

    (tmp_path / "other.json").write_text(json.dumps({**moved, "weights_hash": "0" * 16}))
    code, _, err = cli("generate", "--from-sidecar", "other.json", "--out", "other.mp4")
    assert code == 2 and "pass --model FOLDER" in err and "/another/install" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "other.mp4").exists()


def test_options_beside_a_sidecar_replace_its_settings(cli, small, tmp_path, tiny_pipeline_dir):
    first = tmp_path / "first.mp4"
    assert cli("generate", "a green triangle", "--out", first, "--seed", 5, *small)[0] == 0
    again = tmp_path / "again.mp4"
    code, out, err = cli(
        "generate", "--from-sidecar", tmp_path / "first.json", "--seed", 6, "--out", again
    )
    assert code == 0, err
    assert "--seed replaced" in out
    record = json.loads((tmp_path / "again.json").read_text())
    assert record["seed"] == 6
    assert (record["prompt"], record["steps"], record["frames"]) == ("a green triangle", 2, 4)
    # the same as asking for seed 6 directly, and not the sidecar's seed-5 clip
    direct = tmp_path / "direct.mp4"
    assert cli("generate", "a green triangle", "--out", direct, "--seed", 6, *small)[0] == 0
    np.testing.assert_array_equal(read_video(again)[0], read_video(direct)[0])
    assert not np.array_equal(read_video(again)[0], read_video(first)[0])
    # an option typed with its default value still replaces the recorded one
    zero = tmp_path / "zero.mp4"
    args = ("--from-sidecar", tmp_path / "first.json", "--out", zero, "--seed", 0, "--quiet")
    assert cli("generate", *args)[0] == 0
    assert json.loads(zero.with_suffix(".json").read_text())["seed"] == 0
    # a prompt given beside it replaces the recorded one; a bad value fails as usual
    other = tmp_path / "other.mp4"
    args = ("--from-sidecar", tmp_path / "first.json", "--out", other, "--quiet")
    assert cli("generate", "a blue circle", *args)[0] == 0
    assert json.loads(other.with_suffix(".json").read_text())["prompt"] == "a blue circle"
    code, _, err = cli("generate", " ", *args)
    assert_one_line_error(code, err, "the prompt is empty")
    code, _, err = cli("generate", *args, "--fps", 500)
    assert_one_line_error(code, err, "fps must be")


def test_generate_missing_sidecar(cli, tmp_path):
    missing = tmp_path / "nope.json"
    code, _, err = cli("generate", "--from-sidecar", missing, "--out", tmp_path / "c.mp4")
    assert_one_line_error(code, err, "nope.json")


def test_generate_needs_out(cli):
    code, _, err = cli("generate", "a square")
    assert code == 2 and "--out" in err


# -------------------------------------------------------------------------- train config errors
def test_train_unknown_config_key(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nonsense_key: 1\n")
    code, _, err = cli("train", "dit", "--config", bad)
    assert_one_line_error(code, err, f"{bad}.*nonsense_key")


def test_train_wrong_type_names_the_key(cli, tmp_path):
    code, _, err = cli("train", "vae", "lr=fast")
    assert_one_line_error(code, err, r"\blr\b.*'fast'")


def test_train_overrides_after_the_config_option(cli, tmp_path):
    """The documented order `train dit --config X key=value` applies the override."""
    good = tmp_path / "good.yaml"
    good.write_text("lr: 1.0e-3\n")
    code, _, err = cli("train", "vae", "--config", good, "steps=many")
    assert_one_line_error(code, err, r"\bsteps\b.*'many'")
    # a config key is named as the config has it (the studio's "guidance" is for sampling)
    code, _, err = cli("train", "dit", "--config", good, "guidance_scale=200")
    assert_one_line_error(code, err, r"guidance_scale must be in")


def test_train_missing_config_file(cli, tmp_path):
    missing = tmp_path / "missing.yaml"
    code, _, err = cli("train", "dit", "--config", missing)
    assert_one_line_error(code, err, f"config file not found: {missing}")


# -------------------------------------------------------------------------- help
@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["generate", "--help"],
        ["batch", "--help"],
        ["eval", "--help"],
        ["eval", "shapes", "--help"],
        ["eval", "elements", "--help"],
        ["data", "--help"],
        ["data", "shapes", "--help"],
        ["train", "--help"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_help(cli, argv):
    code, out, _ = cli(*argv)
    assert code == 0
    assert out.startswith("usage: studio")
    words = [w for w in argv if not w.startswith("-")]
    assert f"studio {' '.join(words)}".strip() in out


def test_help_states_each_commands_own_default_guidance(cli):
    """`eval elements` samples at its own measured guidance: its help must say that one."""
    for argv, default in ((["eval", "elements"], 4.0), (["generate"], DEFAULT_GUIDANCE)):
        code, out, _ = cli(*argv, "--help")
        assert code == 0
        assert f"guidance scale (default {default})" in " ".join(out.split()), argv


def test_no_command_is_a_usage_error(cli):
    code, _, err = cli()
    assert code == 2 and err.startswith("error: studio:") and "--help" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_option_values_are_one_error_line(cli):
    code, _, err = cli("serve", "--port", "0")
    assert code == 2 and err.strip() == (
        "error: studio serve: argument --port: must be >= 1, got 0 (see studio serve --help)"
    )
    for argv, message in [
        (("ui", "--port", "70000"), "--port: must be at most 65535, got 70000"),
        (("data", "sprite", "s.png", "--image-size", "100000"), "must be at most 1024"),
        (("data", "sprite", "s.png", "--colors", "red", "red"), "two colours must differ"),
    ]:
        code, _, err = cli(*argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_cached_pipeline_is_reused(tiny_pipeline_dir):
    assert load_pipeline(tiny_pipeline_dir) is load_pipeline(tiny_pipeline_dir)
    assert generate_mod.default_model_path().name  # a path even without $STUDIO_MODEL


def test_ui_command_serves_without_a_file_watcher_or_forced_gc_and_passes_limits():
    """After each script run streamlit rescans imported modules and runs gc.collect(2) by
    default: with two tabs polling, that took the GIL from the generating thread (a 4 s job
    took minutes)."""
    from studio.cli import build_parser, ui_command

    args = build_parser().parse_args(["ui", "--port", "8601", "--max-upload-mb", "2.5"])
    cmd, env = ui_command(args)
    options = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert options["--server.fileWatcherType"] == "none"
    assert options["--runner.postScriptGC"] == "false"
    assert options["--server.port"] == "8601"
    assert options["--server.address"] == "127.0.0.1"
    assert options["--server.maxUploadSize"] == "3"  # whole MB, rounded up
    assert float(env["STUDIO_MAX_UPLOAD_MB"]) == 2.5


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "p", "--out", "x.mp4"],
        ["storyboard", "s.yaml", "--out", "x.mp4"],
        ["batch", "p.txt", "--out-dir", "d"],
        ["eval", "shapes", "d"],
        ["eval", "storyboards", "d"],
    ],
)
def test_cli_default_guidance_is_the_pipelines(argv):
    """The CLI repeats the pipeline's default guidance (to keep torch out of --help): they agree."""
    from pipelines.text_to_video import DEFAULT_STEPS
    from studio.cli import DEFAULT_GUIDANCE as CLI_DEFAULT_GUIDANCE
    from studio.cli import DEFAULT_STEPS as CLI_DEFAULT_STEPS
    from studio.cli import build_parser

    assert CLI_DEFAULT_GUIDANCE == DEFAULT_GUIDANCE and CLI_DEFAULT_STEPS == DEFAULT_STEPS
    assert build_parser().parse_args(argv).guidance == DEFAULT_GUIDANCE
    assert build_parser().parse_args(argv).steps == DEFAULT_STEPS


def test_loaded_pipelines_are_bounded(monkeypatch, tiny_pipeline_dir, lora_adapter):
    """A server takes jobs naming any adapter and scale: at most MAX_LOADED_PIPELINES stay
    loaded, the least recently used dropped first."""
    from studio import generate

    monkeypatch.setattr(generate, "_PIPELINES", type(generate._PIPELINES)())
    base = generate.load_pipeline(tiny_pipeline_dir)
    for scale in (0.2, 0.4, 0.6):
        generate.load_pipeline(tiny_pipeline_dir, lora=f"{lora_adapter}:{scale}")
        assert len(generate._PIPELINES) <= generate.MAX_LOADED_PIPELINES
    assert generate.load_pipeline(tiny_pipeline_dir) is not base  # dropped, loaded again
    again = generate.load_pipeline(tiny_pipeline_dir, lora=f"{lora_adapter}:0.6")
    assert again is generate.load_pipeline(tiny_pipeline_dir, lora=f"{lora_adapter}:0.6")


def test_a_failed_command_leaves_no_empty_folder_of_its_own(cli, tmp_path):
    """Bad input leaves no trace: the output folder a command made is removed again when it
    fails before writing into it; a folder that was there before stays."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle moving left on a black background\n")
    deep = tmp_path / "new" / "batch"  # its parent is made too, and removed too
    for argv in (
        ("batch", prompts, "--out-dir", deep, "--model", tmp_path / "nowhere"),
        ("data", "shapes", "--out", tmp_path / "shards", "--clips", "0", "--images", "0"),
        ("eval", "shapes", tmp_path / "eval", "--generate", "--model", tmp_path / "nowhere"),
    ):
        code, _, err = cli(*argv)
        assert code == 2 and err.startswith("error:"), (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]
    kept = tmp_path / "kept"
    kept.mkdir()
    assert cli("batch", prompts, "--out-dir", kept, "--model", tmp_path / "nowhere")[0] == 2
    assert kept.is_dir()


def test_out_of_memory_is_one_line_and_other_errors_are_not_hidden(cli, monkeypatch):
    from studio import cli as cli_mod

    def allocate(args):
        torch.empty(10**15, dtype=torch.uint8)  # the CPU allocator's own failure

    monkeypatch.setattr(cli_mod, "cmd_data_shapes", allocate)
    code, _, err = cli("data", "shapes", "--out", "unused")
    assert code == 1 and err.startswith("error: out of memory") and len(err.splitlines()) == 1

    def bug(args):
        raise RuntimeError("a bug, not memory")

    monkeypatch.setattr(cli_mod, "cmd_data_shapes", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli("data", "shapes", "--out", "unused")


def test_score_and_sprite_inputs_that_are_not_there_say_so(cli, tmp_path):
    missing = tmp_path / "missing.jsonl"
    code, _, err = cli("score", missing)
    assert code == 2 and f"nothing at {missing}" in err
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"video": "x.mp4", "caption": "a red circle"}\n')
    code, _, err = cli("score", pairs, "--out", tmp_path / "s.jsonl", "--scorer", "clip:/no/clip")
    assert code == 2 and "/no/clip: no such folder" in err
    code, _, err = cli("data", "sprite", tmp_path / "s.png", "--colors", "red", "mauve")
    assert code == 2 and "invalid choice: 'mauve'" in err and "purple" in err
    assert not (tmp_path / "s.png").exists()


def test_a_failing_command_removes_only_the_empty_folders_it_created(tmp_path):
    from studio.folders import ensure_output_dir, removing_created_folders_on_failure

    ensure_output_dir(tmp_path / "server" / "jobs")  # outside a command (a server): not recorded
    with pytest.raises(RuntimeError), removing_created_folders_on_failure():
        ensure_output_dir(tmp_path / "x" / "y")
        ensure_output_dir(tmp_path / "kept")
        (tmp_path / "kept" / "video.mp4").write_bytes(b"1")
        raise RuntimeError("the command failed")
    assert not (tmp_path / "x").exists()  # both levels it made, deepest first
    assert (tmp_path / "kept" / "video.mp4").exists()  # not empty: kept
    assert (tmp_path / "server" / "jobs").is_dir()  # a later failing command leaves it alone
    with removing_created_folders_on_failure():
        ensure_output_dir(tmp_path / "done")
    assert (tmp_path / "done").is_dir()  # a command that succeeds keeps its folders


def test_weights_hash_is_read_once_and_follows_changed_weights(tmp_path, monkeypatch):
    model = tmp_path / "model" / "transformer"
    model.mkdir(parents=True)
    weights = model / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"a" * 64)
    first = weights_hash(tmp_path / "model")
    reads = []
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda p: reads.append(p) or real_read(p))
    assert weights_hash(tmp_path / "model") == first and reads == []  # unchanged: not read again
    weights.write_bytes(b"b" * 64)  # same size, new bytes (and a new modification time)
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert weights_hash(tmp_path / "model") != first and reads == [weights]


def test_a_prompt_utf8_cannot_encode_is_one_error_line(cli, tmp_path):
    # an undecodable byte on the command line reaches Python as a lone surrogate
    code, _, err = cli("generate", "a \udcff circle", "--out", tmp_path / "x.mp4")
    assert_one_line_error(code, err, "prompt is not valid text")
    assert list(tmp_path.iterdir()) == []
