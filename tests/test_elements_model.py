"""Reference elements in the model, the pipeline and the trainer (tiny random components)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from pipelines.components import reference_token_ids, vae_tiny
from pipelines.text_to_video import ShapesVideoPipeline
from tests.conftest import make_tiny_dit, make_tiny_vae, open_zero_inits, reset_accelerate
from train import train_dit
from train.checkpoint import init_weights_from
from train.config import DiTTrainConfig, load_config
from train.latent_cache import build_cache
from world.shapes_world import ShapesWorld, is_heldout_sprite

C = 4  # tests/conftest.py LATENT_CHANNELS


def _inputs(b: int = 2, f: int = 3, side: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, C, f, side, side, generator=g)
    return x, torch.full((b,), 500.0), torch.randn(b, 6, 384, generator=g)


# ----------------------------------------------------------------------------- model
def test_a_text_to_video_model_given_a_reference_path_is_unchanged_without_references():
    t2v = make_tiny_dit(opened=True)
    ref = make_tiny_dit(max_references=2)
    missing = ref.load_state_dict(t2v.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith(("ref_", "blocks.")) for k in missing)
    assert all(".ref_attn." in k or ".norm_r." in k for k in missing if k.startswith("blocks."))
    x, t, text = _inputs()
    with torch.no_grad():
        assert torch.equal(t2v(x, t, text).sample, ref(x, t, text).sample)


def test_references_change_the_output_and_absent_ones_do_not():
    model = open_zero_inits(make_tiny_dit(max_references=2), seed=1)
    x, t, text = _inputs()
    refs = torch.randn(2, 2, C, 8, 8)
    other = refs.clone()
    other[:, 1] = torch.randn(2, C, 8, 8)
    with torch.no_grad():
        plain = model(x, t, text).sample
        a = model(x, t, text, reference_latents=refs).sample
        b = model(x, t, text, reference_latents=other).sample
        swapped = model(x, t, text, reference_latents=refs.flip(1)).sample
        # reference 2 absent: its latents must not matter
        present = torch.tensor([[True, False], [True, False]])
        c = model(x, t, text, reference_latents=refs, reference_mask=present).sample
        d = model(x, t, text, reference_latents=other, reference_mask=present).sample
    assert a.shape == plain.shape and torch.isfinite(a).all()
    assert not torch.allclose(a, plain, atol=1e-5)
    assert not torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, swapped, atol=1e-5)  # order (slot) matters
    assert torch.allclose(c, d, atol=1e-6)


def test_placeholder_tokens_carry_their_slot(text_encoder):
    _, tokenizer = text_encoder
    prompts = ["<ref1> moving left and <ref2> moving up on a gray background", "a red circle"]
    ids = reference_token_ids(tokenizer, prompts)
    tokens = tokenizer(prompts, padding=True)["input_ids"]
    assert ids.shape == (2, len(tokens[0]))
    assert set(ids[0].tolist()) == {0, 1, 2} and not ids[1].any()
    first = tokenizer.convert_ids_to_tokens(tokens[0])
    assert "left" in first and ids[0, first.index("left")] == 0
    model = open_zero_inits(make_tiny_dit(max_references=2), seed=2)
    x, t, text = _inputs()
    refs = torch.randn(2, 1, C, 8, 8)
    bound = torch.zeros(2, 6, dtype=torch.long)
    bound[:, 1] = 1
    with torch.no_grad():
        unbound = model(x, t, text, reference_latents=refs).sample
        with_ids = model(x, t, text, reference_latents=refs, text_reference_ids=bound).sample
    assert not torch.allclose(unbound, with_ids, atol=1e-6)


def test_too_many_references_or_none_allowed_is_an_error():
    x, t, text = _inputs()
    with pytest.raises(ValueError, match="no reference path"):
        make_tiny_dit()(x, t, text, reference_latents=torch.zeros(2, 1, C, 8, 8))
    with pytest.raises(ValueError, match="at most 2"):
        make_tiny_dit(max_references=2)(x, t, text, reference_latents=torch.zeros(2, 3, C, 8, 8))


# ----------------------------------------------------------------------------- pipeline
def _ref_pipe(text_encoder, **dit_kw) -> ShapesVideoPipeline:
    encoder, tokenizer = text_encoder
    pipe = ShapesVideoPipeline(
        transformer=open_zero_inits(make_tiny_dit(**dit_kw), seed=3),
        vae=make_tiny_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=encoder,
        tokenizer=tokenizer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sprite(color) -> np.ndarray:
    img = np.full((20, 30, 4), 0, dtype=np.uint8)  # odd size, RGBA, transparent around
    img[5:15, 10:20] = (*color, 255)
    return img


def test_pipeline_generates_with_references_and_they_matter(text_encoder):
    pipe = _ref_pipe(text_encoder, max_references=2)
    prompt = "<ref1> moving left and <ref2> moving up on a gray background"

    def run(refs):
        return pipe(
            prompt,
            reference_images=refs,
            num_frames=3,
            height=16,
            width=16,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
        ).frames

    a = run([_sprite((230, 40, 40)), _sprite((40, 90, 240))])
    again = run([_sprite((230, 40, 40)), _sprite((40, 90, 240))])
    b = run([_sprite((40, 190, 70)), _sprite((40, 90, 240))])
    assert a.shape == (1, 3, 16, 16, 3) and np.isfinite(a).all()
    assert np.array_equal(a, again)  # deterministic for a seed
    assert not np.allclose(a, b)


@pytest.mark.parametrize(
    "prompt, n, message",
    [
        ("<ref1> and <ref2> on a black background", 1, "<ref2>"),
        ("<ref1> moving up on a black background", 2, "reference image 2"),
    ],
)
def test_pipeline_checks_placeholders_against_images(text_encoder, prompt, n, message):
    pipe = _ref_pipe(text_encoder, max_references=2)
    with pytest.raises(ValueError, match=message):
        pipe(
            prompt, reference_images=[_sprite((230, 40, 40))] * n, num_frames=2, height=16, width=16
        )


def test_text_to_video_model_refuses_references(text_encoder, tiny_pipe):
    with pytest.raises(ValueError, match="not trained with reference elements"):
        tiny_pipe("<ref1> moving up", reference_images=[_sprite((230, 40, 40))], num_frames=2)


# ----------------------------------------------------------------------------- trainer
def test_latent_cache_holds_reference_clips_without_heldout_sprites():
    torch.manual_seed(0)
    vae = vae_tiny(sample_size=16).eval()
    cache = build_cache(vae, 2, 2, size=16, frames=4, n_references=6, progress=False)
    assert cache.ref_clips.shape[:3] == (6, vae.config.latent_channels, 4)
    assert cache.ref_images.shape[:2] == (6, 2)
    for spec, images in zip(cache.ref_specs, cache.ref_images, strict=True):
        n = len(spec["objects"])
        assert images[:n].abs().sum() > 0 and not images[n:].any()  # zero-padded
        for o in spec["objects"]:
            assert not is_heldout_sprite(o["shape"], o["pattern"], o["color"], o["color2"])
    # and the renderer does draw held-out sprites when exclusions are off
    world = ShapesWorld(size=16, frames=4, seed=0, mix={"reference": 1.0}, exclusions=False)
    looks = [o for i in range(200) for o in world.sample(i).meta["objects"]]
    assert any(is_heldout_sprite(o["shape"], o["pattern"], o["color"], o["color2"]) for o in looks)


def test_fine_tune_adds_the_reference_path_to_a_text_to_video_model(
    tmp_path, text_encoder, monkeypatch
):
    torch.manual_seed(0)
    vae_tiny(sample_size=16).save_pretrained(tmp_path / "vae")
    text = (
        "model: {size: dit_tiny, patch_size: 2}\n"
        "data: {size: 16, clip_frames: 4, cache_clips: 4, cache_images: 4, cache_references: 4}\n"
        "stages:\n  - {name: clips, steps: 2, frames: 4, batch_size: 3, reference_prob: P}\n"
        f"warmup: 1\nlog_every: 1\nsample_every: 0\nmixed_precision: 'no'\nvae: {tmp_path / 'vae'}\n"
    )
    (tmp_path / "t2v.yaml").write_text(text.replace("P", "0.0"))
    (tmp_path / "ref.yaml").write_text(text.replace("P", "0.9"))
    monkeypatch.setattr(train_dit, "load_text_encoder", lambda spec, dtype=None: text_encoder)
    reset_accelerate()
    t2v = train_dit.main(
        load_config(DiTTrainConfig, tmp_path / "t2v.yaml", [f"output_dir={tmp_path / 'a'}"])
    )
    reset_accelerate()
    cfg = load_config(
        DiTTrainConfig,
        tmp_path / "ref.yaml",
        [f"output_dir={tmp_path / 'b'}", "model.max_references=2", f"init_from={t2v}"],
    )
    final = train_dit.main(cfg)
    reset_accelerate()
    pipe = ShapesVideoPipeline.from_pretrained(
        final, text_encoder=text_encoder[0], tokenizer=text_encoder[1]
    )
    assert pipe.max_references == 2
    # the text-to-video weights were the starting point, the new reference path is trained:
    # its zero-initialised output layers have moved
    fresh = make_tiny_dit(max_references=2, in_channels=pipe.transformer.config.in_channels)
    missing = init_weights_from(fresh, str(t2v))
    assert missing and all("ref" in k or "norm_r" in k for k in missing)
    assert all(b.ref_attn.to_out[0].weight.abs().sum() > 0 for b in pipe.transformer.blocks)
    # an architecture mismatch is refused with a clear message
    with pytest.raises(ValueError, match="architecture differs"):
        init_weights_from(make_tiny_dit(width=64, heads=4), str(t2v))
