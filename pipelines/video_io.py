"""Video encoding and decoding: MP4 (H.264), WebM (VP9) and GIF.

Two backends, one set of codec settings (``_CODECS``):

* **imageio-ffmpeg** (a declared dependency) runs the ffmpeg binary as a subprocess.
  ``write_video`` always uses it, so user-facing files get ``-movflags +faststart``.
* **PyAV** (optional) encodes and decodes in memory. When it is installed,
  ``encode_video_bytes`` and ``read_video`` use it: spawning ffmpeg costs ~40 ms per
  call, which dominates shard writing and on-the-fly decoding of 64x64 clips.

GIFs go through Pillow. Pillow merges identical consecutive frames into one longer
frame; ``read_video`` expands them again from the frame durations, at the rate our GIFs
record in a comment (another GIF's: its shortest frame's, so one whose frames are *all*
identical reads back as a single frame).

``read_video`` holds every decoded frame in memory, so it refuses input that would decode
to more than ``max_frames`` frames or ``max_bytes`` of RGB: first from what the file
declares (GIF frame durations, container frame count, frame size), then while decoding,
because a file's metadata can lie.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from .files import temp_sibling

try:  # optional fast path, see module docstring
    import av as _av
except ImportError:  # pragma: no cover - exercised by monkeypatching in tests
    _av = None

__all__ = [
    "MAX_DECODED_BYTES",
    "MAX_FPS",
    "MAX_FRAMES",
    "SUPPORTED_EXTENSIONS",
    "VideoDecodeError",
    "VideoTooLargeError",
    "encode_video_bytes",
    "read_video",
    "write_video",
]

SUPPORTED_EXTENSIONS = (".mp4", ".gif", ".webm")
# Our GIFs record their frame rate in a comment ("studio-fps=8"): durations alone, in whole
# centiseconds, cannot say it exactly.
GIF_FPS_COMMENT = "studio-fps="

# Frames per second a video may play at: past 120 no screen shows the frames, and a GIF's
# frame time is counted in 10 ms.
MAX_FPS = 120
# Default limits of ``read_video``. A 309-byte GIF whose second frame lasts 655 s expands
# to 65,536 frames (805 MB at 64x64), so what a file declares is checked before decoding.
# The defaults hold what this project makes and trains on, 64x64 to 1080p clips of seconds
# to minutes, with room to spare: 4096 frames are 2 min 16 s at 30 fps, and 2 GiB holds
# 4096 frames at 64x64 (48 MiB) or 345 frames at 1080p (11.5 s at 30 fps). Callers that
# need more pass larger ``max_frames`` / ``max_bytes`` (``studio data pack --max-frames``).
MAX_FRAMES = 4096
MAX_DECODED_BYTES = 2 * 1024**3

# (ext, lossless) -> (codec, pixel format, container, codec options). Option names are
# libav AVOptions, valid both for PyAV's ``stream.options`` and as ffmpeg CLI flags.
_CODECS: dict[tuple[str, bool], tuple[str, str, str, dict[str, str]]] = {
    # crf 12: visually lossless for flat-colour content at a few kB per clip.
    (".mp4", False): ("libx264", "yuv420p", "mp4", {"crf": "12", "preset": "medium"}),
    # libx264rgb at qp 0 is bit-exact RGB (verified by the tests); yuv444p qp 0 still
    # loses one level in the RGB<->YUV round trip, which would blur the exact palette.
    (".mp4", True): ("libx264rgb", "rgb24", "mp4", {"qp": "0", "preset": "medium"}),
    (".webm", False): (
        "libvpx-vp9",
        "yuv420p",
        "webm",
        {"crf": "24", "b": "0", "deadline": "good", "cpu-used": "4"},
    ),
    (".webm", True): ("libvpx-vp9", "yuv444p", "webm", {"lossless": "1"}),
}


class VideoDecodeError(ValueError):
    """The input is not a decodable video, or it holds zero frames."""


class VideoTooLargeError(VideoDecodeError):
    """The input would decode to more frames or bytes than the caller allows.

    ``reason`` says what exceeds which limit without naming the input, and ``limit`` is
    the ``read_video`` argument that would allow it (``"max_frames"`` or ``"max_bytes"``),
    so that callers such as ``train.pack`` can name their own flag in their message.
    """

    def __init__(self, reason: str, limit: str, name: str = "the input") -> None:
        super().__init__(f"{name} is too large to decode: {reason}; a larger {limit} allows it")
        self.reason, self.limit, self.name = reason, limit, name

    def __reduce__(self):  # picklable across data-loader workers despite the signature
        return type(self), (self.reason, self.limit, self.name)


@dataclass(frozen=True)
class _Limits:
    """``read_video``'s caps on decoded frames and decoded RGB bytes."""

    max_frames: int
    max_bytes: int

    def check(self, frames: int, nbytes: int, source: str) -> None:
        """Raise VideoTooLargeError when ``frames`` frames of ``nbytes`` RGB bytes in all
        (``source`` says where the numbers come from) exceed a limit."""
        if frames > self.max_frames:
            raise VideoTooLargeError(
                f"{frames:,} frames {source}, more than max_frames={self.max_frames:,}",
                "max_frames",
            )
        if nbytes > self.max_bytes:
            raise VideoTooLargeError(
                f"{_mib(nbytes)} of RGB frames {source}, more than "
                f"max_bytes={self.max_bytes:,} ({_mib(self.max_bytes)})",
                "max_bytes",
            )


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f} MiB"


# --------------------------------------------------------------------------- helpers


def _normalise_ext(ext: str) -> str:
    ext = ext.lower()
    if not ext.startswith("."):
        ext = "." + ext
    if ext not in SUPPORTED_EXTENSIONS:
        raise ValueError(
            f"unsupported video extension {ext!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    return ext


def _check_frames(frames: np.ndarray, fps: float) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
        raise ValueError(
            f"frames must have shape (F, H, W, 3) with F, H, W >= 1, got {frames.shape}"
        )
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    return np.ascontiguousarray(frames)


def _pad_even(frames: np.ndarray) -> np.ndarray:
    """Pad (F, H, W, 3) to even H and W by repeating the last row/column.

    yuv420p H.264 needs even sides. Padding (rather than scaling) keeps every original
    pixel unchanged; the decoded video is one row/column larger when a side was odd.
    """
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def _prepare(frames: np.ndarray, ext: str, lossless: bool) -> np.ndarray:
    if (ext, lossless) == (".mp4", False):
        return _pad_even(frames)
    return frames


def _gif_durations(n: int, fps: float) -> list[int]:
    """Frame durations in ms for Pillow. GIF stores whole centiseconds: each frame ends at its
    time rounded to one (8 fps: 130, 120, 130, … ms), so the clip lasts n / fps seconds
    instead of drifting (a constant 120 ms played 8 fps as 8.3); at least 1 cs a frame."""
    ends = [round(100.0 * (k + 1) / fps) for k in range(n)]
    return [10 * max(1, b - a) for a, b in zip([0, *ends], ends, strict=False)]


def _encode_gif(frames: np.ndarray, fps: float, target: str | Path | io.BytesIO) -> None:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(
        target,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=_gif_durations(len(images), fps),
        loop=0,
        optimize=False,
        comment=f"{GIF_FPS_COMMENT}{fps:g}".encode(),  # read_video's rate, exactly
    )


def _encode_ffmpeg(path: Path, frames: np.ndarray, fps: float, ext: str, lossless: bool) -> None:
    """Encode with the ffmpeg binary from imageio-ffmpeg to ``path`` (suffix picks the muxer)."""
    import imageio_ffmpeg

    codec, pix_fmt, _, options = _CODECS[(ext, lossless)]
    output_params = [item for key, value in options.items() for item in (f"-{key}", value)]
    if ext == ".mp4":
        # moov atom first: browsers start playing before the whole file arrives
        output_params += ["-movflags", "+faststart"]
    output_params += ["-map_metadata", "-1", "-fflags", "+bitexact"]
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec=codec,
        pix_fmt_in="rgb24",
        pix_fmt_out=pix_fmt,
        quality=None,
        macro_block_size=1,  # never resize: 64x64 must stay 64x64
        ffmpeg_log_level="error",
        output_params=output_params,
    )
    writer.send(None)
    try:
        for frame in frames:
            writer.send(frame.tobytes())
    finally:
        writer.close()


def _encode_pyav(frames: np.ndarray, fps: float, ext: str, lossless: bool) -> bytes:
    codec, pix_fmt, container_format, options = _CODECS[(ext, lossless)]
    buffer = io.BytesIO()
    with _av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(100_000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.options = dict(options)
        for frame in frames:
            container.mux(stream.encode(_av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush delayed frames
    return buffer.getvalue()


# --------------------------------------------------------------------------- writing


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path:
    """Write ``frames`` (F, H, W, 3) uint8 to ``path``; the extension picks the format.

    ``.mp4``: H.264 (libx264, yuv420p, crf 12, faststart), playable everywhere; odd
    sides are padded to even (see ``_pad_even``). ``.webm``: VP9. ``.gif``: Pillow.

    The file appears atomically: it is written to a hidden temporary sibling and renamed
    onto ``path``; on any error the temporary file is removed and ``path`` is untouched.

    Returns:
        The written path.
    """
    path = Path(path)
    ext = _normalise_ext(path.suffix)
    frames = _check_frames(frames, fps)
    tmp = temp_sibling(path, ext)  # ends in the real extension: ffmpeg picks the muxer by it
    try:
        if ext == ".gif":
            _encode_gif(frames, fps, tmp)
        else:
            _encode_ffmpeg(tmp, _prepare(frames, ext, False), fps, ext, False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def encode_video_bytes(
    frames: np.ndarray, fps: float, ext: str = ".mp4", lossless: bool = False
) -> bytes:
    """Encode ``frames`` (F, H, W, 3) uint8 into the bytes of a ``ext`` file.

    ``lossless=True`` (mp4, webm only): mp4 uses H.264 High 4:4:4 in RGB (libx264rgb,
    qp 0), which decodes bit-exactly -- training shards keep exact palette colours.
    Uses PyAV in memory when available, else ffmpeg through a temporary file.
    """
    ext = _normalise_ext(ext)
    frames = _check_frames(frames, fps)
    if ext == ".gif":
        if lossless:
            raise ValueError("lossless=True is supported for .mp4 and .webm, got '.gif'")
        buffer = io.BytesIO()
        _encode_gif(frames, fps, buffer)
        return buffer.getvalue()
    frames = _prepare(frames, ext, lossless)
    if _av is not None:
        return _encode_pyav(frames, fps, ext, lossless)
    with tempfile.TemporaryDirectory(prefix="video_io_") as tmp_dir:
        tmp = Path(tmp_dir) / f"clip{ext}"
        _encode_ffmpeg(tmp, frames, fps, ext, lossless)
        return tmp.read_bytes()


# --------------------------------------------------------------------------- reading


def _gif_fps(comment: object) -> float | None:
    """The rate ``_encode_gif`` wrote in the GIF's comment, if it is one of ours."""
    if not isinstance(comment, bytes) or not comment.startswith(GIF_FPS_COMMENT.encode()):
        return None
    try:
        fps = float(comment[len(GIF_FPS_COMMENT) :].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return fps if 0 < fps <= MAX_FPS else None


def _decode_gif(data: bytes, limits: _Limits) -> tuple[np.ndarray, float]:
    frames, durations = [], []
    with Image.open(io.BytesIO(data)) as image:
        fps = _gif_fps(image.info.get("comment"))
        frame_bytes = image.size[0] * image.size[1] * 3  # every frame is decoded at this size
        limits.check(1, frame_bytes, f"in one {image.size[0]}x{image.size[1]} frame")
        # ImageSequence rather than range(n_frames): n_frames would seek through every frame
        for frame in ImageSequence.Iterator(image):
            limits.check(len(frames) + 1, (len(frames) + 1) * frame_bytes, "in the GIF")
            frames.append(np.asarray(frame.convert("RGB")))
            durations.append(float(frame.info.get("duration") or 100.0))
    # Pillow merged runs of identical frames into one longer frame: repeat them back, at
    # our own GIFs' recorded rate, else at the shortest frame's
    base = 1000.0 / fps if fps else min(durations)
    repeats = [max(1, round(d / base)) for d in durations]
    total = sum(repeats)  # checked before np.repeat allocates it
    limits.check(total, total * frame_bytes, "once the GIF's frame durations are expanded")
    video = np.repeat(np.stack(frames), repeats, axis=0)
    return video, fps or 1000.0 / base


def _declared_frames(stream, rate: Fraction | None) -> int:
    """The frame count a PyAV ``stream`` declares (0 when unknown), never above the truth
    of an honest file: the container's count, else duration x rate less one frame (a
    duration may include the last frame's display time)."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base and rate:
        return max(0, math.floor(float(stream.duration * stream.time_base * rate)) - 1)
    return 0


def _decode_pyav(source: str | io.BytesIO, limits: _Limits) -> tuple[np.ndarray, float]:
    with _av.open(source, mode="r") as container:
        if not container.streams.video:
            raise VideoDecodeError("the input holds no video stream")
        stream = container.streams.video[0]
        # clips are tiny; threads would only contend with the data-loader workers
        stream.codec_context.thread_count = 1
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        # 1. what the container declares, before decoding anything
        frame_bytes = stream.codec_context.width * stream.codec_context.height * 3
        declared = max(1, _declared_frames(stream, rate))
        limits.check(declared, declared * frame_bytes, "declared by the container")
        # 2. what is decoded, since the declaration can lie
        frames, nbytes = [], 0
        for frame in container.decode(stream):
            nbytes += frame.width * frame.height * 3
            limits.check(len(frames) + 1, nbytes, "decoded so far")
            frames.append(frame.to_ndarray(format="rgb24"))
    if not frames:
        raise VideoDecodeError("the input holds zero decodable frames")
    fps = float(rate) if rate else float("nan")
    return np.stack(frames), fps


def _decode_ffmpeg(path: str, limits: _Limits) -> tuple[np.ndarray, float]:
    """Decode with the ffmpeg binary. Its header gives the frame size but no frame count
    (its duration is the container's, audio included), so only the size is checked before
    decoding, and the count while decoding."""
    import imageio_ffmpeg

    reader: Iterator = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    try:
        meta = next(reader)
        width, height = meta["size"]
        limits.check(1, width * height * 3, f"in one {width}x{height} frame")
        frames: list[np.ndarray] = []
        for buf in reader:
            limits.check(len(frames) + 1, (len(frames) + 1) * len(buf), "decoded so far")
            frames.append(np.frombuffer(buf, np.uint8).reshape(height, width, 3))
    finally:
        reader.close()  # stops ffmpeg when a limit ends the loop early
    if not frames:
        raise VideoDecodeError("the input holds zero decodable frames")
    return np.stack(frames), float(meta["fps"])


def read_video(
    src: str | os.PathLike | bytes,
    ext: str = ".mp4",
    *,
    max_frames: int = MAX_FRAMES,
    max_bytes: int = MAX_DECODED_BYTES,
) -> tuple[np.ndarray, float]:
    """Decode a video file or its bytes.

    Args:
        src: a path, or the file's bytes.
        ext: format of ``src`` when it is bytes (a path uses its own suffix).
        max_frames: refuse input of more frames (a GIF counts its expanded frames).
        max_bytes: refuse input whose decoded (F, H, W, 3) frames would take more bytes.
            Both are checked against what the file declares before decoding, and again
            while decoding; see ``MAX_FRAMES`` for the defaults.

    Returns:
        ``(frames, fps)`` with frames (F, H, W, 3) uint8, F >= 1.

    Raises:
        VideoTooLargeError: more than ``max_frames`` frames or ``max_bytes`` bytes (a
            ``VideoDecodeError``).
        VideoDecodeError: unreadable, truncated or empty input (a ``ValueError``).
        ValueError: unsupported extension.
        FileNotFoundError: a path that does not exist.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        data: bytes | None = bytes(src)
        path = None
        ext = _normalise_ext(ext)
        name = f"<{len(data)} bytes of {ext}>"
    else:
        path = Path(src)
        ext = _normalise_ext(path.suffix)
        if not path.is_file():
            raise FileNotFoundError(f"no such video file: {path}")
        data = None
        name = str(path)
    limits = _Limits(max_frames, max_bytes)
    try:
        if ext == ".gif":
            frames, fps = _decode_gif(data if data is not None else path.read_bytes(), limits)
        elif _av is not None:
            source = io.BytesIO(data) if data is not None else str(path)
            frames, fps = _decode_pyav(source, limits)
        elif data is None:
            frames, fps = _decode_ffmpeg(str(path), limits)
        else:
            with tempfile.TemporaryDirectory(prefix="video_io_") as tmp_dir:
                tmp = Path(tmp_dir) / f"clip{ext}"
                tmp.write_bytes(data)
                frames, fps = _decode_ffmpeg(str(tmp), limits)
    except VideoTooLargeError as exc:
        raise VideoTooLargeError(exc.reason, exc.limit, name) from None
    except VideoDecodeError as exc:
        raise VideoDecodeError(f"cannot decode {name}: {exc}") from exc
    except Exception as exc:
        raise VideoDecodeError(f"cannot decode {name}: {type(exc).__name__}: {exc}") from exc
    return frames, fps
