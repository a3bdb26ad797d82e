"""The shipped model's text encoder in float16, for a lent GPU machine (``run.sh``).

    python benchmarks/gpu_train/pack_te.py [DEST]     # default .carry/minilm-fp16 (ignored)

A device call carries at most 64 MiB of ignored files; the packaged MiniLM is 91 MB in
float32, 45 MB here. The trainer loads it back in float32; the printed check is how far its
caption states are from the float32 encoder's on training captions (float16 rounding of the
weights only).
"""

import sys
from pathlib import Path

import numpy as np
import torch

from pipelines.components import encode_text, load_text_encoder
from world.shapes_world import ShapesWorld, caption

LIMIT_MB = 60  # what may travel beside the run's other carried files


def main() -> None:
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else ".carry/minilm-fp16")
    encoder, tokenizer = load_text_encoder("minilm")
    encoder.half().save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 1e6
    if size > LIMIT_MB:
        sys.exit(f"{dest} is {size:.1f} MB, over {LIMIT_MB} MB")

    # what the float16 weights change in the caption states the DiT reads
    world = ShapesWorld(size=64, frames=16, seed=5)
    rng = np.random.default_rng(0)
    captions = [caption(world.sample_spec(rng, "video2"), rng) for _ in range(32)]
    full, _ = load_text_encoder("minilm")
    packed, _ = load_text_encoder(str(dest))
    with torch.no_grad():
        a, mask = encode_text(full, tokenizer, captions, 64, "cpu")
        b, _ = encode_text(packed, tokenizer, captions, 64, "cpu")
    keep = mask.bool()
    rel = ((a - b).norm(dim=-1) / a.norm(dim=-1).clamp_min(1e-6))[keep]
    print(
        f"{dest}: {size:.1f} MB; caption states against float32 MiniLM: relative error "
        f"median {rel.median():.1e}, max {rel.max():.1e} ({int(keep.sum())} tokens)"
    )


if __name__ == "__main__":
    main()
