"""A uniform soup (Wortsman et al. 2022) of pipelines that share an architecture: the video
transformers' weights averaged, everything else taken from the first.

    python experiments/elements_vae/soup.py OUT PIPELINE [PIPELINE ...]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("pipelines", type=Path, nargs="+")
    args = parser.parse_args()
    states = [load_file(p / WEIGHTS) for p in args.pipelines]
    if any(s.keys() != states[0].keys() for s in states):
        raise SystemExit("the pipelines' transformers have different parameters")
    soup = {
        k: sum(s[k].float() for s in states).div(len(states)).to(states[0][k].dtype)
        for k in states[0]
    }
    shutil.copytree(args.pipelines[0], args.out, ignore=shutil.ignore_patterns("pipeline.py"))
    save_file(soup, args.out / WEIGHTS)
    print(f"{args.out}: mean of {len(states)} transformers")


if __name__ == "__main__":
    main()
