"""The storyboard judge (``studio eval storyboards DIR``) and its held-out storyboards.

``evaluate_storyboard`` / ``evaluate_storyboard_dir`` judge multi-scene storyboard videos:
per-scene motion (the single-clip judge, :func:`evals.shapes.judge`), identity and the position
jump at each scene boundary (reports: :func:`evals.report.write_storyboard_report`).
``build_storyboard_suite`` makes the held-out storyboards
(``evals/suites/storyboard_suite.json``) and the validation ones (``storyboard_val.json``).
"""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np

from . import SUITES_DIR
from .contract import (
    BACKGROUNDS,
    IMAGE_ONLY_COLOR,
    LARGE_SIDE_FRAC,
    MOTIONS,
    OBJECT_COLORS,
    SMALL_SIDE_FRAC,
    SPEED_FRAC,
    STORYBOARD_MAX_JUMP_PX,
    STORYBOARD_REF_SIDE,
    ExpectedObject,
    parse_caption,
)
from .detect import DetectedObject, as_video, detect, read_frames
from .shapes import (
    CRITERIA,
    MAX_MATCHED_DETECTIONS,
    allowed_pairs,
    balanced,
    judge,
    motion_by_asked,
    one_motion,
    single_entry,
    wrong_item,
)

# ----------------------------------------------------------------------------------------------
# Held-out storyboards
# ----------------------------------------------------------------------------------------------

STORYBOARD_SUITE_PATH = SUITES_DIR / "storyboard_suite.json"
#: Validation storyboards for choosing storyboard settings (never the held-out suite above):
#: ``build_storyboard_suite(**STORYBOARD_VAL_ARGS)``, no prompt shared with the suite.
STORYBOARD_VAL_PATH = SUITES_DIR / "storyboard_val.json"
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
    pairs = allowed_pairs(video_colors)
    stories = []
    for i, ((color, shape), bg) in enumerate(
        zip(balanced(pairs, n, rng), balanced(list(BACKGROUNDS), n, rng), strict=True)
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
            entry = single_entry(ExpectedObject(color, shape, size, motion), bg, "single", rng)
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
# Judging
# ----------------------------------------------------------------------------------------------

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
    before, after = before[:MAX_MATCHED_DETECTIONS], after[:MAX_MATCHED_DETECTIONS]
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
    video = as_video(frames)
    _check_scene_ranges(len(video), scenes)
    # 1. Scenes: the segment's motion against its prompt
    scene_items: list[dict[str, Any]] = []
    for prompt, start, end in scenes:
        item: dict[str, Any] = {"prompt": prompt, "start": int(start), "end": int(end)}
        try:
            expectation = parse_caption(prompt)
        except ValueError as exc:
            scene_items.append(item | wrong_item(f"bad prompt: {exc}", None))
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
        frames = read_frames(sidecar.parent / str(data["output"]))
        result = evaluate_storyboard(frames, scenes)
        return item | {"status": "ok"} | result
    except Exception as exc:  # missing/odd video, bad ranges: a wrong storyboard, not a crash
        reason = f"{type(exc).__name__}: {exc}"
        wrong_scenes = [
            {"prompt": p, "start": a, "end": b} | wrong_item(reason, None) for p, a, b in scenes
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
        asked.append((one_motion(expect), sc.get("motion")))
    overall["scene_motion_by_asked"] = motion_by_asked(asked)
    return {
        "run_dir": str(run_dir),
        "bars": dict(STORYBOARD_BARS),
        "max_jump_px": STORYBOARD_MAX_JUMP_PX,
        "overall": overall,
        "items": items,
    }
