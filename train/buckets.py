"""Buckets: batches of real clips and images of mixed length, size and aspect ratio.

Real shards hold clips of every length and shape. As in Open-Sora's bucket config, each
bucket is a (frames, height, width) target with its own batch size (short, small buckets
take larger batches). A sample goes to the bucket with the most frames it can fill, then the
closest aspect ratio; it is cut to the bucket's frame count (a window at a seeded random
start) and resized (short side) and centre-cropped to the bucket's size. A batch is yielded
as soon as a bucket is full, so every batch holds one shape.

:class:`BucketBatches` is an ``IterableDataset`` over a :class:`train.shards.ShardDataset`
(which splits shards across ranks and DataLoader workers and skips corrupt samples): put it
in a ``DataLoader(batch_size=None)``. The order is a function of ``seed`` and ``epoch``
alone, so a run resumes at an exact position by skipping the batches it already used.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .shards import ShardDataset

__all__ = ["Bucket", "BucketBatches", "assign_bucket", "resize_crop"]


@dataclass(frozen=True)
class Bucket:
    frames: int
    height: int
    width: int
    batch_size: int

    def __post_init__(self) -> None:
        if min(self.frames, self.height, self.width, self.batch_size) < 1:
            raise ValueError(f"bucket sizes must be >= 1, got {self}")


def assign_bucket(
    frames: int, height: int, width: int, buckets: list[Bucket], max_frames: int | None = None
) -> int | None:
    """Index of the bucket for a sample of this shape, or None when none fits.

    Images (1 frame) go only to 1-frame buckets; clips to the multi-frame bucket with the
    most frames they can fill (≤ ``max_frames`` when given), ties broken by the closest
    aspect ratio (log h/w), then by the larger area.
    """
    image = frames == 1
    fits = [
        i
        for i, b in enumerate(buckets)
        if (b.frames == 1) == image
        and b.frames <= frames
        and (max_frames is None or b.frames <= max_frames)
    ]
    if not fits:
        return None
    aspect = math.log(height / width)
    return max(
        fits,
        key=lambda i: (
            buckets[i].frames,
            -abs(math.log(buckets[i].height / buckets[i].width) - aspect),
            buckets[i].height * buckets[i].width,
        ),
    )


def resize_crop(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(F, 3, H, W) → (F, 3, height, width): scale so both sides cover the target
    (antialiased bilinear), then centre-crop."""
    h, w = video.shape[-2:]
    if (h, w) == (height, width):
        return video
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    video = F.interpolate(video, size=(new_h, new_w), mode="bilinear", antialias=True)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return video[:, :, top : top + height, left : left + width].clamp(-1.0, 1.0)


class BucketBatches(torch.utils.data.IterableDataset):
    """Batches of one bucket each from ``dataset`` (a ShardDataset reading whole clips at
    native size: ``frames=None, size=None``).

    Yields ``{"video": (B, F, 3, H, W), "caption": [...], "meta": [...], "key": [...],
    "stats": counts so far in this pass of this reader, "reader": (epoch, worker id)}``. Samples no bucket
    takes are counted as ``skipped_no_bucket``. Partial buckets at the end of an epoch are
    dropped (their samples come back, in another order, next epoch).
    """

    def __init__(
        self, dataset: ShardDataset, buckets: list[Bucket], max_frames: int | None = None
    ) -> None:
        super().__init__()
        if not buckets:
            raise ValueError("at least one bucket is needed")
        if dataset.frames is not None or dataset.size is not None:
            raise ValueError("BucketBatches needs a ShardDataset with frames=None, size=None")
        self.dataset, self.buckets, self.max_frames = dataset, list(buckets), max_frames
        self.skipped_no_bucket = 0

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def stats(self) -> dict[str, int]:
        return {**self.dataset.stats, "skipped_no_bucket": self.skipped_no_bucket}

    def window(self, sample: dict, frames: int, bucket: Bucket) -> tuple[int, dict]:
        """Where a ``frames``-long sample's ``bucket.frames`` window starts (seeded by the
        dataset's seed, the epoch and the sample's key) and its meta with ``condition_frames``
        re-expressed in the window (dropped when the window lies on one side of them)."""
        rng = np.random.default_rng(
            [self.dataset.seed, self.dataset.epoch, zlib.crc32(sample["key"].encode())]
        )
        start = int(rng.integers(0, frames - bucket.frames + 1))
        meta = dict(sample["meta"])
        given = meta.get("condition_frames")
        if given is not None and not 1 <= given - start < bucket.frames:
            meta.pop("condition_frames")
        elif given is not None:
            meta["condition_frames"] = given - start
        return start, meta

    STACKED = "video"  # the item key stacked into one tensor; the other keys become lists

    def sample_shape(self, sample: dict) -> tuple[int, int, int]:
        """(frames, height, width) of a sample, which picks its bucket."""
        video = sample["video"]  # (F, 3, H, W)
        return video.shape[0], video.shape[2], video.shape[3]

    def item(self, sample: dict, start: int, bucket: Bucket) -> dict:
        """One batch row: the bucket's window of the sample, resized and cropped to it (its
        ``meta``, re-expressed in the window, is added by ``__iter__``)."""
        video = sample["video"][start : start + bucket.frames]
        return {
            "video": resize_crop(video, bucket.height, bucket.width),
            "caption": sample["caption"],
            "key": sample["key"],
        }

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        reader = (self.dataset.epoch, info.id if info is not None else 0)
        base = self.stats()  # counts are per pass: a main-process reader keeps its totals
        pending: dict[int, list[dict]] = {}
        for sample in self.dataset:
            frames, height, width = self.sample_shape(sample)
            index = assign_bucket(frames, height, width, self.buckets, self.max_frames)
            if index is None:
                self.skipped_no_bucket += 1
                continue
            bucket = self.buckets[index]
            start, meta = self.window(sample, frames, bucket)
            pending.setdefault(index, []).append({**self.item(sample, start, bucket), "meta": meta})
            if len(pending[index]) == bucket.batch_size:
                items = pending.pop(index)
                yield {
                    self.STACKED: torch.stack([it[self.STACKED] for it in items]),
                    **{k: [it[k] for it in items] for k in items[0] if k != self.STACKED},
                    "stats": {k: v - base[k] for k, v in self.stats().items()},
                    "reader": reader,
                }
