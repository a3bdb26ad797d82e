"""Output folders the commands create, in a module that imports nothing heavy: a command that
fails removes the folders it created that are still empty (studio.cli.main), so bad input
leaves no trace, while a long-lived server records nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from .errors import StudioError

# The folders ensure_output_dir created inside ``removing_created_folders_on_failure``
# (one CLI command), parents first; None elsewhere (a server records nothing).
_CREATED_FOLDERS: ContextVar[list[Path] | None] = ContextVar("created_folders", default=None)


@contextmanager
def removing_created_folders_on_failure() -> Iterator[None]:
    """Run one command; if it fails, remove the folders it created that are still empty,
    deepest first, so bad input leaves no trace (studio.cli.main)."""
    created: list[Path] = []
    token = _CREATED_FOLDERS.set(created)
    try:
        yield
    except BaseException:
        for folder in reversed(created):
            try:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            except OSError:
                pass  # another process wrote into it, or it went: nothing of ours to clean
        raise
    finally:
        _CREATED_FOLDERS.reset(token)


def ensure_output_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check it is writable; StudioError otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StudioError(f"output folder {path} is a file: name a folder")
    missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
    created = _CREATED_FOLDERS.get()
    try:
        for folder in missing:
            folder.mkdir(exist_ok=True)
            if created is not None:
                created.append(folder)
    except OSError as exc:
        raise StudioError(f"cannot create output folder {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise StudioError(f"output folder is not writable: {path}")
    return path
