"""What the pages keep between runs and carry from one page to another: the Generate form's
values, the storyboard's rows, a past job's settings loaded into either, and the crisp
preview of a finished clip. No streamlit here: the pages put these values in
``st.session_state`` under the keys named below, and the tests call the same functions.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.files import write_json_atomic
from pipelines.storyboard import DEFAULT_CANDIDATES
from pipelines.text_to_video import DEFAULT_GUIDANCE, DEFAULT_STEPS
from pipelines.video_io import encode_video_bytes, read_video
from studio.gallery import Job
from studio.generate import split_lora
from studio.jobs import MAX_FRAMES, MAX_PROMPT_CHARS

FPS = 8
# The seed field's largest value: a browser's number field keeps whole numbers exactly up to
# 2**53 - 1. A job made through the CLI or API with a larger seed (they take up to 2**63 - 1)
# loads with a note instead (its Re-run in the Gallery repeats it exactly).
SEED_MAX = 2**53 - 1
FIRST_FRAME = {"model's default": None, "image first": True, "with the clip": False}
PREVIEW_SIDE = 384  # clips are 64 px: shown 6× larger, every pixel a crisp block

# The Generate page's widget keys and their values on a fresh page. ``draft`` is the prompt,
# shared with the Elements page (its Insert buttons add placeholders to it).
GENERATE_DEFAULTS: dict[str, Any] = {
    "draft": "",
    "negative": "",
    "seed": 0,
    "seed_locked": False,
    "frames": 16,
    "fps": FPS,  # a loaded job's own (the CLI's and API's may differ)
    "steps": DEFAULT_STEPS,
    "guidance": DEFAULT_GUIDANCE,
    "first_frame": "model's default",
    "best_of": 1,
    "lora_path": "",
    "lora_scale": 1.0,
}
# The Storyboard page's: ``scenes`` holds its rows ({prompt, frames}), the rest are widgets.
STORYBOARD_DEFAULTS: dict[str, Any] = {
    "sb_seed": 0,
    "sb_seed_locked": False,
    "sb_steps": DEFAULT_STEPS,
    "sb_guidance": DEFAULT_GUIDANCE,
    "sb_first_frame": "model's default",
    "candidates": DEFAULT_CANDIDATES,
    "sb_lora_path": "",
    "sb_lora_scale": 1.0,
}
NEW_SCENE = {"prompt": "", "frames": 16}
STORYBOARD_DRAFT = "storyboard_draft.json"  # in the gallery folder: the rows being edited
MAX_DRAFT_SCENES = 256  # rows a saved draft may bring back (a film is at most 256 frames)
EXAMPLE_SCENES = [
    {"prompt": "a red square moving right on a black background", "frames": 16},
    {"prompt": "a red square moving up on a black background", "frames": 16},
]


def new_seed() -> int:
    return random.randrange(SEED_MAX + 1)


def first_frame_label(image_first: bool | None) -> str:
    return next(label for label, value in FIRST_FRAME.items() if value == image_first)


def lora_spec(path: str, scale: float) -> str | None:
    """The page's two LoRA fields as the CLI's ``PATH[:SCALE]`` (None: no adapter). Not
    checked here: :func:`studio.jobs.check_lora` checks it when the job is queued."""
    path = (path or "").strip()
    if not path:
        return None
    scale = round(float(scale), 4)  # the field's steps add up to 0.30000000000000004
    return path if scale == 1.0 else f"{path}:{scale!r}"


def lora_label(spec: str | None) -> str | None:
    """A LoRA spec in a few words for a job card: ``LoRA style/lora ×0.8``."""
    if not spec:
        return None
    path, scale = split_lora(spec)
    name = str(Path(*Path(path).parts[-2:])) if path else path
    return f"LoRA {name}" + (f" ×{scale:g}" if scale != 1.0 else "")


def _seed_settings(key: str, seed: int) -> dict[str, Any]:
    """A job's seed for the page's field ``key``, locked; one the field cannot hold is not
    replaced silently: a new seed, unlocked, and a note (``{key}_note``) that says so."""
    if seed <= SEED_MAX:
        return {key: seed, f"{key}_locked": True}
    drawn = new_seed()
    return {
        key: drawn,
        f"{key}_locked": False,
        # shown while the field holds the seed drawn for it (the page's reruns keep it)
        f"{key}_note": {
            "seed": drawn,
            "text": f"This job's seed {seed} is larger than the field holds: a new seed is "
            "drawn here; Re-run in the Gallery repeats the job exactly.",
        },
    }


def generate_settings(job: Job) -> dict[str, Any]:
    """The Generate page's values that make ``job`` (a ``generate`` job) again; its seed is
    locked, so *Generate* repeats it until the user unlocks it."""
    r = job.request
    lora_path, lora_scale = split_lora(r.get("lora"))
    return {
        "draft": r.get("prompt", ""),
        "negative": r.get("negative_prompt") or "",
        **_seed_settings("seed", int(r.get("seed", 0))),
        "frames": int(r.get("frames", GENERATE_DEFAULTS["frames"])),
        "fps": int(r.get("fps", FPS)),
        "steps": int(r.get("steps", GENERATE_DEFAULTS["steps"])),
        "guidance": float(r.get("guidance", DEFAULT_GUIDANCE)),
        "first_frame": first_frame_label(r.get("image_first")),
        "best_of": int(r.get("best_of", 1)),
        "lora_path": lora_path,
        "lora_scale": lora_scale,
    }


def storyboard_settings(job: Job) -> dict[str, Any]:
    """The Storyboard page's values (rows included) that make ``job`` (a storyboard) again."""
    options = job.request.get("options", {})
    scenes = [
        {"prompt": s["prompt"], "frames": int(s["frames"])}
        for s in job.request.get("story", {}).get("scenes", [])
    ]
    lora_path, lora_scale = split_lora(options.get("lora"))
    return {
        "scenes": scenes,
        # a film opened is not an edit: the storyboard being edited (its draft file) stays
        # until these rows are edited, and the page offers it back (storyboard.py)
        "draft_rows": [dict(s) for s in scenes],
        "scenes_from_film": job.id,
        **_seed_settings("sb_seed", int(options.get("seed", 0))),
        "sb_steps": int(options.get("steps", STORYBOARD_DEFAULTS["sb_steps"])),
        "sb_guidance": float(options.get("guidance", DEFAULT_GUIDANCE)),
        "sb_first_frame": first_frame_label(options.get("image_first")),
        "candidates": int(options.get("candidates", DEFAULT_CANDIDATES)),
        "sb_lora_path": lora_path,
        "sb_lora_scale": lora_scale,
    }


def settings_for(job: Job) -> dict[str, Any]:
    return generate_settings(job) if job.kind == "generate" else storyboard_settings(job)


def page_for(job: Job) -> str:
    """The page that shows ``job`` and its settings."""
    return "pages/generate.py" if job.kind == "generate" else "pages/storyboard.py"


# ---------------------------------------------------------------------------- storyboard
def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def clean_scenes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The storyboard editor's rows as the page keeps them: every row stays (a new one is
    an empty prompt of 16 frames until typed into, never "None"); frames as typed, so a
    number out of range is reported (:func:`scene_problems`), not silently changed."""
    rows = []
    for r in records:
        prompt = "" if _missing(r.get("prompt")) else str(r["prompt"])
        frames = r.get("frames")
        if _missing(frames):
            frames = NEW_SCENE["frames"]
        elif isinstance(frames, float | np.floating) and float(frames).is_integer():
            frames = int(frames)
        elif isinstance(frames, np.integer):
            frames = int(frames)
        rows.append({"prompt": prompt, "frames": frames})
    return rows


def read_draft(path: Path) -> list[dict[str, Any]] | None:
    """The storyboard rows last edited (:func:`save_draft`), or None when there are none or
    the file is not a list of scene rows (JSON only: nothing in it runs)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, list) or not data:
        return None
    rows = [r for r in data[:MAX_DRAFT_SCENES] if _draft_row(r)]
    return clean_scenes(rows) if len(rows) == len(data[:MAX_DRAFT_SCENES]) else None


def _draft_row(row: Any) -> bool:
    """A row as the editor keeps one: a prompt (text, at most a job's length) and a frame
    count :func:`frames_problem` accepts; anything else means the file is not ours."""
    if not isinstance(row, dict) or set(row) != {"prompt", "frames"}:
        return False
    prompt = row["prompt"]
    return (
        isinstance(prompt, str)
        and len(prompt) <= MAX_PROMPT_CHARS
        and frames_problem(row["frames"]) is None
    )


def save_draft(path: Path, rows: list[dict[str, Any]]) -> None:
    """Keep the storyboard being edited, so a refresh while another job (a scene preview)
    is in the URL, or a new tab, finds it again. Only rows a draft may hold are kept (a row
    still being typed, out of range, is left out); no rows: no draft. The page calls it only
    when its rows changed."""
    rows = [r for r in clean_scenes(rows) if _draft_row(r)]
    if rows:
        write_json_atomic(path, rows)
    else:
        path.unlink(missing_ok=True)


def apply_edits(base: list[dict[str, Any]], edits: dict[str, Any] | None) -> list[dict]:
    """The rows a ``st.data_editor`` shows: its ``base`` rows with its edit state applied
    (``edited_rows``, ``deleted_rows``, ``added_rows``, as in ``st.session_state[key]``);
    for a callback, which runs before the editor hands back its table."""
    edits = edits or {}
    rows = [dict(r) for r in base]
    for i, change in (edits.get("edited_rows") or {}).items():
        if 0 <= int(i) < len(rows):
            rows[int(i)].update(change)
    deleted = {int(i) for i in edits.get("deleted_rows") or []}
    rows = [r for i, r in enumerate(rows) if i not in deleted]
    rows += [{**NEW_SCENE, **added} for added in edits.get("added_rows") or []]
    return clean_scenes(rows)


def move_scene(rows: list[dict], index: int, delta: int) -> tuple[list[dict], int]:
    """``rows`` with scene ``index`` moved ``delta`` places, and where it now is (it stays
    put at either end)."""
    rows = list(rows)
    j = index + delta
    if 0 <= index < len(rows) and 0 <= j < len(rows):
        rows[index], rows[j] = rows[j], rows[index]
        return rows, j
    return rows, index


def scene_label(i: int, row: dict[str, Any]) -> str:
    return f"{i + 1}: {row['prompt'] or '(no prompt yet)'}"


def frames_problem(frames: Any, where: str = "") -> str | None:
    """What is wrong with a frame count, naming the allowed range; None when it is fine."""
    if (
        isinstance(frames, bool)
        or not isinstance(frames, int | float)
        or not math.isfinite(frames)
        or frames != int(frames)
    ):
        return f"{where}frames must be a whole number from 1 to {MAX_FRAMES}, got {frames!r}"
    if not 1 <= frames <= MAX_FRAMES:
        return (
            f"{where}{int(frames)} frames is too many: at most {MAX_FRAMES} frames "
            f"({MAX_FRAMES / FPS:g} s at {FPS} fps)"
            if frames > MAX_FRAMES
            else f"{where}at least 1 frame"
        )
    return None


def scene_problems(rows: list[dict[str, Any]]) -> list[str]:
    return [p for i, r in enumerate(rows) if (p := frames_problem(r["frames"], f"Scene {i + 1}: "))]


# ---------------------------------------------------------------------------- wording
# What studio.uploads says in a library's terms, in a user's (the checks stay there).
# ---------------------------------------------------------------------------- preview
def upscale(frames: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """(F, H, W, 3) frames enlarged by the whole factor that brings the longer side to
    ``side`` (at least 1), each pixel repeated: no smoothing, so shapes keep sharp edges."""
    k = max(1, side // max(frames.shape[1], frames.shape[2]))
    return frames.repeat(k, axis=1).repeat(k, axis=2)


def preview_gif(video: str | Path, side: int = PREVIEW_SIDE) -> bytes:
    """A looping GIF of the clip at ``video``, enlarged without smoothing (:func:`upscale`):
    what the pages show, and the GIF download."""
    frames, fps = read_video(video)
    return encode_video_bytes(upscale(frames, side), fps, ".gif")
