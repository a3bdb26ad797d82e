"""Reference elements, the user's side: placeholders, reference images of every kind, the
CLI's ``--ref`` (every bad input is one ``error:`` line, exit 2, before the model loads), the
sidecar's record of each reference, and the studio's Elements → Generate path."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.elements import (
    MAX_REFERENCES,
    REFERENCE_BACKGROUND,
    check_placeholders,
    placeholders,
    prepare_reference,
)
from studio import generate as generate_mod
from studio.errors import StudioError
from studio.gallery import Gallery
from studio.generate import (
    GenerateRequest,
    check_model_takes_references,
    max_references,
    read_references,
    request_from_sidecar,
)
from studio.jobs import element_references, submit_generate
from studio.uploads import (
    UploadLimits,
    accept_element,
    check_image,
    read_image_file,
)
from tests.test_cli import assert_one_line_error

BG = list(REFERENCE_BACKGROUND)
TWO = "<ref1> moving left and <ref2> moving up on a gray background"
ONE = "<ref1> moving left on a gray background"
LIMITS = UploadLimits(max_bytes=1_000_000, max_pixels=1_000_000)


# ---------------------------------------------------------------------------- helpers
def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def save(folder: Path, name: str, image: Image.Image) -> Path:
    path = folder / name
    image.save(path)
    return path


def sprite(size: int = 64, seed: int = 0) -> Image.Image:
    """A reference image as the contract draws it: a sprite centred on the background."""
    from world.shapes_world import ObjectSpec, render_reference

    colors = [("red", "yellow"), ("green", "blue"), ("purple", "orange")][seed % 3]
    obj = ObjectSpec(
        shape="square",
        color=colors[0],
        size="large",
        motion="still",
        x=0,
        y=0,
        pattern="vstripes",
        color2=colors[1],
    )
    return Image.fromarray(render_reference(obj, image_size=size))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` × ``height`` pixels and holds none: a
    decompression bomb's shape, built in a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def truncated_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)
    data = png(Image.fromarray(noise))
    return data[: len(data) // 2]


# ---------------------------------------------------------------------------- placeholders
def test_placeholders_are_sorted_and_unique():
    assert placeholders("<ref2> chases <ref1>, then <ref1> stops") == [1, 2]
    assert placeholders("a red circle moving left") == []
    assert placeholders("<ref1><ref3>") == [1, 3]
    assert placeholders("a preference for <ref1>") == [1]  # "ref" inside a word is text


@pytest.mark.parametrize(
    "prompt", ["<ref0> x", "<ref 1> x", "<REF1> x", "< ref1> x", "<ref01>", "<ref>", "<ref1 left"]
)
def test_malformed_placeholders_are_refused_not_ignored(prompt):
    with pytest.raises(ValueError, match=r"malformed placeholder .*write <ref1>, <ref2> or <ref3>"):
        placeholders(prompt)


@pytest.mark.parametrize(
    "prompt, n, message",
    [
        ("<ref2> moving up", 1, "the prompt uses <ref2> but only 1 reference image was given"),
        ("<ref1> moving up", 0, "the prompt uses <ref1> but no reference image was given"),
        ("<ref1> <ref3>", 2, "the prompt uses <ref3> but only 2 reference images were given"),
        ("<ref1> moving up", 2, r"reference image 2 is given but the prompt has no <ref2>"),
        ("a red circle", 1, r"reference image 1 is given but the prompt has no <ref1>"),
        ("<ref1> <ref2> <ref3>", 4, "4 reference images were given; at most 3"),
        ("<ref4> x", 3, r"uses <ref4> .*\(at most 3 references\)"),
        ("<REF1> x", 1, "malformed placeholder"),
    ],
)
def test_check_placeholders_messages(prompt, n, message):
    with pytest.raises(ValueError, match=message) as info:
        check_placeholders(prompt, n)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("prompt, n", [(TWO, 2), ("<ref1> moving right", 1), ("a red circle", 0)])
def test_check_placeholders_accepts_matching_prompts(prompt, n):
    check_placeholders(prompt, n)
    check_placeholders(prompt, n)  # idempotent: the studio and the pipeline both call it
    assert MAX_REFERENCES == 3


# ---------------------------------------------------------------------------- images
def test_prepared_reference_is_its_own_preparation():
    ref = np.asarray(sprite())
    out = prepare_reference(ref)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(prepare_reference(out), out)
    np.testing.assert_array_equal(prepare_reference(sprite()), ref)  # PIL alike
    assert out is not ref


def test_transparency_becomes_the_reference_background_not_black():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:6, 2:6] = (255, 0, 0, 255)  # an opaque red square on a transparent canvas
    rgba[0, 0] = (0, 0, 255, 128)  # half-transparent blue
    for image in (Image.fromarray(rgba, "RGBA"), rgba):
        out = prepare_reference(image, size=8)
        assert out[4, 4].tolist() == [255, 0, 0]
        assert out[7, 7].tolist() == BG
        assert out[0, 0].tolist() == [120, 120, 248]  # 0.502 blue over 240 gray
    la = Image.fromarray(
        np.stack([np.full((4, 4), 30), np.zeros((4, 4))], -1).astype(np.uint8), "LA"
    )
    assert prepare_reference(la, size=4)[0, 0].tolist() == BG
    assert prepare_reference(Image.fromarray(rgba, "RGBA").convert("RGBa"), 8)[4, 4].tolist() == [
        255,
        0,
        0,
    ]


def test_palette_images_with_and_without_transparency():
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0])
    pal.putpixel((0, 0), 0)
    assert prepare_reference(pal, 4)[0, 0].tolist() == [0, 0, 0]
    pal.info["transparency"] = 0
    out = prepare_reference(pal, 4)
    assert out[0, 0].tolist() == BG and out[1, 1].tolist() == [255, 0, 0]
    # the same through a PNG file, as a user would give it
    reread = Image.open(io.BytesIO(png(pal)))
    assert prepare_reference(reread, 4)[0, 0].tolist() == BG


@pytest.mark.parametrize(
    "image, value",
    [
        (Image.new("L", (4, 4), 100), 100),
        (Image.new("1", (4, 4), 1), 255),
        (Image.new("I;16", (4, 4), 65535), 255),
        (Image.new("I;16", (4, 4), 257 * 100), 100),
        (Image.new("I", (4, 4), 100), 100),  # fits 8 bits: read as 8-bit
        (Image.new("I", (4, 4), 257 * 100), 100),  # a 16-bit PNG as older Pillows open it
        (Image.new("F", (4, 4), 0.5), 128),
        (Image.new("F", (4, 4), 100.0), 100),
        (Image.new("CMYK", (4, 4), (0, 0, 0, 0)), 255),
        (np.full((4, 4), 100, np.uint8), 100),
        (np.full((4, 4, 1), 100, np.uint8), 100),
        (np.full((4, 4), 100 / 255), 100),
        (np.full((4, 4, 3), 100, np.int64), 100),
        (np.full((4, 4), 257 * 100, np.uint16), 100),
        (np.ones((4, 4), bool), 255),
    ],
    ids=lambda v: getattr(v, "mode", None) or str(getattr(v, "dtype", v)),
)
def test_grayscale_and_other_modes(image, value):
    out = prepare_reference(image, size=4)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert (out == value).all(), out[0, 0]


def test_16bit_png_file_keeps_its_range():
    arr = np.full((4, 4), 257 * 200, np.uint16)
    image = Image.open(io.BytesIO(png(Image.fromarray(arr))))
    assert (prepare_reference(image, 4) == 200).all()


def test_cmyk_colour():
    out = prepare_reference(Image.new("CMYK", (2, 2), (0, 255, 255, 0)), 2)
    assert out[0, 0].tolist() == [255, 0, 0]


def test_non_square_images_are_padded_centred_with_the_background():
    wide = np.zeros((2, 6, 3), np.uint8)  # black, 6 wide and 2 high
    out = prepare_reference(wide, size=6)
    assert (out[2:4] == 0).all()  # centred rows
    assert (out[:2] == 240).all() and (out[4:] == 240).all()
    tall = Image.new("RGB", (3, 6), (0, 0, 0))  # odd leftover pixel goes right
    out = prepare_reference(tall, size=6)
    assert (out[:, 1:4] == 0).all() and (out[:, :1] == 240).all() and (out[:, 4:] == 240).all()


def test_shrinking_averages_thin_stripes_and_enlarging_repeats_pixels():
    stripes = np.zeros((128, 128, 3), np.uint8)
    stripes[:, 0::2] = (255, 0, 0)
    stripes[:, 1::2] = (0, 0, 255)
    out = prepare_reference(stripes).astype(int)
    assert out.shape == (64, 64, 3)
    assert np.abs(out - [127.5, 0, 127.5]).max() <= 1  # the stripes' mean, not one of them
    small = np.asarray(sprite(16))
    np.testing.assert_array_equal(prepare_reference(small), small.repeat(4, 0).repeat(4, 1))
    odd = prepare_reference(np.asarray(sprite(48)))  # a non-integer factor: still pure colours
    colours = {tuple(c) for c in np.asarray(sprite(48)).reshape(-1, 3)}
    assert {tuple(c) for c in odd.reshape(-1, 3)} <= colours
    big = prepare_reference(sprite(256))  # the contract's sprite at 4× comes down close
    assert np.abs(big.astype(int) - np.asarray(sprite(64), int)).mean() < 8


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((5, 0), np.uint8), "empty"),
        (np.zeros((4, 4, 2), np.uint8), r"\(H, W\), \(H, W, 1\)"),
        (np.zeros((1, 4, 4, 3), np.uint8), "got shape"),
        (np.zeros(5, np.uint8), "got shape"),
        (np.full((4, 4), 2.0), r"\[0, 1\]"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.full((4, 4), 300), "0..255"),
        (np.full((4, 4), "x"), "numbers"),
        ([[1, 2], [3, 4]], "PIL image or a numpy array"),
        (Image.new("RGB", (0, 0)), "empty"),
    ],
)
def test_bad_reference_arrays(image, message):
    with pytest.raises(ValueError, match=message):
        prepare_reference(image)


def test_bad_size():
    with pytest.raises(ValueError, match="positive integer"):
        prepare_reference(np.zeros((4, 4, 3), np.uint8), size=0)


# ---------------------------------------------------------------------------- uploads
def test_check_image_keeps_alpha_when_asked():
    data = png(Image.new("RGBA", (4, 4), (255, 0, 0, 0)))
    assert check_image(data, LIMITS).mode == "RGB"  # what existing callers get
    kept = check_image(data, LIMITS, mode=None)
    assert kept.mode == "RGBA" and kept.getpixel((0, 0)) == (255, 0, 0, 0)


@pytest.mark.parametrize(
    "data, message",
    [
        (png_declaring(100_000, 100_000), "decompression bomb"),  # past Pillow's own cap
        (png_declaring(2_000, 2_000), r"4,000,000 pixels; the limit is 1,000,000"),
        (truncated_png(), "not an image the studio can open"),
        (b"just some text", "not an image the studio can open"),
    ],
)
def test_check_image_refuses_bombs_and_broken_files(data, message):
    with pytest.raises(StudioError, match=message):
        check_image(data, LIMITS, "x.png", mode=None)


def test_read_image_file(tmp_path):
    with pytest.raises(StudioError, match=f"reference image 1 not found: {tmp_path / 'no.png'}"):
        read_image_file(tmp_path / "no.png", LIMITS, "reference image 1")
    with pytest.raises(StudioError, match="is a folder, not an image"):
        read_image_file(tmp_path, LIMITS)
    big = tmp_path / "big.png"
    big.write_bytes(bytes(2_000_000))
    with pytest.raises(StudioError, match="MB; the limit is 1.0 MB"):
        read_image_file(big, LIMITS)


def test_accepted_element_is_stored_on_the_reference_background(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:6, 2:6] = (0, 200, 0, 255)
    name = accept_element(png(Image.fromarray(rgba, "RGBA")), LIMITS, "cutout.png", tmp_path)
    stored = Image.open(tmp_path / name)
    assert stored.mode == "RGB"
    assert stored.getpixel((0, 0)) == tuple(BG) and stored.getpixel((3, 3)) == (0, 200, 0)
    with pytest.raises(StudioError, match="not an image"):
        accept_element(b"text", LIMITS, "x.png", tmp_path)


# ---------------------------------------------------------------------------- generate
def test_read_references_records_each_file(tmp_path):
    a = save(tmp_path, "a.png", sprite(64, 0))
    b = save(tmp_path, "b.png", Image.new("RGBA", (30, 20), (0, 0, 0, 0)))
    refs = read_references([a, str(b)])
    assert [r.pixels.shape for r in refs] == [(64, 64, 3)] * 2
    assert (refs[1].pixels == 240).all()
    assert refs[0].record == {
        "file": str(a),
        "path": str(a.resolve()),
        "sha256": hashlib.sha256(a.read_bytes()).hexdigest(),
        "size": [64, 64],
        "bytes": a.stat().st_size,
    }
    assert refs[1].record["size"] == [30, 20]
    pixels = read_references([np.zeros((10, 10, 3), np.uint8)])[0]
    assert pixels.record["file"] is None and pixels.record["size"] == [10, 10]
    assert read_references(refs) == refs  # already read: kept
    assert read_references([a], size=128)[0].pixels.shape == (128, 128, 3)


def test_read_references_errors_name_the_reference(tmp_path):
    good = save(tmp_path, "good.png", sprite())
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(StudioError, match="4 reference images were given; at most 3"):
        read_references([good] * 4)
    with pytest.raises(StudioError, match="reference image 2: notes.png is not an image"):
        read_references([good, text])
    with pytest.raises(StudioError, match="reference image 1: .*empty"):
        read_references([np.zeros((0, 3, 3), np.uint8)])


def write_model_config(folder: Path, **config) -> Path:
    (folder / "transformer").mkdir(parents=True)
    (folder / "transformer" / "config.json").write_text(json.dumps(config))
    return folder


def test_max_references_reads_the_config_without_loading(tmp_path):
    assert max_references(write_model_config(tmp_path / "m2", max_references=2)) == 2
    assert max_references(write_model_config(tmp_path / "m0", depth=2)) == 0
    assert max_references(tmp_path / "nothing") is None
    check_model_takes_references(2, 2, "m")
    check_model_takes_references(0, 0, "m")
    check_model_takes_references(1, None, "m")  # unknown: loading the model will say why
    with pytest.raises(StudioError, match="no reference-element conditioning"):
        check_model_takes_references(1, 0, "m")
    with pytest.raises(
        StudioError, match="3 reference images were given; the model at m takes at most 2"
    ):
        check_model_takes_references(3, 2, "m")


def write_sidecar(folder: Path, refs: list[Path], **extra) -> Path:
    records = [r.record for r in read_references(refs)]
    sidecar = folder / "clip.json"
    sidecar.write_text(json.dumps({"prompt": TWO, "seed": 3, "references": records, **extra}))
    return sidecar


def test_sidecar_references_are_found_and_checked(tmp_path):
    a = save(tmp_path, "a.png", sprite(64, 0))
    b = save(tmp_path, "b.png", sprite(64, 1))
    sidecar = write_sidecar(tmp_path, [a, b])
    request = request_from_sidecar(sidecar)
    assert request.references == [str(a.resolve()), str(b.resolve())] and request.seed == 3

    # moved whole, sidecar and images together: found beside the sidecar
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in (a, b, sidecar):
        p.rename(moved / p.name)
    assert request_from_sidecar(moved / "clip.json").references == [
        str(moved / "a.png"),
        str(moved / "b.png"),
    ]
    save(moved, "b.png", sprite(64, 2))
    with pytest.raises(StudioError, match=r"reference image 2 \(.*b.png\) has changed"):
        request_from_sidecar(moved / "clip.json")
    (moved / "b.png").unlink()
    with pytest.raises(StudioError, match=r"reference image 2 \(.*b.png\) of clip.json is missing"):
        request_from_sidecar(moved / "clip.json")


def test_sidecar_with_pixel_references_cannot_be_remade(tmp_path):
    sidecar = tmp_path / "clip.json"
    record = read_references([np.zeros((4, 4, 3), np.uint8)])[0].record
    sidecar.write_text(json.dumps({"prompt": "<ref1> x", "references": [record]}))
    with pytest.raises(StudioError, match="reference image 1 was not given as a file"):
        request_from_sidecar(sidecar)


# ---------------------------------------------------------------------------- CLI errors
@pytest.fixture
def no_model_load(monkeypatch):
    """Any attempt to load a model fails the test: every error below comes before it."""

    def refuse(*a, **kw):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(generate_mod, "load_pipeline", refuse)
    monkeypatch.setattr(generate_mod.ShapesVideoPipeline, "from_pretrained", refuse)


@pytest.fixture
def ref_model(tmp_path):
    """A model folder whose config takes 3 references (nothing is loaded from it)."""
    return write_model_config(tmp_path / "model", max_references=3)


def cli_case(tmp_path, name: str) -> tuple[str, list]:
    """(prompt, refs) for each bad input."""
    good = save(tmp_path, "good.png", sprite(64, 0))
    good2 = save(tmp_path, "good2.png", sprite(64, 1))
    if name == "missing file":
        return "<ref1> moving left", [tmp_path / "nope.png"]
    if name == "directory":
        return "<ref1> moving left", [tmp_path]
    if name == "not an image":
        text = tmp_path / "notes.txt"
        text.write_text("hello")
        return "<ref1> moving left", [text]
    if name == "truncated png":
        path = tmp_path / "cut.png"
        path.write_bytes(truncated_png())
        return "<ref1> moving left", [path]
    if name == "decompression bomb":
        path = tmp_path / "bomb.png"
        path.write_bytes(png_declaring(100_000, 100_000))
        return "<ref1> moving left", [path]
    if name == "four refs":
        return "<ref1> <ref2> <ref3> <ref4>", [good, good2, good, good2]
    if name == "ref2 with one image":
        return "<ref2> moving up", [good]
    if name == "image without placeholder":
        return "<ref1> moving left and a red circle", [good, good2]
    if name == "placeholder without image":
        return "<ref1> moving left", []
    if name == "malformed placeholder":
        return "<REF1> moving left", [good]
    raise KeyError(name)


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing file", r"reference image 1 not found: .*nope.png$"),
        ("directory", r"reference image 1 is a folder, not an image"),
        (
            "not an image",
            r"reference image 1: notes.txt is not an image the studio can open: use a PNG, JPEG, WebP or BMP file$",
        ),
        (
            "truncated png",
            r"reference image 1: cut.png is not an image the studio can open: use a PNG, JPEG, WebP or BMP file$",
        ),
        ("decompression bomb", r"reference image 1: bomb.png declares more pixels .*bomb"),
        ("four refs", r"4 reference images were given; at most 3$"),
        ("ref2 with one image", r"the prompt uses <ref2> but only 1 reference image was given$"),
        ("image without placeholder", r"reference image 2 is given but the prompt has no <ref2>"),
        ("placeholder without image", r"the prompt uses <ref1> but no reference image was given"),
        ("malformed placeholder", r"malformed placeholder '<REF1>'"),
    ],
)
def test_generate_bad_references(cli, tmp_path, no_model_load, ref_model, case, pattern):
    prompt, refs = cli_case(tmp_path, case)
    out = tmp_path / "out"
    out.mkdir()
    ref_args = [a for r in refs for a in ("--ref", r)]
    code, _, err = cli("generate", prompt, *ref_args, "--out", out / "c.mp4", "--model", ref_model)
    assert_one_line_error(code, err, pattern)
    assert list(out.iterdir()) == []


def test_generate_refs_need_a_model_with_elements(cli, tmp_path, no_model_load):
    model = write_model_config(tmp_path / "t2v", depth=2)  # a text-to-video model's config
    ref = save(tmp_path, "a.png", sprite())
    code, _, err = cli(
        "generate",
        "<ref1> moving left",
        "--ref",
        ref,
        "--out",
        tmp_path / "c.mp4",
        "--model",
        model,
    )
    assert_one_line_error(code, err, f"the model at {model} has no reference-element conditioning")
    small = write_model_config(tmp_path / "one", max_references=1)
    code, _, err = cli(
        "generate", TWO, "--ref", ref, "--ref", ref, "--out", tmp_path / "c.mp4", "--model", small
    )
    assert_one_line_error(code, err, "the model at .* takes at most 1$")


def test_generate_ref_and_from_sidecar_do_not_mix(cli, tmp_path, no_model_load):
    ref = save(tmp_path, "a.png", sprite())
    code, _, err = cli(
        "generate", "--from-sidecar", tmp_path / "x.json", "--ref", ref, "--out", tmp_path / "c.mp4"
    )
    assert_one_line_error(code, err, "--ref cannot be combined with --from-sidecar")


def test_generate_help_mentions_ref(cli):
    code, out, _ = cli("generate", "--help")
    assert code == 0 and "--ref PATH" in out and "<refK>" in out


# ---------------------------------------------------------------------------- studio jobs
def test_element_references_follow_the_prompt(tmp_path):
    gallery = Gallery(tmp_path / "home")
    folder = gallery.home / "elements"
    names = [accept_element(png(sprite(64, i)), LIMITS, f"{i}.png", folder) for i in range(3)]
    assert element_references(gallery, "a red circle moving left", names) == []
    paths = element_references(gallery, TWO, names)
    assert paths == [str(folder / n) for n in names[:2]]
    with pytest.raises(StudioError, match="uses <ref2> but only 1 element is uploaded: add it"):
        element_references(gallery, TWO, names[:1])
    with pytest.raises(
        StudioError, match="reference image 2 is given but the prompt has no <ref2>"
    ):
        element_references(gallery, "<ref1> and <ref3>", names)
    with pytest.raises(StudioError, match="malformed placeholder"):
        element_references(gallery, "<ref 1>", names)
    with pytest.raises(StudioError, match="not a file name"):
        element_references(gallery, "<ref1>", ["../../etc/passwd"])
    with pytest.raises(StudioError, match="reference image 1 not found"):
        element_references(gallery, "<ref1>", ["0" * 32 + ".png"])


def test_submit_generate_passes_elements_only_to_a_model_that_takes_them(tmp_path):
    gallery = Gallery(tmp_path / "home")
    names = [
        accept_element(png(sprite(64, i)), LIMITS, f"{i}.png", gallery.home / "elements")
        for i in range(2)
    ]
    with_refs = write_model_config(tmp_path / "m", max_references=3)
    job = submit_generate(gallery, GenerateRequest(prompt=TWO), elements=names, model=with_refs)
    assert job.request["references"] == [str(gallery.home / "elements" / n) for n in names]
    GenerateRequest(**job.request)  # what the worker rebuilds
    plain = submit_generate(
        gallery, GenerateRequest(prompt="a red square"), elements=names, model=with_refs
    )
    assert plain.request["references"] == []
    text_only = write_model_config(tmp_path / "t", depth=2)
    with pytest.raises(StudioError, match="reference element"):
        submit_generate(gallery, GenerateRequest(prompt=TWO), elements=names, model=text_only)
    one = write_model_config(tmp_path / "one", max_references=1)
    with pytest.raises(StudioError, match="takes at most 1"):
        submit_generate(gallery, GenerateRequest(prompt=TWO), elements=names, model=one)


# ---------------------------------------------------------------------------- happy path
@pytest.fixture(scope="module")
def ref_pipeline_dir(text_encoder, tmp_path_factory):
    """A tiny pipeline whose transformer takes 2 references, saved like the CLI's models."""
    from tests.conftest import build_tiny_pipeline

    pipe = build_tiny_pipeline(text_encoder, 0, max_references=2)
    path = tmp_path_factory.mktemp("ref_pipeline")
    pipe.save_pretrained(path, save_text_encoder=False)
    return path


SMALL = ["--frames", "4", "--height", "16", "--width", "16", "--steps", "2", "--quiet"]


def test_generate_with_references_records_and_remakes(cli, tmp_path, ref_pipeline_dir):
    from pipelines.video_io import read_video

    a = save(tmp_path, "a.png", sprite(64, 0))
    b = save(tmp_path, "b.png", Image.new("RGBA", (40, 20), (0, 0, 255, 255)))
    out = tmp_path / "x.mp4"
    args = ["--model", ref_pipeline_dir, *SMALL]
    code, stdout, err = cli("generate", TWO, "--ref", a, "--ref", b, "--out", out, *args)
    assert code == 0, err
    record = json.loads(out.with_suffix(".json").read_text())
    assert [r["file"] for r in record["references"]] == [str(a), str(b)]
    assert [r["size"] for r in record["references"]] == [[64, 64], [40, 20]]
    assert record["references"][1]["sha256"] == hashlib.sha256(b.read_bytes()).hexdigest()

    # the references change the video
    code, _, err = cli(
        "generate", TWO, "--ref", b, "--ref", a, "--out", tmp_path / "swapped.mp4", *args
    )
    assert code == 0, err
    assert not np.array_equal(read_video(out)[0], read_video(tmp_path / "swapped.mp4")[0])

    # same sidecar, same files → same frames
    again = tmp_path / "again.mp4"
    code, _, err = cli(
        "generate", "--from-sidecar", out.with_suffix(".json"), "--out", again, "--quiet"
    )
    assert code == 0, err
    np.testing.assert_array_equal(read_video(out)[0], read_video(again)[0])

    save(tmp_path, "b.png", Image.new("RGB", (40, 20), (0, 255, 0)))
    code, _, err = cli(
        "generate", "--from-sidecar", out.with_suffix(".json"), "--out", again, "--quiet"
    )
    assert_one_line_error(code, err, r"reference image 2 \(.*b.png\) has changed since x.json")


def test_generate_api_takes_images_and_arrays(tmp_path, ref_pipeline_dir):
    from studio.generate import generate

    request = GenerateRequest(
        prompt="<ref1> moving right on a gray background",
        steps=2,
        frames=4,
        height=16,
        width=16,
        references=[np.asarray(sprite())],
    )
    result = generate(request, tmp_path / "a.mp4", model=ref_pipeline_dir)
    assert result.frames.shape == (4, 16, 16, 3)
    assert result.record["references"][0]["file"] is None
    again = generate(
        GenerateRequest(**{**request.__dict__, "references": [sprite()]}),
        tmp_path / "b.mp4",
        model=ref_pipeline_dir,
    )
    np.testing.assert_array_equal(result.frames, again.frames)  # PIL or array: same pixels


@pytest.fixture
def shipped_with_elements_model(monkeypatch, tiny_pipeline_dir, ref_pipeline_dir):
    """The package as shipped: a model without references (the tiny one) and, beside it, an
    elements model (the tiny one with references); $STUDIO_MODEL unset."""
    import studio.shipped

    monkeypatch.delenv("STUDIO_MODEL", raising=False)
    monkeypatch.setattr(studio.shipped, "DEFAULT_MODEL_DIR", tiny_pipeline_dir)
    monkeypatch.setattr(studio.shipped, "ELEMENTS_MODEL_DIR", ref_pipeline_dir)


def test_generate_with_references_runs_on_the_shipped_elements_model(
    cli, tmp_path, tiny_pipeline_dir, ref_pipeline_dir, shipped_with_elements_model
):
    """No --model: a clip with references is drawn by the elements model, one without by the
    shipped model; a model named otherwise is used as named (and refuses references)."""
    a = save(tmp_path, "a.png", sprite(64, 0))
    code, _, err = cli("generate", ONE, "--ref", a, "--out", tmp_path / "r.mp4", *SMALL)
    assert code == 0, err
    code, _, err = cli("generate", "a red square", "--out", tmp_path / "t.mp4", *SMALL)
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["model"] == str(ref_pipeline_dir)
    assert json.loads((tmp_path / "t.json").read_text())["model"] == str(tiny_pipeline_dir)

    other = tmp_path / "other_model"
    shutil.copytree(tiny_pipeline_dir, other)
    out = tmp_path / "o.mp4"
    code, _, err = cli("generate", ONE, "--ref", a, "--out", out, "--model", other, *SMALL)
    assert_one_line_error(code, err, "reference")
    assert not out.exists()


@pytest.mark.parametrize("how", ["STUDIO_MODEL", "shipped elements model"])
def test_ui_elements_go_to_a_model_that_takes_them(
    tmp_path, monkeypatch, request, ref_pipeline_dir, how
):
    pytest.importorskip("streamlit")
    from tests.test_ui import app, button, wait_done

    home = tmp_path / "home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    if how == "STUDIO_MODEL":
        monkeypatch.setenv("STUDIO_MODEL", str(ref_pipeline_dir))
    else:
        request.getfixturevalue("shipped_with_elements_model")
    gallery = Gallery(home)
    name = accept_element(png(sprite()), LIMITS, "a.png", gallery.home / "elements")
    at = app("elements")
    assert not at.warning  # the page knows the model elements run on takes them
    label = "the shipped elements model" if how != "STUDIO_MODEL" else str(ref_pipeline_dir)
    assert any(label in c.value for c in at.caption), [c.value for c in at.caption]
    at.session_state["elements"] = [name]
    at.run()
    button(at, "Insert <ref1>").click().run()
    at.switch_page("pages/generate.py").run()
    at.text_area[0].input("<ref1> moving right on a gray background").run()
    at.slider[0].set_value(2)  # steps
    button(at, "Generate").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (job,) = gallery.search(status=None)
    assert job.request["references"] == [str(gallery.home / "elements" / name)]
    wait_done(home, job.id)
    job = gallery.get(job.id)
    assert job.status == "done", job.error
    record = json.loads(gallery.path("videos", job.sidecar).read_text())
    assert record["references"][0]["sha256"].startswith(name.removesuffix(".png"))
    assert record["model"] == str(ref_pipeline_dir)


# ---------------------------------------------------------------------- studio data sprite
def test_data_sprite_draws_the_worlds_reference_and_generate_takes_it(
    cli, tmp_path, ref_pipeline_dir
):
    """The README's reference example on a fresh clone: the sprite command writes exactly
    the world's reference image, and `generate --ref` reads it."""
    from world.shapes_world import ObjectSpec, render_reference

    out = tmp_path / "sprite.png"
    look = ("--shape", "triangle", "--pattern", "checker", "--colors", "green", "orange")
    code, stdout, err = cli("data", "sprite", out, *look, "--size", "small")
    assert code == 0, err
    assert "small triangle, checker in green and orange" in stdout
    expected = render_reference(
        ObjectSpec("triangle", "green", "small", "still", 0, 0, pattern="checker", color2="orange")
    )
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["sprite.png"]  # no temporary file left
    # --out, as every other command names its output, writes the same image
    code, _, err = cli("data", "sprite", "--out", tmp_path / "same.png", *look, "--size", "small")
    assert code == 0, err
    assert (tmp_path / "same.png").read_bytes() == out.read_bytes()
    (tmp_path / "same.png").unlink()

    code, _, err = cli(
        "generate",
        "<ref1> moving left on a gray background",
        "--ref",
        out,
        "--out",
        tmp_path / "x.mp4",
        "--model",
        ref_pipeline_dir,
        *SMALL,
    )
    assert code == 0, err
    record = json.loads((tmp_path / "x.json").read_text())
    assert record["references"][0]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["s.jpg"], r"PNG.*s\.jpg"),
        (["s.png", "--colors", "red", "pink"], r"invalid choice: 'pink'.*'purple'"),
        (["missing/s.png"], r"missing"),
        ([], r"give OUT\.png \(or --out OUT\.png\)"),
        (["a.png", "--out", "b.png"], r"OUT\.png given twice"),
    ],
)
def test_data_sprite_bad_input_is_one_error_line_and_no_file(cli, tmp_path, args, pattern):
    given = [tmp_path / args[0], *args[1:]] if args else []
    code, _, err = cli("data", "sprite", *given)
    assert_one_line_error(code, err, pattern)
    assert list(tmp_path.iterdir()) == []


def test_a_long_thin_image_is_shrunk_before_it_is_padded():
    # 100 000 × 1: padding it to its square first would allocate 30 GB
    strip = np.zeros((1, 100_000, 3), np.uint8)
    out = prepare_reference(strip, size=8)
    assert out.shape == (8, 8, 3)
    assert (out[3] == 0).all()  # the strip, one row at the centre (the odd leftover below)
    assert (np.delete(out, 3, axis=0) == 240).all()  # the background everywhere else
    # below the cap a non-square image is padded first, as before (earlier sidecars' frames)
    wide = np.random.default_rng(0).integers(0, 256, (70, 100, 3), dtype=np.uint8)
    square = np.full((100, 100, 3), 240, np.uint8)
    square[15:85] = wide
    np.testing.assert_array_equal(prepare_reference(wide), prepare_reference(square))
