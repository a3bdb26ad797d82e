"""The studio's worker, one per server process and store: started by ``studio ui`` before
streamlit serves its first page (:mod:`studio.ui.serve`), so the model loads while the server
starts rather than at the first click, and found again here by the pages' studio
(``studio.ui.common``). No streamlit here: the server wrapper and the tests use it too.
"""

from __future__ import annotations

import threading
from pathlib import Path

from studio.gallery import Gallery, default_home
from studio.jobs import ModelStatus, Worker
from studio.shipped import default_model_path
from studio.ui.progress import duration

_WORKERS: dict[tuple[str, str], Worker] = {}
_LOCK = threading.Lock()


def configured() -> tuple[Path, Path]:
    """The store and the model ``studio ui`` was started with (``$STUDIO_HOME``,
    ``$STUDIO_MODEL``; else the default home and the shipped model)."""
    return default_home(), default_model_path()


def worker(home: str | Path, model: str | Path) -> Worker:
    """The process's worker for ``home`` and ``model``, started (loading the model first) on
    the first call; the same one after that."""
    key = (str(Path(home).resolve()), str(Path(model).resolve()))
    with _LOCK:
        w = _WORKERS.get(key)
        if w is None:
            w = _WORKERS[key] = Worker(Gallery(home), model=model, preload=True)
        return w.start()


def model_line(status: ModelStatus, now: float, label: str) -> str:
    """What the page says of the model: loading (and for how long), ready, or why not."""
    if status.state == "loading":
        since = f" {duration(now - status.since)} so far" if status.since else ""
        return f"Loading model… ({label}){since}"
    if status.state == "failed":
        return f"The model could not be loaded ({label}): {status.error}"
    if status.state == "ready":
        took = f", loaded in {duration(status.load_s)}" if status.load_s is not None else ""
        return f"Model ready ({label}{took})"
    return f"Model: {label} (loaded by the first job)"
