"""Batch generation for benchmarks: ``studio batch PROMPTS --out-dir DIR --samples K``.

* One video per (prompt, sample) named ``{prompt}-{i}.mp4`` as VBench expects, with its
  sidecar ``{prompt}-{i}.json``; sample ``i`` uses seed ``seed + i``.
* File names: the prompt is kept as it is except for characters a file name cannot hold
  on Linux, macOS or Windows (``/ \\ : * ? " < > |`` and control characters), which become
  ``_``. A name longer than 200 bytes is cut and gets an 8-digit hash of the prompt so two
  long prompts never collide.
* ``manifest.jsonl``: one line per (prompt, sample) with its status (``ok`` / ``error``),
  paths, seed and any extra fields of the prompt's JSONL line (e.g. ``category``, ``expect``).
* Resumable: re-running the same command skips videos already written (file and sidecar
  present), so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .generate import (
    GenerateRequest,
    StudioError,
    ensure_output_dir,
    generate,
    load_pipeline,
    write_jsonl_atomic,
)

_FORBIDDEN = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')
MAX_NAME_BYTES = 200


@dataclass
class BatchOptions:
    prompts: Path
    out_dir: Path
    samples: int = 1
    seed: int = 0
    model: str | None = None
    steps: int = 25
    guidance: float = 4.0
    frames: int = 16
    fps: int = 8


@dataclass
class PromptEntry:
    prompt: str
    extra: dict
    line: int


def video_stem(prompt: str, index: int, disambiguate: bool = False) -> str:
    """VBench name ``{prompt}-{index}`` with unsafe characters replaced (see module doc).

    ``disambiguate`` adds the prompt's hash even to a short name: ``run_batch`` asks for it
    when another prompt of the batch already cleans to the same name (``a/b`` and ``a:b``).
    """
    safe = _FORBIDDEN.sub("_", prompt).strip()
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    if len(safe.encode()) > MAX_NAME_BYTES:
        safe = safe.encode()[:MAX_NAME_BYTES].decode(errors="ignore").rstrip() + f"~{digest}"
    elif disambiguate:
        safe = f"{safe}~{digest}"
    return f"{safe}-{index}"


def read_prompts(path: Path) -> tuple[list[PromptEntry], list[str]]:
    """Prompts from .txt (a line each, blank lines skipped) or .jsonl; returns (entries, warnings).

    A malformed JSONL line is reported with its line number and skipped.
    """
    if not path.is_file():
        raise StudioError(f"prompts file not found: {path}")
    text = path.read_text(encoding="utf-8")
    entries, problems = [], []
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if not jsonl:
            entries.append(PromptEntry(line, {}, n))
            continue
        try:
            data = json.loads(line)
            if isinstance(data, str):
                data = {"prompt": data}
            prompt = data.get("prompt") if isinstance(data, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError('no "prompt" string')
        except (json.JSONDecodeError, ValueError) as exc:
            problems.append(f"{path}:{n}: malformed line skipped ({exc})")
            continue
        entries.append(
            PromptEntry(prompt.strip(), {k: v for k, v in data.items() if k != "prompt"}, n)
        )
    if not entries:
        raise StudioError(
            f"no prompts in {path}" + (f" ({len(problems)} malformed lines)" if problems else "")
        )
    return entries, problems


def _load_manifest(path: Path) -> dict[tuple[str, int], dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[(rec["prompt"], int(rec["sample"]))] = rec
            except (json.JSONDecodeError, KeyError, ValueError):
                continue
    return done


def run_batch(options: BatchOptions, progress: bool = True, pipe=None) -> dict:
    """Generate every missing (prompt, sample); returns counts {done, skipped, failed, total}."""
    if options.samples < 1:
        raise StudioError(f"--samples must be >= 1, got {options.samples}")
    entries, problems = read_prompts(options.prompts)
    for p in problems:
        tqdm.write(f"warning: {p}")
    out = options.out_dir
    ensure_output_dir(out)
    manifest = out / "manifest.jsonl"
    previous = _load_manifest(manifest)

    jobs = [(e, i) for e in entries for i in range(options.samples)]
    records: dict[tuple[str, int], dict] = {}
    counts = {
        "done": 0,
        "skipped": 0,
        "failed": 0,
        "total": len(jobs),
        "malformed_lines": len(problems),
    }
    todo = []
    owners: dict[str, str] = {}  # file stem → the prompt it belongs to
    for entry, i in jobs:
        stem = video_stem(entry.prompt, i)
        if owners.setdefault(stem, entry.prompt) != entry.prompt:
            # another prompt cleans to the same name: without this it would be overwritten
            stem = video_stem(entry.prompt, i, disambiguate=True)
        video, sidecar = out / f"{stem}.mp4", out / f"{stem}.json"
        prev = previous.get((entry.prompt, i))
        if video.is_file() and sidecar.is_file() and prev and prev.get("status") == "ok":
            records[(entry.prompt, i)] = prev
            counts["skipped"] += 1
        else:
            todo.append((entry, i, stem))

    if todo and pipe is None:
        pipe = load_pipeline(options.model)
    if todo:
        # The settings are shared by every video: a bad one is a usage error (exit 2), not
        # a batch of identical failures.
        req = GenerateRequest(
            prompt=todo[0][0].prompt,
            steps=options.steps,
            guidance=options.guidance,
            frames=options.frames,
        )
        try:
            pipe.check_inputs(
                req.prompt,
                None,
                req.frames,
                req.height,
                req.width,
                req.steps,
                req.guidance,
                "np",
                None,
            )
        except ValueError as exc:
            raise StudioError(str(exc)) from None
    bar = tqdm(todo, desc="batch", unit="video", disable=not progress)
    for entry, i, stem in bar:
        seed = options.seed + i
        rec = {
            "prompt": entry.prompt,
            "sample": i,
            "seed": seed,
            "video": f"{stem}.mp4",
            "sidecar": f"{stem}.json",
            **entry.extra,
        }
        request = GenerateRequest(
            prompt=entry.prompt,
            seed=seed,
            steps=options.steps,
            guidance=options.guidance,
            frames=options.frames,
            fps=options.fps,
        )
        try:
            generate(
                request,
                out / f"{stem}.mp4",
                model=options.model,
                pipe=pipe,
                extra={"sample": i, **entry.extra},
            )
            rec["status"] = "ok"
            counts["done"] += 1
        except Exception as exc:  # one failing prompt must not stop the batch
            rec.update(status="error", error=f"{type(exc).__name__}: {exc}")
            counts["failed"] += 1
        records[(entry.prompt, i)] = rec
        # Rewrite the manifest after every video: an interruption loses at most the current one.
        write_jsonl_atomic(
            manifest, [records[k] for k in ((e.prompt, j) for e, j in jobs) if k in records]
        )
    write_jsonl_atomic(
        manifest, [records[k] for k in ((e.prompt, j) for e, j in jobs) if k in records]
    )
    return counts
