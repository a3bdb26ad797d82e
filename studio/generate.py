"""Generation logic behind ``studio generate`` (and the UI): pipeline loading, seeds, sidecars.

No argument parsing and no UI here, so tests and other front ends call the same code.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from pipelines.text_to_video import ShapesVideoPipeline, to_uint8
from pipelines.video_io import SUPPORTED_EXTENSIONS, write_video

from .errors import StudioError

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
MODEL_ENV = "STUDIO_MODEL"
SCORER_ENV = "STUDIO_SCORER"  # the UI's scorer spec for best-of-N (``studio ui --scorer``)


def default_model_path() -> Path:
    """``$STUDIO_MODEL`` if set, else the model shipped inside the package."""
    return Path(os.environ.get(MODEL_ENV) or DEFAULT_MODEL_DIR)


def weights_hash(model_dir: Path) -> str:
    """sha256 over the model's safetensors files (names and bytes), first 16 hex digits."""
    h = hashlib.sha256()
    for f in sorted(Path(model_dir).rglob("*.safetensors")):
        h.update(str(f.relative_to(model_dir)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


_PIPELINES: dict[str, ShapesVideoPipeline] = {}


def load_pipeline(
    model: str | Path | None = None, device: str | None = None
) -> ShapesVideoPipeline:
    """Load (once per process) a saved pipeline; clear errors for missing or corrupt weights."""
    path = Path(model) if model else default_model_path()
    key = f"{path.resolve()}|{device}"
    if key in _PIPELINES:
        return _PIPELINES[key]
    if not (path / "model_index.json").is_file():
        raise StudioError(f"no model at {path}: expected a diffusers folder with model_index.json")
    try:
        from diffusers.utils import logging as df_logging
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        df_logging.disable_progress_bar()
        pipe = ShapesVideoPipeline.from_pretrained(path)
    except Exception as exc:  # corrupt/missing weights surface as many exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudioError(f"could not load the model at {path}: {first}") from None
    pipe.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe.set_progress_bar_config(disable=True)
    _PIPELINES[key] = pipe
    return pipe


@dataclass
class GenerateRequest:
    prompt: str
    negative_prompt: str | None = None
    seed: int = 0
    steps: int = 25
    guidance: float = 4.0
    frames: int = 16
    fps: int = 8
    height: int = 64
    width: int = 64


@dataclass
class GenerateResult:
    path: Path
    sidecar: Path
    frames: np.ndarray  # (F, H, W, 3) uint8
    record: dict = field(default_factory=dict)


def check_output_path(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise StudioError(
            f"unknown output extension {out.suffix or '(none)'!r} for {out}; allowed: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise StudioError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise StudioError(f"output folder is not writable: {parent}")
    return out


def ensure_output_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check it is writable; StudioError otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudioError(f"cannot create output folder {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise StudioError(f"output folder is not writable: {path}")
    return path


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("shapes-video-studio", "torch", "diffusers", "transformers", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sample(pipe: ShapesVideoPipeline, request: GenerateRequest, progress=None) -> np.ndarray:
    """The request's frames as uint8 ``(F, H, W, 3)``; ``progress(step, total)`` per step."""
    total = request.steps

    def on_step(_pipe, i, _t, tensors):
        if progress is not None:
            progress(i + 1, total)
        return tensors

    try:
        video = pipe(
            request.prompt,
            negative_prompt=request.negative_prompt,
            num_frames=request.frames,
            height=request.height,
            width=request.width,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            generator=torch.Generator("cpu").manual_seed(request.seed),
            callback_on_step_end=on_step,
        ).frames[0]
    except ValueError as exc:
        raise StudioError(str(exc)) from None
    return to_uint8(video)


def write_jsonl_atomic(path: Path, records: list[dict]) -> None:
    """One JSON object a line, written to a temporary sibling and renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate(
    request: GenerateRequest,
    out: str | Path,
    model: str | Path | None = None,
    pipe: ShapesVideoPipeline | None = None,
    progress=None,
    extra: dict | None = None,
    best_of: int = 1,
    scorer=None,
) -> GenerateResult:
    """Generate one clip, write it (atomically) and its sidecar ``NAME.json``.

    progress: optional callable ``(step, total)`` called after every denoising step.
    best_of: with a ``scorer`` (``pipelines.scoring``), generate this many candidates with
        seeds ``seed, seed + 1, …`` and keep the one it scores highest; the sidecar records
        every candidate's seed and score, and its ``seed`` is the kept one, so
        ``--from-sidecar`` gives the kept clip back.
    """
    out = check_output_path(out)
    if best_of < 1 or (best_of > 1 and scorer is None):
        raise StudioError("best-of needs N >= 1, and a scorer when N > 1")
    model_path = Path(model) if model else default_model_path()
    pipe = pipe or load_pipeline(model_path)

    t0 = time.time()
    if best_of == 1:
        frames = sample(pipe, request, progress)
        chosen = request
    else:
        candidates = []
        for i in range(best_of):
            req = replace(request, seed=request.seed + i)
            clip = sample(pipe, req, progress)
            candidates.append((scorer.score(clip, request.prompt).score, req, clip))
        _, chosen, frames = max(candidates, key=lambda c: c[0])
        extra = {
            **(extra or {}),
            "best_of": {
                "n": best_of,
                "scorer": getattr(scorer, "spec", type(scorer).__name__),
                "candidates": [{"seed": r.seed, "score": sc} for sc, r, _ in candidates],
                "chosen_seed": chosen.seed,
            },
        }
    t_gen = time.time() - t0
    write_video(out, frames, fps=chosen.fps)
    record = {
        **asdict(chosen),
        "model": str(model_path),
        "weights_hash": weights_hash(model_path) if model_path.is_dir() else None,
        "scheduler": type(pipe.scheduler).__name__,
        "device": str(pipe.device),
        "versions": package_versions(),
        "timings": {"generate_s": round(t_gen, 3), "total_s": round(time.time() - t0, 3)},
        "output": out.name,
        **(extra or {}),
    }
    sidecar = out.with_suffix(".json")
    write_json_atomic(sidecar, record)
    return GenerateResult(path=out, sidecar=sidecar, frames=frames, record=record)


@dataclass
class StoryboardOptions:
    """How a storyboard is rendered (the story itself says what happens)."""

    seed: int = 0
    steps: int = 25
    guidance: float = 4.0
    window: int = 16
    context: int = 4
    height: int = 64
    width: int = 64
    per_scene: bool = False  # also write NAME-sceneK.EXT for every scene


def render_storyboard(
    story,
    out: str | Path,
    options: StoryboardOptions,
    model: str | Path | None = None,
    pipe: ShapesVideoPipeline | None = None,
    progress=None,
    extra: dict | None = None,
) -> GenerateResult:
    """Generate a storyboard (``pipelines.storyboard``), then write the video, the per-scene
    files if asked, and the sidecar; a failure at any point leaves none of them behind.

    progress: optional callable ``(windows_done, windows_total)``.
    """
    from pipelines.storyboard import generate_storyboard

    # 1. Check inputs (the windows check the rest before the first one runs)
    t0 = time.time()
    out = check_output_path(out)
    model_path = Path(model) if model else default_model_path()
    pipe = pipe or load_pipeline(model_path)
    scene_paths = [
        out.with_name(f"{out.stem}-scene{i}{out.suffix}") for i in range(1, len(story.scenes) + 1)
    ]
    t_load = time.time() - t0

    # 2. Generate every window (nothing is written yet)
    t1 = time.time()
    frames, ranges = generate_storyboard(
        pipe,
        story,
        seed=options.seed,
        window=options.window,
        context=options.context,
        steps=options.steps,
        guidance=options.guidance,
        height=options.height,
        width=options.width,
        progress=progress,
    )
    t_gen = time.time() - t1

    # 3. Write the video, the per-scene files and the sidecar; undo all of them on failure
    sidecar = out.with_suffix(".json")
    written: list[Path] = []
    try:
        written.append(write_video(out, frames, fps=story.fps))
        if options.per_scene:
            for path, (start, end) in zip(scene_paths, ranges, strict=True):
                written.append(write_video(path, frames[start:end], fps=story.fps))
        record = {
            "kind": "storyboard",
            "story": story.to_dict(),
            "scenes": [
                {"prompt": s.prompt, "start": a, "end": b}  # [start, end) in frames
                | ({"file": p.name} if options.per_scene else {})
                for s, (a, b), p in zip(story.scenes, ranges, scene_paths, strict=True)
            ],
            "frames": len(frames),
            "fps": story.fps,
            **{k: v for k, v in asdict(options).items() if k != "per_scene"},
            "model": str(model_path),
            "weights_hash": weights_hash(model_path) if model_path.is_dir() else None,
            "scheduler": type(pipe.scheduler).__name__,
            "device": str(pipe.device),
            "versions": package_versions(),
            "timings": {
                "load_s": round(t_load, 3),
                "generate_s": round(t_gen, 3),
                "per_frame_s": round(t_gen / len(frames), 4),
                "total_s": round(time.time() - t0, 3),
            },
            "output": out.name,
            **(extra or {}),
        }
        write_json_atomic(sidecar, record)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return GenerateResult(path=out, sidecar=sidecar, frames=frames, record=record)


def sidecar_model(path: str | Path) -> str | None:
    """The model folder a sidecar was made with (None if it does not say)."""
    return json.loads(Path(path).read_text()).get("model")


def request_from_sidecar(path: str | Path) -> GenerateRequest:
    """Rebuild the request recorded in a sidecar (same sidecar, same machine → same frames)."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"sidecar not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StudioError(f"{path} is not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
        kind = data.get("kind") if isinstance(data, dict) else None
        hint = " (a storyboard sidecar: use `studio storyboard`)" if kind == "storyboard" else ""
        raise StudioError(f"{path} has no prompt to regenerate{hint}")
    fields_ = GenerateRequest.__dataclass_fields__
    return GenerateRequest(**{k: v for k, v in data.items() if k in fields_})
