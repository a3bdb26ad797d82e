"""Maintainer tool: build the held-out elements suite from the renderer's held-out sprites.

``python -m train.elements_suite`` rewrites ``evals/suites/elements_suite.jsonl`` and the
validation suite ``evals/suites/elements_val.jsonl`` (the judge, :mod:`evals.elements`, only
reads them). The suite's references are sprites the training data leaves out
(``world.shapes_world.is_heldout_sprite``); the validation suite's are sprites training draws,
in other entries, for choosing settings without looking at the held-out sprites. Prompts use
the held-out wording of the shapes suite (:mod:`evals.shapes`), and every entry has a layout
the world allows (:func:`world.placement.place_sprites`). ``tests/test_evals_elements.py``
checks that the committed files are this builder's output.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from evals.contract import (
    BACKGROUNDS,
    IMAGE_ONLY_COLOR,
    MOTIONS,
    OBJECT_COLORS,
    SHAPES,
    SIZES,
    UNSEEN_PAIRS,
)
from evals.elements import ELEMENTS_SUITE_PATH, ELEMENTS_VAL_PATH
from evals.shapes import BG_PREFIX, BG_SUFFIX, SUITE_MOTIONS, balanced
from pipelines.files import write_jsonl_atomic
from world.placement import place_sprites
from world.shapes_world import PATTERNS, is_heldout_sprite

ELEMENTS_SUITE_SIZES: dict[str, int] = {"one_ref": 40, "two_refs": 40}
#: The validation suite: training sprites, its own seed, half the size.
ELEMENTS_VAL_SIZES: dict[str, int] = {"one_ref": 20, "two_refs": 20}
ELEMENTS_VAL_SEED = 2025

_ONE_REF_TEMPLATES = [
    "{r1} {part1}{bg_suffix}",
    "{bg_prefix}{r1} {third1}",
    "{r1} that {third1}{bg_suffix}",
    "{Part1}, {r1} is seen against plain {bg}.",
    "Watch {r1} as it {third1}; behind it, everything is {bg}.",
]
_TWO_REF_TEMPLATES = [
    "{r1} {third1}, whereas {r2} {third2}; the background is {bg}",
    "{r1} {third1} as {r2} {third2}, {bg} backdrop",
    "{bg_prefix}{r1} {third1}; meanwhile, {r2} {third2}",
    "two sprites on a {bg} canvas: {r1} {part1}, plus {r2} {part2}",
]


def suite_sprites(heldout: bool = True) -> list[dict[str, str]]:
    """Every sprite look the suite may use: held out from training
    (``world.shapes_world.is_heldout_sprite``; ``heldout=False``: those training draws, for
    the validation suite), no image-only colour (purple), no unseen colour/shape pair of the
    contract in either colour. Looks are ``{"shape", "pattern", "color", "color2"}``; the
    order of the two colours sets the pattern's phase."""
    colors = [c for c in OBJECT_COLORS if c != IMAGE_ONLY_COLOR]
    return [
        {"shape": s, "pattern": p, "color": a, "color2": b}
        for s in SHAPES
        for p in PATTERNS
        for a in colors
        for b in colors
        if a != b
        and (a, s) not in UNSEEN_PAIRS
        and (b, s) not in UNSEEN_PAIRS
        and is_heldout_sprite(s, p, a, b) == heldout
    ]


def _suite_prompt(n_refs: int, motions: list[str], bg: str, rng: random.Random) -> str:
    forms = [rng.choice(SUITE_MOTIONS[m]) for m in motions]
    slots: dict[str, str] = {
        "bg": bg,
        "bg_suffix": rng.choice(BG_SUFFIX).format(bg=bg),
        "bg_prefix": rng.choice(BG_PREFIX).format(bg=bg),
    }
    for k, (part, third) in enumerate(forms, start=1):
        slots |= {f"r{k}": f"<ref{k}>", f"part{k}": part, f"third{k}": third}
        slots[f"Part{k}"] = part.capitalize()
    templates = _ONE_REF_TEMPLATES if n_refs == 1 else _TWO_REF_TEMPLATES
    return rng.choice(templates).format(**slots)


def build_elements_suite(
    n: int | dict[str, int] | None = None, seed: int = 2024, heldout: bool = True
) -> list[dict[str, Any]]:
    """The held-out elements prompts, deterministic in ``seed``.

    ``n``: entries per category (``one_ref``, ``two_refs``), one number for both or a dict
    overriding ``ELEMENTS_SUITE_SIZES``. Every reference is a held-out sprite
    (:func:`suite_sprites`; ``heldout=False``: a training sprite, the validation suite);
    shapes, sizes, motions and backgrounds are balanced; the two sprites of an entry have
    different colour pairs, and every entry has a layout the world allows
    (:func:`place_sprites`). Prompts use the held-out wording of the shapes
    suite. Entries are ``{"name", "category", "prompt", "references": [{"shape", "pattern",
    "color", "color2", "size"}], "motions", "background"}``; ``motions`` and ``background``
    are what the prompt says (the ground-truth renderer reads them, the judge reads the
    prompt).
    """
    sizes = dict(ELEMENTS_SUITE_SIZES)
    if isinstance(n, int):
        sizes = dict.fromkeys(sizes, n)
    elif n is not None:
        unknown = set(n) - set(sizes)
        if unknown:
            raise ValueError(f"unknown categories {sorted(unknown)}; allowed: {list(sizes)}")
        sizes |= n
    rng = random.Random(seed)
    looks = suite_sprites(heldout)
    by_shape = {s: [lk for lk in looks if lk["shape"] == s] for s in SHAPES}
    cursor = dict.fromkeys(SHAPES, 0)
    for s in SHAPES:
        rng.shuffle(by_shape[s])

    def next_look(shape: str, avoid: set[frozenset[str]]) -> dict[str, str]:
        # Cycle through the shape's looks, skipping a colour pair already in the clip. Held-out
        # circles all have one pair (green/yellow: a blue circle is an unseen pair), so a
        # second circle in a clip becomes the next shape instead.
        for other in (shape, *[s for s in SHAPES if s != shape]):
            pool = by_shape[other]
            for _ in range(len(pool)):
                look = pool[cursor[other] % len(pool)]
                cursor[other] += 1
                if frozenset((look["color"], look["color2"])) not in avoid:
                    return dict(look)
        raise ValueError(f"no held-out sprite differs from {sorted(map(sorted, avoid))}")

    suite: list[dict[str, Any]] = []
    for category, n_refs in (("one_ref", 1), ("two_refs", 2)):
        count = sizes[category]
        columns = [
            balanced(list(SHAPES), count * n_refs, rng),
            balanced(list(SIZES), count * n_refs, rng),
            balanced(list(MOTIONS), count * n_refs, rng),
        ]
        backgrounds = balanced(list(BACKGROUNDS), count, rng)
        for i in range(count):
            bg = backgrounds[i]
            shapes, sizes_, motions = (col[i * n_refs : (i + 1) * n_refs] for col in columns)
            for attempt in range(50):
                refs: list[dict[str, Any]] = []
                for shape, size in zip(shapes, sizes_, strict=True):
                    taken = {frozenset((r["color"], r["color2"])) for r in refs}
                    refs.append(next_look(shape, taken) | {"size": size})
                layout_rng = np.random.default_rng([seed, len(suite), attempt])
                if place_sprites(refs, motions, bg, layout_rng) is not None:
                    break
                # two large sprites moving toward each other may not fit: shrink, then redraw
                sizes_ = ["small"] * n_refs if attempt >= 1 else sizes_
                motions = [rng.choice(MOTIONS) for _ in motions] if attempt >= 2 else motions
            else:  # pragma: no cover - two small sprites always fit the 64 px canvas
                raise RuntimeError(f"no layout for suite entry {len(suite)}")
            suite.append(
                {
                    "name": f"elements-{len(suite):03d}",
                    "category": category,
                    "prompt": _suite_prompt(n_refs, motions, bg, rng),
                    "references": refs,
                    "motions": list(motions),
                    "background": bg,
                }
            )
    return suite


def build_elements_val() -> list[dict[str, Any]]:
    """The validation suite (``evals/suites/elements_val.jsonl``): training sprites, its own
    seed and entry names (``elements-val-NNN``), so no entry is a held-out one."""
    suite = build_elements_suite(ELEMENTS_VAL_SIZES, seed=ELEMENTS_VAL_SEED, heldout=False)
    return [e | {"name": e["name"].replace("elements-", "elements-val-")} for e in suite]


def write_elements_suite(path: Path = ELEMENTS_SUITE_PATH, seed: int = 2024) -> Path:
    """Write ``build_elements_suite(seed=seed)`` as JSON lines (the committed
    ``evals/suites/elements_suite.jsonl``)."""
    return _write(Path(path), build_elements_suite(seed=seed))


def write_elements_val(path: Path = ELEMENTS_VAL_PATH) -> Path:
    """Write :func:`build_elements_val` as JSON lines (the committed validation suite)."""
    return _write(Path(path), build_elements_val())


def _write(path: Path, suite: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(path, suite)
    return path


if __name__ == "__main__":
    print(f"wrote {write_elements_suite()} and {write_elements_val()}")
