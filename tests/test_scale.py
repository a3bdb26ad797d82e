"""Scale: buckets, training from shards, 2-process DDP (torchrun, gloo) and fault tests.

The multi-process and kill -9 tests run ``studio.cli`` in subprocesses on a width-32 DiT and
16-px clips; each takes a few seconds of MiniLM loading per process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image

import train.train_dit as train_dit
from pipelines.components import load_vae, vae_tiny
from pipelines.video_io import encode_video_bytes, write_video
from tests.conftest import free_port, losses, reset_accelerate, subprocess_env
from train.buckets import Bucket, BucketBatches, assign_bucket, resize_crop
from train.checkpoint import checkpoint_step, latest_checkpoint
from train.config import DiTTrainConfig, load_config
from train.pack import pack_manifest
from train.shards import ShardDataset
from world.shapes_world import ShapesWorld

ROOT = Path(__file__).resolve().parents[1]
TOTAL_STEPS = 8
N_CLIPS, N_CORRUPT, N_IMAGES = 18, 2, 8  # 10 % of the video samples are corrupt

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


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Real MP4 files (8-frame 16-px Shapes World clips) and PNG images packed by
    ``studio data pack`` (two images in every shard of 7), plus one shard of corrupt clips:
    N_CORRUPT of N_CLIPS + N_CORRUPT video samples cannot be decoded."""
    root = tmp_path_factory.mktemp("data")
    world = ShapesWorld(size=16, frames=8, seed=0)
    clips, images = [], []
    for i in range(N_CLIPS):
        sample = world.sample(i, kind="video1")
        write_video(root / f"clip{i}.mp4", sample.frames, fps=8)
        clips.append((f"clip{i}.mp4", sample.meta["caption"]))
    for i in range(N_IMAGES):
        sample = world.sample(1000 + i, kind="image")
        Image.fromarray(sample.frames[0]).save(root / f"image{i}.png")
        images.append((f"image{i}.png", sample.meta["caption"]))
    rows = []
    while clips or images:  # blocks of 5 clips and 2 images
        rows += [clips.pop(0) for _ in range(min(5, len(clips)))]
        rows += [images.pop(0) for _ in range(min(2, len(images)))]
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        csv.writer(fh).writerows([("path", "caption"), *rows])

    out = root / "shards"
    report = pack_manifest(manifest, out, shard_size=7, prefix="real", progress=False)
    assert (report.written, report.failed) == (N_CLIPS + N_IMAGES, 0)
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


def studio_cmd(*args, procs: int = 1) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", "studio.cli", *map(str, args)]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "-m", "studio.cli", *map(str, args),
    ]  # fmt: skip


def train(yaml: Path, out: Path, *overrides: str, procs: int = 1) -> subprocess.CompletedProcess:
    cmd = studio_cmd("train", "dit", "--config", yaml, f"output_dir={out}", *overrides, procs=procs)
    done = subprocess.run(
        cmd, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
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


def test_shards_stream_from_http_and_fsspec_urls(shards):
    """The same shards over HTTP (webdataset's curl) and from an fsspec filesystem (memory://)
    read back the same samples as from disk."""
    import functools
    import http.server
    import shutil
    import threading

    import fsspec

    names = sorted(p.name for p in shards.glob("real-*.tar"))
    local = sorted(s["key"] for s in ShardDataset(shards / "real-*.tar", frames=None, size=None))
    assert len(local) == N_CLIPS + N_IMAGES

    memory = fsspec.filesystem("memory")
    for name in names:
        memory.pipe(f"/scale-test/{name}", (shards / name).read_bytes())
    urls = [f"memory://scale-test/{name}" for name in names]
    assert sorted(s["key"] for s in ShardDataset(urls, frames=None, size=None)) == local

    if shutil.which("curl") is None:
        pytest.skip("webdataset reads http:// shards with curl, which this machine lacks")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shards))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        urls = [f"http://127.0.0.1:{port}/{name}" for name in names]
        dataset = ShardDataset(urls, frames=None, size=None)
        assert sorted(s["key"] for s in dataset) == local
        missing = ShardDataset(f"http://127.0.0.1:{port}/nope.tar", frames=None, size=None)
        assert list(missing) == [] and missing.stats["shard_errors"] == 1
    finally:
        server.shutdown()


def test_split_by_samples_gives_each_reader_every_nth_sample(shards, monkeypatch):
    everything = sorted(s["key"] for s in ShardDataset(shards, frames=None, size=None))
    parts = []
    for slot in (0, 1):
        dataset = ShardDataset(shards, frames=None, size=None, split_by="samples")
        monkeypatch.setattr(dataset, "_reader_slot", lambda slot=slot: (slot, 2))
        parts.append([s["key"] for s in dataset])
    assert abs(len(parts[0]) - len(parts[1])) <= 1 and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == everything


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


def test_shard_stream_with_workers_runs_epochs_and_counts_corrupt_samples(run_yaml):
    """Two DataLoader workers decoding mixed shards (images, clips, corrupt clips): the video
    stream runs past an epoch, no worker dies, every worker's counts are summed."""
    cfg = load_config(DiTTrainConfig, run_yaml, ["data.num_workers=2"])
    stream = train_dit.ShardBatchStream(cfg, stage_idx=1, images=False)
    per_epoch = N_CLIPS // cfg.stages[1].batch_size  # at most; partial buckets are dropped
    batches = [next(stream) for _ in range(per_epoch + 2)]
    assert stream.epoch >= 1  # it went round
    assert {tuple(b["video"].shape[1:]) for b in batches} == {(4, 3, 16, 16)}
    assert {b["reader"][1] for b in batches} == {0, 1}  # both workers gave batches
    stats = stream.stats()
    assert stats["skipped_corrupt"] >= N_CORRUPT and stats["ok"] >= len(batches) * 2


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
        cmd, env=subprocess_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
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


def test_two_process_ddp_run_resumes_with_one_process_and_back(run_yaml, tmp_path):
    """torchrun with 2 processes (gloo, CPU) trains from packed shards of real MP4 files, each
    process reading its own shards; the run resumes in one process from the 2-process
    checkpoint, then in two processes again from the 1-process one, and finishes."""
    out = tmp_path / "ddp"
    train(run_yaml, out, "max_steps=3", procs=2)
    assert checkpoint_step(latest_checkpoint(out)) == 3
    # every rank's samples are counted (the report gathers them)
    assert json.loads((out / "data_stats.json").read_text())["ok"] > 0

    train(run_yaml, out, "max_steps=6", procs=1)  # a different number of processes
    train(run_yaml, out, procs=2)  # and back
    entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["processes"] for e in entries] == [2, 2, 2, 1, 1, 1, 2, 2]
    # the schedule is a function of the optimizer step, whatever the number of processes
    # (accelerate's default stepped it once per process: 2 processes ran it twice as fast)
    cfg = load_config(DiTTrainConfig, run_yaml)
    expected = [cfg.lr * train_dit.lr_lambda(cfg)(step) for step in range(TOTAL_STEPS)]
    assert [e["lr"] for e in entries] == pytest.approx(expected, rel=1e-6)
    assert len({round(e["lr"], 12) for e in entries}) > 3  # warmup and cosine both show
    log = losses(out)
    assert sorted(log) == list(range(1, TOTAL_STEPS + 1))
    assert all(0 < v < 10 for v in log.values())
    assert (out / "pipeline" / "model_index.json").is_file()


LR_RUNS = {
    "vae": ["model=vae_tiny", "size=16", "batch_size=2", "steps=6", "warmup=3"],
    "scorer": ["model.size=scorer_tiny", "steps=6", "batch_size=4", "eval_clips=0",
               "image_every=2", "warmup=3"],
}  # fmt: skip


@pytest.mark.parametrize("trainer", sorted(LR_RUNS))
def test_vae_and_scorer_learning_rates_agree_at_one_and_two_processes(trainer, tmp_path):
    """The logged lr of a 2-process run equals the 1-process run's at every optimizer step."""
    logged = {}
    for procs in (1, 2):
        out = tmp_path / f"p{procs}"
        args = ["train", trainer, f"output_dir={out}", "log_every=1", "mixed_precision=no"]
        cmd = studio_cmd(*args, *LR_RUNS[trainer], procs=procs)
        done = subprocess.run(cmd, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        entries = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
        assert {e["processes"] for e in entries} == {procs}
        logged[procs] = [(e["step"], e["lr"]) for e in entries]
    assert [s for s, _ in logged[1]] == list(range(1, 7))
    assert logged[2] == pytest.approx(logged[1], rel=1e-9)
    assert len({lr for _, lr in logged[1]}) == 6  # warmup then cosine: every step differs


# ------------------------------------------------------- large components by config
def test_training_takes_a_t5_encoder_and_an_sd_family_vae_from_config(run_yaml, tmp_path):
    """The trainer loads whatever ``text_encoder:`` and ``vae:`` name: here a tiny random T5
    (encoder kept, MiniLM's tokenizer files beside it) and a tiny VAE shaped like Stable
    Diffusion's (4 levels: 8× down, scaling 0.18215), with gradient checkpointing on."""
    from diffusers import AutoencoderKL
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from pipelines.components import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    t5_dir, vae_dir = tmp_path / "t5", tmp_path / "sd_vae"
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(
        T5Config(vocab_size=tokenizer.vocab_size, d_model=24, d_kv=8, d_ff=32, num_layers=1,
                 num_decoder_layers=1, num_heads=3, decoder_start_token_id=0)
    )  # fmt: skip
    t5.save_pretrained(t5_dir)
    tokenizer.save_pretrained(t5_dir)
    AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=0.18215,
    ).save_pretrained(vae_dir)

    out = tmp_path / "run"
    train(
        run_yaml, out, f"text_encoder={t5_dir}", f"vae={vae_dir}", "data.size=32",
        "gradient_checkpointing=true", "max_steps=4",
    )  # fmt: skip
    model = json.loads((out / "pipeline" / "transformer" / "config.json").read_text())
    assert model["text_dim"] == 24 and model["sample_size"] == 4  # T5's width, 32 px / 8
    assert sorted(losses(out)) == [1, 2, 3, 4]


@pytest.mark.parametrize("name", ["multi_gpu", "fsdp", "multi_node"])
def test_accelerate_configs_load_and_fsdp_wraps_our_block(name):
    from accelerate.commands.config.config_args import load_config_from_file

    import models.video_dit

    config = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.num_processes >= 8 and config.mixed_precision == "bf16"
    if name == "fsdp":  # the wrap class must exist, or FSDP would shard the model as one unit
        block = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
        assert isinstance(getattr(models.video_dit, block), type)
    if name == "multi_node":
        assert config.num_machines == 2 and config.main_process_port


# ------------------------------------------------------------------ shard split across ranks
def _kind_shards(root: Path, image_shards: set[int], n: int = 4) -> list[str]:
    """``n`` shards of 3 one-frame clips each; those in ``image_shards`` hold 2 images too."""
    world = ShapesWorld(size=16, frames=2, seed=0)
    urls = []
    for i in range(n):
        url = root / f"s-{i:02d}.tar"
        with wds.TarWriter(str(url)) as sink:
            for j in range(3):
                sample = world.sample(10 * i + j, kind="video1")
                meta = {"caption": sample.meta["caption"], "fps": 8, "frames": 2}
                data = encode_video_bytes(sample.frames, 8, ".mp4")
                sink.write({"__key__": f"v{i}-{j}", "mp4": data, "json": json.dumps(meta)})
            for j in range(2 if i in image_shards else 0):
                buf = io.BytesIO()
                Image.fromarray(sample.frames[0]).save(buf, format="png")
                meta = {"caption": "a red square", "fps": 8, "frames": 1}
                sink.write(
                    {"__key__": f"i{i}-{j}", "png": buf.getvalue(), "json": json.dumps(meta)}
                )
        urls.append(str(url))
    return urls


def test_shards_are_dealt_so_every_reader_gets_images_and_videos(tmp_path):
    """Images in shards 0 and 2 of 4: dealing every other shard would give reader 1 none; the
    balanced deal gives each reader one of them, and each reader then reads images."""
    from train.shards import deal_shards

    urls = _kind_shards(tmp_path, {0, 2})
    assert not any(u in urls[1::2] for u in (urls[0], urls[2]))  # the naive deal starves
    dealt = deal_shards(urls, 2)
    assert sorted(sum(dealt, [])) == urls
    assert all(any(u in d for u in (urls[0], urls[2])) for d in dealt)
    ShardDataset(urls, images=True, videos=False).check_split(2)  # no error
    for slot in range(2):
        ds = ShardDataset(urls, frames=None, size=None, images=True, videos=False)
        ds._reader_slot = lambda slot=slot: (slot, 2)
        for epoch in range(3):
            ds.set_epoch(epoch)
            assert sum(1 for _ in ds) == 2  # its own image shard, every epoch


def test_a_split_that_would_starve_a_rank_is_refused_at_start_up(tmp_path):
    urls = _kind_shards(tmp_path, {3})
    cfg = load_config(
        DiTTrainConfig,
        None,
        [f"data.shards=[{','.join(urls)}]", "data.source=shards", "stages=[{frames: 1}]"],
    )
    train_dit.check_shard_split(cfg, 1)  # one process reads everything
    with pytest.raises(ValueError, match=r"reader\(s\) \[1\] of 2 no image.*split_by: samples"):
        train_dit.check_shard_split(cfg, 2)
    cfg.data.split_by = "samples"
    train_dit.check_shard_split(cfg, 2)


def test_validation_clips_come_from_validation_shards_when_given(
    run_yaml, vae_dir, text_encoder, tmp_path
):
    """data.validation_shards: the validation loss reads only them (clips training never
    sees); without them, the first clips of data.shards."""
    world = ShapesWorld(size=16, frames=8, seed=5)
    write_video(tmp_path / "held.mp4", world.sample(0, kind="video1").frames, fps=8)
    with (tmp_path / "held.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("path", "caption"), ("held.mp4", "a held-out clip")])
    pack_manifest(tmp_path / "held.csv", tmp_path / "val", shard_size=7, progress=False)
    vae = load_vae(str(vae_dir))
    encoder, tokenizer = text_encoder
    held = load_config(DiTTrainConfig, run_yaml, [f"data.validation_shards=[{tmp_path / 'val'}]"])
    held.validation_clips = 3
    val = train_dit.ValidationSet.build(held, vae, encoder, tokenizer, "cpu")
    assert val.x0.shape[0] == 1  # the one held-out clip, none of data.shards' 18
    plain = load_config(DiTTrainConfig, run_yaml)
    plain.validation_clips = 3
    assert train_dit.ValidationSet.build(plain, vae, encoder, tokenizer, "cpu").x0.shape[0] == 3
