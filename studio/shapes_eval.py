"""Analytical judge of Shapes World videos (``studio eval shapes DIR``).

The judge knows only the contract in ``shapes_world.md``: the two palettes, the three
shapes, the two box sizes and the five motions. It reads pixels, so it can score any video
(ground truth, or a generative model's approximate, blurry, H.264-compressed output):

1. **Background** — the border ring of every frame votes for the nearest background colour.
2. **Objects per frame** — every pixel is classified to the nearest colour of the union of
   both palettes; pixels nearest to an object colour (and within ``OBJECT_COLOR_MAX_DIST``)
   form a mask whose 8-connected components above a minimum area are object candidates,
   each coloured by the nearest object colour to its core.
3. **Shape and size** — from a soft mask (blur keeps its sums): fill ratio of the box
   (square ≈ 1, disc ≈ π/4 ≈ 0.785, triangle ≈ 0.5) plus a top-narrow test, the vertical
   skewness of the mask (an apex-up triangle has its mass low); size from the box side.
4. **Tracking** — candidates are linked across frames by nearest predicted position;
   tracks present in fewer than half of the frames are noise.
5. **Motion** — least-squares line through each track's centroids; a speed below a quarter
   of the contract speed (S/32 px per frame) is ``still``, otherwise the dominant axis and
   its sign give the direction (image y grows downward, so +y is ``down``).

``judge`` compares a detection with an :class:`Expectation` (parsed from a caption or
given explicitly), ``evaluate_dir`` scores a ``studio batch`` run directory per category,
``write_report`` writes ``eval.json``, ``eval.md`` and ``contact_sheet.png``, and
``build_suite`` makes the held-out evaluation prompt suite (``configs/eval/shapes_suite.jsonl``),
whose wording deliberately avoids the training phrasings of ``docs/CAPTIONS.md``.
``evaluate_storyboard`` / ``evaluate_storyboard_dir`` judge multi-scene storyboard videos
(per-scene motion, identity and position jump at each scene boundary).

The palettes are copied from the contract rather than imported from the renderer on purpose:
the judge must stay independent of ``world.shapes_world``, and the tests check that both agree.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
        _check_choice("color", self.color, tuple(OBJECT_COLORS))
        _check_choice("shape", self.shape, SHAPES)
        if self.size is not None:
            _check_choice("size", self.size, SIZES)
        if self.motion is not None:
            _check_choice("motion", self.motion, MOTIONS)


@dataclass
class Expectation:
    """What a video should show: objects, background (None = any) and a report category."""

    objects: list[ExpectedObject]
    background: str | None
    category: str | None = None

    def __post_init__(self) -> None:
        if self.background is not None:
            _check_choice("background", self.background, tuple(BACKGROUNDS))

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


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


# ----------------------------------------------------------------------------------------------
# Caption parsing
# ----------------------------------------------------------------------------------------------

_COLOR_WORDS = {c: c for c in OBJECT_COLORS} | {"violet": "purple"}
_BACKGROUND_WORDS = {b: b for b in BACKGROUNDS} | {"grey": "gray"}
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
_TOKEN_RE = re.compile(r"<[^>]+>|[a-z]+(?:'[a-z]+)?|[0-9]+|[,;:.!?()]")


def _find_motion(words: list[str]) -> str | None:
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
    tokens = _TOKEN_RE.findall(text.lower().replace("-", " ").replace("\u2019", "'"))

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
        motion = _find_motion(tokens[end:stop])
        if motion is None and k == 0:
            motion = _find_motion(tokens[: spans[0][0]])
        objects[k].motion = motion

    # 3. Background: any background word outside the object spans.
    inside = {j for s, e in spans for j in range(s, e)}
    backgrounds = {
        _BACKGROUND_WORDS[t]
        for j, t in enumerate(tokens)
        if j not in inside and t in _BACKGROUND_WORDS
    }
    if len(backgrounds) > 1:
        raise ValueError(f"caption {text!r} names several backgrounds: {sorted(backgrounds)}")
    return Expectation(objects, backgrounds.pop() if backgrounds else None)


# ----------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------


@dataclass
class DetectedObject:
    """A tracked object: area-weighted majority colour, shape and size from the median
    per-frame measures, motion from a least-squares fit of the centroid track."""

    color: str
    shape: str
    size: str
    motion: str | None  # None when fewer than two frames show it (an image)
    velocity: tuple[float, float]  # (vx, vy) in px/frame at the working resolution
    presence: float  # share of frames in which it was found
    box_side: float  # median box side in px at the working resolution
    fill: float  # median fill ratio of the bounding box
    skew: float  # median vertical skewness of the mask (triangle < 0)
    first_centroid: tuple[float, float]  # (x, y)
    last_centroid: tuple[float, float]


@dataclass
class Detection:
    """Everything the detector found in one video."""

    frames: int
    size: int  # working canvas side S the pixel quantities refer to
    background: str | None
    background_share: float
    objects: list[DetectedObject] = field(default_factory=list)
    candidates_per_frame: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_PALETTE = np.array(
    [OBJECT_COLORS[c] for c in OBJECT_COLORS] + [BACKGROUNDS[b] for b in BACKGROUNDS],
    dtype=np.float32,
)
_N_OBJ = len(OBJECT_COLORS)
_BG_PALETTE = np.array([BACKGROUNDS[b] for b in BACKGROUNDS], dtype=np.float32)
_BG_NAMES = list(BACKGROUNDS)


def _as_video(frames: np.ndarray) -> np.ndarray:
    """Validate and return (F, H, W, 3) uint8, block-averaged down to ≤ MAX_WORK_SIDE."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8 of shape (F, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    if frames.shape[0] == 0 or frames.shape[1] < 8 or frames.shape[2] < 8:
        raise ValueError(f"video too small to judge: shape {frames.shape}")
    factor = max(1, math.ceil(max(frames.shape[1:3]) / MAX_WORK_SIDE))
    if factor > 1:
        f, h, w, _ = frames.shape
        h2, w2 = h // factor, w // factor
        crop = frames[:, : h2 * factor, : w2 * factor].astype(np.float32)
        frames = crop.reshape(f, h2, factor, w2, factor, 3).mean(axis=(2, 4)).round()
        frames = frames.astype(np.uint8)
    return frames


def _nearest(pixels: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and L2 distance to the nearest palette colour for (..., 3) pixels."""
    d2 = ((pixels[..., None, :].astype(np.float32) - palette) ** 2).sum(-1)
    idx = d2.argmin(-1)
    return idx, np.sqrt(np.take_along_axis(d2, idx[..., None], -1)[..., 0])


def _detect_background(video: np.ndarray) -> tuple[str | None, float, np.ndarray]:
    """Majority vote of the 2-px border ring over all frames (objects touch it rarely).

    Returns the background name (None if no palette colour wins), its vote share and the
    measured background RGB (median of the winning pixels), which the soft masks use.
    """
    ring = np.concatenate(
        [
            video[:, :2].reshape(-1, 3),
            video[:, -2:].reshape(-1, 3),
            video[:, 2:-2, :2].reshape(-1, 3),
            video[:, 2:-2, -2:].reshape(-1, 3),
        ]
    )
    idx, dist = _nearest(ring, _BG_PALETTE)
    votes = np.bincount(idx[dist <= BACKGROUND_MAX_DIST], minlength=len(_BG_NAMES))
    best = int(votes.argmax())
    share = float(votes[best] / len(ring))
    winners = ring[(idx == best) & (dist <= BACKGROUND_MAX_DIST)]
    rgb = np.median((winners if len(winners) else ring).astype(np.float32), axis=0)
    return (_BG_NAMES[best] if share >= BACKGROUND_MIN_SHARE else None), share, rgb


def _label_components(classes: np.ndarray) -> np.ndarray:
    """8-connected components of equal non-negative class values, per frame, numpy only.

    Min-label propagation with pointer jumping: every pixel starts with its own id, takes the
    smallest id among equal-class neighbours, then jumps to its label's label, which makes
    the number of sweeps roughly logarithmic in the component diameter. Returns labels of
    shape ``classes.shape`` (0 = no component); a component's label is 1 + the flat index
    of one of its pixels.
    """
    f, h, w = classes.shape
    valid = classes >= 0
    big = np.iinfo(np.int64).max
    labels = np.where(valid, np.arange(1, classes.size + 1).reshape(classes.shape), big)
    pad_c = np.pad(classes, ((0, 0), (1, 1), (1, 1)), constant_values=-1)
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    same = [
        valid & (pad_c[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] == classes) for dy, dx in shifts
    ]
    flat_pos = np.flatnonzero(valid.ravel())
    while True:
        pad_l = np.pad(labels, ((0, 0), (1, 1), (1, 1)), constant_values=big)
        new = labels.copy()
        for (dy, dx), s in zip(shifts, same, strict=True):
            np.minimum(
                new, np.where(s, pad_l[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w], big), out=new
            )
        flat = new.ravel()
        for _ in range(4):  # pointer jumping: follow label -> label of that pixel
            flat[flat_pos] = flat[flat[flat_pos] - 1]
        if np.array_equal(new, labels):
            break
        labels = new
    return np.where(valid, labels, 0)


def _soft_features(alpha: np.ndarray) -> dict[str, float]:
    """Blur-tolerant shape measures of a soft object mask (values in [0, 1]).

    Blur moves mass across an edge but keeps its sum, so the soft area, the widest row
    (sum along x) and the tallest column stay close to the sharp shape's:
    ``fill = area / (widest row · tallest column)`` is ≈ 1 for a square, π/4 for a disc and
    ≈ 0.5 for a triangle. A triangle with its apex up also has its mass low in the box:
    the vertical skewness of the mask is −2√2/5 ≈ −0.57 (y grows downward), 0 for the
    symmetric shapes, and a symmetric blur leaves the third central moment unchanged.
    """
    area = float(alpha.sum())
    if area <= 1e-6:  # nothing stands out from the background
        return {"area": 0.0, "cx": 0.0, "cy": 0.0, "side": 0.0, "fill": 0.0, "skew": 0.0}
    rows, cols = alpha.sum(1), alpha.sum(0)
    width, height = float(rows.max()), float(cols.max())
    ys = np.arange(alpha.shape[0], dtype=np.float64)
    xs = np.arange(alpha.shape[1], dtype=np.float64)
    cy, cx = float((rows * ys).sum() / area), float((cols * xs).sum() / area)
    var_y = float((rows * (ys - cy) ** 2).sum() / area)
    skew = float((rows * (ys - cy) ** 3).sum() / area) / max(var_y, 1e-6) ** 1.5
    return {
        "area": area,
        "cx": cx,
        "cy": cy,
        "side": max(width, height),
        "fill": area / max(width * height, 1e-6),
        "skew": skew,
    }


def _classify_shape(fill: float, skew: float) -> str:
    if skew < TRIANGLE_MAX_SKEW or fill < TRIANGLE_MAX_FILL:
        return "triangle"
    return "square" if fill >= SQUARE_MIN_FILL else "circle"


def _frame_candidates(video: np.ndarray, bg_rgb: np.ndarray) -> list[list[dict[str, Any]]]:
    """Per frame, the object components that pass the area and size limits.

    Components are found on the colour-agnostic mask "nearest palette colour is an object
    colour", so that noise flipping pixels between close colours (yellow/orange) does not
    split an object; its colour is the nearest object colour to its core (see below).
    Shape, size and centroid come from a soft mask (see ``_soft_features``) over the
    component and a small margin around it, which keeps them stable under blur.
    """
    f, h, w, _ = video.shape
    s = (h + w) / 2
    idx, dist = _nearest(video, _PALETTE)
    is_obj = (idx < _N_OBJ) & (dist <= OBJECT_COLOR_MAX_DIST)
    labels = _label_components(np.where(is_obj, 0, -1).astype(np.int8))
    min_area = max(4.0, MIN_AREA_FRAC_OF_SMALL_TRIANGLE * (SMALL_SIDE_FRAC * s) ** 2 / 2)
    pad = max(2, round(s / 32))
    obj_palette = _PALETTE[:_N_OBJ]

    out: list[list[dict[str, Any]]] = [[] for _ in range(f)]
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    for lab in ids[counts >= min_area]:
        t = int(lab - 1) // (h * w)  # a label is 1 + the flat index of one of its pixels
        mask = labels[t] == lab
        ys, xs = np.nonzero(mask)
        y1, y2 = max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)
        x1, x2 = max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)
        if max(y2 - y1, x2 - x1) - 2 * pad > MAX_SIDE_FRAC * s:
            continue  # background-sized: not an object of this world
        # Object colour from its core: the quarter of its pixels farthest from the background
        # (edge pixels are blends with the background and would pull the colour toward it).
        pix = video[t][mask].astype(np.float32)
        far = ((pix - bg_rgb) ** 2).sum(1)
        rgb = pix[far >= np.quantile(far, 0.75)].mean(0)
        color_idx = int(_nearest(rgb, obj_palette)[0])
        # Soft mask: position of each pixel between background and object colour, with a
        # small dead zone so that background noise adds no area.
        crop = video[t, y1:y2, x1:x2].astype(np.float32)
        direction = rgb - bg_rgb
        alpha = ((crop - bg_rgb) @ direction) / max(float(direction @ direction), 1.0)
        alpha = np.clip((alpha - SOFT_DEAD_ZONE) / (1 - 2 * SOFT_DEAD_ZONE), 0.0, 1.0)
        others = labels[t, y1:y2, x1:x2]
        alpha[(others > 0) & (others != lab)] = 0.0  # a neighbour's pixels are not ours
        feats = _soft_features(alpha)
        if feats["area"] < min_area:
            continue
        out[t].append(
            {
                "color": list(OBJECT_COLORS)[color_idx],
                "area": feats["area"],
                "cx": x1 + feats["cx"],
                "cy": y1 + feats["cy"],
                "side": feats["side"],
                "fill": feats["fill"],
                "skew": feats["skew"],
                "shape": _classify_shape(feats["fill"], feats["skew"]),
            }
        )
    return out


def _track(cands: list[list[dict[str, Any]]], s: float) -> list[list[tuple[int, dict]]]:
    """Link candidates across frames by nearest predicted position (greedy, gated).

    A colour change costs an extra gate so that same-coloured detections are preferred, but
    a flickering colour does not split a track.
    """
    gate = TRACK_GATE_FRAC * s
    tracks: list[list[tuple[int, dict]]] = []
    for t, dets in enumerate(cands):
        pairs = []
        for ti, tr in enumerate(tracks):
            t_last, last = tr[-1]
            if t_last == t:
                continue
            vx = vy = 0.0
            if len(tr) >= 2:
                (t_a, a), (t_b, b) = tr[-2], tr[-1]
                vx, vy = (b["cx"] - a["cx"]) / (t_b - t_a), (b["cy"] - a["cy"]) / (t_b - t_a)
            px, py = last["cx"] + vx * (t - t_last), last["cy"] + vy * (t - t_last)
            for di, d in enumerate(dets):
                dist = math.hypot(d["cx"] - px, d["cy"] - py)
                if dist <= gate * (1 + 0.5 * (t - t_last - 1)):
                    pairs.append((dist + (gate if d["color"] != last["color"] else 0.0), ti, di))
        used_t, used_d = set(), set()
        for _, ti, di in sorted(pairs):
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            tracks[ti].append((t, dets[di]))
        tracks.extend([[(t, d)] for di, d in enumerate(dets) if di not in used_d])
    return tracks


def _summarise_track(track: list[tuple[int, dict]], n_frames: int, s: float) -> DetectedObject:
    color_votes: dict[str, float] = {}
    for _, d in track:
        color_votes[d["color"]] = color_votes.get(d["color"], 0.0) + d["area"]
    # Shape from the median features over the track: steadier than a vote of noisy frames.
    fill = float(np.median([d["fill"] for _, d in track]))
    skew = float(np.median([d["skew"] for _, d in track]))
    side = float(np.median([d["side"] for _, d in track]))
    ts = np.array([t for t, _ in track], dtype=np.float64)
    xs = np.array([d["cx"] for _, d in track])
    ys = np.array([d["cy"] for _, d in track])
    motion: str | None = None
    vx = vy = 0.0
    if len(track) >= 2:
        vx = float(np.polyfit(ts, xs, 1)[0])
        vy = float(np.polyfit(ts, ys, 1)[0])
        speed = SPEED_FRAC * s
        if max(abs(vx), abs(vy)) < STILL_MAX_SPEED_FRAC * speed:
            motion = "still"
        elif abs(vx) >= abs(vy):
            motion = "right" if vx > 0 else "left"
        else:
            motion = "down" if vy > 0 else "up"  # image y grows downward
    return DetectedObject(
        color=max(color_votes, key=color_votes.__getitem__),
        shape=_classify_shape(fill, skew),
        size="small" if side < SIZE_SPLIT_FRAC * s else "large",
        motion=motion,
        velocity=(round(vx, 3), round(vy, 3)),
        presence=len(track) / n_frames,
        box_side=round(side, 2),
        fill=round(fill, 3),
        skew=round(skew, 3),
        first_centroid=(round(float(xs[0]), 2), round(float(ys[0]), 2)),
        last_centroid=(round(float(xs[-1]), 2), round(float(ys[-1]), 2)),
    )


def detect(frames: np.ndarray) -> Detection:
    """Find the background and the tracked objects of a (F, H, W, 3) uint8 video.

    A single frame (an image) is allowed; its objects then have ``motion=None``.
    """
    video = _as_video(frames)
    f, h, w, _ = video.shape
    s = (h + w) / 2
    background, share, bg_rgb = _detect_background(video)
    cands = _frame_candidates(video, bg_rgb)
    tracks = [tr for tr in _track(cands, s) if len(tr) >= MIN_PRESENCE * f]
    objects = [_summarise_track(tr, f, s) for tr in tracks]
    # Most persistent and largest first, so truncation in judge() keeps the real objects.
    objects.sort(key=lambda o: (-o.presence, -o.box_side))
    return Detection(
        frames=f,
        size=int(round(s)),
        background=background,
        background_share=round(share, 3),
        objects=objects,
        candidates_per_frame=[len(c) for c in cands],
    )


# ----------------------------------------------------------------------------------------------
# Judging
# ----------------------------------------------------------------------------------------------

#: Judged per-clip criteria, in report order.
CRITERIA: tuple[str, ...] = (
    "colour",
    "shape",
    "motion",
    "background",
    "size",
    "count",
    "all_correct",
)
_MAX_MATCHED_DETECTIONS = 6
_MAX_EXPECTED_OBJECTS = 4


def _motion_ok(expected: str | None, detected: str | None) -> bool:
    # No motion asked for → any motion is fine (also an image). A motion asked of a one-frame
    # video cannot be shown, so it is wrong.
    return expected is None or expected == detected


def _pair_score(e: ExpectedObject, d: DetectedObject | None) -> int:
    """Lexicographic match quality: colour first, then shape, motion, size."""
    if d is None:
        return 0
    return (
        8 * (e.color == d.color)
        + 4 * (e.shape == d.shape)
        + 2 * _motion_ok(e.motion, d.motion)
        + (e.size is None or e.size == d.size)
    )


def best_assignment(
    expected: list[Any], found: list[Any], score: Callable[[Any, Any | None], int]
) -> tuple[int | None, ...]:
    """For each expected item, the index in ``found`` it is matched to (None: missing), by
    brute force over all assignments, maximising the summed ``score(expected, found or
    None)``; the first best in permutation order wins ties."""
    slots: list[int | None] = list(range(len(found))) + [None] * len(expected)
    best: tuple[int | None, ...] = tuple([None] * len(expected))
    best_score = -1
    for perm in itertools.permutations(slots, len(expected)):
        total = sum(
            score(e, found[k] if k is not None else None)
            for e, k in zip(expected, perm, strict=True)
        )
        if total > best_score:
            best, best_score = perm, total
    return best


def judge(
    frames: np.ndarray, expectation: Expectation, detection: Detection | None = None
) -> dict[str, Any]:
    """Judge one video against an expectation.

    Detected objects are matched to expected ones by the assignment that maximises the
    (colour, shape, motion, size) agreement; a missing object fails every criterion for it,
    an extra object fails ``count``. Returns booleans ``colour``, ``shape``, ``motion``,
    ``background``, ``size`` (None when no size was asked), ``count`` and ``all_correct``,
    plus the detection and the matching for inspection.
    """
    if not expectation.objects:
        raise ValueError("expectation has no objects to judge")
    if len(expectation.objects) > _MAX_EXPECTED_OBJECTS:
        raise ValueError(
            f"at most {_MAX_EXPECTED_OBJECTS} expected objects are supported, "
            f"got {len(expectation.objects)}"
        )
    det = detection if detection is not None else detect(frames)
    exp = expectation.objects
    found = det.objects[:_MAX_MATCHED_DETECTIONS]

    # Best assignment by brute force (≤ 10P4 = 5040 cases); None stands for "missing".
    best = best_assignment(exp, found, _pair_score)
    matched = [found[k] if k is not None else None for k in best]

    def all_of(pred) -> bool:
        return all(d is not None and pred(e, d) for e, d in zip(exp, matched, strict=True))

    colour = all_of(lambda e, d: e.color == d.color)
    shape = all_of(lambda e, d: e.shape == d.shape)
    motion = all_of(lambda e, d: _motion_ok(e.motion, d.motion))
    sized = [(e, d) for e, d in zip(exp, matched, strict=True) if e.size is not None]
    size = None if not sized else all(d is not None and d.size == e.size for e, d in sized)
    background = expectation.background is None or det.background == expectation.background
    count = len(det.objects) == len(exp)
    all_correct = colour and shape and motion and background and count and size is not False
    return {
        "colour": colour,
        "shape": shape,
        "motion": motion,
        "background": background,
        "size": size,
        "count": count,
        "all_correct": all_correct,
        "detected": {
            "background": det.background,
            "objects": [
                {
                    "color": o.color,
                    "shape": o.shape,
                    "size": o.size,
                    "motion": o.motion,
                    "velocity": list(o.velocity),
                    "presence": round(o.presence, 3),
                }
                for o in det.objects
            ],
        },
        "matching": [None if k is None else int(k) for k in best],
    }


# ----------------------------------------------------------------------------------------------
# Run directories and reports
# ----------------------------------------------------------------------------------------------


def _read_video(path: Path) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 via pipelines.video_io when present, else imageio."""
    try:
        from pipelines.video_io import read_video
    except ImportError:
        read_video = None
    if read_video is not None:
        frames = read_video(path)[0]
    else:
        import imageio.v3 as iio

        frames = iio.imread(path, index=None)
    frames = np.asarray(frames)
    if frames.ndim == 3:  # a still image file
        frames = frames[None]
    return np.ascontiguousarray(frames[..., :3])


def _wrong_item(reason: str, expectation: Expectation | None) -> dict[str, Any]:
    """Verdicts for a sample that could not be judged: wrong in every criterion."""
    asked_size = expectation is not None and any(o.size for o in expectation.objects)
    verdict = {c: False for c in CRITERIA} | {"size": False if asked_size else None}
    return verdict | {"error": reason}


def _aggregate(items: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(items)
    agg: dict[str, Any] = {
        "n": n,
        "n_judged": sum(1 for it in items if it["status"] == "ok"),
        "n_failed": sum(1 for it in items if it["status"] != "ok"),
    }
    for c in CRITERIA:
        vals = [it[c] for it in items if it.get(c) is not None]
        agg[c] = round(sum(vals) / len(vals), 4) if vals else None
        if c == "size":
            agg["n_size"] = len(vals)
    return agg


def _motion_by_asked(pairs: list[tuple[str | None, Any]]) -> dict[str, dict[str, Any]]:
    """(motion asked, motion verdict) pairs → ``{motion: {"n", "motion"}}`` in MOTIONS order
    (pairs without a single asked motion are left out)."""
    out: dict[str, dict[str, Any]] = {}
    for m in MOTIONS:
        vals = [bool(v) for asked, v in pairs if asked == m]
        if vals:
            out[m] = {"n": len(vals), "motion": round(sum(vals) / len(vals), 4)}
    return out


def _one_motion(expect: dict[str, Any] | None) -> str | None:
    """The motion a one-object expectation asks for (None otherwise)."""
    objects = (expect or {}).get("objects") or []
    return objects[0].get("motion") if len(objects) == 1 else None


def _motion_line(by_motion: dict[str, dict[str, Any]], what: str) -> list[str]:
    if not by_motion:
        return []
    cells = ", ".join(f"{m} {_pct(v['motion'])} ({v['n']})" for m, v in by_motion.items())
    return [f"Motion right by the motion asked ({what}): {cells}.", ""]


def _judge_entry(entry: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Judge one manifest line; anything that keeps it from being judged makes it wrong."""
    item: dict[str, Any] = {
        "prompt": entry.get("prompt", ""),
        "sample": entry.get("sample"),
        "video": entry.get("video"),
        "category": entry.get("category") or "uncategorized",
        "status": entry.get("status", "ok"),
    }
    try:
        if "expect" in entry:
            expectation = Expectation.from_dict(entry["expect"], item["category"])
        else:
            expectation = parse_caption(item["prompt"])
    except (ValueError, KeyError, TypeError) as exc:
        return item | {"status": "bad_expectation"} | _wrong_item(f"bad expectation: {exc}", None)
    item["expect"] = expectation.to_dict()
    if item["status"] != "ok":
        reason = entry.get("error") or f"status {item['status']!r}"
        return item | _wrong_item(str(reason), expectation)
    try:
        path = Path(entry["video"])
        frames = _read_video(path if path.is_absolute() else run_dir / path)
    except Exception as exc:  # missing, truncated or odd file: a wrong sample, not a crash
        reason = f"could not read video: {type(exc).__name__}: {exc}"
        return item | {"status": "unreadable"} | _wrong_item(reason, expectation)
    try:
        return item | judge(frames, expectation)
    except ValueError as exc:  # e.g. a video too small to judge
        return item | {"status": "unjudgeable"} | _wrong_item(str(exc), expectation)


def evaluate_dir(run_dir: Path) -> dict[str, Any]:
    """Judge every video of a ``studio batch`` run directory (``manifest.jsonl``).

    Each manifest line needs ``prompt`` and ``status``; ``ok`` lines need ``video`` (relative
    to ``run_dir`` or absolute). The expectation comes from ``expect`` when present, else from
    ``parse_caption(prompt)``; the category from ``category`` (else ``"uncategorized"``).
    Error lines, unreadable videos and unparsable prompts count as wrong in every criterion.
    Returns ``{"run_dir", "thresholds", "overall", "categories", "motion_by_asked",
    "items"}``; ``motion_by_asked`` is the motion accuracy of the one-object videos per
    motion asked (``{motion: {"n", "motion"}}``), where a weak direction or wording shows.
    """
    run_dir = Path(run_dir)
    manifest = run_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise ValueError(f"no manifest.jsonl in {run_dir}; run `studio batch` first")
    items: list[dict[str, Any]] = []
    for line_no, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{manifest}:{line_no}: not JSON ({exc})") from exc
        items.append(_judge_entry(entry, run_dir))

    categories: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        categories.setdefault(it["category"], []).append(it)
    return {
        "run_dir": str(run_dir),
        "thresholds": dict(THRESHOLDS),
        "overall": _aggregate(items),
        "categories": {c: _aggregate(v) for c, v in categories.items()},
        "motion_by_asked": _motion_by_asked(
            [(_one_motion(it.get("expect")), it.get("motion")) for it in items]
        ),
        "items": items,
    }


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def _markdown(report: dict[str, Any]) -> str:
    cols = ["colour", "shape", "motion", "background", "size", "count", "all_correct"]
    lines = [
        "# Shapes World evaluation",
        "",
        f"Run: `{report.get('run_dir', '')}` — {report['overall']['n']} videos, "
        f"{report['overall']['n_failed']} failed to generate or load (counted wrong).",
        "",
        "| category | n | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
    ]
    rows = list(report["categories"].items()) + [("**overall**", report["overall"])]
    for name, agg in rows:
        lines.append(f"| {name} | {agg['n']} | " + " | ".join(_pct(agg[c]) for c in cols) + " |")
    lines += [
        "",
        "Size is scored only where the prompt names one; count = right number of objects; "
        "all correct = every criterion at once.",
        "",
    ]
    lines += _motion_line(report.get("motion_by_asked") or {}, "one-object videos")
    return "\n".join(lines)


def _contact_sheet(report: dict[str, Any], run_dir: Path, max_rows: int = 24) -> Any:
    """First / middle / last frame of up to ``max_rows`` videos, spread over categories."""
    from PIL import Image, ImageDraw, ImageFont

    by_cat: dict[str, list[dict[str, Any]]] = {}
    for it in report["items"]:
        by_cat.setdefault(it["category"], []).append(it)
    per_cat = max(1, max_rows // max(1, len(by_cat)))
    chosen = [it for its in by_cat.values() for it in its[:per_cat]][:max_rows]

    thumb, bar, text_w, pad = 96, 10, 440, 4
    row_h = thumb + 2 * pad
    sheet = Image.new(
        "RGB", (bar + 3 * (thumb + pad) + text_w, max(1, len(chosen)) * row_h), "white"
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r, it in enumerate(chosen):
        y = r * row_h
        ok = bool(it.get("all_correct"))
        draw.rectangle([0, y, bar - 1, y + row_h - 1], fill=(40, 170, 60) if ok else (210, 40, 40))
        frames = None
        if it["status"] == "ok" and it.get("video"):
            try:
                p = Path(it["video"])
                frames = _read_video(p if p.is_absolute() else run_dir / p)
            except Exception:
                frames = None
        for k in range(3):
            x = bar + pad + k * (thumb + pad)
            if frames is None or len(frames) == 0:
                draw.rectangle(
                    [x, y + pad, x + thumb - 1, y + pad + thumb - 1], fill=(200, 200, 200)
                )
                continue
            t = [0, len(frames) // 2, len(frames) - 1][k]
            img = Image.fromarray(frames[t]).resize((thumb, thumb), Image.NEAREST)
            sheet.paste(img, (x, y + pad))
        if it["status"] != "ok":
            verdict, detail = f"FAILED ({it['status']})", str(it.get("error", ""))
        else:
            wrong = [c for c in CRITERIA[:-1] if it.get(c) is False]
            verdict = "OK" if ok else "WRONG: " + ", ".join(wrong)
            seen = it.get("detected", {})
            detail = f"saw {seen.get('background')}: " + "; ".join(
                f"{o['size']} {o['color']} {o['shape']} {o['motion']}"
                for o in seen.get("objects", [])
            )
        tx = bar + 3 * (thumb + pad) + pad
        for k, txt in enumerate([f"[{it['category']}] {verdict}", it["prompt"], detail]):
            txt = txt if len(txt) <= 72 else txt[:69] + "..."
            draw.text((tx, y + pad + 14 * k), txt, fill=(0, 0, 0), font=font)
    return sheet


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``eval.json``, ``eval.md`` and ``contact_sheet.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "eval.json",
        "markdown": out_dir / "eval.md",
        "contact_sheet": out_dir / "contact_sheet.png",
    }
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    paths["markdown"].write_text(_markdown(report))
    _contact_sheet(report, Path(report.get("run_dir", "."))).save(paths["contact_sheet"])
    return paths


# ----------------------------------------------------------------------------------------------
# Held-out evaluation suite
# ----------------------------------------------------------------------------------------------

SUITE_PATH = Path(__file__).resolve().parents[1] / "configs" / "eval" / "shapes_suite.jsonl"
SUITE_SIZES: dict[str, int] = {
    "single": 40,
    "two": 30,
    "paraphrase": 30,
    "image_only_concept": 20,
    "unseen_pairs": 20,
}

# Held-out wording: none of these contains a training phrase of docs/CAPTIONS.md.
# Each motion has (participle, third person) forms so templates can build clauses.
_SUITE_MOTIONS: dict[str, list[tuple[str, str]]] = {
    "left": [
        ("drifting leftward", "drifts leftward"),
        ("gliding to the left", "glides to the left"),
        ("sweeping leftward", "sweeps leftward"),
        ("making its way to the left", "makes its way to the left"),
    ],
    "right": [
        ("drifting rightward", "drifts rightward"),
        ("gliding to the right", "glides to the right"),
        ("sweeping rightward", "sweeps rightward"),
        ("making its way to the right", "makes its way to the right"),
    ],
    "up": [
        ("travelling upward", "travels upward"),
        ("floating upward", "floats upward"),
        ("ascending", "ascends"),
        ("drifting toward the top", "drifts toward the top"),
    ],
    "down": [
        ("sinking", "sinks"),
        ("descending", "descends"),
        ("drifting downward", "drifts downward"),
        ("gliding toward the bottom", "glides toward the bottom"),
    ],
    "still": [
        ("sitting still", "sits still"),
        ("staying put", "stays put"),
        ("holding its position", "holds its position"),
        ("remaining stationary", "remains stationary"),
    ],
}
_SUITE_SIZE_WORDS = {"small": ["tiny", "small", "little"], "large": ["big", "large", "huge"]}
_BG_SUFFIX = [
    "; the background is {bg}",
    ", {bg} backdrop",
    " on a {bg} canvas",
    ", set against plain {bg}",
]
_BG_PREFIX = ["on a {bg} canvas, ", "against plain {bg}, ", "with a {bg} backdrop, "]
_SINGLE_TEMPLATES = [
    "{obj} {part}{bg_suffix}",
    "{bg_prefix}{obj} {third}",
    "{obj} that {third}{bg_suffix}",
]
_PARAPHRASE_TEMPLATES = [
    "There is {obj} here, {part}; the background is {bg}.",
    "Imagine a {bg} canvas. On it, {obj} {third}.",
    "{Part}, {obj} is seen against plain {bg}.",
    "Watch {obj} as it {third}; behind it, everything is {bg}.",
    "In this clip {obj} {third}, with nothing but {bg} behind it.",
    "The scene is {bg} all over, and {obj} {third} in it.",
]
_TWO_TEMPLATES = [
    "{o1} {third1}, whereas {o2} {third2}; the background is {bg}",
    "{o1} {third1} as {o2} {third2}, {bg} backdrop",
    "{bg_prefix}{o1} {third1}; meanwhile, {o2} {third2}",
    "two shapes on a {bg} canvas: {o1} {part1}, plus {o2} {part2}",
]


def _article(next_word: str, rng: random.Random) -> str:
    word = rng.choice(["a", "a", "one", "a single"])
    if word == "a" and next_word[0] in "aeiou":
        return "an"
    return word


def _object_phrase(o: ExpectedObject, rng: random.Random) -> str:
    words = ([rng.choice(_SUITE_SIZE_WORDS[o.size])] if o.size else []) + [o.color, o.shape]
    return " ".join([_article(words[0], rng), *words])


def _allowed_pairs(colors: list[str]) -> list[tuple[str, str]]:
    return [(c, s) for c in colors for s in SHAPES if (c, s) not in UNSEEN_PAIRS]


def _balanced(values: list[Any], n: int, rng: random.Random) -> list[Any]:
    """n values cycling through ``values`` in shuffled rounds, so each appears evenly."""
    out: list[Any] = []
    while len(out) < n:
        block = list(values)
        rng.shuffle(block)
        out += block
    return out[:n]


def _maybe_size(rng: random.Random) -> str | None:
    return rng.choice([None, "small", "large", "small", "large"])  # omitted 1 time in 5


def _single_entry(o: ExpectedObject, bg: str, category: str, rng: random.Random) -> dict:
    part, third = rng.choice(_SUITE_MOTIONS[o.motion])
    obj = _object_phrase(o, rng)
    if category == "paraphrase":
        tpl = rng.choice(_PARAPHRASE_TEMPLATES)
        prompt = tpl.format(obj=obj, part=part, third=third, Part=part.capitalize(), bg=bg)
    else:
        tpl = rng.choice(_SINGLE_TEMPLATES)
        prompt = tpl.format(
            obj=obj,
            part=part,
            third=third,
            bg_suffix=rng.choice(_BG_SUFFIX).format(bg=bg),
            bg_prefix=rng.choice(_BG_PREFIX).format(bg=bg),
        )
    return {
        "prompt": prompt,
        "category": category,
        "expect": Expectation([o], bg).to_dict(),
    }


def build_suite(seed: int = 1234, per_category: int | dict[str, int] | None = None) -> list[dict]:
    """The held-out Shapes World evaluation prompts, deterministic in ``seed``.

    Categories: ``single`` (one object, no purple, no unseen pair, all motions, size omitted
    one time in five), ``two`` (two differently coloured objects, same restrictions),
    ``paraphrase`` (single objects in different sentence structures), ``image_only_concept``
    (a purple object in motion) and ``unseen_pairs`` (an orange triangle or a blue circle in
    motion). Every prompt uses wording outside the training phrasings of docs/CAPTIONS.md.
    ``per_category``: prompts per category, one number for all or a dict overriding
    ``SUITE_SIZES``. Entries are ``{"prompt", "category", "expect": {"objects": [...],
    "background"}}``.
    """
    if isinstance(per_category, int):
        per_category = dict.fromkeys(SUITE_SIZES, per_category)
    sizes = dict(SUITE_SIZES) | (per_category or {})
    unknown = set(sizes) - set(SUITE_SIZES)
    if unknown:
        raise ValueError(
            f"unknown suite categories {sorted(unknown)}; allowed: {list(SUITE_SIZES)}"
        )
    rng = random.Random(seed)
    video_colors = [c for c in OBJECT_COLORS if c != IMAGE_ONLY_COLOR]
    pairs = _allowed_pairs(video_colors)
    bgs = list(BACKGROUNDS)
    suite: list[dict] = []

    for category in ("single", "paraphrase"):
        n = sizes[category]
        for (color, shape), motion, bg in zip(
            _balanced(pairs, n, rng),
            _balanced(list(MOTIONS), n, rng),
            _balanced(bgs, n, rng),
            strict=True,
        ):
            o = ExpectedObject(color, shape, _maybe_size(rng), motion)
            suite.append(_single_entry(o, bg, category, rng))

    n = sizes["two"]
    for bg, m1, m2 in zip(
        _balanced(bgs, n, rng),
        _balanced(list(MOTIONS), n, rng),
        _balanced(list(MOTIONS), n, rng),
        strict=True,
    ):
        (c1, s1), (c2, s2) = rng.choice([(a, b) for a in pairs for b in pairs if a[0] != b[0]])
        o1 = ExpectedObject(c1, s1, _maybe_size(rng), m1)
        o2 = ExpectedObject(c2, s2, _maybe_size(rng), m2)
        (p1, t1), (p2, t2) = rng.choice(_SUITE_MOTIONS[m1]), rng.choice(_SUITE_MOTIONS[m2])
        prompt = rng.choice(_TWO_TEMPLATES).format(
            o1=_object_phrase(o1, rng),
            o2=_object_phrase(o2, rng),
            part1=p1,
            third1=t1,
            part2=p2,
            third2=t2,
            bg=bg,
            bg_prefix=rng.choice(_BG_PREFIX).format(bg=bg),
        )
        suite.append(
            {"prompt": prompt, "category": "two", "expect": Expectation([o1, o2], bg).to_dict()}
        )

    concept_pairs = {
        "image_only_concept": [(IMAGE_ONLY_COLOR, s) for s in SHAPES],
        "unseen_pairs": list(UNSEEN_PAIRS),
    }
    for category, cps in concept_pairs.items():
        n = sizes[category]
        for (color, shape), motion, bg in zip(
            _balanced(cps, n, rng),
            _balanced(list(MOVING), n, rng),
            _balanced(bgs, n, rng),
            strict=True,
        ):
            o = ExpectedObject(color, shape, _maybe_size(rng), motion)
            suite.append(_single_entry(o, bg, category, rng))
    return suite


def write_suite(path: Path = SUITE_PATH, seed: int = 1234) -> Path:
    """Write ``build_suite(seed)`` as JSON lines (the committed ``configs/eval/shapes_suite.jsonl``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in build_suite(seed)))
    return path


STORYBOARD_SUITE_PATH = SUITE_PATH.with_name("storyboard_suite.json")
#: Validation storyboards for choosing storyboard settings (never the held-out suite above):
#: ``build_storyboard_suite(**STORYBOARD_VAL_ARGS)``, no prompt shared with the suite.
STORYBOARD_VAL_PATH = SUITE_PATH.with_name("storyboard_val.json")
STORYBOARD_VAL_ARGS = {"n": 20, "seed": 8765}
_UNIT_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
_SUITE_SIDE = 64  # the suite's stories are planned on the default canvas
_STEP_PX = {
    m: (dx * _SUITE_SIDE * SPEED_FRAC, dy * _SUITE_SIDE * SPEED_FRAC)
    for m, (dx, dy) in _UNIT_STEP.items()
}


def build_storyboard_suite(n: int = 30, seed: int = 4321) -> list[dict]:
    """Held-out storyboards: one object (size always named) on one background, 2–4 scenes of
    8–16 frames, each scene a different motion from the one before, phrased with the suite's
    held-out wording. Motions are drawn so that the object a renderer would draw stays on the
    64×64 canvas (start centred, 2 px a frame), so every story is one the world allows.

    Entries are ``{"name", "fps", "scenes": [{"prompt", "frames"}]}`` (loadable by
    ``pipelines.storyboard.load_storyboard``).
    """
    rng = random.Random(seed)
    video_colors = [c for c in OBJECT_COLORS if c != IMAGE_ONLY_COLOR]
    pairs = _allowed_pairs(video_colors)
    stories = []
    for i, ((color, shape), bg) in enumerate(
        zip(_balanced(pairs, n, rng), _balanced(list(BACKGROUNDS), n, rng), strict=True)
    ):
        size = rng.choice(["small", "large"])
        side = _SUITE_SIDE * (SMALL_SIDE_FRAC if size == "small" else LARGE_SIDE_FRAC)
        room = _SUITE_SIDE - side
        x = y = room / 2
        scenes, previous = [], None
        for _ in range(rng.choice([2, 3, 4])):
            # the longest allowed scenes first fail on the canvas edge; 8 frames always fit
            for frames in (rng.choice([8, 12, 16]), 8):
                ends = {  # where the next scene starts, for each motion that keeps it on canvas
                    m: (x + dx * frames, y + dy * frames)
                    for m, (dx, dy) in _STEP_PX.items()
                    if m != previous
                    and 0 <= x + dx * frames <= room
                    and 0 <= y + dy * frames <= room
                }
                if ends:
                    break
            motion = rng.choice([m for m in MOTIONS if m in ends])
            x, y = ends[motion]
            entry = _single_entry(ExpectedObject(color, shape, size, motion), bg, "single", rng)
            scenes.append({"prompt": entry["prompt"], "frames": frames})
            previous = motion
        stories.append({"name": f"story-{i:03d}", "fps": 8, "scenes": scenes})
    return stories


def write_storyboard_suite(path: Path = STORYBOARD_SUITE_PATH, seed: int = 4321) -> Path:
    """Write ``build_storyboard_suite(seed=seed)`` (the committed storyboard_suite.json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_storyboard_suite(seed=seed), indent=1) + "\n")
    return path


# ----------------------------------------------------------------------------------------------
# Storyboards (``studio eval storyboards DIR``)
# ----------------------------------------------------------------------------------------------

#: Contract (shapes_world.md, scene changes): at most 4 px between the last frame of a scene
#: and the first frame of the next, at S = 64.
STORYBOARD_MAX_JUMP_PX = 4.0
STORYBOARD_REF_SIDE = 64
#: Frames each side of a boundary over which identity is judged: a few frames give the
#: tracker's median shape features, steadier than one blurry frame.
BOUNDARY_FRAMES = 4
#: Bars of the storyboard issue (reported, not enforced).
STORYBOARD_BARS: dict[str, float] = {"scene_motion": 0.8, "identity_kept": 0.9, "jump_ok": 0.9}


def _check_scene_ranges(n_frames: int, scenes: list[tuple[str, int, int]]) -> None:
    if not scenes:
        raise ValueError("a storyboard needs at least one scene to judge")
    prev_end = 0
    for i, (_, start, end) in enumerate(scenes, 1):
        if not (prev_end <= start < end <= n_frames):
            raise ValueError(
                f"scene {i}: frame range [{start}, {end}) must be non-empty, in order and within "
                f"the video's {n_frames} frames"
            )
        prev_end = end


def _match_by_position(
    before: list[DetectedObject], after: list[DetectedObject]
) -> list[tuple[DetectedObject, DetectedObject]]:
    """Pair each object before a boundary with one after it, minimising the summed distance
    from its last to the other's first centroid (continuity, not looks, decides the pairing,
    so that a changed colour shows up as a change rather than as a different object)."""
    before, after = before[:_MAX_MATCHED_DETECTIONS], after[:_MAX_MATCHED_DETECTIONS]
    small, large, flip = (
        (before, after, False) if len(before) <= len(after) else (after, before, True)
    )
    best: list[tuple[DetectedObject, DetectedObject]] = []
    best_cost = math.inf
    for perm in itertools.permutations(large, len(small)):
        pairs = [(b, a) if flip else (a, b) for a, b in zip(small, perm, strict=True)]
        cost = sum(math.dist(b.last_centroid, a.first_centroid) for b, a in pairs)
        if cost < best_cost:
            best, best_cost = pairs, cost
    return best


def _judge_boundary(before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
    """Identity and position jump across one boundary (``before``: the last frames of a scene,
    ``after``: the first frames of the next; (F, H, W, 3) uint8)."""
    det_b, det_a = detect(before), detect(after)
    pairs = _match_by_position(det_b.objects, det_a.objects)
    same_count = len(det_b.objects) == len(det_a.objects) and bool(pairs)
    scale = STORYBOARD_REF_SIDE / det_b.size  # px at the working size → px at S = 64
    jumps = [math.dist(b.last_centroid, a.first_centroid) * scale for b, a in pairs]
    jump = round(max(jumps), 2) if same_count else None
    colour = same_count and all(b.color == a.color for b, a in pairs)
    shape = same_count and all(b.shape == a.shape for b, a in pairs)
    size = same_count and all(b.size == a.size for b, a in pairs)
    return {
        "colour_kept": colour,
        "shape_kept": shape,
        "size_kept": size,
        "identity_kept": colour and shape,
        "jump_px": jump,
        "jump_ok": jump is not None and jump <= STORYBOARD_MAX_JUMP_PX,
        "before": [{"color": o.color, "shape": o.shape, "size": o.size} for o in det_b.objects],
        "after": [{"color": o.color, "shape": o.shape, "size": o.size} for o in det_a.objects],
    }


def evaluate_storyboard(frames: np.ndarray, scenes: list[tuple[str, int, int]]) -> dict[str, Any]:
    """Judge a storyboard video: each scene's motion, and continuity at each boundary.

    Args:
        frames: the whole video, uint8 (T, H, W, 3).
        scenes: ``(prompt, start, end)`` per scene, ``end`` exclusive, in order.

    Returns ``{"scenes", "boundaries", "summary"}``:

    * per scene, :func:`judge` of the segment ``frames[start:end]`` against
      ``parse_caption(prompt)``; ``motion`` is the storyboard criterion (an unparsable
      prompt makes the scene wrong);
    * per boundary between scenes i and i+1, the objects found in the last
      ``BOUNDARY_FRAMES`` frames of scene i are paired by position with those in the first
      frames of scene i+1: ``identity_kept`` when the counts match and every pair has the
      same colour and shape; ``jump_px`` the largest centroid distance between the last
      sighting before and the first after the boundary (the last and first frames when
      the object is seen there), in px at S = 64 (None when the counts differ); ``jump_ok``
      when it is at most ``STORYBOARD_MAX_JUMP_PX``.
    """
    video = _as_video(frames)
    _check_scene_ranges(len(video), scenes)
    # 1. Scenes: the segment's motion against its prompt
    scene_items: list[dict[str, Any]] = []
    for prompt, start, end in scenes:
        item: dict[str, Any] = {"prompt": prompt, "start": int(start), "end": int(end)}
        try:
            expectation = parse_caption(prompt)
        except ValueError as exc:
            scene_items.append(item | _wrong_item(f"bad prompt: {exc}", None))
            continue
        verdict = judge(video[start:end], expectation)
        scene_items.append(item | {k: verdict[k] for k in (*CRITERIA, "detected")})

    # 2. Boundaries: identity and position jump
    boundaries: list[dict[str, Any]] = []
    for i, ((_, s0, e0), (_, s1, e1)) in enumerate(itertools.pairwise(scenes), 1):
        before = video[max(s0, e0 - BOUNDARY_FRAMES) : e0]
        after = video[s1 : min(e1, s1 + BOUNDARY_FRAMES)]
        boundaries.append({"boundary": i, "frame": int(s1)} | _judge_boundary(before, after))
    return {
        "frames": len(video),
        "scenes": scene_items,
        "boundaries": boundaries,
        "summary": _storyboard_summary(scene_items, boundaries),
    }


def _rate(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _storyboard_summary(
    scenes: list[dict[str, Any]], boundaries: list[dict[str, Any]]
) -> dict[str, Any]:
    jumps = [b["jump_px"] for b in boundaries if b["jump_px"] is not None]
    out: dict[str, Any] = {
        "n_scenes": len(scenes),
        "n_boundaries": len(boundaries),
        "scene_motion": _rate([bool(s["motion"]) for s in scenes]),
        "scene_all_correct": _rate([bool(s["all_correct"]) for s in scenes]),
        "colour_kept": _rate([b["colour_kept"] for b in boundaries]),
        "shape_kept": _rate([b["shape_kept"] for b in boundaries]),
        "identity_kept": _rate([b["identity_kept"] for b in boundaries]),
        "jump_ok": _rate([b["jump_ok"] for b in boundaries]),
        "max_jump_px": max(jumps) if jumps else None,
    }
    # None (no boundaries) passes: a one-scene storyboard has nothing to break.
    out["passes"] = {k: out[k] is None or out[k] >= bar for k, bar in STORYBOARD_BARS.items()}
    return out


def _storyboard_item(sidecar: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Judge one storyboard sidecar's video; anything that stops it counts as all wrong."""
    scenes = [(s.get("prompt", ""), s.get("start"), s.get("end")) for s in data["scenes"]]
    item: dict[str, Any] = {"sidecar": sidecar.name, "video": data.get("output")}
    try:
        frames = _read_video(sidecar.parent / str(data["output"]))
        result = evaluate_storyboard(frames, scenes)
        return item | {"status": "ok"} | result
    except Exception as exc:  # missing/odd video, bad ranges: a wrong storyboard, not a crash
        reason = f"{type(exc).__name__}: {exc}"
        wrong_scenes = [
            {"prompt": p, "start": a, "end": b} | _wrong_item(reason, None) for p, a, b in scenes
        ]
        wrong_bounds = [
            {
                "boundary": i,
                "colour_kept": False,
                "shape_kept": False,
                "size_kept": False,
                "identity_kept": False,
                "jump_px": None,
                "jump_ok": False,
            }
            for i in range(1, len(scenes))
        ]
        return item | {
            "status": "failed",
            "error": reason,
            "scenes": wrong_scenes,
            "boundaries": wrong_bounds,
            "summary": _storyboard_summary(wrong_scenes, wrong_bounds),
        }


def evaluate_storyboard_dir(run_dir: Path) -> dict[str, Any]:
    """Judge every storyboard in ``run_dir``: each ``*.json`` sidecar written by
    ``studio storyboard`` (``"kind": "storyboard"``, ``scenes`` with ``prompt``/``start``/
    ``end``, ``output`` naming its video next to it). Other JSON files are skipped.

    Returns ``{"run_dir", "bars", "max_jump_px", "overall", "items"}``; ``overall`` pools all
    scenes and boundaries (scene motion accuracy, identity-kept rate, share of boundaries
    with a jump ≤ ``STORYBOARD_MAX_JUMP_PX``) and says which bars pass.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"not a folder: {run_dir}")
    items: list[dict[str, Any]] = []
    for sidecar in sorted(run_dir.glob("*.json")):
        try:
            data = json.loads(sidecar.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not a sidecar of ours
        if (
            not isinstance(data, dict)
            or data.get("kind") != "storyboard"
            or not isinstance(data.get("scenes"), list)
            or "output" not in data
        ):
            continue
        items.append(_storyboard_item(sidecar, data))
    if not items:
        raise ValueError(
            f"no storyboard sidecars in {run_dir}: expected *.json files written by "
            "`studio storyboard`"
        )
    scenes = [s for it in items for s in it["scenes"]]
    boundaries = [b for it in items for b in it["boundaries"]]
    overall = _storyboard_summary(scenes, boundaries) | {
        "n_storyboards": len(items),
        "n_failed": sum(it["status"] != "ok" for it in items),
    }
    asked = []
    for sc in scenes:
        try:
            expect = parse_caption(sc.get("prompt", "")).to_dict()
        except ValueError:
            continue  # an unparsable prompt is already counted wrong
        asked.append((_one_motion(expect), sc.get("motion")))
    overall["scene_motion_by_asked"] = _motion_by_asked(asked)
    return {
        "run_dir": str(run_dir),
        "bars": dict(STORYBOARD_BARS),
        "max_jump_px": STORYBOARD_MAX_JUMP_PX,
        "overall": overall,
        "items": items,
    }


def _storyboard_markdown(report: dict[str, Any]) -> str:
    o = report["overall"]
    rows = [
        ("scene motion correct", "scene_motion"),
        ("colour and shape kept across a boundary", "identity_kept"),
        (f"boundaries with a jump ≤ {report['max_jump_px']:g} px (at 64 px)", "jump_ok"),
    ]
    lines = [
        "# Storyboard evaluation",
        "",
        f"Folder: `{report['run_dir']}` — {o['n_storyboards']} storyboards, {o['n_scenes']} "
        f"scenes, {o['n_boundaries']} boundaries; {o['n_failed']} could not be judged "
        "(counted wrong).",
        "",
        "| criterion | value | bar | pass |",
        "|---|---:|---:|:---:|",
    ]
    for label, key in rows:
        mark = "yes" if o["passes"][key] else "no"
        lines.append(f"| {label} | {_pct(o[key])} | ≥ {_pct(report['bars'][key])} | {mark} |")
    worst = "–" if o["max_jump_px"] is None else f"{o['max_jump_px']:.1f} px"
    lines += ["", f"Largest measured jump: {worst}.", ""]
    lines += _motion_line(o.get("scene_motion_by_asked") or {}, "one-object scenes")
    return "\n".join(lines)


def write_storyboard_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``storyboard_eval.json`` and ``storyboard_eval.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "storyboard_eval.json",
        "markdown": out_dir / "storyboard_eval.md",
    }
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    paths["markdown"].write_text(_storyboard_markdown(report))
    return paths


if __name__ == "__main__":
    print(f"wrote {write_suite()}")
