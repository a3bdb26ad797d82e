"""pipelines.text_to_video: a 2-step pipeline at 16×16×8 on tiny random components.

Shape, range, determinism, a regression slice, output types, step callbacks, conditioning
frames, save/load in diffusers layout and input checks (diffusers ``tests/pipelines`` style).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
from PIL import Image

from models.video_dit import VideoDiT
from pipelines.text_to_video import ShapesVideoPipeline, to_uint8

from .conftest import LATENT_CHANNELS

PROMPT = "a red square moving right on a black background"
FRAMES, SIZE, STEPS = 8, 16, 2


def run(pipe, seed: int = 0, **kw):
    args = dict(
        num_frames=FRAMES,
        height=SIZE,
        width=SIZE,
        num_inference_steps=STEPS,
        generator=torch.Generator("cpu").manual_seed(seed),
    )
    args.update(kw)
    return pipe(kw.pop("prompt", PROMPT), **{k: v for k, v in args.items() if k != "prompt"})


def given_frames(k: int = 2, seed: int = 0) -> np.ndarray:
    """k uint8 frames (k, H, W, 3): flat colour blocks like Shapes World's."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((k, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(k):
        frames[i, :] = rng.integers(0, 60, size=3)
        y, x = rng.integers(0, SIZE - 6, size=2)
        frames[i, y : y + 6, x : x + 6] = rng.integers(100, 256, size=3)
    return frames


# -------------------------------------------------------------------------- basics
def test_output_shape_and_range(tiny_pipe):
    frames = run(tiny_pipe).frames
    assert isinstance(frames, np.ndarray)
    assert frames.shape == (1, FRAMES, SIZE, SIZE, 3)
    assert frames.dtype == np.float32
    assert frames.min() >= 0.0 and frames.max() <= 1.0
    assert frames.std() > 0.01  # not a constant image


def test_deterministic_with_same_generator(tiny_pipe):
    a = run(tiny_pipe, seed=7).frames
    b = run(tiny_pipe, seed=7).frames
    np.testing.assert_array_equal(a, b)


def test_different_seed_differs(tiny_pipe):
    a = run(tiny_pipe, seed=0).frames
    b = run(tiny_pipe, seed=1).frames
    assert np.abs(a - b).mean() > 0.01


def test_regression_slice(tiny_pipe):
    """Last frame, bottom-right 3×3 corner, blue channel (computed once at guidance 4, pinned)."""
    frames = run(tiny_pipe, seed=0, guidance_scale=4.0).frames
    got = frames[0, -1, -3:, -3:, -1].flatten()
    expected = np.array(
        [0.404713, 0.599490, 0.502513, 0.510869, 0.265633, 0.459594, 0.631139, 0.246918, 0.370436]
    )
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_transformer_takes_part(tiny_pipe):
    """Text changes the output: the frames are not just the decoded initial noise."""
    a = run(tiny_pipe, prompt="a red square").frames
    b = run(tiny_pipe, prompt="a large blue circle moving up").frames
    assert np.abs(a - b).max() > 1e-3


def test_batch_of_prompts_and_negative_prompt(tiny_pipe):
    out = run(tiny_pipe, prompt=["a red square", "a blue circle"], negative_prompt="noise")
    assert out.frames.shape == (2, FRAMES, SIZE, SIZE, 3)
    single = run(tiny_pipe, prompt="a red square", negative_prompt="noise").frames
    assert np.abs(out.frames[:1] - single).max() > 0  # the batch draws different noise
    no_guidance = run(tiny_pipe, guidance_scale=1.0).frames
    assert no_guidance.shape == (1, FRAMES, SIZE, SIZE, 3)


# -------------------------------------------------------------------------- output types
def test_output_types(tiny_pipe):
    np_frames = run(tiny_pipe, output_type="np").frames
    pt = run(tiny_pipe, output_type="pt").frames
    assert isinstance(pt, torch.Tensor) and pt.shape == (1, FRAMES, 3, SIZE, SIZE)
    np.testing.assert_allclose(pt.permute(0, 1, 3, 4, 2).numpy(), np_frames, atol=1e-6)

    pil = run(tiny_pipe, output_type="pil").frames
    assert len(pil) == 1 and len(pil[0]) == FRAMES
    assert all(isinstance(im, Image.Image) and im.size == (SIZE, SIZE) for im in pil[0])
    np.testing.assert_array_equal(np.asarray(pil[0][3]), to_uint8(np_frames[0, 3]))

    latents = run(tiny_pipe, output_type="latent").frames
    scale = tiny_pipe.vae_scale
    channels = tiny_pipe.vae.config.latent_channels
    assert latents.shape == (1, channels, FRAMES, SIZE // scale, SIZE // scale)
    decoded = tiny_pipe.decode_latents(latents).permute(0, 1, 3, 4, 2).numpy()
    np.testing.assert_allclose(decoded, np_frames, atol=1e-6)

    (tuple_frames,) = run(tiny_pipe, return_dict=False)
    np.testing.assert_array_equal(tuple_frames, np_frames)


# -------------------------------------------------------------------------- callbacks
def test_callback_called_once_per_step(tiny_pipe):
    calls = []

    def callback(pipe, step, timestep, tensors):
        calls.append((step, float(timestep), tuple(tensors)))
        return tensors

    run(tiny_pipe, num_inference_steps=3, callback_on_step_end=callback)
    assert [c[0] for c in calls] == [0, 1, 2]
    assert all(c[2] == ("latents",) for c in calls)
    timesteps = [c[1] for c in calls]
    assert timesteps == sorted(timesteps, reverse=True) and len(set(timesteps)) == 3


def test_callback_can_replace_latents(tiny_pipe):
    def zero_at_end(pipe, step, timestep, tensors):
        if step == STEPS - 1:
            return {"latents": torch.zeros_like(tensors["latents"])}
        return tensors

    out = run(tiny_pipe, output_type="latent", callback_on_step_end=zero_at_end).frames
    assert torch.equal(out, torch.zeros_like(out))

    # replacing mid-way changes what the later steps start from
    def halve_first(pipe, step, timestep, tensors):
        return {"latents": tensors["latents"] * 0.5} if step == 0 else tensors

    ref = run(tiny_pipe, output_type="latent").frames
    halved = run(tiny_pipe, output_type="latent", callback_on_step_end=halve_first).frames
    assert (ref - halved).abs().max() > 1e-3


def test_callback_unknown_tensor_input(tiny_pipe):
    with pytest.raises(ValueError, match="'noise'"):
        run(
            tiny_pipe,
            callback_on_step_end=lambda *a: {},
            callback_on_step_end_tensor_inputs=["noise"],
        )


# -------------------------------------------------------------------------- conditioning frames
def test_conditioning_frames_are_kept_exactly(tiny_pipe):
    given = given_frames(2)
    out = run(tiny_pipe, conditioning_frames=given).frames
    assert out.shape == (1, FRAMES, SIZE, SIZE, 3)
    np.testing.assert_array_equal(to_uint8(out[0, :2]), given)
    free = run(tiny_pipe).frames
    assert np.abs(out[0, 2:] - free[0, 2:]).max() > 1e-4  # the rest continues the given frames


def test_conditioning_latents_equal_encoded_frames(tiny_pipe):
    given = given_frames(3, seed=1)
    latents = run(tiny_pipe, conditioning_frames=given, output_type="latent").frames
    pixels = torch.from_numpy(given).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    expected = tiny_pipe.encode_frames(pixels[None])  # (1, C, 3, h, w)
    assert torch.equal(latents[:, :, :3], expected.float())
    assert not torch.equal(latents[:, :, 3], expected[:, :, 2].float())


def test_conditioning_float_frames_and_given_latents(tiny_pipe):
    given = given_frames(1, seed=2)
    as_float = torch.from_numpy(given).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    a = run(tiny_pipe, conditioning_frames=given).frames
    b = run(tiny_pipe, conditioning_frames=as_float).frames
    np.testing.assert_allclose(a, b, atol=1e-6)

    # caller's latents are used but not modified
    noise = torch.randn(
        1, LATENT_CHANNELS, FRAMES, 8, 8, generator=torch.Generator().manual_seed(0)
    )
    before = noise.clone()
    c = run(tiny_pipe, latents=noise, conditioning_frames=given).frames
    assert torch.equal(noise, before)
    np.testing.assert_array_equal(a, c)  # same seed → same noise as the generator path


def first_frame_by_hand(pipe, seed: int = 0, output_type: str = "latent", **kw):
    """What an image-first clip's frame 0 should be: the same generator draws the clip's noise,
    then a one-frame generation of the prompt."""
    from diffusers.utils.torch_utils import randn_tensor

    g = torch.Generator("cpu").manual_seed(seed)
    randn_tensor((1, LATENT_CHANNELS, FRAMES, 8, 8), generator=g)
    kw.setdefault("num_inference_steps", STEPS)
    return pipe(
        PROMPT, num_frames=1, height=SIZE, width=SIZE, generator=g, output_type=output_type, **kw
    ).frames


def test_image_first_generates_frame_zero_as_an_image_then_continues_it(tiny_pipe):
    clip = run(tiny_pipe, image_first=True, output_type="latent").frames
    torch.testing.assert_close(clip[:, :, :1], first_frame_by_hand(tiny_pipe))
    joint = run(tiny_pipe, output_type="latent").frames
    assert not torch.allclose(clip[:, :, 1:], joint[:, :, 1:])
    # the default comes from the pipeline's config and survives save / load
    tiny_pipe.register_to_config(image_first=True)
    try:
        torch.testing.assert_close(run(tiny_pipe, output_type="latent").frames, clip)
    finally:
        tiny_pipe.register_to_config(image_first=False)


def image_model_pipeline(text_encoder, shift: float | None = 3.0):
    """A tiny pipeline with a first-frame image model of its own (patch 1, another seed)."""
    from .conftest import build_tiny_pipeline, make_tiny_dit

    pipe = build_tiny_pipeline(text_encoder)
    pipe.register_modules(image_transformer=make_tiny_dit(seed=7, opened=True, patch_size=1))
    pipe.register_to_config(image_shift=shift)
    return pipe


def test_image_model_draws_single_frames_and_the_first_frame_of_image_first_clips(
    text_encoder, tiny_pipe
):
    pipe = image_model_pipeline(text_encoder)
    calls = []
    hook = pipe.image_transformer.register_forward_hook(
        lambda module, args, output: calls.append(args[1][0].item())
    )
    try:
        image = run(pipe, num_frames=1, output_type="latent").frames
    finally:
        hook.remove()
    # the image model drew it, with the image shift's timesteps (not the scheduler's own)
    assert len(calls) == STEPS
    shifted = FlowMatchEulerDiscreteScheduler(shift=3.0)
    shifted.set_timesteps(STEPS)
    np.testing.assert_allclose(calls, shifted.timesteps.numpy(), rtol=1e-5)
    plain = run(tiny_pipe, num_frames=1, output_type="latent").frames
    assert not torch.allclose(image, plain)

    # image-first: frame 0 is the image model's, the rest the video model's continuation
    clip = run(pipe, image_first=True, output_type="latent").frames
    torch.testing.assert_close(clip[:, :, :1], first_frame_by_hand(pipe))
    # a clip without image-first never touches the image model
    calls.clear()
    hook = pipe.image_transformer.register_forward_hook(lambda *a: calls.append(1))
    try:
        run(pipe, output_type="latent")
        run(pipe, num_frames=4, conditioning_frames=given_frames(1), output_type="latent")
    finally:
        hook.remove()
    assert calls == []


def test_image_model_saved_in_half_precision_loads_at_the_pipelines_dtype(text_encoder, tmp_path):
    pipe = image_model_pipeline(text_encoder)
    before = run(pipe, num_frames=1).frames
    pipe.image_transformer.to(torch.float16)
    pipe.save_pretrained(tmp_path, save_text_encoder=False)
    pipe.image_transformer.to(torch.float32)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["image_transformer"] == ["models.video_dit", "VideoDiT"]
    assert index["image_shift"] == 3.0
    weights = tmp_path / "image_transformer" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(weights)).values()} == {torch.float16}
    loaded = ShapesVideoPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.image_transformer.dtype == torch.float32
    np.testing.assert_allclose(run(loaded, num_frames=1).frames, before, atol=2e-2)
    # a pipeline saved without one loads without one
    plain_dir = tmp_path / "plain"
    from .conftest import build_tiny_pipeline

    build_tiny_pipeline(text_encoder).save_pretrained(plain_dir, save_text_encoder=False)
    assert ShapesVideoPipeline.from_pretrained(plain_dir).image_transformer is None


def stochastic(pipe):
    """The pipeline with diffusers' stochastic flow sampler (re-noised from x̂0 each step)."""
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        pipe.scheduler.config, stochastic_sampling=True
    )
    return pipe


def test_stochastic_sampler_is_seeded_and_keeps_given_frames(text_encoder):
    from .conftest import build_tiny_pipeline

    pipe = build_tiny_pipeline(text_encoder)
    ode = run(pipe, output_type="latent").frames
    stochastic(pipe)
    a = run(pipe, output_type="latent").frames
    torch.testing.assert_close(run(pipe, output_type="latent").frames, a)  # the generator's noise
    assert not torch.allclose(a, ode)
    assert not torch.allclose(run(pipe, seed=1, output_type="latent").frames, a)
    # every step re-noises the whole clip, yet given frames stay exactly as encoded
    given = given_frames(2, seed=3)
    out = run(pipe, conditioning_frames=given, output_type="latent").frames
    pixels = torch.from_numpy(given).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    assert torch.equal(out[:, :, :2], pipe.encode_frames(pixels[None]).float())


def test_image_stochastic_samples_only_the_image_model_stochastically(text_encoder, tmp_path):
    pipe = image_model_pipeline(text_encoder)
    ode_image = run(pipe, num_frames=1, output_type="latent").frames
    ode_video = run(pipe, conditioning_frames=given_frames(1), output_type="latent").frames
    pipe.register_to_config(image_stochastic=True)
    image = run(pipe, num_frames=1, output_type="latent").frames
    assert not torch.allclose(image, ode_image)
    torch.testing.assert_close(run(pipe, num_frames=1, output_type="latent").frames, image)
    # the video model's sampler is untouched
    video = run(pipe, conditioning_frames=given_frames(1), output_type="latent").frames
    torch.testing.assert_close(video, ode_video)
    # image-first: frame 0 is the stochastic image
    clip = run(pipe, image_first=True, output_type="latent").frames
    torch.testing.assert_close(clip[:, :, :1], first_frame_by_hand(pipe))
    # the setting is saved with the pipeline
    pipe.save_pretrained(tmp_path, save_text_encoder=False)
    loaded = ShapesVideoPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.image_stochastic is True
    torch.testing.assert_close(run(loaded, num_frames=1, output_type="latent").frames, image)


def test_first_frame_guidance_guides_frame_zero_apart_from_the_clip(text_encoder, tmp_path):
    pipe = image_model_pipeline(text_encoder)
    pipe.register_to_config(first_frame_guidance=4.0)
    clip = run(pipe, image_first=True, guidance_scale=1.5, output_type="latent").frames
    # frame 0 is drawn at the pipeline's first-frame guidance, not at the call's
    torch.testing.assert_close(clip[:, :, :1], first_frame_by_hand(pipe, guidance_scale=4.0))
    assert not torch.allclose(clip[:, :, :1], first_frame_by_hand(pipe, guidance_scale=1.5))
    # the continuation is guided at the call's: unset, guidance 4 throughout changes frames 1..
    pipe.register_to_config(first_frame_guidance=None)
    both_at_4 = run(pipe, image_first=True, guidance_scale=4.0, output_type="latent").frames
    torch.testing.assert_close(both_at_4[:, :, :1], clip[:, :, :1])
    assert not torch.allclose(both_at_4[:, :, 1:], clip[:, :, 1:])
    # a single frame asked for directly keeps the call's guidance
    pipe.register_to_config(first_frame_guidance=4.0)
    image = run(pipe, num_frames=1, guidance_scale=1.5, output_type="latent").frames
    plain = image_model_pipeline(text_encoder)
    torch.testing.assert_close(
        image, run(plain, num_frames=1, guidance_scale=1.5, output_type="latent").frames
    )
    # the setting is saved with the pipeline
    pipe.save_pretrained(tmp_path, save_text_encoder=False)
    loaded = ShapesVideoPipeline.from_pretrained(tmp_path)
    assert loaded.config.first_frame_guidance == 4.0


def test_first_frame_steps_draw_frame_zero_in_its_own_step_count(text_encoder, tmp_path):
    pipe = image_model_pipeline(text_encoder)
    pipe.register_to_config(first_frame_steps=STEPS + 2)
    clip = run(pipe, image_first=True, output_type="latent").frames
    # frame 0 at the pipeline's first-frame steps, not at the call's
    by_steps = first_frame_by_hand(pipe, num_inference_steps=STEPS + 2)
    torch.testing.assert_close(clip[:, :, :1], by_steps)
    assert not torch.allclose(by_steps, first_frame_by_hand(pipe))
    # the clip keeps the call's steps: the image model runs STEPS + 2 times, the video model STEPS
    calls = {"image": 0, "video": 0}
    pipe.image_transformer.register_forward_hook(
        lambda *a: calls.__setitem__("image", calls["image"] + 1)
    )
    pipe.transformer.register_forward_hook(
        lambda *a: calls.__setitem__("video", calls["video"] + 1)
    )
    run(pipe, image_first=True, output_type="latent")
    assert calls == {"image": STEPS + 2, "video": STEPS}
    pipe.save_pretrained(tmp_path, save_text_encoder=False)
    assert ShapesVideoPipeline.from_pretrained(tmp_path).config.first_frame_steps == STEPS + 2


def test_latent_multiple_covers_both_patch_sizes(text_encoder):
    from .conftest import build_tiny_pipeline, make_tiny_dit

    pipe = build_tiny_pipeline(text_encoder, patch_size=1)
    assert pipe.latent_multiple == 2
    pipe.register_modules(image_transformer=make_tiny_dit(patch_size=2))
    assert pipe.latent_multiple == 4
    with pytest.raises(ValueError, match=r"height must be a positive multiple of 4 .*got 6\b"):
        run(pipe, height=6, num_frames=1)


# -------------------------------------------------------------------------- save / load
def test_save_load_round_trip_without_text_encoder(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path, save_text_encoder=False)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["text_encoder"] == [None, None]
    assert index["tokenizer"] == [None, None]
    assert index["text_encoder_spec"] == "minilm"
    assert index["image_first"] is False
    assert index["transformer"] == ["models.video_dit", "VideoDiT"]
    assert not (tmp_path / "text_encoder").exists()
    for sub in ("transformer", "vae"):
        assert (tmp_path / sub / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    # the live pipeline keeps its encoder after saving without it
    assert tiny_pipe.text_encoder is not None and tiny_pipe.tokenizer is not None

    loaded = ShapesVideoPipeline.from_pretrained(tmp_path)  # MiniLM comes from the spec
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.text_encoder).__name__ == "BertModel"
    np.testing.assert_array_equal(run(loaded).frames, run(tiny_pipe).frames)

    # every component loads on its own
    dit = VideoDiT.from_pretrained(tmp_path / "transformer")
    vae = AutoencoderKL.from_pretrained(tmp_path / "vae")
    for a, b in zip(dit.parameters(), tiny_pipe.transformer.parameters(), strict=True):
        assert torch.equal(a, b)
    assert list(vae.config.block_out_channels) == list(tiny_pipe.vae.config.block_out_channels)
    for a, b in zip(vae.parameters(), tiny_pipe.vae.parameters(), strict=True):
        assert torch.equal(a, b)


def test_latent_multiple(tiny_pipe):
    assert tiny_pipe.vae_scale == 2
    assert tiny_pipe.latent_multiple == 4  # VAE ×2, patch 2


# -------------------------------------------------------------------------- input checks
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt": ""}, "got ''"),
        ({"prompt": "   "}, "got '   '"),
        ({"prompt": ["ok", " "]}, r"got \['ok', ' '\]"),
        ({"num_frames": 0}, r"num_frames .*got 0\b"),
        ({"num_frames": 65}, r"1\.\.64, got 65\b"),
        ({"height": 18}, r"height .*multiple of 4.*got 18\b"),
        ({"width": 10}, r"width .*got 10\b"),
        ({"height": 0}, r"height .*got 0\b"),
        ({"num_inference_steps": 0}, r"num_inference_steps .*got 0\b"),
        ({"num_inference_steps": 1001}, r"1\.\.1000, got 1001\b"),
        ({"guidance_scale": -1.0}, r"guidance_scale .*got -1\.0"),
        ({"output_type": "mp4"}, "got 'mp4'"),
        ({"conditioning_frames": "8 frames"}, r"^8 conditioning frames .*8-frame clip"),
        ({"negative_prompt": ["a", "b"]}, "negative_prompt has 2 entries"),
        ({"latents": torch.zeros(1, 4, 8, 4, 4)}, r"\(1, 4, 8, 8, 8\), got \(1, 4, 8, 4, 4\)"),
        ({"conditioning_frames": "wrong size"}, r"\(8, 8\).*\(16, 16\)"),
    ],
)
def test_bad_inputs_raise_value_error(tiny_pipe, kwargs, message):
    kwargs = dict(kwargs)
    if kwargs.get("conditioning_frames") == "8 frames":
        kwargs["conditioning_frames"] = given_frames(FRAMES)
    elif kwargs.get("conditioning_frames") == "wrong size":
        kwargs["conditioning_frames"] = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=message):
        run(tiny_pipe, **kwargs)


def test_sample_prediction_model_generates_and_keeps_given_frames(text_encoder):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from pipelines.text_to_video import ShapesVideoPipeline

    from .conftest import make_tiny_dit, make_tiny_vae

    pipe = ShapesVideoPipeline(
        transformer=make_tiny_dit(opened=True, prediction_type="sample"),
        vae=make_tiny_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=text_encoder[0],
        tokenizer=text_encoder[1],
    )
    pipe.set_progress_bar_config(disable=True)
    given = given_frames(2)
    out = run(pipe, conditioning_frames=given).frames
    np.testing.assert_array_equal(to_uint8(out[0, :2]), given)
    latents = run(pipe, output_type="latent").frames
    assert torch.isfinite(latents).all()
    # one step from pure noise: σ = 1 → v = x − x̂0, so the Euler step lands on x̂0 exactly
    noise = torch.randn(1, LATENT_CHANNELS, FRAMES, SIZE // 2, SIZE // 2)
    one = run(pipe, latents=noise, num_inference_steps=1, guidance_scale=1.0, output_type="latent")
    text, mask = pipe.encode_prompt([PROMPT], None, "cpu")
    with torch.no_grad():
        x0 = pipe.transformer(noise, torch.tensor([1000.0]), text, mask).sample
    assert torch.allclose(one.frames, x0, atol=1e-5)


def test_embedded_guidance_model_runs_once_a_step_with_the_scale(text_encoder):
    """A guidance-distilled transformer (``guidance_embeds``) gets the scale as an input and
    runs once a step on the prompt alone; with a negative prompt it runs classic guidance
    (both halves) at embedded scale 1; a scale ≤ 1 reaches it as 1."""
    from .conftest import build_tiny_pipeline

    pipe = build_tiny_pipeline(text_encoder, guidance_embeds=True)  # opened: the input is live
    seen = []

    def hook(module, args, kwargs):
        seen.append((args[0].shape[0], kwargs["guidance"].tolist()))

    pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    at_3 = run(pipe, guidance_scale=3.0, output_type="latent").frames
    assert seen == [(1, [3.0])] * STEPS
    seen.clear()
    run(pipe, guidance_scale=3.0, negative_prompt="blurry", output_type="latent")
    assert seen == [(2, [1.0])] * STEPS
    seen.clear()
    run(pipe, guidance_scale=0.5, output_type="latent")
    assert seen == [(1, [1.0])] * STEPS
    assert not torch.allclose(at_3, run(pipe, guidance_scale=5.0, output_type="latent").frames)
