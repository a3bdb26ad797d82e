"""What a job's progress line says: its stage by name, how far it is, and about how long is
left. No streamlit here; the worker records the stage (``studio.jobs``, :attr:`Job.stage`),
this turns it into words."""

from __future__ import annotations

import math
from dataclasses import dataclass

from studio.gallery import Job

STAGE_NAMES = {
    "loading": "loading the model",
    "first_frame": "drawing the first frame",
    "clip": "generating the clip",
    "windows": "generating the film",
    "encoding": "encoding the video",
}


@dataclass
class Progress:
    fraction: float  # 0..1, over the whole job
    text: str  # the headline: "Generating the clip: step 12 of 25 · about 6 s left"
    stages: list[tuple[str, str]]  # (stage name, "done" | "now" | "next"), in order


def duration(seconds: float) -> str:
    """``4 s``, ``1 min 5 s``: a rounded-up span for people."""
    s = max(1, math.ceil(seconds))
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"


def plan(job: Job, model_image_first: bool = False, loaded: bool = False) -> list[str]:
    """The stages ``job`` goes through, in order. ``model_image_first``: the model's own
    ``image_first`` setting, what a request that leaves it to the model gets. No loading
    stage when the worker had the model loaded before the job began (``warm``), or, before
    the worker has said, when the model the job needs is ``loaded``."""
    warm = job.stage.get("warm", False) if job.stage.get("name") else loaded
    loading = [] if warm else ["loading"]
    if job.kind == "storyboard":
        return [*loading, "windows", "encoding"]
    if job.stage.get("name", "loading") == "loading":  # the worker has not said yet
        asked = job.request.get("image_first")
        first = model_image_first if asked is None else bool(asked)
        first = first and job.request.get("frames", 1) > 1
    else:
        first = bool(job.stage.get("first_frame"))
    return [*loading, *(["first_frame"] if first else []), "clip", "encoding"]


def job_progress(
    job: Job, now: float, model_image_first: bool = False, loaded: bool = False
) -> Progress:
    """The progress line of a running ``job`` at time ``now`` (``time.time()``); ``loaded``:
    the model it needs is loaded (:func:`plan`)."""
    names = plan(job, model_image_first, loaded)
    name = job.stage.get("name") or names[0]
    here = names.index(name) if name in names else 0
    stages = [
        (n, "done" if i < here else "now" if i == here else "next") for i, n in enumerate(names)
    ]
    since = float(job.stage.get("since") or job.started or now)
    base = int(job.stage.get("base", 0))
    done, total = job.done_steps, job.total_steps
    candidate, candidates = job.stage.get("candidate", 1), job.stage.get("candidates", 1)

    unit = "window" if job.kind == "storyboard" else "step"
    fraction, left = 0.0, None
    if name in ("clip", "windows") and total:
        fraction = done / total
        if done > base:
            # per unit from the units done; a film's window in progress counts from when the
            # last one ended (``unit_at``), so its estimate does not grow while it is drawn
            at = min(float(job.stage.get("unit_at") or now), now)
            per = (at - since) / (done - base)
            left = max(per * (total - done) - (now - at), 0.0)
            left += per * total * (candidates - candidate)
    elif name == "encoding":
        fraction = 1.0
    fraction = min(1.0, ((candidate - 1) + fraction) / candidates)

    text = STAGE_NAMES.get(name, name).capitalize()
    if name in ("clip", "windows") and total and done:
        text += f": {unit} {done} of {total}"
        text += f" · about {duration(left)} left" if left is not None else " · estimating the time"
    else:
        text += f"… {duration(now - since)} so far"
    if candidates > 1:
        text = f"Candidate {candidate} of {candidates} · {text}"
    return Progress(fraction, text, stages)


def stage_caption(progress: Progress) -> str:
    """The stages in one line: done ones ticked, the current one bold."""
    marks = {"done": "✓ {}", "now": "**▶ {}**", "next": "{}"}
    return " → ".join(marks[state].format(STAGE_NAMES[n]) for n, state in progress.stages)


def time_taken(job: Job) -> float | None:
    """Seconds from the job's start to its end (loading included), or None."""
    if job.started is None or job.finished is None:
        return None
    return max(0.0, job.finished - job.started)


def used_seed(job: Job) -> int | None:
    """The seed of the clip that was kept (best-of keeps one of several)."""
    return job.scores.get("chosen_seed", job.seed) if job.scores else job.seed
