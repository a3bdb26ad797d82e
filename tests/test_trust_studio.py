"""What the studio promises under kills and bad input ("Trust"): a UI job cancelled before a
kill -9 stays cancelled; a video never sits beside a sidecar of other frames, wherever
``studio generate`` is killed; batch prompt files are checked line by line; sidecar and
flag values get one ``error:`` line; files are 0644 and killed runs' temporaries go."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.video_io import read_video
from studio import generate as generate_mod
from studio.batch import BatchOptions, read_prompts, run_batch
from studio.gallery import Gallery
from studio.generate import GenerateRequest, StudioError, clean_stale_temps
from studio.jobs import Worker, submit_generate
from tests.conftest import subprocess_env
from tests.test_cli import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle moving left on a black background"
TINY = ["--frames", "2", "--steps", "1", "--height", "16", "--width", "16", "--quiet"]


def start_held(script: str, *args, marker: Path) -> subprocess.Popen:
    """Run ``script`` in a fresh interpreter; it writes ``marker`` when it reaches the point
    it holds at. Returns once the marker is there (the process still holding) or the
    process has ended (no marker)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        env=subprocess_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    return proc


def kill_9(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


# ---------------------------------------------------------------------------- 4. jobs
HOLD_WORKER = """
import pathlib, sys, time
from studio.gallery import Gallery
from studio.jobs import Worker

home, model, marker = sys.argv[1:4]

class HeldAfterFirstStep(Gallery):
    def set_progress(self, job_id, done, total):
        pathlib.Path(marker).write_text(job_id)
        while True:  # the test kills the process here, before the next step
            time.sleep(1)

Worker(HeldAfterFirstStep(home), model=model).run_pending()
"""


@pytest.mark.parametrize("cancelled", [True, False], ids=["cancel-then-kill", "kill"])
def test_kill_9_of_the_worker_then_restart_settles_its_job(tmp_path, tiny_pipeline_dir, cancelled):
    """A job running when its server is killed -9: cancelled if its user had asked (not
    queued forever at "position 1", and deletable), else queued again and finished; the
    job queued behind it runs either way."""
    gallery = Gallery(tmp_path / "home")
    req = dict(prompt=PROMPT, steps=3, frames=2)
    first = submit_generate(gallery, GenerateRequest(**req, seed=1), model=tiny_pipeline_dir)
    later = submit_generate(gallery, GenerateRequest(**req, seed=2), model=tiny_pipeline_dir)
    marker = tmp_path / "held"
    proc = start_held(HOLD_WORKER, gallery.home, tiny_pipeline_dir, marker, marker=marker)
    assert marker.exists(), proc.communicate()[1].decode()[-3000:]
    assert marker.read_text() == first.id
    if cancelled:  # the Cancel button, while the job runs: it would stop at its next step
        assert gallery.cancel(first.id).status == "running"
    kill_9(proc)
    assert gallery.get(first.id).status == "running"  # what the dead server left

    restarted = Gallery(gallery.home)
    assert Worker(restarted, model=tiny_pipeline_dir).run_pending() == (1 if cancelled else 2)
    job = restarted.get(first.id)
    assert restarted.get(later.id).status == "done"
    assert restarted.queue_position(first.id) is None
    if cancelled:
        assert job.status == "cancelled" and job.video is None
        assert restarted.delete(first.id) and restarted.get(first.id) is None
    else:
        assert job.status == "done" and restarted.path("videos", job.video).is_file()
    # the worker's own temporaries did not outlive it
    assert not [p for p in (gallery.home / "videos").iterdir() if p.name.startswith(".")]


def test_a_job_asked_to_cancel_is_not_counted_as_waiting(tmp_path):
    """A queued job whose cancel was asked (what a dead worker's requeue used to leave)
    has no queue position, counts for no other job, and is cancelled by the next worker."""
    gallery = Gallery(tmp_path / "home")
    a = gallery.enqueue("generate", {}, "a", 0)
    b = gallery.enqueue("generate", {}, "b", 0)
    gallery._execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (a.id,))
    assert gallery.queue_position(a.id) is None and gallery.queue_position(b.id) == 1
    gallery.requeue_interrupted()
    assert gallery.get(a.id).status == "cancelled" and gallery.delete(a.id)
    assert gallery.get(b.id).status == "queued"


# ---------------------------------------------------------------------------- 5. generate
HOLD_GENERATE = """
import os, pathlib, sys, time

out, model, marker, hold_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
folder = os.path.dirname(os.path.abspath(out))
events = 0

def held(real, target_arg):
    def call(*args, **kw):
        global events
        if os.path.dirname(os.path.abspath(os.fspath(args[target_arg]))) == folder:
            events += 1
            if events == hold_at:  # the test kills the process here
                pathlib.Path(marker).write_text(f"{real.__name__} {args[target_arg]}")
                while True:
                    time.sleep(1)
        return real(*args, **kw)
    return call

# every rename or removal in the output folder is a point where a kill can land
os.replace = held(os.replace, 1)
os.unlink = held(os.unlink, 0)
from studio.cli import main

sys.exit(main(["generate", "a blue square moving up", "--out", out, "--model", model,
               "--seed", "2", "--frames", "2", "--steps", "1", "--height", "16",
               "--width", "16", "--quiet"]))
"""


def test_kill_9_anywhere_in_generate_never_pairs_a_video_with_a_stale_sidecar(
    cli, tmp_path, tiny_pipeline_dir
):
    """Regenerating over an existing clip (seed 1 → seed 2), killed -9 before each rename or
    removal in the output folder in turn, then once to the end: whenever both files are
    there, the sidecar describes the video beside it. A rerun clears the temporaries."""
    base = tmp_path / "base"
    base.mkdir()
    code, _, err = cli(
        "generate", "a blue square moving up", "--out", base / "clip.mp4", "--seed", 1,
        "--model", tiny_pipeline_dir, *TINY,
    )  # fmt: skip
    assert code == 0, err
    old_frames = read_video(base / "clip.mp4")[0]

    killed = []
    for hold_at in range(1, 10):
        folder = tmp_path / f"kill{hold_at}"
        shutil.copytree(base, folder)
        marker = tmp_path / f"held{hold_at}"
        out = folder / "clip.mp4"
        proc = start_held(HOLD_GENERATE, out, tiny_pipeline_dir, marker, hold_at, marker=marker)
        if not marker.exists():  # no such point left: the run went through
            assert proc.wait() == 0, proc.stderr.read().decode()[-3000:]
            assert json.loads(out.with_suffix(".json").read_text())["seed"] == 2
            assert not np.array_equal(read_video(out)[0], old_frames)
            assert sorted(p.name for p in folder.iterdir()) == ["clip.json", "clip.mp4"]
            break
        kill_9(proc)
        assert out.is_file()  # the old video or the new one, never none
        sidecar = out.with_suffix(".json")
        if sidecar.is_file():
            seed = json.loads(sidecar.read_text())["seed"]
            same_frames = np.array_equal(read_video(out)[0], old_frames)
            assert (seed, same_frames) in ((1, True), (2, False)), (hold_at, marker.read_text())
        killed.append(out)
    else:
        pytest.fail("generate was still holding after 9 points")
    assert len(killed) >= 3  # the video, the sidecar and at least one more point were tried

    for out in killed:  # a rerun removes what a killed one left (its process is gone)
        code, _, err = cli(
            "generate", "a blue square moving up", "--out", out, "--seed", 2,
            "--model", tiny_pipeline_dir, *TINY,
        )  # fmt: skip
        assert code == 0, err
        assert sorted(p.name for p in out.parent.iterdir()) == ["clip.json", "clip.mp4"]


# ---------------------------------------------------------------------------- 8. batch
def batch_options(tmp_path, tiny_pipeline_dir, text: str, name: str = "p.txt", **kw):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return BatchOptions(
        prompts=path,
        out_dir=tmp_path / "out",
        model=str(tiny_pipeline_dir),
        **{"steps": 1, "frames": 2, **kw},
    )


def test_a_prompt_given_twice_is_generated_once(tmp_path, tiny_pipeline_dir, capsys):
    opts = batch_options(tmp_path, tiny_pipeline_dir, "a red square\na blue circle\na red square\n")
    counts = run_batch(opts, progress=False)
    assert (counts["done"], counts["total"]) == (2, 2)
    lines = (opts.out_dir / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(x)["prompt"] for x in lines] == ["a red square", "a blue circle"]
    assert f"{opts.prompts}:3: the prompt of line 1 again: skipped" in capsys.readouterr().err
    assert sorted(p.name for p in opts.out_dir.glob("*.mp4")) == [
        "a blue circle-0.mp4",
        "a red square-0.mp4",
    ]


@pytest.mark.parametrize("key", ["video", "sample", "seed", "model"])
def test_a_prompt_line_may_not_take_a_manifest_or_sidecar_name(tmp_path, tiny_pipeline_dir, key):
    lines = [{"prompt": "a red square"}, {"prompt": "a blue circle", key: "../../x.mp4"}]
    text = "".join(json.dumps(x) + "\n" for x in lines)
    opts = batch_options(tmp_path, tiny_pipeline_dir, text, name="p.jsonl")
    with pytest.raises(StudioError, match=rf"p\.jsonl:2: '{key}' is a name the batch writes"):
        run_batch(opts, progress=False)
    assert not opts.out_dir.exists()


def test_invalid_utf8_names_its_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(b"a red square\na blue \xff circle\n")
    with pytest.raises(StudioError, match=r"p\.txt:2: not UTF-8 text \(byte 0xff at column 8\)"):
        read_prompts(path)


def test_score_refuses_manifest_paths_out_of_the_batch_folder(cli, clip_dir, tmp_path):
    from tests.test_scoring import write_clip

    run = tmp_path / "batch"
    run.mkdir()
    write_clip(run / "inside-0.mp4")
    write_clip(tmp_path / "outside.mp4")
    records = [
        {"prompt": "inside", "sample": 0, "video": "inside-0.mp4", "status": "ok"},
        {"prompt": "escape", "sample": 0, "video": "../outside.mp4", "status": "ok"},
        {"prompt": "absolute", "sample": 0, "video": str(tmp_path / "outside.mp4"), "status": "ok"},
    ]
    (run / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code, _, err = cli("score", run, "--scorer", f"clip:{clip_dir}", "--quiet")
    assert code == 1  # something was refused; the rest was scored
    assert "manifest.jsonl:2: video '../outside.mp4' is outside" in err
    assert "manifest.jsonl:3: video" in err
    rows = [json.loads(x) for x in (run / "scores.jsonl").read_text().splitlines()]
    assert [r["video"] for r in rows] == ["inside-0.mp4"] and "score" in rows[0]


# ---------------------------------------------------------------------------- 11. values
def write_sidecar(tmp_path, tiny_pipeline_dir, **fields) -> Path:
    record = {"prompt": "a red square", "seed": 1, "steps": 1, "frames": 2, "height": 16}
    record |= {"width": 16, "fps": 8, "guidance": 3.0, "model": str(tiny_pipeline_dir)}
    path = tmp_path / "in" / "clip.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(record | fields))
    return path


@pytest.mark.parametrize(
    "fields, pattern",
    [
        (
            {"seed": "abc"},
            r"clip\.json: seed must be a whole number from 0 to 2\*\*63-1, got 'abc'",
        ),
        ({"seed": 2**70}, r"clip\.json: seed must be .*got 1180591620717411303424$"),
        ({"seed": -1}, r"seed must be .*got -1$"),
        ({"guidance": "3"}, r"clip\.json: guidance must be a number, got '3'"),
        ({"fps": "8"}, r"clip\.json: fps must be a whole number from 1 to 120, got '8'"),
        ({"fps": 1_000_000}, r"fps must be a whole number from 1 to 120, got 1000000"),
        ({"steps": "two"}, r"clip\.json: steps must be a whole number, got 'two'"),
        ({"height": 16.5}, r"clip\.json: height must be a whole number, got 16\.5"),
        ({"image_first": "yes"}, r"image_first must be true, false or null, got 'yes'"),
        ({"negative_prompt": 3}, r"negative_prompt must be a string or null, got 3"),
        ({"model": 5}, r"clip\.json: model must be a folder path, got 5"),
        ({"references": "x.png"}, r"clip\.json: references must be a list, got 'x\.png'"),
    ],
)
def test_wrongly_typed_sidecar_fields_are_one_error_line(
    cli, tmp_path, tiny_pipeline_dir, fields, pattern
):
    sidecar = write_sidecar(tmp_path, tiny_pipeline_dir, **fields)
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = cli("generate", "--from-sidecar", sidecar, "--out", out / "again.mp4", "--quiet")
    assert_one_line_error(code, err, pattern)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "flags, pattern",
    [
        (["--seed", str(2**70)], r"seed must be a whole number from 0 to 2\*\*63-1, got 1180"),
        (["--seed", "-5"], r"seed must be .*got -5$"),
        (["--fps", "1000000"], r"fps must be a whole number from 1 to 120, got 1000000$"),
        (["--fps", "121"], r"fps must be .*got 121$"),
        (["--fps", "0"], r"fps must be a whole number from 1 to 120, got 0$"),  # in one wording
    ],
)
def test_generate_seed_and_fps_ranges(cli, tmp_path, tiny_pipeline_dir, flags, pattern):
    code, _, err = cli(
        "generate", PROMPT, "--out", tmp_path / "c.mp4", "--model", tiny_pipeline_dir, *TINY, *flags
    )
    assert_one_line_error(code, err, pattern)
    assert list(tmp_path.iterdir()) == []


def test_generate_at_the_largest_seed_and_fps(cli, tmp_path, tiny_pipeline_dir):
    out = tmp_path / "c.mp4"
    code, _, err = cli(
        "generate", PROMPT, "--out", out, "--model", tiny_pipeline_dir, *TINY,
        "--seed", 2**63 - 1, "--fps", 120,
    )  # fmt: skip
    assert code == 0, err
    assert read_video(out)[1] == pytest.approx(120)
    assert json.loads(out.with_suffix(".json").read_text())["seed"] == 2**63 - 1


@pytest.mark.parametrize(
    "flags, pattern",
    [
        (["--seed", str(2**70)], r"seed must be .*got 1180591620717411303424$"),
        (
            ["--seed", str(2**63 - 1), "--samples", "2"],
            r"seed \+ samples - 1 .*got 9223372036854775808$",
        ),
        (["--fps", "1000000"], r"fps must be a whole number from 1 to 120, got 1000000$"),
    ],
)
def test_batch_seed_and_fps_ranges(cli, tmp_path, tiny_pipeline_dir, flags, pattern):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\n")
    out = tmp_path / "out"
    code, _, err = cli(
        "batch", prompts, "--out-dir", out, "--model", tiny_pipeline_dir, "--quiet", *flags
    )
    assert_one_line_error(code, err, pattern)
    assert not out.exists()


def test_storyboard_seed_range(cli, tmp_path, tiny_pipeline_dir):
    story = tmp_path / "story.yaml"
    story.write_text("scenes:\n  - prompt: a red square\n    frames: 2\n")
    code, _, err = cli(
        "storyboard", story, "--out", tmp_path / "film.mp4", "--seed", 2**70,
        "--model", tiny_pipeline_dir, "--quiet",
    )  # fmt: skip
    assert_one_line_error(code, err, r"seed must be .*got 1180591620717411303424$")
    assert not (tmp_path / "film.mp4").exists()


def test_data_shapes_size_is_range_checked(cli, tmp_path):
    out = tmp_path / "shards"
    code, _, err = cli("data", "shapes", "--out", out, "--size", 100_000, "--quiet")
    assert_one_line_error(code, err, r"--size must be at most 1024 px, got 100000$")
    assert not out.exists()


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_ui_upload_limit_must_be_finite_and_positive(cli, value):
    code, _, err = cli("ui", "--max-upload-mb", value)
    assert_one_line_error(code, err, rf"--max-upload-mb must be a positive number, got {value}")


# ---------------------------------------------------------------------------- 12. files
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield 0o644
    os.umask(old)


def test_sidecar_and_manifest_are_created_like_the_videos(
    umask_022, tmp_path, tiny_pipeline_dir, cli
):
    out = tmp_path / "clip.mp4"
    assert cli("generate", PROMPT, "--out", out, "--model", tiny_pipeline_dir, *TINY)[0] == 0
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(out) == mode(out.with_suffix(".json")) == umask_022
    opts = batch_options(tmp_path, tiny_pipeline_dir, "a red square\n")
    assert run_batch(opts, progress=False)["done"] == 1
    assert {mode(p) for p in opts.out_dir.iterdir()} == {umask_022}  # video, sidecar, manifest


def test_only_stale_temporaries_of_our_pattern_are_cleaned(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        names = {
            f".clip.json.{dead.pid}.0badc0de.tmp": False,  # its process is gone
            f".clip.mp4.{dead.pid}.0badc0de.tmp.mp4": False,
            f"..clip.mp4.{dead.pid}.0badc0de.tmp.mp4.0123456789ab.tmp.mp4": False,  # nested
            f".clip.json.{alive.pid}.0badc0de.tmp": True,  # another run, writing now
            f".clip.json.{os.getpid()}.0badc0de.tmp": True,  # ours
            ".old.mp4.0123456789ab.tmp.mp4": False,  # no process named, and 2 minutes old
            ".new.mp4.0123456789ab.tmp.mp4": True,  # no process named, just written
            ".manifest.jsonl.k3j4h5g6.tmp": False,  # mkstemp's, from before, old
            "keep.tmp": True,  # not hidden: not ours
            ".hidden-notes": True,
            ".notes.tmp": True,  # hidden and .tmp, but not a name the studio makes
            ".clip.mp4.tmp": True,
            f"clip-{dead.pid}.mp4": True,
        }
        for name in names:
            (tmp_path / name).write_text("x")
        two_minutes_ago = time.time() - 120
        for name in (
            ".old.mp4.0123456789ab.tmp.mp4",
            ".manifest.jsonl.k3j4h5g6.tmp",
            ".notes.tmp",
            ".clip.mp4.tmp",
        ):
            os.utime(tmp_path / name, (two_minutes_ago, two_minutes_ago))
        removed = clean_stale_temps(tmp_path)
        assert sorted(p.name for p in removed) == sorted(n for n, keep in names.items() if not keep)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            n for n, k in names.items() if k
        )
    finally:
        alive.kill()
        alive.wait()


def test_score_out_into_a_missing_folder_fails_before_scoring(cli, tmp_path, monkeypatch):
    from studio import score as score_mod

    def never(*a, **kw):
        raise AssertionError("scored before checking --out")

    monkeypatch.setattr(score_mod, "score_pairs", never)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"video": "a.mp4", "caption": "a red circle"}) + "\n")
    missing = tmp_path / "nowhere"
    code, _, err = cli("score", pairs, "--out", missing / "s.jsonl", "--scorer", "clip:x")
    assert_one_line_error(code, err, f"output folder does not exist: {missing}$")
    assert not missing.exists()


def test_generate_writes_temporaries_with_our_pattern(monkeypatch, tmp_path, tiny_pipeline_dir):
    """The names generate() writes before placing are the ones clean_stale_temps knows."""
    seen = []
    real = generate_mod.write_video

    def spy(path, frames, fps):
        seen.append(Path(path).name)
        return real(path, frames, fps)

    monkeypatch.setattr(generate_mod, "write_video", spy)
    req = GenerateRequest(prompt=PROMPT, steps=1, frames=2, height=16, width=16)
    generate_mod.generate(req, tmp_path / "c.mp4", model=tiny_pipeline_dir)
    assert seen and seen[0].startswith(f".c.mp4.{os.getpid()}.")
    from pipelines import files

    assert files._TEMP_RE.match(seen[0]) and files._TEMP_PID_RE.search(seen[0])
