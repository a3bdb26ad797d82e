"""Shapes World v1 renderer against the contract (shapes_world.md) and docs/CAPTIONS.md.

The expected values below are copied from those documents on purpose, not imported from
the module under test, so a drifting constant fails here.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from world.shapes_world import (
    BACKGROUNDS,
    EXCLUDED_PAIRS,
    IMAGE_ONLY_COLORS,
    MOTIONS,
    OBJECT_COLORS,
    PATTERNS,
    SHAPES,
    SIZES,
    ClipSpec,
    ObjectSpec,
    ShapesWorld,
    box_side,
    caption,
    layout_ok,
    render,
    render_reference,
    speed,
    trajectory,
)

CONTRACT_COLORS = {
    "red": (230, 40, 40),
    "green": (40, 190, 70),
    "blue": (40, 90, 240),
    "yellow": (245, 220, 40),
    "purple": (160, 60, 210),
    "orange": (250, 140, 20),
}
CONTRACT_BACKGROUNDS = {
    "black": (15, 15, 15),
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
    "beige": (230, 210, 170),
}
STEP = {"left": (-2, 0), "right": (2, 0), "up": (0, -2), "down": (0, 2), "still": (0, 0)}

# docs/CAPTIONS.md, verbatim
SIZE_WORDS = {"small": ["small", "little", "tiny"], "large": ["large", "big"]}
MOTION_WORDS = {
    "left": ["moving left", "slides to the left", "heads left", "going left", "travels left"],
    "right": ["moving right", "slides to the right", "heads right", "going right", "travels right"],
    "up": ["moving up", "rises", "goes up", "heads up", "climbs upward"],
    "down": ["moving down", "falls", "goes down", "heads down", "drops downward"],
    "still": ["staying still", "standing still", "not moving", "resting in place", "motionless"],
}
BACKGROUND_RE = re.compile(
    r" (?:on a (\w+) background|against a (\w+) backdrop|over a (\w+) background)$"
)
PREFIX_RE = re.compile(r"^(?:a picture of |an image of )")
_alt = "|".join
OBJECT_RE = re.compile(
    rf"^(?:(?P<article>an?) (?:(?P<size>{_alt(w for ws in SIZE_WORDS.values() for w in ws)}) )?"
    rf"(?P<color>{_alt(CONTRACT_COLORS)}) (?P<shape>circle|square|triangle)|<ref(?P<ref>\d)>)"
    rf"(?: (?P<motion>{_alt(w for ws in MOTION_WORDS.values() for w in ws)}))?$"
)


def parse_caption(text: str) -> dict:
    """Parse a training caption strictly by the CAPTIONS.md grammar; fail on anything else."""
    match = BACKGROUND_RE.search(text)
    assert match, f"no background phrase in {text!r}"
    background = next(g for g in match.groups() if g)
    body = text[: match.start()]
    prefix = PREFIX_RE.match(body)
    body = body[prefix.end() :] if prefix else body
    parts, joiners = re.split(r" (?:and|while) ", body), re.findall(r" (and|while) ", body)
    objects = []
    for part in parts:
        m = OBJECT_RE.match(part)
        assert m, f"{part!r} of {text!r} is not a CAPTIONS.md object phrase"
        objects.append(m.groupdict())
    return {
        "background": background,
        "objects": objects,
        "prefix": bool(prefix),
        "joiners": joiners,
    }


def motion_of(phrase: str | None) -> str | None:
    return next((m for m, ws in MOTION_WORDS.items() if phrase in ws), None)


def colours_in(pixels: np.ndarray) -> set[tuple[int, int, int]]:
    """The distinct RGB colours of (..., 3) uint8 pixels."""
    rgb = pixels.reshape(-1, 3).astype(np.int32)
    packed = np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])
    return {(int(c >> 16), int(c >> 8 & 255), int(c & 255)) for c in packed}


def mask_of(frame: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return (frame == np.array(color, np.uint8)).all(-1)


# --------------------------------------------------------------------------- constants


def test_constants_follow_the_contract():
    assert OBJECT_COLORS == CONTRACT_COLORS
    assert BACKGROUNDS == CONTRACT_BACKGROUNDS
    assert SHAPES == ("circle", "square", "triangle")
    assert SIZES == ("small", "large")
    assert MOTIONS == ("left", "right", "up", "down", "still")
    assert PATTERNS == ("hstripes", "vstripes", "checker")
    assert EXCLUDED_PAIRS == {("orange", "triangle"), ("blue", "circle")}
    assert IMAGE_ONLY_COLORS == {"purple"}
    assert (box_side("small"), box_side("large"), speed()) == (12, 22, 2.0)
    assert (box_side("small", 32), box_side("large", 128), speed(128)) == (6, 44, 4.0)
    with pytest.raises(ValueError, match="medium"):
        box_side("medium")


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("background", list(CONTRACT_BACKGROUNDS))
def test_palette_colours_are_exact(background):
    objects = [
        ObjectSpec("square", color, "small", "still", 2 + 20 * (i % 3), 2 + 20 * (i // 3))
        for i, color in enumerate(CONTRACT_COLORS)
    ]
    frame = render(ClipSpec(objects, background, frames=1))[0]
    colours = colours_in(frame)
    assert colours == {CONTRACT_BACKGROUNDS[background], *CONTRACT_COLORS.values()}
    for color in CONTRACT_COLORS.values():
        assert mask_of(frame, color).sum() == 12 * 12


@pytest.mark.parametrize("size, side", [("small", 12), ("large", 22)])
def test_shape_geometry(size, side):
    for shape in SHAPES:
        frame = render(ClipSpec([ObjectSpec(shape, "red", size, "still", 20, 20)], "black", 1))[0]
        mask = mask_of(frame, CONTRACT_COLORS["red"])
        rows, cols = np.nonzero(mask)
        # the shape spans exactly its box
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 19 + side, 20, 19 + side)
        fill = mask.sum() / side**2
        widths = mask[20 : 20 + side].sum(axis=1)
        if shape == "square":
            assert fill == 1.0
        elif shape == "circle":
            assert 0.7 < fill < 0.85  # pi/4 = 0.785
            assert widths[0] < side and widths[side // 2] == side
            box = mask[20 : 20 + side, 20 : 20 + side]
            assert (box == box[::-1]).all() and (box == box[:, ::-1]).all()
        else:
            assert 0.45 < fill < 0.65
            assert widths[0] <= 2 and widths[-1] == side  # apex up, base on the bottom edge
            assert (np.diff(widths) >= 0).all()


@pytest.mark.parametrize("motion", MOTIONS)
def test_motion_is_two_px_per_frame(motion):
    # start where the whole 30 px path stays on the canvas
    x, y = {"left": 36, "right": 6}.get(motion, 21), {"up": 36, "down": 6}.get(motion, 21)
    spec = ClipSpec([ObjectSpec("circle", "yellow", "large", motion, x, y)], "gray", 16)
    video = render(spec)
    corners = []
    for frame in video:
        rows, cols = np.nonzero(mask_of(frame, CONTRACT_COLORS["yellow"]))
        corners.append((cols.min(), rows.min()))
    steps = np.diff(np.array(corners), axis=0)
    assert (steps == STEP[motion]).all()
    np.testing.assert_allclose(
        np.diff(trajectory(spec)[:, 0], axis=0), np.tile(STEP[motion], (15, 1))
    )


def test_pattern_cells_and_sprite_motion():
    sprite = ObjectSpec("square", "red", "large", "right", 4, 10, pattern="checker", color2="green")
    video = render(ClipSpec([sprite], "black", 4))
    red, green = CONTRACT_COLORS["red"], CONTRACT_COLORS["green"]
    for t, frame in enumerate(video):
        x0 = 4 + 2 * t
        box = frame[10:32, x0 : x0 + 22]
        # the pattern travels with the sprite: cell (0, 0) is colour 1, 3 px cells
        assert mask_of(box[:3, :3], red).all() and mask_of(box[:3, 3:6], green).all()
        assert mask_of(box[3:6, :3], green).all() and mask_of(box[3:6, 3:6], red).all()
    stripes = ObjectSpec(
        "square", "blue", "small", "still", 0, 0, pattern="hstripes", color2="yellow"
    )
    box = render(ClipSpec([stripes], "black", 1))[0, :12, :12]
    for row in range(12):
        assert mask_of(box[row], CONTRACT_COLORS["blue" if (row // 3) % 2 == 0 else "yellow"]).all()


def test_reference_image():
    sprite = ObjectSpec(
        "triangle", "green", "small", "left", 40, 3, pattern="vstripes", color2="red"
    )
    image = render_reference(sprite)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert colours_in(image) == {
        (240, 240, 240),
        CONTRACT_COLORS["green"],
        CONTRACT_COLORS["red"],
    }
    rows, cols = np.nonzero(~mask_of(image, (240, 240, 240)))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (26, 37, 26, 37)  # centred 12 px
    # the sprite looks exactly as in a clip whose box sits at the same place
    in_clip = render(ClipSpec([ObjectSpec(**{**vars(sprite), "x": 26, "y": 26})], "white", 1))[0]
    np.testing.assert_array_equal(image, in_clip)
    big = render_reference(sprite, image_size=128)
    rows, cols = np.nonzero(~mask_of(big, (240, 240, 240)))
    assert rows.max() - rows.min() + 1 == 24 and cols.max() - cols.min() + 1 == 24


def test_spec_validation():
    with pytest.raises(ValueError, match="'pink'"):
        ObjectSpec("circle", "pink", "small", "left", 0, 0)
    with pytest.raises(ValueError, match="color2"):
        ObjectSpec("circle", "red", "small", "left", 0, 0, pattern="checker")
    with pytest.raises(ValueError, match="background"):
        ClipSpec([], "purple")
    with pytest.raises(ValueError, match="switch_frame"):
        ClipSpec([], "black", frames=4, switch_frame=4)
    with pytest.raises(ValueError, match="frames must be in 2..27"):
        ShapesWorld(frames=40)
    with pytest.raises(ValueError, match="mix"):
        ShapesWorld(mix={"image": 1.0, "audio": 1.0})
    with pytest.raises(ValueError, match="kind"):
        ShapesWorld().sample(0, kind="movie")


# --------------------------------------------------------------------------- sampling


def boxes_ok(spec: ClipSpec) -> bool:
    """Independent re-statement of the layout rules on the rendered trajectory."""
    pos = trajectory(spec)
    sides = [{"small": 12, "large": 22}[o.size] for o in spec.objects]
    for i, side in enumerate(sides):
        if pos[:, i].min() < 0 or pos[:, i].max() + side > 64:
            return False
    if len(sides) == 2:
        (a, b), (sa, sb) = (pos[:, 0], pos[:, 1]), sides
        overlap_x = (a[:, 0] < b[:, 0] + sb) & (b[:, 0] < a[:, 0] + sa)
        overlap_y = (a[:, 1] < b[:, 1] + sb) & (b[:, 1] < a[:, 1] + sa)
        if (overlap_x & overlap_y).any():
            return False
    return True


@pytest.mark.parametrize("kind", ShapesWorld.KINDS)
def test_layouts_fit_and_never_overlap(kind):
    world = ShapesWorld(seed=11)
    rng = np.random.default_rng(5)
    counts = set()
    for _ in range(300):
        spec = world.sample_spec(rng, kind)
        counts.add(len(spec.objects))
        assert boxes_ok(spec) and layout_ok(spec)
    assert counts == {"video1": {1}, "video2": {2}}.get(kind, {1, 2})
    # pixel-level: every object is fully visible (constant pixel count) in every frame
    for index in range(40):
        sample = world.sample(index, kind)
        spec = ClipSpec.from_dict(sample.meta)
        np.testing.assert_array_equal(render(spec), sample.frames)
        for obj in spec.objects:
            alone = render(
                ClipSpec([obj], spec.background, spec.frames, switch_frame=spec.switch_frame)
            )
            counts_per_frame = (alone != alone[0, 0, 0]).any(-1).sum(axis=(1, 2))
            assert len(set(counts_per_frame)) == 1


PURPLE = CONTRACT_COLORS["purple"]


def has_purple(pixels: np.ndarray) -> bool:
    return bool(((pixels[..., 0] == 160) & (pixels[..., 1] == 60) & (pixels[..., 2] == 210)).any())


@pytest.mark.parametrize("kind", ShapesWorld.KINDS)
def test_exclusions_are_never_emitted(kind):
    world = ShapesWorld(seed=2024)
    seen_purple = 0
    for index in range(2000):
        sample = world.sample(index, kind)
        text, meta = sample.caption, sample.meta
        for obj in meta["objects"]:
            for color in filter(None, (obj["color"], obj["color2"])):
                assert (color, obj["shape"]) not in EXCLUDED_PAIRS, (sample.key, obj)
        assert "orange triangle" not in text and "blue circle" not in text
        if kind == "image":
            seen_purple += "purple" in text
            assert sample.frames.shape[0] == 1
            continue
        assert sample.frames.shape[0] == 16
        assert "purple" not in text and "purple" not in str(meta["objects"])
        assert not has_purple(sample.frames), sample.key
        assert not any(has_purple(r) for r in sample.references), sample.key
    if kind == "image":
        assert seen_purple > 100  # purple is image-only, not absent


def test_lifting_exclusions_shows_held_out_concepts():
    world = ShapesWorld(seed=1, exclusions=False)
    objects = [o for i in range(400) for o in world.sample(i, "video1").meta["objects"]]
    looks = {(o["color"], o["shape"]) for o in objects}
    assert {("purple", "square"), ("orange", "triangle"), ("blue", "circle")} <= looks


def test_samples_are_deterministic():
    a, b = ShapesWorld(seed=3), ShapesWorld(seed=3)
    for index in range(20):
        sa, sb = a.sample(index), b.sample(index)
        assert sa.key == sb.key and sa.caption == sb.caption and sa.meta == sb.meta
        np.testing.assert_array_equal(sa.frames, sb.frames)
        assert all(np.array_equal(x, y) for x, y in zip(sa.references, sb.references, strict=True))
    other = ShapesWorld(seed=4)
    assert [a.sample(i).caption for i in range(20)] != [other.sample(i).caption for i in range(20)]
    # kind and frames are part of the identity, not of the sequence
    assert a.sample(5, "video2").caption == a.sample(5, "video2").caption
    assert a.sample(5, "video1", frames=8).frames.shape == (8, 64, 64, 3)
    assert a.sample(5, "image", frames=8).caption == a.sample(5, "image").caption


def test_mix_and_motions():
    world = ShapesWorld(seed=0)
    kinds = [world.kind_of(i) for i in range(2000)]
    shares = {k: kinds.count(k) / len(kinds) for k in world.KINDS}
    for kind, weight in ShapesWorld.DEFAULT_MIX.items():
        assert abs(shares[kind] - weight) < 0.04
    motions = {o["motion"] for i in range(200) for o in world.sample(i, "video1").meta["objects"]}
    assert motions == set(MOTIONS)
    video_only = ShapesWorld(mix={"video1": 1.0})
    assert {video_only.kind_of(i) for i in range(50)} == {"video1"}


# --------------------------------------------------------------------------- captions


@pytest.mark.parametrize("kind", ShapesWorld.KINDS)
def test_captions_follow_captions_md(kind):
    world = ShapesWorld(seed=8)
    sized = total = 0
    for index in range(300):
        sample = world.sample(index, kind)
        meta = sample.meta
        parsed = parse_caption(sample.caption)
        assert meta["caption"] == sample.caption
        assert parsed["background"] == meta["background"]
        assert len(parsed["objects"]) == len(meta["objects"])
        if kind == "image":
            assert set(parsed["joiners"]) <= {"and"}
        else:
            assert not parsed["prefix"]
        for i, (words, obj) in enumerate(zip(parsed["objects"], meta["objects"], strict=True)):
            if kind == "reference":
                assert words["ref"] == str(i + 1)
            else:
                assert (words["color"], words["shape"]) == (obj["color"], obj["shape"])
                assert words["article"] == (
                    "an" if words["size"] is None and obj["color"] == "orange" else "a"
                )
                total += 1
                if words["size"] is not None:
                    sized += 1
                    assert words["size"] in SIZE_WORDS[obj["size"]]
            if kind == "image":
                assert words["motion"] is None
            else:
                expected = obj["motion_after"] if meta.get("switch_frame") else obj["motion"]
                assert motion_of(words["motion"]) == expected
    if total:
        assert 0.6 < sized / total < 0.9  # size omitted in about a quarter of the phrases


def test_caption_function_directly():
    spec = ClipSpec(
        [
            ObjectSpec("square", "blue", "large", "up", 5, 30),
            ObjectSpec("triangle", "yellow", "small", "right", 5, 5),
        ],
        "gray",
    )
    texts = {caption(spec, np.random.default_rng(i)) for i in range(200)}
    assert (
        "a large blue square moving up and a small yellow triangle moving right on a gray background"
        in texts
    )
    refs = caption(spec, np.random.default_rng(0), refs=True)
    assert refs.startswith("<ref1> ") and "<ref2> " in refs and "blue" not in refs
    image = caption(spec, np.random.default_rng(0), image=True)
    assert motion_of(parse_caption(image)["objects"][0]["motion"]) is None


def test_restructured_captions_say_the_layout_in_other_sentence_structures():
    from world.shapes_world import (
        MOTION_PHRASES,
        STRUCTURED_VIDEO,
        restructured_caption,
        wordnet_motion_phrases,
    )

    spec = ClipSpec(
        [
            ObjectSpec("square", "blue", "large", "up", 5, 30),
            ObjectSpec("triangle", "yellow", "small", "still", 5, 5),
        ],
        "gray",
    )
    # at 0 no draw is spent: the grammar's captions, draw for draw
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert caption(spec, a, wordnet_prob=0.5) == caption(
        spec, b, wordnet_prob=0.5, structure_prob=0.0
    )
    assert a.random() == b.random()
    up = MOTION_PHRASES["up"] + wordnet_motion_phrases()["up"]
    texts = [
        caption(spec, np.random.default_rng(i), wordnet_prob=0.5, structure_prob=1.0)
        for i in range(300)
    ]
    grammar_ends = (" background", " backdrop")
    reordered = sum(not t.rstrip(".").endswith(grammar_ends) for t in texts)
    assert reordered > 150  # the background said elsewhere than at the end
    openings = {t.split()[0].lower() for t in texts}
    assert {"on", "the", "there", "we", "a", "in", "against"} <= openings
    for text in texts:
        low = text.lower()
        assert low[0] == text[0].lower() and text[0].isupper()
        words = set(low.replace(".", " ").replace(",", " ").replace(";", " ").split())
        assert {"gray", "blue", "square", "yellow", "triangle"} <= words
        assert any(p in low for p in up) and any(p in low for p in MOTION_PHRASES["still"])
        finite = ("rises", "goes up", "heads up", "climbs upward", "moves up")
        if low.startswith(("there is", "we see")) or " background with " in low:
            assert not any(f" {p} " in f" {low} " for p in finite)  # "there is a square rises"
        if " in which " in low or low.startswith("the background is"):  # "… is moving up"
            assert not re.search(r"(square|triangle) (moving up|motionless|staying still)", low)
    assert len({t.split(",")[0] for t in texts}) > len(STRUCTURED_VIDEO)
    image = restructured_caption(spec, np.random.default_rng(0), image=True)
    assert not any(p in image for m in MOTION_PHRASES.values() for p in m)
    assert caption(spec, np.random.default_rng(0), refs=True, structure_prob=1.0).startswith(
        "<ref1> "
    )


# --------------------------------------------------------------------------- special kinds


def test_reference_samples():
    world = ShapesWorld(seed=5)
    for index in range(60):
        sample = world.sample(index, "reference")
        objects = sample.meta["objects"]
        assert len(sample.references) == len(objects) == len(sample.meta["references"])
        assert sample.meta["references"] == [f"ref{i + 1}.png" for i in range(len(objects))]
        for obj, ref in zip(objects, sample.references, strict=True):
            assert obj["pattern"] in PATTERNS and obj["color"] != obj["color2"]
            colours = colours_in(ref)
            assert colours == {
                (240, 240, 240),
                CONTRACT_COLORS[obj["color"]],
                CONTRACT_COLORS[obj["color2"]],
            }
            np.testing.assert_array_equal(ref, render_reference(ObjectSpec(**obj)))
            # both pattern colours are visible in every frame of the clip
            for color in (obj["color"], obj["color2"]):
                assert mask_of(sample.frames, CONTRACT_COLORS[color]).any(axis=(1, 2)).all()
        if len(objects) == 2:
            assert {objects[0]["color"], objects[0]["color2"]} != {
                objects[1]["color"],
                objects[1]["color2"],
            }


def test_continuation_switches_motion_at_k():
    world = ShapesWorld(seed=9)
    switched = 0
    for index in range(120):
        sample = world.sample(index, "continuation")
        meta = sample.meta
        k = meta["condition_frames"]
        assert 2 <= k <= 8
        spec = ClipSpec.from_dict(meta)
        pos = trajectory(spec)
        for i, obj in enumerate(meta["objects"]):
            steps = np.diff(pos[:, i], axis=0)  # step s-1 -> s at row s-1
            if "switch_frame" in meta:
                assert meta["switch_frame"] == k and obj["motion_after"] != obj["motion"]
                assert (steps[: k - 1] == STEP[obj["motion"]]).all()
                assert (steps[k - 1 :] == STEP[obj["motion_after"]]).all()
            else:
                assert obj["motion_after"] is None
                assert (steps == STEP[obj["motion"]]).all()
        switched += "switch_frame" in meta
        # the look is kept: the same colours before and after k
        assert colours_in(sample.frames[:k]) == colours_in(sample.frames[k:])
    assert 35 <= switched <= 85  # about half switch


def test_continuation_frames_and_switch_share_are_settable():
    """A storyboard continues a few given frames: the range of k and the share that switch
    motion are constructor arguments; every k stays in range and the switch sits at k."""
    narrow = ShapesWorld(seed=3, continuation_frames=(2, 3), switch_prob=1.0)
    for index in range(40):
        meta = narrow.sample(index, "continuation").meta
        assert meta["condition_frames"] in (2, 3)
        assert meta["switch_frame"] == meta["condition_frames"]
    never = ShapesWorld(seed=3, continuation_frames=(4, 4), switch_prob=0.0)
    metas = [never.sample(i, "continuation").meta for i in range(20)]
    assert {m["condition_frames"] for m in metas} == {4}
    assert not any("switch_frame" in m for m in metas)
    for bad in [
        {"continuation_frames": (0, 3)},
        {"continuation_frames": (4, 2)},
        {"continuation_frames": (2, 3, 4)},
        {"switch_prob": 1.5},
    ]:
        with pytest.raises(ValueError, match="continuation_frames|switch_prob"):
            ShapesWorld(**bad)
    with pytest.raises(ValueError, match="frames >= 5"):
        ShapesWorld(frames=4, continuation_frames=(4, 4)).sample(0, "continuation")


def test_other_canvas_sizes():
    world = ShapesWorld(size=32, frames=8, seed=1)
    for index in range(50):
        sample = world.sample(index)
        assert sample.frames.shape[1:] == (32, 32, 3)
        assert boxes_ok_scaled(ClipSpec.from_dict(sample.meta))


def boxes_ok_scaled(spec: ClipSpec) -> bool:
    pos = trajectory(spec)
    sides = np.array([box_side(o.size, spec.size) for o in spec.objects])
    return bool((pos >= 0).all() and (pos + sides[None, :, None] <= spec.size).all())
