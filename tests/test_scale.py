"""Scale: buckets, training from shards, 2-process DDP (torchrun, gloo) and fault tests.

The multi-process and kill -9 tests run ``studio.cli`` in subprocesses on a width-32 DiT and
16-px clips; each takes a few seconds of MiniLM loading per process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import webdataset as wds
from accelerate.state import AcceleratorState, GradientState, PartialState

import train.train_dit as train_dit
from pipelines.components import vae_tiny
from train.buckets import Bucket, BucketBatches, assign_bucket, resize_crop
from train.checkpoint import checkpoint_step, latest_checkpoint
from train.config import DiTTrainConfig, load_config
from train.shards import ShardDataset, write_shapes_shards

ROOT = Path(__file__).resolve().parents[1]
TOTAL_STEPS = 8
N_CLIPS, N_CORRUPT = 18, 2  # 10 % of the video samples are corrupt

SHARD_RUN = """\
model: {size: dit_tiny, patch_size: 2}
data: {source: shards, shards: [SHARDS], size: 16, shuffle: 8}
stages:
  - {name: images, steps: 2, frames: 1, image_batch_size: 2}
  - {name: clips, steps: 6, frames: 4, batch_size: 2, image_every: 3, image_batch_size: 2}
warmup: 2
log_every: 1
save_every: 3
sample_every: 0
mixed_precision: "no"
"""


def reset_accelerate() -> None:
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    reset_accelerate()
    yield
    reset_accelerate()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Shapes World shards (8-frame 16-px mp4 clips and png images) plus one shard of
    corrupt clips: N_CORRUPT of N_CLIPS + N_CORRUPT video samples cannot be decoded."""
    out = tmp_path_factory.mktemp("shards")
    write_shapes_shards(
        out, clips=N_CLIPS, images=8, size=16, frames=8, shard_size=7, progress=False
    )
    with wds.TarWriter(str(out / "corrupt-000000.tar")) as sink:
        for i in range(N_CORRUPT):
            meta = {"caption": "a red square moving left", "fps": 8, "frames": 8}
            sink.write(
                {"__key__": f"bad{i}", "mp4": b"\x00not a video" * 50, "json": json.dumps(meta)}
            )
    return out


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    vae_tiny(sample_size=16).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def run_yaml(tmp_path_factory, shards, vae_dir) -> Path:
    yaml = tmp_path_factory.mktemp("configs") / "shards.yaml"
    yaml.write_text(SHARD_RUN.replace("SHARDS", str(shards)) + f"vae: {vae_dir}\n")
    return yaml


def losses(output_dir: Path) -> dict[int, float]:
    entries = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in entries]
    assert steps == list(range(1, len(steps) + 1)), steps  # each step logged once, in order
    return {e["step"]: e["loss"] for e in entries}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def studio_cmd(*args, procs: int = 1) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", "studio.cli", *map(str, args)]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "-m", "studio.cli", *map(str, args),
    ]  # fmt: skip


def run_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        "TQDM_DISABLE": "1",
    }


def train(yaml: Path, out: Path, *overrides: str, procs: int = 1) -> subprocess.CompletedProcess:
    cmd = studio_cmd("train", "dit", "--config", yaml, f"output_dir={out}", *overrides, procs=procs)
    done = subprocess.run(cmd, env=run_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# ------------------------------------------------------------------------------ buckets
def test_assign_bucket_prefers_most_frames_then_aspect():
    buckets = [
        Bucket(1, 16, 16, 8),
        Bucket(4, 16, 16, 4),
        Bucket(8, 16, 16, 2),
        Bucket(8, 16, 32, 2),
    ]
    assert assign_bucket(1, 20, 20, buckets) == 0  # images only to 1-frame buckets
    assert assign_bucket(5, 16, 16, buckets) == 1  # 8 frames cannot be filled
    assert assign_bucket(12, 90, 160, buckets) == 3  # wide clip → the wide 8-frame bucket
    assert assign_bucket(12, 64, 64, buckets) == 2
    assert assign_bucket(12, 64, 64, buckets, max_frames=4) == 1  # the stage's limit
    assert assign_bucket(3, 16, 16, buckets) is None  # too short for any clip bucket


def test_resize_crop_covers_and_centres():
    video = torch.zeros(2, 3, 10, 40)
    video[:, :, :, 18:22] = 1.0  # a bright band in the middle
    out = resize_crop(video, 20, 20)  # scale ×2 → 20×80 (band 36:44), crop columns 30:50
    assert out.shape == (2, 3, 20, 20)
    assert out[:, :, :, 7:13].mean() > 0.9 and out[:, :, :, :4].mean() < 0.1


def test_bucket_batches_are_uniform_and_deterministic(shards):
    buckets = [Bucket(4, 16, 16, 3), Bucket(6, 16, 16, 2)]

    def keys(seed: int, epoch: int) -> list[list[str]]:
        dataset = ShardDataset(shards, frames=None, size=None, shuffle=5, seed=seed, images=False)
        batches = BucketBatches(dataset, buckets)
        batches.set_epoch(epoch)
        out = []
        for batch in batches:
            f = batch["video"].shape[1]
            assert batch["video"].shape == (len(batch["key"]), f, 3, 16, 16)
            assert (f, len(batch["key"])) == (6, 2)  # 8-frame clips all fill the 6-frame bucket
            out.append(batch["key"])
        assert batches.stats()["skipped_corrupt"] == N_CORRUPT
        return out

    first = keys(0, 0)
    assert len(first) == N_CLIPS // 2 and first == keys(0, 0)  # same seed and epoch, same order
    assert first != keys(0, 1)  # a new epoch, a new order


# ------------------------------------------------------------------- training from shards
def test_shard_training_resumes_exactly_and_reports_corrupt_samples(
    run_yaml, tmp_path, text_encoder, monkeypatch
):
    """In one process: a straight run, and a run stopped at step 4 (checkpoint at 3) then
    resumed — the shard streams are replayed to their position, so the losses agree."""
    monkeypatch.setattr(train_dit, "load_text_encoder", lambda spec, dtype=None: text_encoder)

    def cfg(name, *overrides) -> DiTTrainConfig:
        return load_config(DiTTrainConfig, run_yaml, [f"output_dir={tmp_path / name}", *overrides])

    train_dit.main(cfg("A"))
    a = losses(tmp_path / "A")
    assert sorted(a) == list(range(1, TOTAL_STEPS + 1))
    assert len({round(v, 6) for v in a.values()}) == TOTAL_STEPS  # the losses move
    stats = json.loads((tmp_path / "A" / "data_stats.json").read_text())
    assert stats["skipped_corrupt"] >= N_CORRUPT and stats["ok"] > 0  # reported, run completed

    reset_accelerate()
    train_dit.main(cfg("B", "max_steps=4"))
    assert checkpoint_step(latest_checkpoint(tmp_path / "B")) == 4
    reset_accelerate()
    train_dit.main(cfg("B"))
    b = losses(tmp_path / "B")
    assert sorted(b) == list(range(1, TOTAL_STEPS + 1))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-6), step


def test_shards_source_needs_shards(tmp_path):
    cfg = load_config(
        DiTTrainConfig, None, ["data.source=shards", f"output_dir={tmp_path}", "mixed_precision=no"]
    )
    with pytest.raises(ValueError, match="data.shards is empty"):
        train_dit.main(cfg)


# -------------------------------------------------------------- processes and faults
def test_kill_9_mid_training_then_resume_continues_the_loss_sequence(run_yaml, tmp_path):
    """A straight run vs one killed with SIGKILL after step 5 (last checkpoint at 3) and
    resumed: every logged loss agrees to 1e-4 (relative) — the same numbers up to float
    reduction order."""
    train(run_yaml, tmp_path / "straight")
    straight = losses(tmp_path / "straight")

    out = tmp_path / "killed"
    cmd = studio_cmd("train", "dit", "--config", run_yaml, f"output_dir={out}", "save_every=3")
    proc = subprocess.Popen(
        cmd, env=run_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    log = out / "log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    logged = len(log.read_text().splitlines())
    assert 5 <= logged < TOTAL_STEPS
    assert checkpoint_step(latest_checkpoint(out)) in (3, 6)

    train(run_yaml, out)
    resumed = losses(out)
    assert sorted(resumed) == list(range(1, TOTAL_STEPS + 1))
    for step in straight:
        assert resumed[step] == pytest.approx(straight[step], rel=1e-4, abs=1e-6), step


def test_two_process_ddp_run_then_resume_with_one_process(run_yaml, tmp_path):
    """torchrun with 2 processes (gloo, CPU) trains from the shards; the same run then resumes
    in one process from the 2-process checkpoint and finishes."""
    out = tmp_path / "ddp"
    # the images sit in the last shards: with 2 readers each reads all and keeps every 2nd
    split = "data.split_by=samples"
    train(run_yaml, out, "max_steps=6", "save_every=3", split, procs=2)
    entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {e["processes"] for e in entries} == {2}
    two = losses(out)
    assert sorted(two) == list(range(1, 7))
    assert checkpoint_step(latest_checkpoint(out)) == 6
    # both ranks' samples are counted (the report gathers every rank)
    stats = json.loads((out / "data_stats.json").read_text())
    assert stats["ok"] > 0

    train(run_yaml, out, split, procs=1)  # a different number of processes
    entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["processes"] for e in entries] == [2] * 6 + [1] * (TOTAL_STEPS - 6)
    one = losses(out)
    assert sorted(one) == list(range(1, TOTAL_STEPS + 1))
    assert all(0 < v < 10 for v in one.values())
    assert (out / "pipeline" / "model_index.json").is_file()
