"""Generate: one prompt → one clip, through the job queue."""

import streamlit as st

from pipelines.video_io import MAX_FPS
from studio.generate import GenerateRequest, StudioError
from studio.jobs import MAX_BEST_OF, MAX_PROMPT_CHARS, submit_generate
from studio.ui import vocabulary
from studio.ui.common import (
    draft_notice,
    first_frame_choice,
    follow,
    followed_job,
    fresh_seed,
    get_studio,
    keep,
    load,
    lora_fields,
    model_panel,
    seed_fields,
    set_draft,
    show_job,
    steps_and_guidance,
)
from studio.ui.state import FPS, GENERATE_DEFAULTS, frames_problem, generate_settings

SLOT_TITLES = {
    "size": "Size",
    "colour": "Colour",
    "shape": "Shape",
    "motion": "Motion",
    "background": "Background",
}
CHIPS = vocabulary.chips()

studio = get_studio()
model_panel(studio)  # the sidebar: loading the model, then ready
job_id = followed_job(studio, "generate")
if "draft" not in st.session_state:  # a fresh tab or a refresh: the followed job's settings
    followed = studio.gallery.get(job_id or "")
    if followed is not None and followed.kind == "generate":
        load(generate_settings(followed))
keep(GENERATE_DEFAULTS)


def _chip(slot: str) -> None:
    value = st.session_state.get(f"chip-{slot}")
    chip = next((c for c in CHIPS[slot] if c.value == value), None)
    if chip is not None:
        set_draft(vocabulary.insert(st.session_state.draft, chip))
    st.session_state[f"chip-{slot}"] = None  # a chip is a button, not a choice


def _example() -> None:
    if st.session_state.get("example"):
        st.session_state.draft = st.session_state.example
    st.session_state.example = None


st.title("Generate")
form, result = st.columns(2, gap="medium")  # the result beside the form, 384 px wide
with form:
    st.caption(
        "Describe a Shapes World clip: colours, shapes, sizes, motions and a background. "
        "Click the words below to build a prompt, or start from an example."
    )
    # no max_chars: streamlit drops a paste that would pass it without a word; the error
    # below says how long the prompt is instead, and Generate waits
    prompt = st.text_area("Prompt", key="draft", height=90, persist_state="session")
    draft_notice()
    prompt_problem = None
    if len(prompt) > MAX_PROMPT_CHARS:
        prompt_problem = (
            f"The prompt is {len(prompt)} characters; a clip takes at most {MAX_PROMPT_CHARS}: "
            "shorten it."
        )
        st.error(prompt_problem)
    if note := vocabulary.warning(prompt):
        st.warning(note, icon=":material/translate:")
    if st.session_state.get("elements") and studio.max_references:
        refs = ", ".join(f"<ref{k}>" for k in range(1, len(st.session_state.elements) + 1))
        st.caption(f"Elements from the Elements page: {refs} in the prompt uses them.")
    # open while a prompt is being built (chips are clicked one after another); it closes
    # once a clip is queued, and stays as the user leaves it until then
    with st.expander("Words the model knows", expanded=st.session_state.get("words_open", True)):
        for slot, chips in CHIPS.items():
            st.pills(
                SLOT_TITLES[slot],
                [c.value for c in chips],
                format_func=lambda v, slot=slot: next(c.label for c in CHIPS[slot] if c.value == v),
                key=f"chip-{slot}",
                on_change=_chip,
                args=(slot,),
                help="also understood: " + ", ".join(vocabulary.synonyms(slot)),
            )
        st.pills("Examples", vocabulary.examples(), key="example", on_change=_example)
    negative = st.text_input("Negative prompt (optional)", key="negative", persist_state="session")

    c1, c2, c3 = st.columns([4, 3, 3])
    seed = seed_fields(c1, "seed")
    frames = c2.number_input("Frames", min_value=1, step=1, key="frames", persist_state="session")
    problem = frames_problem(frames)
    if problem:
        c2.error(problem)
    else:
        fps = st.session_state.get("fps", FPS)  # the field below (a loaded job's own)
        seconds = frames / fps
        c2.caption(
            f"{seconds:.1f} s at {fps} fps" if seconds >= 0.1 else f"{seconds:.2f} s at {fps} fps"
        )
    c4, c5 = st.columns(2, vertical_alignment="bottom")
    steps, guidance = steps_and_guidance(c3, c4, "", GENERATE_DEFAULTS["steps"])
    c3.number_input(
        "Frames per second",
        min_value=1,
        max_value=MAX_FPS,
        step=1,
        key="fps",
        persist_state="session",
        help=f"how fast the clip plays (default {FPS})",
    )
    image_first = first_frame_choice(c5, "first_frame")
    lora = lora_fields(st, "lora")
    best_of = 1
    if studio.scorer:
        best_of = st.number_input(
            "Best of N",
            min_value=1,
            max_value=MAX_BEST_OF,
            key="best_of",
            persist_state="session",
            help="generate N candidates and keep the one "
            + ("the shipped Shapes World scorer" if studio.scorer == "default" else studio.scorer)
            + " scores highest",
        )

    if st.button(
        "Generate",
        type="primary",
        icon=":material/movie:",
        on_click=fresh_seed,
        args=("seed",),
        disabled=problem is not None or prompt_problem is not None,
    ):
        request = GenerateRequest(
            prompt=prompt,
            negative_prompt=negative,
            seed=seed,
            steps=int(steps),
            guidance=float(guidance),
            frames=int(frames),
            fps=int(st.session_state.fps),
            image_first=image_first,
            lora=lora,
        )
        try:
            elements = st.session_state.get("elements", [])
            job = submit_generate(
                studio.gallery, request, int(best_of), studio.scorer, elements, studio.model
            )
            follow(job)
            job_id = job.id
            st.session_state.words_open = False
        except StudioError as exc:
            st.error(str(exc))

with result:
    if job_id:
        show_job(studio, job_id, seed_key="seed")
    else:
        st.caption("The clip appears here as it is made: its progress, then the clip itself.")
