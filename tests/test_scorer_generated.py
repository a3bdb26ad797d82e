"""Scorer data with the generator's faults (issue 34): training prompts, degraded renders,
judged generated clips, the ranking term, the trainer's mix and the scorer as a reward.

Everything is built here from seeds (tiny random scorer, clips rendered and written in the
test); the reward tests load the shipped scorer, which is small and local."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evals.contract import IMAGE_ONLY_COLOR, UNSEEN_PAIRS, parse_caption
from evals.shapes import judge
from pipelines.video_io import write_video
from train.scorer_data import (
    DEGRADATIONS,
    LABELS,
    GeneratedSet,
    degrade,
    degraded_groups,
    expectation_of,
    judge_generated,
    ranking_loss,
    suite_prompts,
    training_prompts,
    write_prompts,
)
from train.train_scorer import contrastive_loss, group_losses
from world.shapes_world import ClipSpec, ObjectSpec, ShapesWorld, caption, render

# accelerate's state is process-wide: each test trains with a fresh one
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

# what a breaking degradation must make the judge fail (besides all_correct)
BROKEN_CRITERION = {
    "morph": "shape",
    "split": "count",
    "extra": "count",
    "fade": "count",
    "recolor": "colour",
    "freeze": "motion",
    "reverse": "motion",
}


def _specs(n: int, seed: int = 0) -> list[ClipSpec]:
    world = ShapesWorld(exclusions=False)
    rng = np.random.default_rng(seed)
    return [world.sample_spec(rng, "video2" if i % 2 else "video1") for i in range(n)]


# ---------------------------------------------------------------------------- prompts


def test_training_prompts_avoid_the_suites_keep_the_exclusions_and_read_back(tmp_path):
    rows = training_prompts(40, seed=3, two_object_prob=0.5)
    assert rows == training_prompts(40, seed=3, two_object_prob=0.5)  # deterministic
    suites = suite_prompts()
    assert len(suites) > 300  # the shipped suites were read
    prompts = [r["prompt"] for r in rows]
    assert len(set(prompts)) == 40
    assert not {p.lower() for p in prompts} & suites
    for r in rows:
        spec = ClipSpec.from_dict(r["spec"])
        assert caption(spec, np.random.default_rng(r["caption_seed"])) == r["prompt"]
        assert parse_caption(r["prompt"]).to_dict() == r["expect"]
        for o in spec.objects:
            assert o.color != IMAGE_ONLY_COLOR and (o.color, o.shape) not in UNSEEN_PAIRS
    # a prompt to avoid is avoided
    again = training_prompts(40, seed=3, two_object_prob=0.5, avoid={prompts[0]})
    assert prompts[0] not in [r["prompt"] for r in again]
    # the batch reads the file: no reserved keys
    from studio.batch import read_prompts

    entries, problems = read_prompts(write_prompts(tmp_path / "p.jsonl", rows))
    assert len(entries) == 40 and not problems


def test_expectation_of_refuses_a_caption_of_another_layout():
    spec = ClipSpec([ObjectSpec("square", "red", "large", "left", 30, 20)], "gray")
    with pytest.raises(ValueError, match="does not read back"):
        expectation_of(spec, "a red circle moving left on a gray background")
    # an omitted size is not asked for
    assert (
        expectation_of(spec, "a red square moving left on a gray background").objects[0].size
        is None
    )


# ---------------------------------------------------------------------------- degradations


@pytest.mark.parametrize("kind", [k for k, (_, intent) in DEGRADATIONS.items() if intent])
def test_degradations_keep_or_break_the_caption_as_the_judge_sees_it(kind):
    intent = DEGRADATIONS[kind][1]
    checked = 0
    for i, spec in enumerate(_specs(8, seed=11)):
        text = caption(spec, np.random.default_rng(i))
        clean = render(spec)
        try:
            d = degrade(spec, np.random.default_rng([i, 1]), (kind,), frames=clean)
        except ValueError:  # does not apply (freezing a clip where nothing moves)
            continue
        again = degrade(spec, np.random.default_rng([i, 1]), (kind,), frames=clean)
        assert np.array_equal(d.frames, again.frames)  # deterministic in the generator
        assert d.frames.shape == clean.shape and d.frames.dtype == np.uint8
        assert not np.array_equal(d.frames, clean)  # it did damage the clip
        verdict = judge(d.frames, expectation_of(spec, text))
        assert verdict["all_correct"] == (intent == "keep"), (kind, d.look, text)
        if intent == "break":
            assert not verdict[BROKEN_CRITERION[kind]], (kind, text)
        checked += 1
    assert checked >= 4


def test_resize_breaks_a_caption_that_names_the_size_only():
    spec = ClipSpec([ObjectSpec("square", "red", "small", "right", 10, 20)], "black")
    d = degrade(spec, np.random.default_rng(0), ("resize",), look_prob=0.0)
    named = judge(
        d.frames, expectation_of(spec, "a small red square moving right on a black background")
    )
    unnamed = judge(
        d.frames, expectation_of(spec, "a red square moving right on a black background")
    )
    assert (named["size"], named["all_correct"]) == (False, False)
    assert unnamed["all_correct"]


def test_degraded_groups_label_by_the_judge_and_anchor_a_correct_clip():
    world = ShapesWorld(exclusions=False)
    batch = degraded_groups(world, np.random.default_rng(0), 6, 8, 64, ("blur", "morph"),
                            hard_negatives=2)  # fmt: skip
    assert len(batch) == 6 and batch.frames.shape[1:] == (8, 3, 64, 64)
    assert batch.frames.min() >= -1 and batch.frames.max() <= 1
    for g in range(6):
        clips = (batch.groups == g).nonzero()[:, 0]
        assert batch.labels[batch.anchors[g]] and batch.groups[batch.anchors[g]] == g
        # a kept blur is its own positive; a broken morph comes with the render above it
        assert len(clips) == (1 if batch.labels[clips].all() else 2)
    assert batch.labels.any() and not batch.labels.all()
    assert len(batch.negatives) == 12


def test_degraded_variants_are_ranked_among_themselves_and_kinds_weigh_by_repeats():
    world = ShapesWorld(exclusions=False)
    batch = degraded_groups(world, np.random.default_rng(2), 6, 8, 64, ("blur", "morph"),
                            variants=2)  # fmt: skip
    for g in range(6):
        clips = (batch.groups == g).nonzero()[:, 0]
        labels, ranked = batch.labels[clips], batch.ranked[clips]
        assert batch.labels[batch.anchors[g]]
        if labels[:2].any():  # a kept variant anchors the caption; no render is added
            assert len(clips) == 2 and ranked.all()
        else:  # both broken: the render anchors, outside the ranking
            assert len(clips) == 3 and ranked.tolist() == [True, True, False]
    # a kind named three times is drawn about three times as often
    spec = _specs(1)[0]
    drawn = [
        degrade(spec, np.random.default_rng(i), ("blur", "blur", "blur", "noise")).kind
        for i in range(200)
    ]
    assert 0.65 < drawn.count("blur") / 200 < 0.85


# ---------------------------------------------------------------------------- generated clips


def _write_batch(run_dir: Path) -> list[dict]:
    """A tiny `studio batch`-like folder of two moving one-object prompts: A with a right and a
    morphed (wrong) sample, B with two frozen (wrong) ones, named and listed as the batch does."""
    rows = training_prompts(10, seed=5, two_object_prob=0.0)
    rows = [r for r in rows if r["spec"]["objects"][0]["motion"] != "still"][:2]
    run_dir.mkdir(parents=True)
    manifest = []
    for r, kinds in zip(rows, [(None, "morph"), ("freeze", "freeze")], strict=True):
        spec = ClipSpec.from_dict(r["spec"])
        clean = render(spec)
        for i, kind in enumerate(kinds):
            rng = np.random.default_rng(i)
            frames = clean if kind is None else degrade(spec, rng, (kind,), frames=clean).frames
            name = f"{r['prompt']}-{i}.mp4"
            write_video(run_dir / name, frames, 8)
            manifest.append({**r, "sample": i, "seed": i, "video": name, "status": "ok"})
    (run_dir / "manifest.jsonl").write_text("".join(json.dumps(m) + "\n" for m in manifest))
    return manifest


def test_generated_clips_are_judged_and_grouped_with_their_labels(tmp_path):
    run = tmp_path / "gen"
    manifest = _write_batch(run)
    judge_generated(run)
    labels = [json.loads(x) for x in (run / LABELS).read_text().splitlines()]
    assert [r["all_correct"] for r in labels] == [True, False, False, False]
    assert all("spec" in r and "caption_seed" in r for r in labels)
    stamp = (run / LABELS).stat().st_mtime_ns
    judge_generated(run)  # up to date: not judged again
    assert (run / LABELS).stat().st_mtime_ns == stamp

    data = GeneratedSet.from_dirs([run], num_frames=8)
    assert data.stats() == {"prompts": 2, "clips": 4, "correct": 1, "mixed_prompts": 1}
    batch = data.groups(np.random.default_rng(0), 2, 8, 64, hard_negatives=1, mixed_share=1.0)
    assert batch.captions[0] == manifest[0]["prompt"]  # the mixed prompt first
    assert batch.sources == ["generated", "generated"]
    a = (batch.groups == 0).nonzero()[:, 0]
    assert batch.labels[a].tolist() == [True, False] and batch.anchors[0] == int(a[0])
    assert batch.ranked[a].all()
    # no correct sample: its render anchors the caption and is left out of the ranking
    b = (batch.groups == 1).nonzero()[:, 0]
    assert batch.labels[b].tolist() == [False, False, True]
    assert batch.anchors[1] == int(b[-1]) and batch.ranked[b].tolist() == [True, True, False]
    assert len(batch.negatives) == 2


# ---------------------------------------------------------------------------- losses


def test_ranking_loss_weighs_pairs_within_and_across_groups():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.8])
    labels = torch.tensor([True, False, True, False])
    groups = torch.tensor([0, 0, 1, 1])
    within = ranking_loss(scores, labels, groups, scale=10.0)
    # the pairs (0 > 1) and (2 > 3): one right, one wrong by 0.3
    softplus = torch.nn.functional.softplus
    expected = (softplus(torch.tensor(-8.0)) + softplus(torch.tensor(3.0))) / 2
    assert within == pytest.approx(float(expected), rel=1e-5)
    # across groups: (0 > 3) and (2 > 1), their own mean at half weight
    cross = (softplus(torch.tensor(-1.0)) + softplus(torch.tensor(-4.0))) / 2
    both = ranking_loss(scores, labels, groups, scale=10.0, cross_weight=0.5)
    assert both == pytest.approx(float(expected + 0.5 * cross), rel=1e-5)
    only_cross = ranking_loss(scores, labels, torch.tensor([0, 1, 2, 3]), cross_weight=1.0)
    assert only_cross is not None and only_cross > 0
    assert ranking_loss(scores, torch.ones(4, dtype=torch.bool), groups) is None
    assert ranking_loss(scores, labels, torch.tensor([0, 1, 2, 3])) is None  # no pair in a group


def test_contrastive_loss_counts_wrong_videos_as_negatives_only_when_given():
    torch.manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(np.log(10.0))
    base = contrastive_loss(e, e, scale)
    assert contrastive_loss(e, e, scale, negative_videos=e[:0]) == base
    far = contrastive_loss(e, e, scale, negative_videos=-e[:1])
    close = contrastive_loss(e, e, scale, negative_videos=e[:1])  # a wrong clip like the truth
    assert base < far < close


def test_ranking_term_falls_on_a_toy_set(text_encoder):
    """A tiny random scorer trained on the ranking term alone learns to put the right clip of
    each group above the broken one."""
    from models.video_text_scorer import scorer_tiny
    from pipelines.components import encode_text
    from train.config import ScorerTrainConfig

    torch.manual_seed(0)
    model = scorer_tiny(text_dim=384)
    world = ShapesWorld(exclusions=False)
    batch = degraded_groups(world, np.random.default_rng(1), 8, 8, 64, ("recolor", "fade"))
    assert (~batch.labels).sum() == 8  # every group: the render above its broken twin
    states, mask = encode_text(*text_encoder, batch.captions)
    cfg = ScorerTrainConfig(degraded_per_step=8, rank_weight=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        video, text, scale = model(batch.frames, states, mask)
        _, rank = group_losses(video, text, scale, 0, batch, cfg)
        opt.zero_grad()
        rank.backward()
        opt.step()
        losses.append(float(rank))
    assert losses[-1] < 0.5 * losses[0], losses


# ---------------------------------------------------------------------------- the trainer


def test_trainer_mixes_degraded_and_generated_groups(cli, tmp_path):
    run = tmp_path / "gen"
    _write_batch(run)
    out = tmp_path / "scorer"
    args = ["train", "scorer", f"output_dir={out}", "model.size=scorer_tiny", "steps=4"]
    args += ["batch_size=3", "eval_clips=0", "log_every=2", "image_every=0", "warmup=1"]
    args += ["degraded_per_step=2", f"generated_dirs=[{run}]", "generated_per_step=2"]
    args += ["rank_weight=1.0", "rank_cross_weight=0.5"]
    code, _, err = cli(*args)
    assert code == 0, err
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [2, 4]
    assert all(np.isfinite(e["loss"]) and e["rank_loss"] > 0 for e in log)
    assert (run / LABELS).is_file()


def test_new_keys_are_off_by_default_and_leave_a_step_as_it_was():
    from train.config import ScorerTrainConfig
    from train.train_scorer import extra_groups

    cfg = ScorerTrainConfig()
    assert (cfg.degraded_per_step, cfg.generated_per_step, cfg.rank_weight) == (0, 0, 0.0)
    assert extra_groups(ShapesWorld(), None, cfg, step=0, rank=0) is None


# ---------------------------------------------------------------------------- reward


@pytest.fixture(scope="module")
def shipped_scorer():
    from pipelines.scoring import VideoTextScorer
    from studio.shipped import DEFAULT_SCORER_DIR

    if not (DEFAULT_SCORER_DIR / "config.json").is_file():
        pytest.skip("no shipped scorer")
    return VideoTextScorer.from_pretrained(DEFAULT_SCORER_DIR)


def test_reward_is_differentiable_and_ranks_the_right_render_first(shipped_scorer):
    spec = ClipSpec([ObjectSpec("square", "red", "large", "right", 4, 20)], "black")
    text = "a large red square moving right on a black background"
    right = render(spec)
    wrong = degrade(spec, np.random.default_rng(0), ("morph",), look_prob=0.0).frames
    x = torch.from_numpy(np.stack([right, wrong])).permute(0, 1, 4, 2, 3).float() / 255
    x.requires_grad_(True)
    r = shipped_scorer.reward(x, text)  # (2,), BFCHW in [0, 1]
    assert r.shape == (2,) and r[0] > r[1]
    r.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # the same numbers as the uint8 path and from the other layouts and ranges
    ref = shipped_scorer.scores([right, wrong], text)
    assert torch.allclose(r.detach(), ref, atol=1e-4)
    with torch.no_grad():
        alt = shipped_scorer.reward(x.detach().transpose(1, 2) * 2 - 1, [text, text],
                                    value_range=(-1.0, 1.0), layout="BCFHW")  # fmt: skip
    assert torch.allclose(alt, ref, atol=1e-4)
    with pytest.raises(ValueError, match="value_range"):
        shipped_scorer.reward(x, text, value_range=(0, 255))
    with pytest.raises(ValueError, match="captions"):
        shipped_scorer.reward(x, [text])
