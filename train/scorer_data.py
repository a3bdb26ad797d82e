"""Scorer training data with the generator's own faults (issue 34).

The shipped scorer reads renders perfectly but ranks generated samples poorly: generated
clips have soft edges, colour fringes, shapes between a square and a disc, objects that split,
fade or drift, and it never saw any. Three sources close that gap, each labelled by the pixel
judge (``evals.shapes.judge``), the same judge best-of-N is measured against:

1. **Training prompts** (:func:`training_prompts`): captions of the training grammar
   (``world.shapes_world.caption``) of layouts drawn with the contract's exclusions, none equal
   to a prompt of ``evals/suites/``, written as a ``studio batch`` JSONL whose lines carry the
   judge's ``expect``, the layout (``spec``) and the caption's seed (``caption_seed``: the
   trainer rebuilds counterfactual captions in the same phrasing, and renders the layout).
2. **Judged generated clips** (:func:`judge_generated`, :class:`GeneratedSet`): the batch
   folder's videos with the judge's verdict against their caption (``labels.jsonl``).
3. **Degraded renders** (:data:`DEGRADATIONS`, :func:`degrade`): a render damaged the way
   generated clips are — deterministic in the generator passed — labelled by the judge too,
   so a blur that keeps the caption is a positive and a morph that breaks it a hard negative.

Both 2 and 3 come to the trainer as :class:`GroupBatch`: per caption a *group* of clips with
labels (the caption's positive, the ``anchor``, and the judged candidates), which
``train.train_scorer`` turns into extra contrastive rows, hard-negative videos and a pairwise
ranking term. This module imports neither ``studio`` nor ``pipelines``' generator.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evals import SUITES_DIR
from evals.contract import Expectation, parse_caption
from world.shapes_world import (
    BACKGROUNDS,
    COUNTERFACTUALS,
    OBJECT_COLORS,
    SHAPES,
    ClipSpec,
    ObjectSpec,
    ShapesWorld,
    box_side,
    caption,
    counterfactual,
    render,
    render_at,
    trajectory,
)

LABELS = "labels.jsonl"  # the judge's verdicts, written into a batch folder

# ---------------------------------------------------------------------------- training prompts


def _normalise(prompt: str) -> str:
    return re.sub(r"\s+", " ", prompt.strip().lower()).rstrip(" .")


def _prompts_in(data: Any) -> list[str]:
    """Every ``prompt`` string anywhere in a parsed suite file (storyboards nest scenes)."""
    if isinstance(data, dict):
        own = [data["prompt"]] if isinstance(data.get("prompt"), str) else []
        return own + [p for v in data.values() for p in _prompts_in(v)]
    if isinstance(data, list):
        return [p for v in data for p in _prompts_in(v)]
    return []


def suite_prompts(suites_dir: Path = SUITES_DIR) -> set[str]:
    """The normalised prompts of every shipped evaluation suite (``*.jsonl`` and ``*.json``):
    training prompts must avoid all of them."""
    out: set[str] = set()
    for path in sorted(Path(suites_dir).glob("*.json*")):
        text = path.read_text()
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
        out |= {_normalise(p) for p in _prompts_in(rows)}
    return out


def expectation_of(spec: ClipSpec, text: str) -> Expectation:
    """What the judge should ask of a clip of ``spec`` captioned ``text``: the caption's own
    reading (a size the caption omits is not asked for), checked against the layout."""
    exp = parse_caption(text)
    said = sorted((o.color, o.shape, o.motion) for o in exp.objects)
    drawn = sorted((o.color, o.shape, o.motion) for o in spec.objects)
    if said != drawn or exp.background != spec.background:
        raise ValueError(f"caption {text!r} does not read back as its layout {spec.to_dict()}")
    return exp


def training_prompts(
    n: int,
    seed: int = 0,
    two_object_prob: float = 0.4,
    size: int = 64,
    frames: int = 16,
    avoid: set[str] | None = None,
) -> list[dict[str, Any]]:
    """``n`` distinct ``studio batch`` prompt lines from the training caption grammar, layouts
    drawn with the contract's exclusions (no purple clip, no orange triangle or blue circle),
    none equal to a prompt of the evaluation suites (nor of ``avoid``).

    Each line: ``prompt``, ``category`` (``train_video1`` / ``train_video2``), ``expect``
    (read by ``studio eval shapes``), ``spec`` (``ClipSpec.to_dict``) and ``caption_seed``
    (``caption(spec, default_rng(caption_seed)) == prompt``). Deterministic in ``seed``."""
    if n < 0 or not 0.0 <= two_object_prob <= 1.0:
        raise ValueError(f"need n >= 0 and two_object_prob in [0, 1], got {n}, {two_object_prob}")
    world = ShapesWorld(size=size, frames=frames, seed=seed, exclusions=True)
    taken = suite_prompts() | {_normalise(p) for p in avoid or ()}
    out: list[dict[str, Any]] = []
    for i in range(100 * n + 100):
        if len(out) == n:
            break
        rng = np.random.default_rng([seed, i])
        kind = "video2" if rng.random() < two_object_prob else "video1"
        spec = world.sample_spec(rng, kind)
        caption_seed = int(rng.integers(1 << 32))
        text = caption(spec, np.random.default_rng(caption_seed))
        if _normalise(text) in taken:
            continue
        taken.add(_normalise(text))
        out.append(
            {
                "prompt": text,
                "category": f"train_{kind}",
                "expect": expectation_of(spec, text).to_dict(),
                "spec": spec.to_dict(),
                "caption_seed": caption_seed,
            }
        )
    if len(out) < n:
        raise RuntimeError(f"found only {len(out)} distinct training prompts of {n}")
    return out


def write_prompts(path: Path, rows: list[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------- judged clips


def _manifest(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "manifest.jsonl"
    if not path.is_file():
        raise ValueError(f"no manifest.jsonl in {run_dir}: run `studio batch` first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def judge_generated(run_dir: Path, force: bool = False) -> Path:
    """Judge every video of a ``studio batch`` folder against its caption and write
    ``labels.jsonl``: one line per finished video with ``prompt``, ``sample``, ``video``, the
    judge's criteria (``all_correct`` …), what it ``detected``, and the prompt line's ``spec``
    and ``caption_seed`` when it had them. Up to date labels (same finished videos) are kept
    unless ``force``."""
    from evals.shapes import CRITERIA, evaluate_dir

    run_dir = Path(run_dir)
    manifest = _manifest(run_dir)
    done = {(e["prompt"], int(e["sample"])) for e in manifest if e.get("status") == "ok"}
    out = run_dir / LABELS
    if out.is_file() and not force:
        have = {(r["prompt"], int(r["sample"])) for r in read_labels(run_dir)}
        if have == done:
            return out
    extra = {(e["prompt"], int(e["sample"])): e for e in manifest}
    rows = []
    for item in evaluate_dir(run_dir)["items"]:
        if item.get("status") != "ok":
            continue  # not a clip the generator made: nothing to learn from
        line = extra[(item["prompt"], int(item["sample"]))]
        row = {k: item[k] for k in ("prompt", "sample", "video", "category")}
        row |= {c: item.get(c) for c in CRITERIA}
        row["detected"] = item.get("detected")
        row |= {k: line[k] for k in ("spec", "caption_seed") if k in line}
        rows.append(row)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(out)
    return out


def read_labels(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / LABELS
    if not path.is_file():
        raise ValueError(
            f"no {LABELS} in {run_dir}: judge it first (train.scorer_data.judge_generated)"
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------- degradations
# Each takes the clip's layout, its clean render (F, S, S, 3) uint8 and a generator, and
# returns the damaged clip (uint8, same shape) or None where it cannot apply (freezing a clip
# where nothing moves). Positions and timing follow the renderer, so a damaged clip differs
# from the render only in what the degradation names.


def _bg(spec: ClipSpec) -> np.ndarray:
    return np.array(BACKGROUNDS[spec.background], dtype=np.float32)


def _alone(spec: ClipSpec, i: int, obj: ObjectSpec | None = None) -> ClipSpec:
    """Object ``i`` (or ``obj`` on its trajectory) alone on the clip's background."""
    return ClipSpec([obj or spec.objects[i]], spec.background, spec.frames, spec.size, spec.fps,
                    spec.switch_frame)  # fmt: skip


def object_mask(spec: ClipSpec, i: int) -> np.ndarray:
    """(F, S, S) bool: the pixels object ``i`` covers in each frame."""
    alone = render_at(_alone(spec, i), trajectory(spec)[:, i : i + 1])
    return (alone != _bg(spec).astype(np.uint8)).any(-1)


def _with_object(spec: ClipSpec, i: int, **changes: Any) -> ClipSpec:
    objects = [ObjectSpec(**{**o.__dict__}) for o in spec.objects]
    for k, v in changes.items():
        setattr(objects[i], k, v)
    return ClipSpec(objects, spec.background, spec.frames, spec.size, spec.fps, spec.switch_frame)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def gaussian_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of each frame, edges replicated: (F, H, W, C) float32."""
    r = max(1, math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    x = frames.astype(np.float32)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        p = np.pad(x, pad, mode="edge")
        n = x.shape[axis]
        x = sum(k[j] * np.take(p, np.arange(j, j + n), axis=axis) for j in range(2 * r + 1))
    return x


def _blur(spec, frames, rng):
    return _to_uint8(gaussian_blur(frames, float(rng.uniform(0.5, 1.0))))


def _yuv420(spec, frames, rng):
    """H.264's yuv420p: chroma at half resolution, softened (colour bleeds past edges)."""
    x = frames.astype(np.float32)
    m = np.array([[0.299, 0.587, 0.114], [-0.169, -0.331, 0.5], [0.5, -0.419, -0.081]], np.float32)
    yuv = x @ m.T
    f, h, w, _ = yuv.shape
    chroma = yuv[..., 1:].reshape(f, h // 2, 2, w // 2, 2, 2).mean(axis=(2, 4))
    chroma = chroma.repeat(2, axis=1).repeat(2, axis=2)
    yuv[..., 1:] = gaussian_blur(chroma, float(rng.uniform(0.5, 1.0)))
    return _to_uint8(yuv @ np.linalg.inv(m).T)


def _fringe(spec, frames, rng):
    """Colour fringes: the red and blue channels shifted 1 px apart (as generated edges)."""
    axis = 1 + int(rng.integers(2))
    out = frames.copy()
    out[..., 0] = np.take(frames[..., 0], np.clip(np.arange(frames.shape[axis]) - 1, 0, None), axis)
    out[..., 2] = np.take(
        frames[..., 2],
        np.clip(np.arange(frames.shape[axis]) + 1, None, frames.shape[axis] - 1),
        axis,
    )
    return out


def _noise(spec, frames, rng):
    """A per-clip colour drift and pixel noise."""
    drift = rng.uniform(-12, 12, 3).astype(np.float32)
    noise = rng.normal(0, rng.uniform(2, 6), frames.shape).astype(np.float32)
    return _to_uint8(frames.astype(np.float32) + drift + noise)


def _jitter(spec, frames, rng):
    """Each object off its path by up to 1 px per frame (a wobble, not a change of motion)."""
    pos = trajectory(spec) + rng.integers(-1, 2, (spec.frames, len(spec.objects), 2))
    sides = np.array([box_side(o.size, spec.size) for o in spec.objects], dtype=float)
    pos = np.clip(pos, 0, spec.size - sides[None, :, None])
    return render_at(spec, pos)


def _flicker(spec, frames, rng):
    """One object half-faded for one or two frames."""
    i = int(rng.integers(len(spec.objects)))
    mask = object_mask(spec, i)
    out = frames.astype(np.float32)
    for t in rng.choice(spec.frames, size=int(rng.integers(1, 3)), replace=False):
        out[t][mask[t]] = 0.5 * out[t][mask[t]] + 0.5 * _bg(spec)
    return _to_uint8(out)


def _draw_superellipse(spec: ClipSpec, frames: np.ndarray, i: int, p: np.ndarray) -> np.ndarray:
    """Object ``i`` redrawn as the superellipse |u|^p + |v|^p <= 1 in its box, exponent
    ``p[t]`` in frame t (2: a disc; large: a square)."""
    obj = spec.objects[i]
    half = box_side(obj.size, spec.size) / 2
    out = frames.copy()
    out[object_mask(spec, i)] = _bg(spec).astype(np.uint8)
    grid = np.arange(spec.size) + 0.5
    for t, (x, y) in enumerate(trajectory(spec)[:, i]):
        u, v = (grid - x - half) / half, (grid - y - half) / half
        inside = np.abs(v)[:, None] ** p[t] + np.abs(u)[None, :] ** p[t] <= 1.0
        out[t][inside] = OBJECT_COLORS[obj.color]
    return out


def _round_one(spec: ClipSpec, rng: np.random.Generator) -> int | None:
    round_ones = [i for i, o in enumerate(spec.objects) if o.shape in ("square", "circle")]
    return round_ones[int(rng.integers(len(round_ones)))] if round_ones else None


def _superellipse(spec, frames, rng):
    """A square or disc drawn as a superellipse |u|^p + |v|^p <= 1, p log-uniform in [2, 12]:
    every shape between a disc (p = 2) and a square with rounded corners, the generator's
    most common fault. Whether the caption still holds is the judge's call."""
    i = _round_one(spec, rng)
    if i is None:
        return None
    p = float(np.exp(rng.uniform(np.log(2.0), np.log(12.0))))
    return _draw_superellipse(spec, frames, i, np.full(spec.frames, p))


def _wobble(spec, frames, rng):
    """A square or disc whose roundness changes from frame to frame (each frame's exponent
    drawn log-uniformly from a range of the clip's own): generated shapes drift between a
    square and a disc, and the judge reads the shape most frames show — near half the frames
    either way, the case where best-of-2 has to choose. The judge's call."""
    i = _round_one(spec, rng)
    if i is None:
        return None
    lo, hi = np.sort(rng.uniform(np.log(2.0), np.log(12.0), 2))
    return _draw_superellipse(spec, frames, i, np.exp(rng.uniform(lo, hi, spec.frames)))


def _morph(spec, frames, rng):
    """One object turns into another shape (square↔circle most often) from an early frame on:
    most frames show the wrong shape."""
    i = int(rng.integers(len(spec.objects)))
    shape = spec.objects[i].shape
    near = {"square": "circle", "circle": "square", "triangle": "circle"}[shape]
    other = near if rng.random() < 0.6 else _choice(rng, [s for s in SHAPES if s != shape])
    start = int(rng.integers(0, spec.frames // 4 + 1))
    out = frames.copy()
    out[start:] = render(_with_object(spec, i, shape=other))[start:]
    return out


def _split(spec, frames, rng):
    """One object cut in two by a background-coloured gap through its middle (from an early
    frame on): two blobs where the caption has one."""
    i = int(rng.integers(len(spec.objects)))
    obj = spec.objects[i]
    side = box_side(obj.size, spec.size)
    gap = max(2, round(side / 6))
    vertical = obj.shape == "triangle" or rng.random() < 0.5
    start = int(rng.integers(0, spec.frames // 4 + 1))
    mask = object_mask(spec, i)
    out = frames.copy()
    grid = np.arange(spec.size)
    for t, (x, y) in enumerate(trajectory(spec)[:, i]):
        if t < start:
            continue
        lo = round((x if vertical else y) + side / 2 - gap / 2)
        band = (grid >= lo) & (grid < lo + gap)
        cut = mask[t] & (band[None, :] if vertical else band[:, None])
        out[t][cut] = _bg(spec).astype(np.uint8)
    return out


def _fade(spec, frames, rng):
    """One object fades into the background (or out of it) early on: gone in most frames."""
    i = int(rng.integers(len(spec.objects)))
    mask = object_mask(spec, i)
    start = int(rng.integers(1, max(2, spec.frames // 2 - 3)))
    alpha = np.clip(1.0 - (np.arange(spec.frames) - start + 1) / 3.0, 0.0, 1.0)
    if rng.random() < 0.5:  # appears late instead
        alpha = alpha[::-1]
    out = frames.astype(np.float32)
    for t in range(spec.frames):
        out[t][mask[t]] = alpha[t] * out[t][mask[t]] + (1 - alpha[t]) * _bg(spec)
    return _to_uint8(out)


_NEAR_COLORS = {
    "red": ("orange", "purple"), "orange": ("yellow", "red"), "yellow": ("orange", "green"),
    "green": ("yellow", "blue"), "blue": ("purple", "green"), "purple": ("blue", "red"),
}  # fmt: skip


def _recolor(spec, frames, rng):
    """One object in a neighbouring palette colour (orange for yellow, purple for blue…)."""
    i = int(rng.integers(len(spec.objects)))
    taken = {o.color for o in spec.objects}
    options = [c for c in _NEAR_COLORS[spec.objects[i].color] if c not in taken]
    if not options:
        return None
    return render(_with_object(spec, i, color=_choice(rng, options)))


def _freeze(spec, frames, rng):
    """Every object stays where it starts: the motion the caption names is not shown."""
    if all(o.motion == "still" for o in spec.objects):
        return None
    return np.repeat(frames[:1], spec.frames, axis=0)


def _reverse(spec, frames, rng):
    """The clip played backwards: every moving object goes the other way."""
    if all(o.motion == "still" for o in spec.objects):
        return None
    return frames[::-1].copy()


def _resize(spec, frames, rng):
    """One object drawn in the other size about the same centre (wrong when the caption
    names the size, fine when it omits it: the judge's call)."""
    i = int(rng.integers(len(spec.objects)))
    obj = spec.objects[i]
    size = "small" if obj.size == "large" else "large"
    shift = (box_side(obj.size, spec.size) - box_side(size, spec.size)) / 2
    new = _with_object(spec, i, size=size, x=obj.x + shift, y=obj.y + shift)
    from world.shapes_world import layout_ok

    return render(new) if layout_ok(new, gap=1) else None


def _extra(spec, frames, rng):
    """A spurious small still blob of an unused colour: one object more than the caption."""
    colors = [c for c in OBJECT_COLORS if c not in {o.color for o in spec.objects}]
    from world.shapes_world import layout_ok

    side = box_side("small", spec.size)
    for _ in range(20):
        x, y = rng.integers(0, spec.size - side + 1, 2)
        blob = ObjectSpec(_choice(rng, SHAPES), _choice(rng, colors), "small", "still", x, y)
        new = ClipSpec([*spec.objects, blob], spec.background, spec.frames, spec.size, spec.fps,
                       spec.switch_frame)  # fmt: skip
        if layout_ok(new):
            return render(new)
    return None


def _choice(rng: np.random.Generator, options) -> Any:
    return options[int(rng.integers(len(options)))]


Degradation = Callable[[ClipSpec, np.ndarray, np.random.Generator], np.ndarray | None]

#: name → (function, intent): "keep" the caption holds as the judge sees it, "break" it does
#: not, None the judge decides (it depends on the amount drawn or on what the caption names).
DEGRADATIONS: dict[str, tuple[Degradation, str | None]] = {
    "blur": (_blur, "keep"),
    "yuv420": (_yuv420, "keep"),
    "fringe": (_fringe, "keep"),
    "noise": (_noise, "keep"),
    "jitter": (_jitter, "keep"),
    "flicker": (_flicker, "keep"),
    "superellipse": (_superellipse, None),
    "wobble": (_wobble, None),
    "morph": (_morph, "break"),
    "split": (_split, "break"),
    "fade": (_fade, "break"),
    "recolor": (_recolor, "break"),
    "freeze": (_freeze, "break"),
    "reverse": (_reverse, "break"),
    "resize": (_resize, None),
    "extra": (_extra, "break"),
}
#: The look of generated clips, laid over a degradation half the time so that a damaged clip
#: is not told from a right one by its crisp edges alone.
LOOKS = ("blur", "yuv420", "fringe", "noise")


def check_degradations(kinds: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``kinds`` (empty: all of :data:`DEGRADATIONS`; a name given twice is drawn twice as
    often), or ValueError naming an unknown one."""
    unknown = [k for k in kinds if k not in DEGRADATIONS]
    if unknown:
        raise ValueError(f"unknown degradations {unknown}; allowed: {list(DEGRADATIONS)}")
    return tuple(kinds) or tuple(DEGRADATIONS)


@dataclass
class Degraded:
    frames: np.ndarray  # (F, S, S, 3) uint8
    kind: str
    intent: str | None  # DEGRADATIONS' intent of ``kind``
    look: str | None = None  # the look laid over it, if any


def degrade(
    spec: ClipSpec,
    rng: np.random.Generator,
    kinds: tuple[str, ...] | None = None,
    frames: np.ndarray | None = None,
    look_prob: float = 0.5,
) -> Degraded:
    """Damage the render of ``spec`` with one of ``kinds`` (drawn uniformly among the entries
    that apply, so a kind listed twice weighs double), then, with probability ``look_prob`` and for a kind that is not a look itself,
    one of :data:`LOOKS` on top. Deterministic in ``rng``'s state."""
    kinds = check_degradations(kinds or ())
    clean = render(spec) if frames is None else frames
    for kind in rng.permutation(list(kinds)):
        fn, intent = DEGRADATIONS[str(kind)]
        out = fn(spec, clean, rng)
        if out is None:
            continue
        look = None
        if kind not in LOOKS and rng.random() < look_prob:
            look = _choice(rng, LOOKS)
            out = DEGRADATIONS[look][0](spec, out, rng)
        return Degraded(out, str(kind), intent, look)
    raise ValueError(f"none of {kinds} applies to {spec.to_dict()}")


def judged_correct(frames: np.ndarray, spec: ClipSpec, text: str) -> bool:
    """The judge's all-correct verdict on ``frames`` against ``text`` (a caption of ``spec``)."""
    from evals.shapes import judge

    return bool(judge(frames, expectation_of(spec, text))["all_correct"])


# ---------------------------------------------------------------------------- groups for the trainer


IMAGE_COUNTERFACTUALS = ("color", "shape", "binding_color")


def negatives_for(
    spec: ClipSpec, caption_seed: int, n: int, rng: np.random.Generator, image: bool = False
) -> list[str]:
    """Up to ``n`` counterfactual captions of ``spec``, each phrased like the true caption
    (same caption seed), of distinct kinds drawn at random among those that apply."""
    kinds = list(IMAGE_COUNTERFACTUALS if image else COUNTERFACTUALS)
    rng.shuffle(kinds)
    out = []
    for kind in kinds:
        cf = counterfactual(spec, kind, rng)
        if cf is not None:
            out.append(caption(cf, np.random.default_rng(caption_seed), image=image))
        if len(out) == n:
            break
    return out


@dataclass
class GroupBatch:
    """Clips grouped by caption, with the judge's verdicts: what the trainer adds to a step.

    ``frames`` (M, F', 3, S, S) in [-1, 1]; ``captions`` (G), one per group; ``negatives``
    counterfactual captions of the groups (the text side's hard negatives); ``anchors`` (G)
    the index in ``frames`` of each group's positive (a contrastive row); ``groups`` (M) each
    clip's group; ``labels`` (M) the judge's verdict on the clip against its group's caption;
    ``ranked`` (M) whether the clip takes part in the ranking term; ``sources`` (G)
    ``"degraded"`` or ``"generated"``."""

    frames: torch.Tensor
    captions: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    anchors: list[int] = field(default_factory=list)
    groups: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    labels: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    ranked: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.captions)

    @classmethod
    def build(cls, groups: list[dict[str, Any]], num_frames: int, side: int) -> GroupBatch:
        """From ``[{"caption", "negatives", "clips": [(frames uint8, label, ranked)],
        "anchor": index into clips, "source"}]``."""
        from pipelines.scoring import frames_to_tensor

        frames, gid, labels, ranked, anchors = [], [], [], [], []
        for g, group in enumerate(groups):
            if not group["clips"][group["anchor"]][1]:
                raise ValueError(f"group {g}'s anchor is not judged correct: {group['caption']!r}")
            anchors.append(len(frames) + group["anchor"])
            for clip, label, rank in group["clips"]:
                frames.append(frames_to_tensor(clip, num_frames, side))
                gid.append(g)
                labels.append(bool(label))
                ranked.append(bool(rank))
        return cls(
            frames=torch.stack(frames) if frames else torch.zeros(0, num_frames, 3, side, side),
            captions=[g["caption"] for g in groups],
            negatives=[n for g in groups for n in g["negatives"]],
            anchors=anchors,
            groups=torch.tensor(gid, dtype=torch.long),
            labels=torch.tensor(labels, dtype=torch.bool),
            ranked=torch.tensor(ranked, dtype=torch.bool),
            sources=[g["source"] for g in groups],
        )

    @staticmethod
    def cat(batches: list[GroupBatch]) -> GroupBatch:
        batches = [b for b in batches if len(b)]
        if not batches:
            raise ValueError("nothing to concatenate")
        offsets = np.cumsum([0] + [b.frames.shape[0] for b in batches])
        goffsets = np.cumsum([0] + [len(b) for b in batches])
        return GroupBatch(
            frames=torch.cat([b.frames for b in batches]),
            captions=[c for b in batches for c in b.captions],
            negatives=[n for b in batches for n in b.negatives],
            anchors=[int(o) + a for b, o in zip(batches, offsets, strict=False) for a in b.anchors],
            groups=torch.cat([b.groups + int(o) for b, o in zip(batches, goffsets, strict=False)]),
            labels=torch.cat([b.labels for b in batches]),
            ranked=torch.cat([b.ranked for b in batches]),
            sources=[s for b in batches for s in b.sources],
        )


def degraded_groups(
    world: ShapesWorld,
    rng: np.random.Generator,
    n: int,
    num_frames: int,
    side: int,
    kinds: tuple[str, ...] = (),
    two_object_prob: float = 0.5,
    hard_negatives: int = 0,
    use_judge: bool = True,
    variants: int = 1,
) -> GroupBatch:
    """``n`` groups, each of a fresh layout damaged ``variants`` times (a kind drawn per
    variant from ``kinds``; a kind named twice is drawn twice as often), every variant
    labelled by the judge against the caption (``use_judge``; else by the degradation's
    intent, the judge deciding only where it has none).

    One variant: a kept one is the group's positive on its own (the batch has renders); a
    broken one is ranked below the render of its layout. Several: the variants are ranked
    among themselves — damaged alike, right and wrong differ only in what the judge reads —
    and the render anchors the caption (outside the ranking) when no variant is kept."""
    kinds = check_degradations(kinds)
    if variants < 1:
        raise ValueError(f"variants must be >= 1, got {variants}")
    groups = []
    for _ in range(n):
        spec = world.sample_spec(rng, "video2" if rng.random() < two_object_prob else "video1")
        seed = int(rng.integers(1 << 32))
        text = caption(spec, np.random.default_rng(seed))
        clean = render(spec)
        clips = []
        for _ in range(variants):
            d = degrade(spec, rng, kinds, frames=clean)
            ok = (
                judged_correct(d.frames, spec, text)
                if use_judge or d.intent is None
                else d.intent == "keep"
            )
            clips.append((d.frames, ok, True))
        if variants == 1 and not clips[0][1]:
            clips.insert(0, (clean, True, True))
        elif not any(ok for _, ok, _ in clips):
            clips.append((clean, True, False))
        anchor = next(i for i, (_, ok, _) in enumerate(clips) if ok)
        groups.append(
            {
                "caption": text,
                "negatives": negatives_for(spec, seed, hard_negatives, rng),
                "clips": clips,
                "anchor": anchor,
                "source": "degraded",
            }
        )
    return GroupBatch.build(groups, num_frames, side)


@dataclass
class _Prompt:
    caption: str
    spec: ClipSpec
    caption_seed: int
    clips: list[np.ndarray]  # (F', S, S, 3) uint8, the samples' frames the scorer reads
    labels: list[bool]


class GeneratedSet:
    """Judged generated clips of one or more batch folders (:func:`judge_generated`), grouped
    by prompt. Only prompts whose line carried ``spec`` and ``caption_seed`` are kept (the
    trainer renders the layout and rebuilds counterfactual captions from them)."""

    def __init__(self, prompts: list[_Prompt]):
        if not prompts:
            raise ValueError("no judged generated prompts with spec and caption_seed")
        self.prompts = prompts
        self.mixed = [i for i, p in enumerate(prompts) if len(set(p.labels)) == 2]

    @classmethod
    def from_dirs(cls, dirs: list[str | Path], num_frames: int, judge: bool = True) -> GeneratedSet:
        """Read every judged video (judging the folders first where ``labels.jsonl`` is missing
        or stale, when ``judge``); keeps ``num_frames`` frames of each, spread evenly."""
        from pipelines.video_io import read_video

        by_prompt: dict[tuple[str, str], _Prompt] = {}
        for d in dirs:
            d = Path(d)
            if judge:
                judge_generated(d)
            for row in read_labels(d):
                if "spec" not in row or "caption_seed" not in row:
                    continue
                frames, _ = read_video(d / row["video"])
                idx = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
                key = (str(d), row["prompt"])
                if key not in by_prompt:
                    by_prompt[key] = _Prompt(
                        row["prompt"],
                        ClipSpec.from_dict(row["spec"]),
                        int(row["caption_seed"]),
                        [],
                        [],
                    )
                by_prompt[key].clips.append(np.ascontiguousarray(frames[idx]))
                by_prompt[key].labels.append(bool(row["all_correct"]))
        return cls(list(by_prompt.values()))

    def __len__(self) -> int:
        return len(self.prompts)

    def stats(self) -> dict[str, int]:
        labels = [y for p in self.prompts for y in p.labels]
        return {"prompts": len(self.prompts), "clips": len(labels), "correct": sum(labels),
                "mixed_prompts": len(self.mixed)}  # fmt: skip

    def groups(
        self,
        rng: np.random.Generator,
        n: int,
        num_frames: int,
        side: int,
        hard_negatives: int = 0,
        mixed_share: float = 0.5,
    ) -> GroupBatch:
        """``n`` distinct prompts (a share ``mixed_share`` from those with both a correct and a
        wrong sample, where there are any), each a group of all its samples with their
        verdicts. The group's positive is a correct sample when it has one, else the render
        of its layout (which takes no part in the ranking: it only anchors the caption)."""
        n = min(n, len(self.prompts))
        n_mixed = min(len(self.mixed), int(round(n * mixed_share)))
        chosen = list(rng.choice(self.mixed, size=n_mixed, replace=False)) if n_mixed else []
        rest = [i for i in range(len(self.prompts)) if i not in set(chosen)]
        chosen += list(rng.choice(rest, size=n - n_mixed, replace=False))
        groups = []
        for i in chosen:
            p = self.prompts[int(i)]
            clips = [(c, y, True) for c, y in zip(p.clips, p.labels, strict=True)]
            correct = [k for k, y in enumerate(p.labels) if y]
            if correct:
                anchor = correct[int(rng.integers(len(correct)))]
            else:
                render_frames = render(p.spec)
                idx = np.linspace(0, len(render_frames) - 1, num_frames).round().astype(int)
                clips.append((render_frames[idx], True, False))
                anchor = len(clips) - 1
            groups.append(
                {
                    "caption": p.caption,
                    "negatives": negatives_for(p.spec, p.caption_seed, hard_negatives, rng),
                    "clips": clips,
                    "anchor": anchor,
                    "source": "generated",
                }
            )
        return GroupBatch.build(groups, num_frames, side)


# ---------------------------------------------------------------------------- ranking


def ranking_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    scale: float | torch.Tensor = 1.0,
    margin: float = 0.0,
    cross_weight: float = 0.0,
) -> torch.Tensor | None:
    """Pairwise logistic ranking (RankNet, Burges et al. 2005): for every pair of a correct
    clip i and a wrong clip j, ``softplus(scale · (s_j - s_i + margin))``, s a clip's cosine
    with its own group's caption. The mean over pairs within a group (samples of one prompt:
    the best-of-N choice) plus ``cross_weight`` times the mean over pairs across groups (the
    pooled ranking the pick AUC measures) — each a mean of its own, so that the few pairs
    within groups are not drowned by the many across. scores (M,), labels (M,) bool,
    groups (M,) → a scalar, or None when no pair counts."""
    pos, neg = labels.nonzero()[:, 0], (~labels).nonzero()[:, 0]
    if not len(pos) or not len(neg):
        return None
    diff = scores[neg][None, :] - scores[pos][:, None] + margin  # (P, N)
    pair_loss = torch.nn.functional.softplus(scale * diff)
    same = groups[pos][:, None] == groups[neg][None, :]
    terms = []
    if same.any():
        terms.append(pair_loss[same].mean())
    if cross_weight > 0 and (~same).any():
        terms.append(cross_weight * pair_loss[~same].mean())
    return sum(terms) if terms else None
