"""A real browser against a live ``studio ui``: Debian's chromium, headless, driven by
playwright. Two tabs type a prompt and generate at once with the shipped model; both must
end with the clip shown large and crisp (a 384 px image drawn pixel for pixel, animated).
Then the Gallery's *Re-run* must land on the Generate page showing the new job: its id in
the URL, its prompt in the field, its progress and *Cancel*, then its clip.

Skipped where chromium or playwright is missing, unless ``STUDIO_REQUIRE_BROWSER=1`` (CI sets
it, so there a missing browser fails). ``STUDIO_SCREENSHOTS=DIR`` saves a screenshot of every
page there (how docs/ui-*.png are made).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

REQUIRE = os.environ.get("STUDIO_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("STUDIO_CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None
)
SHOTS = os.environ.get("STUDIO_SCREENSHOTS")
SHOWN = """(job) => {
  const imgs = Array.from(document.querySelectorAll('img[alt^="Clip:"]'))
    .filter(i => job === null || i.alt.includes(`(job ${job.slice(0, 8)})`));
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth === 384
    && i.getBoundingClientRect().width === 384
    && getComputedStyle(i).imageRendering === 'pixelated');
}"""
CHIP_INSERTED = """(text) => Array.from(document.querySelectorAll('textarea'))
  .some(t => t.value === text)"""
BUSY = """(job) => Array.from(document.querySelectorAll('button')).some(b => b.innerText.includes('Cancel'))
  || document.querySelector(`img[alt*="(job ${job.slice(0, 8)})"]`) !== null"""


def _need(ok: bool, why: str) -> None:
    if not ok:
        if REQUIRE:
            pytest.fail(f"{why} (STUDIO_REQUIRE_BROWSER=1)")
        pytest.skip(why)


@pytest.fixture
def live_ui(tmp_path):
    """A `studio ui` server on a free localhost port, with the shipped model."""
    pytest.importorskip("streamlit")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("STUDIO_MODEL", "STUDIO_HOME")}
    log = open(tmp_path / "ui.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "studio.cli",
            "ui",
            "--port",
            str(port),
            "--home",
            tmp_path / "home",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            log.close()
            pytest.fail("studio ui did not start:\n" + (tmp_path / "ui.log").read_text()[-3000:])
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


IMAGES_LOADED = "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"


def _shot(page, name: str) -> None:
    if SHOTS:
        page.wait_for_function(IMAGES_LOADED, timeout=30_000)
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"ui-{name}.png"), full_page=True)


def _job(url: str) -> str:
    return parse_qs(urlparse(url).query)["job"][0]


def test_two_tabs_generate_at_once_and_both_play(live_ui):
    _need(CHROMIUM is not None, "no chromium on PATH (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed (pip install playwright)")

    prompts = [
        "a large red square moving right on a black background",
        "a small yellow circle moving up on a gray background",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            tabs = [context.new_page() for _ in prompts]
            for tab, prompt in zip(tabs, prompts, strict=True):
                tab.goto(live_ui)
                box = tab.get_by_role("textbox", name="Prompt", exact=True)
                box.wait_for(timeout=180_000)  # the first run imports torch
                # the server loaded the model as it started: the sidebar says it is ready
                tab.get_by_text("Model ready").wait_for(timeout=180_000)
                if tab is tabs[0]:  # the word chips put words where the grammar has them
                    for word, prompt_now in (("square", "a square"), ("red", "a red square")):
                        tab.get_by_role("radio", name=word, exact=True).click()
                        tab.wait_for_function(CHIP_INSERTED, arg=prompt_now, timeout=30_000)
                    _shot(tab, "words")
                box.fill(prompt)
                box.press("Control+Enter")  # commit the text area's value
                tab.get_by_role("button", name="Generate").click()
                tab.wait_for_url("**?job=*", timeout=30_000)  # the job is in the URL
            for tab in tabs:
                tab.wait_for_function(SHOWN, arg=_job(tab.url), timeout=180_000)
            job_urls = [tab.url for tab in tabs]
            assert len(set(job_urls)) == 2, job_urls

            # a refresh keeps the finished job: it is in the URL, and the store has it
            tabs[0].reload()
            tabs[0].wait_for_function(SHOWN, arg=_job(job_urls[0]), timeout=60_000)
            _shot(tabs[0], "generate")

            # Gallery → Re-run: the Generate page follows the new job (same session)
            tab = tabs[0]
            tab.get_by_role("link", name="Gallery").click()
            tab.get_by_text(prompts[1]).first.wait_for(timeout=30_000)  # the newest job
            tab.get_by_role("button", name="Re-run").first.click()
            old = {_job(u) for u in job_urls}

            def on_generate_with_a_new_job(url: str) -> bool:
                path = urlparse(url).path.rstrip("/")
                return path in ("", "/generate") and "job=" in url and _job(url) not in old

            tab.wait_for_url(on_generate_with_a_new_job, timeout=30_000)
            rerun = _job(tab.url)
            tab.get_by_role("heading", name="Generate").wait_for(timeout=30_000)
            box = tab.get_by_role("textbox", name="Prompt", exact=True)
            assert box.input_value() == prompts[1], "the re-run job's prompt, not the old one"
            tab.wait_for_function(BUSY, arg=rerun, timeout=30_000)  # progress and Cancel
            tab.wait_for_function(SHOWN, arg=rerun, timeout=180_000)

            for name in ("storyboard", "elements", "gallery"):
                tabs[1].goto(f"{live_ui}/{name}")
                tabs[1].get_by_role("heading", name=name.capitalize()).wait_for(timeout=30_000)
                if name == "storyboard":  # the page is drawn down to its last control
                    tabs[1].get_by_text("Render film").wait_for(timeout=30_000)
                if name == "elements":
                    tabs[1].get_by_text("cannot use reference elements").wait_for(timeout=30_000)
                if name == "gallery":
                    tabs[1].get_by_text(prompts[0]).first.wait_for(timeout=30_000)
                    tabs[1].get_by_text(prompts[1]).first.wait_for(timeout=30_000)
                _shot(tabs[1], name)
        finally:
            browser.close()
