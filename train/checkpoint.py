"""Atomic checkpoints on top of ``accelerator.save_state``.

A checkpoint is written into ``checkpoints/.tmp-<step>`` and renamed to
``checkpoints/step-<step>`` only when complete, so a crash mid-save never destroys the last
good checkpoint; ``latest`` is then rewritten atomically. Older checkpoints are pruned.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from safetensors.torch import load_file


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | Path, step: int, keep: int = 2
) -> Path | None:
    """Save the full training state (models, optimizer, scheduler, RNG, registered objects)."""
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


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None. Half-written ``.tmp-*`` folders are ignored."""
    root = checkpoint_root(output_dir)
    pointer = root / "latest"
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if (path / "meta.json").is_file():
            return path
    done = sorted(p for p in root.glob("step-*") if (p / "meta.json").is_file())
    return done[-1] if done else None


def checkpoint_step(path: Path) -> int:
    return int(json.loads((path / "meta.json").read_text())["step"])


def resume(accelerator: Accelerator, output_dir: str | Path) -> int:
    """Load the newest complete checkpoint of ``output_dir`` if there is one → its step (0
    for a fresh run)."""
    ckpt = latest_checkpoint(output_dir)
    if ckpt is None:
        return 0
    accelerator.load_state(str(ckpt))
    step = checkpoint_step(ckpt)
    accelerator.print(f"resumed from {ckpt} at step {step}")
    return step


def start_run(
    cfg, mixed_precision: str, find_unused_parameters: bool = False
) -> tuple[Accelerator, Path]:
    """The start every trainer shares: an accelerator with ``mixed_precision`` (already
    resolved), the global seed, and the output folder holding the run's ``config.yaml``.

    ``find_unused_parameters``: for DDP, a model some of whose parameters sit out some steps
    (the DiT's temporal and swap paths on image batches)."""
    from .config import save_config

    # Under torchrun/accelerate launch on a machine without GPUs, accelerate makes each
    # process a single-process run unless told cpu=True: then it is a MULTI_CPU run (gloo).
    on_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    ddp = DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=on_cpu, kwargs_handlers=[ddp])
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    return accelerator, out


def optimizer_step(accelerator: Accelerator, model, optimizer, schedule, loss, grad_clip: float):
    """Backward, clip the gradient norm (where gradients are synchronised), step the optimizer
    and the LR schedule, clear the gradients. ``model``: a module, or a list of the
    parameters to clip together (e.g. a model and a training-only head)."""
    accelerator.backward(loss)
    if accelerator.sync_gradients:
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
