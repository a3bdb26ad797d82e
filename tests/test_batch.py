"""studio.batch: VBench names, manifest, resume after deletion or interruption, failures that
do not stop the batch, CLI usage errors, and batches shared among processes (torchrun)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from studio import batch as batch_mod
from studio.batch import (
    BatchOptions,
    assign_jobs,
    merge_manifests,
    part_path,
    read_prompts,
    run_batch,
    video_stem,
)
from studio.generate import StudioError
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]

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
    """Nor prompts that differ only in case: macOS and Windows names ignore it."""
    opts = options("a/b\na:b\nA/B\n")
    assert run_batch(opts, progress=False, pipe=pipe)["done"] == 3
    names = [r["video"] for r in manifest(opts.out_dir)]
    assert names[0] == "a_b-0.mp4"
    assert len({n.casefold() for n in names}) == 3
    assert len(videos(opts.out_dir)) == 3
    again = run_batch(opts, progress=False, pipe=pipe)  # and the names are stable on resume
    assert again["skipped"] == 3 and again["done"] == 0
    # a folder made before names ignored case (A_B-0 beside a_b-0) resumes as it is
    third = opts.out_dir / names[2]
    for suffix in (".mp4", ".json"):
        third.with_suffix(suffix).rename(opts.out_dir / f"A_B-0{suffix}")
    lines = manifest(opts.out_dir)
    lines[2] = {**lines[2], "video": "A_B-0.mp4", "sidecar": "A_B-0.json"}
    (opts.out_dir / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert run_batch(opts, progress=False, pipe=pipe)["skipped"] == 3


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


def test_another_batch_into_the_same_folder_keeps_the_first_ones_lines(options, pipe):
    """Other prompts, or fewer samples, in a folder that holds a batch: the earlier lines stay
    in the manifest (the videos are still there, and evaluations read the manifest)."""
    first = options("one\ntwo\n", samples=2)
    assert run_batch(first, progress=False, pipe=pipe)["done"] == 4
    other = options("three\n", name="other.txt")
    assert run_batch(other, progress=False, pipe=pipe)["done"] == 1
    lines = [(r["prompt"], r["sample"]) for r in manifest(first.out_dir)]
    assert lines == [("three", 0), ("one", 0), ("one", 1), ("two", 0), ("two", 1)]
    counts = run_batch(first, progress=False, pipe=pipe)  # nothing made again
    assert (counts["done"], counts["skipped"]) == (0, 4)
    fewer = options("one\ntwo\n", samples=1)
    assert run_batch(fewer, progress=False, pipe=pipe)["skipped"] == 2
    assert len(manifest(first.out_dir)) == 5 and len(videos(first.out_dir)) == 5


def test_a_later_batch_does_not_overwrite_an_earlier_ones_video_of_the_same_name(options, pipe):
    first = options("a/b\n")
    run_batch(first, progress=False, pipe=pipe)
    run_batch(options("a:b\n", name="other.txt"), progress=False, pipe=pipe)  # also "a_b"
    lines = {r["prompt"]: r["video"] for r in manifest(first.out_dir)}
    assert lines["a/b"] == "a_b-0.mp4" and lines["a:b"] != "a_b-0.mp4"
    assert len(videos(first.out_dir)) == 2
    sidecar = json.loads((first.out_dir / "a_b-0.json").read_text())
    assert sidecar["prompt"] == "a/b", "the earlier video is still the earlier prompt's"


def test_a_dotted_prompt_is_not_a_hidden_file():
    assert video_stem("..", 0) == "_.-0" and video_stem(".hidden", 1) == "_hidden-1"


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
    out, err = capsys.readouterr()
    assert f"{opts.prompts}:2: malformed line skipped" in err  # warnings: stderr, not stdout
    assert f"{opts.prompts}:3: malformed line skipped" in err and "malformed" not in out
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
    csv = tmp_path / "p.csv"  # its header and quotes would become prompts
    csv.write_text('prompt,category\n"a red circle",motion\n')
    with pytest.raises(StudioError, match=r"a CSV file; prompts files are \.txt"):
        read_prompts(csv)
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  "a red circle",\n')
    with pytest.raises(StudioError, match=r"broken.json:\d+: not a JSON array"):
        read_prompts(broken)


def test_a_json_array_of_prompts_is_read_whole(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[\n  "a red circle",\n  {"prompt": "a blue square", "tag": 1},\n  7\n]\n')
    entries, problems = read_prompts(path)
    assert [(e.prompt, e.extra, e.line) for e in entries] == [
        ("a red circle", {}, 1),
        ("a blue square", {"tag": 1}, 2),
    ]
    assert len(problems) == 1 and "arr.json:3: malformed line skipped" in problems[0]


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


def test_cli_malformed_lines_make_the_run_exit_1(cli, tmp_path, tiny_pipeline_dir):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a red square"}\n{oops\n')
    out = tmp_path / "out"
    args = (prompts, "--out-dir", out, "--model", tiny_pipeline_dir, "--steps", 1, "--frames", 2)
    code, stdout, err = cli(*args)
    assert code == 1  # a script sees that a line was not generated, as `studio score` says it
    assert "1 videos written, 0 already done, 0 failed, 1 malformed lines skipped" in stdout
    assert f"{prompts}:2: malformed line skipped" in err
    assert len(videos(out)) == 1
    prompts.write_text('{"prompt": "a red square"}\n')  # fixed: the rerun finishes with 0
    code, stdout, _ = cli(*args)
    assert code == 0 and "0 videos written, 1 already done, 0 failed →" in stdout


def test_cli_resume_with_other_settings_is_refused(cli, tmp_path, tiny_pipeline_dir):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\na green circle\n")
    out = tmp_path / "out"
    args = (prompts, "--out-dir", out, "--model", tiny_pipeline_dir, "--frames", 2)
    assert cli(*args, "--steps", 1)[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    for other in (
        ("--steps", 2),
        ("--steps", 1, "--seed", 7),
        ("--steps", 1, "--guidance", 1),
        ("--steps", 1, "--negative", "blurry"),
        ("--steps", 1, "--height", 32),
    ):
        code, _, err = cli(*args, *other)
        one_line_error(code, err, f"{out} already holds videos made with .*another --out-dir")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing rewritten
    code, stdout, _ = cli(*args, "--steps", 1)  # the same settings resume
    assert code == 0 and "0 videos written, 2 already done" in stdout
    # the model by its weights: a copy of it resumes, other weights (a new default) do not
    copy = tmp_path / "copy"
    shutil.copytree(tiny_pipeline_dir, copy)
    same = (prompts, "--out-dir", out, "--model", copy, "--frames", 2, "--steps", 1)
    code, stdout, _ = cli(*same)
    assert code == 0 and "0 videos written, 2 already done" in stdout
    weights = next(copy.glob("transformer/*.safetensors"))
    tensors = load_file(weights)
    name = next(iter(tensors))
    save_file(tensors | {name: tensors[name] + 1}, weights)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, _, err = cli(*same)
    one_line_error(code, err, f"{out} already holds videos made with another model's weights")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_cli_another_batch_with_other_settings_into_the_folder_is_refused(
    cli, tmp_path, tiny_pipeline_dir
):
    """A folder holds videos of one setting: other prompts with other settings are refused
    too, not only the same prompts made again."""
    prompts, other = tmp_path / "p.txt", tmp_path / "q.txt"
    prompts.write_text("a red square\n")
    other.write_text("a green circle\n")
    out = tmp_path / "out"
    base = ("--out-dir", out, "--model", tiny_pipeline_dir, "--frames", 2)
    assert cli(prompts, *base, "--steps", 1)[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, _, err = cli(other, *base, "--steps", 2)
    one_line_error(code, err, f"{out} already holds videos made with .*another --out-dir")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert cli(other, *base, "--steps", 1)[0] == 0  # the same settings: added to the folder


def test_cli_negative_prompt_applies_to_every_video(cli, tmp_path, tiny_pipeline_dir):
    from pipelines.video_io import read_video

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\na green circle\n")
    args = (prompts, "--model", tiny_pipeline_dir, "--frames", 2, "--steps", 1, "--seed", 3)
    assert cli(*args, "--out-dir", tmp_path / "n", "--negative", "a blue circle")[0] == 0
    assert cli(*args, "--out-dir", tmp_path / "plain")[0] == 0
    sidecars = sorted((tmp_path / "n").glob("a *.json"))
    assert len(sidecars) == 2
    for sidecar in sidecars:
        assert json.loads(sidecar.read_text())["negative_prompt"] == "a blue circle"
        negative = read_video(sidecar.with_suffix(".mp4"))[0]
        plain = read_video(tmp_path / "plain" / sidecar.with_suffix(".mp4").name)[0]
        assert not np.array_equal(negative, plain)  # it reached the sampler


def test_cli_batch_takes_the_frame_size(cli, tmp_path, tiny_pipeline_dir):
    from pipelines.video_io import read_video

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\n")
    args = (prompts, "--model", tiny_pipeline_dir, "--frames", 2, "--steps", 1)
    assert cli(*args, "--out-dir", tmp_path / "o", "--height", 16, "--width", 32)[0] == 0
    frames, _ = read_video(tmp_path / "o" / "a red square-0.mp4")
    assert frames.shape[1:3] == (16, 32)
    code, _, err = cli(*args, "--out-dir", tmp_path / "bad", "--height", 17)
    assert code == 2 and err.startswith("error:") and not (tmp_path / "bad").exists()


def test_cli_a_reference_line_fails_alone_wherever_it_is(cli, tmp_path, tiny_pipeline_dir):
    # the tiny model takes no references: the line fails, the others are made, in any order
    for order in (("<ref1> moving left", "a red square"), ("a red square", "<ref1> moving left")):
        prompts = tmp_path / "p.txt"
        prompts.write_text("\n".join(order) + "\n")
        out = tmp_path / f"out_{order[0][0]}"
        code, stdout, _ = cli(
            prompts, "--out-dir", out, "--model", tiny_pipeline_dir, "--frames", 2
        )
        assert code == 1 and "1 videos written" in stdout and "1 failed" in stdout, stdout
        assert videos(out) == ["a red square-0.mp4"]
        failed = [r for r in manifest(out) if r["status"] == "error"]
        assert [r["prompt"] for r in failed] == ["<ref1> moving left"]


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
    code, _, err = cli(prompts, "--out-dir", blocker, "--model", tiny_pipeline_dir)
    one_line_error(code, err, f"output folder {blocker} is a file: name a folder")


def test_cli_bad_shared_setting_is_a_usage_error(cli, tmp_path, tiny_pipeline_dir):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\na blue circle\n")
    out = tmp_path / "out"
    code, _, err = cli(prompts, "--out-dir", out, "--model", tiny_pipeline_dir, "--steps", 0)
    one_line_error(code, err, r"^error: steps .*got 0$")
    assert videos(out) == [] and not (out / "manifest.jsonl").exists()


def test_cli_failures_exit_1(cli, tmp_path, tiny_pipeline_dir, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\n")

    def broken(*a, **kw):
        raise RuntimeError("no luck")

    monkeypatch.setattr(batch_mod, "generate", broken)
    code, stdout, _ = cli(prompts, "--out-dir", tmp_path / "out", "--model", tiny_pipeline_dir)
    assert code == 1 and "1 failed" in stdout


# -------------------------------------------------------------------------- distributed
def rec(prompt: str, sample: int, status: str = "ok", **kw) -> dict:
    return {"prompt": prompt, "sample": sample, "status": status, **kw}


def write_lines(path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def keys(records: list[dict]) -> list[tuple]:
    return [(r["prompt"], r["sample"], r["status"]) for r in records]


def test_assign_jobs_is_round_robin_and_covers_every_job_once():
    jobs = list(range(7))
    shares = [assign_jobs(jobs, rank, 3) for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(shares, [])) == jobs
    assert assign_jobs(jobs, 0, 1) == jobs  # one process: everything, in order
    assert assign_jobs(["only"], 1, 2) == []  # more processes than jobs
    with pytest.raises(ValueError, match="rank=2, world=2"):
        assign_jobs(jobs, 2, 2)


def test_merge_manifests_folds_parts_of_a_crashed_run_then_orders_a_finished_one(tmp_path):
    write_lines(
        tmp_path / "manifest.jsonl",
        [rec("a", 0), rec("b", 0, "error", error="RuntimeError: boom"), rec("gone", 0)],
    )
    # A 2-process run that crashed: rank 1 retried b-0 (now a success) and was cut mid-line.
    write_lines(part_path(tmp_path, 0), [rec("b", 1, rank=0)])
    write_lines(part_path(tmp_path, 1), [rec("b", 0, rank=1), rec("c", 0, rank=1)])
    with open(part_path(tmp_path, 1), "a") as fh:
        fh.write('{"prompt": "c", "samp')

    # At the start of the next run: every key kept, in order of first appearance.
    merged = merge_manifests(tmp_path)
    assert [k[:2] for k in keys(merged)] == [("a", 0), ("b", 0), ("gone", 0), ("b", 1), ("c", 0)]
    assert all(r["status"] == "ok" for r in merged)
    assert merged[1]["rank"] == 1 and "error" not in merged[1]  # the success replaced it
    assert manifest(tmp_path) == merged
    assert not list(tmp_path.glob("manifest.rank*"))
    assert merge_manifests(tmp_path) is None  # no parts, no order: nothing written

    # At the end of a run: exactly the run's keys that have a record, in prompt order, then
    # sample, as a one-process run writes them; a failed retry replaces a stale success.
    write_lines(part_path(tmp_path, 0), [rec("c", 1, "error", error="x", rank=0)])
    write_lines(part_path(tmp_path, 1), [rec("a", 0, "error", error="y", rank=1)])
    order = [("c", 0), ("c", 1), ("a", 0), ("b", 0), ("b", 1), ("never", 0)]
    merged = merge_manifests(tmp_path, order)
    expected = [
        ("c", 0, "ok"),
        ("c", 1, "error"),
        ("a", 0, "error"),
        ("b", 0, "ok"),
        ("b", 1, "ok"),
    ]
    assert keys(merged) == expected
    assert manifest(tmp_path) == merged and not list(tmp_path.glob("manifest.rank*"))


def test_one_process_run_picks_up_parts_of_a_crashed_run(options, pipe):
    opts = options("one\ntwo\n")
    assert run_batch(opts, progress=False, pipe=pipe)["done"] == 2
    # As a crashed 2-process run leaves it: "two" is done, but recorded only in rank 1's part.
    first, second = manifest(opts.out_dir)
    write_lines(opts.out_dir / "manifest.jsonl", [first])
    write_lines(part_path(opts.out_dir, 1), [{**second, "rank": 1}])
    counts = run_batch(opts, progress=False, pipe=pipe)
    assert (counts["done"], counts["skipped"], counts["failed"]) == (0, 2, 0)
    assert [r.get("rank") for r in manifest(opts.out_dir)] == [None, 1]
    assert not list(opts.out_dir.glob("manifest.rank*"))


def torchrun_batch(prompts, out, model, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node NPROC -m studio.cli batch …`` (3 prompts × 2 samples)."""
    argv = ["--nproc_per_node", str(nproc), "--master_port", str(free_port())]
    argv += ["-m", "studio.cli", "batch", str(prompts), "--out-dir", str(out)]
    argv += ["--model", str(model), "--steps", "1", "--frames", "2", "--samples", "2", "--quiet"]
    # No GPU even where there is one: two ranks on one GPU would ask for cuda:0 and cuda:1.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_pipeline_dir):
    """One 2-process batch shared by the tests below (each launch costs ~20 s here)."""
    root = tmp_path_factory.mktemp("torchrun")
    prompts = root / "prompts.txt"
    prompts.write_text("one\ntwo\nthree\n")
    result = torchrun_batch(prompts, root / "out", tiny_pipeline_dir)
    return result, prompts, root / "out"


def test_two_processes_share_the_batch_and_write_one_manifest(two_process_run, options, pipe):
    result, prompts, out = two_process_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("videos written") == 1  # the main process reports
    assert "6 videos written, 0 already done, 0 failed" in result.stdout
    assert len(videos(out)) == 6
    records = manifest(out)
    assert [(r["prompt"], r["sample"]) for r in records] == [
        (p, i) for p in ("one", "two", "three") for i in (0, 1)
    ]
    assert all(r["status"] == "ok" for r in records)
    assert [r["rank"] for r in records] == [0, 1] * 3  # round-robin over the 6 jobs
    assert not list(out.glob("manifest.rank*")) and not list(out.glob(".*.tmp"))

    # One process makes the very same videos: seeds depend on the sample alone.
    from pipelines.video_io import read_video

    single = options(prompts.read_text(), samples=2)
    assert run_batch(single, progress=False, pipe=pipe)["done"] == 6
    for r in records:
        frames_2, _ = read_video(out / r["video"])
        frames_1, _ = read_video(single.out_dir / r["video"])
        assert np.array_equal(frames_1, frames_2), r["video"]


def test_two_process_resume_regenerates_only_the_missing_video(
    two_process_run, tmp_path, tiny_pipeline_dir
):
    result, prompts, first_out = two_process_run
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    shutil.copytree(first_out, out)  # copy2 keeps the mtimes
    (out / "two-1.mp4").unlink()
    write_lines(out / "manifest.jsonl", [r for r in manifest(out) if r["video"] != "two-1.mp4"])
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix in (".mp4", ".json")}

    again = torchrun_batch(prompts, out, tiny_pipeline_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 videos written, 5 already done, 0 failed" in again.stdout
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix in (".mp4", ".json")}
    changed = sorted(name for name in after if after[name] != before.get(name))
    assert changed == ["two-1.json", "two-1.mp4"]
    records = manifest(out)
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    assert records[3]["video"] == "two-1.mp4"  # back in its place in the order
    assert not list(out.glob("manifest.rank*"))


def test_compiled_pipeline_generates_what_the_eager_one_does(tiny_pipeline_dir, options):
    """``--compile`` (torch.compile of the transformer): same latents as eager, and the
    batch runs through it."""
    import torch

    from studio.generate import load_pipeline

    eager = load_pipeline(tiny_pipeline_dir)
    compiled = load_pipeline(tiny_pipeline_dir, compile=True)
    assert compiled is not eager and compiled.transformer._compiled_call_impl is not None
    kw = dict(num_frames=2, num_inference_steps=2, output_type="latent")
    a = eager("a red square", generator=torch.Generator().manual_seed(0), **kw).frames
    b = compiled("a red square", generator=torch.Generator().manual_seed(0), **kw).frames
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    counts = run_batch(options("a red square\n", compile=True), progress=False)
    assert counts["done"] == 1
