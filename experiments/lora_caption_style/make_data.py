"""Issue 39's LoRA bar: 200 Shapes World clips captioned in one new style, and its held-out check.

The style is telegraphic with compass directions ("red circle, heading west, black backdrop"),
words the shipped model never trained on for motion. 13 (colour, shape, motion) triples, one
per colour-shape pair seen in clips, are held out of the training clips; the held-out suite
asks for exactly those triples (two backgrounds each), in the new style
(``style_suite.jsonl``) and, as the model's ceiling, in the shipped grammar
(``grammar_suite.jsonl``). Judged by ``studio eval shapes --suite``.

    python experiments/lora_caption_style/make_data.py --out data/lora_style
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from train.shards import write_shards
from world.shapes_world import IMAGE_ONLY_COLORS, OBJECT_COLORS, SHAPES, ShapesWorld, is_excluded

HERE = Path(__file__).parent
COMPASS = {"left": "west", "right": "east", "up": "north", "down": "south"}
MOVING = ("heading {d}", "bound {d}", "drifting {d}ward")
STILL = ("stationary", "at rest")
BACKDROP = ("{bg} backdrop", "over {bg}")
GRAMMAR_MOTION = {
    "left": "moving left",
    "right": "moving right",
    "up": "moving up",
    "down": "moving down",
    "still": "staying still",
}
MOTIONS = ("left", "right", "up", "down", "still")
BACKGROUNDS = ("black", "white", "gray", "beige")


def style_caption(color: str, shape: str, motion: str, background: str, rng) -> str:
    """One caption of the new style: ``red circle, heading west, black backdrop``."""
    if motion == "still":
        how = STILL[int(rng.integers(len(STILL)))]
    else:
        how = MOVING[int(rng.integers(len(MOVING)))].format(d=COMPASS[motion])
    where = BACKDROP[int(rng.integers(len(BACKDROP)))].format(bg=background)
    return f"{color} {shape}, {how}, {where}"


def heldout_triples() -> list[tuple[str, str, str]]:
    """One held-out motion per colour-shape pair seen in clips, the motions in rotation."""
    colors = [c for c in OBJECT_COLORS if c not in IMAGE_ONLY_COLORS]
    pairs = [(c, s) for c, s in itertools.product(colors, SHAPES) if not is_excluded(s, c)]
    return [(c, s, MOTIONS[i % len(MOTIONS)]) for i, (c, s) in enumerate(pairs)]


def write_suites() -> None:
    rng = np.random.default_rng(1)
    style, grammar = [], []
    for i, (color, shape, motion) in enumerate(heldout_triples()):
        for background in (BACKGROUNDS[i % 4], BACKGROUNDS[(i + 2) % 4]):
            expect = {
                "objects": [{"color": color, "shape": shape, "size": None, "motion": motion}],
                "background": background,
            }
            article = "an" if color[0] in "aeiou" else "a"
            prompts = {
                "style": style_caption(color, shape, motion, background, rng),
                "grammar": f"{article} {color} {shape} {GRAMMAR_MOTION[motion]} on a "
                f"{background} background",
            }
            style.append({"prompt": prompts["style"], "category": "single", "expect": expect})
            grammar.append({"prompt": prompts["grammar"], "category": "single", "expect": expect})
    for name, rows in (("style_suite", style), ("grammar_suite", grammar)):
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (HERE / f"{name}.jsonl").write_text(text)


def samples(count: int, frames: int, seed: int):
    """``count`` one-object clips, none of a held-out triple, re-captioned in the new style."""
    world = ShapesWorld(frames=frames, seed=seed, exclusions=True)
    held = set(heldout_triples())
    rng = np.random.default_rng(seed)
    index = made = 0
    while made < count:
        sample = world.sample(index, kind="video1")
        index += 1
        obj = sample.meta["objects"][0]
        if (obj["color"], obj["shape"], obj["motion"]) in held:
            continue
        text = style_caption(
            obj["color"], obj["shape"], obj["motion"], sample.meta["background"], rng
        )
        sample.caption = text
        sample.meta["caption"] = text
        made += 1
        yield sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/lora_style")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    write_suites()
    paths = write_shards(samples(args.clips, args.frames, args.seed), args.out, prefix="style")
    print(f"wrote {args.clips} clips in {len(paths)} shards to {args.out}")


if __name__ == "__main__":
    main()
