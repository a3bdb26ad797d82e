"""Where the shipped default model and scorer are, and the environment variables that point
elsewhere. Found with ``importlib.resources``, so an installed (not editable) package finds
them outside the source tree."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

MODEL_ENV = "STUDIO_MODEL"
SCORER_ENV = "STUDIO_SCORER"  # the UI's scorer spec for best-of-N (``studio ui --scorer``)
DEFAULT_MODEL_DIR = Path(str(files("studio") / "default_model"))
DEFAULT_SCORER_DIR = Path(str(files("studio") / "default_scorer"))


def default_model_path() -> Path:
    """``$STUDIO_MODEL`` if set, else the model shipped inside the package."""
    return Path(os.environ.get(MODEL_ENV) or DEFAULT_MODEL_DIR)


def scorer_spec(spec: str) -> str:
    """A scorer spec with ``default`` resolved to the shipped scorer (``shapes:DIR``); other
    specs (``shapes:PATH``, ``clip:…``, ``xclip:…``) unchanged."""
    return f"shapes:{DEFAULT_SCORER_DIR}" if spec == "default" else spec


def configured_scorer_spec() -> str | None:
    """The scorer best-of-N uses in the web UI and the HTTP API: ``$STUDIO_SCORER``
    (``studio ui --scorer``); unset, the shipped scorer when it is installed; ``none``:
    best-of-N is not offered."""
    spec = os.environ.get(SCORER_ENV)
    if spec == "none":
        return None
    if spec:
        return spec
    return "default" if (DEFAULT_SCORER_DIR / "config.json").is_file() else None
