"""Speed of the shipped video DiT on this machine, side by side in one run.

    python benchmarks/perf.py [--repeats 7] [--train-log runs/dit/log.jsonl] [--skip-e2e]
                              [--compile] [--threads N] [--cpu-time] [--steps N ...]
                              [--models shipped DIR ...]

Prints Markdown tables for BENCHMARKS.md:

1. one denoising step (batch 2 = classifier-free guidance, 16 frames, 16×16 latent, text of
   16 tokens) of the shipped transformer (``studio/default_model/transformer``: its config,
   space-time RoPE attention included, and weights) vs diffusers' ``LatteTransformer3DModel``
   with the same width, patch, token count and dtype and the closest parameter count — ours
   as shipped (what ``studio generate`` runs), with fused QKV projections, and, with
   ``--compile``, both models compiled by ``torch.compile`` — all timed alternately, median
   of ``--repeats``, in fp32 and, where the CPU has AMX or AVX512-BF16, bf16 autocast;
   ``--threads 1 --cpu-time`` times the thread's CPU seconds instead of wall seconds, which
   leaves out the time other processes hold the core: on a loaded machine (a training run
   beside it) wall times with several threads swing by whole factors between runs, as each
   parallel kernel waits for its slowest thread;
2. model FLOPs utilisation: FLOPs of that step (``torch.utils.flop_counter``) per second,
   over the FLOP/s of a large matrix product measured in the same run, for fp32 and — where
   the CPU has fast bf16 (AMX / AVX512-BF16) — bf16 autocast;
3. end-to-end default generation as ``studio generate`` runs it (shipped model, image-first
   as its config says, 16 frames at 8 fps, guidance 3) in a fresh subprocess, once for each
   ``--steps`` count (default: the studio's default steps) and ``--models`` pipeline
   (default: the shipped one; e.g. a candidate beside it), eager and (``--compile``)
   compiled: wall seconds per
   second of video, the warm-up (compilation) time and peak resident memory;
4. training throughput per curriculum stage from a training log, with its MFU
   (3 × forward FLOPs per sample).
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.video_dit import VideoDiT
from pipelines.text_to_video import DEFAULT_STEPS
from studio.shipped import DEFAULT_MODEL_DIR
from train.config import cpu_has_fast_bf16

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = VideoDiT.load_config(DEFAULT_MODEL_DIR / "transformer")
TEXT_DIM, TEXT_LEN, FRAMES = SHIPPED["text_dim"], 16, 16
LATENT, CHANNELS, PATCH = SHIPPED["sample_size"], SHIPPED["in_channels"], SHIPPED["patch_size"]


def ours() -> torch.nn.Module:
    """The shipped transformer, as ``studio generate`` loads it."""
    return VideoDiT.from_pretrained(DEFAULT_MODEL_DIR / "transformer", use_safetensors=True).float()


def latte(layers: int) -> torch.nn.Module:
    from diffusers import LatteTransformer3DModel

    width, heads = SHIPPED["width"], SHIPPED["heads"]
    return LatteTransformer3DModel(
        num_attention_heads=heads,
        attention_head_dim=width // heads,  # the same width as ours
        in_channels=CHANNELS,
        out_channels=CHANNELS,
        num_layers=layers,
        cross_attention_dim=width,
        sample_size=LATENT,
        patch_size=PATCH,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        caption_channels=TEXT_DIM,
        video_length=FRAMES,
    )


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_latte(target: int) -> tuple[torch.nn.Module, int]:
    """Latte with the layer count whose parameter count is closest to ``target``."""
    best = min(range(1, 13), key=lambda n: abs(n_params(latte(n)) - target))
    return latte(best).eval(), best


def inputs(b: int = 2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, CHANNELS, FRAMES, LATENT, LATENT, generator=g)
    text = torch.randn(b, TEXT_LEN, TEXT_DIM, generator=g)
    mask = torch.ones(b, TEXT_LEN, dtype=torch.long)
    t = torch.full((b,), 500.0)
    return x, t, text, mask


def step_ours(model, x, t, text, mask):
    return model(x, t, text, mask).sample


def step_latte(model, x, t, text, mask):
    # Latte repeats the text per frame but not its mask; the mask is all ones here anyway
    return model(x, t.long(), encoder_hidden_states=text).sample


def timed(fn, dtype: torch.dtype | None, clock=time.perf_counter) -> float:
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        start = clock()
        fn()
        return clock() - start


def _onednn_linear_flops(x_shape, w_shape, *args, **kwargs) -> int:
    """FLOPs of oneDNN's fused linear (models.attention.linear): a (…, K) × (K, N) product."""
    rows = 1
    for n in x_shape[:-1]:
        rows *= n
    return 2 * rows * w_shape[0] * w_shape[1]


def forward_flops(fn) -> int:
    custom = {}
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):  # the models' inference linears
        custom[torch.ops.mkldnn._linear_pointwise] = _onednn_linear_flops
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=custom) as counter:
        fn()
    return counter.get_total_flops()


def matmul_flops_per_s(
    dtype: torch.dtype, n: int = 2048, repeats: int = 3, clock=time.perf_counter
) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = clock()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (clock() - start)


def end_to_end(compile: bool = False, steps: int = 25, model: str | None = None) -> dict:
    """Run in a fresh process (``--part e2e``): the shipped pipeline (or ``model``), timed
    after a warm-up (which, with ``compile``, includes compiling the transformer: reported
    apart)."""
    from studio.generate import load_pipeline

    pipe = load_pipeline(model, compile=compile)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(num_frames=16, num_inference_steps=steps, height=64, width=64)  # guidance 3
    prompt = "a small red circle moving left on a black background"
    start = time.perf_counter()
    pipe(prompt, **{**kwargs, "num_inference_steps": 2}, generator=torch.Generator().manual_seed(0))
    warmup = time.perf_counter() - start
    times = []
    for seed in range(3):
        start = time.perf_counter()
        pipe(prompt, **kwargs, generator=torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - start)
    return {
        "seconds": statistics.median(times),
        "video_seconds": 16 / 8,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "warmup_seconds": warmup,
    }


def training_table(log: Path, flops_per_sample: dict[int, float], peak: float) -> list[str]:
    """Per stage: logged samples/s (clips and the interleaved images together) × the mean
    forward FLOPs of that stage's sample mix (from the run's config.yaml) × 3 / peak."""
    from train.config import DiTTrainConfig, load_config

    cfg = load_config(DiTTrainConfig, log.parent / "config.yaml")
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    rows = [
        "| stage | samples/s (median of log) | mean forward GFLOP/sample | MFU (3× forward) |",
        "|---|---:|---:|---:|",
    ]
    for stage in cfg.stages:
        sps = [e["samples_per_s"] for e in entries if e["stage"] == stage.name]
        if not sps or stage.frames not in flops_per_sample:
            continue
        if stage.frames == 1:
            mean = flops_per_sample[1]
        else:  # per image_every steps: image_every - 1 clip batches and one image batch
            k = stage.image_every or 1
            clips, images = (
                (k - 1 if stage.image_every else 1) * stage.batch_size,
                (stage.image_batch_size if stage.image_every else 0),
            )
            mean = (clips * flops_per_sample[stage.frames] + images * flops_per_sample[1]) / (
                clips + images
            )
        rate = statistics.median(sps)
        rows.append(
            f"| {stage.name} | {rate:.1f} | {mean / 1e9:.2f} | {3 * mean * rate / peak:.3f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--train-log", type=Path, default=ROOT / "runs/dit/log.jsonl")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--part", choices=["e2e"], default=None)
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile (inductor) of both"
    )
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[DEFAULT_STEPS],
        help=f"sampling steps end to end, one row each (default {DEFAULT_STEPS})",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["shipped"],
        help="end to end: these saved pipelines too, timed in turn (shipped = the default model)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time steps in this thread's CPU seconds (needs --threads 1; for a loaded machine)",
    )
    args = parser.parse_args()
    if args.cpu_time and args.threads != 1:
        parser.error("--cpu-time counts one thread's CPU seconds: use it with --threads 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.thread_time if args.cpu_time else time.perf_counter
    if args.part == "e2e":
        model = None if args.models == ["shipped"] else args.models[0]
        print(json.dumps(end_to_end(args.compile, args.steps[0], model)))
        return

    torch.manual_seed(0)
    a = ours().eval()
    b, layers = matched_latte(n_params(a))
    x, t, text, mask = inputs()
    dtypes = [("fp32", None)] + ([("bf16", torch.bfloat16)] if cpu_has_fast_bf16() else [])

    variants = {"ours": a}
    if not SHIPPED.get("space_time_rope"):  # fused projections would drop the rotary positions
        fused = ours().eval()
        fused.fuse_qkv_projections()
        variants["ours, fused QKV"] = fused
    latte_variants = {"Latte": b}
    if args.compile:
        twin = ours().eval()
        twin.load_state_dict(a.state_dict())
        variants["ours + torch.compile"] = torch.compile(twin)
        latte_variants["Latte + torch.compile"] = torch.compile(b)

    print(
        f"threads {torch.get_num_threads()}, fast bf16: {cpu_has_fast_bf16()}, "
        f"clock: {'thread CPU time' if args.cpu_time else 'wall'}\n"
    )
    print("| dtype | variant | s/step | Latte s/step | variant/Latte | params ours / Latte |")
    print("|---|---|---:|---:|---:|---|")
    results, compiled = {}, {}
    for name, dtype in dtypes:
        runs = {k: (lambda m=m: step_ours(m, x, t, text, mask)) for k, m in variants.items()}
        for k, m in latte_variants.items():
            runs[k] = lambda m=m: step_latte(m, x, t, text, mask)
        for fn in runs.values():  # warm-up (and compilation)
            timed(fn, dtype, clock), timed(fn, dtype, clock)
        times = {k: [] for k in runs}
        for _ in range(args.repeats):  # alternate, so drift hits all alike
            for k, fn in runs.items():
                times[k].append(timed(fn, dtype, clock))
        med = {k: statistics.median(v) for k, v in times.items()}
        results[name] = med["ours"]
        for k in variants:
            print(
                f"| {name} | {k} | {med[k]:.4f} | {med['Latte']:.4f} | "
                f"{med[k] / med['Latte']:.2f} | "
                f"{n_params(a) / 1e6:.2f} M / {n_params(b) / 1e6:.2f} M ({layers} Latte layers) |"
            )
        if "ours, fused QKV" in med:
            print(f"| {name} | fused / plain | | | {med['ours, fused QKV'] / med['ours']:.2f} | |")
        if args.compile:
            ratio = med["ours + torch.compile"] / med["Latte + torch.compile"]
            print(
                f"| {name} | both compiled | {med['ours + torch.compile']:.4f} | "
                f"{med['Latte + torch.compile']:.4f} | {ratio:.2f} | |"
            )
            compiled[name] = med["ours + torch.compile"]

    flops = forward_flops(lambda: step_ours(a, x, t, text, mask))
    print("\n| dtype | step GFLOP | achieved GFLOP/s | matmul 2048³ GFLOP/s | MFU |")
    print("|---|---:|---:|---:|---:|")
    peaks = {}
    for name, dtype in dtypes:
        peak = matmul_flops_per_s(dtype or torch.float32, clock=clock)
        peaks[name] = peak
        for label, seconds in (("", results[name]), (" compiled", compiled.get(name))):
            if seconds is None:
                continue
            achieved = flops / seconds
            print(
                f"| {name}{label} | {flops / 1e9:.2f} | {achieved / 1e9:.1f} | "
                f"{peak / 1e9:.1f} | {achieved / peak:.3f} |"
            )

    if args.train_log.is_file():
        per_sample = {}
        for frames in (1, 8, 16):
            xs = torch.randn(1, CHANNELS, frames, LATENT, LATENT)
            per_sample[frames] = forward_flops(
                lambda xs=xs: step_ours(a, xs, t[:1], text[:1], mask[:1])
            )
        print(f"\nTraining throughput from `{args.train_log}` (fp32):\n")
        print("\n".join(training_table(args.train_log, per_sample, peaks["fp32"])))

    if not args.skip_e2e:
        print(
            "\n| end to end (16 frames @ 8 fps, guidance 3) | model | steps"
            " | per clip (median of 3) | per second of video | warm-up | peak memory |"
        )
        print("|---|---|---:|---:|---:|---:|---:|")
        for compile, steps, model in itertools.product(
            (False, True) if args.compile else (False,), args.steps, args.models
        ):
            command = [sys.executable, __file__, "--part", "e2e", "--steps", str(steps)]
            command += ["--models", model]
            done = subprocess.run(
                command + (["--compile"] if compile else []),
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            e2e = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"| {'torch.compile' if compile else 'eager'} | {model} | {steps} | "
                f"{e2e['seconds']:.2f} s | "
                f"{e2e['seconds'] / e2e['video_seconds']:.2f} | {e2e['warmup_seconds']:.1f} s | "
                f"{e2e['peak_rss_mb']:.0f} MB |"
            )


if __name__ == "__main__":
    main()
