"""What every page shares: the studio (store + worker + model, once per process) and the
job panel. Widgets only; the work is in studio.gallery and studio.jobs."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import streamlit as st

from studio.gallery import Gallery, Job, default_home
from studio.jobs import Worker
from studio.shipped import DEFAULT_SCORER_DIR, MODEL_ENV, SCORER_ENV, default_model_path
from studio.uploads import UploadLimits

POLL_S = 1.0
VIDEO_WIDTH = 384  # clips are small (64 px); shown enlarged, not stretched to the page


FIRST_FRAME = {"model's default": None, "image first": True, "with the clip": False}


def first_frame_choice(container, help_extra: str = "") -> bool | None:
    """The *First frame* radio → ``image_first`` (None: the model's own setting)."""
    label = container.radio(
        "First frame",
        list(FIRST_FRAME),
        horizontal=True,
        help="image first: draw frame 0 as an image from the prompt, then generate the clip "
        "continuing it; with the clip: all frames at once" + help_extra,
    )
    return FIRST_FRAME[label]


def scorer_spec() -> str | None:
    """``$STUDIO_SCORER`` (``studio ui --scorer``); unset: the shipped default scorer when it
    is installed; ``none``: best-of-N is not offered."""
    spec = os.environ.get(SCORER_ENV)
    if spec == "none":
        return None
    if spec:
        return spec
    return "default" if (DEFAULT_SCORER_DIR / "config.json").is_file() else None


class Studio:
    """One per server process (``st.cache_resource``): every tab shares it."""

    def __init__(self, home: Path, model: Path):
        self.gallery = Gallery(home)
        self.model = model
        self.scorer = scorer_spec()  # for best-of-N; None: not offered
        self.limits = UploadLimits.from_env()
        self.worker = Worker(self.gallery, model=model).start()


@st.cache_resource(show_spinner="Starting the studio…")
def _studio(home: str, model: str) -> Studio:
    return Studio(Path(home), Path(model))


def get_studio() -> Studio:
    return _studio(str(default_home()), str(os.environ.get(MODEL_ENV) or default_model_path()))


def show_job(studio: Studio, job_id: str | None) -> None:
    """The job's live status while it waits or runs, its result when it has finished."""
    if not job_id:
        return
    job = studio.gallery.get(job_id)
    if job is None:
        st.warning("That job is not in this studio's gallery (deleted, or another studio).")
        return
    if job.active:
        _live_job(studio, job_id)
    else:
        show_result(studio, job)


@st.fragment(run_every=POLL_S)
def _live_job(studio: Studio, job_id: str) -> None:
    job = studio.gallery.get(job_id)
    if job is None or not job.active:
        st.rerun()  # the whole page redraws with the result
    if job.status == "queued":
        pos = studio.gallery.queue_position(job_id)
        st.info(f"Queued: position {pos} in the queue.", icon=":material/hourglass_top:")
    else:
        unit = "windows" if job.kind == "storyboard" else "steps"
        text = f"Generating… {job.done_steps}/{job.total_steps or '?'} {unit}"
        st.progress(job.fraction, text=text)
    if st.button("Cancel", key=f"cancel-{job_id}", icon=":material/close:"):
        studio.gallery.cancel(job_id)
        st.rerun()


def show_result(studio: Studio, job: Job, key: str = "") -> None:
    if job.status == "failed":
        st.error(f"Generation failed: {job.error}")
        return
    if job.status == "cancelled":
        st.info("Cancelled.")
        return
    video = studio.gallery.path("videos", job.video)
    sidecar = studio.gallery.path("videos", job.sidecar)
    if video is None or not video.is_file():
        st.warning("The video file is missing from the gallery folder.")
        return
    data = video.read_bytes()
    # a re-run makes the very same bytes; the job id in `alt` keeps two such autoplaying
    # players on one page apart (streamlit derives their element ids from their parameters)
    st.video(
        str(video),
        format="video/mp4",
        loop=True,
        autoplay=True,
        muted=True,
        alt=f"{job.prompt[:200]} (job {job.id[:8]})",
        width=VIDEO_WIDTH,
    )
    cols = st.columns(2)
    cols[0].download_button(
        "Download MP4",
        data,
        file_name=f"{job.id}.mp4",
        mime="video/mp4",
        key=f"dl-mp4-{key}{job.id}",
        icon=":material/download:",
    )
    if sidecar is not None and sidecar.is_file():
        cols[1].download_button(
            "Download sidecar",
            sidecar.read_bytes(),
            file_name=f"{job.id}.json",
            mime="application/json",
            key=f"dl-json-{key}{job.id}",
            icon=":material/description:",
        )


def describe(job: Job) -> str:
    """One line of settings for the gallery."""
    when = datetime.fromtimestamp(job.created).strftime("%Y-%m-%d %H:%M")
    r = job.request if job.kind == "generate" else job.request.get("options", {})
    parts = [when, job.kind, f"seed {job.seed}", f"{r.get('steps')} steps"]
    parts.append(f"guidance {r.get('guidance')}")
    if job.kind == "generate":
        parts.append(f"{r.get('frames')} frames")
    else:
        parts.append(f"{len(job.request['story']['scenes'])} scenes")
    if job.scores.get("candidates"):
        scores = ", ".join(f"{c['score']:.3f}" for c in job.scores["candidates"])
        parts.append(f"best of {job.scores['n']} (seed {job.scores['chosen_seed']}; {scores})")
    elif job.scores:
        parts.append("scores " + json.dumps(job.scores))
    return " · ".join(parts)


def follow(job: Job) -> None:
    """Show ``job`` on the page, and keep it there across a refresh (it is in the URL)."""
    st.query_params["job"] = job.id
