"""Reports of the judges: ``eval.json`` / ``eval.md`` (+ a contact sheet) for single clips,
``storyboard_eval.json`` / ``.md`` for storyboards, ``eval.json`` / ``eval.md`` for elements.
The judges (:mod:`evals.shapes`, :mod:`evals.storyboards`, :mod:`evals.elements`) compute the
report dicts; this module only writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .detect import read_frames
from .shapes import CRITERIA


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def _motion_line(by_motion: dict[str, dict[str, Any]], what: str) -> list[str]:
    if not by_motion:
        return []
    cells = ", ".join(f"{m} {_pct(v['motion'])} ({v['n']})" for m, v in by_motion.items())
    return [f"Motion right by the motion asked ({what}): {cells}.", ""]


# ----------------------------------------------------------------------------------------------
# Single clips (``studio eval shapes``)
# ----------------------------------------------------------------------------------------------


def _shapes_markdown(report: dict[str, Any]) -> str:
    cols = list(CRITERIA)
    lines = [
        "# Shapes World evaluation",
        "",
        f"Run: `{report.get('run_dir', '')}` — {report['overall']['n']} videos, "
        f"{report['overall']['n_failed']} not judged (counted wrong: a video that failed or "
        "cannot be read, or a line whose `expect` is not an expectation).",
        "",
        "| category | n | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
    ]
    rows = list(report["categories"].items()) + [("**overall**", report["overall"])]
    for name, agg in rows:
        lines.append(f"| {name} | {agg['n']} | " + " | ".join(_pct(agg[c]) for c in cols) + " |")
    lines += [
        "",
        "Size is scored only where the prompt names one; count = right number of objects; "
        "all correct = every criterion at once; shape held = each object shows its named shape "
        "in ≥ 80 % of the frames it is seen in, all correct held = both.",
        "",
    ]
    lines += _motion_line(report.get("motion_by_asked") or {}, "one-object videos")
    return "\n".join(lines)


def _contact_sheet(report: dict[str, Any], run_dir: Path, max_rows: int = 24) -> Any:
    """First / middle / last frame of up to ``max_rows`` videos, spread over categories."""
    from PIL import Image, ImageDraw, ImageFont

    by_cat: dict[str, list[dict[str, Any]]] = {}
    for it in report["items"]:
        by_cat.setdefault(it["category"], []).append(it)
    per_cat = max(1, max_rows // max(1, len(by_cat)))
    chosen = [it for its in by_cat.values() for it in its[:per_cat]][:max_rows]

    thumb, bar, text_w, pad = 96, 10, 440, 4
    row_h = thumb + 2 * pad
    sheet = Image.new(
        "RGB", (bar + 3 * (thumb + pad) + text_w, max(1, len(chosen)) * row_h), "white"
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r, it in enumerate(chosen):
        y = r * row_h
        ok = bool(it.get("all_correct"))
        draw.rectangle([0, y, bar - 1, y + row_h - 1], fill=(40, 170, 60) if ok else (210, 40, 40))
        frames = None
        if it["status"] == "ok" and it.get("video"):
            try:
                p = Path(it["video"])
                frames = read_frames(p if p.is_absolute() else run_dir / p)
            except Exception:
                frames = None
        for k in range(3):
            x = bar + pad + k * (thumb + pad)
            if frames is None or len(frames) == 0:
                draw.rectangle(
                    [x, y + pad, x + thumb - 1, y + pad + thumb - 1], fill=(200, 200, 200)
                )
                continue
            t = [0, len(frames) // 2, len(frames) - 1][k]
            img = Image.fromarray(frames[t]).resize((thumb, thumb), Image.NEAREST)
            sheet.paste(img, (x, y + pad))
        if it["status"] != "ok":
            verdict, detail = f"FAILED ({it['status']})", str(it.get("error", ""))
        else:
            wrong = [c for c in CRITERIA if not c.startswith("all_") and it.get(c) is False]
            verdict = "OK" if ok else "WRONG: " + ", ".join(wrong)
            seen = it.get("detected", {})
            detail = f"saw {seen.get('background')}: " + "; ".join(
                f"{o['size']} {o['color']} {o['shape']} {o['motion']}"
                for o in seen.get("objects", [])
            )
        tx = bar + 3 * (thumb + pad) + pad
        for k, txt in enumerate([f"[{it['category']}] {verdict}", it["prompt"], detail]):
            txt = txt if len(txt) <= 72 else txt[:69] + "..."
            draw.text((tx, y + pad + 14 * k), txt, fill=(0, 0, 0), font=font)
    return sheet


def write_shapes_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``eval.json``, ``eval.md`` and ``contact_sheet.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "eval.json",
        "markdown": out_dir / "eval.md",
        "contact_sheet": out_dir / "contact_sheet.png",
    }
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    paths["markdown"].write_text(_shapes_markdown(report))
    _contact_sheet(report, Path(report.get("run_dir", "."))).save(paths["contact_sheet"])
    return paths


# ----------------------------------------------------------------------------------------------
# Storyboards (``studio eval storyboards``)
# ----------------------------------------------------------------------------------------------


def _storyboard_markdown(report: dict[str, Any]) -> str:
    o = report["overall"]
    rows = [
        ("scene motion correct", "scene_motion"),
        ("colour and shape kept across a boundary", "identity_kept"),
        (f"boundaries with a jump ≤ {report['max_jump_px']:g} px (at 64 px)", "jump_ok"),
    ]
    lines = [
        "# Storyboard evaluation",
        "",
        f"Folder: `{report['run_dir']}` — {o['n_storyboards']} storyboards, {o['n_scenes']} "
        f"scenes, {o['n_boundaries']} boundaries; {o['n_failed']} could not be judged "
        "(counted wrong).",
        "",
        "| criterion | value | bar | pass |",
        "|---|---:|---:|:---:|",
    ]
    for label, key in rows:
        mark = "yes" if o["passes"][key] else "no"
        lines.append(f"| {label} | {_pct(o[key])} | ≥ {_pct(report['bars'][key])} | {mark} |")
    worst = "–" if o["max_jump_px"] is None else f"{o['max_jump_px']:.1f} px"
    lines += ["", f"Largest measured jump: {worst}.", ""]
    lines += _motion_line(o.get("scene_motion_by_asked") or {}, "one-object scenes")
    return "\n".join(lines)


def write_storyboard_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``storyboard_eval.json`` and ``storyboard_eval.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "storyboard_eval.json",
        "markdown": out_dir / "storyboard_eval.md",
    }
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    paths["markdown"].write_text(_storyboard_markdown(report))
    return paths


# ----------------------------------------------------------------------------------------------
# Reference elements (``studio eval elements``)
# ----------------------------------------------------------------------------------------------


def _elements_markdown(report: dict[str, Any]) -> str:
    o = report["overall"]
    rows = [
        ("identity, one reference (per reference)", "identity_one_ref", o["n_refs_one"]),
        ("identity, two references (per reference)", "identity_two_refs", o["n_refs_two"]),
        ("motion (per reference)", "motion", o["n_refs_one"] + o["n_refs_two"]),
    ]
    lines = [
        "# Elements-to-video evaluation",
        "",
        f"Run: `{report['run_dir']}` — {o['n_videos']} videos, {o['n_failed']} failed to "
        "generate or load (counted wrong).",
        "",
        "| criterion | n | value | bar | pass |",
        "|---|---:|---:|---:|:---:|",
    ]
    for label, key, n in rows:
        mark = "yes" if o["passes"][key] else "no"
        lines.append(f"| {label} | {n} | {_pct(o[key])} | ≥ {_pct(report['bars'][key])} | {mark} |")
    lines += [
        "",
        "| also measured | value |",
        "|---|---:|",
        f"| shape (per reference) | {_pct(o['shape'])} |",
        f"| both colours (per reference) | {_pct(o['colours'])} |",
        f"| background (per video) | {_pct(o['background'])} |",
        f"| sprite count (per video) | {_pct(o['count'])} |",
        f"| all correct (per video) | {_pct(o['all_correct'])} |",
        "",
        "Identity = shape and both pattern colours (order-free) of the matched sprite; all "
        "correct = every reference's identity and motion, the background and no extra sprite.",
        "",
    ]
    return "\n".join(lines)


def write_elements_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``eval.json`` and ``eval.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "eval.json", "markdown": out_dir / "eval.md"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    paths["markdown"].write_text(_elements_markdown(report))
    return paths
