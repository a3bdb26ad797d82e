"""CPU seconds per aten op in one denoising step (batch 2, as benchmarks/perf.py), one thread,
for the shipped transformer and the matched Latte: a TorchDispatchMode times each op with the
thread's CPU clock, so time other processes hold the core is left out (a loaded machine).
Median over repeats of the per-step totals.

    python experiments/speed/op_cpu_time.py [--dtype fp32|bf16] [--repeats 7] [--rows 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.perf import inputs, matched_latte, n_params, ours, step_latte, step_ours  # noqa: E402


class OpTimes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.thread_time()
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        self.seconds[name] += time.thread_time() - start
        self.calls[name] += 1
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    a = ours().eval()
    b, layers = matched_latte(n_params(a))
    x, t, text, mask = inputs()
    runs = {
        "ours": lambda: step_ours(a, x, t, text, mask),
        f"Latte ({layers} layers)": lambda: step_latte(b, x, t, text, mask),
    }
    per = {k: defaultdict(list) for k in runs}
    calls = {}
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        for fn in runs.values():
            fn()
        for _ in range(args.repeats):
            for k, fn in runs.items():
                with OpTimes() as mode:
                    fn()
                for op, s in mode.seconds.items():
                    per[k][op].append(s)
                per[k]["(all ops)"].append(sum(mode.seconds.values()))
                calls[k] = dict(mode.calls)
    for k in runs:
        med = {op: statistics.median(v) for op, v in per[k].items()}
        total = med.pop("(all ops)")
        print(f"\n{k}, {args.dtype}: {1e3 * total:.1f} ms in {sum(calls[k].values())} ops")
        print("| op | ms | calls | share |\n|---|---:|---:|---:|")
        for op, s in sorted(med.items(), key=lambda kv: -kv[1])[: args.rows]:
            print(f"| {op} | {1e3 * s:.1f} | {calls[k].get(op, 0)} | {s / total:.0%} |")


if __name__ == "__main__":
    main()
