"""The folder shipped as ``studio/elements_model`` (docs/elements.md), from a pipeline of the
elements run: its video transformer (which draws clips with references, frame 0 included)
stored in fp16, its VAE, its scheduler and sampling settings; no image model (requests
without references run on the shipped model) and no diffusers hook file.

    python experiments/elements_vae/make_elements_model.py runs/dit_c16_elements_more/pipeline OUT [--fp32]

Ship only through the gate in dit_c16_elements_more.yaml, with the elements suite judged on
OUT itself (fp16 within 2 points of fp32).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pipelines.text_to_video import ShapesVideoPipeline


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--fp32", action="store_true", help="keep the transformer in fp32")
    args = parser.parse_args(argv)
    pipe = ShapesVideoPipeline.from_pretrained(args.pipeline)
    if pipe.max_references < 1:
        raise SystemExit(f"{args.pipeline}: its transformer takes no references")
    pipe.register_modules(image_transformer=None)
    if not args.fp32:
        pipe.transformer.to(torch.float16)
    pipe.save_pretrained(args.out, save_text_encoder=False)
    (args.out / "pipeline.py").unlink(missing_ok=True)
    size = sum(f.stat().st_size for f in args.out.rglob("*.safetensors")) / 2**20
    print(f"{args.pipeline} -> {args.out}: {size:.1f} MiB of weights")
    return args.out


if __name__ == "__main__":
    main()
