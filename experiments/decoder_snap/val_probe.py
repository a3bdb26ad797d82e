"""Judge decoders on the same generated latents (validation prompts only).

    python experiments/decoder_snap/val_probe.py generate LATENTS.pt [--model M] [--samples 4]
    python experiments/decoder_snap/val_probe.py judge LATENTS.pt PIPELINE_OR_VAE...

``generate`` samples `evals/suites/shapes_val.jsonl` with the model's default sampling and
keeps the latents; ``judge`` decodes them with each given pipeline's VAE and prints the
judge's table per category (frames judged directly, without the MP4 round trip), so two
decoders are compared on exactly the same clips.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from evals.contract import Expectation
from evals.shapes import judge
from pipelines.latent_space import LatentSpace
from pipelines.text_to_video import ShapesVideoPipeline, to_uint8

SUITE = Path("evals/suites/shapes_val.jsonl")
KEYS = ("colour", "shape", "motion", "count", "all_correct", "all_correct_held")


def generate(out: str, model: str, samples: int, seed: int) -> None:
    pipe = ShapesVideoPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    entries = [json.loads(line) for line in SUITE.read_text().splitlines() if line.strip()]
    latents = []
    for i, e in enumerate(entries):
        gens = [torch.Generator().manual_seed(seed + 1000 * i + s) for s in range(samples)]
        z = pipe([e["prompt"]] * samples, generator=gens, output_type="latent").frames
        latents.append(z)
        print(f"{i + 1}/{len(entries)}", flush=True)
    torch.save({"entries": entries, "latents": torch.stack(latents), "model": model}, out)


def judge_all(path: str, decoders: list[str]) -> None:
    data = torch.load(path, weights_only=True)
    entries, latents = data["entries"], data["latents"]  # (P, S, C, F, h, w)
    for dec in decoders:
        root = Path(dec)
        vae = AutoencoderKL.from_pretrained(root / "vae" if (root / "vae").is_dir() else root)
        space = LatentSpace(vae.eval())
        tally: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for e, z in zip(entries, latents, strict=True):
            expectation = Expectation.from_dict(e["expect"], e["category"])
            with torch.no_grad():
                video = space.decode(z)  # (S, F, 3, H, W)
            for clip in video.permute(0, 1, 3, 4, 2).numpy():
                verdict = judge(to_uint8(clip), expectation)
                for cat in (e["category"], "overall"):
                    tally[cat]["n"] += 1
                    for k in KEYS:
                        tally[cat][k] += bool(verdict[k])
        print(f"\n{dec}")
        print("| category | n | " + " | ".join(KEYS) + " |")
        for cat, t in tally.items():
            cells = " | ".join(f"{100 * t[k] / t['n']:.0f}" for k in KEYS)
            print(f"| {cat} | {t['n']} | {cells} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("out")
    g.add_argument("--model", default="studio/default_model")
    g.add_argument("--samples", type=int, default=4)
    g.add_argument("--seed", type=int, default=500)
    j = sub.add_parser("judge")
    j.add_argument("latents")
    j.add_argument("decoders", nargs="+")
    args = ap.parse_args()
    if args.cmd == "generate":
        generate(args.out, args.model, args.samples, args.seed)
    else:
        judge_all(args.latents, args.decoders)


if __name__ == "__main__":
    main()
