"""The elements-to-video judge (reference sprites): identity and motion (``studio eval elements``).

A reference element is a sprite (``shapes_world.md``, "Reference elements"): one of the three
shapes filled with a two-colour pattern (stripes or checkerboard, 3 px cells at S = 64) whose
two colours come from the object palette. A generated element is correct when its shape, both
pattern colours and its motion match the reference and the caption
(``<ref1> moving left and <ref2> moving up on a gray background``).

The detector reads pixels and reuses the shared detection of :mod:`evals.detect` (background
vote, connected components, blur-tolerant shape features, tracking, the least-squares motion
fit):

1. **Background** — the border ring votes for the nearest background colour
   (:func:`evals.detect.detect_background`); its measured RGB is the reference for step 2.
2. **Sprite masks** — a sprite is striped, so it is segmented by "not background", never per
   colour: each pixel is read as ``bg + a·(c − bg)`` with ``c`` the sprite colour (an object
   colour, or a 50/50 blend of two, which is what a blurred stripe boundary looks like) that
   fits it best, and is foreground when ``a ≥ ½`` and it stands ``FG_MIN_DIST`` off the
   background. One-pixel cracks (yuv420p turns a blue/yellow boundary gray) are closed.
   8-connected components above a minimum area are sprite candidates (two sprites never
   touch: the renderer keeps S/32 px between them, and half-coverage keeps blur from
   bridging the gap).
3. **Pattern colours** — a track's pixels (all its frames) are fitted, for every pair of
   object colours, as non-negative mixtures of (background, c₁, c₂): the closest point of
   that colour triangle to each pixel. Rim pixels (sprite/background blends) and blurred
   stripe boundaries (c₁/c₂ blends) both lie in the right triangle, so they need no special
   treatment. The pair with the smallest robust fitting error wins, provided each of its
   colours carries ``MIN_COLOR_SHARE`` of the sprite's colour mass and it fits better than
   one colour alone (a plain object). A global tint measured on the background is allowed
   for (see :func:`_fit_colors`).
4. **Shape** — a soft mask from the same fit with the track's colours: ``alpha`` = 1 − the
   background's weight (1 inside the sprite whatever the stripe, the blend weight at its
   rim). Its fill ratio and vertical skewness classify the shape exactly as for plain objects
   (:func:`evals.detect.soft_features` / :func:`evals.detect.classify_shape`).
5. **Tracking and motion** — :func:`evals.detect.link_tracks` links candidates across frames
   and :func:`evals.detect.summarise_track` fits the centroid line: still below a quarter of
   S/32 px per frame, else the dominant axis and its sign.

:func:`judge_elements` matches detected sprites to the references (best assignment by
identity) and says per reference whether its identity (shape and both colours, order-free) and
its motion are right. :func:`load_elements_suite` reads the held-out suite
(``evals/suites/elements_suite.jsonl``: sprites never seen in training), and
:func:`evaluate_elements_dir` scores a run folder (reports:
:func:`evals.report.write_elements_report`). The suite is built from the renderer's held-out
sprites by ``train/elements_suite.py``, and run folders are filled by
``studio/elements_batch.py``: the judge itself never touches the renderer.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import SUITES_DIR
from .contract import (
    BACKGROUND_WORDS,
    BACKGROUNDS,
    MAX_SIDE_FRAC,
    MIN_AREA_FRAC_OF_SMALL_TRIANGLE,
    MIN_PRESENCE,
    MOTIONS,
    OBJECT_COLORS,
    PATTERNS,
    SHAPES,
    SIZES,
    SMALL_SIDE_FRAC,
    SOFT_DEAD_ZONE,
    THRESHOLDS,
    TOKEN_RE,
    check_choice,
    find_motion,
)
from .detect import (
    as_video,
    detect_background,
    label_components,
    link_tracks,
    read_frames,
    soft_features,
    summarise_track,
)
from .shapes import best_assignment, motion_ok

# ----------------------------------------------------------------------------------------------
# Thresholds
# ----------------------------------------------------------------------------------------------

#: A foreground pixel stands at least this far (RGB L2) from the measured background: above
#: noise (σ = 6 per channel), below most blends of two sprite colours that come close to a
#: background (green/purple and yellow/blue average to ≈ 31 from gray). Orange/blue averages
#: to 21 from gray: a blurred orange/blue checkerboard on gray can fall apart into pieces.
FG_MIN_DIST = 25.0
#: Each of a sprite's two colours must carry this share of its colour mass. A sprite's
#: smaller colour covers ≥ 35 % of it (a small striped triangle); noise on a plain object
#: lends a second colour a few per cent.
MIN_COLOR_SHARE = 0.15
#: Fitting errors (RGB L2) are capped here, so a few stray pixels cannot decide the pair.
COLOR_FIT_CAP = 60.0
#: A sprite whose best fit is worse than this RMS error shows no palette colours at all.
COLOR_FIT_MAX_RMS = 45.0
#: Pixels used for a track's colour fit (an even subsample beyond this).
MAX_FIT_PIXELS = 4000

ELEMENTS_THRESHOLDS: dict[str, float] = {
    "fg_min_dist": FG_MIN_DIST,
    "min_color_share": MIN_COLOR_SHARE,
    "color_fit_cap": COLOR_FIT_CAP,
    "color_fit_max_rms": COLOR_FIT_MAX_RMS,
} | {k: THRESHOLDS[k] for k in ("square_min_fill", "triangle_max_skew", "triangle_max_fill")}

#: Bars of the elements issue (reported, not enforced): identity with one reference, with two
#: (per reference), and motion (per reference).
ELEMENTS_BARS: dict[str, float] = {
    "identity_one_ref": 0.8,
    "identity_two_refs": 0.6,
    "motion": 0.85,
}

_COLOR_NAMES = list(OBJECT_COLORS)
_OBJ_PALETTE = np.array([OBJECT_COLORS[c] for c in _COLOR_NAMES], dtype=np.float32)
# Object colours and every 50/50 blend of two: what a (blurred) sprite pixel can look like.
_SPRITE_PALETTE = np.concatenate(
    [
        _OBJ_PALETTE,
        np.array(
            [(a + b) / 2 for a, b in itertools.combinations(_OBJ_PALETTE, 2)], dtype=np.float32
        ),
    ]
)


# ----------------------------------------------------------------------------------------------
# Expectations and caption parsing
# ----------------------------------------------------------------------------------------------


@dataclass
class ExpectedSprite:
    """One reference element: its look (shape, the two pattern colours) and the motion the
    caption asks of it (None: not stated). ``pattern`` and ``size`` describe the reference
    image; they are recorded but not judged."""

    shape: str
    color: str
    color2: str
    motion: str | None = None
    pattern: str | None = None
    size: str | None = None

    def __post_init__(self) -> None:
        check_choice("shape", self.shape, SHAPES)
        check_choice("color", self.color, OBJECT_COLORS)
        check_choice("color2", self.color2, OBJECT_COLORS)
        if self.color == self.color2:
            raise ValueError(f"a sprite needs two different colours, got {self.color!r} twice")
        if self.motion is not None:
            check_choice("motion", self.motion, MOTIONS)
        if self.pattern is not None:
            check_choice("pattern", self.pattern, PATTERNS)
        if self.size is not None:
            check_choice("size", self.size, SIZES)

    @property
    def colors(self) -> frozenset[str]:
        """The two pattern colours, order-free."""
        return frozenset((self.color, self.color2))

    @classmethod
    def from_dict(cls, data: dict[str, Any], motion: str | None = None) -> ExpectedSprite:
        """From a reference spec ``{"shape", "color", "color2", "pattern"?, "size"?}``."""
        if not isinstance(data, dict):
            raise ValueError(f"a reference must be a dict, got {data!r}")
        try:
            return cls(
                shape=data["shape"],
                color=data["color"],
                color2=data["color2"],
                motion=data.get("motion", motion) if motion is None else motion,
                pattern=data.get("pattern"),
                size=data.get("size"),
            )
        except KeyError as exc:
            raise ValueError(f"reference {data!r} lacks {exc.args[0]!r}") from None


@dataclass
class ElementsExpectation:
    """What an elements video should show: the references in placeholder order
    (``<ref1>`` first) and the background (None: any)."""

    sprites: list[ExpectedSprite]
    background: str | None = None

    def __post_init__(self) -> None:
        if not self.sprites:
            raise ValueError("an elements expectation needs at least one reference")
        if self.background is not None:
            check_choice("background", self.background, BACKGROUNDS)

    def to_dict(self) -> dict[str, Any]:
        return {"sprites": [asdict(s) for s in self.sprites], "background": self.background}


_REF_TOKEN_PREFIX, _REF_TOKEN_SUFFIX = "<ref", ">"


def _ref_index(token: str) -> int | None:
    """1-based placeholder number of ``<refN>``; None for any other token."""
    if token.startswith(_REF_TOKEN_PREFIX) and token.endswith(_REF_TOKEN_SUFFIX):
        number = token[len(_REF_TOKEN_PREFIX) : -len(_REF_TOKEN_SUFFIX)]
        if number.isdigit():
            return int(number)
    return None


def parse_elements_caption(text: str, references: list[dict[str, Any]]) -> ElementsExpectation:
    """Read the motions and the background of an elements caption.

    ``references``: the sprite specs in placeholder order (``<ref1>`` is ``references[0]``).
    Each reference must be named exactly once. Its motion is read, with the motion lexicon of
    :mod:`evals.contract`, from the words between its placeholder and the next one (for
    the first placeholder, the words before it too: "Drifting left, <ref1> ..."). The
    background is the one background-palette word of the caption.
    Raises ValueError for an unknown, missing or repeated placeholder, contradictory motions
    or several backgrounds.
    """
    if not isinstance(text, str):
        raise ValueError(f"caption must be a string, got {type(text).__name__}")
    if not references:
        raise ValueError("an elements caption needs at least one reference spec")
    tokens = TOKEN_RE.findall(text.lower().replace("-", " ").replace("\u2019", "'"))

    # 1. Placeholders: where each <refN> stands.
    at: dict[int, int] = {}
    for j, tok in enumerate(tokens):
        k = _ref_index(tok)
        if k is None:
            continue
        if not 1 <= k <= len(references):
            raise ValueError(
                f"caption {text!r} names <ref{k}> but only {len(references)} reference(s) given"
            )
        if k in at:
            raise ValueError(f"caption {text!r} names <ref{k}> more than once")
        at[k] = j
    missing = [f"<ref{k}>" for k in range(1, len(references) + 1) if k not in at]
    if missing:
        raise ValueError(f"caption {text!r} does not name {', '.join(missing)}")

    # 2. Motions: the words after each placeholder up to the next one.
    order = sorted(at, key=at.__getitem__)
    motions: dict[int, str | None] = {}
    for n, k in enumerate(order):
        stop = at[order[n + 1]] if n + 1 < len(order) else len(tokens)
        motion = find_motion(tokens[at[k] + 1 : stop])
        if motion is None and n == 0:
            motion = find_motion(tokens[: at[k]])
        motions[k] = motion

    # 3. Background: the one background word.
    backgrounds = {BACKGROUND_WORDS[t] for t in tokens if t in BACKGROUND_WORDS}
    if len(backgrounds) > 1:
        raise ValueError(f"caption {text!r} names several backgrounds: {sorted(backgrounds)}")
    sprites = [
        ExpectedSprite.from_dict(ref, motion=motions[k])
        for k, ref in enumerate(references, start=1)
    ]
    return ElementsExpectation(sprites, backgrounds.pop() if backgrounds else None)


# ----------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------


@dataclass
class SpriteTrack:
    """A tracked sprite: its pattern colours (largest share first; fewer than two when the
    object is plain or shows no palette colour), shape and size from the median per-frame measures,
    motion from the least-squares fit of its centroid track."""

    colors: tuple[str, ...]
    color_shares: dict[str, float]  # share of the sprite's colour mass per fitted colour
    color_rms: float  # RMS error (RGB L2) of the colour fit
    shape: str
    size: str
    motion: str | None  # None when fewer than two frames show it
    velocity: tuple[float, float]  # (vx, vy) px/frame at the working resolution
    presence: float  # share of frames in which it was found
    box_side: float
    fill: float
    skew: float
    first_centroid: tuple[float, float]
    last_centroid: tuple[float, float]

    def summary(self) -> dict[str, Any]:
        return {
            "colors": list(self.colors),
            "shape": self.shape,
            "size": self.size,
            "motion": self.motion,
            "velocity": list(self.velocity),
            "presence": round(self.presence, 3),
        }


@dataclass
class SpriteDetection:
    """Everything the sprite detector found in one video."""

    frames: int
    size: int  # working canvas side S the pixel quantities refer to
    background: str | None
    background_share: float
    sprites: list[SpriteTrack] = field(default_factory=list)
    candidates_per_frame: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _foreground(video: np.ndarray, bg_rgb: np.ndarray) -> np.ndarray:
    """(F, H, W) bool: pixels that are at least half sprite.

    A pixel is read as ``bg + a·(c − bg)`` with ``c`` the sprite colour (an object colour or a
    50/50 blend of two, which is what a blurred stripe boundary looks like) whose direction
    from the background fits it best; it is foreground when ``a ≥ 0.5`` and it stands
    ``FG_MIN_DIST`` off the background. Half-coverage, not "nearest colour", keeps the rim
    of a blurred sprite from growing into the S/32 px gap between two sprites.
    """
    v = video.astype(np.float32) - bg_rgb  # (F, H, W, 3)
    best = np.full(v.shape[:-1], np.inf, dtype=np.float32)
    alpha = np.zeros(v.shape[:-1], dtype=np.float32)
    for c in _SPRITE_PALETTE:  # one colour at a time: no (F, H, W, 21, 3) temporary
        d = c - bg_rgb
        a = np.maximum((v @ d) / max(float(d @ d), 1.0), 0.0)
        r = ((v - a[..., None] * d) ** 2).sum(-1)
        better = r < best
        best = np.where(better, r, best)
        alpha = np.where(better, a, alpha)
    fg = (alpha >= 0.5) & ((v**2).sum(-1) > FG_MIN_DIST**2)
    # Close one-pixel cracks: yuv420p averages the chroma of 2×2 blocks, and blue and yellow
    # (complementary) average to gray, so a stripe boundary can turn into a line of
    # background-coloured pixels. A pixel between two foreground pixels (left and right, or
    # above and below) is foreground. Two sprites are ≥ S/32 = 2 px apart, so no such pixel
    # lies between them.
    pad = np.pad(fg, ((0, 0), (1, 1), (1, 1)))
    horizontal = pad[:, 1:-1, :-2] & pad[:, 1:-1, 2:]
    vertical = pad[:, :-2, 1:-1] & pad[:, 2:, 1:-1]
    return fg | horizontal | vertical


def _closest_on_triangle(
    p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Closest point of the triangle (a, b, c) to each pixel of ``p`` (N, 3).

    Returns the distance (N,) and the barycentric weights (N, 3) of the closest point: the
    non-negative mixture of the three colours nearest to the pixel. ``b == c`` gives the
    segment a–b (b's weight may then sit in either of the last two columns).
    """
    p = p.astype(np.float32)
    e0, e1, v = b - a, c - a, p - a
    # 1. Inside: the plane's least-squares barycentric coordinates (tiny ridge for b == c)
    g00, g01, g11 = float(e0 @ e0), float(e0 @ e1), float(e1 @ e1)
    det = g00 * g11 - g01 * g01 + 1e-3 * (g00 + g11) + 1e-6
    r0, r1 = v @ e0, v @ e1
    u = (g11 * r0 - g01 * r1) / det
    w = (g00 * r1 - g01 * r0) / det
    inside = (u >= 0) & (w >= 0) & (u + w <= 1)
    best = np.where(inside, np.linalg.norm(v - u[:, None] * e0 - w[:, None] * e1, axis=1), np.inf)
    weights = np.stack([1 - u - w, u, w], axis=1)
    # 2. Else the nearest point on one of the three edges
    for i, j in ((0, 1), (0, 2), (1, 2)):
        x, y = (a, b, c)[i], (a, b, c)[j]
        d = y - x
        t = np.clip(((p - x) @ d) / max(float(d @ d), 1e-6), 0.0, 1.0)
        dist = np.linalg.norm(p - x - t[:, None] * d, axis=1)
        better = dist < best
        best = np.where(better, dist, best)
        edge = np.zeros_like(weights)
        edge[:, i], edge[:, j] = 1 - t, t
        weights = np.where(better[:, None], edge, weights)
    return best, weights


def _fit_colors(
    pixels: np.ndarray, bg_rgb: np.ndarray, shift: np.ndarray | None = None
) -> tuple[tuple[str, ...], dict[str, float], float]:
    """The pattern colours of a sprite from its pixels (N, 3): see module doc, step 3.

    Every pair of object colours is tried as the mixture (background, c₁, c₂); the pair with
    the smallest robust fitting error among those where each colour carries
    ``MIN_COLOR_SHARE`` of the sprite's mass wins, unless one colour alone fits at least as
    well (a plain object): then that colour is returned alone. With a fitting error above
    ``COLOR_FIT_MAX_RMS`` (not a palette sprite at all) no colour is.

    ``shift``: the video's colour offset measured on its background (measured minus palette
    RGB). The fit is also tried with the palette moved by it, and the better of the two
    readings is kept: a global tint of a few levels would otherwise blur the one close call
    of the palette, orange against a red/yellow blend (23 apart).
    Returns (colours, most mass first; their mass shares; the RMS fitting error).
    """
    if len(pixels) == 0:
        return (), {}, float("inf")
    cap2 = COLOR_FIT_CAP**2
    pixels = pixels.astype(np.float32)
    best: tuple[float, tuple[str, ...], dict[str, float]] = (float("inf"), (), {})
    single: tuple[float, tuple[str, ...], dict[str, float]] = (float("inf"), (), {})
    offsets = [np.zeros(3, dtype=np.float32)]
    if shift is not None and float(np.abs(shift).max()) > 2:
        offsets.append(shift.astype(np.float32))
    pairs = list(itertools.combinations_with_replacement(range(len(_COLOR_NAMES)), 2))
    for offset, (i, j) in itertools.product(offsets, pairs):
        dist, weights = _closest_on_triangle(
            pixels, bg_rgb, _OBJ_PALETTE[i] + offset, _OBJ_PALETTE[j] + offset
        )
        cost = float(np.minimum(dist**2, cap2).mean())
        if i == j:
            if cost < single[0]:
                single = (cost, (_COLOR_NAMES[i],), {_COLOR_NAMES[i]: 1.0})
            continue
        mass = weights[:, 1:].sum(0)
        shares = mass / max(float(mass.sum()), 1e-6)
        if shares.min() >= MIN_COLOR_SHARE and cost < best[0]:
            order = (i, j) if shares[0] >= shares[1] else (j, i)
            named = {
                _COLOR_NAMES[k]: round(float(sh), 3) for k, sh in zip((i, j), shares, strict=True)
            }
            best = (cost, tuple(_COLOR_NAMES[k] for k in order), named)
    # A plain object fits one colour as well as any pair does: the pair must fit better.
    cost, colors, shares = best if best[0] < single[0] else single
    rms = round(math.sqrt(cost), 2)
    return (colors, shares, rms) if rms <= COLOR_FIT_MAX_RMS else ((), shares, rms)


def _frame_candidates(video: np.ndarray, bg_rgb: np.ndarray) -> tuple[np.ndarray, list[list]]:
    """Per frame, the sprite components that pass the area and size limits.

    Returns the component labels (F, H, W) and per frame a list of candidates with the hard
    mask's area and centroid (for tracking) and its box with a margin (for the soft mask).
    """
    f, h, w, _ = video.shape
    s = (h + w) / 2
    labels = label_components(np.where(_foreground(video, bg_rgb), 0, -1).astype(np.int8))
    min_area = max(4.0, MIN_AREA_FRAC_OF_SMALL_TRIANGLE * (SMALL_SIDE_FRAC * s) ** 2 / 2)
    pad = max(2, round(s / 32))
    out: list[list[dict[str, Any]]] = [[] for _ in range(f)]
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    for lab in ids[counts >= min_area]:
        t = int(lab - 1) // (h * w)  # a label is 1 + the flat index of one of its pixels
        ys, xs = np.nonzero(labels[t] == lab)
        if max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 > MAX_SIDE_FRAC * s:
            continue  # background-sized: not a sprite of this world
        out[t].append(
            {
                "t": t,
                "label": int(lab),
                "box": (
                    max(0, int(ys.min()) - pad),
                    min(h, int(ys.max()) + 1 + pad),
                    max(0, int(xs.min()) - pad),
                    min(w, int(xs.max()) + 1 + pad),
                ),
                "area": float(len(ys)),
                "cx": float(xs.mean()),
                "cy": float(ys.mean()),
                "color": "",  # link_tracks's colour key: colours are decided per track
            }
        )
    return labels, out


def _soft_measure(
    video: np.ndarray,
    labels: np.ndarray,
    cand: dict[str, Any],
    vertices: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, float]:
    """Shape features of one candidate from its soft mask (see module doc, step 4)."""
    y1, y2, x1, x2 = cand["box"]
    crop = video[cand["t"], y1:y2, x1:x2]
    _, weights = _closest_on_triangle(crop.reshape(-1, 3), *vertices)
    alpha = (1.0 - weights[:, 0]).reshape(crop.shape[:2])  # 1 − the background's weight
    alpha = np.clip((alpha - SOFT_DEAD_ZONE) / (1 - 2 * SOFT_DEAD_ZONE), 0.0, 1.0)
    others = labels[cand["t"], y1:y2, x1:x2]
    alpha[(others > 0) & (others != cand["label"])] = 0.0  # a neighbour's pixels are not ours
    feats = soft_features(alpha)
    if feats["area"] <= 0:  # keep the hard centroid so the track still has a position
        feats |= {"cx": cand["cx"] - x1, "cy": cand["cy"] - y1}
    return feats | {"cx": x1 + feats["cx"], "cy": y1 + feats["cy"], "color": ""}


def detect_sprites(frames: np.ndarray, background: str | None = None) -> SpriteDetection:
    """Find the background and the tracked sprites of a (F, H, W, 3) uint8 video.

    ``background``: a background name to use instead of the detected one (its palette RGB
    is then the reference of the foreground test). A single frame is allowed; its sprites
    then have ``motion=None``.
    """
    video = as_video(frames)
    f, h, w, _ = video.shape
    s = (h + w) / 2

    # 1. Background
    detected, share, bg_rgb = detect_background(video)
    bg_rgb = bg_rgb.astype(np.float32)
    if background is not None:
        check_choice("background", background, BACKGROUNDS)
        detected, bg_rgb = background, np.array(BACKGROUNDS[background], dtype=np.float32)

    shift = None if detected is None else bg_rgb - np.array(BACKGROUNDS[detected], np.float32)

    # 2. Candidates per frame, linked into tracks (noise tracks dropped)
    labels, cands = _frame_candidates(video, bg_rgb)
    tracks = [tr for tr in link_tracks(cands, s) if len(tr) >= MIN_PRESENCE * f]

    sprites: list[SpriteTrack] = []
    for track in tracks:
        # 3. Pattern colours from the pixels of the whole track
        pixels = np.concatenate([video[t][labels[t] == d["label"]] for t, d in track])
        if len(pixels) > MAX_FIT_PIXELS:  # an even subsample: the fit needs no more
            pixels = pixels[:: math.ceil(len(pixels) / MAX_FIT_PIXELS)]
        colors, shares, rms = _fit_colors(pixels, bg_rgb, shift)
        # 4. Soft shape measures with the track's colours (the mean colour if none fits)
        cols = [np.array(OBJECT_COLORS[c], dtype=np.float32) for c in colors]
        cols = cols or [pixels.astype(np.float32).mean(0)]
        vertices = (bg_rgb, cols[0], cols[-1])
        measured = [(t, _soft_measure(video, labels, d, vertices)) for t, d in track]
        # 5. Motion, shape and size exactly as for plain objects
        obj = summarise_track(measured, f, s)
        sprites.append(
            SpriteTrack(
                colors=colors,
                color_shares=shares,
                color_rms=rms,
                shape=obj.shape,
                size=obj.size,
                motion=obj.motion,
                velocity=obj.velocity,
                presence=obj.presence,
                box_side=obj.box_side,
                fill=obj.fill,
                skew=obj.skew,
                first_centroid=obj.first_centroid,
                last_centroid=obj.last_centroid,
            )
        )
    # Most persistent and largest first, so truncation in the judge keeps the real sprites.
    sprites.sort(key=lambda o: (-o.presence, -o.box_side))
    return SpriteDetection(
        frames=f,
        size=int(round(s)),
        background=detected,
        background_share=round(share, 3),
        sprites=sprites,
        candidates_per_frame=[len(c) for c in cands],
    )


# ----------------------------------------------------------------------------------------------
# Judging
# ----------------------------------------------------------------------------------------------

#: Per-reference criteria, in report order.
REF_CRITERIA: tuple[str, ...] = ("shape", "colours", "identity", "motion")
#: Per-video criteria.
VIDEO_CRITERIA: tuple[str, ...] = ("identity", "motion", "background", "count", "all_correct")
_MAX_MATCHED = 6


def _pair_score(e: ExpectedSprite, d: SpriteTrack | None) -> int:
    """Identity first (each right colour 4, the shape 2), then motion (1)."""
    if d is None:
        return 0
    return (
        4 * len(e.colors & set(d.colors)) + 2 * (e.shape == d.shape) + motion_ok(e.motion, d.motion)
    )


def judge_elements(
    frames: np.ndarray,
    expected: ElementsExpectation | list[ExpectedSprite],
    detection: SpriteDetection | None = None,
) -> dict[str, Any]:
    """Judge one elements video against its references and caption.

    ``expected``: usually :func:`parse_elements_caption` of the prompt with the reference
    specs; a bare list of :class:`ExpectedSprite` judges no background.

    Detected sprites are matched to the references by the assignment with the best identity
    agreement (a missing sprite fails every criterion of its reference). Per reference:
    ``shape``, ``colours`` (the two detected colours are the reference's two, order-free),
    ``identity`` (both) and ``motion``. Per video: ``identity`` and ``motion`` (every
    reference), ``background`` (the caption's, when it names one), ``count`` (no extra or
    missing sprite) and ``all_correct`` (all of these).
    """
    if isinstance(expected, list):
        expected = ElementsExpectation(expected)
    if not isinstance(expected, ElementsExpectation):
        raise ValueError(
            "expected must be an ElementsExpectation or a list of ExpectedSprite, got "
            f"{type(expected).__name__}"
        )
    det = detection if detection is not None else detect_sprites(frames)
    exp = expected.sprites
    found = det.sprites[:_MAX_MATCHED]

    # 1. Best assignment by brute force (≤ 8P2 cases for two references; None = missing)
    best = best_assignment(exp, found, _pair_score)

    # 2. Per-reference verdicts
    refs: list[dict[str, Any]] = []
    for n, (e, k) in enumerate(zip(exp, best, strict=True), start=1):
        d = found[k] if k is not None else None
        shape = d is not None and d.shape == e.shape
        colours = d is not None and len(d.colors) == 2 and set(d.colors) == e.colors
        motion = d is not None and motion_ok(e.motion, d.motion)
        refs.append(
            {
                "ref": n,
                "shape": shape,
                "colours": colours,
                "identity": shape and colours,
                "motion": motion,
                "expected": asdict(e),
                "detected": None if d is None else d.summary(),
            }
        )

    # 3. Per-video verdicts
    identity = all(r["identity"] for r in refs)
    motion = all(r["motion"] for r in refs)
    background = expected.background is None or det.background == expected.background
    count = len(det.sprites) == len(exp)
    return {
        "references": refs,
        "identity": identity,
        "motion": motion,
        "background": background,
        "count": count,
        "all_correct": identity and motion and background and count,
        "detected": {
            "background": det.background,
            "sprites": [o.summary() for o in det.sprites],
        },
        "matching": [None if k is None else int(k) for k in best],
    }


# ----------------------------------------------------------------------------------------------
# Held-out suite
# ----------------------------------------------------------------------------------------------

ELEMENTS_SUITE_PATH = SUITES_DIR / "elements_suite.jsonl"
#: Validation prompts for choosing settings: training sprites, no entry of the held-out suite.
ELEMENTS_VAL_PATH = SUITES_DIR / "elements_val.jsonl"
#: The suite's clips: 16 frames on a 64 px canvas.
SUITE_FRAMES = 16
SUITE_CANVAS = 64


def load_elements_suite(path: Path = ELEMENTS_SUITE_PATH) -> list[dict[str, Any]]:
    """Read a suite JSONL; ValueError naming the line for anything malformed."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read the elements suite {path}: {exc.strerror}") from None
    suite = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
            for key in ("name", "prompt", "references", "motions", "background"):
                if key not in entry:
                    raise ValueError(f"missing {key!r}")
            if len(entry["motions"]) != len(entry["references"]):
                raise ValueError("one motion per reference needed")
            for ref, motion in zip(entry["references"], entry["motions"], strict=True):
                if ref.get("pattern") is None or ref.get("size") is None:
                    raise ValueError(f"reference {ref!r} needs a pattern and a size")
                ExpectedSprite.from_dict(ref, motion=motion)  # validates the look
            check_choice("background", entry["background"], BACKGROUNDS)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}:{no}: bad suite entry: {exc}") from None
        suite.append(entry)
    if not suite:
        raise ValueError(f"the elements suite {path} is empty")
    names = [e["name"] for e in suite]
    if len(set(names)) != len(names):
        raise ValueError(f"the elements suite {path} repeats entry names")
    return suite


# ----------------------------------------------------------------------------------------------
# Run folders
# ----------------------------------------------------------------------------------------------

MANIFEST = "manifest.jsonl"


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """The records of a run folder's manifest (none when it does not exist yet); ValueError
    naming a line that is not JSON."""
    records = []
    if path.is_file():
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{no}: not JSON ({exc})") from None
    return records


def _wrong_item(reason: str, n_refs: int) -> dict[str, Any]:
    refs = [{"ref": k, **dict.fromkeys(REF_CRITERIA, False)} for k in range(1, n_refs + 1)]
    return {"references": refs, **dict.fromkeys(VIDEO_CRITERIA, False), "error": reason}


def _judge_record(record: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Judge one manifest line; anything that keeps it from being judged makes it wrong."""
    refs = record.get("references") or []
    item: dict[str, Any] = {
        "name": record.get("name"),
        "prompt": record.get("prompt", ""),
        "sample": record.get("sample"),
        "video": record.get("video"),
        "n_refs": len(refs),
        "status": record.get("status", "ok"),
    }
    try:
        expected = parse_elements_caption(item["prompt"], refs)
    except (ValueError, TypeError) as exc:
        return item | {"status": "bad_expectation"} | _wrong_item(f"bad expectation: {exc}", 1)
    item["expect"] = expected.to_dict()
    if item["status"] != "ok":
        reason = record.get("error") or f"status {item['status']!r}"
        return item | _wrong_item(str(reason), len(refs))
    try:
        path = Path(record["video"])
        frames = read_frames(path if path.is_absolute() else run_dir / path)
    except Exception as exc:  # missing, truncated or odd file: a wrong sample, not a crash
        reason = f"could not read video: {type(exc).__name__}: {exc}"
        return item | {"status": "unreadable"} | _wrong_item(reason, len(refs))
    try:
        return item | judge_elements(frames, expected)
    except ValueError as exc:  # e.g. a video too small to judge
        return item | {"status": "unjudgeable"} | _wrong_item(str(exc), len(refs))


def _rate(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _aggregate(items: list[dict[str, Any]]) -> dict[str, Any]:
    one = [r for it in items if it["n_refs"] == 1 for r in it["references"]]
    two = [r for it in items if it["n_refs"] == 2 for r in it["references"]]
    refs = [r for it in items for r in it["references"]]
    out: dict[str, Any] = {
        "n_videos": len(items),
        "n_failed": sum(it["status"] != "ok" for it in items),
        "n_refs_one": len(one),
        "n_refs_two": len(two),
        "identity_one_ref": _rate([r["identity"] for r in one]),
        "identity_two_refs": _rate([r["identity"] for r in two]),
        "identity": _rate([r["identity"] for r in refs]),
        "shape": _rate([r["shape"] for r in refs]),
        "colours": _rate([r["colours"] for r in refs]),
        "motion": _rate([r["motion"] for r in refs]),
        "background": _rate([it["background"] for it in items]),
        "count": _rate([it["count"] for it in items]),
        "all_correct": _rate([it["all_correct"] for it in items]),
    }
    out["passes"] = {k: out[k] is not None and out[k] >= bar for k, bar in ELEMENTS_BARS.items()}
    return out


def evaluate_elements_dir(run_dir: Path) -> dict[str, Any]:
    """Judge every video of an elements run folder (its ``manifest.jsonl``).

    Each line needs ``prompt``, ``references`` (sprite specs in placeholder order),
    ``status`` and, when ``ok``, ``video`` (relative to ``run_dir`` or absolute). The
    expectation is :func:`parse_elements_caption` of the prompt with those references.
    Error lines, unreadable videos and unparsable prompts count as wrong.

    Returns ``{"run_dir", "bars", "thresholds", "overall", "items"}``; ``overall`` has the
    identity rate per reference with one reference and with two, the motion rate per
    reference, the all-correct rate per video (and shape, colours, background, count), and
    which bars pass.
    """
    run_dir = Path(run_dir)
    manifest = run_dir / MANIFEST
    if not manifest.is_file():
        raise ValueError(
            f"no {MANIFEST} in {run_dir}: generate the suite first "
            "(`studio eval elements DIR --generate` or `--ground-truth`)"
        )
    items = [_judge_record(r, run_dir) for r in read_manifest(manifest)]
    if not items:
        raise ValueError(f"{manifest} lists no videos")
    return {
        "run_dir": str(run_dir),
        "bars": dict(ELEMENTS_BARS),
        "thresholds": dict(ELEMENTS_THRESHOLDS),
        "overall": _aggregate(items),
        "items": items,
    }
