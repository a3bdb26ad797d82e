"""What every page shares: the studio (store + worker + model, once per process), the job
panel, the result panel and the helpers that carry settings between pages. Widgets only;
the work is in studio.gallery, studio.jobs and the streamlit-free studio.ui modules."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import streamlit as st

import studio.shipped as shipped_models
from studio.gallery import Gallery, Job
from studio.generate import StudioError, max_references
from studio.jobs import (
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    MAX_STEPS,
    job_has_references,
    job_lora,
    model_load,
    variation,
)
from studio.shipped import configured_scorer_spec, model_for
from studio.ui import warm
from studio.ui.progress import duration, job_progress, stage_caption, time_taken, used_seed
from studio.ui.state import (
    FIRST_FRAME,
    FPS,
    PREVIEW_SIDE,
    SEED_MAX,
    lora_label,
    lora_spec,
    new_seed,
    page_for,
    preview_gif,
    settings_for,
)
from studio.uploads import UploadLimits

POLL_S = 1.0
GUIDANCE_SLIDER_MAX = 15.0


def _model_config(model: Path) -> dict[str, Any]:
    try:
        return json.loads((model / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}


class Studio:
    """One per server process (``st.cache_resource``): every tab shares it."""

    def __init__(self, home: Path, model: Path):
        self.gallery = Gallery(home)
        self.model = model
        self.scorer = configured_scorer_spec()  # for best-of-N; None: not offered
        self.limits = UploadLimits.from_env()
        elements_model = model_for(model, references=True)  # the model clips with elements use
        try:  # from its config, without loading it
            self.max_references = max_references(elements_model) or 0
        except (StudioError, ValueError, OSError):
            self.max_references = 0
        self.image_first = bool(_model_config(model).get("image_first", False))
        shipped = model.resolve() == shipped_models.DEFAULT_MODEL_DIR.resolve()  # not $STUDIO_MODEL
        self.model_label = "the shipped model" if shipped else str(model)
        self.elements_label = (
            "the shipped elements model" if elements_model != model else self.model_label
        )
        # started by `studio ui` before the first page (studio.ui.serve), its model loading
        # or loaded already; started here, loading in the background, when it was not
        self.worker = warm.worker(home, model)


@st.cache_resource(show_spinner="Starting the studio…")
def _studio(home: str, model: str) -> Studio:
    return Studio(Path(home), Path(model))


def get_studio() -> Studio:
    home, model = warm.configured()
    return _studio(str(home), str(model))


def model_panel(studio: Studio) -> None:
    """The model's state in a line, in the sidebar of every page: *Loading model…* while the
    worker loads it, redrawn every second without holding up the page, then *Model ready*.
    (Each page draws it: streamlit's AppTest keeps only the first run's elements of the
    navigation script, so it could not be tested there.)"""
    with st.sidebar:
        status = studio.worker.model_status()
        if status.state == "loading":
            _model_loading(studio)
        elif status.state == "failed":
            line = warm.model_line(status, time.time(), studio.model_label)
            st.error(line, icon=":material/error:")
        else:
            line = warm.model_line(status, time.time(), studio.model_label)
            st.caption(f":material/check_circle: {line}")


@st.fragment(run_every=POLL_S)
def _model_loading(studio: Studio) -> None:
    status = studio.worker.model_status()
    if status.state != "loading":
        st.rerun()  # the whole page redraws with the model ready
    st.caption(
        f":material/hourglass_top: {warm.model_line(status, time.time(), studio.model_label)}"
    )


# ---------------------------------------------------------------------------- page state
def keep(defaults: dict[str, Any]) -> None:
    """Give the page's widget keys their first values (widgets keep them across pages with
    ``persist_state="session"``)."""
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)


def load(values: dict[str, Any]) -> None:
    """Put values into widget keys: call before those widgets are drawn (a callback, or
    another page)."""
    for key, value in values.items():
        st.session_state[key] = value
    if "scenes" in values:
        st.session_state.editor_version = st.session_state.get("editor_version", 0) + 1


def set_draft(prompt: str) -> None:
    """Put ``prompt`` in the shared prompt box (a chip, an example, an element's placeholder:
    call from a callback), unless it is longer than a job takes: the prompt then stays as it
    was and :func:`draft_notice` says why."""
    if len(prompt) > MAX_PROMPT_CHARS:
        st.session_state.draft_notice = (
            f"Not added: the prompt would be {len(prompt)} characters, and a clip takes at most "
            f"{MAX_PROMPT_CHARS}. Shorten it first."
        )
        return
    st.session_state.draft = prompt
    st.session_state.pop("draft_notice", None)


def draft_notice() -> None:
    """Say, once, why the last insertion into the prompt was refused."""
    if note := st.session_state.pop("draft_notice", None):
        st.warning(note)


def open_job(job: Job, settings: bool = True) -> None:
    """Go to the page of ``job`` (its id in the URL: it shows its progress and result), with
    its settings in the page's fields."""
    if settings:
        load(settings_for(job))
    get_studio().worker.wake()
    st.switch_page(page_for(job), query_params={"job": job.id})


def follow(job: Job) -> None:
    """Show ``job`` on the page, and keep it there across a refresh (it is in the URL) and
    a visit to another page (:func:`followed_job`). The worker is woken: a job just queued
    starts now, not at its next look at the queue."""
    st.query_params["job"] = job.id
    if page := st.session_state.get("_page"):
        st.session_state[f"followed:{page}"] = job.id
    get_studio().worker.wake()


def followed_job(studio: Studio, page: str) -> str | None:
    """The job ``page`` shows: the URL's (``?job=``), else the one it showed last in this
    session, put back into the URL (the sidebar's page links drop ``?job=``, and a clip
    being made must not vanish from its page when the user looks at another)."""
    st.session_state["_page"] = page
    key = f"followed:{page}"
    job_id = st.query_params.get("job")
    if job_id:
        st.session_state[key] = job_id
        return job_id
    job_id = st.session_state.get(key)
    if job_id and studio.gallery.get(job_id) is not None:
        st.query_params["job"] = job_id
        return job_id
    st.session_state.pop(key, None)  # deleted meanwhile: the page starts empty
    return None


def first_frame_choice(container, key: str, help_extra: str = "") -> bool | None:
    """The *First frame* radio → ``image_first`` (None: the model's own setting)."""
    label = container.radio(
        "First frame",
        list(FIRST_FRAME),
        horizontal=True,
        key=key,
        persist_state="session",
        help="image first: draw frame 0 as an image from the prompt, then generate the clip "
        "continuing it; with the clip: all frames at once" + help_extra,
    )
    return FIRST_FRAME[label]


def seed_fields(container, key: str) -> int:
    """A seed field and its lock: unlocked, every submission draws a new seed (the page's
    submit buttons call :func:`fresh_seed`); typing a seed locks it."""
    locked = f"{key}_locked"
    note = st.session_state.get(f"{key}_note")
    if note and note["seed"] == st.session_state.get(key):
        container.warning(note["text"], icon=":material/info:")
    else:  # the seed was changed, or a clip made with it: the note has said its piece
        st.session_state.pop(f"{key}_note", None)
    seed = container.number_input(
        "Seed",
        min_value=0,
        max_value=SEED_MAX,
        step=1,
        key=key,
        persist_state="session",
        on_change=lambda: st.session_state.__setitem__(locked, True),
        help="the seed of the next clip; a new one each time unless locked",
    )
    container.checkbox(
        "Lock seed",
        key=locked,
        persist_state="session",
        help="keep this seed for the next clips (to change one setting and compare)",
    )
    return int(seed)


def steps_and_guidance(steps_at, guidance_at, prefix: str, default_steps: int) -> tuple[int, float]:
    """The Steps field (a number: a 1..1000 slider made 12 hard to pick) and the Guidance
    slider (0..15, or to a loaded CLI or API job's value, up to the jobs' maximum), keys
    ``{prefix}steps`` and ``{prefix}guidance``."""
    steps = steps_at.number_input(
        "Steps",
        min_value=1,
        max_value=MAX_STEPS,
        step=1,
        key=f"{prefix}steps",
        persist_state="session",
        help=f"denoising steps (default {default_steps}; more take longer)",
    )
    # 0..15 (the useful range: 3-4 would be a few pixels of a 0..50 slider), wider only as far
    # as a loaded job's value needs (the jobs take up to MAX_GUIDANCE)
    loaded = float(st.session_state.get(f"{prefix}guidance") or 0.0)
    guidance = guidance_at.slider(
        "Guidance",
        min_value=0.0,
        max_value=float(min(MAX_GUIDANCE, max(GUIDANCE_SLIDER_MAX, math.ceil(loaded)))),
        step=0.5,
        key=f"{prefix}guidance",
        persist_state="session",
    )
    return int(steps), float(guidance)


def lora_fields(container, key: str) -> str | None:
    """The optional LoRA adapter (a folder a LoRA run wrote, or its file) and its scale, as
    ``PATH[:SCALE]`` (``studio generate --lora``); None when no path is given. Checked when
    the job is queued (:func:`studio.jobs.check_lora`), which says what is wrong."""
    left, right = container.columns([3, 1])
    path = left.text_input(
        "LoRA adapter (optional)",
        key=f"{key}_path",
        persist_state="session",
        placeholder="runs/my-style/lora",
        help="a LoRA adapter on the model: the folder a `training: lora` run writes "
        "(RUN/lora); empty: the model as it is",
    )
    scale = right.number_input(
        "LoRA scale",
        step=0.1,
        format="%.2f",
        key=f"{key}_scale",
        persist_state="session",
        help="how strongly the adapter acts: 1 as trained, 0 the model without it (-10 to 10)",
    )
    return lora_spec(path, scale)


def fresh_seed(key: str) -> None:
    """A submit button's callback: a new seed unless the seed is locked."""
    if not st.session_state.get(f"{key}_locked"):
        st.session_state[key] = new_seed()


# ---------------------------------------------------------------------------- jobs
def show_job(studio: Studio, job_id: str | None, seed_key: str | None = None) -> None:
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
        show_result(studio, job, seed_key=seed_key)


def running_progress(studio: Studio, job: Job):
    """The progress line of a running ``job`` now (:func:`~studio.ui.progress.job_progress`),
    knowing whether the model it needs is already loaded in this process."""
    model = model_for(studio.model, references=job_has_references(job))
    loaded = model_load(model, job_lora(job)) is not None
    return job_progress(job, time.time(), studio.image_first, loaded)


@st.fragment(run_every=POLL_S)
def _live_job(studio: Studio, job_id: str) -> None:
    job = studio.gallery.get(job_id)
    if job is None or not job.active:
        st.rerun()  # the whole page redraws with the result
    if job.status == "queued":
        pos = studio.gallery.queue_position(job_id)
        text = f"Queued: position {pos} in the queue."
        if studio.worker.model_status().state == "loading":
            text += " It starts as soon as the model has loaded."
        st.info(text, icon=":material/hourglass_top:")
    else:
        progress = running_progress(studio, job)
        st.progress(progress.fraction, text=progress.text)
        st.caption(stage_caption(progress))
    if st.button("Cancel", key=f"cancel-{job_id}", icon=":material/close:"):
        studio.gallery.cancel(job_id)
        st.rerun()


@st.cache_data(max_entries=16, show_spinner=False)  # a GIF is ~0.5 MB a 16-frame clip
def _preview(path: str, mtime: float) -> bytes:
    return preview_gif(path)


def _variation(studio: Studio, job_id: str, seed_key: str) -> None:
    try:
        job = variation(studio.gallery, job_id, new_seed())
    except StudioError as exc:
        st.session_state.flash = str(exc)
        return
    values = settings_for(job)
    if seed_key in values:  # the page's own kind of job: its fields show the new settings
        values.pop(f"{seed_key}_locked", None)  # the lock stays as the user set it
        load(values)
    follow(job)


def show_result(studio: Studio, job: Job, key: str = "", seed_key: str | None = None) -> None:
    """A finished job: the clip (large, every pixel crisp), its seed and time, downloads;
    with ``seed_key`` (the page's seed field) a *Variation* button too."""
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
    try:
        gif = _preview(str(video), video.stat().st_mtime)
    except (OSError, ValueError) as exc:
        st.warning(f"The clip could not be read: {exc}")
        return
    # the job id in the alt text keeps two previews of the same bytes apart
    st.image(gif, width=PREVIEW_SIDE, alt=f"Clip: {job.prompt[:200]} (job {job.id[:8]})")
    facts = [f"Seed {used_seed(job)}"]
    if job.scores and "n" in job.scores:  # the seed field holds the job's, which repeats it
        facts[0] += f" (kept of best-of {job.scores['n']} from seed {job.seed})"
    took = time_taken(job)
    if took is not None:
        facts.append(f"took {duration(took)}")
    if lora := lora_label(job_lora(job)):
        facts.append(lora)
    st.caption(" · ".join(facts))
    row = st.container(horizontal=True)
    row.download_button(
        "MP4",
        video.read_bytes,
        file_name=f"{job.id}.mp4",
        mime="video/mp4",
        key=f"dl-mp4-{key}{job.id}",
        icon=":material/download:",
        on_click="ignore",
        help="download the video",
    )
    row.download_button(
        "GIF",
        lambda: _preview(str(video), video.stat().st_mtime),
        file_name=f"{job.id}.gif",
        mime="image/gif",
        key=f"dl-gif-{key}{job.id}",
        icon=":material/gif_box:",
        on_click="ignore",
        help=f"download a looping GIF, {PREVIEW_SIDE} px",
    )
    if sidecar is not None and sidecar.is_file():
        row.download_button(
            "Sidecar",
            sidecar.read_bytes,
            file_name=f"{job.id}.json",
            mime="application/json",
            key=f"dl-json-{key}{job.id}",
            icon=":material/description:",
            on_click="ignore",
            help="download the settings that make this clip again",
        )
    if seed_key:
        row.button(
            "Variation",
            key=f"variation-{key}{job.id}",
            icon=":material/shuffle:",
            on_click=_variation,
            args=(studio, job.id, seed_key),
            help="the same settings with a new seed",
        )
    if msg := st.session_state.pop("flash", None):
        st.error(msg)


def describe(job: Job) -> str:
    """One line of settings for the gallery."""
    when = datetime.fromtimestamp(job.created).strftime("%Y-%m-%d %H:%M")
    r = job.request if job.kind == "generate" else job.request.get("options", {})
    parts = [when, job.kind, f"seed {job.seed}", f"{r.get('steps')} steps"]
    parts.append(f"guidance {r.get('guidance')}")
    if job.kind == "generate":
        parts.append(f"{r.get('frames')} frames at {r.get('fps') or FPS} fps")
    else:
        parts.append(f"{len(job.request['story']['scenes'])} scenes")
    if r.get("image_first") is not None:  # else the model's own setting
        parts.append("frame 0 first" if r["image_first"] else "frame 0 with the clip")
    if lora := lora_label(job_lora(job)):
        parts.append(lora)
    if job.scores.get("candidates"):
        scores = ", ".join(f"{c['score']:.3f}" for c in job.scores["candidates"])
        parts.append(f"best of {job.scores['n']} (seed {job.scores['chosen_seed']}; {scores})")
    elif job.scores:
        parts.append("scores " + json.dumps(job.scores))
    took = time_taken(job)
    if took is not None and job.status == "done":
        parts.append(f"took {duration(took)}")
    return " · ".join(parts)
