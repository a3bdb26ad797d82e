"""Generate: one prompt → one clip, through the job queue."""

import random

import streamlit as st

from pipelines.text_to_video import DEFAULT_GUIDANCE
from studio.generate import GenerateRequest, StudioError
from studio.jobs import MAX_BEST_OF, MAX_FRAMES, MAX_STEPS, submit_generate
from studio.ui.common import first_frame_choice, follow, get_studio, show_job

studio = get_studio()
st.title("Generate")
st.caption(
    "Describe a Shapes World clip: colours, shapes (circle, square, triangle), sizes, "
    "motions and a background, e.g. *a small red circle moving left on a black background*."
)

if "draft" not in st.session_state:  # a fresh tab or a refresh: show the followed job's prompt
    followed = studio.gallery.get(st.query_params.get("job") or "")
    st.session_state.draft = (
        followed.request.get("prompt", "") if followed and followed.kind == "generate" else ""
    )
st.session_state.setdefault("seed", 0)


def _randomise_seed() -> None:
    st.session_state.seed = random.randrange(2**31)


prompt = st.text_area("Prompt", value=st.session_state.draft, height=90)
st.session_state.draft = prompt
if st.session_state.get("elements"):
    refs = ", ".join(f"<ref{k}>" for k in range(1, len(st.session_state.elements) + 1))
    st.caption(f"Elements from the Elements page: {refs} in the prompt uses them.")
negative = st.text_input("Negative prompt (optional)", value="")
c1, c2, c3, c4 = st.columns([3, 2, 3, 3], vertical_alignment="bottom")
seed = c1.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="seed")
c2.button("Random", icon=":material/casino:", on_click=_randomise_seed, help="a random seed")
frames = c3.number_input("Frames", min_value=1, max_value=MAX_FRAMES, value=16, step=1)
fps = 8
c3.caption(f"{frames / fps:.1f} s at {fps} fps")
steps = c4.slider("Steps", min_value=1, max_value=MAX_STEPS, value=25)
c5, c6 = st.columns([3, 2], vertical_alignment="bottom")
guidance = c5.slider("Guidance", min_value=0.0, max_value=15.0, value=DEFAULT_GUIDANCE, step=0.5)
image_first = first_frame_choice(c6)
best_of = 1
if studio.scorer:
    best_of = st.number_input(
        "Best of N",
        min_value=1,
        max_value=MAX_BEST_OF,
        value=1,
        help="generate N candidates and keep the one "
        + ("the shipped Shapes World scorer" if studio.scorer == "default" else studio.scorer)
        + " scores highest",
    )

if st.button("Generate", type="primary", icon=":material/movie:"):
    request = GenerateRequest(
        prompt=prompt,
        negative_prompt=negative,
        seed=int(seed),
        steps=int(steps),
        guidance=float(guidance),
        frames=int(frames),
        fps=fps,
        image_first=image_first,
    )
    try:
        elements = st.session_state.get("elements", [])
        job = submit_generate(
            studio.gallery, request, int(best_of), studio.scorer, elements, studio.model
        )
        follow(job)
    except StudioError as exc:
        st.error(str(exc))

show_job(studio, st.query_params.get("job"))
