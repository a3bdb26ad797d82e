"""The single-clip judge (``studio eval shapes DIR``) and its held-out prompt suite.

``judge`` compares a :func:`evals.detect.detect` detection with an
:class:`~evals.contract.Expectation` (parsed from a caption or given explicitly),
``evaluate_dir`` scores a ``studio batch`` run directory per category (reports:
:func:`evals.report.write_shapes_report`), and ``build_suite`` makes the held-out evaluation
prompt suite (``evals/suites/shapes_suite.jsonl``), whose wording deliberately avoids the
training phrasings of ``docs/CAPTIONS.md``.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import SUITES_DIR
from .contract import (
    BACKGROUNDS,
    IMAGE_ONLY_COLOR,
    MOTIONS,
    MOVING,
    OBJECT_COLORS,
    SHAPE_HELD_MIN_SHARE,
    SHAPES,
    THRESHOLDS,
    UNSEEN_PAIRS,
    Expectation,
    ExpectedObject,
    parse_caption,
)
from .detect import DetectedObject, Detection, detect, read_frames

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
    # the stricter reading of the shape issue's bars: each object shows its named shape in
    # SHAPE_HELD_MIN_SHARE of the frames it is seen in, and all correct with that
    "shape_held",
    "all_correct_held",
)
MAX_MATCHED_DETECTIONS = 6
_MAX_EXPECTED_OBJECTS = 4


def motion_ok(expected: str | None, detected: str | None) -> bool:
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
        + 2 * motion_ok(e.motion, d.motion)
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
    found = det.objects[:MAX_MATCHED_DETECTIONS]

    # Best assignment by brute force (≤ 10P4 = 5040 cases); None stands for "missing".
    best = best_assignment(exp, found, _pair_score)
    matched = [found[k] if k is not None else None for k in best]

    def all_of(pred) -> bool:
        return all(d is not None and pred(e, d) for e, d in zip(exp, matched, strict=True))

    colour = all_of(lambda e, d: e.color == d.color)
    shape = all_of(lambda e, d: e.shape == d.shape)
    motion = all_of(lambda e, d: motion_ok(e.motion, d.motion))
    sized = [(e, d) for e, d in zip(exp, matched, strict=True) if e.size is not None]
    size = None if not sized else all(d is not None and d.size == e.size for e, d in sized)
    background = expectation.background is None or det.background == expectation.background
    count = len(det.objects) == len(exp)
    all_correct = colour and shape and motion and background and count and size is not False
    shape_held = all_of(lambda e, d: d.shape_shares.get(e.shape, 0.0) >= SHAPE_HELD_MIN_SHARE)
    return {
        "colour": colour,
        "shape": shape,
        "motion": motion,
        "background": background,
        "size": size,
        "count": count,
        "all_correct": all_correct,
        "shape_held": shape_held,
        "all_correct_held": all_correct and shape_held,
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
                    "shape_shares": o.shape_shares,
                }
                for o in det.objects
            ],
        },
        "matching": [None if k is None else int(k) for k in best],
    }


# ----------------------------------------------------------------------------------------------
# Run directories
# ----------------------------------------------------------------------------------------------


def wrong_item(reason: str, expectation: Expectation | None) -> dict[str, Any]:
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


def motion_by_asked(pairs: list[tuple[str | None, Any]]) -> dict[str, dict[str, Any]]:
    """(motion asked, motion verdict) pairs → ``{motion: {"n", "motion"}}`` in MOTIONS order
    (pairs without a single asked motion are left out)."""
    out: dict[str, dict[str, Any]] = {}
    for m in MOTIONS:
        vals = [bool(v) for asked, v in pairs if asked == m]
        if vals:
            out[m] = {"n": len(vals), "motion": round(sum(vals) / len(vals), 4)}
    return out


def one_motion(expect: dict[str, Any] | None) -> str | None:
    """The motion a one-object expectation asks for (None otherwise)."""
    objects = (expect or {}).get("objects") or []
    return objects[0].get("motion") if len(objects) == 1 else None


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
        return item | {"status": "bad_expectation"} | wrong_item(f"bad expectation: {exc}", None)
    item["expect"] = expectation.to_dict()
    if item["status"] != "ok":
        reason = entry.get("error") or f"status {item['status']!r}"
        return item | wrong_item(str(reason), expectation)
    try:
        path = Path(entry["video"])
        frames = read_frames(path if path.is_absolute() else run_dir / path)
    except Exception as exc:  # missing, truncated or odd file: a wrong sample, not a crash
        reason = f"could not read video: {type(exc).__name__}: {exc}"
        return item | {"status": "unreadable"} | wrong_item(reason, expectation)
    try:
        return item | judge(frames, expectation)
    except ValueError as exc:  # e.g. a video too small to judge
        return item | {"status": "unjudgeable"} | wrong_item(str(exc), expectation)


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
        "motion_by_asked": motion_by_asked(
            [(one_motion(it.get("expect")), it.get("motion")) for it in items]
        ),
        "items": items,
    }


# ----------------------------------------------------------------------------------------------
# Held-out evaluation suite
# ----------------------------------------------------------------------------------------------

SUITE_PATH = SUITES_DIR / "shapes_suite.jsonl"
#: Validation prompts for choosing settings (52, no prompt shared with the held-out suite).
VAL_PATH = SUITES_DIR / "shapes_val.jsonl"
SUITE_SIZES: dict[str, int] = {
    "single": 40,
    "two": 30,
    "paraphrase": 30,
    "image_only_concept": 20,
    "unseen_pairs": 20,
}

# Held-out wording: none of these contains a training phrase of docs/CAPTIONS.md.
# Each motion has (participle, third person) forms so templates can build clauses.
SUITE_MOTIONS: dict[str, list[tuple[str, str]]] = {
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
BG_SUFFIX = [
    "; the background is {bg}",
    ", {bg} backdrop",
    " on a {bg} canvas",
    ", set against plain {bg}",
]
BG_PREFIX = ["on a {bg} canvas, ", "against plain {bg}, ", "with a {bg} backdrop, "]
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


def allowed_pairs(colors: list[str]) -> list[tuple[str, str]]:
    return [(c, s) for c in colors for s in SHAPES if (c, s) not in UNSEEN_PAIRS]


def balanced(values: list[Any], n: int, rng: random.Random) -> list[Any]:
    """n values cycling through ``values`` in shuffled rounds, so each appears evenly."""
    out: list[Any] = []
    while len(out) < n:
        block = list(values)
        rng.shuffle(block)
        out += block
    return out[:n]


def _maybe_size(rng: random.Random) -> str | None:
    return rng.choice([None, "small", "large", "small", "large"])  # omitted 1 time in 5


def single_entry(o: ExpectedObject, bg: str, category: str, rng: random.Random) -> dict:
    part, third = rng.choice(SUITE_MOTIONS[o.motion])
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
            bg_suffix=rng.choice(BG_SUFFIX).format(bg=bg),
            bg_prefix=rng.choice(BG_PREFIX).format(bg=bg),
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
    pairs = allowed_pairs(video_colors)
    bgs = list(BACKGROUNDS)
    suite: list[dict] = []

    for category in ("single", "paraphrase"):
        n = sizes[category]
        for (color, shape), motion, bg in zip(
            balanced(pairs, n, rng),
            balanced(list(MOTIONS), n, rng),
            balanced(bgs, n, rng),
            strict=True,
        ):
            o = ExpectedObject(color, shape, _maybe_size(rng), motion)
            suite.append(single_entry(o, bg, category, rng))

    n = sizes["two"]
    for bg, m1, m2 in zip(
        balanced(bgs, n, rng),
        balanced(list(MOTIONS), n, rng),
        balanced(list(MOTIONS), n, rng),
        strict=True,
    ):
        (c1, s1), (c2, s2) = rng.choice([(a, b) for a in pairs for b in pairs if a[0] != b[0]])
        o1 = ExpectedObject(c1, s1, _maybe_size(rng), m1)
        o2 = ExpectedObject(c2, s2, _maybe_size(rng), m2)
        (p1, t1), (p2, t2) = rng.choice(SUITE_MOTIONS[m1]), rng.choice(SUITE_MOTIONS[m2])
        prompt = rng.choice(_TWO_TEMPLATES).format(
            o1=_object_phrase(o1, rng),
            o2=_object_phrase(o2, rng),
            part1=p1,
            third1=t1,
            part2=p2,
            third2=t2,
            bg=bg,
            bg_prefix=rng.choice(BG_PREFIX).format(bg=bg),
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
            balanced(cps, n, rng),
            balanced(list(MOVING), n, rng),
            balanced(bgs, n, rng),
            strict=True,
        ):
            o = ExpectedObject(color, shape, _maybe_size(rng), motion)
            suite.append(single_entry(o, bg, category, rng))
    return suite


def write_suite(path: Path = SUITE_PATH, seed: int = 1234) -> Path:
    """Write ``build_suite(seed)`` as JSON lines (the committed ``evals/suites/shapes_suite.jsonl``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in build_suite(seed)))
    return path


if __name__ == "__main__":
    print(f"wrote {write_suite()}")
