"""Gallery: every generation, searchable; re-run, delete, download."""

import streamlit as st

from studio.gallery import KINDS
from studio.jobs import rerun
from studio.ui.common import describe, follow, get_studio, show_result

PAGE = 20

studio = get_studio()
st.title("Gallery")
c1, c2, c3 = st.columns([4, 2, 2])
text = c1.text_input("Search prompts", value="")
kind = c2.selectbox("Kind", ["all", *KINDS])
status = c3.selectbox("Status", ["done", "failed", "cancelled", "queued", "running", "all"])
jobs = studio.gallery.search(
    text,
    kind=None if kind == "all" else kind,
    status=None if status == "all" else status,
    limit=PAGE,
)
if not jobs:
    st.info("Nothing here yet: generate something on the Generate page.")

for job in jobs:
    with st.container(border=True):
        left, right = st.columns([1, 4])
        thumb = studio.gallery.path("thumbs", job.thumbnail)
        if thumb is not None and thumb.is_file():
            left.image(str(thumb), width=128)
        right.markdown(f"**{job.prompt}**")
        right.caption(describe(job) + (f" · {job.status}" if job.status != "done" else ""))
        if job.error:
            right.error(job.error)
        b1, b2, b3 = right.columns(3)
        if b1.button("Re-run", key=f"rerun-{job.id}", icon=":material/replay:"):
            follow(rerun(studio.gallery, job.id))
            st.switch_page("pages/generate.py")
        if b2.button(
            "Delete", key=f"delete-{job.id}", icon=":material/delete:", disabled=job.active
        ):
            studio.gallery.delete(job.id)
            st.rerun()
        if job.status == "done":
            with right.expander("Play and download"):
                show_result(studio, job, key="gallery-")
