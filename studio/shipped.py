"""Where the shipped default model and scorer are, and the environment variables that point
elsewhere. Found with ``importlib.resources``, so an installed (not editable) package finds
them outside the source tree."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from .errors import StudioError

MODEL_ENV = "STUDIO_MODEL"
SCORER_ENV = "STUDIO_SCORER"  # the UI's scorer spec for best-of-N (``studio ui --scorer``)
DEFAULT_MODEL_DIR = Path(str(files("studio") / "default_model"))
DEFAULT_SCORER_DIR = Path(str(files("studio") / "default_scorer"))
#: The shipped model for reference elements (docs/elements.md): requests with references that
#: would run on the shipped model run on it, while the shipped model keeps text-to-video.
ELEMENTS_MODEL_DIR = Path(str(files("studio") / "elements_model"))


def default_model_path() -> Path:
    """``$STUDIO_MODEL`` if set, else the model shipped inside the package."""
    return Path(os.environ.get(MODEL_ENV) or DEFAULT_MODEL_DIR)


def model_for(model: str | Path | None, references: bool = False) -> Path:
    """The model a request runs on: ``model`` (None: :func:`default_model_path`), except that
    a request with reference elements that would run on the shipped model runs on the
    shipped elements model, where one is installed."""
    path = Path(model) if model else default_model_path()
    if references and (ELEMENTS_MODEL_DIR / "model_index.json").is_file():
        if path.resolve() == DEFAULT_MODEL_DIR.resolve():
            return ELEMENTS_MODEL_DIR
    return path


def scorer_spec(spec: str) -> str:
    """A scorer spec with ``default`` resolved to the shipped scorer (``shapes:DIR``); other
    specs (``shapes:PATH``, ``clip:…``, ``xclip:…``) unchanged."""
    if spec == "default":
        return f"shapes:{DEFAULT_SCORER_DIR}"
    from pipelines.scoring import split_spec  # here: `studio --help` loads no torch

    if split_spec(spec) is None:
        raise StudioError(
            "scorer spec must be default, shapes:PATH, clip:PATH_OR_ID or xclip:PATH_OR_ID, "
            f"got {spec!r}"
        )
    return spec


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
