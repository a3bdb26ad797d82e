"""Pack real videos and images with captions into training shards (DESIGN.md, "Data").

A manifest lists one sample per row: ``path`` (relative paths resolve against the
manifest's folder), ``caption`` and, for videos only, optional ``start`` / ``end`` in
seconds. It is a CSV file with a header row or a JSONL file (one object per line)::

    path,caption,start,end
    clips/dog.mp4,a dog runs across a lawn,2.0,6.5
    photos/cat.jpg,a cat sleeping on a sofa,,

Each packed row becomes a sample of the shard format ``train.shards`` reads: ``KEY.mp4``
(a clip) or ``KEY.png`` / ``KEY.jpg`` (an image) plus ``KEY.json`` with ``caption``,
``fps`` (null for images), ``frames``, ``width``, ``height``, ``source`` (the file's path)
and ``start`` / ``end`` when given. ``KEY`` is ``{prefix}-{manifest line:08d}``, so a
sample can be traced back to its row and keys stay the same when other rows fail.

Rows that cannot be used -- malformed (bad JSON, no path or caption, start >= end, ...) or
naming a file that is missing, corrupt, truncated, too large or not a video/image -- are
logged, listed with their line number in ``pack_report.json`` and skipped; they never stop
the pack. Too large: a clip of more than ``max_frames`` frames (``--max-frames``, default
``pipelines.video_io.MAX_FRAMES``, what the training reader accepts) or more than
``MAX_DECODED_BYTES`` of RGB frames, and an image of more than ``max_pixels`` pixels
(``--max-pixels``, default ``MAX_IMAGE_PIXELS``), refused before its pixels are decoded.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps
from tqdm.auto import tqdm

from pipelines.files import write_json_atomic
from pipelines.video_io import (
    MAX_DECODED_BYTES,
    MAX_FRAMES,
    VideoTooLargeError,
    encode_video_bytes,
    read_video,
)
from train.shards import write_records

__all__ = ["ManifestRow", "PackReport", "pack_manifest", "read_manifest"]

logger = logging.getLogger(__name__)

MANIFEST_EXTENSIONS = (".csv", ".jsonl")
PACK_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
# decoded by the ffmpeg binary of imageio-ffmpeg, GIF by Pillow (pipelines.video_io)
PACK_VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif")
REPORT_NAME = "pack_report.json"
# 16.8 Mpx (4096 x 4096), as studio.uploads.DEFAULT_MAX_PIXELS for the UI's uploads (train
# does not import studio, DESIGN.md): far above the 64 px to 1080p the models train on, and
# below Pillow's decompression-bomb warning (89 Mpx), so this limit decides first.
MAX_IMAGE_PIXELS = 4096 * 4096
# "[h264 @ 0x55d1c0]" at the start of an ffmpeg log line
_FFMPEG_PREFIX = re.compile(r"^\[[^\]]*\]\s*")
# a webdataset key ends at the first "." of a member name, and names a file in a tar
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# i / fps against start * fps: absorbs float error such as 1.5 * 8 = 12.000000000000002
_EPS = 1e-6


class _RowError(ValueError):
    """A row or file that cannot be packed; the message is the reason reported."""


@dataclass(frozen=True)
class ManifestRow:
    """One usable manifest row. ``line``: its line number in the manifest (1-based; a CSV
    header is line 1)."""

    line: int
    path: str
    caption: str
    start: float | None = None
    end: float | None = None


@dataclass
class PackReport:
    """What ``pack_manifest`` did. ``failures``: ``(manifest line, path, reason)``, by line."""

    written: int
    shards: list[Path]
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    videos: int = 0
    images: int = 0
    report_path: Path | None = None

    @property
    def failed(self) -> int:
        return len(self.failures)

    def to_dict(self) -> dict:
        return {
            "written": self.written,
            "failed": self.failed,
            "videos": self.videos,
            "images": self.images,
            "shards": [p.name for p in self.shards],
            "failures": [
                {"line": line, "path": path, "reason": reason}
                for line, path, reason in self.failures
            ],
        }


# --------------------------------------------------------------------------- manifest


def _seconds(name: str, value: object) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _RowError(f"{name} must be a number of seconds, got {value!r}")
    try:
        seconds = float(value)
    except ValueError:
        raise _RowError(f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _RowError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def _parse_row(line: int, record: object) -> ManifestRow:
    if not isinstance(record, dict):
        raise _RowError(f"expected an object with path and caption, got {type(record).__name__}")
    extra = record.get(None)  # csv.DictReader: fields beyond the header's columns
    if extra and any(str(value).strip() for value in extra):
        raise _RowError(
            "more fields than the header has columns (quote captions that contain commas)"
        )
    path, caption = record.get("path"), record.get("caption")
    if not isinstance(path, str) or not path.strip():
        raise _RowError("missing path")
    if not isinstance(caption, str) or not caption.strip():
        raise _RowError("missing caption")
    start, end = _seconds("start", record.get("start")), _seconds("end", record.get("end"))
    if start is not None and end is not None and start >= end:
        raise _RowError(f"start ({start:g} s) must be before end ({end:g} s)")
    if (start is not None or end is not None) and Path(path).suffix.lower() in (
        PACK_IMAGE_EXTENSIONS
    ):
        raise _RowError("start/end are for videos; this is an image")
    return ManifestRow(line, path.strip(), caption.strip(), start, end)


def _csv_records(path: Path) -> Iterator[tuple[int, object]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's BOM
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return  # an empty file
        reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
        missing = [name for name in ("path", "caption") if name not in reader.fieldnames]
        if missing:
            raise ValueError(
                f"manifest {path} needs a header row naming the columns path and caption "
                f"(and optionally start, end); got {reader.fieldnames}"
            )
        for record in reader:
            yield reader.line_num, record


def _jsonl_records(path: Path) -> Iterator[tuple[int, object]]:
    with open(path, encoding="utf-8-sig") as fh:
        for line, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                yield line, json.loads(text)
            except json.JSONDecodeError as exc:
                yield line, _RowError(f"invalid JSON: {exc.msg} (column {exc.colno})")


def read_manifest(
    manifest_path: str | os.PathLike,
) -> tuple[list[ManifestRow], list[tuple[int, str, str]]]:
    """Read a CSV (header row) or JSONL manifest.

    Returns:
        ``(rows, malformed)``: the usable rows, and ``(line, path or "", reason)`` for each
        row that is not.

    Raises:
        FileNotFoundError: no such manifest.
        ValueError: an extension other than .csv / .jsonl, a CSV header without path and
            caption, or a manifest without any row.
    """
    path = Path(manifest_path)
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_EXTENSIONS:
        raise ValueError(
            f"unknown manifest type {suffix or path.name!r}; use {' or '.join(MANIFEST_EXTENSIONS)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    records = _csv_records(path) if suffix == ".csv" else _jsonl_records(path)
    rows: list[ManifestRow] = []
    malformed: list[tuple[int, str, str]] = []
    for line, record in records:
        try:
            if isinstance(record, Exception):
                raise record
            rows.append(_parse_row(line, record))
        except _RowError as exc:
            given = record.get("path") if isinstance(record, dict) else None
            malformed.append((line, given if isinstance(given, str) else "", str(exc)))
    if not rows and not malformed:
        raise ValueError(f"manifest {path} has no rows")
    return rows, malformed


# --------------------------------------------------------------------------- decoding


@dataclass
class _Clip:
    frames: np.ndarray | None  # (F, H, W, 3) uint8 -- the cut, when asked to keep it
    count: int  # frames in the cut
    total: int  # frames decoded from the file (up to the cut's end)
    fps: float
    width: int
    height: int
    rotated: bool  # the file carries a rotation tag (ffmpeg applied it)


def _frame_range(start: float | None, end: float | None, fps: float) -> tuple[int, float]:
    """Frames i with start <= i / fps < end, as [first, stop)."""
    first = math.ceil((start or 0.0) * fps - _EPS)
    stop = math.inf if end is None else math.ceil(end * fps - _EPS)
    return first, stop


def _read_clip(
    path: Path, start: float | None, end: float | None, keep: bool, max_frames: int
) -> _Clip:
    """Decode the frames of ``path`` in [start, end) seconds (frame i is at i / fps).

    GIFs go through ``read_video`` (Pillow, which expands merged frames). Other files are
    streamed out of the ffmpeg binary of imageio-ffmpeg rather than read whole with
    ``read_video``: a long source video does not fit in memory, and only the cut is held
    here (nothing when ``keep`` is False). ffmpeg applies a rotation tag, and the size in
    its meta is the rotated one.

    A cut of more than ``max_frames`` frames or ``MAX_DECODED_BYTES`` bytes is refused
    (``_RowError``) as soon as decoding passes the limit: ``read_video`` would refuse it
    in training.
    """
    if path.suffix.lower() == ".gif":
        try:
            frames, fps = read_video(path, max_frames=max_frames)
        except VideoTooLargeError as exc:
            remedy = "raise --max-frames" if exc.limit == "max_frames" else "use a smaller GIF"
            raise _RowError(f"{exc.reason}; {remedy}") from None
        first, stop = _frame_range(start, end, fps)
        cut = frames[first : None if math.isinf(stop) else int(stop)]
        return _Clip(
            cut if keep else None,
            len(cut),
            len(frames),
            fps,
            frames.shape[2],
            frames.shape[1],
            False,
        )

    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        try:
            meta = next(reader)
        except (OSError, RuntimeError, StopIteration) as exc:
            # imageio-ffmpeg appends ffmpeg's whole log; its last line says what went wrong
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise _RowError(f"not a readable video: {lines[-1] if lines else exc}") from None
        width, height = meta["size"]
        fps = float(meta.get("fps") or 0.0)
        if not (math.isfinite(fps) and fps > 0):
            raise _RowError("not a video with a frame rate (ffmpeg found none)")
        first, stop = _frame_range(start, end, fps)
        kept: list[np.ndarray] = []
        count = total = 0
        for index, buffer in enumerate(reader):
            if index >= stop:
                break  # closing the reader stops ffmpeg; the rest is never decoded
            total = index + 1
            if index >= first:
                count += 1
                if count > max_frames:
                    raise _RowError(
                        f"the clip has more than {max_frames:,} frames; cut it shorter with "
                        "start/end, or raise --max-frames"
                    )
                if count * len(buffer) > MAX_DECODED_BYTES:
                    raise _RowError(
                        f"the clip's {width}x{height} frames pass {MAX_DECODED_BYTES / 2**30:g} "
                        f"GiB decoded after {count - 1:,} frames; cut it shorter with start/end"
                    )
                if keep:
                    kept.append(np.frombuffer(buffer, np.uint8).reshape(height, width, 3))
    finally:
        reader.close()
    frames = np.stack(kept) if kept else None
    return _Clip(frames, count, total, fps, width, height, bool(meta.get("rotate", 0) % 360))


def _check_decodes(path: Path, end: float | None) -> None:
    """Raise ``_RowError`` unless ffmpeg decodes ``path`` (up to ``end`` seconds) without
    an error.

    ``_read_clip``'s frame stream ends quietly where a truncated file ends: without this
    check half an MP4 would be packed as a shorter clip, or, stored as is, fail in the
    training reader at every epoch. ``-xerror`` makes ffmpeg's exit status say so.
    """
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-xerror"]
    if end is not None:
        cmd += ["-to", f"{end:.6f}"]  # the rest of the file is not packed
    cmd += ["-i", str(path), "-map", "0:v:0", "-f", "null", "-"]
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if result.returncode != 0:
        lines = [_FFMPEG_PREFIX.sub("", line) for line in result.stderr.splitlines()]
        first = next((line for line in lines if line.strip()), f"exit status {result.returncode}")
        raise _RowError(f"truncated or corrupt video (ffmpeg: {first.strip()})")


def _video_record(path: Path, row: ManifestRow, max_frames: int) -> dict[str, bytes | str]:
    cut = row.start is not None or row.end is not None
    # an uncut, unrotated .mp4 is stored byte for byte; it is still decoded, to check it
    # and to count its frames
    as_is = not cut and path.suffix.lower() == ".mp4"
    clip = _read_clip(path, row.start, row.end, keep=not as_is, max_frames=max_frames)
    if path.suffix.lower() != ".gif":  # read_video decoded a GIF whole, or raised
        _check_decodes(path, row.end)
    if as_is and clip.rotated:  # the shard reader (PyAV) would ignore the rotation tag
        as_is = False
        clip = _read_clip(path, row.start, row.end, keep=True, max_frames=max_frames)
    if clip.total == 0:
        raise _RowError("the video holds zero decodable frames")
    if clip.count == 0:
        raise _RowError(
            f"no frame in [{row.start or 0:g}, {row.end if row.end is not None else 'end'}) s: "
            f"the video has {clip.total} frames at {clip.fps:g} fps ({clip.total / clip.fps:.2f} s)"
        )
    width, height = clip.width, clip.height
    if as_is:
        data = path.read_bytes()
    else:
        data = encode_video_bytes(clip.frames, clip.fps, ".mp4")
        # H.264 yuv420p needs even sides: the encoder pads an odd one by a row/column
        width, height = width + width % 2, height + height % 2
    meta = {
        "caption": row.caption,
        "fps": clip.fps,
        "frames": clip.count,
        "width": width,
        "height": height,
        "source": os.path.abspath(path),
    }
    if row.start is not None:
        meta["start"] = row.start
    if row.end is not None:
        meta["end"] = row.end
    return {"mp4": data, "json": json.dumps(meta, sort_keys=True).encode("utf-8")}


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB; transparent pixels are composited onto black (what lies under alpha 0 is
    undefined in a file)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def _open_image(path: Path, max_pixels: int) -> Image.Image:
    """``Image.open(path)`` once its header declares at most ``max_pixels`` pixels (nothing
    is decoded yet, so a decompression bomb costs nothing); ``_RowError`` otherwise."""
    try:
        with warnings.catch_warnings():
            # our own limit decides below Pillow's error size: it is lower by default, and
            # a user who raises --max-pixels past Pillow's warning asked for it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise _RowError(
            f"Pillow refuses the image as a possible decompression bomb: {exc}"
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise _RowError(
            f"the image is {width}x{height} = {width * height:,} pixels, more than "
            f"max_pixels={max_pixels:,}; raise --max-pixels to pack it"
        )
    return image


def _image_record(path: Path, row: ManifestRow, max_pixels: int) -> dict[str, bytes | str]:
    with _open_image(path, max_pixels) as image:
        image.load()  # a truncated file fails here, not in training
        source_format = image.format
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if source_format in ("PNG", "JPEG") and image.mode == "RGB" and orientation == 1:
            ext, data = ("png" if source_format == "PNG" else "jpg"), path.read_bytes()
            width, height = image.size
        else:  # the shard reader neither drops alpha nor applies EXIF rotation
            rgb = _to_rgb(ImageOps.exif_transpose(image))
            buffer = io.BytesIO()
            if source_format == "JPEG":  # keep a photo a JPEG; PNG would be ~5x larger
                ext = "jpg"
                rgb.save(buffer, format="JPEG", quality=95)
            else:
                ext = "png"
                rgb.save(buffer, format="PNG", compress_level=6)
            data = buffer.getvalue()
            width, height = rgb.size
    meta = {
        "caption": row.caption,
        "fps": None,
        "frames": 1,
        "width": width,
        "height": height,
        "source": os.path.abspath(path),
    }
    return {ext: data, "json": json.dumps(meta, sort_keys=True).encode("utf-8")}


def _pack_row(
    row: ManifestRow, base: Path, key: str, max_frames: int, max_pixels: int
) -> tuple[dict[str, bytes | str], str]:
    """The shard record of ``row`` and its kind ("video" / "image"); ``_RowError`` or any
    decoding error when the file cannot be used."""
    path = Path(row.path).expanduser()
    if not path.is_absolute():
        path = base / path
    suffix = path.suffix.lower()
    if suffix not in PACK_VIDEO_EXTENSIONS + PACK_IMAGE_EXTENSIONS:
        raise _RowError(
            f"not a video ({', '.join(PACK_VIDEO_EXTENSIONS)}) "
            f"or image ({', '.join(PACK_IMAGE_EXTENSIONS)}): {suffix or 'no extension'}"
        )
    if not path.is_file():
        raise _RowError(f"file not found: {path}")
    if suffix in PACK_IMAGE_EXTENSIONS:
        return {"__key__": key, **_image_record(path, row, max_pixels)}, "image"
    return {"__key__": key, **_video_record(path, row, max_frames)}, "video"


def _reason(exc: Exception) -> str:
    """One short line: ffmpeg and PIL errors can span many lines."""
    text = str(exc) if isinstance(exc, _RowError) else f"{type(exc).__name__}: {exc}"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first if len(first) <= 300 else first[:297] + "..."


# --------------------------------------------------------------------------- packing


def _prepare_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise PermissionError(f"output folder is not writable: {out}")


def pack_manifest(
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    shard_size: int = 1000,
    prefix: str = "data",
    progress: bool = True,
    max_frames: int | None = None,
    max_pixels: int | None = None,
) -> PackReport:
    """Pack the videos and images of a manifest into ``out_dir/{prefix}-000000.tar``, ...

    Videos are cut to [start, end) seconds (frame i at i / fps of the file) and re-encoded
    as H.264 MP4 (``encode_video_bytes``, crf 12); an uncut .mp4 is stored unchanged.
    Each is decoded fully (up to ``end``) first: a truncated file is refused. Images are
    stored as PNG or JPEG in RGB. Unusable rows are logged and reported, never raised;
    ``out_dir/pack_report.json`` holds the counts and failures.

    Args:
        max_frames: refuse clips of more frames (None: ``MAX_FRAMES``; the training
            reader refuses more than that too unless it is given a larger limit).
        max_pixels: refuse images of more pixels, before decoding them (None:
            ``MAX_IMAGE_PIXELS``).

    Raises:
        ValueError: shard_size < 1, max_frames or max_pixels < 1, a prefix that is not
            ``[A-Za-z0-9][A-Za-z0-9_-]*``, an unknown manifest type, a manifest without rows.
        OSError: a missing manifest, an output folder that cannot be written.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    max_frames = MAX_FRAMES if max_frames is None else max_frames
    max_pixels = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if max_frames < 1 or max_pixels < 1:
        raise ValueError(f"max_frames and max_pixels must be >= 1, got {max_frames}, {max_pixels}")
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"prefix must be letters, digits, '-' or '_' (it starts every key), got {prefix!r}"
        )
    manifest = Path(manifest_path)
    rows, failures = read_manifest(manifest)
    out = Path(out_dir)
    _prepare_out_dir(out)
    for line, path, reason in failures:
        logger.warning("skipping manifest line %d (%s): %s", line, path or "no path", reason)

    counts = {"video": 0, "image": 0}

    def records() -> Iterator[dict[str, bytes | str]]:
        for row in tqdm(rows, disable=not progress, desc="pack", unit="file"):
            try:
                key = f"{prefix}-{row.line:08d}"
                record, kind = _pack_row(row, manifest.parent, key, max_frames, max_pixels)
            except Exception as exc:  # one bad file must never stop the pack
                reason = _reason(exc)
                failures.append((row.line, row.path, reason))
                logger.warning("skipping %s (manifest line %d): %s", row.path, row.line, reason)
                continue
            counts[kind] += 1
            yield record

    shards = write_records(records(), out, shard_size, prefix, progress=False)
    written = counts["video"] + counts["image"]
    stale = sorted(
        p.name
        for p in out.glob(f"{prefix}-*.tar")
        if re.fullmatch(rf"{re.escape(prefix)}-\d{{6}}\.tar", p.name) and p not in shards
    )
    if stale:
        logger.warning(
            "%s also holds %d older shard(s) this pack did not rewrite (%s, ...); a folder is "
            "read whole, so remove them or pack into an empty folder",
            out,
            len(stale),
            stale[0],
        )
    report = PackReport(
        written=written,
        shards=shards,
        failures=sorted(failures),
        videos=counts["video"],
        images=counts["image"],
        report_path=out / REPORT_NAME,
    )
    write_json_atomic(
        report.report_path, {"manifest": os.path.abspath(manifest), **report.to_dict()}
    )
    return report
