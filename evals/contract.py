"""The judge's contract: its own copy of ``shapes_world.md`` and the numbers its verdicts rest on.

The palettes, shapes, sizes, motions, training-set exclusions and the rules for reference
elements and scene changes are copied from the contract rather than imported from the renderer
on purpose: the judge must stay independent of ``world.shapes_world``, and
``tests/test_evals_contract.py`` checks that both agree. Also here: the detector's thresholds
(chosen for generated video), what a caption asks for (:class:`Expectation`) and
:func:`parse_caption`, which reads the training and the held-out wording alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

# ----------------------------------------------------------------------------------------------
# The contract (shapes_world.md)
# ----------------------------------------------------------------------------------------------

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
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "still")
MOVING: tuple[str, ...] = ("left", "right", "up", "down")
#: Training-set exclusions (contract): purple only in images; these pairs never rendered.
IMAGE_ONLY_COLOR = "purple"
UNSEEN_PAIRS: tuple[tuple[str, str], ...] = (("orange", "triangle"), ("blue", "circle"))

#: Box sides and speed as fractions of the canvas side S (12/64, 22/64, 2/64 at S = 64).
SMALL_SIDE_FRAC = 3 / 16
LARGE_SIDE_FRAC = 11 / 32
SPEED_FRAC = 1 / 32

#: Reference elements: a sprite is a shape filled with one of these two-colour patterns.
PATTERNS: tuple[str, ...] = ("hstripes", "vstripes", "checker")
#: The reference image: the sprite alone, centred on this colour.
REFERENCE_BACKGROUND: tuple[int, int, int] = (240, 240, 240)
REFERENCE_SIDE = 64

#: Scene changes (storyboards): an object moves at most 4 px between the last frame of a scene
#: and the first frame of the next, measured at S = STORYBOARD_REF_SIDE.
STORYBOARD_MAX_JUMP_PX = 4.0
STORYBOARD_REF_SIDE = 64

# ----------------------------------------------------------------------------------------------
# Detector thresholds (chosen for generated video: approximate colours, blur, yuv420p)
# ----------------------------------------------------------------------------------------------

#: A pixel counts as an object colour only if it is nearest to it *and* this close (RGB L2).
#: The closest two object colours (yellow/orange) are 83 apart, backgrounds ≥ 76 from each
#: other, so 80 keeps honest approximations and drops edge blends and noise.
OBJECT_COLOR_MAX_DIST = 80.0
#: Border pixels vote for a background only within this distance.
BACKGROUND_MAX_DIST = 80.0
#: The winning background must hold this share of the border votes, else "unrecognised".
BACKGROUND_MIN_SHARE = 0.5
#: Minimum component area as a fraction of a small triangle's area (72 px at S = 64) → 18 px.
MIN_AREA_FRAC_OF_SMALL_TRIANGLE = 0.25
#: Components whose box side exceeds this fraction of S are background-sized, not objects.
MAX_SIDE_FRAC = 0.6
#: Square if the fill ratio reaches this (square 1.0, disc 0.785). Measured on blurred
#: (σ = 1 px), noisy, colour-shifted, crf-28 yuv420p clips: small discs ≤ 0.86, squares ≥ 0.94.
SQUARE_MIN_FILL = 0.9
#: An object "holds its shape" when its frames show the named shape in at least this share of
#: the frames where it is seen (a triangle turning into a blob and back fails).
SHAPE_HELD_MIN_SHARE = 0.8
#: Triangle if the vertical skewness of the mask is below this (apex-up triangle −0.57,
#: disc and square 0; on the degraded clips above triangles ≤ −0.32, others ≥ −0.04) ...
TRIANGLE_MAX_SKEW = -0.2
#: ... or if the fill ratio is below this (triangle 0.5, disc 0.785).
TRIANGLE_MAX_FILL = 0.64
#: Soft-mask dead zone: alpha below this is background noise, above 1 − this is object.
SOFT_DEAD_ZONE = 0.1
#: Box side below this fraction of S is "small" (midpoint of 12 and 22 px at S = 64).
SIZE_SPLIT_FRAC = 17 / 64
#: A track is an object if it is present in at least this share of the frames.
MIN_PRESENCE = 0.5
#: Linking gate between frames, as a fraction of S (objects move S/32 per frame).
TRACK_GATE_FRAC = 0.2
#: Speed below this fraction of the contract speed (0.5 px/frame at S = 64) is "still".
STILL_MAX_SPEED_FRAC = 0.25
#: Videos larger than this side are block-averaged down first (speed, and it denoises).
MAX_WORK_SIDE = 128

THRESHOLDS: dict[str, float] = {
    "object_color_max_dist": OBJECT_COLOR_MAX_DIST,
    "background_max_dist": BACKGROUND_MAX_DIST,
    "background_min_share": BACKGROUND_MIN_SHARE,
    "min_area_frac_of_small_triangle": MIN_AREA_FRAC_OF_SMALL_TRIANGLE,
    "max_side_frac": MAX_SIDE_FRAC,
    "square_min_fill": SQUARE_MIN_FILL,
    "shape_held_min_share": SHAPE_HELD_MIN_SHARE,
    "triangle_max_skew": TRIANGLE_MAX_SKEW,
    "triangle_max_fill": TRIANGLE_MAX_FILL,
    "soft_dead_zone": SOFT_DEAD_ZONE,
    "size_split_frac": SIZE_SPLIT_FRAC,
    "min_presence": MIN_PRESENCE,
    "track_gate_frac": TRACK_GATE_FRAC,
    "still_max_speed_frac": STILL_MAX_SPEED_FRAC,
}

# ----------------------------------------------------------------------------------------------
# Expectations
# ----------------------------------------------------------------------------------------------


@dataclass
class ExpectedObject:
    """One object a caption asks for; ``size`` / ``motion`` are None when not stated."""

    color: str
    shape: str
    size: str | None = None
    motion: str | None = None

    def __post_init__(self) -> None:
        check_choice("color", self.color, tuple(OBJECT_COLORS))
        check_choice("shape", self.shape, SHAPES)
        if self.size is not None:
            check_choice("size", self.size, SIZES)
        if self.motion is not None:
            check_choice("motion", self.motion, MOTIONS)


@dataclass
class Expectation:
    """What a video should show: objects, background (None = any) and a report category."""

    objects: list[ExpectedObject]
    background: str | None
    category: str | None = None

    def __post_init__(self) -> None:
        if self.background is not None:
            check_choice("background", self.background, tuple(BACKGROUNDS))

    @classmethod
    def from_dict(cls, data: dict[str, Any], category: str | None = None) -> Expectation:
        """Build from ``{"objects": [{"color", "shape", "size"?, "motion"?}], "background"}``."""
        if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
            raise ValueError(f"expectation must be a dict with an 'objects' list, got {data!r}")
        objects = [
            ExpectedObject(
                color=o["color"], shape=o["shape"], size=o.get("size"), motion=o.get("motion")
            )
            for o in data["objects"]
        ]
        return cls(objects, data.get("background"), category or data.get("category"))

    def to_dict(self) -> dict[str, Any]:
        return {"objects": [asdict(o) for o in self.objects], "background": self.background}


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> None:
    """ValueError naming ``value`` and what is allowed unless it is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


# ----------------------------------------------------------------------------------------------
# Caption parsing
# ----------------------------------------------------------------------------------------------

_COLOR_WORDS = {c: c for c in OBJECT_COLORS} | {"violet": "purple"}
BACKGROUND_WORDS = {b: b for b in BACKGROUNDS} | {"grey": "gray"}
_SHAPE_WORDS = {
    "circle": "circle",
    "circles": "circle",
    "disc": "circle",
    "disk": "circle",
    "square": "square",
    "squares": "square",
    "triangle": "triangle",
    "triangles": "triangle",
}
_SIZE_WORDS = {
    "small": "small",
    "little": "small",
    "tiny": "small",
    "mini": "small",
    "miniature": "small",
    "large": "large",
    "big": "large",
    "huge": "large",
    "giant": "large",
}
# Motion lexicon: training phrasings (docs/CAPTIONS.md) and held-out ones. Matched with word
# boundaries on the words that follow an object, so "upper" or "bright" never count.
_MOTION_PATTERNS: dict[str, list[str]] = {
    "left": [r"\bleft(?:ward|wards)?\b"],
    "right": [r"\bright(?:ward|wards)?\b"],
    "up": [
        r"\bup(?:ward|wards)?\b",
        r"\b(?:rise|rises|rising)\b",
        r"\bclimb(?:s|ing)?\b",
        r"\bascend(?:s|ing)?\b",
        r"\b(?:to|toward|towards) the top\b",
    ],
    "down": [
        r"\bdown(?:ward|wards)?\b",
        r"\b(?:fall|falls|falling)\b",
        r"\bdrop(?:s|ping)?\b",
        r"\bsink(?:s|ing)?\b",
        r"\bdescend(?:s|ing)?\b",
        r"\b(?:to|toward|towards) the bottom\b",
    ],
    "still": [
        r"\bstill\b",
        r"\bmotionless\b",
        r"\bstationary\b",
        r"\bstatic\b",
        r"\bunmoving\b",
        r"\bimmobile\b",
        r"\bfrozen\b",
        r"\bnot moving\b",
        r"\bwithout moving\b",
        r"\b(?:resting|rests|at rest)\b",
        r"\bin place\b",
        r"\b(?:stay|stays|staying) put\b",
        r"\b(?:does not|doesn't|never|not) (?:move|moves|budge|budges|budging)\b",
        r"\b(?:hold|holds|holding) (?:its|still|position)\b",
    ],
}
_MOTION_RES = {m: [re.compile(p) for p in ps] for m, ps in _MOTION_PATTERNS.items()}
TOKEN_RE = re.compile(r"<[^>]+>|[a-z]+(?:'[a-z]+)?|[0-9]+|[,;:.!?()]")


def find_motion(words: list[str]) -> str | None:
    """The one motion named in ``words``; None if none; ValueError if they contradict."""
    text = " ".join(words)
    found = {m for m, res in _MOTION_RES.items() if any(r.search(text) for r in res)}
    if len(found) > 1:
        raise ValueError(f"contradictory motions {sorted(found)} in {text!r}")
    return found.pop() if found else None


def parse_caption(text: str) -> Expectation:
    """Parse a Shapes World caption (training or held-out phrasing) into an Expectation.

    An object is a palette colour followed within two words by a shape word, optionally
    preceded by a size word. Its motion is read from the words between it and the next
    object (for the first object, the words before it are tried too, so "Drifting left,
    a red circle ..." works). The background is the one background-palette word anywhere.
    Raises ValueError when no object can be found or the caption contradicts itself.
    """
    if not isinstance(text, str):
        raise ValueError(f"caption must be a string, got {type(text).__name__}")
    tokens = TOKEN_RE.findall(text.lower().replace("-", " ").replace("\u2019", "'"))

    # 1. Objects: (start, end) token spans with colour, shape and size.
    spans: list[tuple[int, int]] = []
    objects: list[ExpectedObject] = []
    i = 0
    while i < len(tokens):
        color = _COLOR_WORDS.get(tokens[i])
        shape_at = next(
            (j for j in range(i + 1, min(i + 3, len(tokens))) if tokens[j] in _SHAPE_WORDS),
            None,
        )
        if color is None or shape_at is None:
            i += 1
            continue
        start, size = i, None
        prev_end = spans[-1][1] if spans else 0
        for j in range(i - 1, max(prev_end, i - 3) - 1, -1):  # a size word just before
            if tokens[j] in _SIZE_WORDS:
                start, size = j, _SIZE_WORDS[tokens[j]]
                break
        for j in range(i + 1, shape_at):  # or between colour and shape ("red small circle")
            size = _SIZE_WORDS.get(tokens[j], size)
        spans.append((start, shape_at + 1))
        objects.append(ExpectedObject(color, _SHAPE_WORDS[tokens[shape_at]], size))
        i = shape_at + 1
    if not objects:
        raise ValueError(
            f"no object found in caption {text!r}: expected a colour "
            f"({', '.join(OBJECT_COLORS)}) followed by a shape ({', '.join(SHAPES)})"
        )

    # 2. Motions: the words after each object up to the next one.
    for k, (_, end) in enumerate(spans):
        stop = spans[k + 1][0] if k + 1 < len(spans) else len(tokens)
        motion = find_motion(tokens[end:stop])
        if motion is None and k == 0:
            motion = find_motion(tokens[: spans[0][0]])
        objects[k].motion = motion

    # 3. Background: any background word outside the object spans.
    inside = {j for s, e in spans for j in range(s, e)}
    backgrounds = {
        BACKGROUND_WORDS[t]
        for j, t in enumerate(tokens)
        if j not in inside and t in BACKGROUND_WORDS
    }
    if len(backgrounds) > 1:
        raise ValueError(f"caption {text!r} names several backgrounds: {sorted(backgrounds)}")
    return Expectation(objects, backgrounds.pop() if backgrounds else None)
