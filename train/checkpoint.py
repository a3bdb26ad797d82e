"""Atomic checkpoints on top of ``accelerator.save_state``.

A checkpoint is written into ``checkpoints/.tmp-<step>`` and renamed to
``checkpoints/step-<step>`` only when complete, so a crash mid-save never destroys the last
good checkpoint; ``latest`` is then rewritten atomically. Older checkpoints are pruned.

Nothing loaded from a checkpoint can run code: the models are safetensors, accelerate's
optimizer, scheduler and RNG files go through ``torch.load(weights_only=True)``, and our own
training state (the EMA weights) is safetensors plus JSON (:func:`save_states`). accelerate's
``register_for_checkpointing`` is not used: it loads ``custom_checkpoint_*.pkl`` with
``weights_only=False``, i.e. unpickles whatever a shared run folder holds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

STATE_SUFFIX = ".state"  # <name>.state.safetensors + <name>.state.json per extra state


class ResumeError(ValueError):
    """A run folder that cannot be resumed (no loadable checkpoint, or another architecture)."""


def save_states(folder: Path, states: dict[str, Any]) -> None:
    """Each object's ``state_dict()`` as ``<name>.state.safetensors`` (its tensors, and lists
    of tensors such as an EMA's shadow parameters) + ``<name>.state.json`` (the rest: numbers,
    strings, booleans). No pickle."""
    for name, obj in states.items():
        tensors: dict[str, torch.Tensor] = {}
        plain: dict[str, Any] = {}
        for key, value in obj.state_dict().items():
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().cpu().contiguous()
                plain[key] = {"tensor": key}
            elif isinstance(value, (list, tuple)) and all(
                isinstance(v, torch.Tensor) for v in value
            ):
                for i, v in enumerate(value):
                    tensors[f"{key}.{i}"] = v.detach().cpu().contiguous()
                plain[key] = {"tensors": len(value)}
            else:
                json.dumps(value)  # only plain values: fails loudly on anything else
                plain[key] = {"value": value}
        save_file(tensors, str(folder / f"{name}{STATE_SUFFIX}.safetensors"))
        (folder / f"{name}{STATE_SUFFIX}.json").write_text(json.dumps(plain, indent=1))


def load_states(folder: Path, states: dict[str, Any]) -> None:
    """The inverse of :func:`save_states`: ``load_state_dict`` of each object."""
    for name, obj in states.items():
        plain = json.loads((folder / f"{name}{STATE_SUFFIX}.json").read_text())
        tensors = load_file(str(folder / f"{name}{STATE_SUFFIX}.safetensors"))
        state: dict[str, Any] = {}
        for key, kind in plain.items():
            if "tensor" in kind:
                state[key] = tensors[kind["tensor"]]
            elif "tensors" in kind:
                state[key] = [tensors[f"{key}.{i}"] for i in range(int(kind["tensors"]))]
            else:
                state[key] = kind["value"]
        obj.load_state_dict(state)


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | Path,
    step: int,
    keep: int = 2,
    states: dict[str, Any] | None = None,
) -> Path | None:
    """Save the full training state: models, optimizer, scheduler, RNG (accelerate) and
    ``states``, objects with ``state_dict``/``load_state_dict`` such as the EMA (main process,
    :func:`save_states`)."""
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-{step:07d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return None
    save_states(tmp, states or {})
    (tmp / "meta.json").write_text(json.dumps({"step": step}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = root / ".latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / "latest")
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, newest first: the one ``latest`` names, then the others by step.
    Half-written ``.tmp-*`` folders are ignored."""
    root = checkpoint_root(output_dir)
    done = sorted((p for p in root.glob("step-*") if (p / "meta.json").is_file()), reverse=True)
    pointer = root / "latest"
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if named in done:
            done.remove(named)
            done.insert(0, named)
    return done


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    done = complete_checkpoints(output_dir)
    return done[0] if done else None


def checkpoint_step(path: Path) -> int:
    return int(json.loads((path / "meta.json").read_text())["step"])


def resume(
    accelerator: Accelerator, output_dir: str | Path, states: dict[str, Any] | None = None
) -> int:
    """Load the newest loadable checkpoint of ``output_dir`` → its step (0 for a fresh run).

    A checkpoint that fails to load (a truncated or corrupt file) is reported and the previous
    kept one is tried; when none loads, :class:`ResumeError` says why."""
    failures: list[str] = []
    for ckpt in complete_checkpoints(output_dir):
        try:
            step = checkpoint_step(ckpt)
            accelerator.load_state(str(ckpt))
            load_states(ckpt, states or {})
        except Exception as exc:  # any unreadable part: fall back to the previous one
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            failures.append(f"{ckpt.name}: {type(exc).__name__}: {first[:300]}")
            accelerator.print(f"warning: cannot resume from {ckpt} ({failures[-1]})")
            continue
        accelerator.print(f"resumed from {ckpt} at step {step}")
        return step
    if failures:
        raise ResumeError(
            f"cannot resume {output_dir}: no checkpoint loads ({'; '.join(failures)}); "
            "if the model changed, train into a new output_dir"
        )
    return 0


def check_resumable(cfg, out: Path) -> None:
    """A run folder with checkpoints resumes only with the architecture it was trained with:
    the config's ``ARCHITECTURE`` keys (dotted) must equal the saved ``config.yaml``'s.
    Raises :class:`ResumeError` naming the keys, before anything in the folder is written."""
    from omegaconf import OmegaConf

    saved_path = out / "config.yaml"
    if latest_checkpoint(out) is None or not saved_path.is_file():
        return
    saved = OmegaConf.load(saved_path)
    current = OmegaConf.structured(cfg)
    changed = []
    for key in getattr(cfg, "ARCHITECTURE", ()):
        old, new = OmegaConf.select(saved, key), OmegaConf.select(current, key)
        if isinstance(old, DictConfig):
            old = OmegaConf.to_container(old)
        if isinstance(new, DictConfig):
            new = OmegaConf.to_container(new)
        if isinstance(old, dict) and isinstance(new, dict):
            diff = sorted(k for k in new if old.get(k, new[k]) != new[k])
            changed += [f"{key}.{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff]
        elif old is not None and old != new:
            changed.append(f"{key}: {old!r} -> {new!r}")
    old_lr, new_lr = OmegaConf.select(saved, "lr"), getattr(cfg, "lr", None)
    if old_lr is not None and new_lr is not None and float(old_lr) != float(new_lr):
        # the checkpoint's optimizer and schedule bring the run's own base rate back
        raise ResumeError(
            f"{out} was trained with lr {old_lr} and its checkpoints restore that rate, so "
            f"lr {new_lr} would be ignored: resume with lr={old_lr} (a stage's own lr may "
            "change), or start from its weights in a new output_dir with init_from"
        )
    if changed:
        raise ResumeError(
            f"{out} holds checkpoints of another architecture ({'; '.join(changed)}): "
            "train into a new output_dir, or use init_from to start from its weights"
        )


def start_run(
    cfg,
    mixed_precision: str,
    find_unused_parameters: bool = False,
    accumulation: int = 1,
    report_to: str = "none",
) -> tuple[Accelerator, Path]:
    """The start every trainer shares: an accelerator with ``mixed_precision`` (already
    resolved), ``accumulation`` micro-batches per optimizer step (``accelerator.accumulate``),
    accelerate's ``report_to`` trackers ("tensorboard", "wandb"; "none"), the global seed, and the output folder holding the run's ``config.yaml``.

    ``find_unused_parameters``: for DDP, a model some of whose parameters sit out some steps
    (the DiT's temporal and swap paths on image batches)."""
    from .config import save_config

    # Under torchrun/accelerate launch on a machine without GPUs, accelerate makes each
    # process a single-process run unless told cpu=True: then it is a MULTI_CPU run (gloo).
    on_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    ddp = DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)
    # step_scheduler_with_optimizer=False: the schedule is a function of the optimizer step,
    # stepped once per step. accelerate's default steps a prepared scheduler once per
    # *process* per step, so N processes ran warmup and cosine N× too fast.
    out = Path(cfg.output_dir)
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        cpu=on_cpu,
        kwargs_handlers=[ddp],
        step_scheduler_with_optimizer=False,
        gradient_accumulation_steps=accumulation,
        log_with=None if report_to == "none" else report_to,
        project_dir=str(out / "logs"),
    )
    set_seed(cfg.seed)
    check_resumable(cfg, out)  # before config.yaml is rewritten
    if report_to != "none":
        check_tracker(report_to)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        lock_run_folder(out)
        save_config(cfg, out / "config.yaml")
    if report_to != "none":
        from omegaconf import OmegaConf

        flat = OmegaConf.to_container(OmegaConf.structured(cfg))
        hparams = {k: v for k, v in flat.items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(out.name or "run", config=hparams)
    return accelerator, out


def check_tracker(report_to: str) -> None:
    """One error line for a tracker that is not installed: accelerate only
    warns (and logs nothing) when ``report_to`` names a package that is missing."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}
    for name in report_to.split(","):
        name = name.strip()
        if name in available and not available[name]():
            raise ValueError(f"report_to {name} needs its package: pip install {name}")


# The run folders this process trains into, each with its open, locked ``.lock``: held until
# the process ends, so a second run (or a worker left by a killed launcher) cannot interleave
# its checkpoints and log lines with this one's; a later run in this process reuses it.
_RUN_LOCKS: dict[Path, Any] = {}


def lock_run_folder(out: Path) -> None:
    """Take ``out/.lock`` for this process; ValueError naming the holder when another
    process trains into ``out``."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        return
    key = out.resolve()
    if key in _RUN_LOCKS:
        return
    fh = open(out / ".lock", "a+")  # noqa: SIM115 - held open for the process's life
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # held (EWOULDBLOCK/EAGAIN); other OSErrors: the file system's
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise ValueError(
            f"{out} is being trained into by {holder}: wait for it, stop it, or choose "
            "another output_dir"
        ) from None
    except OSError:  # a file system without advisory locks: train unlocked
        fh.close()
        return
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}\n")
    fh.flush()
    _RUN_LOCKS[key] = fh


class InterruptFlag:
    """While the training loop runs, the first Ctrl-C (SIGINT) only sets :attr:`asked`: the loop
    finishes its step, checkpoints it and stops, so nothing since the last checkpoint is lost;
    a second Ctrl-C interrupts at once. Outside the main thread it does nothing."""

    def __init__(self):
        self.asked = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.asked:  # the second one: now
            self.restore()
            raise KeyboardInterrupt
        self.asked = True
        print("\nstopping after this step (checkpointed); Ctrl-C again stops at once", flush=True)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def checkpoint(
        self,
        accelerator: Accelerator,
        out: Path,
        step: int,
        due: bool,
        states: dict[str, Any] | None = None,
        deadline: float | None = None,
    ) -> bool:
        """A trainer's end of step: checkpoint ``step`` (with ``states``, :func:`save_checkpoint`)
        when ``due``, on a Ctrl-C or past ``deadline`` (a ``time.time()``); after a Ctrl-C's
        checkpoint stop (KeyboardInterrupt). → whether the deadline has passed (the caller
        stops). Every process gets the same answers: one reduce when several run, as any of
        them may have caught the Ctrl-C or be the first past the deadline."""
        asked, late = self.asked, deadline is not None and time.time() > deadline
        if accelerator.num_processes > 1:
            flags = torch.tensor([float(asked), float(late)], device=accelerator.device)
            asked, late = (bool(v > 0) for v in accelerator.reduce(flags, "sum"))
        late = late and not asked
        if due or asked or late:
            save_checkpoint(accelerator, out, step, states=states)
        if asked:
            self.restore()
            accelerator.print(
                f"interrupted at step {step}: checkpointed; resume with the same command"
            )
            raise KeyboardInterrupt
        return late


def optimizer_step(accelerator: Accelerator, model, optimizer, schedule, loss, grad_clip: float):
    """Backward, then, where gradients are synchronised (every call, or the last micro-batch
    of an ``accelerator.accumulate`` step): clip the gradient norm, step the optimizer and the
    LR schedule, clear the gradients. ``model``: a module, or a list of the parameters to
    clip together (e.g. a model and a training-only head)."""
    accelerator.backward(loss)  # divided by the accumulation steps under accumulate()
    if not accelerator.sync_gradients:
        return
    params = model.parameters() if isinstance(model, torch.nn.Module) else model
    accelerator.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)


def init_weights_from(model: torch.nn.Module, path: str | Path, partial: bool = False) -> list[str]:
    """Load a saved model's weights into ``model`` — a model folder (``save_pretrained``), or a
    pipeline folder, whose ``transformer`` is taken; → the names of parameters it lacked
    (left as initialised). Weights the model has no place for, or of another shape, are an
    error: the architectures must match — unless ``partial``, where tensors of another shape
    (e.g. the patch embedding and output of a model with a new patch size) keep their fresh
    initialisation and are listed with the missing ones. (Fine-tuning: ``init_from`` of the
    DiT and scorer trainers.)"""
    folder = Path(path)
    if (folder / "transformer").is_dir():
        folder = folder / "transformer"
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"init_from: no safetensors weights in {folder}")
    state = {}
    for file in files:
        state.update(load_file(str(file)))
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in state if k in own and state[k].shape != own[k].shape)
    if partial:
        state = {k: v for k, v in state.items() if k not in mismatched}
        mismatched = []
    if unexpected or mismatched:
        raise ValueError(
            f"init_from {folder}: architecture differs (unexpected {unexpected[:5]}, "
            f"shape mismatch {mismatched[:5]}); match the model config to the saved one"
        )
    result = model.load_state_dict(state, strict=False)
    return list(result.missing_keys)
