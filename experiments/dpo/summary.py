"""The gate's figures of ``gate.sh``'s folders: per category all correct / with the shape held
(counts for validation, % for held-out), and the storyboards' motion / kept / jumps ≤ 4 px.

    python experiments/dpo/summary.py OUT [OUT ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def shapes(path: Path) -> None:
    report = json.loads((path / "eval.json").read_text())
    rows = list(report["categories"].items()) + [("overall", report["overall"])]
    for name, row in rows:
        n, ok, held = row["n"], row["all_correct"], row["all_correct_held"]
        print(
            f"  {name:>12} n={n:3d}  all correct {100 * ok:5.1f} % ({round(ok * n)})"
            f"  shape held {100 * held:5.1f} % ({round(held * n)})  shape {100 * row['shape']:.0f} %"
        )


def storyboards(path: Path) -> None:
    o = json.loads((path / "storyboard_eval.json").read_text())["overall"]
    print(
        f"  motion {100 * o['scene_motion']:.1f}  kept {100 * o['identity_kept']:.1f}"
        f"  jumps<=4px {100 * o['jump_ok']:.1f}"
    )


def main() -> None:
    for out in map(Path, sys.argv[1:]):
        for path in sorted(p for p in out.iterdir() if p.is_dir()):
            print(path)
            if (path / "eval.json").is_file():
                shapes(path)
            elif (path / "storyboard_eval.json").is_file():
                storyboards(path)


if __name__ == "__main__":
    main()
