"""Storyboards: multi-scene, any-length videos chained with prefix conditioning.

A storyboard is a list of scenes ``{prompt, frames | seconds, references?}``. The video is
generated in overlapping windows of at most ``window`` frames (the model's clip length):

* the first window is generated freely from the first scene's prompt;
* every later window, inside a scene or across a scene boundary, gets the last ``context``
  frames produced so far as clean conditioning frames (the pipeline's conditioning-frame
  mask) and generates ``window - context`` new frames with its own scene's prompt;
* the last window of a scene keeps only the frames still missing, so a scene (and the
  whole video) can have any number of frames, not only multiples of the window; it is still
  generated at the full window length (``full_windows``) and cut, because shorter continued
  windows moved objects less reliably on the validation storyboards (experiments/storyboard_seams/REPORT.md);
* every window of a scene with ``references`` passes that scene's images to the pipeline as
  ``reference_images`` (``<ref1>``, ``<ref2>``… in its prompt bind them, as in
  ``studio generate --ref``); windows of other scenes pass none;
* with ``candidates=N`` every later window is drawn N times in one batched call and the draw
  that best continues its given frames (:func:`continuity_cost`) is kept.

This is Phenaki's prefix conditioning (Villegas et al. 2022, "Phenaki: Variable length video
generation from open domain textual descriptions"): the clean prefix carries the object's
look and position into the next window, the new prompt drives the action. Only one window
is ever on the model, so memory stays flat and time grows linearly with the length.

File format (YAML or JSON), either a list of scenes or a mapping::

    fps: 8                      # optional, default 8; converts ``seconds`` to frames
    scenes:
      - prompt: a red circle moving right on a black background
        frames: 20
      - prompt: a red circle moving up on a black background
        seconds: 1.5            # = 12 frames at 8 fps
      - prompt: <ref1> moving left on a black background
        frames: 16
        references: [ref.png]   # optional; <refK> is the K-th (needs a model with references)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .text_to_video import DEFAULT_GUIDANCE, DEFAULT_STEPS, ShapesVideoPipeline, to_uint8
from .video_io import MAX_FPS

SCENE_KEYS: tuple[str, ...] = ("prompt", "frames", "seconds", "references")
STORY_KEYS: tuple[str, ...] = ("fps", "scenes")
STORY_SUFFIXES: tuple[str, ...] = (".yaml", ".yml", ".json")
DEFAULT_FPS = 8
DEFAULT_WINDOW = 16  # the default model's training clip length
# Frames carried into each later window. The default model's video transformer was
# fine-tuned on continuations of 2..4 given frames (configs/train/dit_shapes_storyboard.yaml);
# on the validation storyboards (evals/suites/storyboard_val.json) context 2 / 3 / 4 kept
# colour and shape at 72 / 85 / 72 % of boundaries, jumped <= 4 px at 95 / 95 / 88 % and
# moved as asked in 77 / 75 / 78 % of scenes (experiments/storyboard_seams/REPORT.md). Per-frame cost: see
# benchmarks/storyboard_scaling.py.
DEFAULT_CONTEXT = 3
# Draws of each continued window, the most continuous kept (continuity_cost). One: three
# did no better on the validation storyboards and cost ~2x the time, over the time
# bar (experiments/storyboard_seams/REPORT.md).
DEFAULT_CANDIDATES = 1
# At most: a window's draws share one batched call, so memory grows with them
MAX_CANDIDATES = 16
# A film's length, at most: 4096 frames is 8.5 minutes at 8 fps, hours of sampling on a CPU.
# The finished film is held in memory (frames x height x width x 3 bytes: 48 MiB at 64 px,
# 12 GiB at 1024 px), so a typo such as 100000000 frames must fail before any work, not as
# an allocation error after the first window. The web UI and API allow less (studio.jobs).
MAX_FILM_FRAMES = 4096


# ----------------------------------------------------------------------------------------------
# Story
# ----------------------------------------------------------------------------------------------


@dataclass
class Scene:
    """One scene: ``frames`` frames following ``prompt``.

    ``references`` are image paths as the story gives them (relative to the story file's
    folder, see :meth:`Storyboard.reference_paths`); ``<refK>`` in ``prompt`` is the K-th.
    Every window of the scene is conditioned on them (:func:`generate_storyboard`).
    """

    prompt: str
    frames: int
    references: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {self.prompt!r}")
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 1:
            raise ValueError(f"frames must be an integer >= 1, got {self.frames!r}")
        if not isinstance(self.references, list) or not all(
            isinstance(r, str) and r for r in self.references
        ):
            raise ValueError(f"references must be a list of file paths, got {self.references!r}")


@dataclass
class Storyboard:
    """Scenes played one after the other at ``fps`` frames per second."""

    scenes: list[Scene]
    fps: int = DEFAULT_FPS
    # the folder relative references are resolved against (the story file's; None: the
    # working directory); where a story was read from is not part of what it says
    base: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.scenes:
            raise ValueError("the storyboard is empty: give at least one scene")
        if (
            isinstance(self.fps, bool)
            or not isinstance(self.fps, int)
            or not 1 <= self.fps <= MAX_FPS
        ):
            raise ValueError(f"fps must be an integer from 1 to {MAX_FPS}, got {self.fps!r}")
        if self.total_frames > MAX_FILM_FRAMES:
            raise ValueError(
                f"the film is {self.total_frames} frames "
                f"({self.total_frames / self.fps:.0f} s at {self.fps} fps); "
                f"at most {MAX_FILM_FRAMES} frames: split it into several storyboards"
            )

    @property
    def total_frames(self) -> int:
        return sum(s.frames for s in self.scenes)

    def ranges(self) -> list[tuple[int, int]]:
        """Each scene's frame range ``[start, end)`` in the whole video."""
        out, start = [], 0
        for s in self.scenes:
            out.append((start, start + s.frames))
            start += s.frames
        return out

    def reference_paths(self) -> list[list[Path]]:
        """Each scene's references as files, resolved against :attr:`base`."""
        return [[_resolve(ref, self.base) for ref in s.references] for s in self.scenes]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; ``storyboard_from_data(story.to_dict())`` gives it back."""
        return {"fps": self.fps, "scenes": [asdict(s) for s in self.scenes]}


def _resolve(ref: str, base: Path | None) -> Path:
    path = Path(ref)
    return path if path.is_absolute() else (base or Path.cwd()) / path


def _is_path(source: str | Path) -> bool:
    """A Path, or a one-line string naming a story file (else the string is the story)."""
    if isinstance(source, Path):
        return True
    return "\n" not in source and Path(source).suffix.lower() in STORY_SUFFIXES


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tag runs code) that refuses a key given twice in one mapping,
    which YAML would otherwise settle silently by keeping the last."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: expanded below
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        except TypeError:  # an unhashable key: the constructor's own error follows
            pass
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"the key {twice[0]!r} is given twice")
    return dict(pairs)


def _parse(text: str, is_json: bool, where: str) -> Any:
    if is_json:
        try:
            return json.loads(text, object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{where}malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        except ValueError as exc:  # a key given twice
            raise ValueError(f"{where}malformed JSON: {exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "cannot parse"
        raise ValueError(f"{where}malformed YAML{at}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}malformed YAML: {exc}") from None


def _seconds_to_frames(value: Any, fps: int) -> int:
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):  # quoted, or YAML 1.1's 1e3 (no dot, no sign): text
            hint = (
                ": YAML reads an exponent as a number only with a dot and a sign (1.0e+3)"
                if "e" in value.lower()
                else ": write it without quotes"
            )
            raise ValueError(f"seconds must be a number > 0, got the text {value!r}{hint}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"seconds must be a number > 0, got {value!r}")
    if value <= 0:
        raise ValueError(f"seconds must be > 0, got {value!r}")
    frames = round(value * fps)
    if frames < 1:
        raise ValueError(f"seconds={value!r} at {fps} fps is less than one frame")
    return frames


def _scene(data: Any, fps: int, base: Path) -> Scene:
    """One scene from its parsed mapping; ValueError (without the scene number) if invalid."""
    if not isinstance(data, dict):
        raise ValueError(
            f"must be a mapping with keys {', '.join(SCENE_KEYS)}, got {type(data).__name__}"
        )
    unknown = [str(k) for k in data if k not in SCENE_KEYS]
    if unknown:
        raise ValueError(
            f"unknown key{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(SCENE_KEYS)}"
        )
    if "prompt" not in data:
        raise ValueError("missing 'prompt'")
    if ("frames" in data) == ("seconds" in data):
        raise ValueError("give exactly one of 'frames' and 'seconds'")
    frames = data["frames"] if "frames" in data else _seconds_to_frames(data["seconds"], fps)
    refs = data.get("references") or []
    if isinstance(refs, str):  # one reference written without a list
        refs = [refs]
    scene = Scene(prompt=data["prompt"], frames=frames, references=refs)
    for ref in scene.references:
        path = _resolve(ref, base)
        if not path.is_file():
            raise ValueError(f"reference {ref!r} does not exist (looked for {path})")
    return scene


def load_storyboard(source: str | Path) -> Storyboard:
    """Load and validate a storyboard from a file (``.yaml``/``.yml``/``.json``) or a string.

    Accepts a top-level list of scenes or ``{fps?, scenes: [...]}``. ``seconds`` are
    converted with ``fps`` (rounded, at least one frame). References are resolved relative
    to the story file's folder (the working directory for a string) and must exist.

    Raises:
        ValueError: one line naming the problem: a missing file, malformed YAML/JSON (with
            its line), an empty storyboard, unknown keys, a scene without a prompt, with
            < 1 frame, with both or neither of ``frames``/``seconds``, a missing reference.
    """
    # 1. Read
    where, base, is_json = "", Path.cwd(), False
    if _is_path(source):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"storyboard file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read storyboard {path}: {exc}") from None
        where, base, is_json = f"{path}: ", path.parent, path.suffix.lower() == ".json"
    else:
        text = source

    # 2. Parse
    return storyboard_from_data(_parse(text, is_json, where), where, base)


def storyboard_from_data(data: Any, where: str = "", base: Path | None = None) -> Storyboard:
    """Validate an already parsed storyboard (a list of scenes or ``{fps?, scenes}``, as
    :func:`load_storyboard` reads one; ``Storyboard.to_dict()`` gives one back): the same checks
    and messages, prefixed with ``where``; references resolved against ``base`` (None: the
    working directory)."""
    # 3. Top level: a list of scenes, or {fps?, scenes}
    fps = DEFAULT_FPS
    if isinstance(data, dict):
        unknown = [str(k) for k in data if k not in STORY_KEYS]
        if unknown:
            raise ValueError(
                f"{where}unknown top-level key{'s' * (len(unknown) > 1)} "
                f"{', '.join(map(repr, unknown))}; allowed: {', '.join(STORY_KEYS)}"
            )
        fps = data.get("fps", DEFAULT_FPS)
        if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= MAX_FPS:
            raise ValueError(f"{where}fps must be an integer from 1 to {MAX_FPS}, got {fps!r}")
        data = data.get("scenes")
    if data is None or data == []:
        raise ValueError(f"{where}the storyboard is empty: give at least one scene")
    if not isinstance(data, list):
        raise ValueError(
            f"{where}a storyboard is a list of scenes or a mapping with 'scenes', "
            f"got {type(data).__name__}"
        )

    # 4. Scenes (numbered from 1 in messages, as a user counts them)
    scenes = []
    for i, item in enumerate(data, 1):
        try:
            scenes.append(_scene(item, fps, base))
        except ValueError as exc:
            raise ValueError(f"{where}scene {i}: {exc}") from None
    try:
        return Storyboard(scenes=scenes, fps=fps, base=base)
    except ValueError as exc:
        raise ValueError(f"{where}{exc}") from None


# ----------------------------------------------------------------------------------------------
# Windows
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One pipeline call: frames ``[start - cond, start)`` given, ``[start, start + new)`` made."""

    index: int
    scene: int  # 0-based scene whose prompt drives the window
    start: int  # first new frame, in whole-video frame numbers
    cond: int  # conditioning frames (0 for the very first window)
    new: int  # frames generated

    @property
    def num_frames(self) -> int:
        return self.cond + self.new

    def call_frames(self, window: int, full_windows: bool) -> int:
        """Frames the pipeline call generates: the whole ``window`` (cut to ``num_frames``
        afterwards) with ``full_windows``, else just ``num_frames``."""
        return window if full_windows else self.num_frames


def check_windowing(window: int, context: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an integer >= 2, got {window!r}")
    if isinstance(context, bool) or not isinstance(context, int) or not 1 <= context < window:
        raise ValueError(
            f"context must be an integer in 1..window-1 = 1..{window - 1}, got {context!r}"
        )


def plan_windows(
    scene_frames: Sequence[int], window: int = DEFAULT_WINDOW, context: int = DEFAULT_CONTEXT
) -> list[Window]:
    """Split scenes of the given lengths into pipeline calls of at most ``window`` frames.

    The first window is free (up to ``window`` new frames); each later one is conditioned on
    the last ``min(context, frames so far)`` frames and adds up to ``window - context`` new
    ones, never running past the end of its scene, so every call has ≥ 1 new frame and the
    new frames tile ``[0, sum(scene_frames))`` exactly.
    """
    check_windowing(window, context)
    windows: list[Window] = []
    start = 0
    for scene, n in enumerate(scene_frames):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"scene {scene + 1}: frames must be an integer >= 1, got {n!r}")
        end = start + n
        while start < end:
            cond = min(context, start)
            new = min(window - cond, end - start)
            windows.append(Window(len(windows), scene, start, cond, new))
            start += new
    return windows


def window_seed(seed: int, index: int, candidate: int = 0) -> int:
    """Seed of window ``index``: the storyboard seed for the first window (so it matches
    ``studio generate`` with the same seed), a hash of ``(seed, index)`` for the others;
    candidate ``c > 0`` of a window hashes ``(seed, index, c)`` (candidate 0 is the window's
    own seed, so one candidate gives the same video as before candidates existed)."""
    if index == 0 and candidate == 0:
        return seed
    key = f"storyboard:{seed}:{index}" + (f":{candidate}" if candidate else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # < 2**63: any torch seed


def _colour_histograms(frames: np.ndarray, levels: int) -> np.ndarray:
    """(F, levels**3) colour histograms of uint8 (F, H, W, 3) frames, each summing to 1."""
    q = frames.astype(np.int64) * levels // 256  # (F, H, W, 3) in 0..levels-1
    index = (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]  # (F, H, W)
    flat = index.reshape(len(frames), -1)
    hist = np.stack([np.bincount(row, minlength=levels**3) for row in flat]).astype(np.float64)
    return hist / flat.shape[1]


def continuity_cost(given: np.ndarray, new: np.ndarray, levels: int = 8) -> float:
    """How much ``new`` frames break from the ``given`` frames they continue; lower is better.

    Generic pixel terms (no detector, nothing about the world's objects), each a fraction of
    the frame:

    * **appearance**: each new frame's colour histogram (``levels``³ bins) against the given
      frames' mean histogram, half the L1 distance, averaged over the new frames. Motion
      moves pixels without changing the histogram; a colour that changes, an object that
      appears or vanishes, or a shape redrawn with another area all change it;
    * **jump**: how much more the frame changes across the seam (last given → first new
      frame) than between consecutive frames on either side of it (the larger of the two
      medians, so that stopping or starting to move costs nothing): a step larger than the
      motion's own.

    Args:
        given: uint8 (Fc, H, W, 3), Fc ≥ 1. new: uint8 (Fn, H, W, 3), Fn ≥ 1.
    """
    if len(given) < 1 or len(new) < 1:
        raise ValueError("continuity_cost needs at least one given and one new frame")
    # 1. Appearance: colour histograms, motion-invariant
    ref = _colour_histograms(given, levels).mean(0)  # (levels**3,)
    appearance = 0.5 * np.abs(_colour_histograms(new, levels) - ref).sum(1).mean()
    # 2. Jump: the change across the seam beyond the motion's own frame-to-frame change
    seq = np.concatenate([given, new]).astype(np.float32) / 255  # (Fc + Fn, H, W, 3)
    steps = np.abs(np.diff(seq, axis=0)).mean(axis=(1, 2, 3))  # (Fc + Fn - 1,)
    k = len(given) - 1  # steps[k]: last given -> first new
    before, after = steps[:k], steps[k + 1 :]
    motion = max(float(np.median(part)) if len(part) else 0.0 for part in (before, after))
    jump = max(0.0, float(steps[k]) - motion)
    return float(appearance + jump)


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


def check_scene_references(scenes: Sequence[Scene], model_max: int | None) -> None:
    """ValueError, naming the first scene at fault, when a scene has more reference images
    than the model takes (``model_max``: its transformer's ``max_references``; 0 for a
    text-to-video model; None: unknown, nothing is checked).

    Needs only the scenes' paths, so a front end can run it before reading any image or
    loading the model.
    """
    if model_max is None:
        return
    for i, s in enumerate(scenes, 1):
        n = len(s.references)
        if n and model_max == 0:
            raise ValueError(
                f"scene {i} has {n} reference image{'s' * (n > 1)} but the model takes no "
                "reference images (max_references = 0): remove the scene's references or "
                "use a model trained with reference elements"
            )
        if n > model_max:
            raise ValueError(
                f"scene {i} has {n} reference images but the model takes at most {model_max}"
            )


def _scene_images(scenes: list[Scene], reference_images: Sequence | None) -> list[list]:
    """Each scene's images (``[]`` for a scene without references), one per reference."""
    if reference_images is None:
        for i, s in enumerate(scenes, 1):
            if s.references:
                raise ValueError(
                    f"scene {i} has references but no images were given for them: pass each "
                    "scene's images as reference_images (studio.generate.read_story_references "
                    "reads a story's files)"
                )
        return [[] for _ in scenes]
    images = [list(refs or []) for refs in reference_images]
    if len(images) != len(scenes):
        raise ValueError(
            f"reference_images has {len(images)} entries for {len(scenes)} scenes: give one "
            "list per scene ([] for a scene without references)"
        )
    for i, (s, refs) in enumerate(zip(scenes, images, strict=True), 1):
        if len(refs) != len(s.references):
            raise ValueError(
                f"scene {i}: {len(refs)} reference images were given for its "
                f"{len(s.references)} references"
            )
    return images


def _step_callback(on_step: Callable[[], None]):
    """``on_step`` as the pipeline's ``callback_on_step_end`` (which returns the tensors it
    changes: none)."""

    def callback(pipe, step, timestep, kwargs):
        on_step()
        return {}

    return callback


def generate_storyboard(
    pipe: ShapesVideoPipeline,
    story: Storyboard | Sequence[Scene],
    seed: int = 0,
    window: int = DEFAULT_WINDOW,
    context: int = DEFAULT_CONTEXT,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    height: int = 64,
    width: int = 64,
    negative_prompt: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_step: Callable[[], None] | None = None,
    reference_images: Sequence[Sequence[Any] | None] | None = None,
    image_first: bool | None = None,
    full_windows: bool = True,
    candidates: int = DEFAULT_CANDIDATES,
    continuity: Callable[[np.ndarray, np.ndarray], float] | None = None,
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Generate a storyboard window by window (see the module docstring).

    Every window of a scene with references is called with ``reference_images=`` that
    scene's images, so ``<ref1>``, ``<ref2>``… in its prompt bind them exactly as in
    ``studio generate --ref``; windows of scenes without references are called without.

    Args:
        pipe: any :class:`ShapesVideoPipeline`; it is only called, never modified.
        story: the scenes (a :class:`Storyboard` or a list of :class:`Scene`).
        image_first: draw the first window's frame 0 as an image, then continue it (the
            pipeline's ``image_first``; None: the pipeline's own setting). Later windows
            continue the video so far, so it concerns the first window only.
        reference_images: one list per scene, the images of its ``references`` in order
            (anything the pipeline's ``reference_images`` takes: PIL images or arrays;
            ``[]`` or None for a scene without); ``studio.generate.read_story_references``
            reads them from a story's files. Needed when any scene has references.
        seed: window ``i`` draws its noise from ``window_seed(seed, i)``: same seed, same video.
        window: frames per pipeline call (the model's clip length), ≤ the model's max_frames.
        context: frames of the video so far given to each later window; 1..window-1.
        progress: ``fn(done, total)`` after each window.
        on_step: ``fn()`` after every denoising step of every window (frame 0's too): where a
            caller's cancel acts within a window (it raises).
        full_windows: generate every window at ``window`` frames and keep the ones needed
            (False: a window that needs fewer new frames generates only those).
        candidates: every continued window (all but the first) is drawn this many times in
            one batched call (candidate ``c`` from ``window_seed(seed, i, c)``) and the one
            with the lowest ``continuity`` cost against its given frames is kept; 1 draws
            each window once.
        continuity: ``fn(given, new) -> cost`` on uint8 (F, H, W, 3) frames, lower kept
            (None: :func:`continuity_cost`); e.g. an embedding distance for real footage.
            A function given is called on every continued window, with one draw too.

    Returns:
        frames: uint8 (T, H, W, 3), T = the sum of the scenes' frames.
        scene_ranges: each scene's ``(start, end)`` (end exclusive) in ``frames``.

    Raises:
        ValueError: before the first window, for anything the pipeline would refuse; the
            reference checks (a model without references, ``<refK>`` without its image, an
            image without its ``<refK>``) name the scene.
    """
    # 1. Check inputs, all before the first window, so a bad request costs no generation
    scenes = list(story.scenes if isinstance(story, Storyboard) else story)
    if not scenes:
        raise ValueError("the storyboard is empty: give at least one scene")
    check_scene_references(scenes, pipe.max_references)
    images = _scene_images(scenes, reference_images)
    if (
        isinstance(candidates, bool)
        or not isinstance(candidates, int)
        or not 1 <= candidates <= MAX_CANDIDATES
    ):
        raise ValueError(
            f"candidates must be an integer in 1..{MAX_CANDIDATES}, got {candidates!r}"
        )
    max_frames = pipe.transformer.config.max_frames
    if isinstance(window, int) and window > max_frames:
        raise ValueError(
            f"window must be at most the model's max_frames {max_frames}, got {window}"
        )
    windows = plan_windows([s.frames for s in scenes], window, context)
    for i, (s, refs) in enumerate(zip(scenes, images, strict=True), 1):
        # the pipeline's own checks, once per scene: its references and placeholders (named
        # by scene), then prompt, size, steps, guidance
        if isinstance(s.prompt, str):
            try:
                pipe.check_references([s.prompt], refs)
            except ValueError as exc:
                raise ValueError(f"scene {i}: {exc}") from None
        pipe.check_inputs(
            s.prompt,
            negative_prompt,
            window,
            height,
            width,
            steps,
            guidance,
            "np",
            None,
            reference_images=refs,
        )

    # 2. Windows: only the current window is on the model; the video so far is uint8 on CPU
    cost = continuity or continuity_cost
    total = sum(s.frames for s in scenes)
    video = np.zeros((total, height, width, 3), dtype=np.uint8)
    for w in windows:
        given = video[w.start - w.cond : w.start].copy() if w.cond else None
        refs = images[w.scene]
        n = candidates if w.cond else 1
        gens = [torch.Generator("cpu").manual_seed(window_seed(seed, w.index, c)) for c in range(n)]
        prompt = scenes[w.scene].prompt
        clips = pipe(
            prompt if n == 1 else [prompt] * n,
            negative_prompt=negative_prompt,
            num_frames=w.call_frames(window, full_windows),
            height=height,
            width=width,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens[0] if n == 1 else gens,
            conditioning_frames=given,
            output_type="np",
            **({"reference_images": refs} if refs else {}),
            **({"image_first": image_first} if image_first is not None else {}),
            **({"callback_on_step_end": _step_callback(on_step)} if on_step else {}),
        ).frames  # (n, cond + new [+ cut], H, W, 3) in [0, 1]; the first cond are the given
        made = [to_uint8(clip[w.cond : w.cond + w.new]) for clip in clips]
        # a continuity function given is shown every continued window's draws, one or many
        scored = n > 1 or (continuity is not None and given is not None)
        best = int(np.argmin([cost(given, m) for m in made])) if scored else 0
        video[w.start : w.start + w.new] = made[best]
        if progress is not None:
            progress(w.index + 1, len(windows))

    # 3. Scene ranges
    ranges, start = [], 0
    for s in scenes:
        ranges.append((start, start + s.frames))
        start += s.frames
    return video, ranges
