"""bf16 vs fp32 matrix-product speed on this CPU, side by side in one run.

    python benchmarks/matmul_dtype.py [N]

Why it matters: `mixed_precision: auto` turns bf16 autocast on only where the CPU has AMX or
AVX512-BF16; elsewhere PyTorch emulates bf16 GEMMs and they are far slower than fp32.
"""

from __future__ import annotations

import sys
import time

import torch

from train.config import cpu_has_fast_bf16


def gflops(dtype: torch.dtype, n: int, repeats: int = 3) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def main(n: int = 1024) -> None:
    fp32, bf16 = gflops(torch.float32, n), gflops(torch.bfloat16, n, repeats=1)
    print(f"| matmul {n}³ | fp32 GFLOP/s | bf16 GFLOP/s | bf16/fp32 | fast bf16 detected |")
    print("|---|---|---|---|---|")
    print(
        f"| {torch.get_num_threads()} threads | {fp32:.1f} | {bf16:.2f} | {bf16 / fp32:.4f} | {cpu_has_fast_bf16()} |"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
