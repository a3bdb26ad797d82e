"""Elements: upload up to three reference images and place them in the prompt."""

import re

import streamlit as st

from studio.generate import StudioError
from studio.ui.common import draft_notice, get_studio, model_panel, set_draft
from studio.uploads import ALLOWED_FORMATS, MAX_ELEMENTS, accept_element

studio = get_studio()
model_panel(studio)  # the sidebar: loading the model, then ready
st.title("Elements")
st.caption(
    "A reference element is an object to put in the video: upload its image, then insert its "
    "placeholder (`<ref1>`, `<ref2>`, `<ref3>`) into the prompt, e.g. "
    "*<ref1> moving right on a gray background*. Generating with elements needs a model "
    "trained with reference conditioning."
)
if not studio.max_references:
    st.warning(
        f"The loaded model ({studio.elements_label}) cannot use reference elements: it was not "
        "trained with them, so a prompt with `<ref1>` is refused. Uploads here wait for a "
        "model that can (`studio ui --model PATH`, see docs/elements.md).",
        icon=":material/block:",
    )
else:
    st.caption(
        f"Clips with elements are drawn by {studio.elements_label}, up to "
        f"{studio.max_references} elements per clip."
    )
st.session_state.setdefault("elements", [])
st.session_state.setdefault("draft", "")

uploads = st.file_uploader(
    "Reference images",
    type=[f.lower() for f in ALLOWED_FORMATS] + ["jpg"],
    accept_multiple_files=True,
    key=f"uploads-{st.session_state.get('uploads_version', 0)}",  # a new one empties it
)
if uploads:
    if len(uploads) > MAX_ELEMENTS:
        st.error(
            f"{len(uploads)} images: at most {MAX_ELEMENTS}; only the first {MAX_ELEMENTS} are used."
        )
    names = []
    for up in uploads[:MAX_ELEMENTS]:
        try:
            names.append(
                accept_element(
                    up.getvalue(), studio.limits, up.name, studio.gallery.home / "elements"
                )
            )
        except StudioError as exc:
            st.error(str(exc))
    st.session_state.elements = names


def _remove_elements() -> None:
    st.session_state.elements = []
    st.session_state.uploads_version = st.session_state.get("uploads_version", 0) + 1
    # their placeholders go with them: a prompt naming <ref1> with no image is refused
    st.session_state.draft = " ".join(re.sub(r"<ref\d+>", " ", st.session_state.draft).split())


def _insert(k: int) -> None:
    set_draft(f"{st.session_state.draft.rstrip()} <ref{k}>".strip())


if st.session_state.elements:
    cols = st.columns(MAX_ELEMENTS)
    for k, name in enumerate(st.session_state.elements, start=1):
        with cols[k - 1]:
            st.image(str(studio.gallery.home / "elements" / name), caption=f"<ref{k}>", width=160)
            st.button(f"Insert <ref{k}>", key=f"insert-{k}", on_click=_insert, args=(k,))
    draft_notice()
    st.text_area(
        "Prompt (shared with the Generate page)", value=st.session_state.draft, disabled=True
    )
    # the uploader forgets its files on another page while the elements stay: removing them
    # is this button's job
    st.button("Remove the elements", key="remove-elements", on_click=_remove_elements)
else:
    st.info("No elements yet.")
