"""Gallery: the queue, and every generation, searchable; re-run, reuse, delete, download."""

import streamlit as st

from studio.errors import StudioError
from studio.gallery import KINDS
from studio.jobs import rerun
from studio.ui.common import (
    POLL_S,
    describe,
    get_studio,
    load,
    model_panel,
    open_job,
    running_progress,
    show_result,
)
from studio.ui.state import STORYBOARD_DRAFT, page_for, read_draft, settings_for

PAGE = 20
STATUSES = ["done", "failed", "cancelled", "queued", "running", "all"]

studio = get_studio()
model_panel(studio)  # the sidebar: loading the model, then ready
gallery = studio.gallery
st.title("Gallery")


def active_jobs() -> list:
    """Running first, then the queue in the order it runs."""
    return (
        gallery.search(status="running", limit=10)
        + gallery.search(status="queued", limit=100)[::-1]
    )


@st.fragment(run_every=POLL_S)
def queue_panel() -> None:
    jobs = active_jobs()
    if not jobs:
        st.rerun()  # the last one finished: the whole page redraws with it in the gallery
    st.subheader(f"Queue ({len(jobs)})")
    for job in jobs:
        with st.container(border=True):
            left, right = st.columns([5, 1], vertical_alignment="center")
            left.text(job.prompt)  # as typed: a prompt is not Markdown
            if job.status == "running":
                progress = running_progress(studio, job)
                left.progress(progress.fraction, text=progress.text)
            else:
                left.caption(f"Queued: position {gallery.queue_position(job.id)}")
            if right.button("Cancel", key=f"queue-cancel-{job.id}", icon=":material/close:"):
                gallery.cancel(job.id)
                st.rerun()


if active_jobs():
    queue_panel()


def _first_page() -> None:
    st.session_state.gallery_page = 0


c1, c2, c3 = st.columns([4, 2, 2])
# the search and filters keep their values while the user visits other pages (docs/ui.md)
text = c1.text_input(
    "Search prompts", key="gallery_text", on_change=_first_page, persist_state="session"
)
kind = c2.selectbox(
    "Kind", ["all", *KINDS], key="gallery_kind", on_change=_first_page, persist_state="session"
)
status = c3.selectbox(
    "Status", STATUSES, key="gallery_status", on_change=_first_page, persist_state="session"
)
filters = dict(
    text=text, kind=None if kind == "all" else kind, status=None if status == "all" else status
)
total = gallery.count(**filters)
pages = max(1, -(-total // PAGE))
page = min(st.session_state.get("gallery_page", 0), pages - 1)
jobs = gallery.search(**filters, limit=PAGE, offset=page * PAGE)
if not total:
    st.info(
        "Nothing here yet: generate something on the Generate page."
        if not text and status == "done"
        else "No job matches: change the search or the filters."
    )
else:
    st.caption(f"Showing {page * PAGE + 1}–{page * PAGE + len(jobs)} of {total}, newest first.")


def _add_to_storyboard(job) -> None:
    """Appended to the storyboard being edited: this session's, else the one last edited
    (the Storyboard page's draft), else a new one that starts with this clip."""
    scenes = st.session_state.get("scenes")
    if scenes is None:
        scenes = read_draft(studio.gallery.home / STORYBOARD_DRAFT) or []
    scene = {"prompt": job.request["prompt"], "frames": int(job.request["frames"])}
    load({"scenes": [*scenes, scene]})


for job in jobs:
    with st.container(border=True):
        left, right = st.columns([1, 4])
        thumb = gallery.path("thumbs", job.thumbnail)
        if thumb is not None and thumb.is_file():
            left.image(str(thumb), width=128)
        right.text(job.prompt)  # as typed: a prompt is not Markdown
        if negative := (job.request.get("negative_prompt") if job.kind == "generate" else None):
            right.text(f"Negative prompt: {negative}")
        right.caption(describe(job) + (f" · {job.status}" if job.status != "done" else ""))
        if job.error:
            right.error(job.error)
        actions = right.container(horizontal=True)
        if actions.button("Re-run", key=f"rerun-{job.id}", icon=":material/replay:"):
            try:
                open_job(rerun(gallery, job.id))  # its page shows it running, with its settings
            except StudioError as exc:
                right.error(str(exc))
        if actions.button(
            "Use these settings",
            key=f"reuse-{job.id}",
            icon=":material/tune:",
            help="fill the page with this job's settings, to change them and generate",
        ):
            load(settings_for(job))
            st.switch_page(page_for(job))
        if job.kind == "generate" and actions.button(
            "Add to storyboard",
            key=f"story-{job.id}",
            icon=":material/playlist_add:",
            help="add this prompt as the last scene of the storyboard",
        ):
            _add_to_storyboard(job)
            st.switch_page("pages/storyboard.py")
        if st.session_state.get("confirm_delete") == job.id:
            right.warning("Delete this job, its video and its sidecar? This cannot be undone.")
            answer = right.container(horizontal=True)
            if answer.button("Delete for good", key=f"delete-yes-{job.id}", type="primary"):
                gallery.delete(job.id)
                st.session_state.confirm_delete = None
                st.rerun()
            if answer.button("Keep", key=f"delete-no-{job.id}"):
                st.session_state.confirm_delete = None
                st.rerun()
        elif actions.button(
            "Delete", key=f"delete-{job.id}", icon=":material/delete:", disabled=job.active
        ):
            st.session_state.confirm_delete = job.id
            st.rerun()
        # on demand: a clip's preview is a 384 px GIF, too heavy to make for a whole page
        if job.status == "done" and right.toggle("Play and download", key=f"play-{job.id}"):
            with right:
                show_result(studio, job, key="gallery-")

if pages > 1:
    prev, where, nxt = st.columns([1, 2, 1])
    if prev.button("← Newer", disabled=page == 0, key="gallery-newer"):
        st.session_state.gallery_page = page - 1
        st.rerun()
    where.caption(f"Page {page + 1} of {pages}")
    if nxt.button("Older →", disabled=page >= pages - 1, key="gallery-older"):
        st.session_state.gallery_page = page + 1
        st.rerun()
