"""Does a model that passes the binding probe draw each object's motion when frame 0 is right?
The probe's clips (two objects moving differently, validation seed), frame 0 rendered and
given, the rest drawn from the true caption as the pipeline samples a clip; the pixel judge
then reads each object's motion. This separates the video model's binding from the
first-frame image model's colours and shapes, which text-to-video sampling puts first.

    python experiments/binding/i2v_check.py MODEL [MODEL ...] [--clips 32] [--steps 12]
        [--swapped-negative SCALE ...]

Prints per model: clips whose every object has its own motion, its shape and colour, and
all-correct; the rendered clips themselves as the ceiling (the judge on ground truth).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from probe import clips  # this folder's probe (the script's own directory)

from evals.contract import parse_caption
from evals.shapes import judge
from pipelines.text_to_video import ShapesVideoPipeline, to_uint8


def verdicts(videos: list[np.ndarray], captions: list[str]) -> dict[str, int]:
    out = {"motion": 0, "shape": 0, "colour": 0, "all_correct": 0}
    for frames, caption in zip(videos, captions, strict=True):
        v = judge(frames, parse_caption(caption))
        for k in out:
            out[k] += bool(v[k])
    return out


@torch.no_grad()
def drawn(folder: str, data, steps: int, swapped_negative: float = 0.0) -> list[np.ndarray]:
    """The clips drawn with frame 0 given; ``swapped_negative`` > 0: guidance at that scale
    against the motions-swapped caption instead of the empty one (a contrast on binding)."""
    pipe = ShapesVideoPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    out = []
    for i, (frames, caption, swapped) in enumerate(data):
        g = torch.Generator().manual_seed(1000 + i)
        contrast = {"negative_prompt": swapped, "guidance_scale": swapped_negative}
        video = pipe(
            caption,
            **(contrast if swapped_negative > 0 else {}),
            num_frames=frames.shape[0],
            conditioning_frames=frames[:1],
            num_inference_steps=steps,
            generator=g,
            output_type="np",
        ).frames[0]
        out.append(to_uint8(np.asarray(video)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument(
        "--swapped-negative",
        type=float,
        nargs="*",
        default=[],
        help="also draw with guidance at these scales against the swapped caption",
    )
    args = ap.parse_args()
    data = clips(args.clips)
    captions = [d[1] for d in data]
    n = len(data)
    print(f"| model ({n} clips) | motion (each object its own) | shape | colour | all correct |")
    print("|---|---:|---:|---:|---:|")
    rows = [("rendered (ceiling)", verdicts([d[0] for d in data], captions))]
    for folder in args.models:
        rows.append((folder, verdicts(drawn(folder, data, args.steps), captions)))
        for w in args.swapped_negative:
            videos = drawn(folder, data, args.steps, w)
            rows.append(
                (f"{folder}, against the swapped caption at {w}", verdicts(videos, captions))
            )
    for name, v in rows:
        cells = " | ".join(f"{v[k]}" for k in ("motion", "shape", "colour", "all_correct"))
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
