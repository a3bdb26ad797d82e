"""pipelines.video_io: round trips, atomic writes, clear errors."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image, ImageSequence

from pipelines import video_io
from pipelines.video_io import (
    MAX_FRAMES,
    SUPPORTED_EXTENSIONS,
    VideoDecodeError,
    VideoTooLargeError,
    encode_video_bytes,
    read_video,
    write_video,
)

ORANGE, BLUE, BLACK = (250, 140, 20), (40, 90, 240), (15, 15, 15)


def _clip(frames: int = 8, height: int = 64, width: int = 64) -> np.ndarray:
    """Flat palette-coloured squares on black, the kind of content the project encodes."""
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    video[:] = BLACK
    for t in range(frames):
        video[t, 10:22, 4 + 2 * t : 16 + 2 * t] = ORANGE
        video[t, 36:58, 30:52] = BLUE
    return video


def is_h264_mp4(data: bytes) -> bool:
    return b"ftyp" in data[:16] and b"avc1" in data


@pytest.fixture(params=["pyav", "ffmpeg"])
def backend(request, monkeypatch):
    """Run a test with PyAV (when installed) and with the imageio-ffmpeg fallback."""
    if request.param == "ffmpeg":
        monkeypatch.setattr(video_io, "_av", None)
    elif video_io._av is None:
        pytest.skip("PyAV is not installed")
    return request.param


def test_supported_extensions():
    assert SUPPORTED_EXTENSIONS == (".mp4", ".gif", ".webm")


def test_lossless_mp4_is_bit_exact(backend):
    clip = _clip()
    data = encode_video_bytes(clip, 8, ".mp4", lossless=True)
    frames, fps = read_video(data, ".mp4")
    assert frames.dtype == np.uint8 and frames.shape == clip.shape
    np.testing.assert_array_equal(frames, clip)
    assert fps == pytest.approx(8.0)


def test_lossless_encoding_is_deterministic():
    clip = _clip()
    assert encode_video_bytes(clip, 8, lossless=True) == encode_video_bytes(clip, 8, lossless=True)


def test_lossy_mp4_is_close(backend, tmp_path):
    clip = _clip()
    path = write_video(tmp_path / "clip.mp4", clip, 8)
    assert path == tmp_path / "clip.mp4" and path.stat().st_size > 0
    frames, fps = read_video(path)
    assert frames.shape == clip.shape  # 64x64 not resized to a macro-block multiple
    assert fps == pytest.approx(8.0)
    error = np.abs(frames.astype(int) - clip)
    assert error.mean() < 2.0
    # flat interiors keep their palette colour closely (chroma subsampling only hits edges)
    assert np.abs(frames[:, 42:52, 36:46].astype(int) - BLUE).max() <= 6
    assert is_h264_mp4(path.read_bytes())


@pytest.mark.parametrize("ext", [".gif", ".webm"])
def test_gif_and_webm_are_readable(backend, tmp_path, ext):
    clip = _clip()
    path = write_video(tmp_path / f"clip{ext}", clip, 8)
    frames, fps = read_video(path)
    assert frames.shape == clip.shape
    assert fps == pytest.approx(8.0)  # a GIF records its rate (durations: whole cs)
    if ext == ".gif":
        np.testing.assert_array_equal(frames, clip)  # < 256 colours: exact palette
    else:
        assert np.abs(frames.astype(int) - clip).mean() < 3.0
    from_bytes, _ = read_video(path.read_bytes(), ext)
    np.testing.assert_array_equal(from_bytes, frames)


def test_gif_keeps_repeated_frames(tmp_path):
    # Pillow merges identical consecutive frames; reading must restore the count
    clip = _clip(6)
    clip[2] = clip[3] = clip[1]
    frames, _ = read_video(encode_video_bytes(clip, 8, ".gif"), ".gif")
    np.testing.assert_array_equal(frames, clip)


@pytest.mark.parametrize("fps", [8, 24, 10])
def test_gif_plays_as_long_as_the_clip_and_restores_a_still_clip(fps):
    """Whole-centisecond durations that add up to n / fps (8 fps: 130, 120, … ms, not a
    constant 120 that plays 4 % fast), and the rate read back exactly, so a clip whose
    frames are all one (merged by Pillow into one frame) keeps its length."""
    clip = _clip(16)
    data = encode_video_bytes(clip, fps, ".gif")
    with Image.open(io.BytesIO(data)) as gif:
        total = sum(frame.info["duration"] for frame in ImageSequence.Iterator(gif))
    assert abs(total - 16 * 1000 / fps) < 10
    still = np.repeat(clip[:1], 16, axis=0)
    frames, rate = read_video(encode_video_bytes(still, fps, ".gif"), ".gif")
    assert rate == fps and frames.shape == still.shape


def test_webm_lossless_is_near_exact(backend):
    clip = _clip()
    frames, _ = read_video(encode_video_bytes(clip, 8, ".webm", lossless=True), ".webm")
    assert np.abs(frames.astype(int) - clip).max() <= 2


def test_odd_dimensions_are_padded_for_mp4(backend, tmp_path):
    clip = _clip(4, 33, 47)
    frames, _ = read_video(write_video(tmp_path / "odd.mp4", clip, 8))
    assert frames.shape == (4, 34, 48, 3)  # padded to even by repeating the edge
    assert np.abs(frames[:, :33, :47].astype(int) - clip).mean() < 2.0
    # the lossless encoder is 4:4:4 and keeps odd sizes exactly
    exact, _ = read_video(encode_video_bytes(clip, 8, lossless=True))
    np.testing.assert_array_equal(exact, clip)


def test_write_is_atomic_on_error(tmp_path, monkeypatch):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"previous content")

    def failing_encoder(path, frames, fps, ext, lossless):
        path.write_bytes(b"half a video")
        raise RuntimeError("encoder died")

    monkeypatch.setattr(video_io, "_encode_ffmpeg", failing_encoder)
    with pytest.raises(RuntimeError, match="encoder died"):
        write_video(target, _clip(), 8)
    assert target.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temp file left


def test_write_leaves_no_temp_files(tmp_path):
    for ext in SUPPORTED_EXTENSIONS:
        write_video(tmp_path / f"a{ext}", _clip(3), 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.mp4", "a.webm"]


def test_unknown_extension_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"'\.avi'.*\.mp4, \.gif, \.webm"):
        write_video(tmp_path / "clip.avi", _clip(2), 8)
    assert not (tmp_path / "clip.avi").exists()
    with pytest.raises(ValueError, match="mkv"):
        encode_video_bytes(_clip(2), 8, ".mkv")


@pytest.mark.parametrize(
    "frames, fps, match",
    [
        (np.zeros((2, 8, 8, 3), np.float32), 8, "uint8"),
        (np.zeros((2, 8, 8), np.uint8), 8, r"\(F, H, W, 3\)"),
        (np.zeros((0, 8, 8, 3), np.uint8), 8, r"\(F, H, W, 3\)"),
        (np.zeros((2, 8, 8, 3), np.uint8), 0, "fps"),
    ],
)
def test_bad_frames_are_rejected(frames, fps, match):
    with pytest.raises(ValueError, match=match):
        encode_video_bytes(frames, fps)


def test_lossless_gif_is_rejected():
    with pytest.raises(ValueError, match="lossless"):
        encode_video_bytes(_clip(2), 8, ".gif", lossless=True)


@pytest.mark.parametrize("data", [b"", b"not a video at all" * 10])
def test_garbage_raises_decode_error(backend, data):
    with pytest.raises(VideoDecodeError, match="cannot decode"):
        read_video(data, ".mp4")


def test_truncated_and_missing_inputs(tmp_path):
    data = encode_video_bytes(_clip(), 8, lossless=True)
    with pytest.raises(VideoDecodeError):
        read_video(data[: len(data) // 3], ".mp4")
    with pytest.raises(VideoDecodeError):
        read_video(b"GIF89a broken", ".gif")
    assert issubclass(VideoDecodeError, ValueError)
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")


# -------------------------------------------------------------------------- limits


def _two_frame_gif(durations: list[int], size: int = 16) -> bytes:
    """A GIF of an orange then a blue frame lasting ``durations`` ms: Pillow stores the
    second as one frame however long it lasts; read_video expands it."""
    frames = [Image.new("RGB", (size, size), colour) for colour in (ORANGE, BLUE)]
    buffer = io.BytesIO()
    frames[0].save(
        buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0
    )
    return buffer.getvalue()


def test_gif_bomb_is_refused_before_expanding():
    # the file: 10 ms then 655.35 s, 65,536 frames once expanded
    bomb = _two_frame_gif([10, 655_350])
    assert len(bomb) < 400
    tracemalloc.start()
    try:
        with pytest.raises(VideoTooLargeError, match=r"65,536 frames .*max_frames=4,096"):
            read_video(bomb, ".gif")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20  # the expansion would be 65,536 x 16 x 16 x 3 = 48 MiB
    assert issubclass(VideoTooLargeError, VideoDecodeError) and MAX_FRAMES == 4096


def test_gif_limit_can_be_raised_and_normal_gifs_decode_as_before():
    gif = _two_frame_gif([100, 1000])  # 1 + 10 frames at 10 fps
    with pytest.raises(VideoTooLargeError, match="11 frames .*a larger max_frames allows it"):
        read_video(gif, ".gif", max_frames=10)
    frames, fps = read_video(gif, ".gif", max_frames=11)
    assert frames.shape == (11, 16, 16, 3) and fps == pytest.approx(10.0)
    assert (frames[0] == ORANGE).all() and (frames[1:] == BLUE).all()
    with pytest.raises(VideoTooLargeError, match="max_bytes"):
        read_video(gif, ".gif", max_bytes=11 * 16 * 16 * 3 - 1)


def test_video_limits_are_checked_before_and_while_decoding(backend, monkeypatch):
    data = encode_video_bytes(_clip(8), 8, lossless=True)  # 8 frames of 64x64: 96 KiB
    with pytest.raises(VideoTooLargeError, match=r"more than max_frames=7\b"):
        read_video(data, max_frames=7)
    with pytest.raises(VideoTooLargeError, match="more than max_bytes=98,303"):
        read_video(data, max_bytes=8 * 64 * 64 * 3 - 1)
    # a container that declares no frame count is still stopped while decoding
    monkeypatch.setattr(video_io, "_declared_frames", lambda stream, rate: 0)
    with pytest.raises(VideoTooLargeError, match="8 frames decoded so far"):
        read_video(data, max_frames=7)
    np.testing.assert_array_equal(read_video(data, max_frames=8)[0], _clip(8))
