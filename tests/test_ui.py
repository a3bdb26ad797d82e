"""Every page of the Streamlit studio under ``streamlit.testing`` AppTest, on the tiny pipeline,
and the streamlit-free modules behind them (vocabulary, progress, page state).

The studio's worker thread runs in the test process, as it does in a server, so a job a page
submits really runs; the tests wait for it through the store. A test that must see a job
waiting or running holds the machine's worker lock (``held_worker``), so the studio's worker
never takes it.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from studio.gallery import Gallery, Job
from studio.generate import GenerateRequest
from studio.jobs import MAX_FRAMES, run_job, submit_generate
from studio.uploads import store_element

HAS_STREAMLIT = importlib.util.find_spec("streamlit") is not None
needs_streamlit = pytest.mark.skipif(not HAS_STREAMLIT, reason="streamlit is not installed")

ROOT = Path(__file__).parents[1]
APP = str(ROOT / "studio" / "ui" / "app.py")
PROMPT = "a red circle moving left on a black background"


@pytest.fixture
def home(tmp_path, monkeypatch, tiny_pipeline_dir):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STUDIO_MODEL", str(tiny_pipeline_dir))
    return tmp_path / "home"


@pytest.fixture
def held_worker(home):
    """Hold ``home``'s worker lock: the studio's worker waits, so jobs stay queued (or as
    the test sets them) until the test ends."""
    Gallery(home)  # makes the folder
    fh = open(home / "worker.lock", "a+")  # noqa: SIM115 - closed below
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    yield home
    fcntl.flock(fh, fcntl.LOCK_UN)
    fh.close()


def app(page: str | None = None, job: str | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    if job:
        at.query_params["job"] = job
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def visit(at, page: str) -> None:
    """Go to ``page`` as its sidebar link does: the URL's query (``?job=``) is dropped."""
    at.query_params.clear()
    at.switch_page(f"pages/{page}.py").run()


def wait_done(home: Path, job_id: str, timeout: float = 120) -> Job:
    gallery = Gallery(home)
    deadline = time.time() + timeout
    while gallery.get(job_id).active:
        assert time.time() < deadline, "job did not finish"
        time.sleep(0.1)
    return gallery.get(job_id)


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


def labels(at) -> list[str]:
    return [b.label for b in at.button]


def url_job(at) -> str | None:
    value = at.query_params.get("job")
    return value[0] if isinstance(value, list) else value


def clips(at) -> list[str]:
    """The alt texts of the clips the page shows."""
    return [i.alt for img in at.image for i in img.proto.imgs if i.alt.startswith("Clip:")]


def title(at) -> str:
    return at.title[0].value


def done_job(gallery: Gallery, prompt: str = PROMPT, **request) -> Job:
    """A finished job without files, for pages that list jobs (no worker involved)."""
    data = {"prompt": prompt, "seed": 3, "steps": 2, "frames": 4, "guidance": 3.0} | request
    job = gallery.enqueue("generate", data, prompt, data["seed"])
    gallery._execute("UPDATE jobs SET status = 'done', finished = ? WHERE id = ?", (1.0, job.id))
    return gallery.get(job.id)


# ---------------------------------------------------------------------------- Generate
@needs_streamlit
def test_generate_page_runs_a_job_and_shows_the_clip(home):
    at = app()
    at.text_area(key="draft").input(PROMPT)
    at.number_input(key="steps").set_value(2)
    at.number_input(key="seed").set_value(5)  # typing a seed locks it
    at.radio(key="first_frame").set_value("image first")
    button(at, "Generate").click().run()
    assert not at.exception and not at.error
    job_id = url_job(at)
    job = wait_done(home, job_id)
    at.run()
    assert job.status == "done" and job.request["prompt"] == PROMPT and job.seed == 5
    assert job.request["image_first"] is True
    assert clips(at) == [f"Clip: {PROMPT} (job {job_id[:8]})"], "the finished clip is shown"
    assert any(c.value.startswith("Seed 5 · took ") for c in at.caption), "seed and time shown"
    downloads = [b.label for b in at.get("download_button")]
    assert downloads == ["MP4", "GIF", "Sidecar"]
    assert "Variation" in labels(at)
    fresh = app(job=job_id)  # a refresh: new session, same URL
    assert fresh.text_area(key="draft").value == PROMPT and clips(fresh)
    assert fresh.number_input(key="seed").value == 5


@needs_streamlit
def test_generate_page_explains_an_empty_prompt(home):
    at = app()
    button(at, "Generate").click().run()
    assert not at.exception
    assert "prompt is empty" in at.error[0].value
    assert Gallery(home).search(status=None) == []


@needs_streamlit
def test_seed_is_new_each_time_unless_locked(home):
    at = app()
    at.text_area(key="draft").input(PROMPT)
    seeds = []
    for _ in range(3):
        button(at, "Generate").click().run()
        job = Gallery(home).get(url_job(at))
        assert at.number_input(key="seed").value == job.seed, "the field shows the seed used"
        seeds.append(job.seed)
    assert len(set(seeds)) == 3, seeds
    at.checkbox(key="seed_locked").check().run()
    button(at, "Generate").click().run()
    button(at, "Generate").click().run()
    jobs = Gallery(home).search(status=None, limit=2)
    assert [j.seed for j in jobs] == [seeds[-1]] * 2


@needs_streamlit
def test_variation_is_the_same_clip_with_a_new_seed(home):
    at = app()
    at.text_area(key="draft").input(PROMPT)
    at.number_input(key="steps").set_value(2)
    at.number_input(key="frames").set_value(4)
    button(at, "Generate").click().run()
    first = wait_done(home, url_job(at))
    at.run()
    button(at, "Variation").click().run()
    assert not at.exception and not at.error
    second = Gallery(home).get(url_job(at))
    assert second.id != first.id and second.seed != first.seed
    assert {k: v for k, v in second.request.items() if k != "seed"} == {
        k: v for k, v in first.request.items() if k != "seed"
    }
    assert at.number_input(key="seed").value == second.seed
    assert at.text_area(key="draft").value == PROMPT


@needs_streamlit
def test_frames_over_the_maximum_name_the_maximum(home):
    at = app()
    at.text_area(key="draft").input(PROMPT)
    at.number_input(key="frames").set_value(100000).run()
    assert at.number_input(key="frames").value == 100000, "the value is not silently replaced"
    assert f"at most {MAX_FRAMES} frames" in at.error[0].value
    assert button(at, "Generate").disabled
    at = app("storyboard")
    at.session_state["scenes-0"] = {"edited_rows": {0: {"frames": 100000}}}
    at.run()
    assert f"at most {MAX_FRAMES} frames" in at.error[0].value
    assert at.error[0].value.startswith("Scene 1: ")
    assert button(at, "Render film").disabled


@needs_streamlit
def test_a_running_job_shows_its_stage_eta_and_cancel(held_worker):
    gallery = Gallery(held_worker)
    job = gallery.enqueue("generate", {"prompt": PROMPT, "frames": 16, "steps": 10}, PROMPT, 0)
    assert gallery.claim_next().id == job.id  # the test is the worker
    gallery.set_stage(job.id, {"name": "clip", "since": time.time() - 4, "base": 0})
    gallery.set_progress(job.id, 4, 10)
    at = app(job=job.id)
    assert at.text_area(key="draft").value == PROMPT
    text = at.get("progress")[0].proto.text
    assert text.startswith("Generating the clip: step 4 of 10 · about ") and "left" in text
    assert any("**▶ generating the clip**" in c.value for c in at.caption)
    button(at, "Cancel").click()
    at.run()  # the fragment's button: the job is asked to cancel
    assert gallery.get(job.id).cancel


@needs_streamlit
def test_word_chips_examples_and_unknown_words(home):
    from studio.ui import vocabulary

    at = app()
    at.pills(key="chip-colour").set_value("red").run()
    at.pills(key="chip-shape").set_value("circle").run()
    at.pills(key="chip-motion").set_value("left").run()
    at.pills(key="chip-background").set_value("black").run()
    assert at.text_area(key="draft").value == PROMPT
    assert at.pills(key="chip-colour").value is None, "a chip is a button, not a choice"
    assert at.slider(key="guidance").max == 15.0  # 3-4 is not a few pixels of a 0..50 slider
    assert at.expander[0].proto.expanded, "the chips stay open for the next word"
    assert not at.warning
    example = vocabulary.examples()[1]
    at.pills(key="example").set_value(example).run()
    assert at.text_area(key="draft").value == example
    at.text_area(key="draft").input("a red hexagon spinning on a black background").run()
    assert "“hexagon”, “spinning”" in at.warning[0].value
    # a chip that would take the prompt past the 1000 characters a job takes is refused, said
    at.text_area(key="draft").input("x" * 998).run()
    at.pills(key="chip-colour").set_value("red").run()
    assert at.text_area(key="draft").value == "x" * 998
    assert any("Not added: the prompt would be" in w.value for w in at.warning)


@needs_streamlit
def test_settings_survive_a_page_switch(home):
    at = app()
    at.text_area(key="draft").input(PROMPT)
    at.number_input(key="steps").set_value(7)
    at.number_input(key="frames").set_value(8).run()
    at.switch_page("pages/gallery.py").run()
    at.switch_page("pages/generate.py").run()
    assert at.text_area(key="draft").value == PROMPT
    assert at.number_input(key="steps").value == 7 and at.number_input(key="frames").value == 8


@needs_streamlit
def test_the_job_a_page_follows_survives_a_visit_to_another_page(held_worker):
    """The sidebar's page links drop ``?job=``: the clip being made stays on its page."""
    at = app()
    at.text_area(key="draft").input(PROMPT)
    button(at, "Generate").click().run()
    job_id = url_job(at)
    assert job_id and "Queued: position 1" in at.info[0].value
    visit(at, "gallery")
    visit(at, "generate")
    assert not at.exception
    assert url_job(at) == job_id, "back in the URL: a refresh keeps it too"
    assert "Queued: position 1" in at.info[0].value and "Cancel" in labels(at)
    # once deleted, the page starts empty instead of saying the job is gone
    Gallery(held_worker).cancel(job_id)
    Gallery(held_worker).delete(job_id)
    visit(at, "gallery")
    visit(at, "generate")
    assert url_job(at) is None and not at.warning
    assert any("The clip appears here" in c.value for c in at.caption)


@needs_streamlit
def test_a_prompt_over_the_limit_is_kept_and_said_and_waits(held_worker):
    """Streamlit drops a paste that passes a text area's max_chars without a word: the
    box takes it, and the page says how long it is."""
    at = app()
    long = "a red circle moving left " * 60  # 1500 characters
    at.text_area(key="draft").input(long).run()
    assert at.text_area(key="draft").value == long
    assert f"The prompt is {len(long)} characters" in at.error[0].value
    assert button(at, "Generate").disabled
    assert not Gallery(held_worker).search(status=None), "nothing is queued"


@needs_streamlit
def test_gallery_shows_prompts_as_typed_not_as_markdown(held_worker):
    """A prompt (from the UI or any API client) is text: no link, image, icon or emphasis
    that every viewer's browser would render or fetch."""
    tricky = "a red *circle :material/delete: [x](https://example.com) ![p](https://e.x/p.png)"
    done_job(Gallery(held_worker), prompt=tricky)
    running = Gallery(held_worker).enqueue("generate", {"prompt": tricky, "frames": 4}, tricky, 1)
    Gallery(held_worker).claim_next()
    at = app("gallery")
    assert [t.value for t in at.text] == [tricky, tricky]  # the queue panel and the card
    assert not any("example.com" in m.value for m in at.markdown)
    assert running.id


@needs_streamlit
def test_gallery_search_and_filters_survive_a_page_switch(held_worker):
    done_job(Gallery(held_worker))
    done_job(Gallery(held_worker), prompt="a green square moving up on a white background")
    at = app("gallery")
    at.text_input(key="gallery_text").input("green").run()
    at.selectbox(key="gallery_kind").set_value("generate").run()
    at.switch_page("pages/generate.py").run()
    at.switch_page("pages/gallery.py").run()
    assert at.text_input(key="gallery_text").value == "green"
    assert at.selectbox(key="gallery_kind").value == "generate"
    assert [t.value for t in at.text] == ["a green square moving up on a white background"]


# ---------------------------------------------------------------------------- LoRA
@pytest.fixture
def adapter(lora_adapter):
    return lora_adapter


def sidecar(home: Path, job: Job) -> dict:
    return json.loads((home / "videos" / job.sidecar).read_text())


@needs_streamlit
def test_a_lora_adapter_is_queued_used_shown_and_reused(home, adapter):
    from pipelines.video_io import read_video

    at = app()
    at.text_area(key="draft").input(PROMPT)
    at.number_input(key="steps").set_value(2)
    at.number_input(key="frames").set_value(4)
    at.number_input(key="seed").set_value(5)
    at.text_input(key="lora_path").input(str(adapter))
    at.number_input(key="lora_scale").set_value(0.5)
    button(at, "Generate").click().run()
    assert not at.exception and not at.error
    job = wait_done(home, url_job(at))
    assert job.status == "done", job.error
    spec = f"{adapter.resolve()}:0.5"
    assert job.request["lora"] == spec, "the job asks the worker for the adapter"
    assert sidecar(home, job)["lora"] == spec, "the sidecar names it"
    at.run()
    assert any("LoRA " in c.value and "×0.5" in c.value for c in at.caption), "shown with the clip"

    # the worker really loaded it: the same seed without the adapter draws other frames
    at.text_input(key="lora_path").input("")
    button(at, "Generate").click().run()
    plain = wait_done(home, url_job(at))
    assert plain.seed == job.seed and plain.request["lora"] is None
    videos = home / "videos"
    with_lora, without = read_video(videos / job.video)[0], read_video(videos / plain.video)[0]
    assert (with_lora.astype(int) != without.astype(int)).any()

    # Variation and Re-run keep the adapter, and fill the fields with it
    at = app(job=job.id)
    assert at.text_input(key="lora_path").value == str(adapter.resolve())
    assert at.number_input(key="lora_scale").value == 0.5
    button(at, "Variation").click().run()
    assert not at.exception and not at.error
    varied = Gallery(home).get(url_job(at))
    assert varied.seed != job.seed and varied.request["lora"] == spec
    at.switch_page("pages/gallery.py").run()
    cards = [c.value for c in at.caption if "seed 5 ·" in c.value]
    assert any("LoRA " in c and "×0.5" in c for c in cards), cards
    gallery = Gallery(home)
    rerun_button = next(b for b in at.button if b.key == f"rerun-{job.id}")
    rerun_button.click().run()
    again = gallery.get(url_job(at))
    assert again.id != job.id and again.request == job.request


@needs_streamlit
@pytest.mark.parametrize(
    "path, scale, message",
    [
        ("NOWHERE", 1.0, "no LoRA adapter at"),
        ("ADAPTER", 1e9, "LoRA scale must be a number in -10..10"),
        ("EMPTY", 1.0, "no LoRA adapter in"),
    ],
)
def test_a_bad_lora_is_one_error_and_queues_nothing(home, adapter, tmp_path, path, scale, message):
    (tmp_path / "empty").mkdir()
    path = {
        "NOWHERE": str(tmp_path / "missing"),
        "ADAPTER": str(adapter),
        "EMPTY": str(tmp_path / "empty"),
    }[path]
    at = app()
    at.text_area(key="draft").input(PROMPT)
    at.text_input(key="lora_path").input(path)
    at.number_input(key="lora_scale").set_value(scale)
    button(at, "Generate").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [at.error[0].value] and message in at.error[0].value
    assert Gallery(home).search(status=None) == []
    # the Storyboard page checks its adapter the same way
    at.switch_page("pages/storyboard.py").run()
    at.text_input(key="sb_lora_path").input(path)
    at.number_input(key="sb_lora_scale").set_value(scale)
    button(at, "Render film").click().run()
    assert message in at.error[0].value and Gallery(home).search(status=None) == []


# ---------------------------------------------------------------------------- warm start
@needs_streamlit
def test_the_model_is_ready_before_the_first_click(home, tiny_pipeline_dir):
    from studio.ui import warm

    at = app()
    status = warm.worker(home, tiny_pipeline_dir).wait_model(120)  # the page's studio's worker
    assert status.state == "ready", status
    at.run()
    assert any("Model ready" in c.value for c in at.sidebar.caption)
    at.text_area(key="draft").input(PROMPT)
    at.number_input(key="steps").set_value(2)
    at.number_input(key="frames").set_value(4)
    button(at, "Generate").click().run()
    job = wait_done(home, url_job(at))
    assert job.status == "done", job.error
    loaded = sidecar(home, job)["model_load"]
    assert loaded["warm"] and loaded["ready_at"] <= job.created, "loaded before the click"
    assert job.stage.get("warm"), "the job went straight to sampling: no loading stage"
    at.run()
    assert clips(at) == [f"Clip: {PROMPT} (job {job.id[:8]})"], "the job still shows"


@needs_streamlit
def test_the_page_says_the_model_is_loading_and_a_click_meanwhile_waits(home, monkeypatch):
    from studio import jobs
    from studio.ui import warm

    gate = threading.Event()
    real = jobs.load_pipeline

    def slow_load(*args, **kwargs):
        gate.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "load_pipeline", slow_load)
    monkeypatch.setattr(jobs, "_LOADS", {})
    try:
        at = app()  # the page draws while the model loads
        captions = [c.value for c in at.sidebar.caption]
        assert any("Loading model…" in c for c in captions), captions
        at.text_area(key="draft").input(PROMPT)
        at.number_input(key="steps").set_value(2)
        at.number_input(key="frames").set_value(4)
        button(at, "Generate").click().run()
        assert not at.exception and not at.error
        job_id = url_job(at)
        assert "starts as soon as the model has loaded" in at.info[0].value
    finally:
        gate.set()
    model = os.environ["STUDIO_MODEL"]
    assert warm.worker(home, model).wait_model(120).state == "ready"
    job = wait_done(home, job_id)
    assert job.status == "done", job.error
    assert sidecar(home, job)["model_load"]["warm"], "the job started once the model was ready"
    at.run()
    assert any("Model ready" in c.value for c in at.sidebar.caption)


@needs_streamlit
def test_studio_ui_loads_the_model_as_the_server_starts(tmp_path, tiny_pipeline_dir):
    """No browser opens a page, yet the server says the model is ready; a job then submitted
    through the store the pages use finds it loaded."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path / "home"
    log_path = tmp_path / "ui.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "studio.cli", "ui", "--port", str(port), "--home", str(home),
             "--model", str(tiny_pipeline_dir), "--scorer", "none"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    try:
        deadline = time.time() + 180
        while "studio: model ready" not in log_path.read_text():
            assert proc.poll() is None and time.time() < deadline, log_path.read_text()
            time.sleep(0.2)
        assert "studio: loading the model" in log_path.read_text()
        gallery = Gallery(home)
        submitted = time.time()
        job = submit_generate(
            gallery, GenerateRequest(prompt=PROMPT, steps=2, frames=4), model=tiny_pipeline_dir
        )
        job = wait_done(home, job.id)
        assert job.status == "done", job.error
        loaded = sidecar(home, job)["model_load"]
        assert loaded["warm"] and loaded["ready_at"] <= submitted
    finally:
        proc.terminate()
        proc.wait(30)


# ---------------------------------------------------------------------------- Storyboard
@needs_streamlit
def test_storyboard_page_renders_the_film_and_reorders_scenes(home):
    at = app("storyboard")
    pick = at.selectbox(key="scene_pick")
    assert "moving right" in pick.options[0] and pick.value == 0
    button(at, "↓").click().run()  # scene 1 moves after scene 2
    pick = at.selectbox(key="scene_pick")
    assert "moving up" in pick.options[0]
    assert pick.value == 1 and "moving right" in pick.options[1], "the picker follows the scene"
    button(at, "↑").click().run()
    assert at.selectbox(key="scene_pick").value == 0
    button(at, "↓").click().run()
    at.number_input(key="sb_steps").set_value(2)
    at.radio(key="sb_first_frame").set_value("with the clip")
    at.number_input(key="candidates").set_value(2)
    button(at, "Render film").click().run()
    assert not at.exception and not at.error
    jobs = Gallery(home).search(status=None)
    assert [j.kind for j in jobs] == ["storyboard"] and url_job(at) == jobs[0].id
    assert jobs[0].request["options"]["image_first"] is False
    assert jobs[0].request["options"]["candidates"] == 2
    assert [s["prompt"] for s in jobs[0].request["story"]["scenes"]][0].endswith(
        "moving up on a black background"
    )
    wait_done(home, jobs[0].id)
    at.run()
    assert Gallery(home).get(jobs[0].id).status == "done"
    assert clips(at) and "Variation" in labels(at)


@needs_streamlit
def test_storyboard_edits_survive_a_page_switch(home):
    at = app("storyboard")
    green = "a green circle moving up on a white background"
    blue = "a blue square moving down on a black background"
    at.session_state["scenes-0"] = {
        "edited_rows": {0: {"prompt": green}},
        "added_rows": [{"prompt": blue, "frames": 8}, {}],  # {}: a row not typed into yet
        "deleted_rows": [],
    }
    at.run()
    for page in ("generate", "elements", "gallery", "storyboard"):
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception
    assert at.selectbox(key="scene_pick").options == [
        f"1: {green}",
        "2: a red square moving up on a black background",
        f"3: {blue}",
        "4: (no prompt yet)",
    ]
    rows = at.data_editor[0].value.to_dict("records")
    assert rows[2] == {"prompt": blue, "frames": 8}
    assert rows[3] == {"prompt": "", "frames": 16}, "a new row is empty, 16 frames, not None"
    button(at, "Render film").click().run()
    assert "scene 4 has no prompt" in at.error[0].value


@needs_streamlit
def test_a_film_over_the_limit_is_said_before_the_click(home):
    at = app("storyboard")
    at.session_state["scenes-0"] = {
        "edited_rows": {0: {"frames": 64}, 1: {"frames": 64}},
        "added_rows": [{"prompt": "a red square moving down on a black background", "frames": 64}]
        * 3,
        "deleted_rows": [],
    }
    at.run()
    assert any("The film is 320 frames; at most 256" in e.value for e in at.error)
    assert button(at, "Render film").disabled
    assert not Gallery(home).search(status=None)


@needs_streamlit
def test_storyboard_scene_preview_queues_one_clip(home):
    at = app("storyboard")
    green = "a green circle moving up on a white background"
    at.session_state["scenes-0"] = {
        "edited_rows": {0: {"prompt": green}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run()
    button(at, "Preview scene").click().run()
    jobs = Gallery(home).search(status=None)
    assert [(j.kind, j.request["frames"]) for j in jobs] == [("generate", 16)]
    assert url_job(at) == jobs[0].id
    # a refresh with the preview in the URL (a new session) finds the storyboard as edited
    again = app("storyboard", job=jobs[0].id)
    assert again.selectbox(key="scene_pick").options[0] == f"1: {green}"


# ---------------------------------------------------------------------------- Elements
@needs_streamlit
def test_elements_page_inserts_placeholders_into_the_prompt(home):
    at = app("elements")
    assert "No elements yet." in at.info[0].value
    from PIL import Image

    name = store_element(Image.new("RGB", (8, 8), (200, 0, 0)), Gallery(home).home / "elements")
    at.session_state["elements"] = [name]
    at.run()
    button(at, "Insert <ref1>").click().run()
    assert at.session_state["draft"] == "<ref1>"
    button(at, "Remove the elements").click().run()
    assert at.session_state["elements"] == [] and "No elements yet." in at.info[0].value
    assert at.session_state["draft"] == ""  # its placeholder went with it
    at.session_state["elements"] = [name]
    at.run()
    at.session_state["draft"] = "x" * 995  # near the 1000 characters a job takes
    button(at, "Insert <ref1>").click().run()
    assert at.session_state["draft"] == "x" * 995  # not cut, not past what the box takes
    assert "would be 1002 characters" in at.warning[-1].value
    at.session_state["draft"] = "a red square"
    button(at, "Insert <ref1>").click().run()
    assert at.session_state["draft"] == "a red square <ref1>"
    assert not [w for w in at.warning if "Not added" in w.value]  # said once, then gone
    at.session_state["draft"] = "<ref1>"
    at.switch_page("pages/generate.py").run()
    assert at.text_area(key="draft").value == "<ref1>"
    button(at, "Generate").click().run()  # the tiny model has no reference conditioning
    assert "reference element" in at.error[0].value


@needs_streamlit
def test_elements_page_says_on_load_that_the_model_takes_no_references(home):
    at = app("elements")
    assert "cannot use reference elements" in at.warning[0].value


@needs_streamlit
def test_a_bad_upload_is_explained_in_the_users_words(home):
    at = app("elements")
    at.file_uploader[0].set_value(("notes.png", b"not an image at all", "image/png")).run()
    assert not at.exception
    message = at.error[0].value
    assert "notes.png" in message and "PNG, JPEG, WebP or BMP" in message
    assert "Pillow" not in message


# ---------------------------------------------------------------------------- Gallery
@needs_streamlit
def test_gallery_lists_searches_reruns_and_deletes(home):
    at = app("gallery")  # starts the studio's worker
    assert "Nothing here yet" in at.info[0].value
    gallery = Gallery(home)
    job = submit_generate(gallery, GenerateRequest(prompt=PROMPT, steps=2, frames=4))
    other = submit_generate(gallery, GenerateRequest(prompt="a green square", steps=2, frames=4))
    wait_done(home, job.id)
    wait_done(home, other.id)
    at.run()
    assert len(at.toggle) == 2 and not clips(at), "clips are played on demand"
    at.toggle(key=f"play-{other.id}").set_value(True).run()
    assert clips(at) == [f"Clip: a green square (job {other.id[:8]})"]
    assert [b.label for b in at.get("download_button")] == ["MP4", "GIF", "Sidecar"]
    at.text_input(key="gallery_text").input("RED CIRCLE").run()
    assert [t.value for t in at.text] == [PROMPT]
    button(at, "Delete").click().run()
    assert gallery.get(job.id) is not None, "Delete asks first"
    assert "cannot be undone" in at.warning[0].value
    button(at, "Keep").click().run()
    assert gallery.get(job.id) is not None and "Delete for good" not in labels(at)
    button(at, "Delete").click().run()
    button(at, "Delete for good").click().run()
    assert gallery.get(job.id) is None and gallery.get(other.id) is not None


@needs_streamlit
def test_rerun_opens_the_new_job_on_the_generate_page(held_worker):
    gallery = Gallery(held_worker)
    old = done_job(gallery, steps=3, frames=8, seed=11)
    at = app("generate")
    at.text_area(key="draft").input("an earlier prompt still in the field").run()
    at.switch_page("pages/gallery.py").run()
    button(at, "Re-run").click().run()
    assert not at.exception
    new = gallery.search(status="queued")[0]
    assert new.id != old.id and new.request == old.request
    assert title(at) == "Generate" and url_job(at) == new.id
    assert at.text_area(key="draft").value == PROMPT, "the re-run job's prompt"
    assert at.number_input(key="steps").value == 3 and at.number_input(key="frames").value == 8
    assert at.number_input(key="seed").value == 11 and at.checkbox(key="seed_locked").value
    assert "Queued: position 1" in at.info[0].value and "Cancel" in labels(at)


@needs_streamlit
def test_use_these_settings_fills_the_generate_page(held_worker):
    gallery = Gallery(held_worker)
    done_job(gallery, steps=4, frames=12, seed=9, image_first=False, negative_prompt="blur")
    at = app("gallery")
    assert [t.value for t in at.text] == [PROMPT, "Negative prompt: blur"]  # on its card
    assert "12 frames at 8 fps · frame 0 with the clip" in at.caption[1].value
    button(at, "Use these settings").click().run()
    assert title(at) == "Generate" and url_job(at) is None
    assert at.text_area(key="draft").value == PROMPT
    assert at.text_input(key="negative").value == "blur"
    assert at.number_input(key="frames").value == 12 and at.number_input(key="steps").value == 4
    assert at.number_input(key="seed").value == 9
    assert at.radio(key="first_frame").value == "with the clip"
    assert len(gallery.search(status=None)) == 1, "nothing is queued"


@needs_streamlit
def test_settings_of_a_cli_or_api_job_load_as_they_were(held_worker):
    """The CLI and API take guidance up to 50, seeds up to 2**63-1 and any fps: such a job's
    settings load without an error, keep its guidance and fps, and say so about a seed the
    field cannot hold instead of replacing it silently."""
    gallery = Gallery(held_worker)
    done_job(gallery, guidance=20.0, seed=2**60, frames=12, fps=24)
    at = app("gallery")
    button(at, "Use these settings").click().run()
    assert title(at) == "Generate" and not at.exception
    assert at.slider(key="guidance").value == 20.0
    assert at.slider(key="guidance").max == 20.0  # widened as far as the job needs (else 15)
    assert any("0.5 s at 24 fps" in c.value for c in at.caption), "the job's fps"
    assert any("seed 1152921504606846976 is larger than the field" in w.value for w in at.warning)
    assert not at.checkbox(key="seed_locked").value
    assert at.number_input(key="seed").value != 0
    assert at.number_input(key="fps").value == 24
    at.switch_page("pages/generate.py").run()  # AppTest stays on the page a callback left
    at.run()  # a rerun of its own (a job or the model finishing): the note stays
    assert any("larger than the field" in w.value for w in at.warning)
    button(at, "Generate").click().run()
    assert not at.error, [e.value for e in at.error]
    assert not any("larger than the field" in w.value for w in at.warning)  # a new seed: gone
    queued = [j for j in gallery.search(status=None) if j.status != "done"]
    assert [(j.request["fps"], j.request["guidance"]) for j in queued] == [(24, 20.0)]


@needs_streamlit
def test_add_to_storyboard_appends_a_scene(held_worker):
    done_job(Gallery(held_worker), frames=8)
    at = app("gallery")
    button(at, "Add to storyboard").click().run()
    assert title(at) == "Storyboard"
    # no storyboard was being edited: a new one starts with the clip, not the examples
    assert at.selectbox(key="scene_pick").options == [f"1: {PROMPT}"]
    assert at.data_editor[0].value.to_dict("records") == [{"prompt": PROMPT, "frames": 8}]
    at.switch_page("pages/gallery.py").run()
    button(at, "Add to storyboard").click().run()  # then it is appended to
    assert at.selectbox(key="scene_pick").options[-1] == f"2: {PROMPT}"
    # a new session (another tab) appends to the storyboard kept from this one
    other = app("gallery")
    button(other, "Add to storyboard").click().run()
    assert other.selectbox(key="scene_pick").options == [f"{k}: {PROMPT}" for k in (1, 2, 3)]


@needs_streamlit
def test_opening_a_film_keeps_the_storyboard_being_edited(held_worker):
    """Re-run (or Use these settings) of a film shows its scenes without writing over the
    storyboard being edited, and offers it back."""
    from studio.ui.state import STORYBOARD_DRAFT

    gallery = Gallery(held_worker)
    film = [{"prompt": "a blue square moving down on a white background", "frames": 8}]
    story = {"scenes": [{"prompt": s["prompt"], "frames": s["frames"]} for s in film]}
    old = gallery.enqueue("storyboard", {"story": story, "options": {"seed": 4}}, "f", 4)
    gallery._execute("UPDATE jobs SET status = 'done', finished = 1.0 WHERE id = ?", (old.id,))
    at = app("storyboard")
    mine = "MY EDITED a green circle moving up on a black background"
    at.session_state["scenes-0"] = {"edited_rows": {0: {"prompt": mine}}, "added_rows": []}
    at.session_state["scenes-0"]["deleted_rows"] = []
    at.run()
    draft = held_worker / STORYBOARD_DRAFT
    kept = json.loads(draft.read_text())
    assert kept[0]["prompt"] == mine
    at.switch_page("pages/gallery.py").run()
    button(at, "Re-run").click().run()
    assert title(at) == "Storyboard" and not at.exception
    assert at.data_editor[0].value.to_dict("records") == film
    assert json.loads(draft.read_text()) == kept, "the storyboard being edited is kept"
    assert "Your own storyboard is kept" in at.info[0].value
    at.switch_page("pages/storyboard.py").run()  # AppTest reruns the page it was told, not
    button(at, "Back to my storyboard").click().run()  # the one the script switched to
    assert not at.exception, at.exception
    assert title(at) == "Storyboard", title(at)
    assert at.data_editor[0].value.to_dict("records")[0]["prompt"] == mine
    assert not any("Your own storyboard" in i.value for i in at.info)


@needs_streamlit
def test_the_example_scenes_are_not_kept_as_a_draft(held_worker):
    app("storyboard")  # shows the examples; nothing edited
    done_job(Gallery(held_worker), frames=8)
    at = app("gallery")
    button(at, "Add to storyboard").click().run()
    assert at.selectbox(key="scene_pick").options == [f"1: {PROMPT}"]


@needs_streamlit
def test_gallery_pages_beyond_the_newest_20(held_worker):
    gallery = Gallery(held_worker)
    for i in range(25):
        done_job(gallery, f"a red circle number {i}")
    at = app("gallery")
    prompts = [t.value for t in at.text]
    assert len(prompts) == 20 and "Showing 1–20 of 25" in at.caption[0].value
    button(at, "Older →").click().run()
    prompts = [t.value for t in at.text]
    assert len(prompts) == 5 and "Showing 21–25 of 25" in at.caption[0].value
    assert button(at, "Older →").disabled
    at.text_input(key="gallery_text").input("number 1").run()  # a new search: page 1
    assert "Showing 1–11 of 11" in at.caption[0].value


@needs_streamlit
def test_queue_panel_shows_waiting_jobs_and_cancels_one(held_worker):
    gallery = Gallery(held_worker)
    a = submit_generate(gallery, GenerateRequest(prompt=PROMPT, steps=2, frames=4))
    b = submit_generate(gallery, GenerateRequest(prompt="a green square", steps=2, frames=4))
    at = app("gallery")
    assert at.subheader[0].value == "Queue (2)"
    assert [c.value for c in at.caption if c.value.startswith("Queued")] == [
        "Queued: position 1",
        "Queued: position 2",
    ]
    next(x for x in at.button if x.key == f"queue-cancel-{b.id}").click()
    at.run()
    assert gallery.get(b.id).status == "cancelled" and gallery.get(a.id).status == "queued"


@needs_streamlit
def test_a_full_queue_is_said_on_generate_and_re_run_and_queues_nothing(held_worker):
    from studio.jobs import MAX_QUEUED

    gallery = Gallery(held_worker)
    failed = submit_generate(gallery, GenerateRequest(prompt=PROMPT, steps=2, frames=4))
    gallery.finish(failed.id, "failed", error="boom")  # a finished job, for its Re-run button
    for _ in range(MAX_QUEUED):  # the API's limit holds for the pages too
        submit_generate(gallery, GenerateRequest(prompt=PROMPT, steps=2, frames=4))
    at = app()
    at.text_area(key="draft").input("a green square")
    button(at, "Generate").click().run()
    assert "the queue is full: 100 jobs are waiting" in at.error[0].value
    assert len(gallery.search(status="queued", limit=1000)) == MAX_QUEUED
    at.switch_page("pages/gallery.py").run()
    at.selectbox(key="gallery_status").set_value("failed").run()
    next(b for b in at.button if b.key == f"rerun-{failed.id}").click()
    at.run()
    assert any("the queue is full" in e.value for e in at.error)
    assert len(gallery.search(status="queued", limit=1000)) == MAX_QUEUED
    for job in gallery.search(status="queued", limit=1000):  # nothing left for the worker
        gallery.cancel(job.id)


@needs_streamlit
def test_a_best_of_clip_says_which_seed_was_kept_and_which_repeats_it(held_worker):
    import numpy as np

    from pipelines.video_io import write_video

    gallery = Gallery(held_worker)
    job = done_job(gallery, seed=10)
    write_video(gallery.home / "videos" / "b.mp4", np.zeros((4, 16, 16, 3), np.uint8), 8)
    gallery.finish(job.id, "done", video="b.mp4", scores={"n": 4, "chosen_seed": 12})
    at = app(job=job.id)
    assert any(
        c.value.startswith("Seed 12 (kept of best-of 4 from seed 10)") for c in at.caption
    ), [c.value for c in at.caption]


@needs_streamlit
def test_best_of_is_offered_only_with_a_scorer(home, monkeypatch):
    monkeypatch.setenv("STUDIO_SCORER", "none")
    at = app()
    assert not [n for n in at.number_input if n.label == "Best of N"]
    monkeypatch.setenv("STUDIO_SCORER", "clip:/nowhere")  # read when the studio starts
    monkeypatch.setenv("STUDIO_HOME", str(home.parent / "home2"))
    at = app()
    assert [n for n in at.number_input if n.label == "Best of N"]


def test_pages_use_no_removed_streamlit_argument():
    """``use_container_width`` is past its removal date: ``width="stretch"`` replaces it."""
    for page in (ROOT / "studio" / "ui").rglob("*.py"):
        assert "use_container_width" not in page.read_text(), page


# ---------------------------------------------------------------------------- no streamlit
def test_ui_logic_modules_do_not_import_streamlit():
    code = (
        "import sys; "
        "import studio.ui.vocabulary, studio.ui.progress, studio.ui.state, studio.ui.warm; "
        "assert 'streamlit' not in sys.modules, 'streamlit imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_vocabulary_is_the_renderers():
    from studio.ui import vocabulary
    from world import shapes_world as sw

    chips = vocabulary.chips()
    assert [c.value for c in chips["colour"]] == list(sw.OBJECT_COLORS)
    assert [c.value for c in chips["shape"]] == list(sw.SHAPES)
    assert [c.value for c in chips["background"]] == list(sw.BACKGROUNDS)
    assert [c.phrase for c in chips["motion"]] == [sw.MOTION_PHRASES[m][0] for m in sw.MOTIONS]
    assert set(vocabulary.synonyms("size")) == {w for ws in sw.SIZE_WORDS.values() for w in ws}
    for example in vocabulary.examples():  # captions the renderer writes: nothing to warn of
        assert vocabulary.warning(example) is None, example
    assert {"slides", "backdrop", "picture", "rises", "ascends"} <= sw.caption_words()


def test_caption_words_cover_every_caption_the_renderer_writes():
    import numpy as np

    from world import shapes_world as sw

    rng = np.random.default_rng(0)
    words = sw.caption_words()
    for i in range(300):
        obj = sw.ObjectSpec(
            sw.SHAPES[i % 3],
            list(sw.OBJECT_COLORS)[i % 6],
            sw.SIZES[i % 2],
            sw.MOTIONS[i % 5],
            0,
            0,
        )
        spec = sw.ClipSpec([obj, obj], list(sw.BACKGROUNDS)[i % 4])
        text = sw.caption(spec, rng, image=i % 7 == 0, wordnet_prob=0.5)
        assert set(text.lower().split()) <= words, text


def test_chips_insert_words_where_the_grammar_puts_them():
    from studio.ui.vocabulary import chips, insert

    chip = {(c.slot, c.value): c for cs in chips().values() for c in cs}
    prompt = ""
    for key in [("shape", "circle"), ("colour", "red"), ("size", "small"), ("background", "black")]:
        prompt = insert(prompt, chip[key])
    assert prompt == "a small red circle on a black background"
    prompt = insert(prompt, chip[("motion", "left")])
    assert prompt == "a small red circle moving left on a black background"
    # a second chip of a slot replaces the first; articles follow the word
    prompt = insert(prompt, chip[("colour", "orange")])
    prompt = insert(prompt, chip[("size", "large")])
    prompt = insert(prompt, chip[("motion", "up")])
    prompt = insert(prompt, chip[("background", "gray")])
    assert prompt == "a large orange circle moving up on a gray background"
    assert insert("", chip[("colour", "orange")]) == "an orange"
    assert (
        insert("a tiny blue square rises", chip[("size", "large")]) == "a large blue square rises"
    )
    assert insert("<ref1> heads left", chip[("background", "white")]) == (
        "<ref1> heads left on a white background"
    )


def test_unknown_words_and_unseen_pairs_are_named():
    from studio.ui.vocabulary import unknown_words, unseen_pairs, warning

    assert unknown_words("A Red hexagon zooms left, <ref1> twice 3x") == [
        "hexagon",
        "zooms",
        "twice",
        "x",
    ]
    assert unknown_words(PROMPT) == []
    assert unseen_pairs("a big blue circle and an orange triangle") == [
        "blue circle",
        "orange triangle",
    ]
    assert warning(PROMPT) is None
    assert "purple" in warning("a purple square moving up on a black background")


def test_progress_names_the_stage_and_the_time_left():
    from studio.ui.progress import job_progress, plan, stage_caption

    now = 1000.0

    def job(stage, done=0, total=0, **request):
        return Job(
            id="j",
            kind="generate",
            status="running",
            prompt=PROMPT,
            seed=0,
            request={"frames": 16, **request},
            created=now - 30,
            started=now - 20,
            done_steps=done,
            total_steps=total,
            stage=stage,
        )

    p = job_progress(job({}), now)
    assert p.text == "Loading the model… 20 s so far" and p.fraction == 0
    assert plan(job({}), model_image_first=True) == ["loading", "first_frame", "clip", "encoding"]
    assert plan(job({}, image_first=False), model_image_first=True) == [
        "loading",
        "clip",
        "encoding",
    ]
    # the worker had the model loaded before the job began: no loading stage to show
    warm = job({"name": "clip", "since": now, "base": 0, "warm": True}, 1, 10)
    assert plan(warm) == ["clip", "encoding"]
    assert stage_caption(job_progress(warm, now)).startswith("**▶ generating the clip**")
    p = job_progress(job({"name": "first_frame", "since": now - 2, "first_frame": True}), now)
    assert p.text == "Drawing the first frame… 2 s so far"
    assert [s for _, s in p.stages] == ["done", "now", "next", "next"]
    # 4 steps in 8 s since the clip began after step 1: 2 s a step, 5 steps left
    p = job_progress(
        job({"name": "clip", "since": now - 8, "base": 1, "first_frame": True}, 5, 10), now
    )
    assert p.text == "Generating the clip: step 5 of 10 · about 10 s left" and p.fraction == 0.5
    p = job_progress(job({"name": "clip", "since": now, "base": 1}, 1, 10), now)
    assert p.text == "Generating the clip: step 1 of 10 · estimating the time"
    best = {"name": "clip", "since": now - 10, "base": 0, "candidate": 2, "candidates": 3}
    p = job_progress(job(best, 5, 10, best_of=3), now)  # 2 s a step: 5 + 10 steps left
    assert p.text == "Candidate 2 of 3 · Generating the clip: step 5 of 10 · about 30 s left"
    assert p.fraction == pytest.approx(0.5)
    p = job_progress(job({"name": "encoding", "since": now - 1}, 10, 10), now)
    assert p.text == "Encoding the video… 1 s so far" and p.fraction == 1.0
    film = job({"name": "windows", "since": now - 30, "base": 0}, 3, 5)
    film.kind = "storyboard"
    p = job_progress(film, now)
    assert p.text == "Generating the film: window 3 of 5 · about 20 s left"
    # window 3 ended 6 s ago, 24 s after the first began (8 s a window): the 2 windows left
    # take 16 s from then, and the estimate falls as window 4 is drawn instead of growing
    film.stage["unit_at"] = now - 6
    for later, left in ((0, 10), (4, 6), (8, 2)):
        p = job_progress(film, now + later)
        assert p.text == f"Generating the film: window 3 of 5 · about {left} s left"
    # before the worker has said anything: no loading stage when the model is loaded
    assert plan(job({}), loaded=True) == ["clip", "encoding"]
    assert job_progress(job({}), now, loaded=True).text == "Generating the clip… 20 s so far"


def test_the_worker_records_each_stage(tmp_path, tiny_pipeline_dir, monkeypatch):
    from studio import jobs

    class Recording(Gallery):
        stages: list[str] = []
        counts: list[tuple[int, int, int]] = []  # (candidate, done, total) as recorded

        def set_stage(self, job_id, stage):
            if not self.stages or stage.get("since") != self.since:  # a new stage
                self.stages.append(stage["name"])
            self.since = stage.get("since")
            self.candidate = stage.get("candidate", 1)
            super().set_stage(job_id, stage)

        def set_progress(self, job_id, done, total):
            self.counts.append((getattr(self, "candidate", 1), done, total))
            return super().set_progress(job_id, done, total)

    monkeypatch.setattr(jobs, "_LOADS", {})  # as in a new process: the model not loaded yet
    gallery = Recording(tmp_path / "home")
    request = GenerateRequest(prompt=PROMPT, steps=2, frames=4, image_first=True)
    submit_generate(gallery, request, model=tiny_pipeline_dir)
    job = run_job(gallery, gallery.claim_next(), tiny_pipeline_dir)
    assert job.status == "done"
    assert gallery.stages == ["loading", "first_frame", "clip", "encoding"]
    gallery.stages.clear()

    class Scorer:  # best-of without a real scorer: every candidate scores the same
        spec = "flat"

        def score(self, clip, prompt):
            return SimpleNamespace(score=0.5)

    monkeypatch.setitem(jobs._SCORERS, "flat", Scorer())
    request = GenerateRequest(prompt=PROMPT, steps=2, frames=4, image_first=False)
    submit_generate(gallery, request, 2, "flat", model=tiny_pipeline_dir)
    assert run_job(gallery, gallery.claim_next(), tiny_pipeline_dir).status == "done"
    # two candidates; the model is loaded already, so no loading stage
    assert gallery.stages == ["clip", "clip", "encoding"]
    # the count goes back to 0 before the second candidate begins, not after its first step
    assert gallery.counts[-5:] == [(1, 1, 2), (1, 2, 2), (1, 0, 2), (2, 1, 2), (2, 2, 2)]


def test_page_state_helpers(tmp_path):
    from studio.ui.state import (
        apply_edits,
        clean_scenes,
        frames_problem,
        generate_settings,
        move_scene,
    )

    rows = [{"prompt": "a", "frames": 16}, {"prompt": "b", "frames": 8}]
    assert move_scene(rows, 0, 1) == ([rows[1], rows[0]], 1)
    assert move_scene(rows, 1, 1) == (rows, 1)
    assert clean_scenes(
        [{"prompt": None, "frames": float("nan")}, {"prompt": "c", "frames": 4.0}]
    ) == [
        {"prompt": "", "frames": 16},
        {"prompt": "c", "frames": 4},
    ]
    edits = {"edited_rows": {"1": {"frames": 4}}, "deleted_rows": [0], "added_rows": [{}]}
    assert apply_edits(rows, edits) == [{"prompt": "b", "frames": 4}, {"prompt": "", "frames": 16}]
    assert frames_problem(16) is None
    assert "at most 64 frames (8 s at 8 fps)" in frames_problem(100000)
    from studio.ui.state import read_draft, save_draft

    draft = tmp_path / "draft.json"
    assert read_draft(draft) is None
    save_draft(draft, rows)
    assert read_draft(draft) == rows
    for bad in (
        "{not json",
        '{"prompt": "a"}',
        "[]",
        "[1, 2]",
        '[{"prompt": "a", "frames": 1e400}]',  # inf: int() of it would crash the page
        '[{"prompt": "a", "frames": "16"}]',
        '[{"prompt": "a", "frames": true}]',
        '[{"prompt": 3, "frames": 16}]',
    ):
        draft.write_text(bad)
        assert read_draft(draft) is None, bad
    settings = generate_settings(done_job(Gallery(tmp_path), seed=7))
    assert settings["draft"] == PROMPT and settings["seed"] == 7 and settings["seed_locked"]
    assert (settings["lora_path"], settings["lora_scale"]) == ("", 1.0)


def test_lora_fields_round_trip_and_labels():
    from studio.ui.state import lora_label, lora_spec, split_lora

    assert lora_spec("  ", 0.5) is None
    assert lora_spec("runs/a/lora", 1.0) == "runs/a/lora"
    assert lora_spec("runs/a/lora", 0.25) == "runs/a/lora:0.25"
    assert lora_spec("runs/a/lora", 0.1 + 0.2) == "runs/a/lora:0.3"
    assert split_lora("runs/a/lora:0.25") == ("runs/a/lora", 0.25)
    assert split_lora("C:/runs/lora") == ("C:/runs/lora", 1.0), "a colon in the path"
    assert split_lora(None) == ("", 1.0)
    assert lora_label("/x/runs/style/lora:0.8") == "LoRA style/lora ×0.8"
    assert lora_label("/x/runs/style/lora") == "LoRA style/lora"
    assert lora_label(None) is None


def test_check_lora_makes_the_path_absolute_and_keeps_the_scale(tmp_path, monkeypatch):
    from studio.errors import StudioError
    from studio.jobs import check_lora

    folder = tmp_path / "run" / "lora"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StudioError, match="no LoRA adapter in"):
        check_lora("run/lora")
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"")
    assert check_lora("run/lora") == str(folder)
    assert check_lora("run/lora:0.5") == f"{folder}:0.5"
    assert check_lora("") is None and check_lora(None) is None
    with pytest.raises(StudioError, match="LoRA scale"):
        check_lora("run/lora:11")


def test_the_model_line_says_loading_ready_or_why_not():
    from studio.jobs import ModelStatus
    from studio.ui.warm import model_line

    now = 100.0
    loading = ModelStatus("loading", "m", since=now - 3)
    assert model_line(loading, now, "the shipped model") == (
        "Loading model… (the shipped model) 3 s so far"
    )
    ready = ModelStatus("ready", "m", since=now - 3, ready_at=now - 1, load_s=2.0)
    assert model_line(ready, now, "the shipped model") == (
        "Model ready (the shipped model, loaded in 2 s)"
    )
    failed = ModelStatus("failed", "m", error="no model at /x")
    assert model_line(failed, now, "/x").endswith(": no model at /x")
