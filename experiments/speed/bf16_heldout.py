"""The held-out table with the generator under bf16 autocast (issue 36, item 5).

    python experiments/speed/bf16_heldout.py runs/eval_bf16

Runs ``studio eval shapes OUT --generate --samples 2 --seed 1000 --steps 12`` in this process
inside ``torch.autocast("cpu", dtype=torch.bfloat16)`` (the transformers' products in bf16,
the attention in fp32 as models/attention.py does under CPU autocast; the VAE too). Compare
with the same command without autocast (`runs/eval_euler12`): same seeds, so any difference
is the precision's.
"""

import sys

import torch

from studio.cli import main

if __name__ == "__main__":
    out = sys.argv[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        code = main(
            [
                "eval",
                "shapes",
                out,
                "--generate",
                "--samples",
                "2",
                "--seed",
                "1000",
                "--steps",
                "12",
                "--quiet",
            ]
        )
    sys.exit(code)
