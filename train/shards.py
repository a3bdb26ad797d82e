"""WebDataset shards: writing Shapes World samples and reading any shard of our format.

A sample in a shard (DESIGN.md, "Data"):

* ``KEY.mp4`` -- a clip (H.264 lossless RGB, bit-exact palette colours), or
  ``KEY.png`` / ``KEY.jpg`` -- an image;
* ``KEY.json`` -- meta: ``caption``, ``fps``, ``frames``, ``source`` and optional
  ``condition_frames``, ``switch_frame``, ``references``;
* ``KEY.ref1.png``, ``KEY.ref2.png``, ... -- reference images, in placeholder order.

``ShardDataset`` reads this format from local paths, globs, brace patterns or any URL
webdataset opens, and never lets one bad sample stop training.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import logging
import os
import random
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds
from PIL import Image
from tqdm.auto import tqdm

from pipelines.video_io import encode_video_bytes, read_video
from world.shapes_world import Sample, ShapesWorld

__all__ = [
    "ShardDataset",
    "collate_videos",
    "write_records",
    "write_shapes_shards",
    "write_shards",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
VIDEO_EXTENSIONS = ("mp4", "webm", "gif")
FRAME_SAMPLING = ("random", "first", "uniform")
SPLIT_BY = ("shards", "samples")
# URL schemes webdataset opens itself (curl for http, gsutil for gs, …); the rest: fsspec
WDS_SCHEMES = ("file", "http", "https", "pipe", "ais", "sftp", "ftps", "scp", "htgs", "hf")
# A fixed mtime (2024-01-01) makes tar bytes depend on content only.
_TAR_MTIME = 1_704_067_200


# --------------------------------------------------------------------------- splitting
def shard_counts(path: str) -> dict[str, int]:
    """{"image": n, "video": n} samples in a local shard, from its tar headers only."""
    import tarfile

    cache = shard_counts.__dict__.setdefault("cache", {})
    key = (path, os.path.getmtime(path), os.path.getsize(path))
    if key not in cache:
        counts = {"image": 0, "video": 0}
        try:
            with tarfile.open(path) as tar:
                for name in tar.getnames():
                    ext = name.rsplit(".", 1)[-1].lower()
                    if ".ref" in name:  # reference images belong to their clip
                        continue
                    if ext in IMAGE_EXTENSIONS:
                        counts["image"] += 1
                    elif ext in VIDEO_EXTENSIONS:
                        counts["video"] += 1
        except (tarfile.TarError, OSError):
            pass  # unreadable: counted as empty here, skipped (and counted) when read
        cache[key] = counts
    return cache[key]


def deal_shards(urls: list[str], readers: int) -> list[list[str]]:
    """Deal local shards to ``readers`` so that each gets images and videos where enough
    shards hold them: shards richest in the rarer kind first, each to the reader with the
    fewest of that kind so far (ties: fewest samples, then lowest index). Deterministic, so
    every process computes the same deal."""
    counts = {u: shard_counts(u) for u in urls}
    total = {k: sum(c[k] for c in counts.values()) for k in ("image", "video")}
    rare = min(total, key=lambda k: (total[k] == 0, total[k]))
    order = sorted(urls, key=lambda u: (-counts[u][rare], -sum(counts[u].values()), u))
    dealt: list[list[str]] = [[] for _ in range(readers)]
    have = [[0, 0] for _ in range(readers)]  # (rare kind, all samples)
    for url in order:
        i = min(range(readers), key=lambda r: (have[r][0], have[r][1], r))
        dealt[i].append(url)
        have[i][0] += counts[url][rare]
        have[i][1] += sum(counts[url].values())
    return dealt


# --------------------------------------------------------------------------- writing


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _encode_sample(sample: Sample) -> dict[str, bytes | str]:
    record: dict[str, bytes | str] = {"__key__": sample.key}
    if sample.frames.shape[0] == 1:
        record["png"] = _png_bytes(sample.frames[0])
    else:
        record["mp4"] = encode_video_bytes(sample.frames, sample.meta["fps"], ".mp4", lossless=True)
    for i, reference in enumerate(sample.references):
        record[f"ref{i + 1}.png"] = _png_bytes(reference)
    record["json"] = json.dumps(sample.meta, sort_keys=True).encode("utf-8")
    return record


def write_records(
    records: Iterable[dict[str, bytes | str]],
    out_dir: str | os.PathLike,
    shard_size: int = 1000,
    prefix: str = "shapes",
    total: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Write encoded records into ``out_dir/{prefix}-000000.tar``, ... with ``shard_size`` each.

    A record is ``{"__key__": KEY, EXT: bytes, ...}``; each ``EXT`` becomes the tar member
    ``KEY.EXT``. Tar headers carry a fixed mtime and owner, so equal records give
    byte-identical shards. Each shard is written to a hidden temporary sibling and renamed
    into place when complete, so an interrupted run never leaves a half-written shard under
    its final name. No records, no shard.

    Returns:
        The shard paths, in order.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    stream, writer, tmp, count = None, None, None, 0
    try:
        for record in tqdm(
            records, total=total, disable=not progress, desc="shards", unit="sample"
        ):
            if writer is None:
                final = out / f"{prefix}-{len(paths):06d}.tar"
                tmp = final.with_name(f".{final.name}.tmp")
                stream = open(tmp, "wb")  # closed when the shard is full, or on error
                writer = wds.TarWriter(
                    stream, mtime=_TAR_MTIME, user="shapes", group="shapes", encoder=False
                )
            writer.write(record)
            count += 1
            if count == shard_size:
                writer.close()
                stream.close()
                os.replace(tmp, final)
                paths.append(final)
                stream, writer, count = None, None, 0
        if writer is not None:
            writer.close()
            stream.close()
            os.replace(tmp, final)
            paths.append(final)
            stream, writer = None, None
    finally:
        if stream is not None:  # an error mid-shard: drop the partial file
            with contextlib.suppress(Exception):
                writer.close()  # else tarfile flushes into the closed file when collected
            stream.close()
            tmp.unlink(missing_ok=True)
    return paths


def write_shards(
    samples: Iterable[Sample],
    out_dir: str | os.PathLike,
    shard_size: int = 1000,
    prefix: str = "shapes",
    total: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Write ``samples`` into ``out_dir/{prefix}-000000.tar``, ... with ``shard_size`` samples each.

    Multi-frame samples become ``KEY.mp4`` (lossless H.264), images ``KEY.png``; meta goes
    to ``KEY.json`` and references to ``KEY.ref1.png``, ... Tar headers carry a fixed
    mtime and owner, so equal samples give byte-identical shards (see ``write_records``).

    Returns:
        The shard paths, in order.
    """
    records = (_encode_sample(sample) for sample in samples)
    return write_records(records, out_dir, shard_size, prefix, total=total, progress=progress)


def write_shapes_shards(
    out_dir: str | os.PathLike,
    clips: int,
    images: int,
    seed: int = 0,
    shard_size: int = 1000,
    size: int = 64,
    frames: int = 16,
    progress: bool = True,
) -> dict:
    """Render a Shapes World training set (with the contract's exclusions) into shards.

    ``clips`` samples are drawn from the video kinds by ``ShapesWorld.DEFAULT_MIX``
    renormalised without "image"; then ``images`` image samples follow. Same arguments,
    same bytes.

    Returns:
        ``{"shards": [str], "samples": int, "clips": int, "images": int, "counts": {kind: n},
        "seed", "size", "frames"}``.
    """
    if clips < 0 or images < 0 or clips + images == 0:
        raise ValueError(
            f"clips and images must be >= 0 with a positive sum, got clips={clips}, images={images}"
        )
    video_mix = {k: w for k, w in ShapesWorld.DEFAULT_MIX.items() if k != "image"}
    world = ShapesWorld(size=size, frames=frames, seed=seed, exclusions=True, mix=video_mix)
    counts = dict.fromkeys(ShapesWorld.KINDS, 0)

    def generate() -> Iterator[Sample]:
        for index in range(clips + images):
            sample = world.sample(index) if index < clips else world.sample(index, kind="image")
            counts[sample.meta["kind"]] += 1
            yield sample

    paths = write_shards(generate(), out_dir, shard_size, total=clips + images, progress=progress)
    return {
        "shards": [str(p) for p in paths],
        "samples": clips + images,
        "clips": clips,
        "images": images,
        "counts": counts,
        "seed": seed,
        "size": size,
        "frames": frames,
    }


# --------------------------------------------------------------------------- reading


def _expand_urls(urls: str | os.PathLike | list[str | os.PathLike]) -> list[str]:
    """Brace patterns / '::' lists (webdataset), then local globs and directories."""
    items = urls if isinstance(urls, (list, tuple)) else [urls]
    expanded: list[str] = []
    for item in items:
        for url in wds.shardlists.expand_urls(str(item)):
            if "://" in url or url.startswith("pipe:"):
                expanded.append(url)
            elif os.path.isdir(url):
                expanded.extend(sorted(glob.glob(os.path.join(url, "*.tar"))))
            elif glob.has_magic(url):
                expanded.extend(sorted(glob.glob(url)))
            elif os.path.exists(url):
                expanded.append(url)
            else:
                raise FileNotFoundError(f"shard not found: {url}")
    if not expanded:
        raise ValueError(f"no shards match {urls!r}")
    return expanded


def _to_tensor(frames: np.ndarray, size: int | None) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, size, size) float32 in [-1, 1].

    A different size is reached by scaling the short side to ``size`` (antialiased
    bilinear) and centre-cropping, so non-square real videos keep their aspect ratio.
    """
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if size is not None and video.shape[-2:] != (size, size):
        height, width = video.shape[-2:]
        scale = size / min(height, width)
        new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
        video = F.interpolate(video, size=(new_h, new_w), mode="bilinear", antialias=True)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        video = video[:, :, top : top + size, left : left + size].clamp(0, 255)
    return video / 127.5 - 1.0


def _decode_image(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.array(image.convert("RGB"))  # a writable copy for torch.from_numpy


class ShardDataset(torch.utils.data.IterableDataset):
    """Stream training samples from WebDataset shards.

    Yields dicts ``{"video": (F, 3, H, W) float32 in [-1, 1], "caption": str, "meta": dict,
    "key": str, "references": (R, 3, H, W) float32 in [-1, 1]}`` (R = 0 without references).

    * Images become 1-frame clips (F = 1) whatever ``frames`` is.
    * Videos give ``frames`` frames (all when None): ``"first"`` -- the first window,
      ``"random"`` -- a window at a random start (seeded by seed, epoch and key),
      ``"uniform"`` -- ``frames`` indices spread evenly over the clip. Shorter clips are
      skipped. ``meta["frame_indices"]`` records the choice; ``condition_frames`` /
      ``switch_frame`` are re-expressed in the chosen frames (dropped when all chosen
      frames lie on one side of them) and ``fps`` follows the stride.
    * Undecodable samples (bad video/image bytes, missing or invalid JSON) are skipped
      with a ``logging.warning`` naming the key, never raised.

    ``stats`` counts ``ok``, ``skipped_corrupt``, ``skipped_short``, ``skipped_filtered``
    (images/videos turned off) and ``shard_errors`` (unreadable tar streams). With
    DataLoader workers each worker counts in its own copy.

    Shards are split across distributed ranks and DataLoader workers (``split_by="shards"``);
    with ``split_by="samples"``, or when there are fewer shards than readers, every reader
    reads all shards and keeps every n-th sample (more reading, but no reader goes without a
    kind of sample that only a few shards hold). Local shards are dealt to readers once,
    balanced by the images and videos each holds (:func:`deal_shards`: ``pack`` writes rows
    in manifest order, so images often sit in a few shards); :meth:`check_split` says at
    start-up if a reader would still get none of a kind. Other URLs are re-dealt each epoch.
    """

    def __init__(
        self,
        urls: str | os.PathLike | list[str | os.PathLike],
        frames: int | None = 16,
        size: int | None = 64,
        frame_sampling: str = "random",
        shuffle: int = 0,
        seed: int = 0,
        images: bool = True,
        videos: bool = True,
        split_by: str = "shards",
    ) -> None:
        super().__init__()
        if split_by not in SPLIT_BY:
            raise ValueError(f"unknown split_by {split_by!r}; allowed: {SPLIT_BY}")
        if frame_sampling not in FRAME_SAMPLING:
            raise ValueError(
                f"unknown frame_sampling {frame_sampling!r}; allowed: {FRAME_SAMPLING}"
            )
        if frames is not None and frames < 1:
            raise ValueError(f"frames must be >= 1 or None, got {frames}")
        if size is not None and size < 1:
            raise ValueError(f"size must be >= 1 or None, got {size}")
        if shuffle < 0:
            raise ValueError(f"shuffle (buffer size) must be >= 0, got {shuffle}")
        if not (images or videos):
            raise ValueError("at least one of images and videos must be True")
        self.urls = _expand_urls(urls)
        self.frames, self.size, self.frame_sampling = frames, size, frame_sampling
        self.shuffle, self.seed, self.images, self.videos = shuffle, seed, images, videos
        self.split_by = split_by
        self.epoch = 0
        self.stats = dict.fromkeys(
            ("ok", "skipped_corrupt", "skipped_short", "skipped_filtered", "shard_errors"), 0
        )

    def set_epoch(self, epoch: int) -> None:
        """Re-seed shard order, shuffle buffer and random windows for a new epoch."""
        self.epoch = epoch

    def _dealt(self, readers: int) -> list[list[str]] | None:
        """The fixed, balanced deal of local shards to ``readers`` (None: not all local)."""
        cache = self.__dict__.setdefault("_deals", {})
        if readers not in cache:
            local = all(Path(u).is_file() for u in self.urls)
            cache[readers] = deal_shards(self.urls, readers) if local else None
        return cache[readers]

    def check_split(self, readers: int) -> None:
        """Raise ValueError if, with ``split_by="shards"``, some of ``readers`` (processes ×
        DataLoader workers) would get no sample of a kind this dataset reads, so a run fails
        at start-up instead of at the first epoch that starves. Remote shards: not checked."""
        if self.split_by != "shards" or len(self.urls) < readers:
            return  # every reader reads every shard
        dealt = self._dealt(readers)
        if dealt is None:
            return
        kinds = [k for k, on in (("image", self.images), ("video", self.videos)) if on]
        for kind in kinds:
            have = [sum(shard_counts(u)[kind] for u in shards) for shards in dealt]
            if sum(have) and not all(have):
                starved = [i for i, n in enumerate(have) if n == 0]
                raise ValueError(
                    f"data.split_by: shards gives reader(s) {starved} of {readers} no {kind} "
                    f"sample: only {sum(1 for u in self.urls if shard_counts(u)[kind])} of "
                    f"{len(self.urls)} shards hold {kind}s; set data.split_by: samples, or "
                    "repack with more shards holding them"
                )

    # -- iteration ---------------------------------------------------------------------

    def _reader_slot(self) -> tuple[int, int]:
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * workers + worker, world * workers

    def _shard_error(self, exn: Exception) -> bool:
        self.stats["shard_errors"] += 1
        logger.warning("skipping unreadable shard data: %r", exn)
        return True  # keep going with the next file/shard

    def _raw_samples(self) -> Iterator[dict]:
        slot, readers = self._reader_slot()
        urls = list(self.urls)
        if self.shuffle:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(urls)
        split_samples = self.split_by == "samples" or len(urls) < readers
        dealt = None if split_samples else self._dealt(readers)
        if dealt is not None:  # this reader's own shards, in this epoch's order
            urls = [u for u in urls if u in set(dealt[slot])]
        elif not split_samples:
            urls = urls[slot::readers]
        for count, raw in enumerate(self._read_raw(urls)):
            if not split_samples or count % readers == slot:
                yield raw

    def _read_raw(self, urls: list[str]) -> Iterator[dict]:
        """The raw samples of ``urls`` in order (webdataset's dicts: ``__key__``, ``__url__``
        and the bytes of each file by extension). train/precompute.py reads its cache here."""
        opened = self._open_streams(urls)
        files = wds.tariterators.tar_file_expander(opened, handler=self._shard_error)
        return wds.tariterators.group_by_keys(files, handler=self._shard_error)

    def _open_streams(self, urls: list[str]) -> Iterator[dict]:
        """``{"url", "stream"}`` per shard: local paths, ``http(s)://`` (curl), ``pipe:``
        and the other schemes webdataset's gopen knows go through it; any other
        ``scheme://`` (``s3://``, ``gs://``, ``memory://`` …) through fsspec. A shard that
        cannot be opened is counted in ``shard_errors`` and skipped."""
        for url in urls:
            scheme = url.split("://", 1)[0] if "://" in url else ""
            try:
                if scheme and scheme not in WDS_SCHEMES:
                    import fsspec

                    stream = fsspec.open(url, "rb").open()
                else:
                    stream = wds.gopen(url)
            except Exception as exn:
                self._shard_error(exn)
                continue
            yield {"url": url, "stream": stream}

    def __iter__(self) -> Iterator[dict]:
        samples = (s for s in map(self._decode, self._raw_samples()) if s is not None)
        if not self.shuffle:
            yield from samples
            return
        rng = random.Random(f"buffer-{self.seed}-{self.epoch}")
        buffer: list[dict] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= self.shuffle:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    # -- decoding ----------------------------------------------------------------------

    def _decode(self, raw: dict) -> dict | None:
        key = raw.get("__key__", "?")
        try:
            return self._decode_or_raise(raw, key)
        except Exception as exn:  # one bad sample must never stop training
            self.stats["skipped_corrupt"] += 1
            logger.warning("skipping corrupt sample %r from %s: %s", key, raw.get("__url__"), exn)
            return None

    def _decode_or_raise(self, raw: dict, key: str) -> dict | None:
        if "json" not in raw:
            raise ValueError("missing KEY.json")
        meta = json.loads(raw["json"])
        if not isinstance(meta, dict) or not isinstance(meta.get("caption"), str):
            raise ValueError("KEY.json must be an object with a string 'caption'")
        video_ext = next((e for e in VIDEO_EXTENSIONS if e in raw), None)
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in raw), None)
        if video_ext is None and image_ext is None:
            raise ValueError(f"no video {VIDEO_EXTENSIONS} or image {IMAGE_EXTENSIONS} file")
        if (video_ext is not None and not self.videos) or (video_ext is None and not self.images):
            self.stats["skipped_filtered"] += 1
            return None
        if video_ext is not None:
            frames, fps = read_video(raw[video_ext], "." + video_ext)
            indices = self._frame_indices(len(frames), key)
            if indices is None:
                self.stats["skipped_short"] += 1
                return None
            frames = frames[indices]
            meta = self._reindex_meta(meta, indices, fps)
        else:
            frames = _decode_image(raw[image_ext])[None]
        ref_names = sorted((n for n in raw if _ref_number(n) is not None), key=_ref_number)
        references = [_decode_image(raw[name]) for name in ref_names]
        video = _to_tensor(frames, self.size)
        if references:
            refs = torch.cat([_to_tensor(r[None], self.size) for r in references])
        else:
            refs = video.new_zeros((0, *video.shape[1:]))
        self.stats["ok"] += 1
        return {
            "video": video,
            "caption": meta["caption"],
            "meta": meta,
            "key": key,
            "references": refs,
        }

    def _frame_indices(self, total: int, key: str) -> np.ndarray | None:
        want = total if self.frames is None else self.frames
        if total < want:
            return None
        if self.frame_sampling == "uniform":
            return np.linspace(0, total - 1, want).round().astype(np.int64)
        start = 0
        if self.frame_sampling == "random" and total > want:
            rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(key.encode())])
            start = int(rng.integers(0, total - want + 1))
        return np.arange(start, start + want)

    @staticmethod
    def _reindex_meta(meta: dict, indices: np.ndarray, fps: float) -> dict:
        meta = dict(meta)
        meta["frame_indices"] = indices.tolist()
        meta["frames"] = len(indices)
        meta.setdefault("fps", fps)
        stride = (indices[-1] - indices[0]) / max(1, len(indices) - 1)
        if stride > 1:  # "uniform" skipped frames: the kept ones are further apart in time
            meta["fps"] = float(meta["fps"]) / stride
        for name in ("condition_frames", "switch_frame"):
            if meta.get(name) is not None:
                # the boundary in the chosen frames = how many chosen ones precede it
                kept = int((indices < meta[name]).sum())
                if 1 <= kept < len(indices):
                    meta[name] = kept
                else:  # the window lies entirely on one side of the boundary
                    del meta[name]
        return meta


def _ref_number(name: str) -> int | None:
    """N for a ``ref{N}.{image ext}`` entry of a raw sample, else None."""
    stem, _, ext = name.partition(".")
    if stem.startswith("ref") and stem[3:].isdigit() and ext in IMAGE_EXTENSIONS:
        return int(stem[3:])
    return None


def collate_videos(batch: list[dict]) -> dict:
    """Stack samples of equal shape: ``video`` (B, F, 3, H, W); ``caption``, ``meta``, ``key``,
    ``references`` (per-sample (R, 3, H, W) tensors; R varies) as lists."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    shapes = {tuple(item["video"].shape) for item in batch}
    if len(shapes) != 1:
        raise ValueError(
            f"collate_videos needs samples of one shape (F, 3, H, W), got {sorted(shapes)}; "
            "batch images and videos separately (e.g. ShardDataset(images=False))"
        )
    return {
        "video": torch.stack([item["video"] for item in batch]),
        "caption": [item["caption"] for item in batch],
        "meta": [item["meta"] for item in batch],
        "key": [item["key"] for item in batch],
        "references": [item.get("references") for item in batch],
    }
