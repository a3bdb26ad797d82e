"""Does the first-frame image model bind each object's shape to it? The probe of probe.py for
frame 0: two-object validation clips' first frames (Shapes World at the probe's seed) whose
objects differ in shape, noised to t; the image model's error on the object latents under the
clip's true caption against the caption with the two objects' shapes swapped, same words
otherwise (a colour swap would be the same negative in other words: a caption places no
object). A model that reads which object is which shape has the lower error under the truth.

    python experiments/binding/image_probe.py MODEL [MODEL ...] [--t 0.5 0.7 0.9]

MODEL: a pipeline folder whose ``image_transformer`` is judged (studio/default_model).
"""

from __future__ import annotations

import argparse

import torch
from probe import clips, encoded, truth_wins  # this folder's probe (the script's own directory)

from pipelines.text_to_video import ShapesVideoPipeline
from train.train_dit import foreground_mask


def swapped_shapes(spec: dict) -> dict | None:
    """The two-object spec with its objects' shapes swapped; None when they share a shape."""
    objects = spec["objects"]
    if len(objects) != 2 or objects[0]["shape"] == objects[1]["shape"]:
        return None
    a, b = objects
    return dict(spec, objects=[dict(a, shape=b["shape"]), dict(b, shape=a["shape"])])


def first_frames(n: int):
    """The probe's clips whose objects differ in shape, frame 0 only, shapes swapped."""
    return [(frames[:1], true, swap) for frames, true, swap in clips(n, swapped_shapes)]


@torch.no_grad()
def probe(pipe, data, ts: list[float], batch: int = 32) -> dict[float, tuple[float, float]]:
    model = pipe.image_transformer.eval()
    x0, true, swap, noise = encoded(pipe, data)  # x0 (N, C, 1, h, w)
    objects = foreground_mask(x0, 1.5)
    return {
        t: truth_wins(
            model, x0, (1 - t) * x0 + t * noise, noise, t, objects, true, swap, batch=batch
        )
        for t in ts
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--t", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    args = ap.parse_args()
    data = first_frames(args.clips)
    for folder in args.models:
        pipe = ShapesVideoPipeline.from_pretrained(folder)
        for t, (wins, ratio) in probe(pipe, data, args.t).items():
            print(
                f"{folder}  t={t:.2f}  truth wins {wins:.2f}  mean log(e_swap/e_true) {ratio:+.3f}"
            )


if __name__ == "__main__":
    main()
