"""The studio's job queue: requests go into the :class:`~studio.gallery.Gallery`, one worker
per machine runs them one at a time.

Any number of processes (UI servers, tabs, scripts) may enqueue. Each process starts a
:class:`Worker` thread, but only the one that holds the machine's lock file runs jobs, so
one model generates at a time however many servers share a store. When the next worker
takes the lock, a job left running by a worker that died is queued again, or cancelled if
its user had asked to cancel it (:meth:`~studio.gallery.Gallery.requeue_interrupted`).

No streamlit here: the pages call these functions and so do the tests.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipelines.elements import REF_PLACEHOLDER, placeholders
from pipelines.storyboard import Scene, Storyboard, storyboard_from_data
from pipelines.text_to_video import MAX_GUIDANCE, MAX_STEPS

from .gallery import Gallery, Job
from .generate import (
    GenerateRequest,
    StoryboardOptions,
    StudioError,
    check_model_takes_references,
    check_prompt_references,
    check_request,
    check_seed,
    check_text,
    clean_stale_temps,
    default_model_path,
    generate,
    image_first_used,
    load_pipeline,
    max_references,
    model_for,
    parse_lora,
    read_references,
    render_storyboard,
    split_lora,
)
from .shipped import scorer_spec

try:  # POSIX; elsewhere every process runs its own worker
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

# What the UI accepts; the pipeline checks the model's own limits when the job runs.
MAX_PROMPT_CHARS = 1000
MAX_FRAMES = 64
MAX_STORY_FRAMES = 256
MAX_BEST_OF = 8
MAX_CANDIDATES = 4  # draws per continued storyboard window (`studio storyboard --candidates`)
MAX_LORA_CHARS = 4096  # a LoRA spec: a path and a scale
THUMB_SCALE = 2  # thumbnails are the middle frame, enlarged without smoothing


# A pipeline's scheduler keeps per-call state: one generation at a time per process, even if
# something besides the worker (a script, a test) runs jobs in it too.
_GENERATION_LOCK = threading.Lock()


class JobCancelled(Exception):
    """Raised inside a running job when its user asked to cancel it."""


# A job is queued (by the UI or the HTTP API) only while fewer than this many wait: the
# machine runs one at a time, so a longer queue only grows the store and the wait, and a
# script looping on POST must not fill the disk.
MAX_QUEUED = 100


class QueueFull(StudioError):
    """Too many jobs wait already: come back when some have run (HTTP 429)."""


def check_queue_room(gallery: Gallery, limit: int = MAX_QUEUED) -> None:
    """QueueFull when ``limit`` or more jobs are queued in ``gallery``; a caller that must
    not overshoot checks and submits under one lock (the API does, per process)."""
    waiting = len(gallery.search(status="queued", limit=limit))
    if waiting >= limit:
        raise QueueFull(
            f"the queue is full: {waiting} jobs are waiting and at most {limit} may; "
            "try again when some have run, or cancel some"
        )


# ---------------------------------------------------------------------------- requests
def check_generate_request(
    request: GenerateRequest, references: bool = False, lora_roots: list[Path] | None = None
) -> GenerateRequest:
    """Reject what no model can do, with a message a page can show as it is.

    references: whether the model takes reference elements; without them a ``<refN>``
    placeholder would be read as plain words, so it is refused instead.
    lora_roots: where the adapter may be (:func:`check_lora`).
    """
    prompt = (request.prompt or "").strip()
    if not prompt:
        raise StudioError("the prompt is empty: describe the video you want")
    if not references and REF_PLACEHOLDER.search(prompt):
        raise StudioError(
            "the prompt uses a reference element (<refN>) but the loaded model has no "
            "reference-element conditioning: remove the placeholder or load a model trained "
            "with elements"
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        raise StudioError(f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS}")
    negative = request.negative_prompt or ""
    if isinstance(negative, str) and len(negative) > MAX_PROMPT_CHARS:
        raise StudioError(
            f"the negative prompt is {len(negative)} characters; at most {MAX_PROMPT_CHARS}"
        )
    _check_range("frames", request.frames, 1, MAX_FRAMES)
    _check_range("steps", request.steps, 1, MAX_STEPS)
    _check_range("guidance", request.guidance, 0.0, MAX_GUIDANCE)
    check_request(request)  # types, seed and fps: as the CLI and sidecars check them
    request.prompt = prompt
    request.negative_prompt = (request.negative_prompt or "").strip() or None
    request.lora = check_lora(request.lora, lora_roots)
    return request


def check_lora(spec: str | None, roots: list[Path] | None = None) -> str | None:
    """A LoRA spec ``PATH[:SCALE]`` checked now, when it is queued, rather than when the
    worker reaches it: :func:`~studio.generate.parse_lora` (the CLI's check: the path exists,
    the scale is in -10..10), and a folder must hold the adapter's ``*.safetensors``. Returns
    the spec with the path made absolute (the worker and the sidecar do not depend on the
    server's working folder), the scale only when it is not 1; None for no adapter.

    roots: where a network client may point (the HTTP API: the folder the server started in
    and the studio's home), checked before the path is looked at; None (the UI and the CLI,
    the machine's own user): anywhere."""
    if spec is None or not spec.strip():
        return None
    check_text(spec, "lora")
    if len(spec) > MAX_LORA_CHARS:
        raise StudioError(f"lora is {len(spec)} characters; a path takes at most {MAX_LORA_CHARS}")
    if roots is not None and not _inside(Path(split_lora(spec.strip())[0]), roots):
        # before anything on disk is looked at: no answer says whether a path exists
        raise StudioError(
            "lora: this server reads LoRA adapters only from the folders it allows (by default "
            "the folder it was started in and the studio's home; `studio serve --lora-dir DIR` "
            "names others); copy the adapter folder into one"
        )
    try:
        path, scale = parse_lora(spec.strip())
        if path.is_dir() and not any(path.glob("*.safetensors")):
            raise StudioError(
                f"no LoRA adapter in {path}: expected the folder a LoRA run writes (RUN/lora, "
                "with pytorch_lora_weights.safetensors)"
            )
        path = path.resolve()
    except OSError as exc:
        raise StudioError(f"lora: cannot read {spec.strip()[:200]!r}: {exc.strerror}") from None
    return str(path) if scale == 1.0 else f"{path}:{scale!r}"


def _inside(path: Path, roots: list[Path]) -> bool:
    """Whether ``path`` (relative: to the working folder), links resolved, is in a root."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return False
    return any(resolved.is_relative_to(root.resolve()) for root in roots)


def _check_range(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise StudioError(f"{name} must be between {lo} and {hi}, got {value!r}")


def check_storyboard_request(
    scenes: list[dict[str, Any]], options: StoryboardOptions, lora_roots: list[Path] | None = None
) -> Storyboard:
    """Scenes as the page's table holds them (``prompt``, ``frames``) → a valid Storyboard."""
    cleaned = []
    for i, row in enumerate(scenes, start=1):
        check_text(row.get("prompt"), f"scene {i} prompt")
        prompt = str(row.get("prompt") or "").strip()
        if not prompt:
            raise StudioError(f"scene {i} has no prompt")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise StudioError(
                f"scene {i}: the prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS}"
            )
        if REF_PLACEHOLDER.search(prompt):  # scenes here take no reference images
            raise StudioError(
                f"scene {i}: the prompt uses a reference element (<refN>), which a storyboard "
                "made here cannot take (a storyboard YAML's `references:` can, with "
                "`studio storyboard`)"
            )
        frames = row.get("frames")
        try:
            frames = int(frames)
        except (TypeError, ValueError):
            raise StudioError(f"scene {i}: frames must be a whole number, got {frames!r}") from None
        _check_range(f"scene {i} frames", frames, 1, MAX_FRAMES)
        cleaned.append(Scene(prompt=prompt, frames=frames))
    if not cleaned:
        raise StudioError("the storyboard is empty: add at least one scene")
    total = sum(s.frames for s in cleaned)  # before Storyboard, whose own limit is higher
    if total > MAX_STORY_FRAMES:
        raise StudioError(f"the film is {total} frames; at most {MAX_STORY_FRAMES}")
    story = Storyboard(cleaned)
    check_seed(options.seed)
    _check_range("steps", options.steps, 1, MAX_STEPS)
    _check_range("guidance", options.guidance, 0.0, MAX_GUIDANCE)
    _check_range("candidates (draws per later window)", options.candidates, 1, MAX_CANDIDATES)
    options.lora = check_lora(options.lora, lora_roots)
    return story


def element_references(gallery: Gallery, prompt: str, elements: list[str] | None) -> list[str]:
    """The files of the stored elements (``store_element`` names, in upload order) that
    ``prompt`` binds: ``<ref1>`` … ``<refN>`` take the first N; a prompt without
    placeholders takes none, so uploaded elements never change a plain prompt. StudioError
    for a placeholder without its element, a gap (``<ref1>``, ``<ref3>``), or a missing or
    unreadable file; every file is read now, so a bad one fails here, not in the queue."""
    try:
        used = placeholders(prompt)
    except ValueError as exc:
        raise StudioError(str(exc)) from None
    if not used:
        return []
    names = list(elements or [])[: max(used)]
    if any(Path(name).name != name for name in names):  # names come from the store
        raise StudioError("an element name is not a file name of the studio's store")
    if len(names) < max(used):
        have = f"only {len(names)} element{'s are' if len(names) != 1 else ' is'} uploaded"
        raise StudioError(
            f"the prompt uses <ref{max(used)}> but {have}: add it on the Elements page"
        )
    paths = [str(gallery.path("elements", name)) for name in names]
    check_prompt_references(prompt, len(paths))
    read_references(paths)
    return paths


def submit_generate(
    gallery: Gallery,
    request: GenerateRequest,
    best_of: int = 1,
    scorer: str | None = None,
    elements: list[str] | None = None,
    model: str | Path | None = None,
    lora_roots: list[Path] | None = None,
    max_queued: int = MAX_QUEUED,
) -> Job:
    """Queue a clip; ``best_of`` > 1 keeps the candidate ``scorer`` (a ``clip:``/``xclip:``
    spec) ranks highest. ``lora_roots``: :func:`check_lora`'s; ``max_queued``: QueueFull
    first when that many jobs wait (as every submission here: :func:`check_queue_room`).

    elements: the Elements page's stored elements; the prompt's placeholders pick which
        (:func:`element_references`), when the model a request with elements runs on (the
        worker's ``model``, default the shipped one, whose elements go to the shipped
        elements model: :func:`studio.shipped.model_for`; only its config is read) takes
        reference elements. Without such a model a ``<refN>`` prompt is refused as before.
    """
    check_queue_room(gallery, max_queued)
    model = model_for(model, references=True)
    model_max = max_references(model)
    request = check_generate_request(request, bool(model_max), lora_roots)
    if model_max:
        request.references = element_references(gallery, request.prompt, elements)
        check_model_takes_references(len(request.references), model_max, model)
    _check_range("best-of", best_of, 1, MAX_BEST_OF)
    if best_of > 1 and not scorer:
        raise StudioError(
            "best-of needs a scorer, and this studio was started without one "
            "(STUDIO_SCORER=none, or no shipped scorer): start it with STUDIO_SCORER=default"
        )
    data = asdict(request) | ({"best_of": best_of, "scorer": scorer} if best_of > 1 else {})
    return gallery.enqueue("generate", data, request.prompt, request.seed)


def submit_storyboard(
    gallery: Gallery,
    scenes: list[dict[str, Any]],
    options: StoryboardOptions,
    lora_roots: list[Path] | None = None,
    max_queued: int = MAX_QUEUED,
) -> Job:
    check_queue_room(gallery, max_queued)
    story = check_storyboard_request(scenes, options, lora_roots)
    request = {"story": story.to_dict(), "options": asdict(options)}
    prompt = " | ".join(s.prompt for s in story.scenes)
    return gallery.enqueue("storyboard", request, prompt, options.seed)


def rerun(
    gallery: Gallery,
    job_id: str,
    lora_roots: list[Path] | None = None,
    max_queued: int = MAX_QUEUED,
) -> Job:
    """Queue a job again with exactly the settings it was made with (``lora_roots``:
    :func:`check_lora`'s, for a job the UI queued with an adapter elsewhere)."""
    check_queue_room(gallery, max_queued)
    job = gallery.get(job_id)
    if job is None:
        raise StudioError(f"no job {job_id}")
    check_lora(job_lora(job), lora_roots)  # its adapter is still there: say so now
    return gallery.enqueue(job.kind, job.request, job.prompt, job.seed)


def variation(gallery: Gallery, job_id: str, seed: int) -> Job:
    """Queue a job again with the settings it was made with but another ``seed``."""
    check_queue_room(gallery)
    job = gallery.get(job_id)
    if job is None:
        raise StudioError(f"no job {job_id}")
    check_seed(seed)
    check_lora(job_lora(job))
    request = json.loads(json.dumps(job.request))  # a deep copy
    if job.kind == "generate":
        request["seed"] = seed
    else:
        request["options"]["seed"] = seed
    return gallery.enqueue(job.kind, request, job.prompt, seed)


def job_has_references(job: Job) -> bool:
    """Whether a job draws reference elements (a clip's, or any storyboard scene's)."""
    if job.kind == "generate":
        return bool(job.request.get("references"))
    return any(s.get("references") for s in job.request["story"]["scenes"])


def job_lora(job: Job) -> str | None:
    """The LoRA spec a job asks for (None: the model as saved)."""
    request = job.request if job.kind == "generate" else job.request.get("options", {})
    return request.get("lora")


# ---------------------------------------------------------------------------- running
class _Stages:
    """Records what a running job is doing (:meth:`Gallery.set_stage`) for the pages'
    progress line: a clip goes loading → first_frame (image first) → clip → encoding, once per
    best-of candidate; a storyboard loading → windows → encoding. No loading stage when the
    model was loaded before the job (the worker loads it as it starts). Written on a change
    of stage only, from the steps ``progress(done, total)`` reports."""

    def __init__(self, gallery: Gallery, job: Job):
        self.gallery, self.job = gallery, job
        self.candidates = int(job.request.get("best_of", 1)) if job.kind == "generate" else 1
        self.candidate = 1
        self.first_frame = False
        self.warm = False  # the model was loaded before the job: no loading stage
        self.stage: dict = {}  # the stage as last recorded

    @property
    def name(self) -> str:
        return self.stage.get("name", "")

    def enter(self, name: str, base: int = 0) -> None:
        stage = {"name": name, "since": time.time(), "base": base, "first_frame": self.first_frame}
        if self.warm:
            stage["warm"] = True
        if self.candidates > 1:
            stage |= {"candidate": self.candidate, "candidates": self.candidates}
        self.stage = stage
        self.gallery.set_stage(self.job.id, stage)

    def loaded(self, pipe) -> None:
        """The model is loaded: the first stage that draws begins."""
        if self.job.kind == "storyboard":
            self.enter("windows")
            return
        request = self.job.request
        self.first_frame = request.get("frames", 1) > 1 and image_first_used(
            pipe, request.get("image_first")
        )
        self.enter("first_frame" if self.first_frame else "clip")

    def step(self, done: int, total: int) -> None:
        if done == 0:  # a step of the first frame (image first): still that stage
            return
        if self.name == "windows" and done < total:
            # when the last window ended: a film's estimate counts whole windows, and the
            # one being drawn must not count as slow (progress.job_progress)
            self.stage["unit_at"] = time.time()
            self.gallery.set_stage(self.job.id, self.stage)
        if self.name == "first_frame":  # the clip's first step ends the first frame
            self.enter("clip", base=done)
        if done < total:
            return
        if self.candidate < self.candidates:  # the next candidate starts over
            self.candidate += 1
            self.gallery.set_progress(self.job.id, 0, total)
            self.enter("first_frame" if self.first_frame else "clip")
        else:
            self.enter("encoding")


@dataclass(frozen=True)
class ModelLoad:
    """When a model (with its LoRA adapter, if any) became ready in this process."""

    ready_at: float  # time.time() when it was loaded
    load_s: float  # how long loading it took


_LOADS: dict[str, ModelLoad] = {}
MAX_LOAD_RECORDS = 64
_LOAD_LOCK = threading.Lock()  # one load at a time: a second asker waits and shares it


def _load_key(model: str | Path, lora: str | None) -> str:
    return f"{Path(model).resolve()}|{lora}"


def model_load(model: str | Path, lora: str | None = None) -> ModelLoad | None:
    """When ``model`` (with ``lora``) was loaded in this process by :func:`load_model`; None
    if it has not been."""
    return _LOADS.get(_load_key(model, lora))


def load_model(model: str | Path, lora: str | None = None) -> tuple[Any, ModelLoad]:
    """:func:`~studio.generate.load_pipeline` (cached per process) that also remembers when
    the model became ready: a worker loads its model as it starts (``preload``), and the
    jobs after that record that they did not wait for it."""
    key = _load_key(model, lora)
    with _LOAD_LOCK:
        t0 = time.time()
        pipe = load_pipeline(model, lora=lora)
        if key not in _LOADS:
            _LOADS[key] = ModelLoad(ready_at=time.time(), load_s=time.time() - t0)
            while len(_LOADS) > MAX_LOAD_RECORDS:  # as bounded as the pipelines themselves
                del _LOADS[next(iter(_LOADS))]
        return pipe, _LOADS[key]


def run_job(gallery: Gallery, job: Job, model: str | Path | None = None) -> Job:
    """Run one claimed job to its end (done, failed or cancelled) and record it.

    The model is loaded with the job's LoRA adapter, if it names one; the sidecar's
    ``model_load`` says whether the model was ready before the job began (``warm``), when
    (``ready_at``, seconds since the epoch) and how long loading it took (``load_s``)."""
    videos = gallery.home / "videos"
    out = videos / f"{job.id}.mp4"
    stages = _Stages(gallery, job)
    model = model_for(model, references=job_has_references(job))
    lora = job_lora(job)

    def progress(done: int, total: int) -> None:
        cancelled = gallery.set_progress(job.id, done, total)
        stages.step(done, total)  # after: the next best-of candidate starts its count at 0
        if cancelled:
            raise JobCancelled()

    def on_step() -> None:  # a film reports whole windows: its cancel acts between steps too
        if gallery.cancel_requested(job.id):
            raise JobCancelled()

    try:
        if gallery.cancel_requested(job.id):
            raise JobCancelled()
        stages.warm = model_load(model, lora) is not None
        if not stages.warm:
            stages.enter("loading")
        pipe, loaded = load_model(model, lora)
        stages.loaded(pipe)
        extra = {
            "job": job.id,
            "model_load": {
                "warm": stages.warm,
                "ready_at": round(loaded.ready_at, 3),
                "load_s": round(loaded.load_s, 3),
            },
        }
        with _GENERATION_LOCK:
            if job.kind == "generate":
                data = dict(job.request)
                best_of, spec = data.pop("best_of", 1), data.pop("scorer", None)
                result = generate(
                    GenerateRequest(**data),
                    out,
                    model=model,
                    pipe=pipe,
                    progress=progress,
                    extra=extra,
                    best_of=best_of,
                    scorer=_scorer(spec) if best_of > 1 else None,
                )
            else:
                story = storyboard_from_data(job.request["story"])  # not re-parsed as text
                options = StoryboardOptions(**job.request["options"])
                result = render_storyboard(
                    story,
                    out,
                    options,
                    model=model,
                    pipe=pipe,
                    progress=progress,
                    extra=extra,
                    on_step=on_step,
                )
        thumb = gallery.home / "thumbs" / f"{job.id}.png"
        write_thumbnail(result.frames, thumb)
        gallery.finish(
            job.id,
            "done",
            video=out.name,
            sidecar=result.sidecar.name,
            thumbnail=thumb.name,
            scores=result.record.get("best_of"),
        )
    except JobCancelled:
        gallery.finish(job.id, "cancelled")
    except (StudioError, ValueError, OSError) as exc:
        gallery.finish(job.id, "failed", error=str(exc).splitlines()[0] if str(exc) else "failed")
    except Exception as exc:  # a bug: keep the worker alive, keep the trace in the log
        log.error("job %s failed:\n%s", job.id, traceback.format_exc())
        gallery.finish(job.id, "failed", error=f"{type(exc).__name__}: {exc}")
    return gallery.get(job.id)


_SCORERS: dict[str, Any] = {}


def _scorer(spec: str):
    """A scorer per spec, loaded once per process (like the pipeline)."""
    if spec not in _SCORERS:
        from pipelines.scoring import load_scorer

        _SCORERS[spec] = load_scorer(scorer_spec(spec))
    return _SCORERS[spec]


def write_thumbnail(frames: np.ndarray, path: Path) -> None:
    """The middle frame of ``frames`` (F, H, W, 3) uint8 as a PNG."""
    frame = frames[len(frames) // 2]
    img = Image.fromarray(frame)
    img = img.resize((img.width * THUMB_SCALE, img.height * THUMB_SCALE), Image.NEAREST)
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp)
    tmp.replace(path)


@dataclass
class WorkerStatus:
    running: bool
    holds_lock: bool
    current: str | None


@dataclass(frozen=True)
class ModelStatus:
    """Where a preloading worker's model is (:meth:`Worker.model_status`)."""

    state: str  # "off" (not preloaded: loaded by the first job), "loading", "ready", "failed"
    model: str
    since: float | None = None  # when loading began (time.time())
    ready_at: float | None = None
    load_s: float | None = None
    error: str | None = None  # why it failed, one line


class Worker:
    """Runs queued jobs one at a time in a daemon thread, while holding ``worker.lock``.

    preload: the thread loads the model first, before it looks for jobs (a server starts it
    as it starts, so the first job does not wait for the model): :meth:`model_status` says
    how far it is and :meth:`wait_model` waits for it. A job queued meanwhile waits in the
    queue and starts as soon as the model is ready. The model is loaded whether or not this
    worker then gets the machine's lock, so whichever server takes the jobs has it ready.
    """

    def __init__(
        self,
        gallery: Gallery,
        model: str | Path | None = None,
        poll_s: float = 0.5,
        preload: bool = False,
    ):
        self.gallery = gallery
        self.model = model
        self.poll_s = poll_s
        self.preload = preload
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_file = None
        self.current: str | None = None
        self._model = ModelStatus(
            "loading" if preload else "off",
            str(self._model_path()),
            since=time.time() if preload else None,
        )
        self._model_settled = threading.Event()
        if not preload:
            self._model_settled.set()

    def _model_path(self) -> Path:
        return Path(self.model) if self.model else default_model_path()

    def _load(self) -> None:
        """Load the model (the preload), recording how it went for :meth:`model_status`."""
        self._model = replace(self._model, state="loading", since=time.time())
        try:
            _, loaded = load_model(self._model_path())
            self._model = replace(
                self._model, state="ready", ready_at=loaded.ready_at, load_s=loaded.load_s
            )
        except Exception as exc:  # the first job will fail with the same error, and say so
            if not isinstance(exc, StudioError | ValueError | OSError):
                log.error("loading the model failed:\n%s", traceback.format_exc())
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._model = replace(self._model, state="failed", error=first)
        finally:
            self._model_settled.set()

    def model_status(self) -> ModelStatus:
        return self._model

    def wait_model(self, timeout: float | None = None) -> ModelStatus:
        """Wait until the preload has ended (ready or failed), at most ``timeout`` seconds."""
        self._model_settled.wait(timeout)
        return self._model

    def wake(self) -> None:
        """Look for a job now rather than at the next poll (a page that has just queued one
        calls this: the first click goes straight to the model)."""
        self._wake.set()

    # The lock is taken by the thread that runs jobs and held for its life.
    def _acquire(self, blocking: bool) -> bool:
        if fcntl is None:
            return True
        fh = open(self.gallery.home / "worker.lock", "a+")  # noqa: SIM115 - held for the life
        while not self._stop.is_set():
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_file = fh
                return True
            except BlockingIOError:
                if not blocking:
                    break
                self._stop.wait(self.poll_s * 4)
        fh.close()
        return False

    def _release(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _recover(self) -> None:
        """What a worker that died left: its jobs settled (cancelled if asked, else queued
        again) and its half-written files removed. Called with the lock held, first."""
        self.gallery.requeue_interrupted()
        clean_stale_temps(self.gallery.home / "videos")

    def _drain(self) -> int:
        n = 0
        while not self._stop.is_set() and (job := self.gallery.claim_next()) is not None:
            self.current = job.id
            try:
                run_job(self.gallery, job, self.model)
            finally:
                self.current = None
            n += 1
        return n

    def run_pending(self) -> int:
        """Run queued jobs until none is left, in the calling thread; returns how many ran
        (0 at once when another worker holds the machine's lock)."""
        if not self._acquire(blocking=False):
            return 0
        try:
            self._recover()
            return self._drain()
        finally:
            self._release()

    def _loop(self) -> None:
        if self.preload:
            self._load()
        if not self._acquire(blocking=True):
            return
        try:
            self._recover()
            while not self._stop.is_set():
                if not self._drain():
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
        finally:
            self._release()

    def start(self) -> Worker:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="studio-worker", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 30) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def status(self) -> WorkerStatus:
        alive = self._thread is not None and self._thread.is_alive()
        return WorkerStatus(alive, self._lock_file is not None, self.current)
