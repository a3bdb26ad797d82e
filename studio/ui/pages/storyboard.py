"""Storyboard: scenes in a table (add, remove, reorder), preview one, render the film."""

import pandas as pd
import streamlit as st

from pipelines.storyboard import DEFAULT_CANDIDATES
from studio.generate import GenerateRequest, StoryboardOptions, StudioError
from studio.jobs import (
    MAX_CANDIDATES,
    MAX_STORY_FRAMES,
    submit_generate,
    submit_storyboard,
)
from studio.ui.common import (
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
    show_job,
    steps_and_guidance,
)
from studio.ui.state import (
    EXAMPLE_SCENES,
    FPS,
    NEW_SCENE,
    STORYBOARD_DEFAULTS,
    STORYBOARD_DRAFT,
    apply_edits,
    clean_scenes,
    move_scene,
    read_draft,
    save_draft,
    scene_label,
    scene_problems,
    storyboard_settings,
)

studio = get_studio()
model_panel(studio)  # the sidebar: loading the model, then ready
job_id = followed_job(studio, "storyboard")
DRAFT = studio.gallery.home / STORYBOARD_DRAFT  # the rows being edited (save_draft)
if "scenes" not in st.session_state:  # a fresh tab or a refresh: the followed film's scenes,
    followed = studio.gallery.get(job_id or "")  # else the storyboard last edited
    if followed is not None and followed.kind == "storyboard":
        load(storyboard_settings(followed))
    else:
        st.session_state.scenes = read_draft(DRAFT) or [dict(s) for s in EXAMPLE_SCENES]
    # the draft is written when this session edits the rows, not for what it merely loaded
    # (the examples, a followed film, another tab's draft)
    st.session_state.draft_rows = [dict(s) for s in st.session_state.scenes]
keep(STORYBOARD_DEFAULTS)
st.session_state.setdefault("editor_version", 0)
editor = f"scenes-{st.session_state.editor_version}"
if editor not in st.session_state:
    # a new editor (first visit, back from another page, after a move) starts from the rows
    # as they are now; while it lives, it applies its edits to these same rows
    st.session_state.scenes_base = [dict(s) for s in st.session_state.scenes]


def _back_to_draft(rows: list[dict]) -> None:
    load({"scenes": rows, "draft_rows": [dict(r) for r in rows], "scenes_from_film": None})


st.title("Storyboard")
opened = st.session_state.get("scenes_from_film") and st.session_state.scenes == (
    st.session_state.get("draft_rows")
)  # a film's rows, not edited yet: the draft file is read only then
mine = read_draft(DRAFT) if opened else None
if mine and mine != st.session_state.scenes:
    st.info(
        "These are the scenes of the film you opened. Your own storyboard is kept until you "
        "edit these rows.",
        icon=":material/info:",
    )
    st.button(
        "Back to my storyboard", icon=":material/undo:", on_click=_back_to_draft, args=(mine,)
    )
st.caption(
    "One row per scene, played in order. The same object keeps its look across scenes; "
    "each scene's prompt says what it does next. Add a row at the bottom of the table."
)
edited = st.data_editor(
    pd.DataFrame(st.session_state.scenes_base, columns=["prompt", "frames"]),
    num_rows="dynamic",
    width="stretch",
    column_config={
        "prompt": st.column_config.TextColumn("Prompt", width="large", default=""),
        "frames": st.column_config.NumberColumn(
            "Frames", min_value=1, step=1, default=NEW_SCENE["frames"], required=True
        ),
    },
    key=editor,
)
scenes = clean_scenes(edited.to_dict("records"))
st.session_state.scenes = scenes  # kept for the next visit, whatever page comes between
problems = scene_problems(scenes)
for problem in problems:
    st.error(problem)


def _move(delta: int) -> None:
    rows = apply_edits(st.session_state.scenes_base, st.session_state.get(editor))
    rows, at = move_scene(rows, st.session_state.get("scene_pick", 0), delta)
    st.session_state.scenes = rows
    st.session_state.scene_pick = at  # the picker stays on the scene that moved
    st.session_state.editor_version += 1  # a fresh editor shows the new order


preview = False
if scenes:
    if not 0 <= st.session_state.get("scene_pick", 0) < len(scenes):
        st.session_state.scene_pick = len(scenes) - 1
    c1, c2, c3, c4 = st.columns([6, 1, 1, 2], vertical_alignment="bottom")
    c1.selectbox(
        "Scene",
        range(len(scenes)),
        format_func=lambda i: scene_label(i, scenes[i]),
        key="scene_pick",
    )
    c2.button("↑", on_click=_move, args=(-1,), help="move the scene earlier")
    c3.button("↓", on_click=_move, args=(1,), help="move the scene later")
    preview = c4.button(
        "Preview scene",
        icon=":material/visibility:",
        on_click=fresh_seed,
        args=("sb_seed",),
        disabled=bool(problems),
    )

c1, c2, c3 = st.columns(3)
seed = seed_fields(c1, "sb_seed")
steps, guidance = steps_and_guidance(c2, c3, "sb_", STORYBOARD_DEFAULTS["sb_steps"])
image_first = first_frame_choice(
    st, "sb_first_frame", " (the first scene; later scenes continue the film)"
)
candidates = st.number_input(
    "Draws per later window",
    min_value=1,
    max_value=MAX_CANDIDATES,
    step=1,
    key="candidates",
    persist_state="session",
    help="Each window that continues the film is drawn this many times and the draw that "
    "best continues the frames before it (same colours, no jump) is kept. On the held-out "
    "stories, 3 draws kept colour and shape at 83 % of scene changes (74 % with 1) "
    f"and took about twice the time. Default {DEFAULT_CANDIDATES}.",
)
lora = lora_fields(st, "sb_lora")
total = sum(int(s["frames"]) for s in scenes if not problems)
st.caption(f"{len(scenes)} scenes, {total} frames ({total / FPS:.1f} s at {FPS} fps)")
too_long = total > MAX_STORY_FRAMES  # said before the click, as a scene's own problems are
if too_long:
    st.error(f"The film is {total} frames; at most {MAX_STORY_FRAMES}: shorten or remove scenes.")
render = st.button(
    "Render film",
    type="primary",
    icon=":material/movie:",
    on_click=fresh_seed,
    args=("sb_seed",),
    disabled=bool(problems) or too_long,
)

try:
    if preview:
        scene = scenes[st.session_state.scene_pick]
        request = GenerateRequest(
            prompt=scene["prompt"],
            seed=seed,
            steps=int(steps),
            guidance=float(guidance),
            frames=int(scene["frames"]),
            image_first=image_first,
            lora=lora,
        )
        follow(submit_generate(studio.gallery, request, model=studio.model))
    if render:
        options = StoryboardOptions(
            seed=seed,
            steps=int(steps),
            guidance=float(guidance),
            image_first=image_first,
            candidates=int(candidates),
            lora=lora,
        )
        follow(submit_storyboard(studio.gallery, scenes, options))
except StudioError as exc:
    st.error(str(exc))

if scenes != st.session_state.get("draft_rows"):
    st.session_state.draft_rows = [dict(s) for s in scenes]
    st.session_state.scenes_from_film = None  # edited: these rows are the storyboard now
    try:
        save_draft(DRAFT, scenes)
    except OSError as exc:  # a convenience: the page goes on without it
        st.caption(f"(the storyboard could not be kept for the next visit: {exc.strerror})")
show_job(studio, st.query_params.get("job"), seed_key="sb_seed")
