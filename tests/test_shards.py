"""train.shards: deterministic Shapes World shards and a loader that survives bad data."""

from __future__ import annotations

import io
import json
import logging
import tarfile

import numpy as np
import pytest
import torch

from pipelines.video_io import encode_video_bytes
from train.shards import ShardDataset, collate_videos, write_shapes_shards, write_shards
from world.shapes_world import ShapesWorld


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """12 clips + 6 images at seed 7, 8 samples per shard -> 3 shards."""
    out = tmp_path_factory.mktemp("shards")
    summary = write_shapes_shards(out, clips=12, images=6, seed=7, shard_size=8, progress=False)
    return out, summary


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_summary_and_layout(shards):
    out, summary = shards
    assert [p.rsplit("/", 1)[-1] for p in summary["shards"]] == [
        "shapes-000000.tar",
        "shapes-000001.tar",
        "shapes-000002.tar",
    ]
    assert summary["clips"] == 12 and summary["images"] == 6 and summary["samples"] == 18
    assert summary["counts"]["image"] == 6
    assert sum(summary["counts"].values()) == 18
    names = [n for p in summary["shards"] for n in _members(p)]
    keys = {n.split(".", 1)[0] for n in names}
    assert len(keys) == 18
    assert sum(n.endswith(".mp4") for n in names) == 12
    assert sum(n.endswith(".png") and ".ref" not in n for n in names) == 6
    assert sum(n.endswith(".json") for n in names) == 18
    refs = [n for n in names if ".ref" in n]
    assert all(n.split(".", 1)[1] in ("ref1.png", "ref2.png") for n in refs)
    metas = [
        json.loads(v)
        for p in summary["shards"]
        for n, v in _members(p).items()
        if n.endswith(".json")
    ]
    for meta in metas:
        assert {"caption", "fps", "frames", "source"} <= set(meta) and meta[
            "source"
        ] == "shapes_world"
        assert meta["frames"] == (1 if meta["kind"] == "image" else 16)


def test_shards_are_byte_identical_for_a_seed(shards, tmp_path):
    _, summary = shards
    again = write_shapes_shards(
        tmp_path / "a", clips=12, images=6, seed=7, shard_size=8, progress=False
    )
    for first, second in zip(summary["shards"], again["shards"], strict=True):
        assert open(first, "rb").read() == open(second, "rb").read()
    other = write_shapes_shards(
        tmp_path / "b", clips=12, images=6, seed=8, shard_size=8, progress=False
    )
    assert open(summary["shards"][0], "rb").read() != open(other["shards"][0], "rb").read()


@pytest.mark.parametrize("clips, images", [(-1, 5), (5, -1), (0, 0)])
def test_bad_counts_are_rejected(tmp_path, clips, images):
    with pytest.raises(ValueError, match="clips and images"):
        write_shapes_shards(tmp_path, clips=clips, images=images, progress=False)


def test_loader_shapes_and_exact_pixels(shards):
    out, _ = shards
    dataset = ShardDataset(str(out / "shapes-{000000..000002}.tar"), frames=16, size=64)
    items = list(dataset)
    assert len(items) == 18 and dataset.stats["ok"] == 18
    world = ShapesWorld(seed=7)
    for item in items:
        meta, video = item["meta"], item["video"]
        assert item["caption"] == meta["caption"] and isinstance(item["key"], str)
        assert video.dtype == torch.float32 and video.min() >= -1 and video.max() <= 1
        expected_f = 1 if meta["kind"] == "image" else 16
        assert video.shape == (expected_f, 3, 64, 64)
        # lossless shards: the decoded clip is the rendered clip, bit for bit
        frames = world.sample(meta["index"], meta["kind"]).frames
        pixels = ((video + 1) * 127.5).round().permute(0, 2, 3, 1).to(torch.uint8).numpy()
        np.testing.assert_array_equal(pixels, frames)
        n_refs = len(meta.get("references", []))
        assert item["references"].shape == (n_refs, 3, 64, 64)


def test_loader_windows_resizes_and_filters(shards):
    out, _ = shards
    dataset = ShardDataset(
        str(out / "*.tar"), frames=8, size=32, frame_sampling="first", images=False
    )
    items = list(dataset)
    assert len(items) == 12 and dataset.stats["skipped_filtered"] == 6
    for item in items:
        assert item["video"].shape == (8, 3, 32, 32)
        assert item["meta"]["frame_indices"] == list(range(8))
        k = item["meta"].get("condition_frames")
        assert k is None or 2 <= k <= 8
    images = list(ShardDataset([out], frames=8, size=32, videos=False))  # a directory works too
    assert len(images) == 6 and all(i["video"].shape == (1, 3, 32, 32) for i in images)


def test_frame_sampling(shards):
    out, _ = shards
    url = str(out / "shapes-000000.tar")

    def indices(**kw):
        dataset = ShardDataset(url, frames=6, images=False, **kw)
        return {i["key"]: i["meta"]["frame_indices"] for i in dataset}

    random_a, random_b = indices(seed=1), indices(seed=1)
    assert random_a == random_b  # seeded
    assert all(len(v) == 6 and v == list(range(v[0], v[0] + 6)) for v in random_a.values())
    assert len({v[0] for v in random_a.values()}) > 1  # different windows for different clips
    assert indices(seed=2) != random_a
    uniform = indices(frame_sampling="uniform")
    assert all(v == [0, 3, 6, 9, 12, 15] for v in uniform.values())


def test_short_clips_are_skipped(shards):
    out, _ = shards
    dataset = ShardDataset(str(out / "*.tar"), frames=20)
    items = list(dataset)
    assert len(items) == 6  # only the images
    assert dataset.stats["skipped_short"] == 12
    assert all(i["video"].shape[0] == 1 for i in items)


def _bad_shard(path, good_video: np.ndarray) -> None:
    """A shard with two good samples around four broken ones."""
    meta = json.dumps(
        {"caption": "a red square moving left on a black background", "fps": 8, "frames": 4}
    )
    good = encode_video_bytes(good_video, 8, lossless=True)
    entries = [
        ("good1.mp4", good),
        ("good1.json", meta.encode()),
        ("badvideo.mp4", b"\x00garbage bytes, not an mp4" * 4),
        ("badvideo.json", meta.encode()),
        ("badjson.mp4", good),
        ("badjson.json", b"{not json"),
        ("nojson.mp4", good),
        ("nomedia.json", meta.encode()),
        ("good2.png", _png(good_video[0])),
        ("good2.json", meta.encode()),
    ]
    with tarfile.open(path, "w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_corrupt_samples_are_skipped_and_counted(tmp_path, caplog):
    video = ShapesWorld(seed=0).sample(0, "video1", frames=4).frames
    _bad_shard(tmp_path / "bad.tar", video)
    dataset = ShardDataset(str(tmp_path / "bad.tar"), frames=4, size=64)
    with caplog.at_level(logging.WARNING):
        items = list(dataset)
    assert [i["key"] for i in items] == ["good1", "good2"]
    assert items[0]["video"].shape == (4, 3, 64, 64) and items[1]["video"].shape == (1, 3, 64, 64)
    assert dataset.stats["ok"] == 2 and dataset.stats["skipped_corrupt"] == 4
    for key in ("badvideo", "badjson", "nojson", "nomedia"):
        assert key in caplog.text


def test_truncated_shard_does_not_raise(shards, tmp_path):
    out, summary = shards
    data = open(summary["shards"][0], "rb").read()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    dataset = ShardDataset(str(tmp_path / "cut.tar"))
    items = list(dataset)  # must not raise
    assert 0 < len(items) < 8
    assert dataset.stats["shard_errors"] + dataset.stats["skipped_corrupt"] >= 1


def test_missing_shards_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="no shards"):
        ShardDataset(str(tmp_path / "*.tar"))
    with pytest.raises(FileNotFoundError):
        ShardDataset(str(tmp_path / "absent.tar"))
    with pytest.raises(ValueError, match="frame_sampling"):
        ShardDataset(str(tmp_path), frame_sampling="middle")


def test_collate_and_dataloader_workers(shards):
    out, _ = shards
    dataset = ShardDataset(str(out / "*.tar"), frames=16, images=False, shuffle=4, seed=3)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=4, num_workers=2, collate_fn=collate_videos
    )
    batches = list(loader)
    keys = [k for b in batches for k in b["key"]]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 12  # each clip exactly once
    assert batches[0]["video"].shape == (4, 16, 3, 64, 64)
    assert len(batches[0]["caption"]) == 4 and isinstance(batches[0]["caption"][0], str)
    mixed = [next(iter(ShardDataset(str(out / "shapes-000002.tar"), videos=False)))]
    mixed.append(next(iter(ShardDataset(str(out / "shapes-000000.tar"), images=False))))
    with pytest.raises(ValueError, match="one shape"):
        collate_videos(mixed)


def test_write_shards_from_any_samples(tmp_path):
    world = ShapesWorld(seed=1, frames=4)
    samples = [world.sample(i, "reference") for i in range(3)]
    paths = write_shards(samples, tmp_path, shard_size=2, prefix="refs", progress=False)
    assert [p.name for p in paths] == ["refs-000000.tar", "refs-000001.tar"]
    items = list(ShardDataset([str(p) for p in paths], frames=4))
    for item, sample in zip(items, samples, strict=True):
        refs = (
            ((item["references"] + 1) * 127.5).round().permute(0, 2, 3, 1).to(torch.uint8).numpy()
        )
        np.testing.assert_array_equal(refs, np.stack(sample.references))


def test_window_reindexes_continuation_meta():
    meta = {"caption": "c", "fps": 8, "frames": 16, "condition_frames": 5, "switch_frame": 5}
    window = ShardDataset._reindex_meta(meta, np.arange(4, 12), 8.0)
    assert (window["condition_frames"], window["switch_frame"], window["fps"]) == (1, 1, 8)
    assert window["frame_indices"] == list(range(4, 12)) and window["frames"] == 8
    before = ShardDataset._reindex_meta(meta, np.arange(0, 5), 8.0)  # all before the switch
    assert "condition_frames" not in before and "switch_frame" not in before
    strided = ShardDataset._reindex_meta(meta, np.array([0, 3, 6, 9, 12, 15]), 8.0)
    assert strided["condition_frames"] == 2 and strided["fps"] == pytest.approx(8 / 3)
    assert meta["condition_frames"] == 5  # the input is not modified
