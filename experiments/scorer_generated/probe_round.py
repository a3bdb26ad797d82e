"""Does a scorer read the shape boundary the judge draws? One-object squares and discs redrawn
as superellipses (one roundness per clip, or one per frame: train/scorer_data.py's
"superellipse" and "wobble"), each judged against its caption; the AUC of each scorer's score
against the verdict.

    python experiments/scorer_generated/probe_round.py studio/default_scorer runs/scorer_generated/ft/model
"""

from __future__ import annotations

import sys

import numpy as np

from evals.best_of import auc
from pipelines.scoring import VideoTextScorer
from train.scorer_data import degrade, judged_correct
from world.shapes_world import ShapesWorld, caption


def main() -> int:
    world = ShapesWorld(exclusions=False)
    clips = []
    for i in range(120):
        rng = np.random.default_rng([8, i])
        spec = world.sample_spec(rng, "video1")
        if spec.objects[0].shape == "triangle":
            continue
        text = caption(spec, np.random.default_rng(i))
        d = degrade(spec, rng, ("wobble", "superellipse"))
        clips.append((d.frames, text, judged_correct(d.frames, spec, text)))
    labels = [ok for *_, ok in clips]
    print(f"{len(clips)} clips, {sum(labels)} judged right")
    for model in sys.argv[1:]:
        scorer = VideoTextScorer.from_pretrained(model, use_safetensors=True)
        scores = [float(scorer.scores([f], t)[0]) for f, t, _ in clips]
        print(f"{model}: AUC {auc(scores, labels):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
