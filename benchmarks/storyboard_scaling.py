"""Does storyboard generation stay linear in time and flat in memory as videos get longer?

    python benchmarks/storyboard_scaling.py MODEL_DIR [--lengths 16 64 256] [--steps 25]
        [--window 16] [--context 3] [--candidates 1] [--height 64] [--width 64] [--device cuda]

Generates a one-scene storyboard of each length with ``pipelines.storyboard`` (after one
untimed warm-up window) and prints a Markdown table: seconds per frame, peak memory, and
both relative to the shortest length. Bars of the storyboard issue: per-frame time at 256
frames ≤ 1.2× that at 16, peak memory ≤ 1.3×.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA, and on CPU the process's peak
resident set size sampled every 5 ms during the run (both include the model's weights).

Note on the time bar: overlapping windows regenerate ``context`` frames per later window,
so per-frame cost tends to ``window / (window - context)`` times the one-window cost
(16/13 ≈ 1.23 for the default context 3; ≈ 1.33 with ``--context 4``); the "model frames /
frame" column shows the model frames computed per output frame. With ``--candidates N`` every
later window is drawn N times (one batched call), the first once.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from pipelines.storyboard import (  # noqa: E402
    DEFAULT_CONTEXT,
    Scene,
    generate_storyboard,
    plan_windows,
)
from pipelines.text_to_video import ShapesVideoPipeline  # noqa: E402

PROMPT = "a red circle moving right on a black background"


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PeakMemory:
    """Peak memory in bytes over a ``with`` block: CUDA allocator peak, or sampled CPU RSS."""

    def __init__(self, device: torch.device, interval_s: float = 0.005):
        self.cuda = device.type == "cuda"
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())


def measure(
    pipe: ShapesVideoPipeline,
    lengths: list[int],
    steps: int = 25,
    window: int = 16,
    context: int = DEFAULT_CONTEXT,
    height: int = 64,
    width: int = 64,
    seed: int = 0,
    full_windows: bool = True,
    candidates: int = 1,
) -> list[dict]:
    """Time and peak memory of a one-scene storyboard per length → one row per length."""
    kw = dict(window=window, context=context, steps=steps, height=height, width=width, seed=seed)
    kw |= dict(full_windows=full_windows, candidates=candidates)
    generate_storyboard(pipe, [Scene(PROMPT, min(window, min(lengths)))], **kw)  # warm-up
    rows = []
    for n in lengths:
        with PeakMemory(pipe.device) as mem:
            t0 = time.perf_counter()
            frames, _ = generate_storyboard(pipe, [Scene(PROMPT, n)], **kw)
            seconds = time.perf_counter() - t0
        assert len(frames) == n
        windows = plan_windows([n], window, context)
        rows.append(
            {
                "frames": n,
                "windows": len(windows),
                "model_frames_per_frame": sum(w.call_frames(window, full_windows) for w in windows)
                / n,
                "seconds": seconds,
                "seconds_per_frame": seconds / n,
                "peak_mib": mem.peak / 2**20,
            }
        )
    base = rows[0]
    for r in rows:
        r["time_ratio"] = r["seconds_per_frame"] / base["seconds_per_frame"]
        r["memory_ratio"] = r["peak_mib"] / base["peak_mib"] if base["peak_mib"] else float("nan")
    return rows


def markdown(rows: list[dict], device: str) -> str:
    lines = [
        f"Storyboard scaling on {device} (one scene; ratios relative to {rows[0]['frames']} frames)",
        "",
        "| frames | windows | model frames / frame | s | s / frame | time ratio | peak MiB | memory ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['frames']} | {r['windows']} | {r['model_frames_per_frame']:.2f} | "
            f"{r['seconds']:.2f} | {r['seconds_per_frame']:.4f} | {r['time_ratio']:.2f}× | "
            f"{r['peak_mib']:.0f} | {r['memory_ratio']:.2f}× |"
        )
    lines += ["", "Bars: time ratio ≤ 1.2× and memory ratio ≤ 1.3× at 256 frames vs 16."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a saved ShapesVideoPipeline folder")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--context", type=int, default=DEFAULT_CONTEXT)
    parser.add_argument(
        "--full-windows", action=argparse.BooleanOptionalAction, default=True
    )  # as generate_storyboard: every window at --window frames, cut to what is needed
    parser.add_argument(
        "--candidates", type=int, default=1, help="draws per later window (as --candidates)"
    )
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    args = parser.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = ShapesVideoPipeline.from_pretrained(args.model).to(device)
    pipe.set_progress_bar_config(disable=True)
    rows = measure(
        pipe,
        sorted(args.lengths),
        steps=args.steps,
        window=args.window,
        context=args.context,
        height=args.height,
        width=args.width,
        full_windows=args.full_windows,
        candidates=args.candidates,
    )
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({device})"
    print(markdown(rows, name))
    return rows


if __name__ == "__main__":
    main()
