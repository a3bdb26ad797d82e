"""A real browser against a live ``studio ui``: Debian's chromium, headless, driven by
playwright. Two tabs type a prompt and generate at once with the shipped model; both must
end with a video element the browser can play.

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

import pytest

REQUIRE = os.environ.get("STUDIO_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("STUDIO_CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None
)
SHOTS = os.environ.get("STUDIO_SCREENSHOTS")
PLAYABLE = """() => {
  const v = document.querySelector('video');
  return v !== null && !v.error && v.readyState >= 2 && v.duration > 0;
}"""


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
                box.fill(prompt)
                box.press("Control+Enter")  # commit the text area's value
                tab.get_by_role("button", name="Generate").click()
                tab.wait_for_url("**?job=*", timeout=30_000)  # the job is in the URL
            for tab in tabs:
                tab.wait_for_selector("video", timeout=180_000)
                tab.wait_for_function(PLAYABLE, timeout=30_000)
            job_urls = [tab.url for tab in tabs]
            assert len(set(job_urls)) == 2, job_urls

            # a refresh keeps the finished job: it is in the URL, and the store has it
            tabs[0].reload()
            tabs[0].wait_for_function(PLAYABLE, timeout=60_000)
            _shot(tabs[0], "generate")

            for name in ("storyboard", "elements", "gallery"):
                tabs[1].goto(f"{live_ui}/{name}")
                tabs[1].get_by_role("heading", name=name.capitalize()).wait_for(timeout=30_000)
                if name == "storyboard":  # the page is drawn down to its last control
                    tabs[1].get_by_text("Render film").wait_for(timeout=30_000)
                if name == "gallery":
                    tabs[1].get_by_text(prompts[0]).wait_for(timeout=30_000)
                    tabs[1].get_by_text(prompts[1]).wait_for(timeout=30_000)
                _shot(tabs[1], name)
        finally:
            browser.close()
