"""A saved pipeline without its reference path: how a video model whose reference path did not
pass its gate ships as the text-to-video default (docs/training.md, the shipped lineage).

The reference path only runs when references are given, so every clip drawn from text alone
(and every storyboard without ``references:``) is unchanged; :func:`drop_reference_path`
checks that on a forward pass before anything is written. A request with references on the
copy gets the clear "this model takes no references" of a model that never had the path.

    python -m train.text_only runs/dit_c16_context_blur/pipeline OUT
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from models.video_dit import VideoDiT
from pipelines.text_to_video import CUSTOM_PIPELINE_FILE


def drop_reference_path(model: VideoDiT) -> VideoDiT:
    """``model`` rebuilt with ``max_references = 0``: the same weights but the reference path's
    (reference encoder, slots, reference cross-attention). Raises if a text-only forward pass
    of the two differs."""
    config = {k: v for k, v in model.config.items() if not k.startswith("_")}
    plain = VideoDiT(**{**config, "max_references": 0}).eval()
    if model.dtype != plain.dtype:
        plain.to(model.dtype)
    state = model.state_dict()  # the same config: a superset of the text-only model's keys
    plain.load_state_dict({k: state[k] for k in plain.state_dict()})

    # The check: the same text-only output from both, on random latents and text.
    gen = torch.Generator().manual_seed(0)
    c, s = model.config.in_channels, model.config.sample_size
    latents = torch.randn(1, c, 4, s, s, generator=gen).to(model.dtype)
    text = torch.randn(1, 6, model.config.text_dim, generator=gen).to(model.dtype)
    t = torch.tensor([0.5])
    extra = {"guidance": torch.tensor([4.0])} if model.config.get("guidance_embeds") else {}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        want = model(latents, t, text, **extra).sample
        got = plain(latents, t, text, **extra).sample
    model.train(was_training)
    if not torch.equal(want, got):
        raise ValueError("the text-only model's output differs from the model's")
    return plain


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline", type=Path, help="a saved pipeline (studio train dit's)")
    parser.add_argument("out", type=Path, help="the folder to write (must not exist)")
    args = parser.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; name a new folder")
    source = args.pipeline / "transformer"
    model = VideoDiT.from_pretrained(source, use_safetensors=True)
    if model.config.max_references < 1:
        raise SystemExit(f"{source}: it has no reference path")
    plain = drop_reference_path(model)
    # Everything else is copied as saved (no diffusers hook file: this package loads it).
    shutil.copytree(
        args.pipeline,
        args.out,
        ignore=shutil.ignore_patterns("transformer", f"{CUSTOM_PIPELINE_FILE}.py"),
    )
    plain.save_pretrained(args.out / "transformer")
    size = sum(f.stat().st_size for f in args.out.rglob("*.safetensors")) / 2**20
    print(f"{args.pipeline} -> {args.out}: reference path dropped, {size:.1f} MiB of weights")
    return args.out


if __name__ == "__main__":
    main()
