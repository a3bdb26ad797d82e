"""Storyboard generation on the device torch finds (part of ``run.sh``).

    python benchmarks/gpu_check/generate.py OUT RUN_DIR

The pipeline the check trained (RUN_DIR/pipeline, which names its random text encoder) and
the shipped weights with that same encoder: a 3-scene, 40-frame storyboard each, twice,
timed; frames and ``gen.json`` go to OUT.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipelines.storyboard import Scene, generate_storyboard
from pipelines.text_to_video import ShapesVideoPipeline

out, run = Path(sys.argv[1]), Path(sys.argv[2])
dev = "cuda" if torch.cuda.is_available() else "cpu"
scenes = [
    Scene(prompt="a small red square moving right on a black background", frames=16),
    Scene(prompt="a small red square moving up on a black background", frames=12),
    Scene(prompt="a small red square moving left on a black background", frames=12),
]
check = ShapesVideoPipeline.from_pretrained(run / "pipeline")  # its text encoder by spec
shipped = ShapesVideoPipeline.from_pretrained(
    "studio/default_model", text_encoder=check.text_encoder, tokenizer=check.tokenizer
)
report = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"}
for name, pipe in (("check", check), ("shipped", shipped)):
    pipe.to(dev).set_progress_bar_config(disable=True)
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
    np.save(out / f"{name}_frames.npy", frames)
print(json.dumps(report, indent=1))
(out / "gen.json").write_text(json.dumps(report, indent=1))
