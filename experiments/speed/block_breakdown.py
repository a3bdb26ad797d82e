"""Where a step's time goes, by part of the block: wall time per sub-module of every SwapBlock
(forward hooks, no profiler overhead), the rest of the block (residuals, modulation, reshapes)
and the rest of the model, median over repeats. Batch 2 as in benchmarks/perf.py. With
``--threads 1`` the clock is the thread's CPU time (robust to a loaded machine).

    python experiments/speed/block_breakdown.py [--dtype fp32|bf16] [--repeats 9] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.perf import inputs, ours, step_ours  # noqa: E402

PARTS = (
    "norm_s",
    "spatial_attn",
    "norm_t",
    "temporal_attn",
    "norm_q",
    "norm_kv",
    "swap_attn",
    "norm_st",
    "st_attn",
    "norm_c",
    "cross_attn",
    "norm_m",
    "mlp",
    "adaLN",
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # one thread: count this thread's CPU seconds, which leaves out the time other processes
    # hold the core on a loaded machine
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    model = ours().eval()
    x, t, text, mask = inputs()
    acc: dict[str, float] = defaultdict(float)
    start: dict[int, float] = {}

    def pre(mod, *_):
        start[id(mod)] = clock()

    def post(name):
        def hook(mod, *_):
            acc[name] += clock() - start[id(mod)]

        return hook

    for block in model.blocks:
        block.register_forward_pre_hook(pre)
        block.register_forward_hook(post("block"))
        for part in PARTS:
            mod = getattr(block, part, None)
            if mod is not None:
                mod.register_forward_pre_hook(pre)
                mod.register_forward_hook(post(part))
    samples = defaultdict(list)
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        for i in range(args.repeats + 2):
            acc.clear()
            t0 = clock()
            step_ours(model, x, t, text, mask)
            total = clock() - t0
            if i < 2:
                continue
            samples["step"].append(total)
            for k, v in acc.items():
                samples[k].append(v)
            samples["block, rest"].append(acc["block"] - sum(acc[p] for p in PARTS))
            samples["outside blocks"].append(total - acc["block"])
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"| part ({args.dtype}, ms per step, all blocks) | ms | share |\n|---|---:|---:|")
    for k in ("step", "block", *PARTS, "block, rest", "outside blocks"):
        if k in med:
            print(f"| {k} | {1e3 * med[k]:.1f} | {med[k] / med['step']:.0%} |")


if __name__ == "__main__":
    main()
