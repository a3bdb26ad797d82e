"""One denoising step (batch 2, as benchmarks/perf.py) of the shipped transformer with a
baseline copy of ``models/`` and with the working tree's, beside the matched Latte: timed
alternately in one process, median of repeats, fp32 and bf16 autocast; plus the largest
output difference between the two versions of the model.

    mkdir -p /tmp/base/models_ref && for f in __init__ attention embeddings video_dit; do
        git show <commit>:models/$f.py > /tmp/base/models_ref/$f.py; done
    python experiments/speed/compare_step.py /tmp/base [--repeats 15] [--threads 1 2]
    python experiments/speed/compare_step.py /tmp/base --threads 1 --cpu-time  (a loaded machine)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.perf import inputs, matched_latte, n_params, ours, step_latte, step_ours  # noqa: E402
from studio.shipped import DEFAULT_MODEL_DIR  # noqa: E402


def timed(fn, dtype: torch.dtype | None, clock) -> float:
    """benchmarks.perf.timed with a choice of clock."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        start = clock()
        fn()
        return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", type=Path, help="folder holding the baseline as models_ref/")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time the CPU seconds of this thread (1 thread only: on a loaded machine it leaves "
        "out the time other processes hold the core)",
    )
    args = parser.parse_args()
    if args.cpu_time:
        if args.threads != [1]:
            parser.error("--cpu-time needs --threads 1")
    clock = time.thread_time if args.cpu_time else time.perf_counter
    sys.path.insert(0, str(args.base))
    from models_ref.video_dit import VideoDiT as Baseline

    new = ours().eval()
    base = (
        Baseline.from_pretrained(DEFAULT_MODEL_DIR / "transformer", use_safetensors=True)
        .float()
        .eval()
    )
    latte, layers = matched_latte(n_params(new))
    x, t, text, mask = inputs()
    runs = {
        "baseline": lambda: step_ours(base, x, t, text, mask),
        "new": lambda: step_ours(new, x, t, text, mask),
        f"Latte ({layers} layers)": lambda: step_latte(latte, x, t, text, mask),
    }
    print(
        "| threads | dtype | baseline s | new s | Latte s | baseline/Latte | new/Latte | new/baseline | max abs diff |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            with (
                torch.inference_mode(),
                torch.autocast("cpu", dtype=dtype, enabled=dtype is not None),
            ):
                diff = (runs["baseline"]() - runs["new"]()).abs().max().item()
            for fn in runs.values():
                timed(fn, dtype, clock)
            times = {k: [] for k in runs}
            for _ in range(args.repeats):
                for k, fn in runs.items():
                    times[k].append(timed(fn, dtype, clock))
            b, n, lat = (statistics.median(v) for v in times.values())
            print(
                f"| {threads} | {name} | {b:.4f} | {n:.4f} | {lat:.4f} | {b / lat:.2f} "
                f"| {n / lat:.2f} | {n / b:.2f} | {diff:.1e} |"
            )


if __name__ == "__main__":
    main()
