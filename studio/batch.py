"""Batch generation for benchmarks: ``studio batch PROMPTS --out-dir DIR --samples K``.

* One video per (prompt, sample) named ``{prompt}-{i}.mp4`` as VBench expects, with its
  sidecar ``{prompt}-{i}.json``; sample ``i`` uses seed ``seed + i``.
* File names: the prompt is kept as it is except for characters a file name cannot hold
  on Linux, macOS or Windows (``/ \\ : * ? " < > |`` and control characters), which become
  ``_``. A name longer than 200 bytes is cut and gets an 8-digit hash of the prompt so two
  long prompts never collide.
* ``manifest.jsonl``: one line per (prompt, sample) with its status (``ok`` / ``error``),
  paths, seed and any extra fields of the prompt's JSONL line (e.g. ``category``, ``expect``).
  A line may not use a name the manifest or the sidecar writes itself (``video``,
  ``sample``, ``seed``, ``model``…: :data:`RESERVED_KEYS`): the file is refused, naming
  the line.
* A prompt given twice is generated once (the first line's; a warning names the repeat):
  its videos would have the same names, and the manifest has one line per (prompt, sample).
* Resumable: re-running the same command skips videos already written (file and sidecar
  present), so an interrupted run continues where it stopped.
* Exit status (``studio batch``): 1 when a video failed or a malformed JSONL line was
  skipped (each named on stderr), else 0.
* Distributed: under ``torchrun`` / ``accelerate launch`` (see docs/scale.md) the unfinished
  jobs are dealt round-robin to the processes (:func:`assign_jobs`); each appends its
  records to ``manifest.rank{R}.jsonl`` as it goes, and at the end the main process folds
  the parts into the one ``manifest.jsonl`` (:func:`merge_manifests`). Parts left by a
  crashed run are folded in when the next run starts. Seeds depend only on the sample, so
  any number of processes makes the same videos.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from accelerate import PartialState
from accelerate.utils import DistributedType, gather_object, get_int_from_env
from tqdm.auto import tqdm

from pipelines.text_to_video import DEFAULT_GUIDANCE, DEFAULT_STEPS

from .errors import user_words
from .generate import (
    SIDECAR_KEYS,
    GenerateRequest,
    StudioError,
    check_request,
    check_same_settings,
    check_seed,
    clean_stale_temps,
    ensure_output_dir,
    generate,
    load_pipeline,
    model_frames,
    weights_hash,
    write_jsonl_atomic,
)
from .shipped import model_for

_FORBIDDEN = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')
MAX_NAME_BYTES = 200
MANIFEST = "manifest.jsonl"
PART_GLOB = "manifest.rank*.jsonl"
# The closing barrier waits for the slowest process's share, which can lag the others by many
# videos (failures are fast, GPUs differ); torch's default (30 min gloo, 10 min NCCL) would
# kill a finished run there. A crashed process still ends the run at once: the launcher
# tears the others down.
BARRIER_TIMEOUT = timedelta(hours=24)
# Names a prompt line's extra fields may not take: the manifest's own and the sidecar's.
MANIFEST_KEYS = frozenset(
    {"prompt", "sample", "seed", "video", "sidecar", "status", "error", "rank"}
)
RESERVED_KEYS = MANIFEST_KEYS | SIDECAR_KEYS

T = TypeVar("T")


@dataclass
class BatchOptions:
    prompts: Path
    out_dir: Path
    samples: int = 1
    seed: int = 0
    model: str | None = None
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    frames: int = 16
    fps: int = 8
    height: int = 64
    width: int = 64
    image_first: bool | None = None  # None: the model's own setting
    lora: str | None = None  # a LoRA adapter on the model, PATH[:SCALE]
    negative: str | None = None  # a negative prompt for every video
    # torch.compile the transformer: ~50 s of compiling before the first video, ~15 % faster
    # after (experiments/speed/REPORT.md), so it pays from a few dozen videos on
    compile: bool = False


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
    if safe.startswith("."):  # not a hidden file (nor "." or "..")
        safe = "_" + safe[1:]
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    if len(safe.encode()) > MAX_NAME_BYTES:
        safe = safe.encode()[:MAX_NAME_BYTES].decode(errors="ignore").rstrip() + f"~{digest}"
    elif disambiguate:
        safe = f"{safe}~{digest}"
    return f"{safe}-{index}"


def read_prompts(path: Path) -> tuple[list[PromptEntry], list[str]]:
    """Prompts from .txt (a line each, blank lines skipped), .jsonl (a JSON string or object
    a line) or .json (one JSON array of them); returns (entries, warnings).

    A malformed JSONL line (array item) is reported with its number and skipped. StudioError
    naming the line for bytes that are not UTF-8 and for a JSONL line with a reserved key
    (:data:`RESERVED_KEYS`), and for a CSV file (its header and quotes would become prompts).
    """
    if not path.is_file():
        raise StudioError(f"prompts file not found: {path}")
    if path.suffix.lower() in (".csv", ".tsv"):
        raise StudioError(
            f"{path}: a {path.suffix.lower()[1:].upper()} file; prompts files are .txt (a prompt "
            'a line), .jsonl (a JSON object a line, with "prompt") or .json (an array of them)'
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise StudioError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}): "
            "save the file as UTF-8"
        ) from None
    entries, problems = [], []
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    lines = text.splitlines()
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:  # one array: its items are the lines (numbered from 1)
            lines = [json.dumps(item) for item in json.loads(text)]
        except json.JSONDecodeError as exc:
            raise StudioError(f"{path}:{exc.lineno}: not a JSON array ({exc.msg})") from None
    for n, raw in enumerate(lines, start=1):
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
        reserved = sorted(RESERVED_KEYS.intersection(data) - {"prompt"})
        if reserved:
            raise StudioError(
                f"{path}:{n}: {', '.join(map(repr, reserved))} "
                f"{'is a name' if len(reserved) == 1 else 'are names'} the batch writes itself "
                "into the manifest and sidecars: rename or remove it"
            )
        entries.append(
            PromptEntry(prompt.strip(), {k: v for k, v in data.items() if k != "prompt"}, n)
        )
    if not entries:
        raise StudioError(
            f"no prompts in {path}" + (f" ({len(problems)} malformed lines)" if problems else "")
        )
    return entries, problems


def _unique_prompts(entries: list[PromptEntry], path: Path) -> tuple[list[PromptEntry], list[str]]:
    """The first line of each prompt, and a warning for each repeat (which is not made again:
    its videos would have the first one's names and manifest lines)."""
    first: dict[str, PromptEntry] = {}
    warnings = []
    for e in entries:
        if e.prompt in first:
            warnings.append(
                f"{path}:{e.line}: the prompt of line {first[e.prompt].line} again: skipped"
            )
        else:
            first[e.prompt] = e
    return list(first.values()), warnings


def _read_records(path: Path) -> list[dict]:
    """The manifest lines of ``path`` that name a (prompt, sample); others are skipped (a
    crash can cut a part's last line in half)."""
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                rec["sample"] = int(rec["sample"])
                if isinstance(rec["prompt"], str):
                    records.append(rec)
            except (json.JSONDecodeError, KeyError, ValueError, TypeError):
                continue
    return records


def _load_manifest(path: Path) -> dict[tuple[str, int], dict]:
    return {(rec["prompt"], rec["sample"]): rec for rec in _read_records(path)}


def part_path(out_dir: Path, rank: int) -> Path:
    """Where process ``rank`` of a distributed run appends its manifest lines."""
    return Path(out_dir) / f"manifest.rank{rank}.jsonl"


def _part_rank(path: Path) -> int:
    try:
        return int(path.name[len("manifest.rank") : -len(".jsonl")])
    except ValueError:
        return -1  # a stray name matched by the glob: read it first, so real parts win


def assign_jobs(jobs: list[T], rank: int, world: int) -> list[T]:
    """Process ``rank``'s share of ``jobs`` among ``world`` processes: every world-th job
    from its rank on (round-robin), so neighbouring prompts spread over the processes and
    the shares differ by at most one job. Deterministic: every process computes every share
    from the same list."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
    return jobs[rank::world]


def merge_manifests(out_dir: Path, order: list[tuple[str, int]] | None = None) -> list[dict] | None:
    """Fold the parts ``manifest.rank*.jsonl`` of ``out_dir`` into its ``manifest.jsonl``,
    then remove them; returns the records written.

    One line per (prompt, sample): ``manifest.jsonl`` is read first, then the parts by rank,
    and a later line replaces an earlier one. Parts are always newer than the manifest (they
    are folded in at the end of every run and at the start of the next), so a retried
    failure's success replaces the failure, and a failed retry replaces a stale success.

    ``order``: the run's (prompt, sample) keys in prompt order, then sample. The manifest then
    holds exactly those keys that have a record, in that order, as a one-process run writes
    it. Without ``order`` every key is kept, in order of first appearance; with neither
    ``order`` nor parts nothing is written and None is returned.
    """
    out_dir = Path(out_dir)
    manifest = out_dir / MANIFEST
    parts = sorted(out_dir.glob(PART_GLOB), key=_part_rank)
    if order is None and not parts:
        return None
    merged: dict[tuple[str, int], dict] = {}
    for path in [manifest, *parts]:
        for rec in _read_records(path):
            merged[(rec["prompt"], rec["sample"])] = rec  # a dict keeps first-insertion order
    keys = list(merged) if order is None else [k for k in order if k in merged]
    records = [merged[k] for k in keys]
    # The parts go only once the manifest that holds them is in place: a crash in between
    # leaves both, and folding them in again gives the same result.
    write_jsonl_atomic(manifest, records)
    for path in parts:
        path.unlink(missing_ok=True)
    return records


def process_state() -> PartialState:
    """This process's place in the run: accelerate's ``PartialState``.

    accelerate gives processes started by a launcher (``torchrun``, ``accelerate launch``) on
    a machine without GPUs one single-process state each unless it is told ``cpu=True``:
    every process would then make every video. So when the launcher's ``WORLD_SIZE`` says
    several processes but accelerate found no distributed setup, the state is made again on
    the CPU (gloo), which is what such a launch means.
    """
    state = PartialState(timeout=BARRIER_TIMEOUT)
    if state.distributed_type == DistributedType.NO and get_int_from_env(["WORLD_SIZE"], 1) > 1:
        PartialState._reset_state()
        state = PartialState(cpu=True, timeout=BARRIER_TIMEOUT)
    return state


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _check_same_settings(
    sidecar: Path, options: BatchOptions, seed: int, weights: str | None
) -> None:
    """StudioError when a finished video's sidecar records other settings than this run's,
    or another model's weights (``weights``: this run's model's ``weights_hash``)."""
    now = {
        "seed": seed,
        "steps": options.steps,
        "guidance": options.guidance,
        "frames": options.frames,
        "fps": options.fps,
        "height": options.height,
        "width": options.width,
        "lora": options.lora,
        "negative_prompt": options.negative,
    }
    if options.image_first is not None:  # None: the model's own, recorded as used
        now["image_first"] = options.image_first
    if weights is not None:  # a model folder, not a hub id
        now["weights_hash"] = weights
    check_same_settings(sidecar, now, "another --out-dir")


def run_batch(options: BatchOptions, progress: bool = True, pipe=None) -> dict:
    """Generate every missing (prompt, sample); returns counts {done, skipped, failed, total}.

    Under a distributed launcher each process generates its share (:func:`assign_jobs`) on
    its own device, and every process returns the counts of the whole run. With one process
    this is the plain single-process batch.
    """
    if options.samples < 1:
        raise StudioError(f"--samples must be >= 1, got {options.samples}")
    check_seed(options.seed)
    check_seed(options.seed + options.samples - 1, "seed + samples - 1 (the last sample's seed)")
    # every video's request but its prompt and seed (dataclasses.replace gives each its own)
    shared = GenerateRequest(
        prompt="",
        negative_prompt=options.negative,
        steps=options.steps,
        guidance=options.guidance,
        frames=options.frames,
        fps=options.fps,
        height=options.height,
        width=options.width,
        image_first=options.image_first,
        lora=options.lora,
    )
    check_request(shared)  # the settings every video shares: a bad one fails before any work
    state = process_state()
    rank, world = state.process_index, state.num_processes
    entries, problems = read_prompts(options.prompts)
    entries, repeats = _unique_prompts(entries, options.prompts)
    if state.is_main_process:
        for p in [*problems, *repeats]:
            tqdm.write(f"warning: {p}", file=sys.stderr)
    out = options.out_dir
    ensure_output_dir(out)
    manifest = out / MANIFEST
    # Parts left by a crashed distributed run hold finished videos: fold them in before
    # deciding what is left to do, and let no process read the manifest before that.
    if state.is_main_process:
        clean_stale_temps(out)  # temporaries a killed run left; never a live process's
        merge_manifests(out)
    state.wait_for_everyone()
    previous = _load_manifest(manifest)

    jobs = [(e, i) for e in entries for i in range(options.samples)]
    order = [(e.prompt, j) for e, j in jobs]
    # lines of earlier runs into this folder that this run does not make (other prompts, or
    # samples past --samples) stay in the manifest, after this run's, as they were
    ours = set(order)
    kept_lines = {k: rec for k, rec in previous.items() if k not in ours}
    order += list(kept_lines)
    records: dict[tuple[str, int], dict] = dict(kept_lines)
    counts = {
        "done": 0,
        "skipped": 0,
        "failed": 0,
        "total": len(jobs),
        "malformed_lines": len(problems),
    }
    todo = []
    # file stem, case-folded (macOS and Windows file names ignore case) → its prompt
    owners: dict[str, str] = {}
    model = model_for(options.model)  # a folder's weights are compared by their bytes
    weights = weights_hash(model) if previous and model.is_dir() else None
    # a folder holds videos of one setting: every finished video of it is checked, not only
    # the ones this run would make again; and their files keep their names
    for (prompt, sample), rec in kept_lines.items():
        sidecar = out / str(rec.get("sidecar", ""))
        if rec.get("status") == "ok" and sidecar.is_file() and isinstance(sample, int):
            _check_same_settings(sidecar, options, options.seed + sample, weights)
        if rec.get("video"):
            owners.setdefault(Path(str(rec["video"])).stem.casefold(), prompt)
    for entry, i in jobs:
        prev = previous.get((entry.prompt, i))
        stem = video_stem(entry.prompt, i)
        named = Path(str((prev or {}).get("video", ""))).stem
        kept = named in (stem, video_stem(entry.prompt, i, disambiguate=True))
        if kept and (out / f"{named}.mp4").is_file():
            stem = named  # a finished video keeps its name (older runs: names kept case)
        elif owners.get(stem.casefold(), entry.prompt) != entry.prompt:
            # another prompt cleans to the same name: without this it would be overwritten
            stem = video_stem(entry.prompt, i, disambiguate=True)
        owners.setdefault(stem.casefold(), entry.prompt)
        video, sidecar = out / f"{stem}.mp4", out / f"{stem}.json"
        if video.is_file() and sidecar.is_file() and prev and prev.get("status") == "ok":
            _check_same_settings(sidecar, options, options.seed + i, weights)
            records[(entry.prompt, i)] = prev
            counts["skipped"] += 1
        else:
            todo.append((entry, i, stem))
    # Every process saw the same manifest and files, so every process deals the same todo.
    mine = assign_jobs(todo, rank, world)

    if todo and pipe is None:
        # Loaded even by a process with no share, so that a bad setting below fails on every
        # process alike. One process keeps load_pipeline's own device choice.
        pipe = load_pipeline(
            options.model,
            device=str(state.device) if world > 1 else None,
            compile=options.compile,
            lora=options.lora,
        )
    if todo:
        # The settings are shared by every video: a bad one is a usage error (exit 2), not
        # a batch of identical failures. (Each line's own prompt, references included, is
        # checked with its video: a prompt here would make the line order matter.)
        try:
            pipe.check_inputs(
                "the shared settings",
                None,
                model_frames(pipe, shared.frames),
                shared.height,
                shared.width,
                shared.steps,
                shared.guidance,
                "np",
                None,
            )
        except ValueError as exc:
            raise StudioError(user_words(str(exc))) from None
    desc = "batch" if world == 1 else f"batch (process 0's share of {len(todo)}, {world} procs)"
    bar = tqdm(mine, desc=desc, unit="video", disable=not (progress and state.is_main_process))
    for entry, i, stem in bar:
        seed = options.seed + i  # the sample alone sets it: any process count, same video
        rec = {
            "prompt": entry.prompt,
            "sample": i,
            "seed": seed,
            "video": f"{stem}.mp4",
            "sidecar": f"{stem}.json",
            **entry.extra,
        }
        try:
            generate(
                replace(shared, prompt=entry.prompt, seed=seed),
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
        if world > 1:
            # Each process appends to its own part after every video: no process waits for
            # another, and a crash loses at most the video in hand.
            _append_jsonl(part_path(out, rank), {**rec, "rank": rank})
            continue
        records[(entry.prompt, i)] = rec
        # Rewrite the manifest after every video: an interruption loses at most the current one.
        write_jsonl_atomic(manifest, [records[k] for k in order if k in records])
    if world == 1:
        write_jsonl_atomic(manifest, [records[k] for k in order if k in records])
        return counts

    state.wait_for_everyone()
    if state.is_main_process:
        merge_manifests(out, order)
    # A collective, so also a barrier: no process returns before the manifest is merged.
    shares = gather_object([counts])
    # Tear the process group down before exit: gloo's threads left to the interpreter's
    # shutdown can abort the process ("terminate called without an active exception").
    state.destroy_process_group()
    return {
        **counts,
        "done": sum(c["done"] for c in shares),
        "failed": sum(c["failed"] for c in shares),
    }
