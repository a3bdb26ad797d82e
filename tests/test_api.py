"""The HTTP API (``studio serve``) against a real uvicorn server on loopback, tiny pipeline,
temp studio home: the same queue and gallery as the UI (tests/test_jobs.py's store).

Servers run in a thread of the test process, as ``studio serve`` runs them (same
``server_config``); one test starts the real command in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
import uvicorn  # noqa: E402

from pipelines.video_io import read_video  # noqa: E402
from studio.api import create_app, server_config  # noqa: E402
from studio.gallery import Gallery  # noqa: E402
from studio.generate import GenerateRequest  # noqa: E402
from studio.jobs import MAX_QUEUED, Worker, submit_generate  # noqa: E402
from tests.conftest import free_port  # noqa: E402

PROMPT = "a red circle moving left on a black background"
SMALL = {"prompt": PROMPT, "steps": 2, "frames": 4}  # a job the tiny model runs in a second


@dataclass
class Api:
    url: str
    client: httpx.Client
    gallery: Gallery

    def submit(self, **kw) -> httpx.Response:
        return self.client.post("/jobs/generate", json={**SMALL, **kw})

    def wait(self, job_id: str, timeout: float = 180) -> dict:
        deadline = time.time() + timeout
        while True:
            job = self.client.get(f"/jobs/{job_id}").json()
            if job["status"] not in ("queued", "running"):
                return job
            assert time.time() < deadline, f"job did not finish: {job}"
            time.sleep(0.1)

    def all_jobs(self) -> list:
        return self.gallery.search(status=None, limit=10_000)


@pytest.fixture
def serve(tmp_path, tiny_pipeline_dir):
    """start(**create_app kwargs) → an Api on a fresh server over ``tmp_path/home``."""
    started = []

    def start(**kw) -> Api:
        kw = {"scorer": None, "poll_s": 0.05, **kw}
        app = create_app(tmp_path / "home", tiny_pipeline_dir, **kw)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(server_config(app, "127.0.0.1", port, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.time() + 30
        while not server.started:
            assert thread.is_alive() and time.time() < deadline, "the server did not start"
            time.sleep(0.02)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        started.append((server, thread, client, sock))
        return Api(str(client.base_url), client, Gallery(tmp_path / "home"))

    yield start
    for server, thread, client, sock in started:
        client.close()
        server.should_exit = True
        thread.join(60)
        sock.close()


# ---------------------------------------------------------------------------- jobs
def test_the_server_loads_its_model_as_it_starts_and_jobs_take_a_lora(serve, lora_adapter):
    """/health says the model is loading, then ready, with no job asked; a clip and a film
    with a LoRA adapter run with it and record it."""
    api = serve(lora_roots=[lora_adapter.parent])  # adapters are read only from these
    deadline = time.time() + 120
    while (worker := api.client.get("/health").json()["worker"])["model"] != "ready":
        assert worker["model"] == "loading" and time.time() < deadline, worker
        time.sleep(0.05)
    assert worker["model_error"] is None and api.all_jobs() == []
    spec = f"{lora_adapter}:0.5"
    clip = api.wait(api.submit(lora=spec).json()["id"])
    assert clip["status"] == "done", clip["error"]
    sidecar = json.loads(api.client.get(f"/jobs/{clip['id']}/sidecar").content)
    assert sidecar["lora"] == spec
    film = api.client.post(
        "/jobs/storyboard",
        json={"scenes": [{"prompt": PROMPT, "frames": 4}], "steps": 2, "lora": spec},
    )
    assert film.status_code == 202, film.text
    assert api.wait(film.json()["id"])["status"] == "done"
    # a missing adapter is refused at the door
    r = api.submit(lora=str(lora_adapter) + "-missing")
    assert r.status_code == 422 and "no LoRA adapter" in r.json()["detail"]


def test_generate_runs_and_downloads_video_sidecar_and_thumbnail(serve, tmp_path):
    api = serve()
    r = api.submit(seed=3)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == job["links"]["self"] == f"/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and job["request"]["seed"] == 3
    job = api.wait(job["id"])
    assert job["status"] == "done", job["error"]
    assert job["progress"] == {"done": 2, "total": 2, "fraction": 1.0, "unit": "steps"}
    assert job["queue_position"] is None and "cancel" not in job["links"]

    video = api.client.get(job["links"]["video"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert f'filename="{job["id"]}.mp4"' in video.headers["content-disposition"]
    (tmp_path / "got.mp4").write_bytes(video.content)
    frames, _ = read_video(tmp_path / "got.mp4")
    assert frames.shape == (4, 64, 64, 3)
    sidecar = api.client.get(job["links"]["sidecar"]).json()
    assert sidecar["job"] == job["id"] and sidecar["seed"] == 3 and sidecar["prompt"] == PROMPT
    thumb = api.client.get(job["links"]["thumbnail"])
    assert thumb.headers["content-type"] == "image/png" and thumb.content[:4] == b"\x89PNG"
    # the UI's store holds it, with the files the API served
    stored = api.gallery.get(job["id"])
    assert stored.status == "done"
    assert api.gallery.path("videos", stored.video).read_bytes() == video.content


def test_storyboard_runs_and_reports_windows(serve, tmp_path):
    api = serve()
    body = {
        "scenes": [{"prompt": PROMPT, "frames": 3}, {"prompt": "a blue square", "frames": 3}],
        "steps": 2,
        "candidates": 1,
        "image_first": False,
    }
    r = api.client.post("/jobs/storyboard", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "storyboard" and r.json()["progress"]["unit"] == "windows"
    job = api.wait(r.json()["id"])
    assert job["status"] == "done", job["error"]
    assert job["prompt"] == f"{PROMPT} | a blue square"
    assert job["request"]["options"]["candidates"] == 1
    assert job["progress"]["done"] == job["progress"]["total"] > 0
    (tmp_path / "film.mp4").write_bytes(api.client.get(job["links"]["video"]).content)
    assert read_video(tmp_path / "film.mp4")[0].shape[0] == 6


def test_ui_and_api_share_one_queue_and_gallery(serve):
    api = serve(start_worker=False)  # the UI's worker runs the jobs below
    from_ui = submit_generate(api.gallery, GenerateRequest(**SMALL, seed=1))  # as the page does
    from_api = api.submit(prompt="a green square moving up", seed=2).json()
    assert api.client.get(f"/jobs/{from_ui.id}").json()["queue_position"] == 1
    assert from_api["queue_position"] == 2
    assert api.gallery.queue_position(from_api["id"]) == 2

    page = api.client.get("/jobs", params={"limit": 1}).json()
    assert [j["id"] for j in page["jobs"]] == [from_api["id"]]  # newest first
    assert page["next_offset"] == 1
    page = api.client.get("/jobs", params={"limit": 1, "offset": 1}).json()
    assert [j["id"] for j in page["jobs"]] == [from_ui.id]
    assert page["next_offset"] is None  # the list ends exactly here: no empty page after it
    found = api.client.get("/jobs", params={"q": "GREEN", "status": "queued"}).json()["jobs"]
    assert [j["id"] for j in found] == [from_api["id"]]
    assert api.client.get("/jobs", params={"kind": "storyboard"}).json()["jobs"] == []

    health = api.client.get("/health").json()
    assert health["worker"] is None and health["queued"] == 2


def test_jobs_queued_by_the_api_run_on_a_ui_worker(serve, tiny_pipeline_dir):
    api = serve(start_worker=False)
    job = api.submit(seed=5).json()
    assert Worker(Gallery(api.gallery.home), model=tiny_pipeline_dir).run_pending() == 1
    done = api.client.get(f"/jobs/{job['id']}").json()
    assert done["status"] == "done" and done["links"]["video"] == f"/jobs/{job['id']}/video"
    assert [j["id"] for j in api.client.get("/jobs", params={"status": "done"}).json()["jobs"]] == [
        job["id"]
    ]


def test_cancel_queued_running_and_finished_jobs(serve, tiny_pipeline_dir):
    api = serve(start_worker=False)
    queued = api.submit(seed=1).json()
    r = api.client.post(f"/jobs/{queued['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    again = api.client.post(f"/jobs/{queued['id']}/cancel")
    assert again.status_code == 409
    assert again.json() == {"detail": f"job {queued['id']} is already cancelled: nothing to cancel"}

    running = api.submit(seed=2).json()
    assert api.gallery.claim_next().id == running["id"]  # a worker took it...
    r = api.client.post(f"/jobs/{running['id']}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    # ...and died: the next worker settles it as cancelled, runs nothing
    assert Worker(api.gallery, model=tiny_pipeline_dir).run_pending() == 0
    assert api.client.get(f"/jobs/{running['id']}").json()["status"] == "cancelled"

    done = api.submit(seed=3).json()
    assert Worker(api.gallery, model=tiny_pipeline_dir).run_pending() == 1
    r = api.client.post(f"/jobs/{done['id']}/cancel")
    assert r.status_code == 409 and "already done" in r.json()["detail"]
    assert api.gallery.get(done["id"]).status == "done" and not api.gallery.get(done["id"]).cancel
    assert [j.status for j in api.all_jobs()] == ["done", "cancelled", "cancelled"]


def test_rerun_and_delete(serve, tiny_pipeline_dir):
    api = serve(start_worker=False)
    job = api.submit(seed=7, guidance=2.5).json()
    r = api.client.delete(f"/jobs/{job['id']}")
    assert r.status_code == 409 and "cancel it before deleting" in r.json()["detail"]
    r = api.client.get(f"/jobs/{job['id']}/video")
    assert (
        r.status_code == 409 and r.json()["detail"] == f"job {job['id']} is queued: it has no video"
    )
    assert Worker(api.gallery, model=tiny_pipeline_dir).run_pending() == 1

    again = api.client.post(f"/jobs/{job['id']}/rerun")
    assert again.status_code == 202
    assert again.json()["id"] != job["id"] and again.json()["request"] == job["request"]
    stored = api.gallery.get(job["id"])
    files = [api.gallery.path("videos", stored.video), api.gallery.path("thumbs", stored.thumbnail)]
    assert all(f.is_file() for f in files)
    r = api.client.delete(f"/jobs/{job['id']}")
    assert r.status_code == 204 and not r.content
    assert not any(f.exists() for f in files)
    assert api.client.get(f"/jobs/{job['id']}").status_code == 404
    assert [j.id for j in api.all_jobs()] == [again.json()["id"]]


# ---------------------------------------------------------------------------- bad input
MISSING = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", f"/jobs/{MISSING}"),
        ("POST", f"/jobs/{MISSING}/cancel"),
        ("POST", f"/jobs/{MISSING}/rerun"),
        ("DELETE", f"/jobs/{MISSING}"),
        ("GET", f"/jobs/{MISSING}/video"),
        ("GET", f"/jobs/{MISSING}/sidecar"),
        ("GET", f"/jobs/{MISSING}/thumbnail"),
        ("GET", "/jobs/'; DROP TABLE jobs; --"),
    ],
)
def test_a_job_that_does_not_exist_is_404(serve, method, path):
    api = serve(start_worker=False)
    kept = api.submit().json()
    r = api.client.request(method, path)
    assert r.status_code == 404
    assert r.json()["detail"].startswith("no job ") and "in this studio" in r.json()["detail"]
    assert [j.id for j in api.all_jobs()] == [kept["id"]]  # the store is as it was


def generate(**kw):
    return ("/jobs/generate", {**SMALL, **kw})


def storyboard(scenes=None, **kw):
    scenes = [{"prompt": PROMPT, "frames": 4}] if scenes is None else scenes
    return ("/jobs/storyboard", {"scenes": scenes, **kw})


@pytest.mark.parametrize(
    "request_, pattern",
    [
        # unknown fields
        (generate(sed=3), "^sed: Extra inputs are not permitted$"),
        (generate(height=1024), "^height: Extra inputs are not permitted$"),
        (storyboard(window=10_000), "^window: Extra inputs are not permitted$"),
        (storyboard([{"prompt": "a", "frames": 4, "seconds": 2}]), "scenes.0.seconds: Extra"),
        # wrong types
        (generate(frames="16"), "^frames: Input should be a valid integer$"),
        (generate(seed=1.5), "^seed: Input should be a valid integer"),
        (generate(steps=True), "^steps: Input should be a valid integer"),
        (generate(prompt=5), "^prompt: Input should be a valid string$"),
        (generate(image_first="yes"), "^image_first: Input should be a valid boolean$"),
        (generate(guidance="high"), "^guidance: Input should be a valid number"),
        (storyboard([{"prompt": "a", "frames": "many"}]), "scenes.0.frames: Input should be"),
        (storyboard("a red circle"), "^scenes: Input should be a valid list"),
        (("/jobs/generate", [PROMPT]), "^body: Input should be a valid dictionary"),
        (("/jobs/generate", {"steps": 2}), "^prompt: Field required$"),
        # what no model can run: studio.jobs' own checks and messages
        (generate(prompt="x" * 1001), "^the prompt is 1001 characters; at most 1000$"),
        (generate(prompt="   "), "prompt is empty"),
        (generate(frames=0), "^frames must be between 1 and 64, got 0$"),
        (generate(frames=65), "^frames must be between 1 and 64, got 65$"),
        (generate(steps=0), "steps must be between 1 and 1000"),
        (generate(guidance=51.0), "guidance must be between 0.0 and 50.0"),
        (generate(fps=0), "fps must be a whole number from 1 to 120"),
        (generate(seed=-1), "seed must be a whole number from 0 to 2\\*\\*63-1"),
        (generate(seed=2**64), "seed must be a whole number"),
        (generate(best_of=2), "best-of needs a scorer"),
        (generate(prompt="<ref1> moving left"), "reference element"),
        (storyboard([]), "the storyboard is empty"),
        (storyboard([{"prompt": " ", "frames": 4}]), "scene 1 has no prompt"),
        (storyboard([{"prompt": "a", "frames": 65}]), "scene 1 frames must be between 1 and 64"),
        (storyboard([{"prompt": "a", "frames": 64}] * 5), "the film is 320 frames; at most 256"),
        (storyboard([{"prompt": "a", "frames": 64}] * 65), "the film is 4160 frames; at most 256"),
        (
            storyboard(candidates=5),
            r"candidates \(draws per later window\) must be between 1 and 4",
        ),
        (storyboard(seed=-1), "^seed must be a whole number from 0 to 2\\*\\*63-1, got -1$"),
        (storyboard(seed=2**63), "^seed must be a whole number"),
        (storyboard([{"prompt": "x" * 1001, "frames": 4}]), "^scene 1: the prompt is 1001 char"),
        (storyboard([{"prompt": "<ref1> moving left", "frames": 4}]), "scene 1: .*<refN>"),
        (generate(negative_prompt="x" * 1001), "^the negative prompt is 1001 characters"),
        # a client may not make the server open files anywhere (nor learn whether they exist)
        (generate(lora="/etc/passwd"), "reads LoRA adapters only from the folders it allows"),
        (generate(lora="../../../../../etc/passwd"), "reads LoRA adapters only from"),
        (generate(lora="/nonexistent/x:0.5"), "reads LoRA adapters only from"),
        (storyboard(lora="/etc"), "reads LoRA adapters only from"),
        (generate(lora="a" * 5000), "^lora is 5000 characters"),
    ],
)
def test_bad_requests_are_refused_with_a_message_and_queue_nothing(serve, request_, pattern):
    import re

    api = serve(start_worker=False)
    kept = api.submit().json()
    path, body = request_
    r = api.client.post(path, json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and re.search(pattern, detail), detail
    assert [j.id for j in api.all_jobs()] == [kept["id"]]
    assert api.gallery.queue_position(kept["id"]) == 1


@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "lora"])
def test_text_utf8_cannot_encode_is_422_and_the_history_stays_readable(serve, field):
    api = serve(start_worker=False)
    body = json.dumps({**SMALL, field: "a SURROGATE circle"}).replace("SURROGATE", r"\udfff")
    r = api.client.post(
        "/jobs/generate", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "not valid text" in r.json()["detail"], r.text
    assert api.all_jobs() == [] and api.client.get("/jobs").status_code == 200
    scene = r'{"scenes": [{"prompt": "a \udfff", "frames": 2}]}'
    r = api.client.post(
        "/jobs/storyboard", content=scene, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "scene 1 prompt is not valid text" in r.json()["detail"]
    assert api.all_jobs() == []


def test_not_json_and_bad_queries_are_422(serve):
    api = serve(start_worker=False)
    r = api.client.post(
        "/jobs/generate", content=b"prompt=hi", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "JSON decode error" in r.json()["detail"]
    r = api.client.post("/jobs/generate", content=json.dumps(SMALL))  # no Content-Type
    assert r.status_code == 422 and "Content-Type: application/json" in r.json()["detail"]
    for params, pattern in (
        ({"status": "finished"}, "status: Input should be 'queued'"),
        ({"kind": "film"}, "kind: Input should be 'generate' or 'storyboard'"),
        ({"limit": 0}, "limit: Input should be greater than or equal to 1"),
        ({"limit": 101}, "limit: Input should be less than or equal to 100"),
        ({"offset": -1}, "offset: Input should be greater than or equal to 0"),
        ({"limit": "all"}, "limit: Input should be a valid integer"),
        ({"stauts": "done"}, "unknown query parameter stauts"),
        ([("status", "done"), ("status", "failed")], "given more than once: status"),
    ):
        r = api.client.get("/jobs", params=params)
        assert r.status_code == 422 and pattern in r.json()["detail"], r.text
    assert api.all_jobs() == []


def test_an_oversized_or_chunked_body_is_refused_before_it_is_read(serve):
    api = serve(start_worker=False)
    huge = {**SMALL, "prompt": "x" * (2 * 1024 * 1024)}
    r = api.client.post("/jobs/generate", json=huge)
    assert r.status_code == 413 and "over 1048576 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the length is not known before it is all read
        yield json.dumps(SMALL).encode()

    r = api.client.post(
        "/jobs/generate", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 411 and "Content-Length" in r.json()["detail"]
    assert api.all_jobs() == [] and api.client.get("/health").status_code == 200


def test_a_burst_of_200_fills_the_queue_to_its_limit_and_the_rest_get_429(serve):
    api = serve(start_worker=False)  # nothing runs: the queue only fills
    assert MAX_QUEUED == 100

    def submit_many(seeds: range) -> list[httpx.Response]:
        with httpx.Client(base_url=api.url, timeout=120) as client:
            return [client.post("/jobs/generate", json={**SMALL, "seed": s}) for s in seeds]

    with ThreadPoolExecutor(20) as pool:
        parts = pool.map(submit_many, [range(i, 200, 20) for i in range(20)])
    responses = [r for part in parts for r in part]
    codes = [r.status_code for r in responses]
    assert sorted(set(codes)) == [202, 429] and codes.count(202) == MAX_QUEUED, codes
    for r in responses:
        if r.status_code == 429:
            assert r.headers["retry-after"] == "10"
            assert r.json() == {
                "detail": "the queue is full: 100 jobs are waiting and at most 100 may; "
                "try again when some have run, or cancel some"
            }
    accepted = {r.json()["id"] for r in responses if r.status_code == 202}

    # the store holds exactly the accepted jobs, each once, in one consistent queue
    jobs = api.all_jobs()
    assert {j.id for j in jobs} == accepted and len(jobs) == MAX_QUEUED
    assert {j.status for j in jobs} == {"queued"}
    positions = sorted(api.gallery.queue_position(j.id) for j in jobs)
    assert positions == list(range(1, MAX_QUEUED + 1))
    # the server still answers, reads and writes
    assert api.client.get("/health").json()["queued"] == MAX_QUEUED
    assert len(api.client.get("/jobs", params={"limit": 100}).json()["jobs"]) == MAX_QUEUED
    assert api.submit().status_code == 429
    oldest = min(jobs, key=lambda j: (j.created, j.id))
    assert api.client.post(f"/jobs/{oldest.id}/cancel").json()["status"] == "cancelled"
    assert api.submit().status_code == 202  # a freed place is taken again
    assert api.submit().status_code == 429


# ---------------------------------------------------------------------------- docs, CLI
def test_openapi_docs(serve):
    api = serve(start_worker=False)
    docs = api.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = api.client.get("/openapi.json").json()
    assert set(spec["paths"]) >= {
        "/jobs/generate",
        "/jobs/storyboard",
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/video",
        "/jobs/{job_id}/sidecar",
    }
    generate_in = spec["components"]["schemas"]["GenerateIn"]
    assert generate_in["additionalProperties"] is False
    assert "429" in spec["paths"]["/jobs/generate"]["post"]["responses"]


def test_a_missing_extra_is_one_line_naming_the_install():
    code = "import sys; sys.modules['fastapi'] = None; import studio.api"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == (
        'studio.api.MissingExtra: the HTTP API needs fastapi: pip install -e ".[api]"'
    )


def test_serve_without_the_extra_prints_one_error_line(cli, monkeypatch):
    import studio

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    monkeypatch.delitem(sys.modules, "studio.api")  # imported afresh, without uvicorn
    monkeypatch.delattr(studio, "api")
    code, out, err = cli("serve")
    assert code == 2
    assert err == 'error: the HTTP API needs uvicorn: pip install -e ".[api]"\n'


def test_serve_passes_its_options_and_warns_off_localhost(cli, monkeypatch, tmp_path):
    import studio.api

    calls = []
    monkeypatch.setattr(studio.api, "serve", lambda **kw: calls.append(kw))
    code, out, _ = cli("serve", "--host", "0.0.0.0", "--port", "9001", "--home", tmp_path)
    assert code == 0 and "warning: listening on 0.0.0.0" in out
    assert calls == [
        {"host": "0.0.0.0", "port": 9001, "home": str(tmp_path), "model": None, "lora_dirs": None}
    ]
    code, out, _ = cli("serve", "--lora-dir", tmp_path / "a", "--lora-dir", tmp_path / "b")
    assert code == 0 and "warning" not in out
    assert calls[-1] == {
        "host": "127.0.0.1", "port": 8000, "home": None, "model": None,
        "lora_dirs": [str(tmp_path / "a"), str(tmp_path / "b")],
    }  # fmt: skip


@pytest.mark.slow
def test_studio_serve_command_end_to_end(tmp_path, tiny_pipeline_dir):
    """`studio serve` as docs/api.md runs it: a job through curl-like requests."""
    port = free_port()
    cmd = [sys.executable, "-m", "studio.cli", "serve", "--port", str(port)]
    cmd += ["--home", str(tmp_path / "home"), "--model", str(tiny_pipeline_dir)]
    env = {**os.environ, "STUDIO_SCORER": "none"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "studio serve did not answer"
            time.sleep(0.25)
        job = client.post("/jobs/generate", json=SMALL).json()
        api = Api(str(client.base_url), client, Gallery(tmp_path / "home"))
        assert api.wait(job["id"])["status"] == "done"
        assert client.get(f"/jobs/{job['id']}/video").content[4:8] == b"ftyp"
        assert json.loads(client.get(f"/jobs/{job['id']}/sidecar").content)["job"] == job["id"]
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out = proc.communicate(timeout=60)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0].decode()
    assert f"studio API on http://127.0.0.1:{port}" in out, out
    assert Path(tmp_path / "home" / "gallery.sqlite").is_file()
