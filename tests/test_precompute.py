"""train.precompute: shard latents and caption states encoded once, read by training.

On test_scale.py's tiny packed shards (8-frame 16-px MP4 clips, PNG images, one shard of
corrupt clips), its vae_tiny and MiniLM.
"""
# ruff: noqa: F811  (test_scale's fixtures are imported, then named as test arguments)

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train.train_dit as train_dit
from pipelines.components import encode_text, load_vae, vae_tiny
from tests.conftest import losses, reset_accelerate, subprocess_env
from tests.test_scale import N_CORRUPT, ROOT, run_yaml, shards, vae_dir  # noqa: F401
from train.config import ConfigError, DiTTrainConfig, load_config
from train.latent_cache import encode_videos
from train.precompute import (
    CachedShardDataset,
    ShardLatents,
    cache_spec,
    encode_shards,
)
from train.shards import ShardDataset

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def build(cfg: DiTTrainConfig, text_encoder, vae=None) -> ShardLatents:
    """The cache of ``cfg`` with every shard encoded (in this process)."""
    vae = vae if vae is not None else load_vae(cfg.vae).eval()
    encoder, tokenizer = text_encoder
    cache = ShardLatents.create(cfg.data.latents, cache_spec(cfg, vae, encoder), encoder, tokenizer)
    urls = ShardDataset(cfg.data.shards).urls
    encode_shards(cache, cache.missing(urls), vae, encoder, tokenizer, progress=False)
    return cache


def test_cached_batches_are_the_pixel_batches(run_yaml, tmp_path, text_encoder):
    """Image and clip streams, over more than an epoch: the same samples, windows, meta and
    counts; latents and caption states equal to encoding the pixel batch, up to float16."""
    cfg = load_config(DiTTrainConfig, run_yaml, [f"data.latents={tmp_path / 'latents'}"])
    vae = load_vae(cfg.vae).eval()
    cache = build(cfg, text_encoder, vae)
    encoder, tokenizer = text_encoder
    for images in (False, True):
        plain = train_dit.ShardBatchStream(cfg, 1, images)
        cached = train_dit.ShardBatchStream(cfg, 1, images, latents=cache)
        for _ in range(12):
            pixels, read = next(plain), next(cached)
            assert read["key"] == pixels["key"]
            metas = [{k: v for k, v in m.items() if k != "frame_indices"} for m in pixels["meta"]]
            assert read["meta"] == metas
            z = encode_videos(vae, pixels["video"])  # (B, C, F, h, w): windows cut alike
            assert read["latents"].dtype == torch.float16 and read["latents"].shape == z.shape
            torch.testing.assert_close(read["latents"].float(), z, atol=2e-3, rtol=2e-3)
            states, mask = encode_text(encoder, tokenizer, pixels["caption"], 64, "cpu")
            kept = np.zeros(len(read["text"]), dtype=bool)
            cached_states, cached_mask = cache.text_batch(read["text"], kept, "cpu")
            assert torch.equal(cached_mask, mask)
            torch.testing.assert_close(
                cached_states * mask[..., None], states * mask[..., None], atol=1e-2, rtol=1e-2
            )
        assert cached.epoch >= 1  # went round
        assert cached.stats() == plain.stats()
    assert plain.stats()["ok"] > 0 and cached.stats()["skipped_filtered"] > 0


def test_training_from_the_cache_matches_training_without_it_and_resumes_exactly(
    run_yaml, tmp_path, text_encoder, monkeypatch
):
    """Same losses as the pixel run up to float16 rounding of the cached tensors; a run
    stopped at step 4 and resumed reproduces the straight cached run; the cache the first
    run built (at start-up) is reused, not rebuilt."""
    monkeypatch.setattr(train_dit, "load_text_encoder", lambda spec, dtype=None: text_encoder)
    latents = tmp_path / "latents"

    def run(name, *overrides) -> dict[int, float]:
        reset_accelerate()
        out = tmp_path / name
        train_dit.main(load_config(DiTTrainConfig, run_yaml, [f"output_dir={out}", *overrides]))
        return losses(out)

    plain = run("plain")
    cached = run("cached", f"data.latents={latents}")
    assert sorted(cached) == sorted(plain) == list(range(1, 9))
    for step in plain:  # measured ~1e-6 apart; cutting other windows moves them ~1e-3
        assert cached[step] == pytest.approx(plain[step], rel=1e-4), step
    assert len({round(v, 6) for v in cached.values()}) == 8  # the losses move

    files = {p: p.stat().st_mtime_ns for p in latents.rglob("*.safetensors")}
    assert len(files) == 1 + 5  # the empty caption, four packed shards and the corrupt one
    run("resumed", f"data.latents={latents}", "max_steps=4")
    resumed = run("resumed", f"data.latents={latents}")
    assert {p: p.stat().st_mtime_ns for p in latents.rglob("*.safetensors")} == files
    for step in cached:
        assert resumed[step] == pytest.approx(cached[step], rel=1e-4, abs=1e-6), step


def test_another_vae_or_a_changed_shard_is_never_read_from_the_cache(
    run_yaml, shards, tmp_path, text_encoder
):
    root = tmp_path / "latents"
    cfg = load_config(DiTTrainConfig, run_yaml, [f"data.latents={root}"])
    cache = build(cfg, text_encoder)
    encoder, tokenizer = text_encoder
    urls = ShardDataset(cfg.data.shards).urls
    assert cache.missing(urls) == []

    # another VAE (same config, other weights) is another key: nothing of the first is read
    torch.manual_seed(1)
    other_spec = cache_spec(cfg, vae_tiny(sample_size=16).eval(), encoder)
    assert other_spec["vae"] != cache.spec["vae"]
    with pytest.raises(ValueError, match=rf"no shard latent cache.*found \['{cache.key}'\]"):
        ShardLatents.open(root, other_spec)
    other = ShardLatents.create(root, other_spec, encoder, tokenizer)
    assert other.folder != cache.folder and other.missing(urls) == urls
    with pytest.raises(ValueError, match="not in the latent cache.*studio data encode"):
        CachedShardDataset(other, cfg.data.shards)

    # a cache.json that does not match its folder's key is refused
    index = cache.folder / "cache.json"
    stored = json.loads(index.read_text())
    index.write_text(json.dumps({**stored, "spec": {**stored["spec"], "vae": "0" * 64}}))
    with pytest.raises(ValueError, match="made with another vae"):
        ShardLatents.open(root, cache.spec)
    index.write_text(json.dumps(stored))

    # a shard rewritten (new mtime) is not in the cache any more; encoding adds it anew
    copy = tmp_path / "copy" / "real-000000.tar"
    copy.parent.mkdir()
    copy.write_bytes(Path(urls[0]).read_bytes())
    encode_shards(cache, [str(copy)], load_vae(cfg.vae).eval(), encoder, tokenizer, progress=False)
    assert cache.missing([str(copy)]) == []
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))
    assert cache.missing([str(copy)]) == [str(copy)]
    with pytest.raises(ValueError, match="local shard files"):
        cache.missing(["https://example.com/shard.tar"])


KILLED_ENCODE = """
import os, signal, sys
import train.precompute as precompute
from studio.cli import main

real_save, saved = precompute.save_file, []

def save_then_die(tensors, path, metadata=None):  # SIGKILL halfway through the 2nd shard
    if len(saved) == 2:  # the empty caption's file, then the first shard's
        real_save(tensors, path + ".whole", metadata=metadata)
        data = open(path + ".whole", "rb").read()
        os.remove(path + ".whole")
        open(path, "wb").write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(tensors, path, metadata=metadata)
    saved.append(path)

precompute.save_file = save_then_die
sys.exit(main(["data", "encode", *sys.argv[1:]]))
"""


def test_a_killed_encoder_leaves_no_cache_that_reads_as_whole(run_yaml, tmp_path, cli):
    """``studio data encode`` killed with SIGKILL while writing its second shard file: the
    half-written file stays under a temporary name, so that shard counts as missing and
    training refuses it; the next encode removes the leftover and finishes the rest."""
    root = tmp_path / "latents"
    args = [str(run_yaml), f"data.latents={root}", "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_ENCODE, *args],
        env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    whole = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(whole) == 2  # the empty caption's and the first shard's
    (half,) = [p for p in folder.iterdir() if p.name.startswith(".")]
    assert half.name.endswith(".tmp")

    cfg = load_config(DiTTrainConfig, run_yaml, [f"data.latents={root}"])
    spec = json.loads((folder / "cache.json").read_text())["spec"]
    cache = ShardLatents.open(root, spec)
    assert len(cache.missing(ShardDataset(cfg.data.shards).urls)) == 4
    with pytest.raises(ValueError, match="4 shard.* not in the latent cache"):
        CachedShardDataset(cache, cfg.data.shards)

    code, out, err = cli("data", "encode", *args)
    assert code == 0, err
    assert "encoded 4 of 5 shards (1 already encoded)" in out
    assert not half.exists() and cache.missing(ShardDataset(cfg.data.shards).urls) == []
    dataset = CachedShardDataset(cache, cfg.data.shards)
    assert sum(1 for _ in dataset) == 26 and dataset.stats["skipped_corrupt"] == N_CORRUPT

    code, out, _ = cli("data", "encode", *args)  # everything there already
    assert code == 0 and "encoded 0 of 5 shards (5 already encoded)" in out
    # --config, as `studio train dit` takes it: every positional is then an override
    code, out, err = cli("data", "encode", "--config", *args)
    assert code == 0 and "encoded 0 of 5 shards (5 already encoded)" in out, err
    # overrides after an option too, as `studio train` takes them
    code, out, err = cli(
        "data", "encode", "--config", args[0], args[1], "--batch-frames", "8", "--quiet",
        "data.num_workers=0",
    )  # fmt: skip
    assert code == 0 and "encoded 0 of 5 shards (5 already encoded)" in out, err


def test_data_latents_needs_shards_and_a_folder(run_yaml, cli):
    with pytest.raises(ConfigError, match="data.latents caches shard data.*shapes"):
        load_config(DiTTrainConfig, None, ["data.latents=runs/latents"])
    with pytest.raises(ConfigError, match="data.latents must name a folder"):
        load_config(DiTTrainConfig, run_yaml, ["data.latents=' '"])
    code, _, err = cli("data", "encode", run_yaml)
    assert code == 2 and "data.latents is not set" in err
    code, _, err = cli("data", "encode")
    assert code == 2 and "give CONFIG (or --config CONFIG)" in err
    code, _, err = cli("data", "encode", run_yaml, "--config", "other.yaml")
    assert code == 2 and f"CONFIG given twice: {run_yaml} and --config other.yaml" in err
