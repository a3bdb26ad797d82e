"""Shapes World v1: the procedural image/video world the default model learns.

Implements the contract in ``shapes_world.md`` (palette, shapes, sizes, motions, caption
grammar, training-set exclusions, reference sprites and scene changes) and the caption
phrasings of ``docs/CAPTIONS.md``. Everything scales with the canvas side S; numbers in
comments are for S = 64.

Rendering is vectorised numpy over per-frame pixel-centre coordinates (~1 ms for a
16-frame 64x64 clip), so training can render samples on the fly. Colours are written
exactly (no anti-aliasing): a detector can match pixels against the palette.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "EXCLUDED_PAIRS",
    "HELDOUT_SPRITE_PAIRS",
    "HELDOUT_SPRITE_PATTERN_SHAPES",
    "IMAGE_ONLY_COLORS",
    "MOTIONS",
    "OBJECT_COLORS",
    "PATTERNS",
    "REFERENCE_BACKGROUND",
    "SHAPES",
    "SIZES",
    "ClipSpec",
    "ObjectSpec",
    "Sample",
    "ShapesWorld",
    "box_side",
    "caption",
    "caption_vocabulary",
    "caption_words",
    "counterfactual",
    "COUNTERFACTUALS",
    "is_excluded",
    "is_heldout_sprite",
    "layout_ok",
    "pattern_cell",
    "render",
    "render_reference",
    "speed",
    "trajectory",
]

# --------------------------------------------------------------------------- contract

OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 190, 70),
    "blue": (40, 90, 240),
    "yellow": (245, 220, 40),
    "purple": (160, 60, 210),
    "orange": (250, 140, 20),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
    "beige": (230, 210, 170),
}
REFERENCE_BACKGROUND: tuple[int, int, int] = (240, 240, 240)

SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
MOTIONS = ("left", "right", "up", "down", "still")
PATTERNS = ("hstripes", "vstripes", "checker")

EXCLUDED_PAIRS = {("orange", "triangle"), ("blue", "circle")}  # (colour, shape)
IMAGE_ONLY_COLORS = {"purple"}
# Our own held-out split for reference elements (not part of the contract): these sprites
# never appear in training, so evaluation measures identity transfer, not memory. Two colour
# pairs that never form a sprite, and one pattern never drawn on one shape.
HELDOUT_SPRITE_PAIRS = {frozenset(("red", "blue")), frozenset(("green", "yellow"))}
HELDOUT_SPRITE_PATTERN_SHAPES = {("checker", "triangle")}  # (pattern, shape)

# unit screen direction (dx, dy) per motion; y grows downwards
_DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "still": (0, 0),
}

# --------------------------------------------------------------------------- caption phrasings
# Exactly the training phrasings of docs/CAPTIONS.md.

SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big"),
}
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("moving left", "slides to the left", "heads left", "going left", "travels left"),
    "right": ("moving right", "slides to the right", "heads right", "going right", "travels right"),
    "up": ("moving up", "rises", "goes up", "heads up", "climbs upward"),
    "down": ("moving down", "falls", "goes down", "heads down", "drops downward"),
    "still": ("staying still", "standing still", "not moving", "resting in place", "motionless"),
}
BACKGROUND_PHRASES = ("on a {bg} background", "against a {bg} backdrop", "over a {bg} background")
TWO_OBJECT_JOINERS = ("and", "while")
IMAGE_PREFIXES = ("", "a picture of", "an image of")
SIZE_OMIT_PROBABILITY = 0.25


# --------------------------------------------------------------------------- geometry


def box_side(size: str, canvas: int = 64) -> int:
    """Side in px of an object's bounding box: small = S*3/16 (12), large = S*11/32 (22)."""
    if size == "small":
        return max(1, round(canvas * 3 / 16))
    if size == "large":
        return max(1, round(canvas * 11 / 32))
    raise ValueError(f"unknown size {size!r}; allowed: {SIZES}")


def speed(canvas: int = 64) -> float:
    """Speed of the moving kinds in px per frame: S/32 (2)."""
    return canvas / 32


def pattern_cell(canvas: int = 64) -> float:
    """Side in px of one sprite pattern cell: S*3/64 (3)."""
    return canvas * 3 / 64


def is_excluded(shape: str, color: str, color2: str | None = None) -> bool:
    """True when a shape in ``color`` (or a sprite with either pattern colour) is an unseen pair."""
    return (color, shape) in EXCLUDED_PAIRS or (
        color2 is not None and (color2, shape) in EXCLUDED_PAIRS
    )


def is_heldout_sprite(shape: str, pattern: str, color: str, color2: str) -> bool:
    """True for the sprites kept out of training for the elements evaluation."""
    return (
        frozenset((color, color2)) in HELDOUT_SPRITE_PAIRS
        or (pattern, shape) in HELDOUT_SPRITE_PATTERN_SHAPES
    )


def _check_choice(name: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {tuple(allowed)}")


@dataclass
class ObjectSpec:
    """One object of a clip. ``x``, ``y``: top-left of its box at frame 0, in px."""

    shape: str
    color: str
    size: str
    motion: str
    x: float
    y: float
    motion_after: str | None = None  # scene change: motion used from ClipSpec.switch_frame on
    pattern: str | None = None  # sprites (reference elements): hstripes | vstripes | checker
    color2: str | None = None  # sprite's second pattern colour

    def __post_init__(self) -> None:
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("color", self.color, tuple(OBJECT_COLORS))
        _check_choice("size", self.size, SIZES)
        _check_choice("motion", self.motion, MOTIONS)
        if self.motion_after is not None:
            _check_choice("motion_after", self.motion_after, MOTIONS)
        if (self.pattern is None) != (self.color2 is None):
            raise ValueError(
                f"a sprite needs both pattern and color2, got pattern={self.pattern!r}, "
                f"color2={self.color2!r}"
            )
        if self.pattern is not None:
            _check_choice("pattern", self.pattern, PATTERNS)
            _check_choice("color2", self.color2, tuple(OBJECT_COLORS))
        # plain floats keep meta JSON-able even when numpy scalars were passed in
        self.x, self.y = float(self.x), float(self.y)

    @property
    def colors(self) -> tuple[str, ...]:
        """Every palette colour the object shows."""
        return (self.color,) if self.color2 is None else (self.color, self.color2)


@dataclass
class ClipSpec:
    """A clip (``frames`` = 1: an image) of ``size`` x ``size`` px on one background."""

    objects: list[ObjectSpec]
    background: str
    frames: int = 16
    size: int = 64
    fps: int = 8
    switch_frame: int | None = None
    condition_frames: int | None = None  # continuation: the first k frames are given

    def __post_init__(self) -> None:
        _check_choice("background", self.background, tuple(BACKGROUNDS))
        if self.frames < 1 or self.size < 1:
            raise ValueError(
                f"frames and size must be >= 1, got frames={self.frames}, size={self.size}"
            )
        if self.switch_frame is not None and not 1 <= self.switch_frame < self.frames:
            raise ValueError(
                f"switch_frame must lie in 1..frames-1 = 1..{self.frames - 1}, got {self.switch_frame}"
            )
        if self.condition_frames is not None and not 1 <= self.condition_frames < self.frames:
            raise ValueError(
                f"condition_frames must lie in 1..frames-1 = 1..{self.frames - 1}, "
                f"got {self.condition_frames}"
            )

    def to_dict(self) -> dict:
        """JSON-able dict; ``ClipSpec.from_dict`` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ClipSpec:
        """Build from ``to_dict`` output or from a sample's meta (extra keys are ignored)."""
        object_keys = {f.name for f in fields(ObjectSpec)}
        objects = [
            ObjectSpec(**{k: v for k, v in o.items() if k in object_keys}) for o in data["objects"]
        ]
        return cls(
            objects=objects,
            background=data["background"],
            frames=int(data.get("frames", 16)),
            size=int(data.get("size", 64)),
            fps=data.get("fps", 8),
            switch_frame=data.get("switch_frame"),
            condition_frames=data.get("condition_frames"),
        )


def _offsets(obj: ObjectSpec, frames: int, switch_frame: int | None, step: float) -> np.ndarray:
    """Displacement (F, 2) from frame 0. Step s (frame s-1 -> s) uses ``motion_after`` when
    s >= switch_frame, so frames 0..k-1 show the first motion and frame k the first new step."""
    velocity = np.zeros((frames, 2))
    velocity[1:] = _DIRECTIONS[obj.motion]
    if switch_frame is not None and obj.motion_after is not None:
        velocity[switch_frame:] = _DIRECTIONS[obj.motion_after]
    return np.cumsum(velocity, axis=0) * step


def trajectory(spec: ClipSpec) -> np.ndarray:
    """Top-left (x, y) of every object's box per frame: (F, n_objects, 2) float64."""
    step = speed(spec.size)
    out = np.zeros((spec.frames, len(spec.objects), 2))
    for i, obj in enumerate(spec.objects):
        out[:, i] = (obj.x, obj.y) + _offsets(obj, spec.frames, spec.switch_frame, step)
    return out


def layout_ok(spec: ClipSpec, gap: float | None = None) -> bool:
    """True when every box stays inside the canvas at every frame and, per frame, any two
    boxes are at least ``gap`` px apart (default S/32, so that objects never touch)."""
    gap = speed(spec.size) if gap is None else gap
    pos = trajectory(spec)  # (F, n, 2)
    sides = np.array([box_side(o.size, spec.size) for o in spec.objects], dtype=float)
    if (pos < 0).any() or (pos + sides[None, :, None] > spec.size).any():
        return False
    for i in range(len(sides)):
        for j in range(i + 1, len(sides)):
            apart = (pos[:, i] + sides[i] + gap <= pos[:, j]) | (
                pos[:, j] + sides[j] + gap <= pos[:, i]
            )
            if not apart.any(axis=1).all():  # separated along x or y, at every frame
                return False
    return True


# --------------------------------------------------------------------------- rendering


def _paint(
    labels: np.ndarray,
    obj: ObjectSpec,
    pos: np.ndarray,
    side: float,
    cell: float,
    label: int,
) -> None:
    """Draw ``obj`` into the label map ``labels`` (F, H, W) uint8 in place.

    ``pos`` (F, 2): box top-left per frame. The object's pixels get ``label`` (a sprite's
    second pattern colour ``label + 1``). A pixel belongs to the shape when its centre
    does. Masks are outer products of per-frame row and column terms, computed only over
    the rows/columns the box sweeps during the clip.
    """
    height, width = labels.shape[1:3]
    x0, x1 = max(0, math.floor(pos[:, 0].min())), min(width, math.ceil(pos[:, 0].max() + side))
    y0, y1 = max(0, math.floor(pos[:, 1].min())), min(height, math.ceil(pos[:, 1].max() + side))
    if x0 >= x1 or y0 >= y1:
        return  # entirely off-canvas
    region = labels[:, y0:y1, x0:x1]
    u = (np.arange(x0, x1) + 0.5)[None, :] - pos[:, :1]  # (F, w) x inside the box
    v = (np.arange(y0, y1) + 0.5)[None, :] - pos[:, 1:]  # (F, h) y inside the box
    in_x, in_y = (u >= 0) & (u < side), (v >= 0) & (v < side)
    half = side / 2
    if obj.shape == "square":
        mask = in_y[:, :, None] & in_x[:, None, :]
    elif obj.shape == "circle":
        mask = (v - half)[:, :, None] ** 2 + (u - half)[:, None, :] ** 2 <= half * half
    else:  # triangle, apex up, base on the box's bottom edge
        # Half-width at the row's lower edge (+0.5 px): the apex row is drawn (2 px wide
        # for even sides) and the bottom row spans the full box, so the triangle fills
        # its box like the other shapes do.
        half_width = np.where(in_y, (v + 0.5) / 2, -1.0)
        mask = np.abs(u - half)[:, None, :] <= half_width[:, :, None]
        mask &= in_x[:, None, :]
    np.copyto(region, label, where=mask)
    if obj.pattern is None:
        return
    # pattern cells are anchored to the box, so the pattern travels with the sprite
    row = np.floor(v / cell).astype(np.int64) % 2  # (F, h)
    col = np.floor(u / cell).astype(np.int64) % 2  # (F, w)
    if obj.pattern == "hstripes":
        second = row[:, :, None] == 1
    elif obj.pattern == "vstripes":
        second = col[:, None, :] == 1
    else:  # checker
        second = (row[:, :, None] + col[:, None, :]) % 2 == 1
    np.copyto(region, label + 1, where=mask & second)


def _draw(
    frames: int,
    size: int,
    background: tuple[int, int, int],
    objects: Sequence[ObjectSpec],
    positions: np.ndarray,
    sides: Sequence[float],
    cell: float,
) -> np.ndarray:
    """Paint ``objects`` (positions (F, n, 2)) over ``background``: (F, size, size, 3) uint8.

    Objects are painted as small integer labels and turned into colours by one palette
    lookup at the end: cheaper than writing 3-byte colours through boolean masks.
    """
    labels = np.zeros((frames, size, size), dtype=np.uint8)
    palette = [background]
    for i, obj in enumerate(objects):
        _paint(labels, obj, positions[:, i], sides[i], cell, len(palette))
        palette += [OBJECT_COLORS[c] for c in obj.colors]
    return np.take(np.array(palette, dtype=np.uint8), labels, axis=0)


def render(spec: ClipSpec) -> np.ndarray:
    """Render a clip: (F, S, S, 3) uint8, exact palette colours, objects drawn in order."""
    return render_at(spec, trajectory(spec))


def render_at(spec: ClipSpec, positions: np.ndarray) -> np.ndarray:
    """Render ``spec``'s objects at ``positions`` (F', n_objects, 2), the top-left of each
    box per frame, instead of along its trajectory: (F', S, S, 3) uint8."""
    sides = [box_side(obj.size, spec.size) for obj in spec.objects]
    return _draw(
        len(positions),
        spec.size,
        BACKGROUNDS[spec.background],
        spec.objects,
        positions,
        sides,
        pattern_cell(spec.size),
    )


def render_reference(obj: ObjectSpec, image_size: int = 64, canvas: int = 64) -> np.ndarray:
    """The reference image of a sprite: (image_size, image_size, 3) uint8.

    The sprite alone, centred on white (240, 240, 240), at the scale it has in a
    ``canvas``-sided clip times ``image_size / canvas`` (pattern cells scale alike).
    """
    scale = image_size / canvas
    side = box_side(obj.size, canvas) * scale
    corner = (image_size - side) / 2
    position = np.full((1, 1, 2), corner)
    cell = pattern_cell(canvas) * scale
    return _draw(1, image_size, REFERENCE_BACKGROUND, [obj], position, [side], cell)[0]


# --------------------------------------------------------------------------- captions


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    # "an orange circle": the only vowel-initial word that can follow the article
    return "an" if word[0] in "aeiou" else "a"


def _object_phrase(obj: ObjectSpec, rng: np.random.Generator) -> str:
    words = [obj.color, obj.shape]
    if rng.random() >= SIZE_OMIT_PROBABILITY:
        words.insert(0, _pick(rng, SIZE_WORDS[obj.size]))
    return " ".join([_article(words[0]), *words])


@functools.cache
def wordnet_motion_phrases() -> dict[str, tuple[str, ...]]:
    """Extra up/down phrasings from WordNet (world/wordnet_phrasings.py; vendored table)."""
    from .wordnet_phrasings import load_table

    return load_table()


def _said_motion(spec: ClipSpec, obj: ObjectSpec) -> str:
    """The motion a caption names: after a scene change (``switch_frame``), the new one."""
    if spec.switch_frame is not None and obj.motion_after is not None:
        return obj.motion_after
    return obj.motion


def _motion_phrases(motion: str, rng: np.random.Generator, wordnet_prob: float) -> tuple[str, ...]:
    phrases = MOTION_PHRASES[motion]
    if wordnet_prob > 0 and motion in ("up", "down") and rng.random() < wordnet_prob:
        phrases = wordnet_motion_phrases()[motion]
    return phrases


def caption(
    spec: ClipSpec,
    rng: np.random.Generator,
    refs: bool = False,
    image: bool = False,
    wordnet_prob: float = 0.0,
    structure_prob: float = 0.0,
) -> str:
    """Caption ``spec`` with the grammar of docs/CAPTIONS.md.

    ``refs``: objects are named ``<ref1>``, ``<ref2>``, ... in object order.
    ``image``: no motion phrase, optional "a picture of" / "an image of" prefix.
    With a scene change (``switch_frame``), motions are those after the switch.
    ``wordnet_prob``: chance an up or down motion is phrased from the WordNet table
    (:func:`wordnet_motion_phrases`) instead of the grammar's own list. At 0 no random draw
    is spent on it, so captions are those of the grammar alone, draw for draw.
    ``structure_prob``: chance the caption is built in another sentence structure
    (:func:`restructured_caption`: the grammar's words, other frames around them); at 0 no
    draw is spent on it either.
    """
    if structure_prob > 0 and not refs and rng.random() < structure_prob:
        return restructured_caption(spec, rng, image=image, wordnet_prob=wordnet_prob)
    parts = []
    for i, obj in enumerate(spec.objects):
        subject = f"<ref{i + 1}>" if refs else _object_phrase(obj, rng)
        if image:
            parts.append(subject)
            continue
        phrases = _motion_phrases(_said_motion(spec, obj), rng, wordnet_prob)
        parts.append(f"{subject} {_pick(rng, phrases)}")
    # "a red circle while a blue square" has no verb to hang on: images only use "and"
    joiner = "and" if image else _pick(rng, TWO_OBJECT_JOINERS)
    body = f" {joiner} ".join(parts)
    text = f"{body} {_pick(rng, BACKGROUND_PHRASES).format(bg=spec.background)}"
    if image:
        prefix = _pick(rng, IMAGE_PREFIXES)
        text = f"{prefix} {text}" if prefix else text
    return text


# Sentence structures of restructured_caption: where the background is said, how objects are
# introduced and joined, and how an object's size is placed; the words are the grammar's own
STRUCTURED_OBJECTS = (
    "{a} {size} {colour} {shape}",
    "a single {size} {colour} {shape}",
    "one {size} {colour} {shape}",
    "{a_c} {colour} {shape} that is {size}",
    "{a} {size} {shape} in {colour}",
    "{a_c} {colour} {shape} of {size} size",
)
STRUCTURED_UNSIZED_OBJECTS = (
    "{a_c} {colour} {shape}",
    "a single {colour} {shape}",
    "one {colour} {shape}",
)
STRUCTURED_VIDEO = (
    "on a {bg} background, {clauses}",
    "the background is {bg}, and {clauses}",
    "the background is {bg}; {clauses}",
    "{clauses}. the background is {bg}",
    "a {bg} scene in which {clauses}",
    "in this clip, {clauses} {bg_phrase}",
    "against a plain {bg} backdrop, {clauses}",
    "there is {ing_clauses} {bg_phrase}",
    "we see {ing_clauses} {bg_phrase}",
    "a {bg} background with {ing_clauses}",
)
STRUCTURED_IMAGE = (
    "on a {bg} background, {objects}",
    "the background is {bg}, with {objects} on it",
    "there is {objects} {bg_phrase}",
    "a {bg} picture showing {objects}",
    "we see {objects} {bg_phrase}",
)
STRUCTURED_JOINERS = (" and ", " while ", ", and ", "; meanwhile, ", " as ")


def _is_participle(phrase: str) -> bool:
    """Whether a motion phrase reads after "there is a red circle …" ("moving left", "not
    moving", "motionless"), not as a verb of its own ("rises")."""
    first = phrase.split()[0]
    return first.endswith("ing") or first in ("not", "motionless")


def restructured_caption(
    spec: ClipSpec, rng: np.random.Generator, image: bool = False, wordnet_prob: float = 0.0
) -> str:
    """A caption of ``spec`` in one of the :data:`STRUCTURED_VIDEO` (or, ``image``,
    :data:`STRUCTURED_IMAGE`) sentence structures: the grammar's words for size, colour,
    shape, motion and background, with the background said first, apart or as the scene,
    objects introduced as "there is …", "one …", "a … that is small", and joined in more ways,
    so that a model reads what the words say rather than where they stand."""
    frames = STRUCTURED_IMAGE if image else STRUCTURED_VIDEO
    frame = _pick(rng, frames)
    participles_only = "{ing_clauses}" in frame
    joiner = " and " if image or participles_only else _pick(rng, STRUCTURED_JOINERS)
    # frames and joiners that need a verb of the clause's own ("in which …", "; meanwhile, …")
    finite = not image and (
        frame.startswith(("the background is", "a {bg} scene"))
        or (len(spec.objects) > 1 and joiner in ("; meanwhile, ", " as "))
    )
    objects, clauses = [], []
    for obj in spec.objects:
        if rng.random() >= SIZE_OMIT_PROBABILITY:
            pattern = _pick(rng, STRUCTURED_OBJECTS)
            size = _pick(rng, SIZE_WORDS[obj.size])
        else:
            pattern, size = _pick(rng, STRUCTURED_UNSIZED_OBJECTS), ""
        np_ = pattern.format(
            a=_article(size or obj.color),
            a_c=_article(obj.color),
            size=size,
            colour=obj.color,
            shape=obj.shape,
        )
        objects.append(np_)
        if image:
            continue
        motion = _said_motion(spec, obj)
        phrases = _motion_phrases(motion, rng, wordnet_prob)
        if participles_only:
            phrases = tuple(p for p in phrases if _is_participle(p)) or MOTION_PHRASES[motion][:1]
        phrase = _pick(rng, phrases)
        if finite and _is_participle(phrase):  # "… in which a red circle is moving left"
            phrase = f"is {phrase}"
        clauses.append(f"{np_} {phrase}")
    body = joiner.join(objects if image else clauses)
    text = frame.format(
        bg=spec.background,
        bg_phrase=_pick(rng, BACKGROUND_PHRASES).format(bg=spec.background),
        clauses=body,
        ing_clauses=body,
        objects=body,
    )
    text = text[0].upper() + text[1:]
    text = ". ".join(part[:1].upper() + part[1:] for part in text.split(". "))
    return text + ("." if rng.random() < 0.5 else "")


def caption_vocabulary(wordnet: bool = True) -> dict[str, dict[str, tuple[str, ...]]]:
    """What the caption grammar says, slot by slot: ``{slot: {value: phrasings}}`` for the
    slots ``size``, ``colour``, ``shape``, ``motion`` and ``background``, the first phrasing
    of each value being its plain form ("moving left", "on a black background").

    The studio's vocabulary help reads this, so the words it offers are the renderer's own.
    ``wordnet``: add the WordNet up/down phrasings (:func:`wordnet_motion_phrases`), which the
    shipped model's last training step used.
    """
    extra = wordnet_motion_phrases() if wordnet else {}
    return {
        "size": dict(SIZE_WORDS),
        "colour": {c: (c,) for c in OBJECT_COLORS},
        "shape": {s: (s,) for s in SHAPES},
        "motion": {
            m: tuple(dict.fromkeys(MOTION_PHRASES[m] + tuple(extra.get(m, ())))) for m in MOTIONS
        },
        "background": {
            bg: tuple(p.format(bg=bg) for p in BACKGROUND_PHRASES) for bg in BACKGROUNDS
        },
    }


@functools.cache
def caption_words(wordnet: bool = True) -> frozenset[str]:
    """Every word a training caption can contain (lower case; ``<refN>`` placeholders aside):
    the slots of :func:`caption_vocabulary`, the articles, the joiners of two objects and the
    image prefixes."""
    phrases = [
        p for slot in caption_vocabulary(wordnet).values() for ps in slot.values() for p in ps
    ]
    phrases += [*TWO_OBJECT_JOINERS, *IMAGE_PREFIXES, "a an"]
    return frozenset(w for p in phrases for w in p.lower().split())


# --------------------------------------------------------------------------- counterfactuals
# What a caption can get wrong about a clip (VideoComp / Feint6K-style hard negatives): one
# object's colour or shape changed, its direction reversed, or — with two objects — their
# colours or motions swapped between them (binding).
COUNTERFACTUALS = ("color", "shape", "direction", "binding_color", "binding_motion")
_REVERSE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def counterfactual(spec: ClipSpec, kind: str, rng: np.random.Generator) -> ClipSpec | None:
    """``spec`` with one thing made false, or None where ``kind`` cannot apply (reversing a
    still object, binding with one object or with equal attributes). Positions stay as they
    are: only what the caption says changes, so ``caption(result, rng')`` with the same
    ``rng'`` state as the true caption differs from it in exactly that attribute."""
    _check_choice("counterfactual", kind, COUNTERFACTUALS)
    objects = [ObjectSpec(**asdict(o)) for o in spec.objects]
    if kind in ("color", "shape"):
        obj = objects[int(rng.integers(len(objects)))]
        if kind == "color":
            taken = {o.color for o in objects}
            obj.color = _pick(rng, [c for c in OBJECT_COLORS if c not in taken])
        else:
            obj.shape = _pick(rng, [sh for sh in SHAPES if sh != obj.shape])
    elif kind == "direction":
        moving = [o for o in objects if _REVERSE.get(o.motion)]
        if not moving:
            return None
        obj = moving[int(rng.integers(len(moving)))]
        obj.motion = _REVERSE[obj.motion]
    else:
        if len(objects) != 2:
            return None
        a, b = objects
        attr = "color" if kind == "binding_color" else "motion"
        if getattr(a, attr) == getattr(b, attr):
            return None
        va, vb = getattr(a, attr), getattr(b, attr)
        setattr(a, attr, vb)
        setattr(b, attr, va)
    return ClipSpec(
        objects,
        spec.background,
        spec.frames,
        spec.size,
        spec.fps,
        spec.switch_frame,
        spec.condition_frames,
    )


# --------------------------------------------------------------------------- sampling


@dataclass
class Sample:
    """A rendered sample.

    frames: (F, S, S, 3) uint8, F = 1 for images. references: (R, R, 3) uint8 images in
    placeholder order. meta: JSON-able, written as ``KEY.json`` in shards.
    """

    key: str
    frames: np.ndarray
    caption: str
    meta: dict
    references: list[np.ndarray] = field(default_factory=list)


class ShapesWorld:
    """Deterministic sampler of Shapes World samples.

    ``sample(index)`` depends only on (seed, index, kind, frames), so any worker can
    render any index without coordination.

    Kinds: ``image`` (1 frame, 1-2 objects), ``video1`` / ``video2`` (1 / 2 objects),
    ``reference`` (1-2 patterned sprites captioned ``<refN>``), ``continuation`` (the
    first k frames condition; in about half, motion switches at frame k).

    ``continuation_frames`` = (lo, hi) bounds k for continuation samples (at most the clip's
    frames - 2 when it has 4 or more) and ``switch_prob`` is the share of them that switch
    motion at frame k; the defaults (2, 8) and 0.5 are the mix's own continuation samples.
    A storyboard continues a fixed few frames (its ``context``), which a narrower range
    trains on more often.

    ``exclusions=True`` applies the training-set exclusions: no purple in any multi-frame
    clip and no orange triangle / blue circle anywhere, and no held-out sprite
    (:func:`is_heldout_sprite`) in reference samples. ``False`` lifts all of them (ground
    truth for evaluation).
    """

    KINDS = ("image", "video1", "video2", "reference", "continuation")
    DEFAULT_MIX = {
        "image": 0.3,
        "video1": 0.3,
        "video2": 0.25,
        "reference": 0.05,
        "continuation": 0.1,
    }
    MAX_ATTEMPTS = 200

    def __init__(
        self,
        size: int = 64,
        frames: int = 16,
        fps: int = 8,
        seed: int = 0,
        exclusions: bool = True,
        mix: dict[str, float] | None = None,
        continuation_frames: tuple[int, int] = (2, 8),
        switch_prob: float = 0.5,
    ) -> None:
        if size < 16:
            raise ValueError(f"size must be >= 16 px so that shapes stay recognisable, got {size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.size, self.fps, self.seed, self.exclusions = size, fps, seed, exclusions
        self.frames = self._check_frames(frames)
        mix = dict(self.DEFAULT_MIX if mix is None else mix)
        unknown = set(mix) - set(self.KINDS)
        if unknown or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError(
                f"mix must map kinds from {self.KINDS} to non-negative weights with a positive "
                f"sum, got {mix}"
            )
        total = sum(mix.values())
        self.mix = {k: mix.get(k, 0.0) / total for k in self.KINDS}
        bounds = tuple(int(v) for v in continuation_frames)
        if len(bounds) != 2 or not 1 <= bounds[0] <= bounds[1]:
            raise ValueError(
                f"continuation_frames must be (lo, hi) with 1 <= lo <= hi, got {continuation_frames}"
            )
        if not 0.0 <= switch_prob <= 1.0:
            raise ValueError(f"switch_prob must be in [0, 1], got {switch_prob}")
        self.continuation_frames, self.switch_prob = bounds, float(switch_prob)

    def _check_frames(self, frames: int) -> int:
        free = self.size - box_side("small", self.size)
        longest = int(free // speed(self.size)) + 1
        if not 2 <= frames <= longest:
            raise ValueError(
                f"frames must be in 2..{longest} for a {self.size}px canvas (a moving object "
                f"travels {speed(self.size):g} px per frame and has {free} px of room), got {frames}"
            )
        return frames

    # -- spec sampling -----------------------------------------------------------------

    def _colors(self, multi_frame: bool) -> list[str]:
        if self.exclusions and multi_frame:
            return [c for c in OBJECT_COLORS if c not in IMAGE_ONLY_COLORS]
        return list(OBJECT_COLORS)

    def _allowed(self, shape: str, color: str, color2: str | None = None) -> bool:
        return not (self.exclusions and is_excluded(shape, color, color2))

    def _sample_look(self, rng: np.random.Generator, colors: list[str], sprite: bool) -> dict:
        """Draw (shape, colour[, pattern, colour2]) uniformly among the allowed looks."""
        while True:
            look = {
                "shape": _pick(rng, SHAPES),
                "color": _pick(rng, colors),
                "size": _pick(rng, SIZES),
            }
            if sprite:
                look["pattern"] = _pick(rng, PATTERNS)
                look["color2"] = _pick(rng, [c for c in colors if c != look["color"]])
            if not self._allowed(look["shape"], look["color"], look.get("color2")):
                continue
            if (
                sprite
                and self.exclusions
                and is_heldout_sprite(look["shape"], look["pattern"], look["color"], look["color2"])
            ):
                continue
            return look

    def _sample_looks(
        self, rng: np.random.Generator, n: int, colors: list[str], sprite: bool
    ) -> list[dict]:
        """``n`` looks that a detector can tell apart: plain objects get different colours,
        sprites different colour pairs."""
        while True:
            looks = [self._sample_look(rng, colors, sprite) for _ in range(n)]
            palettes = [frozenset((lk["color"], lk.get("color2"))) for lk in looks]
            if len(set(palettes)) == n:
                return looks

    def _start(self, rng: np.random.Generator, low: float, high: float) -> float:
        # integer starts keep edges on the pixel grid whenever the speed is integral
        lo, hi = math.ceil(low), math.floor(high)
        return float(rng.integers(lo, hi + 1)) if lo <= hi else float(low)

    def sample_spec(
        self, rng: np.random.Generator, kind: str, frames: int | None = None
    ) -> ClipSpec:
        """Draw a clip layout of ``kind`` that satisfies every contract rule.

        Objects are placed so that their whole trajectory fits the canvas, and two-object
        layouts are redrawn until the boxes stay ``S/32`` px apart at every frame.
        """
        _check_choice("kind", kind, self.KINDS)
        n_frames = (
            1 if kind == "image" else self._check_frames(self.frames if frames is None else frames)
        )
        multi_frame = n_frames > 1
        colors = self._colors(multi_frame)
        sprite = kind == "reference"
        n_objects = {"video1": 1, "video2": 2}.get(kind) or int(rng.integers(1, 3))
        background = _pick(rng, tuple(BACKGROUNDS))
        switch_frame = condition = None
        if kind == "continuation":
            lo, hi = self.continuation_frames
            if n_frames < lo + 1:
                raise ValueError(
                    f"continuation needs frames >= {lo + 1} ({lo} given + 1 generated), "
                    f"got {n_frames}"
                )
            # k in lo..hi, leaving at least 2 frames to generate when the clip has 4 or more
            condition = int(rng.integers(lo, max(lo, min(hi, n_frames - 2)) + 1))
            if rng.random() < self.switch_prob:
                switch_frame = condition
        step = speed(self.size)
        for _ in range(self.MAX_ATTEMPTS):
            objects = []
            for look in self._sample_looks(rng, n_objects, colors, sprite):
                motion = _pick(rng, MOTIONS) if multi_frame else "still"
                if switch_frame is not None:
                    look["motion_after"] = _pick(rng, [m for m in MOTIONS if m != motion])
                obj = ObjectSpec(motion=motion, x=0.0, y=0.0, **look)
                offsets = _offsets(obj, n_frames, switch_frame, step)
                low = -offsets.min(axis=0)
                high = self.size - box_side(obj.size, self.size) - offsets.max(axis=0)
                if (low > high).any():
                    break  # this size/motion cannot fit the clip: draw again
                obj.x, obj.y = self._start(rng, low[0], high[0]), self._start(rng, low[1], high[1])
                objects.append(obj)
            else:
                spec = ClipSpec(
                    objects, background, n_frames, self.size, self.fps, switch_frame, condition
                )
                if n_objects == 1 or layout_ok(spec):
                    return spec
        raise RuntimeError(
            f"could not place {n_objects} objects on a {self.size}px canvas for {n_frames} frames "
            f"in {self.MAX_ATTEMPTS} attempts"
        )

    # -- samples -----------------------------------------------------------------------

    def kind_of(self, index: int) -> str:
        """The kind ``sample(index)`` draws when no kind is given (from ``mix``)."""
        rng = np.random.default_rng([self.seed, index])
        weights = np.array([self.mix[k] for k in self.KINDS])
        return self.KINDS[int(rng.choice(len(self.KINDS), p=weights))]

    def sample(self, index: int, kind: str | None = None, frames: int | None = None) -> Sample:
        """Render sample ``index``; deterministic in (seed, index, kind, frames).

        Returns a ``Sample`` with frames (F, S, S, 3) uint8 (F = 1 for images).
        """
        if index < 0:
            raise ValueError(f"index must be >= 0, got {index}")
        kind = self.kind_of(index) if kind is None else kind
        _check_choice("kind", kind, self.KINDS)
        # images have one frame whatever ``frames`` says, so it must not change their seed
        n_frames = 1 if kind == "image" else self.frames if frames is None else frames
        rng = np.random.default_rng([self.seed, index, self.KINDS.index(kind), n_frames])
        spec = self.sample_spec(rng, kind, frames=n_frames)
        is_reference = kind == "reference"
        text = caption(spec, rng, refs=is_reference, image=kind == "image")
        meta = {
            "caption": text,
            "fps": self.fps,
            "frames": spec.frames,
            "source": "shapes_world",
            "kind": kind,
            "background": spec.background,
            "objects": [asdict(o) for o in spec.objects],
            "size": self.size,
            "seed": self.seed,
            "index": index,
        }
        if kind == "continuation":
            meta["condition_frames"] = spec.condition_frames
            if spec.switch_frame is not None:
                meta["switch_frame"] = spec.switch_frame
        references = []
        if is_reference:
            references = [render_reference(o, self.size, self.size) for o in spec.objects]
            meta["references"] = [f"ref{i + 1}.png" for i in range(len(references))]
        key = f"sw{self.seed}_{index:08d}_{kind}"
        return Sample(key=key, frames=render(spec), caption=text, meta=meta, references=references)
