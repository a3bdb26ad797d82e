"""Best-of-N by a scorer against the judge: the report's arithmetic on known verdicts and
scores, and ``studio eval scorer --generated DIR`` end to end with the shipped scorer on
rendered clips where one sample of each prompt is wrong."""

from __future__ import annotations

import dataclasses
import json

import pytest

from evals.best_of import auc, best_of_report
from pipelines.video_io import write_video
from studio.shipped import DEFAULT_SCORER_DIR
from world.shapes_world import ClipSpec, ShapesWorld, render


def item(prompt, sample, ok, category="single"):
    return {"prompt": prompt, "sample": sample, "video": f"{prompt}-{sample}.mp4",
            "category": category, "status": "ok", "all_correct": ok}  # fmt: skip


def test_report_counts_first_pick_worst_and_oracle():
    items = [
        item("a", 0, False), item("a", 1, True),   # the scorer picks the right one
        item("b", 0, True), item("b", 1, False),   # ... and here the wrong one
        item("c", 0, False), item("c", 1, False),  # nothing to pick
        item("d", 0, True, "two"),                 # one sample only: left out
    ]  # fmt: skip
    scores = {"a-0.mp4": 0.1, "a-1.mp4": 0.9, "b-0.mp4": 0.2, "b-1.mp4": 0.8,
              "c-0.mp4": 0.5, "c-1.mp4": 0.4, "d-0.mp4": 1.0}  # fmt: skip
    report = best_of_report(items, scores)
    row = report["categories"]["single"]
    assert row["prompts"] == 3 and report["samples_per_prompt"] == [2]
    third = pytest.approx(1 / 3, abs=1e-4)
    assert (row["first"], row["pick"], row["worst"]) == (third, third, third)
    assert row["oracle"] == pytest.approx(2 / 3, abs=1e-4)
    assert row["gap_closed"] == pytest.approx(0.0)
    assert "two" not in report["categories"] and report["videos"] == 6
    # correct samples scored 0.9 and 0.2; wrong ones 0.1, 0.8, 0.5, 0.4: 5 of 8 pairs won
    assert report["auc"] == pytest.approx(5 / 8)


def test_auc_edges():
    assert auc([0.1, 0.2], [True, True]) is None
    assert auc([0.9, 0.1], [True, False]) == 1.0
    assert auc([0.5, 0.5], [True, False]) == 0.5


@pytest.mark.skipif(not (DEFAULT_SCORER_DIR / "config.json").is_file(), reason="no scorer")
def test_eval_scorer_generated_with_the_shipped_scorer(cli, tmp_path):
    """Two samples a prompt: one the rendered clip of the caption, one of another colour.
    The judge finds the wrong ones; the shipped scorer (colour counterfactuals 0.97+) picks
    the right one of every pair, so its pick closes the whole first→oracle gap."""
    world = ShapesWorld(seed=3)
    records = []
    for i in range(4):
        sample = world.sample(i, kind="video1")
        good = sample.frames
        meta = sample.meta
        clip = ClipSpec.from_dict(meta)
        other = "red" if clip.objects[0].color != "red" else "blue"
        wrong = render(
            dataclasses.replace(clip, objects=[dataclasses.replace(clip.objects[0], color=other)])
        )
        prompt = meta["caption"]
        # the wrong clip comes first for half the prompts: "first" is then wrong
        order = [wrong, good] if i % 2 == 0 else [good, wrong]
        for s, frames in enumerate(order):
            name = f"p{i}-{s}.mp4"
            write_video(tmp_path / name, frames, fps=8)
            records.append({"prompt": prompt, "sample": s, "video": name, "status": "ok",
                            "category": "single"})  # fmt: skip
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code, out, err = cli("eval", "scorer", "--generated", tmp_path, "--quiet")
    assert code == 0, err
    report = json.loads((tmp_path / "best_of.json").read_text())
    row = report["categories"]["overall"]
    assert row["prompts"] == 4 and row["oracle"] == 1.0 and row["first"] == 0.5
    assert row["pick"] == 1.0 and row["worst"] == 0.0 and row["gap_closed"] == 1.0
    assert report["auc"] == 1.0 and "scorer's pick" in out
