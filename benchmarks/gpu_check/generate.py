"""Storyboard generation on the device torch finds (part of ``run.sh``).

    python benchmarks/gpu_check/generate.py OUT

The pipeline the check trained (/tmp/gpurun/pipeline) and the shipped weights, both with the
random text encoder at /tmp/te: a 3-scene, 40-frame storyboard each, twice, timed; frames
and ``gen.json`` go to OUT.
"""

import json
import sys
import time

import numpy as np
import torch

from pipelines.components import load_text_encoder
from pipelines.storyboard import Scene, generate_storyboard
from pipelines.text_to_video import ShapesVideoPipeline

out = sys.argv[1]
dev = "cuda" if torch.cuda.is_available() else "cpu"
te, tok = load_text_encoder("/tmp/te")
scenes = [
    Scene(prompt="a small red square moving right on a black background", frames=16),
    Scene(prompt="a small red square moving up on a black background", frames=12),
    Scene(prompt="a small red square moving left on a black background", frames=12),
]
report = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"}
for name, path in (("check", "/tmp/gpurun/pipeline"), ("shipped", "studio/default_model")):
    pipe = ShapesVideoPipeline.from_pretrained(path, text_encoder=te, tokenizer=tok).to(dev)
    pipe.set_progress_bar_config(disable=True)
    times = []
    for rep in range(2):
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        frames, ranges = generate_storyboard(pipe, scenes, seed=rep)
        if dev == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    report[name] = {
        "frames": int(frames.shape[0]),
        "ranges": ranges,
        "seconds": [round(t, 2) for t in times],
        "mean_pixel": float(frames.mean()),
        "transformer_device": str(pipe.transformer.device),
    }
    np.save(f"{out}/{name}_frames.npy", frames)
print(json.dumps(report, indent=1))
json.dump(report, open(f"{out}/gen.json", "w"), indent=1)
