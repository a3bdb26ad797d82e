"""Generation logic behind ``studio generate`` (and the UI): pipeline loading, seeds, sidecars.

No argument parsing and no UI here, so tests and other front ends call the same code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipelines.elements import (
    MAX_REFERENCES,
    REFERENCE_SIZE,
    check_placeholders,
    prepare_reference,
    to_rgb,
)
from pipelines.files import (  # noqa: F401  (re-exported for the commands)
    clean_stale_temps,
    place_with_sidecar,
    temp_sibling,
    write_json_atomic,
    write_jsonl_atomic,
    write_temp_text,
)
from pipelines.storyboard import DEFAULT_CANDIDATES, DEFAULT_CONTEXT, DEFAULT_WINDOW
from pipelines.text_to_video import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    ShapesVideoPipeline,
    to_uint8,
)
from pipelines.video_io import MAX_FPS, SUPPORTED_EXTENSIONS, write_video
from studio.folders import ensure_output_dir  # noqa: F401  (re-exported for the commands)

from .errors import StudioError, user_words
from .shipped import (  # noqa: F401
    DEFAULT_MODEL_DIR,
    ELEMENTS_MODEL_DIR,
    MODEL_ENV,
    SCORER_ENV,
    default_model_path,
    model_for,
)
from .uploads import UploadLimits, check_image, read_image_file

# torch's generators take any seed below 2**64, but the gallery stores seeds as SQLite's
# signed 64-bit integers: [0, 2**63 - 1] is what every front end can keep and give back.
MAX_SEED = 2**63 - 1


def model_record(model_path: str | Path) -> dict:
    """What a sidecar records of its model: the folder as an absolute path (replayable from
    any working directory) and its weights' hash (what resumes and replays compare)."""
    path = Path(model_path)
    return {
        "model": str(path.absolute()),
        "weights_hash": weights_hash(path) if path.is_dir() else None,
    }


# weights_hash's results, keyed by the files' paths, sizes and modification times: a replay
# checks the sidecar's model and records it again, a batch compares it on every resume.
_WEIGHTS_HASHES: OrderedDict[tuple, str] = OrderedDict()


def weights_hash(model_dir: Path) -> str:
    """sha256 over the model's safetensors files (names and bytes), first 16 hex digits;
    read once per process until a file changes."""
    files = sorted(Path(model_dir).rglob("*.safetensors"))
    key = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _WEIGHTS_HASHES:
        h = hashlib.sha256()
        for f in files:
            h.update(str(f.relative_to(model_dir)).encode())
            h.update(f.read_bytes())
        _WEIGHTS_HASHES[key] = h.hexdigest()[:16]
        while len(_WEIGHTS_HASHES) > 32:
            _WEIGHTS_HASHES.popitem(last=False)
    return _WEIGHTS_HASHES[key]


# Loaded pipelines, most recently used last. A server takes jobs naming any adapter and scale:
# at most this many stay loaded (the least recently used is dropped), so memory stays bounded.
MAX_LOADED_PIPELINES = 3
_PIPELINES: OrderedDict[str, ShapesVideoPipeline] = OrderedDict()


def split_lora(spec: str | None) -> tuple[str, float]:
    """``PATH[:SCALE]`` → (path, scale; 1.0 when not given), nothing checked: the one rule
    every reader of a spec splits it by (a colon whose tail is no number is the path's)."""
    if not spec:
        return "", 1.0
    head, sep, tail = spec.rpartition(":")
    if sep:
        try:
            return head, float(tail)
        except ValueError:
            pass  # a colon in the path itself
    return spec, 1.0


def parse_lora(spec: str) -> tuple[Path, float]:
    """``PATH[:SCALE]`` → (adapter folder or file, scale; 1.0 when not given)."""
    path, scale = split_lora(spec)
    if not (math.isfinite(scale) and -10.0 <= scale <= 10.0):
        raise StudioError(f"LoRA scale must be a number in -10..10, got {scale!r}")
    if not Path(path).exists():
        raise StudioError(f"no LoRA adapter at {path}")
    return Path(path), scale


def load_pipeline(
    model: str | Path | None = None,
    device: str | None = None,
    compile: bool = False,
    lora: str | None = None,
) -> ShapesVideoPipeline:
    """Load (once per process) a saved pipeline; clear errors for missing or corrupt weights.

    ``compile``: ``torch.compile`` the transformer — the first clip waits for compilation,
    later ones run faster (benchmarks/perf.py), so it pays for batches, not for one clip.
    ``lora``: ``PATH[:SCALE]``, a LoRA adapter (``training: lora`` runs write RUN/lora)
    loaded onto the transformer at that scale.
    """
    path = Path(model) if model else default_model_path()
    adapter = parse_lora(lora) if lora else None
    key = f"{path.resolve()}|{device}|{compile}|{adapter}"
    if key in _PIPELINES:
        _PIPELINES.move_to_end(key)
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
    if adapter is not None:
        try:
            # safetensors only: diffusers' default falls back to unpickling a .bin adapter
            pipe.load_lora_weights(str(adapter[0]), adapter_name="lora", use_safetensors=True)
        except Exception as exc:  # a folder without an adapter, another model's adapter, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StudioError(
                f"could not load the LoRA adapter {adapter[0]} (a .safetensors file or a folder "
                f"holding one): {first}"
            ) from None
        pipe.set_adapters(["lora"], [adapter[1]])
    pipe.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe.set_progress_bar_config(disable=True)
    if compile:
        pipe.transformer.compile()
        if pipe.image_transformer is not None:
            pipe.image_transformer.compile()
    _PIPELINES[key] = pipe
    while len(_PIPELINES) > MAX_LOADED_PIPELINES:
        _PIPELINES.popitem(last=False)
    return pipe


@dataclass
class GenerateRequest:
    prompt: str
    negative_prompt: str | None = None
    seed: int = 0
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    frames: int = 16
    fps: int = 8
    height: int = 64
    width: int = 64
    # generate frame 0 as an image, then the clip continuing it; None: the model's own
    # setting (``image_first`` in its model_index.json)
    image_first: bool | None = None
    # reference elements: ``<refK>`` in the prompt is the K-th; file paths, PIL images,
    # (H, W[, C]) arrays, or ReferenceImages already read by read_references
    references: list[str | Path | Image.Image | np.ndarray | ReferenceImage] = field(
        default_factory=list
    )
    # a LoRA adapter on the model, ``PATH[:SCALE]`` (None: the model as saved)
    lora: str | None = None


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` if it is a whole number in [0, MAX_SEED]; StudioError naming ``name`` if not."""
    if not _whole(seed) or not 0 <= seed <= MAX_SEED:
        raise StudioError(f"{name} must be a whole number from 0 to 2**63-1, got {seed!r}")
    return seed


def check_request(request: GenerateRequest, where: str = "") -> GenerateRequest:
    """The settings' types, and the ranges of seed and fps, the same for every front end (the
    CLI's flags, a sidecar read back, a batch, the UI's queue): StudioError with one line,
    starting with ``where`` (e.g. the sidecar's name) when given. The other ranges depend on
    the model or are the pipeline's own (``check_inputs``: frames, steps, guidance, size)."""

    def fail(name: str, allowed: str, value) -> None:
        raise StudioError(f"{where}{name} must be {allowed}, got {value!r}")

    if not isinstance(request.prompt, str):
        fail("prompt", "a string", request.prompt)
    if request.negative_prompt is not None and not isinstance(request.negative_prompt, str):
        fail("negative_prompt", "a string or null", request.negative_prompt)
    try:
        check_seed(request.seed)
    except StudioError as exc:
        raise StudioError(f"{where}{exc}") from None
    if not _whole(request.fps) or not 1 <= request.fps <= MAX_FPS:
        fail("fps", f"a whole number from 1 to {MAX_FPS}", request.fps)
    for name in ("steps", "frames", "height", "width"):
        if not _whole(getattr(request, name)):
            fail(name, "a whole number", getattr(request, name))
    if isinstance(request.guidance, bool) or not isinstance(request.guidance, int | float):
        fail("guidance", "a number", request.guidance)
    if request.image_first is not None and not isinstance(request.image_first, bool):
        fail("image_first", "true, false or null", request.image_first)
    if not isinstance(request.references, list):
        fail("references", "a list", request.references)
    if request.lora is not None and not isinstance(request.lora, str):
        fail("lora", "a string PATH[:SCALE] or null", request.lora)
    for name in ("prompt", "negative_prompt", "lora"):
        check_text(getattr(request, name), f"{where}{name}")
    return request


def check_text(value: str | None, name: str) -> None:
    """StudioError when ``value`` holds what UTF-8 cannot encode (a lone surrogate, as JSON's
    ``"\\udfff"`` or an undecodable command-line byte gives): the text encoder, the store and
    every JSON answer would fail on it later."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise StudioError(
                f"{name} is not valid text: it holds a character UTF-8 cannot encode "
                "(a lone surrogate)"
            ) from None


@dataclass(frozen=True)
class ReferenceImage:
    """A reference element read and checked: the pixels the pipeline takes and what the
    sidecar records of it."""

    pixels: np.ndarray  # (S, S, 3) uint8, from pipelines.elements.prepare_reference
    record: dict  # file (as given), path, sha256 (of the file's bytes), size [w, h], bytes


def reference_size(request: GenerateRequest) -> int:
    """The side references are prepared at: 64 px, or the clip's shorter side when larger
    (the pipeline brings them to that side itself; this only avoids shrinking them first)."""
    return reference_side(request.height, request.width)


def reference_side(height: int, width: int) -> int:
    """:func:`reference_size` for a clip of ``height`` × ``width``."""
    return max(REFERENCE_SIZE, min(height, width))


def read_references(
    items: list, limits: UploadLimits | None = None, size: int = REFERENCE_SIZE
) -> list[ReferenceImage]:
    """Read, check and prepare (at ``size`` px) every reference of a request; StudioError
    (one line, naming the reference) for too many, a missing file, a folder, a file too
    large or declaring too many pixels, or anything Pillow cannot decode. Files are checked
    like uploads (:mod:`studio.uploads`); transparency is composited over the reference
    background."""
    if len(items) > MAX_REFERENCES:
        raise StudioError(f"{len(items)} reference images were given; at most {MAX_REFERENCES}")
    limits = limits or UploadLimits.from_env()
    out = []
    for k, item in enumerate(items, start=1):
        if isinstance(item, ReferenceImage):  # already read (the CLI reads before loading)
            out.append(item)
            continue
        try:
            if isinstance(item, str | os.PathLike):
                path = Path(item)
                data = read_image_file(path, limits, what=f"reference image {k}")
                try:
                    image = check_image(data, limits, name=str(path), mode=None)
                except StudioError as exc:
                    raise StudioError(f"reference image {k}: {exc}") from None
                record = {
                    "file": str(item),
                    "path": str(path.resolve()),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": [image.width, image.height],
                    "bytes": len(data),
                }
            else:  # pixels from a caller, not a file: recorded, but not re-made from a sidecar
                image = to_rgb(item)
                record = {
                    "file": None,
                    "pixels_sha256": hashlib.sha256(image.tobytes()).hexdigest(),
                    "size": [image.shape[1], image.shape[0]],
                }
            out.append(ReferenceImage(prepare_reference(image, size), record))
        except ValueError as exc:
            raise StudioError(f"reference image {k}: {exc}") from None
    return out


def read_story_references(
    story, limits: UploadLimits | None = None, size: int = REFERENCE_SIZE
) -> list[list[ReferenceImage]]:
    """Each scene's references read as ``studio generate --ref`` reads them
    (:func:`read_references`), the paths resolved against the story file's folder, and
    checked against the scene's ``<refK>`` placeholders; StudioError naming the scene."""
    out = []
    for i, (scene, paths) in enumerate(zip(story.scenes, story.reference_paths(), strict=True), 1):
        try:
            refs = read_references(paths, limits, size)
            check_prompt_references(scene.prompt, len(refs))
        except StudioError as exc:
            raise StudioError(f"scene {i}: {exc}") from None
        out.append(refs)
    return out


def check_prompt_references(prompt: str, n_references: int) -> None:
    """``<ref1>`` … ``<refN>`` in the prompt match the N reference images; StudioError if not."""
    try:
        check_placeholders(prompt, n_references)
    except ValueError as exc:
        raise StudioError(str(exc)) from None


def max_references(model: str | Path | ShapesVideoPipeline) -> int | None:
    """How many reference images the model takes (0: none, a text-to-video model), read from
    a loaded pipeline or from a model folder's ``transformer/config.json`` without loading
    it; None when the folder has no readable config (loading it will say why)."""
    if isinstance(model, ShapesVideoPipeline):
        return model.max_references
    try:
        config = json.loads((Path(model) / "transformer" / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return int(config.get("max_references", 0) or 0) if isinstance(config, dict) else None


def check_model_takes_references(n_references: int, model_max: int | None, model: object) -> None:
    """StudioError when ``n_references`` images are more than the model takes."""
    if n_references == 0 or model_max is None or n_references <= model_max:
        return
    if model_max == 0:
        raise StudioError(
            f"the model at {model} has no reference-element conditioning, so it cannot use "
            "reference images: load a model trained with elements"
        )
    raise StudioError(
        f"{n_references} reference images were given; the model at {model} takes at most "
        f"{model_max}"
    )


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
    check_output_folder(out)
    if out.is_dir():
        raise StudioError(f"{out} is a folder; give a file name such as {out / 'clip.mp4'}")
    check_sidecar_owner(out)
    return out


def read_record(path: Path) -> dict:
    """A sidecar's JSON object, or ``{}`` when there is none or it is not one (a check that
    only consults a sidecar then lets the write go on as before)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _lora_key(spec):
    """A LoRA spec as (resolved path, scale), so ``adp``, ``./adp/`` and ``adp:1.0`` match."""
    if not isinstance(spec, str):
        return spec
    try:
        path, scale = parse_lora(spec)
    except StudioError:  # gone since: compare as written
        return spec
    return str(path.resolve()), scale


def check_same_settings(sidecar: Path, now: dict, elsewhere: str) -> None:
    """StudioError when ``sidecar`` (a finished video's) records another value for a key of
    ``now``: resuming would leave one folder (and its evaluation) with videos of two settings.
    A key the sidecar lacks, or an unreadable sidecar, is not compared (kept as before)."""
    record = read_record(sidecar)
    for key, value in now.items():
        if key not in record:
            continue
        same = _lora_key(record[key]) == _lora_key(value) if key == "lora" else record[key] == value
        if same:
            continue
        if key == "weights_hash":  # a hash means nothing to a user: name the model
            made = f"another model's weights ({record.get('model', 'a model')}, {record[key]})"
            asks = f"this run's model has {value}"
        else:
            made, asks = f"{key} {record[key]!r}", f"this run asks for {value!r}"
        raise StudioError(
            f"{sidecar.parent} already holds videos made with {made} ({sidecar.name}), "
            f"{asks}: rerun with the same settings to resume, or write to {elsewhere}"
        )


def check_sidecar_owner(out: Path, writes_sidecar: bool = True) -> None:
    """StudioError when ``out``'s sidecar (``NAME.json``) describes another video that is
    still there (``NAME.gif`` beside ``NAME.mp4``): writing ``out`` would leave that video
    beside a record of other frames. A file written without its own sidecar
    (``writes_sidecar=False``: a storyboard's ``NAME-sceneK.EXT``) may not replace the video
    its ``NAME.json`` records either, since that record would then describe other frames."""
    sidecar = out.with_suffix(".json")
    owner = read_record(sidecar).get("output")  # none, or not one of ours: replaced as before
    if (
        isinstance(owner, str)
        and (owner != out.name or not writes_sidecar)
        and Path(owner).stem == out.stem  # NAME.gif's record, not a copied pair's
        and (out.parent / owner).is_file()
    ):
        raise StudioError(
            f"{sidecar} is the record of {out.parent / owner}, which writing {out} would "
            "replace; choose another output name (each video's sidecar is NAME.json)"
        )


def check_output_folder(out: Path) -> None:
    """The folder ``out`` is written into exists and is writable; StudioError otherwise."""
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise StudioError(f"{parent} is a file, not a folder to write {out.name} into")
    if not parent.is_dir():
        raise StudioError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise StudioError(f"output folder is not writable: {parent}")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("shapes-video-studio", "torch", "diffusers", "transformers", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def model_frames(pipe: ShapesVideoPipeline, frames: int) -> int:
    """Frames to ask the pipeline for so that a ``frames``-frame clip can be cut from them:
    ``frames``, or with a VAE that compresses time (clips of 1 + k·step frames) the next
    count it makes, e.g. 17 for 16 at 4×. The studio's default 16 works on every model."""
    space = pipe.latent_space
    if not isinstance(frames, int) or frames < 1 or space.valid_frames(frames):
        return frames  # as asked: valid, or refused by the pipeline with its own message
    return space.nearest_frames(frames)[1]


def sample(
    pipe: ShapesVideoPipeline,
    request: GenerateRequest,
    progress=None,
    references: list[np.ndarray] | None = None,
) -> np.ndarray:
    """The request's frames as uint8 ``(F, H, W, 3)``; ``progress(step, total)`` per step.
    A frame count the model's VAE cannot make is cut from the next one it can (model_frames).

    references: the prepared reference images (``ReferenceImage.pixels``); None or empty:
    text-to-video, and the pipeline is called as before reference elements existed.
    """
    total = request.steps
    extra = {"reference_images": list(references)} if references else {}
    if request.image_first is not None:  # else the pipeline's config decides
        extra["image_first"] = request.image_first

    def on_step(_pipe, i, _t, tensors):
        if progress is not None:  # an image-first clip's frame 0: no clip step done yet, but
            progress(0 if _pipe.drawing_first_frame else i + 1, total)  # a chance to cancel
        return tensors

    try:
        video = pipe(
            request.prompt,
            negative_prompt=request.negative_prompt,
            num_frames=model_frames(pipe, request.frames),
            height=request.height,
            width=request.width,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            generator=torch.Generator("cpu").manual_seed(request.seed),
            callback_on_step_end=on_step,
            **extra,
        ).frames[0]
    except ValueError as exc:  # the pipeline's checks, in the studio's words
        raise StudioError(user_words(str(exc))) from None
    return to_uint8(video)[: request.frames]


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

    progress: optional callable ``(step, total)`` called after every denoising step (with
        step 0 after each step of an image-first clip's first frame).
    best_of: with a ``scorer`` (``pipelines.scoring``), generate this many candidates with
        seeds ``seed, seed + 1, …`` and keep the one it scores highest; the sidecar records
        every candidate's seed and score, and its ``seed`` is the kept one, so
        ``--from-sidecar`` gives the kept clip back.
    """
    t_call = time.time()
    out = check_output_path(out)
    check_request(request)
    if best_of < 1 or (best_of > 1 and scorer is None):
        raise StudioError("best-of needs N >= 1, and a scorer when N > 1")
    check_seed(request.seed + best_of - 1, f"seed + best-of - 1 ({request.seed} + {best_of} - 1)")
    references = read_references(request.references, size=reference_size(request))
    check_prompt_references(request.prompt, len(references))
    model_path = model_for(model, references=bool(references))
    if pipe is None:
        check_model_takes_references(len(references), max_references(model_path), model_path)
        pipe = load_pipeline(model_path, lora=request.lora)
    check_model_takes_references(len(references), max_references(pipe), model_path)
    pixels = [r.pixels for r in references]

    first_step: list[float] = []  # seconds from the call (model load included) to step 1

    def timed_progress(step: int, total: int) -> None:
        if step and not first_step:  # step 0: a step of an image-first clip's first frame
            first_step.append(time.time() - t_call)
        if progress is not None:
            progress(step, total)

    t0 = time.time()
    if best_of == 1:
        frames = sample(pipe, request, timed_progress, pixels)
        chosen = request
    else:
        candidates = []
        for i in range(best_of):
            req = replace(request, seed=request.seed + i)
            clip = sample(pipe, req, timed_progress, pixels)
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
    # Everything is written to temporaries and the record finished before either file is
    # placed (place_with_sidecar): a kill never leaves the new video beside the old sidecar.
    sidecar = out.with_suffix(".json")
    video_tmp = temp_sibling(out, out.suffix)
    sidecar_tmp = None
    try:
        write_video(video_tmp, frames, fps=chosen.fps)
        record = _generate_record(chosen, references, pipe, model_path, out, t0, t_gen, extra)
        # time to the first denoising step, from the call (model load included)
        record["timings"]["first_step_s"] = round(first_step[0], 3) if first_step else None
        sidecar_tmp = write_temp_text(sidecar, json.dumps(record, indent=2))
        place_with_sidecar([(video_tmp, out)], sidecar_tmp, sidecar)
    except BaseException:
        for tmp in (video_tmp, sidecar_tmp):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        raise
    return GenerateResult(path=out, sidecar=sidecar, frames=frames, record=record)


# What generate() writes into a sidecar besides ``extra``: a caller's extra fields (a batch
# line's ``category``) must not take these names, or the sidecar would lie about the clip.
SIDECAR_KEYS = frozenset(GenerateRequest.__dataclass_fields__) | {
    "model",
    "weights_hash",
    "scheduler",
    "device",
    "versions",
    "timings",
    "output",
    "best_of",
    "job",
    "kind",
}


def _generate_record(
    chosen: GenerateRequest,
    references: list[ReferenceImage],
    pipe: ShapesVideoPipeline,
    model_path: Path,
    out: Path,
    t0: float,
    t_gen: float,
    extra: dict | None,
) -> dict:
    """The sidecar of a generated clip: its settings and everything needed to make it again."""
    settings = asdict(replace(chosen, references=[]))
    del settings["references"]  # the images as read, below; text-only sidecars are unchanged
    settings["image_first"] = image_first_used(pipe, settings["image_first"])
    return {
        **settings,
        **({"references": [r.record for r in references]} if references else {}),
        **model_record(model_path),
        "scheduler": type(pipe.scheduler).__name__,
        "device": str(pipe.device),
        "versions": package_versions(),
        "timings": {
            "generate_s": round(t_gen, 3),
            "total_s": round(time.time() - t0, 3),
        },
        "output": out.name,
        **(extra or {}),
    }


@dataclass
class StoryboardOptions:
    """How a storyboard is rendered (the story itself says what happens)."""

    seed: int = 0
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    window: int = DEFAULT_WINDOW
    context: int = DEFAULT_CONTEXT
    height: int = 64
    width: int = 64
    per_scene: bool = False  # also write NAME-sceneK.EXT for every scene
    # the first window's frame 0 drawn as an image first; None: the model's own setting
    image_first: bool | None = None
    lora: str | None = None  # a LoRA adapter on the model, PATH[:SCALE]
    # every window generated at `window` frames, the ones a scene needs kept
    full_windows: bool = True
    # draws per continued window, the most continuous kept (pipelines.storyboard)
    candidates: int = DEFAULT_CANDIDATES


def image_first_used(pipe: ShapesVideoPipeline, asked: bool | None) -> bool:
    """What a sidecar records for ``image_first``: the value asked for, or else the model's own
    setting — what the model did, so a rerun from the sidecar does the same."""
    return bool(getattr(pipe.config, "image_first", False)) if asked is None else asked


def render_storyboard(
    story,
    out: str | Path,
    options: StoryboardOptions,
    model: str | Path | None = None,
    pipe: ShapesVideoPipeline | None = None,
    progress=None,
    extra: dict | None = None,
    on_step=None,
) -> GenerateResult:
    """Generate a storyboard (``pipelines.storyboard``), then write the video, the per-scene
    files if asked, and the sidecar; a failure at any point leaves none of them behind.

    Scene references are checked against the model (from its config, before it loads) and
    read like ``studio generate --ref`` (:func:`read_story_references`) before anything runs.

    progress: optional callable ``(windows_done, windows_total)``; on_step: ``fn()`` after
    every denoising step (a job's cancel acts there, within a window).
    """
    from pipelines.storyboard import check_scene_references, generate_storyboard

    # 1. Check inputs (the windows check the rest before the first one runs)
    t0 = time.time()
    out = check_output_path(out)
    check_seed(options.seed)
    scene_paths = [
        out.with_name(f"{out.stem}-scene{i}{out.suffix}") for i in range(1, len(story.scenes) + 1)
    ]
    for path in scene_paths if options.per_scene else []:
        check_sidecar_owner(path, writes_sidecar=False)  # a clip `studio generate` wrote there
    model_path = model_for(model, references=any(s.references for s in story.scenes))
    check_scene_references(story.scenes, max_references(pipe if pipe is not None else model_path))
    references = read_story_references(story, size=reference_side(options.height, options.width))
    pipe = pipe or load_pipeline(model_path, lora=options.lora)
    t_load = time.time() - t0

    # 2. Generate every window (nothing is written yet)
    t1 = time.time()
    try:
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
            on_step=on_step,
            reference_images=[[r.pixels for r in refs] for refs in references],
            image_first=options.image_first,
            full_windows=options.full_windows,
            candidates=options.candidates,
        )
    except ValueError as exc:  # the pipeline's checks (each window's), in the studio's words
        raise StudioError(user_words(str(exc))) from None
    t_gen = time.time() - t1

    # 3. Write the video, the per-scene files and the sidecar to temporaries, then move them
    #    in together (place_with_sidecar); a failure before that leaves the old files as
    #    they were and no temporary behind
    sidecar = out.with_suffix(".json")
    written: list[tuple[Path, Path]] = []  # (temporary, final)
    sidecar_tmp = None
    try:
        parts = [(out, frames)]
        if options.per_scene:
            parts += [(p, frames[a:b]) for p, (a, b) in zip(scene_paths, ranges, strict=True)]
        for path, part in parts:
            written.append((temp_sibling(path, path.suffix), path))
            write_video(written[-1][0], part, fps=story.fps)
        record = {
            "kind": "storyboard",
            "story": story.to_dict(),
            "scenes": [
                {"prompt": s.prompt, "start": a, "end": b}  # [start, end) in frames
                # paths as the story gives them, and what the files held
                | (
                    {
                        "references": list(s.references),
                        "reference_sha256": [r.record["sha256"] for r in refs],
                        "reference_paths": [str(p.absolute()) for p in paths],
                    }
                    if s.references
                    else {}
                )
                | ({"file": p.name} if options.per_scene else {})
                for s, (a, b), p, refs, paths in zip(
                    story.scenes,
                    ranges,
                    scene_paths,
                    references,
                    story.reference_paths(),
                    strict=True,
                )  # fmt: skip
            ],
            "frames": len(frames),
            "fps": story.fps,
            **{k: v for k, v in asdict(options).items() if k != "per_scene"},
            "image_first": image_first_used(pipe, options.image_first),
            **model_record(model_path),
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
        sidecar_tmp = write_temp_text(sidecar, json.dumps(record, indent=2))
        stale = _scene_files(sidecar, out) - {p.name for _, p in written}
        place_with_sidecar(written, sidecar_tmp, sidecar)
    except BaseException:
        for tmp in [*(t for t, _ in written), sidecar_tmp]:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        raise
    for name in stale:  # a longer earlier story's scene files, which the new record does not list
        (out.parent / name).unlink(missing_ok=True)
    return GenerateResult(path=out, sidecar=sidecar, frames=frames, record=record)


def _scene_files(sidecar: Path, out: Path) -> set[str]:
    """The per-scene files (``NAME-sceneK.EXT``) that ``out``'s present storyboard sidecar
    lists and that no record of their own claims; any other name a sidecar holds is ignored
    (it never names a file to remove)."""
    record = read_record(sidecar)
    scenes = record.get("scenes") if record.get("output") == out.name else None
    if not isinstance(scenes, list):
        return set()
    names = {s.get("file") for s in scenes if isinstance(s, dict)}
    pattern = re.compile(rf"{re.escape(out.stem)}-scene[1-9][0-9]*{re.escape(out.suffix)}")
    return {
        n
        for n in names
        if isinstance(n, str)
        and pattern.fullmatch(n)
        # a clip written there since, with its own record, is no longer a scene file
        and read_record((out.parent / n).with_suffix(".json")).get("output") != n
    }


def sidecar_model(path: str | Path) -> str | None:
    """The model folder a sidecar was made with (None if it does not say). A sidecar made on
    another machine or install names a folder that is not here: where its weights are the
    shipped model's (``weights_hash``), that model here; otherwise a StudioError saying so."""
    record = json.loads(Path(path).read_text())
    model = record.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise StudioError(f"{Path(path).name}: model must be a folder path, got {model!r}")
    recorded = record.get("weights_hash")
    if model is None:
        return None
    if Path(model).is_dir():
        if recorded and weights_hash(Path(model)) != recorded:
            print(
                f"warning: {model} holds other weights than {Path(path).name} was made with "
                f"({recorded}): the clip will differ",
                file=sys.stderr,
            )
        return model
    for shipped in (DEFAULT_MODEL_DIR, ELEMENTS_MODEL_DIR):
        if recorded and shipped.is_dir() and weights_hash(shipped) == recorded:
            return str(shipped)
    raise StudioError(
        f"{Path(path).name} was made with the model at {model}, which is not here"
        + (f" (weights {recorded}, not the shipped model's)" if recorded else "")
        + ": pass --model FOLDER"
    )


def _read_sidecar(path: Path) -> Any:
    if not path.is_file():
        raise StudioError(f"sidecar not found: {path}")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise StudioError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise StudioError(f"{path} is not valid JSON (line {exc.lineno}): {exc.msg}") from None
    except RecursionError:
        raise StudioError(f"{path} is not a sidecar: its JSON is nested too deep") from None


def request_from_sidecar(path: str | Path) -> GenerateRequest:
    """Rebuild the request recorded in a sidecar (same sidecar, same machine → same frames)."""
    path = Path(path)
    data = _read_sidecar(path)
    if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
        kind = data.get("kind") if isinstance(data, dict) else None
        hint = (
            f" (a storyboard sidecar: `studio storyboard --from-sidecar {path} --out "
            "FILM.mp4` re-makes it)"
            if kind == "storyboard"
            else ""
        )
        raise StudioError(f"{path} has no prompt to regenerate{hint}")
    fields_ = GenerateRequest.__dataclass_fields__
    request = GenerateRequest(
        **{k: v for k, v in data.items() if k in fields_ and k != "references"}
    )
    check_request(request, where=f"{path.name}: ")
    entries = data.get("references") or []
    if not isinstance(entries, list):
        raise StudioError(f"{path.name}: references must be a list, got {entries!r}")
    request.references = references_from_sidecar(entries, path)
    return request


def storyboard_from_sidecar(path: str | Path) -> tuple[Any, StoryboardOptions]:
    """The story and options a storyboard sidecar records (same sidecar, same machine → same
    frames; ``per_scene`` on when the film had scene files). A scene's references are looked
    for where they were read from (or, in a sidecar that does not record it, as the story
    named them), then as named from the sidecar's folder, then beside it, and must hold the
    bytes it recorded."""
    from pipelines.storyboard import storyboard_from_data

    path = Path(path)
    data = _read_sidecar(path)
    if not isinstance(data, dict) or data.get("kind") != "storyboard":
        clip = isinstance(data, dict) and isinstance(data.get("prompt"), str)
        hint = f" (a clip's sidecar: `studio generate --from-sidecar {path} --out CLIP.mp4`)"
        raise StudioError(f"{path} is not a storyboard sidecar{hint if clip else ''}")
    story, scenes = data.get("story"), data.get("scenes")
    if not isinstance(story, dict) or not isinstance(story.get("scenes"), list):
        raise StudioError(f"{path.name}: no story recorded (story.scenes)")
    if not isinstance(scenes, list) or len(scenes) != len(story["scenes"]):
        raise StudioError(f"{path.name}: its scenes do not match its story")
    for k, (scene, made) in enumerate(zip(story["scenes"], scenes, strict=True), start=1):
        refs = scene.get("references") if isinstance(scene, dict) else None
        if not refs:
            continue
        made = made if isinstance(made, dict) else {}
        shas, read_from = made.get("reference_sha256"), made.get("reference_paths", refs)
        if not all(
            isinstance(x, list) and len(x) == len(refs) and all(isinstance(v, str) for v in x)
            for x in (refs, shas, read_from)
        ):
            raise StudioError(
                f"{path.name}: scene {k}'s references, their SHA-256 and the paths they were "
                "read from must be lists of text, one each"
            )
        entries = [
            {"file": ref, "path": at, "sha256": sha}
            for ref, at, sha in zip(refs, read_from, shas, strict=True)
        ]
        try:
            scene["references"] = [
                str(Path(p).absolute()) for p in references_from_sidecar(entries, path)
            ]
        except StudioError as exc:
            raise StudioError(f"scene {k}: {exc}") from None
    try:
        loaded = storyboard_from_data(story, f"{path.name}: ")
    except ValueError as exc:
        raise StudioError(str(exc)) from None
    for k, scene in enumerate(loaded.scenes, start=1):
        check_text(scene.prompt, f"{path.name}: scene {k}'s prompt")
    # a film made before full windows existed generated only the frames each window kept
    options = StoryboardOptions(full_windows=False)
    options.per_scene = any(isinstance(m, dict) and "file" in m for m in scenes)
    for name, kinds in _RECORDED_OPTIONS.items():
        if name not in data:
            continue
        value = data[name]
        if type(value) not in kinds:  # exact: a bool is no step count
            allowed = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise StudioError(f"{path.name}: {name} must be {allowed}, got {value!r}")
        setattr(options, name, value)
    check_text(options.lora, f"{path.name}: lora")
    return loaded, options


# What a storyboard sidecar records of its StoryboardOptions, with the JSON types each takes
_RECORDED_OPTIONS: dict[str, tuple[type, ...]] = {
    "seed": (int,),
    "steps": (int,),
    "guidance": (int, float),
    "window": (int,),
    "context": (int,),
    "height": (int,),
    "width": (int,),
    "image_first": (bool, type(None)),
    "lora": (str, type(None)),
    "full_windows": (bool,),
    "candidates": (int,),
}


def references_from_sidecar(entries: list, sidecar: Path) -> list[str]:
    """The files a sidecar's references were read from, checked to hold the same bytes.

    Each is looked for where it was (its absolute ``path``), then as named from the sidecar's
    folder and beside it (a folder moved whole); the first whose SHA-256 matches is used. StudioError when a
    reference is missing, changed, or was given as pixels rather than a file.
    """
    paths = []
    for k, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not entry.get("file") or not entry.get("sha256"):
            raise StudioError(
                f"{sidecar.name}: reference image {k} was not given as a file, so the sidecar "
                "cannot make the video again"
            )
        if (
            not isinstance(entry["file"], str)
            or not isinstance(entry.get("path") or "", str)
            or not re.fullmatch(r"[0-9a-f]{64}", str(entry["sha256"]))
        ):
            raise StudioError(
                f"{sidecar.name}: reference image {k} needs its file and path as text and its "
                "SHA-256 as 64 hex digits"
            )
        name = entry["file"]
        candidates = [Path(entry["path"])] if entry.get("path") else []
        # a folder moved whole: as named from the sidecar's folder, or beside it
        candidates += [(sidecar.parent / n).absolute() for n in (name, Path(name).name)]
        existing = [c for c in dict.fromkeys(candidates) if c.is_file()]
        for candidate in existing:
            with candidate.open("rb") as fh:  # in chunks: a sidecar may name any large file
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
            if digest == entry["sha256"]:
                paths.append(str(candidate))
                break
        else:
            if existing:
                raise StudioError(
                    f"reference image {k} ({name}) has changed since {sidecar.name} was "
                    f"written: {existing[0]} no longer has SHA-256 {entry['sha256'][:16]}…"
                )
            raise StudioError(
                f"reference image {k} ({name}) of {sidecar.name} is missing: looked for "
                + " and ".join(str(c) for c in dict.fromkeys(candidates))
            )
    return paths
