"""Files that appear whole or not at all: every writer of the project (videos, sidecars,
manifests, reports, training logs) writes a hidden temporary sibling and renames it into
place, and one naming pattern lets a later run tell a killed writer's leftovers from a live
one's (:func:`clean_stale_temps`)."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path

# Temporary siblings: hidden, named after the file they become and the process writing them
# (``.NAME.PID.RAND.tmp[.EXT]``), so a later run can tell a stale one from a live one.
_TEMP_RE = re.compile(
    r"^\..+\.(?:"
    r"\d+\.[0-9a-f]{8}\.tmp(?:\.(?:mp4|gif|webm))?"  # temp_sibling's
    r"|(?:mp4|gif|webm)\.[0-9a-f]{12}\.tmp\.(?:mp4|gif|webm)"  # pipelines.video_io's own
    r"|jsonl?\.[a-z0-9_]{8}\.tmp"  # tempfile.mkstemp's, from before temp_sibling
    r")$"
)
_TEMP_PID_RE = re.compile(r"\.(\d+)\.[0-9a-f]{8}\.tmp")
STALE_TEMP_S = 60.0  # a temporary without a process in its name: stale after a minute
LIVE_TEMP_S = 3600.0  # no writer of ours keeps one temporary for an hour


def temp_sibling(path: Path, suffix: str = "") -> Path:
    """A fresh hidden temporary name beside ``path`` (``suffix``: e.g. ``.mp4``, which the
    video writer picks its format from); the name is cut so that the video writer's own
    temporary beside it still fits in a file name (255 bytes)."""
    name = path.name.encode()[:80].decode(errors="ignore")
    return path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user
        return True
    return True


def clean_stale_temps(folder: str | Path, max_age_s: float = STALE_TEMP_S) -> list[Path]:
    """Remove the temporary files a killed run left in ``folder``; returns them.

    Only names of the studio's own patterns (:func:`temp_sibling`'s, the video writer's,
    and older versions' ``mkstemp`` ones, ``.NAME.json.XXXXXXXX.tmp``), and of those only
    the ones whose writer is gone: named after a process that no longer runs on this
    machine, or (names without a process) untouched for ``max_age_s`` seconds. A temporary
    named after a running process is kept unless it is an hour old (its number reused), so
    a concurrent run's files are never taken from under it.
    """
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not _TEMP_RE.match(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        owner = _TEMP_PID_RE.search(entry.name)
        pid = int(owner.group(1)) if owner else None
        if pid is None:
            stale = age > max_age_s
        elif pid == os.getpid():
            stale = False
        else:
            stale = age > LIVE_TEMP_S or not _pid_alive(pid)
        if stale:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def write_temp_text(path: Path, text: str) -> Path:
    """``text`` in a new temporary sibling of ``path``, created like the videos are (0666
    less the umask, so 0644 by default; ``mkstemp`` would make it 0600)."""
    tmp = temp_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _replace_from_temp(path: Path, text: str) -> None:
    tmp = write_temp_text(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict | list) -> None:
    """``data`` as indented JSON, written to a temporary sibling and renamed into place."""
    _replace_from_temp(Path(path), json.dumps(data, indent=2))


def write_jsonl_atomic(path: Path, records: list[dict]) -> None:
    """One JSON object a line, written to a temporary sibling and renamed into place."""
    _replace_from_temp(Path(path), "".join(json.dumps(r) + "\n" for r in records))


def place_with_sidecar(files: list[tuple[Path, Path]], sidecar_tmp: Path, sidecar: Path) -> None:
    """Move finished temporaries into place so that a video never sits beside a sidecar
    describing other frames, wherever a kill lands: the old sidecar goes first, then the
    videos (``files``: (temporary, final) pairs) are renamed in, the new sidecar last. A
    kill in between leaves a video without a sidecar, which ``studio batch`` makes again
    and nothing reads as finished."""
    sidecar.unlink(missing_ok=True)
    for tmp, final in files:
        os.replace(tmp, final)
    os.replace(sidecar_tmp, sidecar)
