"""Fewer steps at equal quality? The shipped model's video half sampled with diffusers' flow
solvers (UniPC, DPM-Solver++ with flow sigmas) at fewer steps against flow-matching Euler at
25, judged on the VALIDATION prompts (evals/suites/shapes_val.jsonl; never the held-out
suite while choosing). The first frame keeps its own stochastic Euler sampler.

    python experiments/fast_sampling/sampler_probe.py OUT_DIR euler:25 unipc:10 euler:25:bf16 ...

A third field ``bf16`` runs the whole generation under CPU bf16 autocast (AMX / AVX512-BF16);
``f0=N`` draws the first frame in N steps of its own sampler whatever the clip's steps
(the pipeline's ``first_frame_steps``), e.g. ``unipc:10:f0=25``; ``g=X`` guides the clip at X
(default: the studio's 3; 1 = unguided, one model call a step) and ``f0g=X`` frame 0 at X
(default: the shipped ``first_frame_guidance``), e.g. ``euler:12:f0=25:g=1``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from evals.report import write_shapes_report
from evals.shapes import VAL_PATH, evaluate_dir
from pipelines.text_to_video import DEFAULT_GUIDANCE
from studio.batch import BatchOptions, run_batch
from studio.generate import load_pipeline


def scheduler(kind: str, shift: float):
    if kind == "unipc":
        return UniPCMultistepScheduler(
            use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift
        )
    if kind == "dpm":
        return DPMSolverMultistepScheduler(
            use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift,
            algorithm_type="dpmsolver++", solver_order=2,
        )  # fmt: skip
    raise ValueError(kind)


def main(out: str, *configs: str) -> None:
    pipe = load_pipeline()
    euler = pipe.scheduler
    shipped_f0_guidance = pipe.config.first_frame_guidance
    rows = {}
    for config in configs:
        kind, steps, *extra = config.split(":")
        precision = [e for e in extra if e == "bf16"]
        given = dict(e.split("=") for e in extra if "=" in e)  # f0, g, f0g
        pipe.register_to_config(
            first_frame_steps=int(given["f0"]) if "f0" in given else None,
            first_frame_guidance=float(given.get("f0g", shipped_f0_guidance)),
        )
        pipe.scheduler = euler if kind == "euler" else scheduler(kind, euler.config.shift)
        run_dir = Path(out) / config.replace(":", "_").replace("=", "")
        options = BatchOptions(
            prompts=VAL_PATH, out_dir=run_dir, samples=1, seed=500, steps=int(steps),
            guidance=float(given.get("g", DEFAULT_GUIDANCE)),
        )  # fmt: skip
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == ["bf16"]):
            run_batch(options, progress=False, pipe=pipe)
        report = evaluate_dir(run_dir)
        write_shapes_report(report, run_dir)
        rows[config] = json.loads((run_dir / "eval.json").read_text())["categories"]
        print(config, rows[config], flush=True)
    (Path(out) / "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
