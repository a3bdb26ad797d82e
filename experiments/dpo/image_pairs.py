"""Preference pairs for Diffusion-DPO of the first-frame image model (run G): the model's own
frame-0 draws, right against wrong by the project's pixel judge, on training prompts only.

    python experiments/dpo/image_pairs.py OUT [--n 1200] [--seed 70] [--draws 4]
        [--image-prob 0.4] [--phrasing 0.5] [--model studio/default_model] [--batch 32]

Prompts as the image model trained (``configs/train/dit_shapes_image.yaml``): a share
``--image-prob`` of image layouts with image captions (the only place purple appears), the
rest video layouts of one or two objects (``train.scorer_data.training_prompts``, the
contract's exclusions, never an evaluation prompt) with their video captions, WordNet motion
phrasings at chance ``--phrasing`` where they read back. Each prompt's frame 0 is drawn
``--draws`` times by the image model with its sampler (``num_frames=1``) at ``--steps`` and
``--guidance`` (run G: 12 and 3, the call's defaults, not the shipped first frame's 25 and 2), each judged as an image (colour, shape, size where asked,
count, background; motion ignored). A prompt gives min(#right, #wrong) pairs, right draw over
wrong draw in draw order (``win``, ``lose``: (N, C, 1, h, w) float16; ``meta``: prompt,
category, the loser's verdict). Chunks of ``--batch`` prompts (``OUT/pairs_KKKK.pt``, written
whole; a rerun resumes); ``OUT/prompts.jsonl`` holds the prompts with their layouts.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from pairs import rephrased  # this folder's pairs.py (the script's own directory)

from evals.contract import Expectation, parse_caption
from evals.shapes import judge
from pipelines.text_to_video import ShapesVideoPipeline, to_uint8
from train.scorer_data import suite_prompts, training_prompts, write_prompts
from world.shapes_world import ShapesWorld, caption

VERDICT_KEYS = ("colour", "shape", "count", "background")


def image_rows(n: int, seed: int) -> list[dict]:
    """``n`` image layouts (purple allowed, the unseen pairs never) with image captions."""
    world = ShapesWorld(size=64, frames=16, seed=seed, exclusions=True)
    taken, rows = suite_prompts(), []
    for i in range(100 * n + 100):
        if len(rows) == n:
            break
        rng = np.random.default_rng([seed, i, 3])
        spec = world.sample_spec(rng, "image")
        text = caption(spec, rng, image=True)
        if text.strip().lower() in taken:
            continue
        exp = parse_caption(text)  # an image caption names no motion
        said = sorted((o.color, o.shape) for o in exp.objects)
        if (
            said != sorted((o.color, o.shape) for o in spec.objects)
            or exp.background != spec.background
        ):
            raise ValueError(f"caption {text!r} does not read back as its layout")
        rows.append(
            {
                "prompt": text,
                "category": "train_image",
                "expect": exp.to_dict(),
                "spec": spec.to_dict(),
            }
        )
    return rows


def frame_verdict(frame: np.ndarray, expect: dict) -> dict[str, bool]:
    """One uint8 (1, H, W, 3) frame judged against a prompt's expectation, motion ignored."""
    exp = copy.deepcopy(expect)
    for o in exp["objects"]:
        o["motion"] = None
    r = judge(frame, Expectation.from_dict(exp))
    v = {k: bool(r[k]) for k in VERDICT_KEYS}
    v["size"] = r["size"] is not False
    v["right"] = all(v.values())
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=70)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--image-prob", type=float, default=0.4)
    ap.add_argument("--two-object-prob", type=float, default=0.5)
    ap.add_argument("--phrasing", type=float, default=0.5)
    ap.add_argument("--model", default="studio/default_model")
    ap.add_argument("--batch", type=int, default=32)
    # run G drew at the pipeline call's defaults (12 steps, guidance 3); the shipped first
    # frame is 25 steps at guidance 2 (first_frame_steps, first_frame_guidance)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--guidance", type=float, default=3.0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_image = round(args.n * args.image_prob)
    video = training_prompts(args.n - n_image, seed=args.seed, two_object_prob=args.two_object_prob)
    video = [rephrased(r, args.seed, i, args.phrasing) for i, r in enumerate(video)]
    rows = video + image_rows(n_image, args.seed)
    order = np.random.default_rng(args.seed).permutation(len(rows))
    rows = [rows[i] for i in order]  # chunks mix the kinds
    write_prompts(out / "prompts.jsonl", rows)
    pipe = ShapesVideoPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    for start in range(0, len(rows), args.batch):
        path = out / f"pairs_{start // args.batch:04d}.pt"
        if path.is_file():
            continue
        chunk = rows[start : start + args.batch]
        prompts = [r["prompt"] for r in chunk]
        draws, verdicts = [], []
        for k in range(args.draws):
            gens = [
                torch.Generator().manual_seed(1_000_000 * (k + 1) + start + j)
                for j in range(len(chunk))
            ]
            with torch.no_grad():
                lat = pipe(
                    prompts,
                    num_frames=1,
                    num_inference_steps=args.steps,
                    guidance_scale=args.guidance,
                    generator=gens,
                    output_type="latent",
                ).frames
                frames = to_uint8(pipe.decode_latents(lat.float()).permute(0, 1, 3, 4, 2).numpy())
            draws.append(lat.float())  # (B, C, 1, h, w)
            verdicts.append([frame_verdict(frames[j], r["expect"]) for j, r in enumerate(chunk)])
        winners, losers, meta = [], [], []
        n_right = 0
        for j, row in enumerate(chunk):
            right = [k for k in range(args.draws) if verdicts[k][j]["right"]]
            wrong = [k for k in range(args.draws) if not verdicts[k][j]["right"]]
            n_right += len(right)
            for kw, kl in zip(right, wrong, strict=False):
                winners.append(draws[kw][j].half())
                losers.append(draws[kl][j].half())
                meta.append(
                    {"prompt": row["prompt"], "category": row["category"], **verdicts[kl][j]}
                )
        empty = torch.zeros(0, *draws[0].shape[1:], dtype=torch.float16)
        tmp = path.with_suffix(".tmp")
        torch.save(
            {
                "win": torch.stack(winners) if winners else empty,
                "lose": torch.stack(losers) if losers else empty,
                "meta": meta,
            },
            tmp,
        )
        tmp.replace(path)  # a chunk is there whole or not at all
        print(
            f"{path.name}: {len(meta)} pairs; draws right {n_right}/{len(chunk) * args.draws}",
            flush=True,
        )


if __name__ == "__main__":
    main()
