"""Profile one denoising step (batch 2, as benchmarks/perf.py) of the shipped transformer and of
the matched Latte with torch.profiler on CPU.

    python experiments/speed/profile_step.py [--dtype fp32|bf16] [--rows 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.perf import inputs, matched_latte, n_params, ours, step_latte, step_ours  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    a = ours().eval()
    b, layers = matched_latte(n_params(a))
    x, t, text, mask = inputs()
    for name, fn in (
        ("ours", lambda: step_ours(a, x, t, text, mask)),
        (f"Latte ({layers} layers)", lambda: step_latte(b, x, t, text, mask)),
    ):
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            fn(), fn()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.repeats):
                    fn()
        print(f"\n## {name}, {args.dtype}, {args.repeats} steps")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
