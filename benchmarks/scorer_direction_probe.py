"""Does any direction signal reach the scorer's embeddings? (issue 4, BENCHMARKS.md)

    python benchmarks/scorer_direction_probe.py [SCORER_DIR] [N]

On N one-object clips moving left or right (a seed training never draws, exclusions off):

* video: cosine between a clip's embedding and its time-reversed copy's (1.0 = blind to frame
  order), and a ridge linear probe for left/right trained on 2/3 of the clips' embeddings and
  tested on the rest (0.5 = no direction in the embedding);
* text: cosine between a caption's embedding and its reversed-direction twin's (same wording);
* the margin the true caption gets over the reversed one, for the clip and for its
  time-reversed copy (which shows the opposite motion; the counterfactual test from both
  sides). The copy is the twin rather than a clip rendered with the motion reversed: that one
  would start where the original starts and could leave the canvas.
"""

from __future__ import annotations

import sys

import numpy as np

from pipelines.scoring import VideoTextScorer
from world.shapes_world import ShapesWorld, caption, counterfactual, render


def main(scorer_dir: str = "studio/default_scorer", n: int = 300) -> dict[str, float]:
    scorer = VideoTextScorer.from_pretrained(scorer_dir, use_safetensors=True)
    world = ShapesWorld(size=64, frames=16, seed=4_242_001, exclusions=False)
    rng = np.random.default_rng(4_242_001)
    emb, label, cos_rev, cos_text, margins = [], [], [], [], []
    while len(emb) < n:
        spec = world.sample_spec(rng, "video1")
        lab = {"left": 0, "right": 1}.get(spec.objects[0].motion)
        if lab is None:
            continue
        twin = counterfactual(spec, "direction", rng)  # the caption of the reversed clip
        clip = render(spec)
        seed = int(rng.integers(1 << 32))
        text = scorer.text_embeds(
            [caption(spec, np.random.default_rng(seed)), caption(twin, np.random.default_rng(seed))]
        )
        v = scorer.video_embeds([clip, clip[::-1].copy()])  # the copy shows ``twin``'s motion
        emb.append(v[0].numpy())
        label.append(lab)
        cos_rev.append(float(v[0] @ v[1]))
        cos_text.append(float(text[0] @ text[1]))
        margins += [float(v[0] @ (text[0] - text[1])), float(v[1] @ (text[1] - text[0]))]
    x = np.c_[np.array(emb), np.ones(n)]
    y = 2.0 * np.array(label) - 1
    cut = 2 * n // 3
    w = np.linalg.solve(x[:cut].T @ x[:cut] + 1e-2 * np.eye(x.shape[1]), x[:cut].T @ y[:cut])
    out = {
        "video cos(clip, time-reversed clip)": float(np.mean(cos_rev)),
        "video linear probe left/right, test accuracy": float(
            np.mean((x[cut:] @ w > 0) == (y[cut:] > 0))
        ),
        "text cos(caption, reversed-direction caption)": float(np.mean(cos_text)),
        "true-caption margin, mean": float(np.mean(margins)),
        "true caption wins (clip and reversed copy)": float(np.mean(np.array(margins) > 0)),
    }
    print(f"scorer {scorer_dir}, {n} clips")
    for k, val in out.items():
        print(f"| {k} | {val:.5f} |")
    return out


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["studio/default_scorer"]), *(int(a) for a in sys.argv[2:3]))
