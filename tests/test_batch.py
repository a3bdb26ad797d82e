"""studio.batch: VBench names, manifest, resume after deletion or interruption, failures that
do not stop the batch, and CLI usage errors."""

from __future__ import annotations

import json

import pytest

from studio import batch as batch_mod
from studio.batch import BatchOptions, read_prompts, run_batch, video_stem
from studio.generate import StudioError

FAST = dict(steps=1, frames=2)  # 64×64 (the generate default), 2 frames, 1 step


@pytest.fixture
def options(tmp_path, tiny_pipeline_dir):
    def make(prompts: str, name: str = "prompts.txt", **kw) -> BatchOptions:
        path = tmp_path / name
        path.write_text(prompts, encoding="utf-8")
        return BatchOptions(
            prompts=path,
            out_dir=tmp_path / "out",
            model=str(tiny_pipeline_dir),
            **{**FAST, **kw},
        )

    return make


@pytest.fixture
def pipe(tiny_pipeline_dir):
    from studio.generate import load_pipeline

    return load_pipeline(tiny_pipeline_dir)


def manifest(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]


def videos(out_dir) -> list[str]:
    return sorted(p.name for p in out_dir.glob("*.mp4"))


# -------------------------------------------------------------------------- names
def test_video_stem_keeps_prompt_and_replaces_unsafe_characters():
    assert video_stem("a red square moving left", 0) == "a red square moving left-0"
    assert video_stem('a/b\\c:d*e?f"g<h>i|j', 3) == "a_b_c_d_e_f_g_h_i_j-3"
    assert video_stem("tab\there\nnewline", 1) == "tab_here_newline-1"
    assert video_stem("  padded  ", 0) == "padded-0"


def test_long_prompts_are_cut_and_hashed():
    a = "a red square moving left " * 20
    b = a + "and one more word"
    sa, sb = video_stem(a, 0), video_stem(b, 0)
    assert sa != sb  # same first 200 bytes, different hashes
    assert len(sa.encode()) <= 200 + len("~12345678-0")
    assert sa.startswith(a[:150]) and sa.endswith("-0")
    assert sa.rsplit("-", 1)[0].rsplit("~", 1)[1].isalnum()
    # multi-byte characters are never cut in half
    assert video_stem("é" * 300, 0).encode().decode() == video_stem("é" * 300, 0)


def test_txt_batch_names_and_manifest(options, pipe):
    opts = options("a red square\n\na blue/circle: big?\n", samples=2, seed=10)
    counts = run_batch(opts, progress=False, pipe=pipe)
    assert counts == {"done": 4, "skipped": 0, "failed": 0, "total": 4, "malformed_lines": 0}
    assert videos(opts.out_dir) == [
        "a blue_circle_ big_-0.mp4",
        "a blue_circle_ big_-1.mp4",
        "a red square-0.mp4",
        "a red square-1.mp4",
    ]
    records = manifest(opts.out_dir)
    assert [(r["prompt"], r["sample"], r["seed"]) for r in records] == [
        ("a red square", 0, 10),
        ("a red square", 1, 11),
        ("a blue/circle: big?", 0, 10),
        ("a blue/circle: big?", 1, 11),
    ]
    assert all(r["status"] == "ok" for r in records)
    for r in records:
        assert (opts.out_dir / r["video"]).is_file()
        sidecar = json.loads((opts.out_dir / r["sidecar"]).read_text())
        assert sidecar["prompt"] == r["prompt"] and sidecar["seed"] == r["seed"]
        assert sidecar["sample"] == r["sample"] and sidecar["frames"] == 2


def test_jsonl_extra_fields_are_copied(options, pipe):
    lines = [
        {"prompt": "a red square moving left", "category": "motion", "expect": {"dir": "left"}},
        "a plain string prompt",
    ]
    opts = options("\n".join(json.dumps(x) for x in lines) + "\n", name="p.jsonl")
    assert run_batch(opts, progress=False, pipe=pipe)["done"] == 2
    first, second = manifest(opts.out_dir)
    assert first["category"] == "motion" and first["expect"] == {"dir": "left"}
    assert second["prompt"] == "a plain string prompt" and "category" not in second
    sidecar = json.loads((opts.out_dir / first["sidecar"]).read_text())
    assert sidecar["category"] == "motion"


def test_prompts_that_clean_to_the_same_name_do_not_overwrite(options, pipe):
    opts = options("a/b\na:b\n")
    assert run_batch(opts, progress=False, pipe=pipe)["done"] == 2
    names = [r["video"] for r in manifest(opts.out_dir)]
    assert names[0] == "a_b-0.mp4" and names[1] != names[0]
    assert len(videos(opts.out_dir)) == 2
    again = run_batch(opts, progress=False, pipe=pipe)  # and the names are stable on resume
    assert again["skipped"] == 2 and again["done"] == 0


# -------------------------------------------------------------------------- resume
def test_rerun_regenerates_only_missing_videos(options, pipe):
    opts = options("one\ntwo\nthree\n")
    assert run_batch(opts, progress=False, pipe=pipe)["done"] == 3
    kept = opts.out_dir / "one-0.mp4"
    kept_mtime = kept.stat().st_mtime_ns
    (opts.out_dir / "two-0.mp4").unlink()
    counts = run_batch(opts, progress=False, pipe=pipe)
    assert (counts["done"], counts["skipped"], counts["failed"]) == (1, 2, 0)
    assert (opts.out_dir / "two-0.mp4").is_file()
    assert kept.stat().st_mtime_ns == kept_mtime
    assert len(manifest(opts.out_dir)) == 3


def test_resume_after_interruption(options, pipe, monkeypatch):
    opts = options("first\nsecond\nthird\n")
    real_generate = batch_mod.generate
    calls = []

    def interrupted(request, out, **kw):
        calls.append(request.prompt)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real_generate(request, out, **kw)

    monkeypatch.setattr(batch_mod, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_batch(opts, progress=False, pipe=pipe)
    assert videos(opts.out_dir) == ["first-0.mp4"]
    assert [r["prompt"] for r in manifest(opts.out_dir)] == ["first"]

    monkeypatch.setattr(batch_mod, "generate", real_generate)
    counts = run_batch(opts, progress=False, pipe=pipe)
    assert (counts["done"], counts["skipped"], counts["failed"]) == (2, 1, 0)
    assert videos(opts.out_dir) == ["first-0.mp4", "second-0.mp4", "third-0.mp4"]
    assert [r["status"] for r in manifest(opts.out_dir)] == ["ok"] * 3


def test_failing_prompt_is_recorded_and_the_rest_go_on(options, pipe, monkeypatch):
    opts = options("good one\nbad one\ngood two\n")
    real_generate = batch_mod.generate

    def flaky(request, out, **kw):
        if request.prompt == "bad one":
            raise RuntimeError("renderer exploded")
        return real_generate(request, out, **kw)

    monkeypatch.setattr(batch_mod, "generate", flaky)
    counts = run_batch(opts, progress=False, pipe=pipe)
    assert (counts["done"], counts["failed"]) == (2, 1)
    records = {r["prompt"]: r for r in manifest(opts.out_dir)}
    assert records["bad one"]["status"] == "error"
    assert records["bad one"]["error"] == "RuntimeError: renderer exploded"
    assert records["good two"]["status"] == "ok"
    assert videos(opts.out_dir) == ["good one-0.mp4", "good two-0.mp4"]

    # a rerun retries the failed prompt only
    monkeypatch.setattr(batch_mod, "generate", real_generate)
    counts = run_batch(opts, progress=False, pipe=pipe)
    assert (counts["done"], counts["skipped"], counts["failed"]) == (1, 2, 0)


def test_malformed_jsonl_line_is_reported_and_skipped(options, pipe, capsys):
    text = '{"prompt": "a red square"}\n{not json\n{"caption": "no prompt key"}\n"a blue circle"\n'
    opts = options(text, name="p.jsonl")
    counts = run_batch(opts, progress=False, pipe=pipe)
    assert (counts["done"], counts["malformed_lines"]) == (2, 2)
    out = capsys.readouterr().out
    assert f"{opts.prompts}:2: malformed line skipped" in out
    assert f"{opts.prompts}:3: malformed line skipped" in out
    assert [r["prompt"] for r in manifest(opts.out_dir)] == ["a red square", "a blue circle"]


def test_read_prompts_errors(tmp_path):
    with pytest.raises(StudioError, match="not found"):
        read_prompts(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(StudioError, match=f"no prompts in {empty}"):
        read_prompts(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    with pytest.raises(StudioError, match=r"1 malformed lines"):
        read_prompts(bad)


# -------------------------------------------------------------------------- CLI
@pytest.fixture
def cli(cli):
    """The shared ``studio`` runner (conftest), bound to ``studio batch … --quiet``."""
    return lambda *argv: cli("batch", *argv, "--quiet")


def test_cli_batch_and_resume(cli, tmp_path, tiny_pipeline_dir):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\na green circle\n")
    out = tmp_path / "out"
    args = (prompts, "--out-dir", out, "--model", tiny_pipeline_dir, "--steps", 1, "--frames", 2)
    code, stdout, err = cli(*args, "--samples", 2)
    assert code == 0, err
    assert "4 videos written, 0 already done, 0 failed" in stdout
    assert len(videos(out)) == 4
    code, stdout, _ = cli(*args, "--samples", 2)
    assert code == 0 and "0 videos written, 4 already done" in stdout


def one_line_error(code, err, pattern):
    import re

    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]


def test_cli_missing_prompts_file(cli, tmp_path, tiny_pipeline_dir):
    missing = tmp_path / "missing.txt"
    code, _, err = cli(missing, "--out-dir", tmp_path / "out", "--model", tiny_pipeline_dir)
    one_line_error(code, err, f"prompts file not found: {missing}")
    assert not (tmp_path / "out").exists()


def test_cli_empty_prompts_file(cli, tmp_path, tiny_pipeline_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    code, _, err = cli(empty, "--out-dir", tmp_path / "out", "--model", tiny_pipeline_dir)
    one_line_error(code, err, f"no prompts in {empty}")


def test_cli_zero_samples(cli, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\n")
    code, _, err = cli(prompts, "--out-dir", tmp_path / "out", "--samples", 0)
    assert code == 2 and "--samples" in err and "must be >= 1, got 0" in err
    assert not (tmp_path / "out").exists()


def test_cli_unwritable_out_dir(cli, tmp_path, tiny_pipeline_dir):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\n")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, _, err = cli(prompts, "--out-dir", blocker / "out", "--model", tiny_pipeline_dir)
    one_line_error(code, err, f"cannot create output folder {blocker / 'out'}")


def test_cli_bad_shared_setting_is_a_usage_error(cli, tmp_path, tiny_pipeline_dir):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\na blue circle\n")
    out = tmp_path / "out"
    code, _, err = cli(prompts, "--out-dir", out, "--model", tiny_pipeline_dir, "--steps", 0)
    one_line_error(code, err, r"num_inference_steps .*got 0$")
    assert videos(out) == [] and not (out / "manifest.jsonl").exists()


def test_cli_failures_exit_1(cli, tmp_path, tiny_pipeline_dir, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\n")

    def broken(*a, **kw):
        raise RuntimeError("no luck")

    monkeypatch.setattr(batch_mod, "generate", broken)
    code, stdout, _ = cli(prompts, "--out-dir", tmp_path / "out", "--model", tiny_pipeline_dir)
    assert code == 1 and "1 failed" in stdout
