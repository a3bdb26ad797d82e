"""Composable guidance (Liu et al. 2022) for frame 0 of two-object prompts: does adding each
object's own caption to the guidance put both objects right in the first frame?

    python experiments/binding/compose_probe.py [MODEL]

The 12 two-object rows of evals/suites/shapes_val.jsonl (validation prompts). Each object's caption is built from the row's expectation ("a big red
square on a gray background"); frame 0 drawn by the first-frame image model with its shipped
sampler (stochastic Euler, image shift, 25 steps), 4 seeds, judged as first_frame.py does.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

sys.path.insert(0, "experiments/first_frame")
from first_frame import frame_right

from pipelines.text_to_video import to_uint8
from studio.generate import load_pipeline

torch.set_num_threads(1)
pipe = load_pipeline(sys.argv[1] if len(sys.argv) > 1 else "studio/default_model")
rows = Path("evals/suites/shapes_val.jsonl").read_text().splitlines()
entries = [e for e in map(json.loads, filter(None, rows)) if e["category"] == "two"]
SEEDS = 4
model = pipe.image_transformer
sched = FlowMatchEulerDiscreteScheduler.from_config(
    pipe.scheduler.config, shift=pipe.config.image_shift, stochastic_sampling=True
)


def sub(o, bg):
    size = {"large": "big ", "small": "small "}.get(o.get("size"), "")
    return f"a {size}{o['color']} {o['shape']} on a {bg} background"


VARIANTS = {
    "full g2": lambda vu, vf, vs: vu + 2 * (vf - vu),
    "and g2 each": lambda vu, vf, vs: vu + 2 * sum(v - vu for v in vs),
    "and g1.5 each": lambda vu, vf, vs: vu + 1.5 * sum(v - vu for v in vs),
    "full g2 + parts g1": lambda vu, vf, vs: vu + 2 * (vf - vu) + sum(v - vu for v in vs),
}
res = {k: [] for k in VARIANTS}
for e in entries:
    bg = e["expect"]["background"]
    texts = ["", e["prompt"]] + [sub(o, bg) for o in e["expect"]["objects"]]
    text, mask = pipe.encode_prompt(texts, None, "cpu")
    for s in range(SEEDS):
        for name, combine in VARIANTS.items():
            g = torch.Generator().manual_seed(500 + 1000 * s)
            lat = torch.randn((1, model.config.in_channels, 1, 16, 16), generator=g)
            sched.set_timesteps(25)
            for t in sched.timesteps:
                sigma = t / sched.config.num_train_timesteps
                x = lat.expand(len(texts), -1, -1, -1, -1)
                with torch.no_grad():
                    out = model(x, t.expand(len(texts)), text, mask).sample.float()
                v = model.to_velocity(out, x, sigma)
                vu, vf, vs = v[0:1], v[1:2], [v[i : i + 1] for i in range(2, len(texts))]
                lat = sched.step(combine(vu, vf, vs), t, lat, return_dict=False, generator=g)[0]
            with torch.no_grad():
                frame = to_uint8(pipe.decode_latents(lat).permute(0, 1, 3, 4, 2).numpy()[0])
            res[name].append(frame_right(frame, e["expect"]))
for name, vs in res.items():
    print(
        f"{name:22s} colour {np.mean([v['colour'] for v in vs]):.0%} shape {np.mean([v['shape'] for v in vs]):.0%} "
        f"count {np.mean([v['count'] for v in vs]):.0%} size {np.mean([v['size'] for v in vs]):.0%} right {sum(v['right'] for v in vs)}/{len(vs)}"
    )
