"""Does a model bind each object's motion to it? A loss probe, no generation: two-object
validation clips (Shapes World at a seed no training cache or suite draws) whose objects move
differently, noised to t, first frame given clean as image-first sampling gives it; the
object-latent error under the true caption against the caption with the motions swapped.
A model that reads which object moves where has the lower error under the truth.

    python experiments/binding/probe.py MODEL [MODEL ...] [--clips 96] [--t 0.7 0.95 0.99]

MODEL: a pipeline folder (studio/default_model, runs/dit_binding/pipeline), or a training
checkpoint folder (runs/dit_binding/checkpoints/step-0000400: its raw, not EMA, transformer
weights in the shipped pipeline). Prints per t the share of clips where the truth wins and the
mean log(e_swapped / e_true).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from models.video_dit import VideoDiT
from pipelines.components import encode_text
from pipelines.text_to_video import ShapesVideoPipeline
from train.latent_cache import _spec, encode_videos
from train.train_dit import VALIDATION_SEED, _spec_caption, foreground_mask, swapped_motions
from world.shapes_world import ShapesWorld

PROBE_SEED = VALIDATION_SEED + 35


def clips(n: int, negative=swapped_motions):
    """n two-object validation clips (frames, caption, negative caption) whose spec has a
    ``negative`` (a spec → spec or None; by default the motions swapped), in the same words."""
    world = ShapesWorld(size=64, frames=16, seed=PROBE_SEED)
    out, i = [], 0
    while len(out) < n:
        sample = world.sample(i, kind="video2")
        i += 1
        spec = _spec(sample)
        swapped = negative(spec)
        if swapped is None:
            continue
        rng = np.random.default_rng(i)
        twin = copy.deepcopy(rng)
        out.append(
            (sample.frames, _spec_caption(spec, rng, False), _spec_caption(swapped, twin, False))
        )
    return out


@torch.no_grad()
def probe(folder: str, data, ts: list[float], batch: int = 16) -> dict[float, tuple[float, float]]:
    if (Path(folder) / "model.safetensors").is_file():  # a checkpoint of a run
        pipe = ShapesVideoPipeline.from_pretrained("studio/default_model")
        state = load_file(str(Path(folder) / "model.safetensors"))
        layers = len({k.split(".")[1] for k in state if k.startswith("text_refiner.")})
        if layers:  # a run that added text refiner layers
            config = {**pipe.transformer.config, "text_refiner_layers": layers}
            config.pop("_use_default_values", None)  # else diffusers keeps the default 0
            pipe.transformer = VideoDiT.from_config(config)
        pipe.transformer.load_state_dict(state)
    else:
        pipe = ShapesVideoPipeline.from_pretrained(folder)
    model = pipe.transformer.eval()
    x0, true, swap, noise = encoded(pipe, data)
    given = torch.zeros(x0.shape[0], x0.shape[2], dtype=torch.bool)
    given[:, 0] = True
    objects = foreground_mask(x0, 1.5) * (~given)[:, None, :, None, None]
    results = {}
    for t in ts:
        xt = torch.where(given[:, None, :, None, None], x0, (1 - t) * x0 + t * noise)
        results[t] = truth_wins(model, x0, xt, noise, t, objects, true, swap, given, batch)
    return results


def encoded(pipe, data):
    """The probe's (frames, caption, negative caption) through the pipeline's VAE and text
    encoder → latents (N, C, F, h, w), (text, mask) of the captions and of the negatives, and
    the probe's fixed noise."""
    pixels = torch.from_numpy(np.stack([d[0] for d in data])).permute(0, 1, 4, 2, 3)
    x0 = encode_videos(pipe.vae, pixels.float() / 127.5 - 1.0).float()
    true = encode_text(pipe.text_encoder, pipe.tokenizer, [d[1] for d in data])
    swap = encode_text(pipe.text_encoder, pipe.tokenizer, [d[2] for d in data])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(PROBE_SEED))
    return x0, true, swap, noise


def truth_wins(
    model, x0, xt, noise, t: float, objects, true, swap, given=None, batch: int = 16
) -> tuple[float, float]:
    """The share of clips whose object-latent flow error is lower under the ``true`` (text,
    mask) than under the ``swap`` one, and the mean log(e_swap / e_true); ``given`` (N, F) the
    frames given clean (None: an image model, nothing given)."""
    errs = []
    for text, mask in (true, swap):
        e = []
        for s in range(0, len(x0), batch):
            sl = slice(s, s + batch)
            tt = torch.full((xt[sl].shape[0],), t)
            kw = {} if given is None else {"frame_mask": given[sl]}
            out = model(xt[sl], tt * 1000, text[sl], mask[sl], **kw).sample
            v = model.to_velocity(out.float(), xt[sl], tt)
            err = (v - (noise[sl] - x0[sl])) ** 2 * objects[sl]
            e.append(err.sum(dim=(1, 2, 3, 4)) / objects[sl].sum(dim=(1, 2, 3, 4)).clamp_min(1))
        errs.append(torch.cat(e))
    e_true, e_swap = errs
    return (e_true < e_swap).float().mean().item(), torch.log(e_swap / e_true).mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--t", type=float, nargs="+", default=[0.7, 0.95, 0.99])
    args = ap.parse_args()
    data = clips(args.clips)
    for folder in args.models:
        for t, (wins, ratio) in probe(folder, data, args.t).items():
            print(
                f"{folder}  t={t:.2f}  truth wins {wins:.2f}  mean log(e_swap/e_true) {ratio:+.3f}"
            )


if __name__ == "__main__":
    main()
