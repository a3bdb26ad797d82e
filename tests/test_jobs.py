"""The studio's store, job queue and upload checks (no streamlit): tiny pipeline, temp home."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.video_io import read_video
from studio.gallery import Gallery
from studio.generate import GenerateRequest, StoryboardOptions, StudioError
from studio.jobs import (
    Worker,
    check_generate_request,
    rerun,
    submit_generate,
    submit_storyboard,
)
from studio.uploads import UploadLimits, check_image, store_element

PROMPT = "a red circle moving left on a black background"


def request(prompt: str = PROMPT, **kw) -> GenerateRequest:
    return GenerateRequest(**{"prompt": prompt, "steps": 2, "frames": 4, **kw})


@pytest.fixture
def gallery(tmp_path):
    return Gallery(tmp_path / "home")


@pytest.fixture
def worker(gallery, tiny_pipeline_dir):
    w = Worker(gallery, model=tiny_pipeline_dir, poll_s=0.05)
    yield w
    w.stop()


# ---------------------------------------------------------------------------- queue
def test_queue_runs_oldest_first_and_reports_positions(gallery):
    a = submit_generate(gallery, request(seed=1))
    b = submit_generate(gallery, request(seed=2))
    assert (gallery.queue_position(a.id), gallery.queue_position(b.id)) == (1, 2)
    claimed = gallery.claim_next()
    assert claimed.id == a.id and claimed.status == "running"
    assert gallery.queue_position(a.id) is None
    assert gallery.queue_position(b.id) == 1
    assert gallery.claim_next().id == b.id
    assert gallery.claim_next() is None


def test_two_jobs_both_finish_with_video_sidecar_and_thumbnail(gallery, worker):
    a = submit_generate(gallery, request(seed=1))
    b = submit_storyboard(
        gallery,
        [{"prompt": PROMPT, "frames": 3}, {"prompt": "a blue square moving up 🚀", "frames": 3}],
        StoryboardOptions(steps=2, window=4, context=1, candidates=2),
    )
    assert worker.run_pending() == 2
    for job, n_frames in ((gallery.get(a.id), 4), (gallery.get(b.id), 6)):
        assert job.status == "done", job.error
        frames, _ = read_video(gallery.path("videos", job.video))
        assert frames.shape == (n_frames, 64, 64, 3)
        sidecar = json.loads(gallery.path("videos", job.sidecar).read_text())
        assert sidecar["job"] == job.id
        if job.kind == "storyboard":  # its draws per later window, as asked; its words kept
            assert sidecar["candidates"] == 2
            assert sidecar["scenes"][1]["prompt"] == "a blue square moving up 🚀"
        assert Image.open(gallery.path("thumbs", job.thumbnail)).size == (128, 128)
        assert job.done_steps == job.total_steps > 0


def test_background_worker_thread_runs_what_is_queued(gallery, worker):
    worker.start()
    job = submit_generate(gallery, request())
    deadline = time.time() + 60
    while gallery.get(job.id).active and time.time() < deadline:
        time.sleep(0.05)
    assert gallery.get(job.id).status == "done"
    assert worker.status().holds_lock


def test_cancel_a_queued_job_never_runs_it(gallery, worker):
    job = submit_generate(gallery, request())
    assert gallery.cancel(job.id).status == "cancelled"
    assert worker.run_pending() == 0
    assert not any((gallery.home / "videos").iterdir())


def test_cancel_a_running_job_stops_it_and_keeps_no_file(gallery, tiny_pipeline_dir):
    class CancelAfterFirstStep(Gallery):
        def set_progress(self, job_id, done, total):
            if done == 1:
                self.cancel(job_id)
            return super().set_progress(job_id, done, total)

    store = CancelAfterFirstStep(gallery.home)
    job = submit_generate(store, request(steps=5))
    Worker(store, model=tiny_pipeline_dir).run_pending()
    job = store.get(job.id)
    assert job.status == "cancelled" and job.done_steps == 1
    assert not (store.home / "videos" / f"{job.id}.mp4").exists()


def test_cancel_a_running_film_stops_it_within_its_first_window(gallery, tiny_pipeline_dir):
    """A film reports whole windows; its cancel still acts at the next denoising step."""

    class CancelAtTheSecondLook(Gallery):
        looks = 0

        def cancel_requested(self, job_id):
            self.looks += 1
            if self.looks == 3:  # the job's start, then its first step: cancelled at step 2
                self.cancel(job_id)
            return super().cancel_requested(job_id)

    store = CancelAtTheSecondLook(gallery.home)
    scenes = [{"prompt": PROMPT, "frames": 4}, {"prompt": "a blue square", "frames": 4}]
    job = submit_storyboard(store, scenes, StoryboardOptions(steps=5, window=4, context=1))
    Worker(store, model=tiny_pipeline_dir).run_pending()
    job = store.get(job.id)
    assert job.status == "cancelled" and job.done_steps == 0, "no window was finished"
    assert store.looks == 3 and not (store.home / "videos" / f"{job.id}.mp4").exists()


def test_a_failing_job_is_recorded_and_the_next_one_still_runs(gallery, worker):
    bad = submit_generate(gallery, request(height=30))  # not a multiple of the model's patch
    good = submit_generate(gallery, request())
    assert worker.run_pending() == 2
    failed = gallery.get(bad.id)
    assert failed.status == "failed" and "height" in failed.error
    assert gallery.get(good.id).status == "done"


def test_job_left_running_by_a_dead_worker_is_run_again(gallery, worker):
    job = submit_generate(gallery, request())
    gallery.claim_next()  # a worker took it, then its process died
    assert gallery.get(job.id).status == "running"
    assert worker.run_pending() == 1
    assert Gallery(gallery.home).get(job.id).status == "done"  # a fresh store sees it too


def test_one_worker_per_machine(gallery, tiny_pipeline_dir):
    first = Worker(gallery, model=tiny_pipeline_dir, poll_s=0.05).start()
    try:
        deadline = time.time() + 10
        while not first.status().holds_lock and time.time() < deadline:
            time.sleep(0.02)
        assert first.status().holds_lock
        submit_generate(gallery, request())
        second = Worker(Gallery(gallery.home), model=tiny_pipeline_dir)
        # the lock is held by the other worker: this one refuses to run anything
        assert second.run_pending() == 0
    finally:
        first.stop()


def test_concurrent_submissions_from_many_threads_all_finish(gallery, worker):
    ids: list[str] = []

    def submit(seed):
        ids.append(submit_generate(gallery, request(seed=seed)).id)

    threads = [threading.Thread(target=submit, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert worker.run_pending() == 4
    assert {gallery.get(i).status for i in ids} == {"done"}


# ---------------------------------------------------------------------------- gallery
def test_search_filters_and_escapes_wildcards(gallery):
    submit_generate(gallery, request("a red circle moving left"))
    submit_generate(gallery, request("100% blue square"))
    submit_storyboard(gallery, [{"prompt": "a red square", "frames": 4}], StoryboardOptions())
    found = lambda text, **kw: [j.prompt for j in gallery.search(text, status=None, **kw)]  # noqa: E731
    assert found("RED") == ["a red square", "a red circle moving left"]
    assert found("%") == ["100% blue square"]
    assert found("red", kind="storyboard") == ["a red square"]
    assert gallery.search("red") == []  # nothing is done yet


def test_delete_removes_files_and_row_but_not_active_jobs(gallery, worker):
    job = submit_generate(gallery, request())
    pending = submit_generate(gallery, request(seed=3))
    gallery.claim_next()
    with pytest.raises(ValueError, match="cancel it"):
        gallery.delete(job.id)  # running
    gallery.finish(job.id, "failed", error="x")
    assert worker.run_pending() == 1
    done = gallery.get(pending.id)
    files = [gallery.path("videos", done.video), gallery.path("thumbs", done.thumbnail)]
    assert all(f.is_file() for f in files)
    assert gallery.delete(done.id)
    assert gallery.get(done.id) is None and not any(f.exists() for f in files)
    assert not gallery.delete(done.id)  # a second delete (two requests at once): told it is gone


def test_concurrent_deletes_remove_a_job_once(gallery):
    from concurrent.futures import ThreadPoolExecutor

    job = submit_generate(gallery, request())
    gallery.finish(job.id, "failed", error="x")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: gallery.delete(job.id), range(16)))
    assert results.count(True) == 1 and gallery.get(job.id) is None


def test_best_of_job_keeps_the_top_candidate_and_records_scores(gallery, worker, clip_dir):
    spec = f"clip:{clip_dir}"
    job = submit_generate(gallery, request(seed=4), best_of=3, scorer=spec)
    assert job.request["best_of"] == 3 and job.request["scorer"] == spec
    assert worker.run_pending() == 1
    job = gallery.get(job.id)
    assert job.status == "done", job.error
    assert [c["seed"] for c in job.scores["candidates"]] == [4, 5, 6]
    sidecar = json.loads(gallery.path("videos", job.sidecar).read_text())
    assert sidecar["seed"] == job.scores["chosen_seed"] == sidecar["best_of"]["chosen_seed"]
    with pytest.raises(StudioError, match="needs a scorer"):
        submit_generate(gallery, request(), best_of=2)
    with pytest.raises(StudioError, match="best-of must be between"):
        submit_generate(gallery, request(), best_of=99, scorer=spec)


def test_rerun_queues_the_same_settings(gallery):
    job = submit_generate(gallery, request(seed=7, guidance=2.5))
    again = rerun(gallery, job.id)
    assert again.id != job.id and again.request == job.request and again.kind == job.kind


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kw, pattern",
    [
        ({"prompt": "   "}, "prompt is empty"),
        ({"prompt": "x" * 1001}, "at most 1000"),
        ({"frames": 0}, "frames must be between"),
        ({"frames": 10_000}, "frames must be between"),
        ({"steps": 100_000}, "steps must be between"),
        ({"guidance": -1.0}, "guidance must be between"),
        ({"prompt": "<ref1> moving right on a gray background"}, "reference element"),
    ],
)
def test_absurd_requests_are_refused(kw, pattern):
    with pytest.raises(StudioError, match=pattern):
        check_generate_request(request(**kw))


def test_storyboard_requests_are_checked(gallery):
    with pytest.raises(StudioError, match="scene 2 has no prompt"):
        submit_storyboard(
            gallery,
            [{"prompt": "a", "frames": 4}, {"prompt": " ", "frames": 4}],
            StoryboardOptions(),
        )
    with pytest.raises(StudioError, match="whole number"):
        submit_storyboard(gallery, [{"prompt": "a", "frames": "many"}], StoryboardOptions())
    with pytest.raises(StudioError, match="empty"):
        submit_storyboard(gallery, [], StoryboardOptions())
    for n in (0, 5):
        with pytest.raises(
            StudioError,
            match=rf"candidates \(draws per later window\) must be between 1 and 4, got {n}",
        ):
            submit_storyboard(
                gallery, [{"prompt": "a", "frames": 4}], StoryboardOptions(candidates=n)
            )
    assert gallery.search(status=None) == []


# ---------------------------------------------------------------------------- uploads
def png_bytes(size=(20, 10), color=(200, 30, 30), noise: bool = False) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, color)
    if noise:  # incompressible pixels: the file is long enough to cut in the middle
        img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), np.uint8))
    img.save(buf, format="PNG")
    return buf.getvalue()


LIMITS = UploadLimits(max_bytes=10_000, max_pixels=1000)


def test_upload_accepted_and_stored_under_its_hash(tmp_path):
    image = check_image(png_bytes(), LIMITS, name="../../etc/passwd.png")
    assert image.size == (20, 10) and image.mode == "RGB"
    name = store_element(image, tmp_path)
    assert list(tmp_path.iterdir()) == [tmp_path / name]
    assert "passwd" not in name and name.endswith(".png")
    assert np.asarray(Image.open(tmp_path / name))[0, 0].tolist() == [200, 30, 30]


@pytest.mark.parametrize(
    "data, pattern",
    [
        (b"", "empty"),
        (b"GIF89a not really", "not an image"),
        (b"hello, I am a text file", "not an image"),
        (png_bytes(noise=True)[:300], "not an image"),  # truncated
        (png_bytes(size=(40, 40)), "1,600 pixels"),
        (b"\x89PNG" + bytes(20_000), "MB; the limit"),
    ],
)
def test_bad_uploads_are_refused(data, pattern):
    with pytest.raises(StudioError, match=pattern):
        check_image(data, LIMITS, name="x.png")


def test_gif_is_not_an_allowed_format():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="GIF")
    with pytest.raises(StudioError, match="GIF; allowed"):
        check_image(buf.getvalue(), LIMITS)


def test_an_image_first_clip_reports_its_first_frame_steps_so_it_can_be_cancelled(tiny_pipe):
    """Each step of frame 0 calls progress(0, total): a job asked to cancel stops there, not
    after the whole first frame; the clip's steps then count 1..total as before."""
    from studio.generate import sample

    calls = []
    request = GenerateRequest(prompt="a red square", steps=3, frames=4, height=16, width=16)
    request.image_first = True
    sample(tiny_pipe, request, lambda done, total: calls.append((done, total)))
    assert calls == [(0, 3)] * 3 + [(1, 3), (2, 3), (3, 3)]  # frame 0's 3 steps, then the clip
    assert not tiny_pipe.drawing_first_frame

    class Cancelled(Exception):
        pass

    def cancel_at_once(done, total):
        calls.append((done, total))
        raise Cancelled

    calls.clear()
    with pytest.raises(Cancelled):
        sample(tiny_pipe, request, cancel_at_once)
    assert calls == [(0, 3)]  # in frame 0's first step
    assert not tiny_pipe.drawing_first_frame  # reset however the call ended


def test_lora_roots_check_the_path_the_spec_is_read_as(tmp_path, monkeypatch):
    """A colon whose tail is no number belongs to the path: the roots are checked on that
    whole path, so a folder named ``a:b`` cannot smuggle ``../..`` past them."""
    from studio.api import check_lora_roots
    from studio.jobs import check_lora

    root = tmp_path / "root"
    (root / "a:b").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "adapter.safetensors").write_bytes(b"")
    with pytest.raises(StudioError, match="reads LoRA adapters only from"):
        check_lora(f"{root}/a:b/../../secret", [root])
    with pytest.raises(StudioError, match="reads LoRA adapters only from"):
        check_lora(f"{root}/a:b/../../secret:0.5", [root])
    (root / "mine").mkdir()
    (root / "mine" / "pytorch_lora_weights.safetensors").write_bytes(b"")
    assert check_lora(f"{root}/mine:0.5", [root]) == f"{(root / 'mine').resolve()}:0.5"

    gallery = Gallery(tmp_path / "home")
    monkeypatch.chdir("/")  # a service started at / does not expose the whole disk
    assert check_lora_roots(gallery, None) == [gallery.home.resolve()]
    with pytest.raises(StudioError, match="too broad"):
        check_lora_roots(gallery, [Path("/")])
