"""Would prepacked weights speed up our products? F.linear against MKL's prepacked fp32 GEMM
(``torch.ops.mkl._mkl_linear``, what inductor's frozen parameters use) at the shipped step's
shapes (tokens × batch 2 = 512 rows; widths 192 → 576 / 768 and back), on 2 threads.

    python experiments/speed/prepack.py
"""

import time

import torch
import torch.nn.functional as F


def bench(f, n: int = 200) -> float:
    for _ in range(20):
        f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, MKL {torch.backends.mkl.is_available()}")
    print(
        "| rows × in × out | F.linear µs | MKL prepacked µs | max difference |\n|---|---:|---:|---:|"
    )
    for m, k, n in [(512, 192, 576), (512, 192, 768), (512, 768, 192), (256, 192, 576)]:
        x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
        packed = torch.ops.mkl._mkl_reorder_linear_weight(w, m)
        plain = bench(lambda x=x, w=w, b=b: F.linear(x, w, b))
        pre = bench(lambda x=x, p=packed, w=w, b=b, m=m: torch.ops.mkl._mkl_linear(x, p, w, b, m))
        diff = (torch.ops.mkl._mkl_linear(x, packed, w, b, m) - F.linear(x, w, b)).abs().max()
        print(f"| {m} × {k} × {n} | {plain:.0f} | {pre:.0f} | {diff.item():.1e} |")


if __name__ == "__main__":
    main()
