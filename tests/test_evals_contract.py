"""The judge's contract (evals.contract) is its own copy of shapes_world.md: these tests check
that it agrees with the renderer (world.shapes_world), that the judge reads every word the
renderer writes, and that the evals package stays independent of world, train and studio."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import evals
from evals import contract as ct
from world import shapes_world as sw

REPO = Path(__file__).resolve().parents[1]
EVALS = Path(evals.__file__).parent


# ------------------------------------------------------------------------- the world itself


def test_palette_and_geometry_match_the_renderer():
    assert ct.OBJECT_COLORS == sw.OBJECT_COLORS
    assert ct.BACKGROUNDS == sw.BACKGROUNDS
    assert ct.SHAPES == sw.SHAPES and ct.SIZES == sw.SIZES and ct.MOTIONS == sw.MOTIONS
    assert ct.MOVING == tuple(m for m in sw.MOTIONS if m != "still")
    assert (
        set(ct.UNSEEN_PAIRS) == sw.EXCLUDED_PAIRS and {ct.IMAGE_ONLY_COLOR} == sw.IMAGE_ONLY_COLORS
    )
    for s in (32, 64, 128):
        assert sw.box_side("small", s) == round(ct.SMALL_SIDE_FRAC * s)
        assert sw.box_side("large", s) == round(ct.LARGE_SIDE_FRAC * s)
        assert sw.speed(s) == ct.SPEED_FRAC * s


def test_reference_elements_match_the_renderer():
    assert ct.PATTERNS == sw.PATTERNS
    assert ct.REFERENCE_BACKGROUND == sw.REFERENCE_BACKGROUND
    sprite = sw.ObjectSpec(
        "square", "red", "large", "still", 0, 0, pattern="checker", color2="blue"
    )
    image = sw.render_reference(sprite)  # the renderer's default reference image
    assert image.shape == (ct.REFERENCE_SIDE, ct.REFERENCE_SIDE, 3)
    assert tuple(int(v) for v in image[0, 0]) == ct.REFERENCE_BACKGROUND


# ---------------------------------------------------------------------------------- captions


def test_the_judge_reads_every_training_size_and_motion_word():
    for size, words in sw.SIZE_WORDS.items():
        for word in words:
            parsed = ct.parse_caption(f"a {word} red square on a black background")
            assert parsed.objects[0].size == size, word
    for motion, phrases in sw.MOTION_PHRASES.items():
        for phrase in phrases:
            assert ct.find_motion(phrase.split()) == motion, phrase
    for phrase in sw.BACKGROUND_PHRASES:
        for bg in sw.BACKGROUNDS:
            assert ct.parse_caption(f"a red square {phrase.format(bg=bg)}").background == bg


# ------------------------------------------------------------------------------ independence


def _imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth (lazy imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_evals_imports_neither_world_nor_train_nor_studio():
    sources = sorted(EVALS.rglob("*.py"))
    assert {p.stem for p in sources} >= {"contract", "detect", "shapes", "elements", "storyboards"}
    for path in sources:
        bad = _imported_modules(path) & {"world", "train", "studio"}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_suites_ship_as_package_data():
    names = {"shapes_suite.jsonl", "shapes_val.jsonl", "elements_suite.jsonl"}
    names |= {"storyboard_suite.json", "storyboard_val.json"}
    assert names <= {p.name for p in evals.SUITES_DIR.iterdir()}
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "evals*" in config["packages"]["find"]["include"]
    shipped = {p.name for g in config["package-data"]["evals"] for p in EVALS.glob(g)}
    assert names <= shipped
