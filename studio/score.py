"""``studio score``: text–video alignment of video files with a CLIP / X-CLIP scorer.

Two inputs:
- ``PAIRS.jsonl``: one ``{"video": path, "caption": text}`` a line (paths relative to the
  file); the output is the same lines plus ``score`` (and ``frame_scores``, ``clipscore`` for
  CLIP), or ``error`` for a pair that could not be scored.
- a ``studio batch`` folder: its ``manifest.jsonl`` gives videos and prompts; a report
  (``scores.json``, ``scores.md``, ``scores.png``) summarises the scores per prompt.

A malformed line is reported with its line number and the rest are scored. No UI here.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipelines.video_io import VideoDecodeError, read_video

from .errors import StudioError
from .generate import write_json_atomic


def read_pairs(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Valid pairs (with ``line``) and one message per malformed line."""
    if not path.is_file():
        raise StudioError(f"pairs file not found: {path}")
    pairs, problems = [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{n}: not JSON ({exc.msg})")
            continue
        if not (
            isinstance(item, dict)
            and isinstance(item.get("video"), str)
            and isinstance(item.get("caption"), str)
            and item["caption"].strip()
        ):
            problems.append(f'{path}:{n}: expected {{"video": path, "caption": text}}')
            continue
        pairs.append({**item, "line": n})
    return pairs, problems


def pairs_from_batch_dir(run_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The finished videos of a batch folder's manifest with their prompts, and one message
    per line that was refused: a video path that leads out of the folder (absolute, ``..``,
    or a link out of it) is never read, whatever the manifest says."""
    manifest = run_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise StudioError(f"no manifest.jsonl in {run_dir}: score a `studio batch` folder")
    root = run_dir.resolve()
    pairs, problems = [], []
    for n, line in enumerate(manifest.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or rec.get("status") != "ok" or not rec.get("video"):
            continue
        video, prompt = rec["video"], rec.get("prompt")
        if not isinstance(video, str) or not isinstance(prompt, str):
            problems.append(f"{manifest}:{n}: expected string video and prompt")
            continue
        if not (root / video).resolve().is_relative_to(root):
            problems.append(f"{manifest}:{n}: video {video!r} is outside {run_dir}: not scored")
            continue
        pairs.append({"video": video, "caption": prompt, "line": n})
    return pairs, problems


def check_writable(path: Path) -> Path:
    """StudioError unless a file can be written at ``path`` (its folder exists and is
    writable): checked before scoring, so a typo does not cost a whole run."""
    parent = path.parent
    if path.is_dir():
        raise StudioError(f"{path} is a folder: give a file name such as scores.jsonl")
    if not parent.is_dir():
        raise StudioError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise StudioError(f"output folder is not writable: {parent}")
    return path


def score_pairs(scorer, pairs: list[dict[str, Any]], base: Path, progress: bool = True):
    """Each pair plus its scores, or its ``error``; never stops at a bad video."""
    from tqdm.auto import tqdm

    rows = []
    for pair in tqdm(pairs, desc="scoring", unit="video", disable=not progress):
        row = {k: v for k, v in pair.items() if k != "line"}
        path = Path(pair["video"])
        path = path if path.is_absolute() else base / path
        try:
            frames, _ = read_video(path)
            result = scorer.score(frames, pair["caption"])
        except (VideoDecodeError, OSError, ValueError) as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        else:
            row |= {k: v for k, v in asdict(result).items() if v not in (None, [])}
        rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]], scorer_name: str) -> dict[str, Any]:
    scored = [r for r in rows if "score" in r]
    by_prompt: dict[str, list[float]] = {}
    for r in scored:
        by_prompt.setdefault(r["caption"], []).append(r["score"])
    mean = sum(r["score"] for r in scored) / len(scored) if scored else math.nan
    return {
        "scorer": scorer_name,
        "n": len(rows),
        "scored": len(scored),
        "failed": len(rows) - len(scored),
        "mean": mean,
        "per_prompt": {p: sum(v) / len(v) for p, v in sorted(by_prompt.items())},
    }


def write_report(summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """``scores.json``, ``scores.md`` and ``scores.png`` (mean score per prompt, a bar chart)."""
    from PIL import Image, ImageDraw

    paths = {
        k: out_dir / f"scores.{ext}"
        for k, ext in (("json", "json"), ("markdown", "md"), ("chart", "png"))
    }
    write_json_atomic(paths["json"], summary)
    lines = [
        f"# Scores ({summary['scorer']})",
        "",
        f"{summary['scored']} of {summary['n']} videos scored; mean {summary['mean']:.4f}.",
        "",
        "| prompt | mean score |",
        "|---|---:|",
        *(f"| {p} | {s:.4f} |" for p, s in summary["per_prompt"].items()),
    ]
    paths["markdown"].write_text("\n".join(lines) + "\n")
    items = list(summary["per_prompt"].items())[:60]
    row_h, width, label_w = 14, 900, 520
    img = Image.new("RGB", (width, 30 + row_h * max(1, len(items))), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), f"mean score per prompt ({summary['scorer']})", fill="black")
    lo = min([0.0, *(s for _, s in items)])
    hi = max([1e-6, *(s for _, s in items)])
    for i, (prompt, s) in enumerate(items):
        y = 26 + i * row_h
        draw.text((8, y), prompt[:80], fill="black")
        x0 = label_w + int((0 - lo) / (hi - lo) * (width - label_w - 60))
        x1 = label_w + int((s - lo) / (hi - lo) * (width - label_w - 60))
        draw.rectangle([min(x0, x1), y + 2, max(x0, x1), y + row_h - 3], fill=(60, 110, 200))
        draw.text((max(x0, x1) + 4, y), f"{s:.3f}", fill="black")
    img.save(paths["chart"])
    return paths
