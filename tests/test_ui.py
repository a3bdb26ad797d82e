"""Every page of the Streamlit studio under ``streamlit.testing`` AppTest, on the tiny pipeline.

The studio's worker thread runs in the test process, as it does in a server, so a job a page
submits really runs; the tests wait for it through the store.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from studio.gallery import Gallery  # noqa: E402
from studio.uploads import store_element  # noqa: E402

APP = str(Path(__file__).parents[1] / "studio" / "ui" / "app.py")
PROMPT = "a red circle moving left on a black background"


@pytest.fixture
def home(tmp_path, monkeypatch, tiny_pipeline_dir):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STUDIO_MODEL", str(tiny_pipeline_dir))
    return tmp_path / "home"


def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def wait_done(home: Path, job_id: str, timeout: float = 120) -> None:
    gallery = Gallery(home)
    deadline = time.time() + timeout
    while gallery.get(job_id).active:
        assert time.time() < deadline, "job did not finish"
        time.sleep(0.1)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_generate_page_runs_a_job_and_shows_the_video(home):
    at = app()
    at.text_area[0].input(PROMPT)
    at.slider[0].set_value(2)  # steps
    at.number_input(key="seed").set_value(5)
    at.radio[0].set_value("image first")
    button(at, "Generate").click().run()
    assert not at.exception and not at.error
    job_id = (
        at.query_params["job"][0]
        if isinstance(at.query_params["job"], list)
        else at.query_params["job"]
    )
    wait_done(home, job_id)
    at.run()
    job = Gallery(home).get(job_id)
    assert job.status == "done" and job.request["prompt"] == PROMPT and job.seed == 5
    assert job.request["image_first"] is True
    assert at.get("video"), "the finished video is shown"
    fresh = AppTest.from_file(APP, default_timeout=120)  # a refresh: new session, same URL
    fresh.query_params["job"] = job_id
    fresh.run()
    assert fresh.text_area[0].value == PROMPT and fresh.get("video")
    assert [b.label for b in at.get("download_button")] == ["Download MP4", "Download sidecar"]


def test_generate_page_explains_an_empty_prompt(home):
    at = app()
    button(at, "Generate").click().run()
    assert not at.exception
    assert "prompt is empty" in at.error[0].value
    assert Gallery(home).search(status=None) == []


def test_seed_can_be_randomised(home):
    at = app()
    seeds = set()
    for _ in range(3):
        button(at, "Random").click().run()
        seeds.add(at.number_input(key="seed").value)
    assert len(seeds) > 1


def test_storyboard_page_renders_the_film_and_reorders_scenes(home):
    at = app("storyboard")
    first = at.selectbox[0].options[0]
    assert "moving right" in first
    button(at, "↓").click().run()  # scene 1 moves after scene 2
    assert "moving up" in at.selectbox[0].options[0]
    at.slider[0].set_value(2)
    at.radio[0].set_value("with the clip")
    at.number_input(key="candidates").set_value(2)
    button(at, "Render film").click().run()
    assert not at.exception and not at.error
    jobs = Gallery(home).search(status=None)
    assert [j.kind for j in jobs] == ["storyboard"]
    assert jobs[0].request["options"]["image_first"] is False
    assert jobs[0].request["options"]["candidates"] == 2
    assert [s["prompt"] for s in jobs[0].request["story"]["scenes"]][0].endswith(
        "moving up on a black background"
    )
    wait_done(home, jobs[0].id)
    at.run()
    assert Gallery(home).get(jobs[0].id).status == "done"
    assert at.get("video")


def test_storyboard_scene_preview_queues_one_clip(home):
    at = app("storyboard")
    button(at, "Preview scene").click().run()
    jobs = Gallery(home).search(status=None)
    assert [(j.kind, j.request["frames"]) for j in jobs] == [("generate", 16)]


def test_elements_page_inserts_placeholders_into_the_prompt(home):
    at = app("elements")
    assert "No elements yet." in at.info[0].value
    from PIL import Image

    name = store_element(Image.new("RGB", (8, 8), (200, 0, 0)), Gallery(home).home / "elements")
    at.session_state["elements"] = [name]
    at.run()
    button(at, "Insert <ref1>").click().run()
    assert at.session_state["draft"] == "<ref1>"
    at.switch_page("pages/generate.py").run()
    assert at.text_area[0].value == "<ref1>"
    button(at, "Generate").click().run()  # the tiny model has no reference conditioning
    assert "reference element" in at.error[0].value


def test_gallery_lists_searches_reruns_and_deletes(home):
    from studio.generate import GenerateRequest
    from studio.jobs import submit_generate

    at = app("gallery")  # starts the studio's worker
    assert "Nothing here yet" in at.info[0].value
    gallery = Gallery(home)
    job = submit_generate(gallery, GenerateRequest(prompt=PROMPT, steps=2, frames=4))
    other = submit_generate(gallery, GenerateRequest(prompt="a green square", steps=2, frames=4))
    wait_done(home, job.id)
    wait_done(home, other.id)
    at.run()
    assert len(at.get("expander")) == 2
    at.text_input[0].input("RED CIRCLE").run()
    assert [m.value for m in at.markdown if m.value.startswith("**")] == [f"**{PROMPT}**"]
    button(at, "Re-run").click().run()
    assert not at.exception
    assert len(gallery.search(status=None)) == 3
    at = app("gallery")
    button(at, "Delete").click().run()
    assert len(gallery.search(status=None)) == 2


def test_best_of_is_offered_only_with_a_scorer(home, monkeypatch):
    monkeypatch.setenv("STUDIO_SCORER", "none")
    at = app()
    assert not [n for n in at.number_input if n.label == "Best of N"]
    monkeypatch.setenv("STUDIO_SCORER", "clip:/nowhere")  # read when the studio starts
    monkeypatch.setenv("STUDIO_HOME", str(home.parent / "home2"))
    at = app()
    assert [n for n in at.number_input if n.label == "Best of N"]
