"""Whole clips of the validation prompts under sampler variants, judged (issue 3).

    python experiments/squares/sampler_variants.py OUT_ROOT [--model MODEL] [--variants base ... gi05]

Each variant renders ``evals/suites/shapes_val.jsonl`` (52 prompts, 1 sample, seed 500 — never
the held-out suite) into ``OUT_ROOT/<variant>`` with ``studio batch``'s code, judges it with
``studio eval shapes``'s (its report written beside the videos), and prints one row per variant:

* ``base``: the pipeline as saved (25 Euler steps, the default guidance: 4 until commit 6173fca,
  3 since);
* ``term05``: the scheduler's schedule stretched to end at σ = 0.05 (diffusers'
  ``shift_terminal``; with shift 20 the last step otherwise jumps from σ = 0.29 to 0);
* ``s50``: 50 steps instead of 25;
* ``stoch``: diffusers' stochastic flow sampler (``stochastic_sampling``: every step re-noised
  from the predicted clean sample) for both models;
* ``imgstoch``: the stochastic sampler for the first-frame image model only
  (``image_stochastic``);
* ``g2``, ``g3``: the clip sampled at guidance 2 or 3, its first frame at 4
  (``first_frame_guidance``);
* ``imgstoch_g2_g3``: the first frame by the stochastic sampler at guidance 2, the clip at 3
  (the shipped model's settings since commit 6173fca);
* ``gi03``, ``gi05``, ``gi07``: the saved settings with a guidance interval
  (``guidance_min_sigma`` 0.3, 0.5, 0.7): the steps at lower noise unguided;
* ``ff50``, ``ff100``: the saved settings with frame 0 drawn in 50 or 100 steps
  (``first_frame_steps``).

Finished videos are kept, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from diffusers import FlowMatchEulerDiscreteScheduler

from evals.report import write_shapes_report as write_report
from evals.shapes import evaluate_dir
from pipelines.text_to_video import DEFAULT_GUIDANCE
from studio.batch import BatchOptions, run_batch
from studio.generate import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {
    "base": ({}, {}, 25),
    "term05": ({"shift_terminal": 0.05}, {}, 25),
    "s50": ({}, {}, 50),
    "stoch": ({"stochastic_sampling": True}, {}, 25),
    "imgstoch": ({}, {"image_stochastic": True}, 25),
    # the clip guided less than its first frame (guidance 4): CFG rounds squares' corners
    "g2": ({}, {"first_frame_guidance": 4.0}, 25, 2.0),
    "g3": ({}, {"first_frame_guidance": 4.0}, 25, 3.0),
    # frame 0 by the stochastic sampler at guidance 2 (first_frame.py's best), the clip at 3
    "imgstoch_g2_g3": ({}, {"image_stochastic": True, "first_frame_guidance": 2.0}, 25, 3.0),
    # a guidance interval on top of the saved settings: no guidance at sigma <= 0.3 / 0.5 / 0.7
    "gi03": ({}, {"guidance_min_sigma": 0.3}, 25),
    "gi05": ({}, {"guidance_min_sigma": 0.5}, 25),
    "gi07": ({}, {"guidance_min_sigma": 0.7}, 25),
    # frame 0 with 50 / 100 denoising steps (first_frame_steps), the clip with 25
    "ff50": ({}, {"first_frame_steps": 50}, 25),
    "ff100": ({}, {"first_frame_steps": 100}, 25),
}
KEYS = ("colour", "shape", "motion", "background", "count", "all_correct")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_root")
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompts", default=str(ROOT / "evals/suites/shapes_val.jsonl"))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    rows = []
    for name in args.variants:
        scheduler_kw, pipe_kw, steps, *guidance = VARIANTS[name]
        pipe = load_pipeline(args.model)
        saved = (pipe.scheduler, dict(pipe.config))
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            pipe.scheduler.config, **scheduler_kw
        )
        pipe.register_to_config(**pipe_kw)
        out = Path(args.out_root) / name
        start = time.time()
        try:
            options = BatchOptions(
                prompts=Path(args.prompts),
                out_dir=out,
                samples=1,
                seed=500,
                steps=steps,
                guidance=guidance[0] if guidance else DEFAULT_GUIDANCE,
            )
            run_batch(options, progress=False, pipe=pipe)
        finally:  # the loaded pipeline is cached: put it back as it was
            pipe.scheduler = saved[0]
            pipe.register_to_config(**{k: saved[1].get(k) for k in pipe_kw})
        report = evaluate_dir(out)
        write_report(report, out)  # eval.json, eval.md and the contact sheet, as `studio eval`
        cells = [f"{report['overall'][k]:.0%}" for k in KEYS]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {time.time() - start:.0f} s |")
        print(rows[-1], flush=True)
    print("\n| variant | " + " | ".join(KEYS) + " | time |\n|---|" + "---:|" * (len(KEYS) + 1))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
