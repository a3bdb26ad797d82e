"""Preference pairs for Diffusion-DPO on the video model: the render wins, the model's own
continuation of the render's frame 0 loses (issue 35, lever 2, with the project's pixel judge
as the verifier instead of the scorer, which does not yet judge generated clips: issue 34).

    python experiments/dpo/pairs.py OUT [--n 400] [--seed 50] [--two-object-prob 0.5]
        [--model studio/default_model] [--steps 12] [--draws K] [--phrasing P]

For ``--n`` training prompts (``train.scorer_data.training_prompts``: the training caption
grammar, layouts with the contract's exclusions, never a prompt of ``evals/suites``), the layout
is rendered, its frame 0 given to the shipped video model, and the rest drawn from the caption
as image-first sampling draws a clip (``conditioning_frames``, ``--steps`` Euler steps,
guidance 3). Both clips are stored as latents (the loser's frame 0 is the winner's: the same
given frame), with the judge's verdict on the drawn clip (``all_correct``, ``shape_held``, ...).
Written in chunks of 10 (``OUT/pairs_KKKK.pt``: ``win``, ``lose`` (N, C, F, h, w) float16 and
``meta``, each written whole); a rerun resumes. ``OUT/prompts.jsonl``: the prompt lines with
their layouts (``spec``), which ``train_dpo.py --phrasing`` captions afresh.

``--draws K`` (run F): both clips of a pair are the model's own. Each prompt's frame 0 is
continued K times (one batched call, K seeds); the judge splits the draws into right (all
correct with the shape held) and wrong, and the prompt gives min(#right, #wrong) pairs, right
draw over wrong draw (a prompt whose draws all agree gives none); ``meta`` holds the loser's
verdict. ``--phrasing P``: each prompt is captioned afresh with WordNet phrasings at chance P
(``caption(..., wordnet_prob=P)``) where that caption reads back as its layout and is no
evaluation prompt, so the pairs are drawn from the lineage's more varied captions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from evals.shapes import judge
from pipelines.text_to_video import ShapesVideoPipeline, to_uint8
from train.scorer_data import expectation_of, suite_prompts, training_prompts, write_prompts
from world.shapes_world import ClipSpec, caption, render

CHUNK = 10
VERDICT_KEYS = ("colour", "shape", "motion", "count", "all_correct", "shape_held")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--seed", type=int, default=50, help="prompt seed (scorer data used 34, 35)")
    ap.add_argument("--two-object-prob", type=float, default=0.5)
    ap.add_argument("--model", default="studio/default_model")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--draws", type=int, default=0, metavar="K")
    ap.add_argument("--phrasing", type=float, default=0.0, metavar="P")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = training_prompts(args.n, seed=args.seed, two_object_prob=args.two_object_prob)
    if args.phrasing > 0:
        rows = [rephrased(row, args.seed, i, args.phrasing) for i, row in enumerate(rows)]
    write_prompts(out / "prompts.jsonl", rows)
    pipe = ShapesVideoPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    for start in range(0, len(rows), CHUNK):
        path = out / f"pairs_{start // CHUNK:04d}.pt"
        if path.is_file():
            continue
        winners, losers, meta = [], [], []
        for i, row in enumerate(rows[start : start + CHUNK], start=start):
            spec = ClipSpec.from_dict(row["spec"])
            frames = render(spec)  # (F, S, S, 3) uint8
            if args.draws:
                pairs = own_pairs(pipe, row, spec, frames, args.draws, args.steps, i)
                for win, lose, verdict in pairs:
                    winners.append(win.half())
                    losers.append(lose.half())
                    meta.append({"prompt": row["prompt"], "category": row["category"], **verdict})
                continue
            pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            with torch.no_grad():
                win = pipe.encode_frames(pixels[None]).float()  # (1, C, F, h, w)
                lose = pipe(
                    row["prompt"],
                    num_frames=frames.shape[0],
                    conditioning_frames=frames[:1],
                    num_inference_steps=args.steps,
                    generator=torch.Generator().manual_seed(100_000 + i),
                    output_type="latent",
                ).frames.float()
                lose[:, :, :1] = win[:, :, :1]  # the same given frame, exactly
                drawn = to_uint8(pipe.decode_latents(lose)[0].permute(0, 2, 3, 1).numpy())
            verdict = judge(drawn, expectation_of(spec, row["prompt"]))
            winners.append(win[0].half())
            losers.append(lose[0].half())
            meta.append(
                {
                    "prompt": row["prompt"],
                    "category": row["category"],
                    **{k: bool(verdict[k]) for k in VERDICT_KEYS},
                }
            )
        if not meta:  # no prompt of the chunk gave a pair: an empty chunk marks it done
            winners, losers = [torch.zeros(0)], [torch.zeros(0)]
        tmp = path.with_suffix(".tmp")
        torch.save({"win": torch.stack(winners), "lose": torch.stack(losers), "meta": meta}, tmp)
        tmp.replace(path)  # a chunk is there whole or not at all
        right = np.mean([m["all_correct"] and m["shape_held"] for m in meta]) if meta else 0.0
        print(f"{path.name}: {len(meta)} pairs, losing clips right (shape held) {right:.0%}")


def rephrased(row: dict, seed: int, i: int, p: float) -> dict:
    """``row`` captioned afresh with WordNet phrasings at chance ``p``, where that caption reads
    back as its layout and is no evaluation prompt; else ``row`` as it was."""
    spec = ClipSpec.from_dict(row["spec"])
    text = caption(spec, np.random.default_rng([seed, i, 7]), wordnet_prob=p)
    try:
        exp = expectation_of(spec, text)
    except ValueError:
        return row
    if text.strip().lower() in suite_prompts():
        return row
    return {**row, "prompt": text, "expect": exp.to_dict()}


def own_pairs(pipe, row, spec, frames, draws, steps, i):
    """[(win, lose, loser's verdict)]: ``draws`` continuations of the rendered frame 0, judged;
    right draws paired with wrong ones in draw order."""
    with torch.no_grad():
        given = pipe.encode_frames(
            torch.from_numpy(frames[:1]).permute(0, 3, 1, 2).float()[None] / 127.5 - 1.0
        ).float()  # (1, C, 1, h, w)
        clips = pipe(
            [row["prompt"]] * draws,
            num_frames=frames.shape[0],
            conditioning_frames=frames[:1],
            num_inference_steps=steps,
            generator=[torch.Generator().manual_seed(100_000 * (k + 1) + i) for k in range(draws)],
            output_type="latent",
        ).frames.float()  # (K, C, F, h, w)
        clips[:, :, :1] = given[:, :, :1]  # the same given frame, exactly
        videos = to_uint8(pipe.decode_latents(clips).permute(0, 1, 3, 4, 2).numpy())
    exp = expectation_of(spec, row["prompt"])
    right, wrong = [], []
    for k in range(draws):
        verdict = judge(videos[k], exp)
        v = {key: bool(verdict[key]) for key in VERDICT_KEYS}
        (right if v["all_correct"] and v["shape_held"] else wrong).append((clips[k], v))
    return [(w[0], lo[0], lo[1]) for w, lo in zip(right, wrong, strict=False)]


if __name__ == "__main__":
    main()
