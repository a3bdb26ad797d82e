"""train.pack / `studio data pack`: real video files and images with captions become shards
that ShardDataset reads back; malformed rows and unreadable files are reported by manifest
line and skipped; shards appear only when complete."""

from __future__ import annotations

import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from pipelines.video_io import write_video
from train.pack import MAX_IMAGE_PIXELS, pack_manifest, read_manifest
from train.shards import ShardDataset, write_records
from world.shapes_world import ShapesWorld

FPS, SIZE, FRAMES = 8, 32, 16
CUT = (0.5, 1.5)  # frames i with 0.5 <= i / 8 < 1.5: 4..11


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A Shapes World clip and a clip whose frame i is grey level 20 + 10 i (both 16 frames,
    32x32, 8 fps), RGB / grayscale / RGBA PNGs, a JPEG and a corrupt .mp4, laid out under
    one folder as a user's data would be."""
    root = tmp_path_factory.mktemp("media")
    (root / "clips").mkdir()
    (root / "images").mkdir()
    world = ShapesWorld(size=SIZE, frames=FRAMES, fps=FPS, seed=3)
    write_video(root / "clips" / "a.mp4", world.sample(0, "video1").frames, FPS)
    levels = 20 + 10 * np.arange(FRAMES, dtype=np.uint8)
    write_video(
        root / "clips" / "b.mp4",
        np.broadcast_to(levels[:, None, None, None], (FRAMES, SIZE, SIZE, 3)),
        FPS,
    )
    rgb = world.sample(2, "image").frames[0]
    Image.fromarray(rgb).save(root / "images" / "rgb.png")
    Image.fromarray(rgb).save(root / "images" / "photo.jpg", quality=90)
    Image.fromarray(rgb[..., 0]).save(root / "images" / "gray.png")  # mode L
    rgba = np.full((SIZE, SIZE, 4), 255, np.uint8)
    rgba[:, : SIZE // 2, 3] = 0  # left half: white but fully transparent
    Image.fromarray(rgba).save(root / "images" / "rgba.png")
    (root / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    return root


CSV = """path,caption,start,end
clips/a.mp4,a red circle moving left,,
clips/b.mp4,"a blue square, moving right",0.5,1.5
images/rgb.png,a green triangle,,
images/gray.png,a gray image,,
images/rgba.png,a white half,,
images/photo.jpg,a photo,,
broken.mp4,a corrupt file,,
missing.mp4,a missing file,,
clips/a.mp4,start after end,2,1
clips/a.mp4,,,
clips/a.mp4,not a number,abc,
"""
# line: 2 a, 3 b (cut), 4-7 images, 8 corrupt, 9 missing, 10-12 malformed
CSV_FAILED_LINES = [8, 9, 10, 11, 12]


def jsonl_text(media) -> str:
    rows = [
        {"path": "clips/a.mp4", "caption": "a red circle moving left"},
        {
            "path": str(media / "clips" / "b.mp4"),
            "caption": "a blue square",
            "end": 1.5,
            "start": 0.5,
        },
        "{not json",
        {"path": "images/rgba.png", "caption": "a white half", "start": None},
        {"path": "broken.mp4", "caption": "a corrupt file"},
        {"caption": "no path"},
    ]
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    return "\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]) + "\n"  # a blank line 4


@pytest.fixture(scope="module")
def packed(media, tmp_path_factory):
    manifest = media / "manifest.csv"
    manifest.write_text(CSV)
    out = tmp_path_factory.mktemp("shards")
    report = pack_manifest(manifest, out, shard_size=2, progress=False)
    return report, out, {item["key"]: item for item in ShardDataset(out, frames=None, size=None)}


def to_uint8(video) -> np.ndarray:
    """(F, 3, H, W) in [-1, 1] -> (F, H, W, 3) uint8."""
    return ((video + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def test_pack_csv_report(packed, media):
    report, out, items = packed
    assert (report.written, report.failed, report.videos, report.images) == (6, 5, 2, 4)
    assert [line for line, _, _ in report.failures] == CSV_FAILED_LINES
    reasons = {line: reason for line, _, reason in report.failures}
    assert "Invalid data" in reasons[8] or "readable" in reasons[8]
    assert "not found" in reasons[9]
    assert "before end" in reasons[10]
    assert "missing caption" in reasons[11]
    assert "number" in reasons[12]
    # 6 samples, 2 per shard; only complete shards under final names, no temp files left
    assert [p.name for p in report.shards] == [f"data-00000{i}.tar" for i in range(3)]
    assert sorted(p.name for p in out.iterdir()) == [
        "data-000000.tar",
        "data-000001.tar",
        "data-000002.tar",
        "pack_report.json",
    ]
    saved = json.loads((out / "pack_report.json").read_text())
    assert (saved["written"], saved["failed"], saved["shards"]) == (
        6,
        5,
        [p.name for p in report.shards],
    )
    assert [f["line"] for f in saved["failures"]] == CSV_FAILED_LINES
    assert saved["failures"][1]["path"] == "missing.mp4"


def test_pack_reads_back_every_sample(packed, media):
    _, _, items = packed
    captions = {
        "data-00000002": "a red circle moving left",
        "data-00000003": "a blue square, moving right",
        "data-00000004": "a green triangle",
        "data-00000005": "a gray image",
        "data-00000006": "a white half",
        "data-00000007": "a photo",
    }
    assert {k: v["caption"] for k, v in items.items()} == captions
    for key, item in items.items():
        meta = item["meta"]
        assert (meta["width"], meta["height"]) == (SIZE, SIZE)
        assert item["video"].shape[-2:] == (SIZE, SIZE)
        assert os.path.isabs(meta["source"]) and os.path.exists(meta["source"]), key
    whole = items["data-00000002"]
    assert (whole["meta"]["fps"], whole["meta"]["frames"]) == (FPS, FRAMES)
    assert whole["video"].shape[0] == FRAMES and "start" not in whole["meta"]
    for key in ("data-00000004", "data-00000005", "data-00000006", "data-00000007"):
        assert items[key]["video"].shape == (1, 3, SIZE, SIZE)
        assert (items[key]["meta"]["frames"], items[key]["meta"]["fps"]) == (1, None)


def test_pack_cuts_by_timestamp(packed, media):
    _, _, items = packed
    cut = items["data-00000003"]
    # frame i is at i / fps and the cut keeps start <= t < end: exactly (end - start) * fps
    # frames, tolerance 0 (frame-index arithmetic, no seeking)
    want = round((CUT[1] - CUT[0]) * FPS)
    assert cut["video"].shape[0] == cut["meta"]["frames"] == want == 8
    assert (cut["meta"]["start"], cut["meta"]["end"], cut["meta"]["fps"]) == (*CUT, FPS)
    # and they are frames 4..11: frame i of b.mp4 is grey level 20 + 10 i (lossy, +-2 levels)
    levels = to_uint8(cut["video"]).reshape(want, -1).mean(axis=1)
    np.testing.assert_array_equal(np.round((levels - 20) / 10), np.arange(4, 12))


def test_pack_images_become_rgb(packed, media):
    _, _, items = packed
    rgb = np.asarray(Image.open(media / "images" / "rgb.png"))
    np.testing.assert_array_equal(to_uint8(items["data-00000004"]["video"])[0], rgb)
    gray = to_uint8(items["data-00000005"]["video"])[0]
    np.testing.assert_array_equal(gray, np.repeat(rgb[..., :1], 3, axis=-1))
    rgba = to_uint8(items["data-00000006"]["video"])[0]
    assert (rgba[:, : SIZE // 2] == 0).all() and (rgba[:, SIZE // 2 :] == 255).all()


def test_pack_stores_uncut_mp4_and_jpeg_unchanged(packed, media):
    report, _, _ = packed
    with tarfile.open(report.shards[0]) as tar:
        stored = tar.extractfile("data-00000002.mp4").read()
    assert stored == (media / "clips" / "a.mp4").read_bytes()
    with tarfile.open(report.shards[2]) as tar:
        assert "data-00000007.jpg" in tar.getnames()
        stored = tar.extractfile("data-00000007.jpg").read()
    assert stored == (media / "images" / "photo.jpg").read_bytes()


def test_pack_jsonl_and_deterministic_bytes(media, tmp_path):
    manifest = media / "manifest.jsonl"
    manifest.write_text(jsonl_text(media))
    rows, malformed = read_manifest(manifest)
    assert [r.line for r in rows] == [1, 2, 5, 6]
    assert [(line, reason[:12]) for line, _, reason in malformed] == [
        (3, "invalid JSON"),
        (7, "missing path"),
    ]
    first = pack_manifest(manifest, tmp_path / "one", progress=False, prefix="mine")
    again = pack_manifest(manifest, tmp_path / "two", progress=False, prefix="mine")
    assert (first.written, first.failed) == (3, 3)
    assert [line for line, _, _ in first.failures] == [3, 6, 7]
    assert [p.read_bytes() for p in first.shards] == [p.read_bytes() for p in again.shards]
    items = list(ShardDataset(tmp_path / "one", frames=None, size=None))
    assert [i["key"] for i in items] == ["mine-00000001", "mine-00000002", "mine-00000005"]
    assert items[1]["video"].shape[0] == 8


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"path": "a.png", "caption": "x", "start": 1}', "for videos"),
        ('{"path": "a.mp4", "caption": "x", "start": -1}', ">= 0"),
        ('{"path": "a.mp4", "caption": "x", "end": true}', "number"),
        ('{"path": "a.mp4", "caption": 3}', "missing caption"),
        ('["a.mp4", "x"]', "object"),
    ],
)
def test_malformed_rows(tmp_path, line, reason):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(line + "\n")
    rows, malformed = read_manifest(manifest)
    assert rows == [] and len(malformed) == 1
    assert malformed[0][0] == 1 and reason in malformed[0][2]


def test_csv_with_unquoted_comma_is_malformed(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,caption\na.mp4,a dog, running\n")
    _, malformed = read_manifest(manifest)
    assert malformed[0][0] == 2 and "quote" in malformed[0][2]


def test_interrupted_shard_is_not_left_behind(tmp_path):
    def records():
        yield {"__key__": "k0", "txt": b"a"}
        yield {"__key__": "k1", "txt": b"b"}  # shard 0 full (shard_size 2): renamed
        yield {"__key__": "k2", "txt": b"c"}
        raise RuntimeError("stopped mid-shard")

    with pytest.raises(RuntimeError):
        write_records(records(), tmp_path, shard_size=2, prefix="t", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t-000000.tar"]
    with tarfile.open(tmp_path / "t-000000.tar") as tar:
        assert tar.getnames() == ["k0.txt", "k1.txt"]


# -------------------------------------------------------------------------- refusals
def test_truncated_mp4_is_reported_not_packed(media, tmp_path):
    # noise keeps every frame large, so the first half of the file still holds whole frames
    # that ffmpeg streams without complaint: only a full decode notices the cut
    noise = np.random.default_rng(0).integers(0, 256, (FRAMES, SIZE, SIZE, 3), np.uint8)
    whole = write_video(tmp_path / "noise.mp4", noise, FPS).read_bytes()
    (tmp_path / "half.mp4").write_bytes(whole[: len(whole) // 2])
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,caption,start,end\nnoise.mp4,whole,,\nhalf.mp4,half,,\n")
    report = pack_manifest(manifest, tmp_path / "out", progress=False)
    assert (report.written, report.failed) == (1, 1)
    ((line, path, reason),) = report.failures
    assert (line, path) == (3, "half.mp4") and reason.startswith("truncated or corrupt video")
    assert [i["key"] for i in ShardDataset(tmp_path / "out", frames=None)] == ["data-00000002"]


def test_images_over_the_pixel_limit_are_refused(media, tmp_path):
    # 4608 x 4608 = 21.2 Mpx above the 16.8 Mpx default, a few kB as a 1-bit PNG; the pack
    # used to decode it (64 MB as RGB) and store it
    Image.new("1", (4608, 4608)).save(tmp_path / "huge.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        f"path,caption\n{tmp_path / 'huge.png'},huge\n{media / 'images' / 'rgb.png'},small\n"
    )
    report = pack_manifest(manifest, tmp_path / "default", progress=False)
    assert (report.written, report.failed, report.failures[0][0]) == (1, 1, 2)
    assert report.failures[0][2] == (
        f"the image is 4608x4608 = 21,233,664 pixels, more than max_pixels="
        f"{MAX_IMAGE_PIXELS:,}; raise --max-pixels to pack it"
    )
    # the limit is the caller's: lowered, the 32 x 32 image (1,024 px) is refused too
    report = pack_manifest(manifest, tmp_path / "low", progress=False, max_pixels=1000)
    assert report.written == 0
    assert "1,024 pixels, more than max_pixels=1,000" in report.failures[1][2]


GIF_TOO_LONG = (
    "65,536 frames once the GIF's frame durations are expanded, more than max_frames=4,096; "
    "raise --max-frames"
)


def test_clips_over_the_frame_limit_are_refused(media, tmp_path):
    manifest = media / "manifest.csv"
    manifest.write_text(CSV)
    report = pack_manifest(manifest, tmp_path, progress=False, max_frames=FRAMES - 1)
    reasons = {line: reason for line, _, reason in report.failures}
    assert "more than 15 frames" in reasons[2] and "--max-frames" in reasons[2]
    assert 3 not in reasons  # the cut holds 8 frames
    gif = tmp_path / "long.gif"
    frames = [Image.new("RGB", (SIZE, SIZE), colour) for colour in ("red", "blue")]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[10, 655_350])
    (tmp_path / "gif.csv").write_text(f"path,caption\n{gif},a long gif\n")
    report = pack_manifest(tmp_path / "gif.csv", tmp_path / "gif", progress=False)
    assert report.failures == [(2, str(gif), GIF_TOO_LONG)]


# -------------------------------------------------------------------------- CLI
def test_cli_pack(cli, media, tmp_path):
    manifest = media / "cli.jsonl"
    manifest.write_text(jsonl_text(media))
    out = tmp_path / "out"
    code, stdout, err = cli("data", "pack", manifest, "--out", out, "--quiet")
    assert code == 0, err
    assert stdout.strip() == (
        f"written 3, failed 3, shards 1 in {out}; report {out / 'pack_report.json'}"
    )
    low = tmp_path / "low"
    code, stdout, _ = cli(
        "data", "pack", manifest, "--out", low, "--quiet", "--max-frames", 8, "--max-pixels", 10
    )
    assert code == 0 and stdout.startswith("written 1, failed 5")  # only the 8-frame cut
    reasons = [f["reason"] for f in json.loads((low / "pack_report.json").read_text())["failures"]]
    assert any("--max-frames" in r for r in reasons) and any("--max-pixels" in r for r in reasons)


def assert_usage_error(code: int, err: str, text: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert text in lines[0], err


def test_cli_pack_errors(cli, media, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli("data", "pack", tmp_path / "nope.csv", "--out", out)
    assert_usage_error(code, err, "manifest not found")
    good = tmp_path / "m.csv"
    good.write_text(f"path,caption\n{media}/clips/a.mp4,a clip\n")
    code, _, err = cli("data", "pack", good, "--out", out, "--shard-size", 0)
    assert_usage_error(code, err, "--shard-size must be >= 1")
    (tmp_path / "m.txt").write_text("path,caption\n")
    code, _, err = cli("data", "pack", tmp_path / "m.txt", "--out", out)
    assert_usage_error(code, err, "unknown manifest type")
    (tmp_path / "empty.csv").write_text("path,caption\n")
    code, _, err = cli("data", "pack", tmp_path / "empty.csv", "--out", out)
    assert_usage_error(code, err, "no rows")
    (tmp_path / "file").write_text("")
    code, _, err = cli("data", "pack", good, "--out", tmp_path / "file" / "sub")
    assert_usage_error(code, err, "cannot create output folder")
    assert not out.exists()  # nothing was created for the failed calls
    bad = tmp_path / "bad.csv"
    bad.write_text(f"path,caption\n{media}/broken.mp4,broken\nmissing.png,gone\n")
    code, stdout, err = cli("data", "pack", bad, "--out", out, "--quiet")
    assert_usage_error(code, err, "nothing could be packed")
    assert "written 0, failed 2, shards 0" in stdout
    assert json.loads((out / "pack_report.json").read_text())["failed"] == 2
