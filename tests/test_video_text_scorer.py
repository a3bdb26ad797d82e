"""The Shapes World video–text scorer: model, counterfactual captions, contrastive training,
held-out evaluation and loading by spec — all on a tiny random model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.video_text_scorer import scorer_tiny
from pipelines.scoring import VideoTextScorer, frames_to_tensor, load_scorer
from train.train_scorer import _retrieval, contrastive_loss, evaluate, negatives_for
from world.shapes_world import (
    COUNTERFACTUALS,
    ClipSpec,
    ObjectSpec,
    ShapesWorld,
    caption,
    counterfactual,
    render,
)


def _two_objects() -> ClipSpec:
    return ClipSpec(
        [
            ObjectSpec("circle", "red", "small", "left", 40, 10),
            ObjectSpec("square", "green", "large", "up", 5, 30),
        ],
        "gray",
    )


@pytest.fixture(
    params=[
        {},
        {"motion_channels": True},
        {"pooling": "query"},
        {"stem": "conv", "pool_dim": 48},
    ],
    ids=["frames", "frames+motion", "query-pool", "conv-stem+pool-dim"],
)
def tiny_scorer(text_encoder, request):
    torch.manual_seed(0)
    model = scorer_tiny(text_dim=384, **request.param).eval()
    return VideoTextScorer(model, *text_encoder)


def test_stem_and_pool_dim_are_checked_and_default_to_the_old_tower():
    with pytest.raises(ValueError, match="stem must be one of"):
        scorer_tiny(stem="resnet")
    with pytest.raises(ValueError, match="even patch_size"):
        scorer_tiny(stem="conv", patch_size=5, image_size=60)
    with pytest.raises(ValueError, match="pool_dim needs pooling='max'"):
        scorer_tiny(pooling="query", pool_dim=64)
    old = scorer_tiny()
    assert (old.config.stem, old.config.pool_dim) == ("patch", 0)
    assert not hasattr(old, "conv_stem") and not hasattr(old, "pool_in")
    new = scorer_tiny(stem="conv", pool_dim=48)
    assert new.video_proj.in_features == 48
    # the conv stem lands on the same token grid as the patch stem
    x = torch.zeros(2, 3, 64, 64)
    assert new.conv_stem(x).shape == old.patch(x).shape == (2, 32, 8, 8)


def test_pooling_is_checked_and_old_configs_load_as_query_pooling(tmp_path):
    with pytest.raises(ValueError, match="pooling must be one of"):
        scorer_tiny(pooling="mean")
    assert scorer_tiny().config.pooling == "max"
    model = scorer_tiny(pooling="query")
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["pooling"]  # a scorer saved before the option existed
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = type(model).from_pretrained(tmp_path)
    assert loaded.config.pooling == "query"
    for name, p in model.state_dict().items():
        assert torch.equal(p, loaded.state_dict()[name]), name


def test_counterfactuals_change_exactly_one_thing():
    spec, rng = _two_objects(), np.random.default_rng(0)
    true = caption(spec, np.random.default_rng(7))
    for kind in COUNTERFACTUALS:
        cf = counterfactual(spec, kind, rng)
        other = caption(cf, np.random.default_rng(7))  # same phrasing choices
        assert other != true, kind
        a, b = spec.objects, cf.objects
        if kind == "color":
            assert sum(x.color != y.color for x, y in zip(a, b, strict=True)) == 1
            assert {o.color for o in b} != {o.color for o in a}  # not just a swap
        elif kind == "shape":
            assert sum(x.shape != y.shape for x, y in zip(a, b, strict=True)) == 1
        elif kind == "direction":
            changed = [
                (x.motion, y.motion) for x, y in zip(a, b, strict=True) if x.motion != y.motion
            ]
            assert changed in ([("left", "right")], [("up", "down")])
        elif kind == "binding_color":
            assert [o.color for o in b] == ["green", "red"] and [o.shape for o in b] == [
                "circle",
                "square",
            ]
        else:
            assert [o.motion for o in b] == ["up", "left"]
        assert [(o.x, o.y) for o in b] == [(o.x, o.y) for o in a]  # the clip is the same
    assert spec.objects[0].color == "red"  # the input is not modified


def test_counterfactuals_that_cannot_apply_are_none():
    still = ClipSpec([ObjectSpec("circle", "red", "small", "still", 10, 10)], "black")
    rng = np.random.default_rng(0)
    assert counterfactual(still, "direction", rng) is None
    assert counterfactual(still, "binding_color", rng) is None
    with pytest.raises(ValueError, match="unknown counterfactual"):
        counterfactual(still, "size", rng)
    negs = negatives_for(still, 3, 5, rng, image=False)
    assert len(negs) == 2  # colour and shape only


def test_frames_to_tensor_samples_evenly_and_keeps_images_single():
    frames = np.zeros((16, 32, 32, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(16) * 10
    x = frames_to_tensor(frames, 8, 64)
    assert x.shape == (8, 3, 64, 64)
    firsts = ((x[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()
    assert firsts == [0, 20, 40, 60, 90, 110, 130, 150]
    assert frames_to_tensor(frames[:1], 8, 64).shape == (1, 3, 64, 64)


def test_video_embedding_reads_frame_order_and_the_baseline_does_not(tiny_scorer):
    spec = ClipSpec([ObjectSpec("square", "red", "large", "right", 4, 20)], "black")
    clip = render(spec)
    rev = clip[::-1].copy()
    v = tiny_scorer.video_embeds([clip, rev])
    assert v.shape == (2, 16) and torch.allclose(v.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert (v[0] - v[1]).abs().max() > 1e-4  # temporal attention + frame positions
    base = tiny_scorer.frame_average_embeds([clip, rev])
    assert torch.allclose(base[0], base[1], atol=1e-5)  # order-blind by construction
    image = tiny_scorer.video_embeds([clip[:1]])  # an image is a 1-frame video
    assert image.shape == (1, 16)


def test_contrastive_loss_prefers_aligned_pairs_and_hard_negatives_count():
    e = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(np.log(10.0))
    aligned = contrastive_loss(e, e, scale)
    shuffled = contrastive_loss(e, e[[1, 2, 3, 0]], scale)
    assert aligned < shuffled
    with_negative = contrastive_loss(e, torch.cat([e, e[:1]]), scale)  # a copy of the truth
    assert with_negative > aligned


def test_retrieval_ranks():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.1, 0.5], [0.0, 0.3, 0.8]])
    r = _retrieval(sim)
    assert r["t2v_R@1"] == pytest.approx(2 / 3) and r["t2v_median_rank"] == 1.0
    # video 1's true text (row 1) scores 0.1 < 0.3 (row 2): rank 2
    assert r["v2t_R@1"] == pytest.approx(2 / 3) and r["v2t_R@5"] == 1.0


def test_rates_are_exact_fractions_so_a_bar_reached_reads_met():
    # 19 of 20 right is 0.95 exactly (in float32 it was 0.9499999881, and a 0.95 bar read
    # "not met" for 190 of 200 clips)
    sim = torch.eye(20)
    sim[0, 1] = 2.0  # text 0 ranks video 1 first
    assert _retrieval(sim)["t2v_R@1"] == 0.95


def test_training_lowers_the_loss_exports_and_loads_by_spec(cli, tmp_path):
    out = tmp_path / "scorer"
    args = ["train", "scorer", f"output_dir={out}", "model.size=scorer_tiny", "steps=12"]
    args += ["batch_size=6", "eval_clips=6", "log_every=4", "save_every=6", "image_every=3"]
    args += ["lr=3e-3", "warmup=1"]
    code, _, err = cli(*args)
    assert code == 0, err
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [4, 8, 12]
    assert log[-1]["loss"] < log[0]["loss"]
    report = json.loads((out / "model" / "eval.json").read_text())
    assert set(report["methods"]) == {"scorer", "per_frame"}
    assert report["methods"]["scorer"]["cf_color_n"] == 6
    scorer = load_scorer(f"shapes:{out / 'model'}")
    clip = ShapesWorld(seed=3).sample(0, kind="video1").frames
    s = scorer.score(clip, "a red circle moving left on a black background").score
    assert -1.0 <= s <= 1.0
    code, stdout, err = cli("eval", "scorer", "--model", out / "model", "--clips", "4",
                            "--out", tmp_path / "ev", "--quiet")  # fmt: skip
    assert code == 0, err
    assert "counterfactual: direction" in stdout
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["clips"] == 4


def test_loading_a_dit_folder_as_scorer_fails_clearly(tiny_pipeline_dir):
    with pytest.raises(ValueError, match="this scorer needs a 'VideoTextScorer'"):
        load_scorer(f"shapes:{tiny_pipeline_dir / 'transformer'}")


def test_evaluate_is_deterministic(tiny_scorer):
    a = evaluate(tiny_scorer, 6, seed=5)
    b = evaluate(tiny_scorer, 6, seed=5)
    assert a == b and a["methods"]["scorer"]["n"] == 6


def test_evaluate_splits_counterfactuals_by_object_count(tiny_scorer):
    """Held-out clips alternate one and two objects; each kind's rate is the clip-weighted
    mean of its two halves (a colour or shape change always applies, so halves are equal)."""
    m = evaluate(tiny_scorer, 8, seed=5)["methods"]["scorer"]
    for kind in ("color", "shape"):
        assert m[f"cf_{kind}_n"] == 8
        assert m[f"cf_{kind}"] == pytest.approx((m[f"cf_{kind}_one"] + m[f"cf_{kind}_two"]) / 2)
    assert "cf_binding_color_one" not in m  # binding needs two objects


def test_r1_ceiling_counts_captions_that_fit_several_clips():
    from train.train_scorer import r1_ceiling

    small = ClipSpec([ObjectSpec("circle", "red", "small", "left", 40, 10)], "gray")
    large = ClipSpec([ObjectSpec("circle", "red", "large", "left", 30, 10)], "gray")
    sized = ["a small red circle moving left on a gray background"] * 2
    assert (
        r1_ceiling(
            [small, large], sized[:1] + ["a large red circle going left on a gray background"]
        )
        == 1.0
    )
    unsized = "a red circle moving left on a gray background"
    assert r1_ceiling([small, large], [unsized, unsized]) == 0.5


def test_motion_targets_are_the_motions_shown():
    from train.train_scorer import motion_targets
    from world.shapes_world import MOTIONS, ClipSpec, ObjectSpec

    def obj(motion, after=None):
        return ObjectSpec("circle", "red", "small", motion, 0.0, 0.0, motion_after=after)

    two = ClipSpec([obj("left"), obj("up", after="down")], "black", switch_frame=8)
    hot = dict(zip(MOTIONS, motion_targets(two), strict=True))
    assert hot == {"left": 1.0, "right": 0.0, "up": 1.0, "down": 1.0, "still": 0.0}
    still = motion_targets(ClipSpec([obj("still")], "gray"))
    assert dict(zip(MOTIONS, still, strict=True))["still"] == 1.0


def test_motion_aux_loss_rewards_embeddings_that_carry_the_motion():
    from train.train_scorer import motion_aux_loss

    head = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2) * 5)  # axis 0 reads "left", axis 1 "right"
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    carry = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    blind = torch.tensor([[0.7071, 0.7071], [0.7071, 0.7071]])
    assert motion_aux_loss(head, carry, carry, targets) < motion_aux_loss(
        head, blind, blind, targets
    )
    # both sides count: a blind caption embedding costs even when the video carries it
    assert motion_aux_loss(head, carry, carry, targets) < motion_aux_loss(
        head, carry, blind, targets
    )


@pytest.mark.parametrize("aux", ["0", "1.0"])
def test_scorer_training_resumes_exactly(cli, tmp_path, aux):
    base = ["train", "scorer", "model.size=scorer_tiny", "steps=6", "batch_size=4"]
    base += [f"motion_aux_weight={aux}"]  # the auxiliary head is checkpointed too
    base += ["eval_clips=0", "log_every=1", "save_every=3", "image_every=2"]
    code, _, err = cli(*base, f"output_dir={tmp_path / 'a'}")
    assert code == 0, err
    code, _, err = cli(*base, f"output_dir={tmp_path / 'b'}", "max_steps=3")
    assert code == 0, err
    code, _, err = cli(*base, f"output_dir={tmp_path / 'b'}")  # resumes at step 3
    assert code == 0, err

    def losses(d):
        return [
            json.loads(x)["loss"] for x in (tmp_path / d / "log.jsonl").read_text().splitlines()
        ]

    assert len(losses("b")) == 6
    assert losses("b") == pytest.approx(losses("a"), rel=1e-5)


def test_scorer_fine_tune_starts_from_the_saved_weights(cli, tmp_path):
    from safetensors.torch import load_file

    from train.checkpoint import init_weights_from

    base = ["train", "scorer", "model.size=scorer_tiny", "batch_size=4", "eval_clips=0"]
    code, _, err = cli(*base, "steps=2", f"output_dir={tmp_path / 'a'}")
    assert code == 0, err
    saved = tmp_path / "a" / "model"
    # a fine-tune step at learning rate 0: the exported model is the one it started from
    code, _, err = cli(*base, "steps=1", "lr=0", f"init_from={saved}",
                       f"output_dir={tmp_path / 'b'}")  # fmt: skip
    assert code == 0, err
    a = load_file(str(saved / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # another architecture is refused, naming the mismatch
    with pytest.raises(ValueError, match="architecture differs"):
        init_weights_from(scorer_tiny(text_dim=384, stem="conv"), saved)
