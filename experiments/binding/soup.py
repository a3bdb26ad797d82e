"""Weight interpolation between the shipped video model and a binding fine-tune (WiSE-FT,
Wortsman et al. 2022): does a point between them keep the fine-tune's two-object motion and
the shipped model's identity across storyboard boundaries?

    python experiments/binding/soup.py studio/default_model runs/dit_binding_anneal/pipeline OUT --alpha 0.5

OUT is the fine-tune's pipeline folder with its video transformer replaced by
``(1 - alpha) · base + alpha · fine-tune`` on every weight both have. The text refiner layers
exist only in the fine-tune, where they started as the identity (zero-initialised residual
outputs): their residual outputs are scaled by alpha, the rest kept. The image model, VAE and
scheduler are the fine-tune's (the shipped ones in these runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"
# the refiner's zero-initialised residual outputs (models/video_dit.py, TextRefinerLayer)
ZERO_INIT = (".attn.to_out.0.", ".mlp.2.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base")
    ap.add_argument("finetuned")
    ap.add_argument("out")
    ap.add_argument("--alpha", type=float, default=0.5, help="0 = base, 1 = fine-tune")
    args = ap.parse_args()
    base, tuned = load_file(Path(args.base) / WEIGHTS), load_file(Path(args.finetuned) / WEIGHTS)
    mixed = {}
    for name, w in tuned.items():
        if name in base:
            mix = (1 - args.alpha) * base[name].float() + args.alpha * w.float()
            mixed[name] = mix.to(w.dtype)
        elif any(z in name for z in ZERO_INIT):
            mixed[name] = args.alpha * w
        else:
            mixed[name] = w
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(args.finetuned, out)
    save_file(mixed, out / WEIGHTS)
    (out / "soup.json").write_text(
        json.dumps({"base": args.base, "finetuned": args.finetuned, "alpha": args.alpha}) + "\n"
    )
    print(f"{args.base} × {1 - args.alpha:g} + {args.finetuned} × {args.alpha:g} -> {out}")


if __name__ == "__main__":
    main()
