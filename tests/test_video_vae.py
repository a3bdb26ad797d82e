"""Video VAEs as the latent space (pipelines/latent_space.py): tiny random AutoencoderKLWan,
AutoencoderKLCogVideoX and AutoencoderKLLTXVideo built offline and saved like users' folders.

Encode/decode shapes and normalisation, the pipeline on latent frames (frame-count rule,
conditioning frames and image-first with a causal VAE, refusals with a non-causal one), a
short ``studio train dit`` run on a video VAE that exports a pipeline that generates, the
precomputed shard latents, and the frame-wise 2-D path unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    AutoencoderKLLTXVideo,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
)

import train.train_dit as train_dit
from pipelines.components import load_vae, vae_downscale
from pipelines.latent_space import LatentSpace
from pipelines.text_to_video import ShapesVideoPipeline
from tests.conftest import (
    LATENT_CHANNELS,
    losses,
    make_tiny_dit,
    make_tiny_vae,
    reset_accelerate,
)
from tests.test_scale import shards  # noqa: F401  (a fixture: test_scale's packed shards)
from train.config import ConfigError, DiTTrainConfig, check_latent_frames, load_config
from train.latent_cache import encode_videos

SIZE = 16
PROMPT = "a red square moving right on a black background"


def tiny_wan() -> AutoencoderKLWan:
    """4× down in space, 4× in time (two temporal downsamplings), its own latent stats."""
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[2.0, 0.5, 1.5, 1.0],
        scale_factor_temporal=4,
        scale_factor_spatial=4,
    )


def tiny_cogvideox() -> AutoencoderKLCogVideoX:
    """2× down in space and in time."""
    return AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 2,
        up_block_types=("CogVideoXUpBlock3D",) * 2,
        block_out_channels=(8, 8),
        latent_channels=LATENT_CHANNELS,
        layers_per_block=1,
        norm_num_groups=4,
        temporal_compression_ratio=2,
        sample_height=SIZE,
        sample_width=SIZE,
        scaling_factor=0.7,
    )


def tiny_ltx() -> AutoencoderKLLTXVideo:
    """Patch 2 and one spatio-temporal downsampling: 4× in space, 2× in time."""
    vae = AutoencoderKLLTXVideo(
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(8, 8),
        down_block_types=("LTXVideoDownBlock3D",) * 2,
        decoder_block_out_channels=(8, 8),
        layers_per_block=(1, 1, 1),
        decoder_layers_per_block=(1, 1, 1),
        spatio_temporal_scaling=(True, False),
        decoder_spatio_temporal_scaling=(True, False),
        decoder_inject_noise=(False, False, False),
        downsample_type=("conv", "conv"),
        upsample_residual=(False, False),
        upsample_factor=(1, 1),
        patch_size=2,
        patch_size_t=1,
        scaling_factor=0.9,
    )
    with torch.no_grad():  # statistics as a trained one stores them (buffers, saved)
        vae.latents_mean.copy_(torch.tensor([0.2, 0.0, -0.1, 0.3]))
        vae.latents_std.copy_(torch.tensor([1.5, 0.8, 1.0, 2.0]))
    return vae


# name → (factory, class, spatial scale, temporal scale, frame step, causal)
VIDEO_VAES = {
    "wan": (tiny_wan, AutoencoderKLWan, 4, 4, 4, True),
    "cogvideox": (tiny_cogvideox, AutoencoderKLCogVideoX, 2, 2, 4, False),
    "ltx": (tiny_ltx, AutoencoderKLLTXVideo, 4, 2, 2, True),
}


@pytest.fixture(scope="module")
def vae_dirs(tmp_path_factory) -> dict[str, Path]:
    """Each tiny video VAE saved to its own folder (config.json names its class)."""
    dirs = {}
    for name, (factory, *_) in VIDEO_VAES.items():
        torch.manual_seed(0)
        dirs[name] = tmp_path_factory.mktemp(name)
        factory().eval().save_pretrained(dirs[name])
    return dirs


def clip(frames: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """(B, F, 3, SIZE, SIZE) in [-1, 1]: a flat background with a moving block."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((batch, frames, 3, SIZE, SIZE), -0.6)
    for t in range(frames):
        x[:, t, :, 4:10, t % 8 : t % 8 + 6] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    return x


def build_pipe(vae, text_encoder, seed: int = 0, **dit_kw) -> ShapesVideoPipeline:
    encoder, tokenizer = text_encoder
    pipe = ShapesVideoPipeline(
        transformer=make_tiny_dit(seed, opened=True, **dit_kw),
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=encoder,
        tokenizer=tokenizer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, num_frames: int, seed: int = 0, **kw):
    return pipe(
        PROMPT,
        num_frames=num_frames,
        height=SIZE,
        width=SIZE,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    ).frames


# -------------------------------------------------------------------------- the latent space
@pytest.mark.parametrize("name", sorted(VIDEO_VAES))
def test_load_vae_reads_the_class_and_the_space_its_scales(vae_dirs, name):
    _, cls, spatial, temporal, step, causal = VIDEO_VAES[name]
    vae = load_vae(str(vae_dirs[name]))
    assert type(vae) is cls
    space = LatentSpace(vae)
    assert (space.spatial_scale, space.temporal_scale, space.frame_step) == (
        spatial,
        temporal,
        step,
    )
    assert space.causal is causal and not space.frame_wise and space.channels == LATENT_CHANNELS
    assert vae_downscale(vae) == spatial
    for f in (1, 3, 5):  # (CogVideoX decodes odd latent counts only)
        assert space.latent_frames(space.pixel_frames(f)) == f
    with pytest.raises(ValueError, match=rf"1 \+ k·{step}.*nearest valid counts are"):
        space.latent_frames(step + 2)


@pytest.mark.parametrize("name", sorted(VIDEO_VAES))
def test_encode_decode_shapes_on_latent_frames(vae_dirs, name):
    space = LatentSpace(load_vae(str(vae_dirs[name])).eval())
    frames = 1 + 2 * space.frame_step
    z = space.encode(clip(frames, batch=2))
    f = space.latent_frames(frames)
    s = SIZE // space.spatial_scale
    assert z.shape == (2, LATENT_CHANNELS, f, s, s) and z.dtype == torch.float32
    video = space.decode(z)
    assert video.shape == (2, frames, 3, SIZE, SIZE)
    assert 0 <= video.min() and video.max() <= 1
    image = space.encode(clip(1))  # an image is a clip of one frame: one latent frame
    assert image.shape == (1, LATENT_CHANNELS, 1, s, s)
    assert space.decode(image).shape == (1, 1, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="frames to encode must be 1"):
        space.encode(clip(frames + 1))


def test_each_model_is_normalised_as_its_diffusers_pipeline_does(vae_dirs):
    x = clip(5).permute(0, 2, 1, 3, 4)  # (1, 3, F, H, W)
    for name in VIDEO_VAES:
        vae = load_vae(str(vae_dirs[name])).eval()
        with torch.no_grad():
            raw = vae.encode(x).latent_dist.mean
        got = LatentSpace(vae).encode(x.permute(0, 2, 1, 3, 4))
        view = (1, -1, 1, 1, 1)
        if name == "wan":  # WanPipeline: (z − latents_mean) / latents_std
            mean = torch.tensor(vae.config.latents_mean).view(view)
            want = (raw - mean) / torch.tensor(vae.config.latents_std).view(view)
        elif name == "ltx":  # LTXPipeline._normalize_latents
            mean, std = vae.latents_mean.view(view), vae.latents_std.view(view)
            want = (raw - mean) * vae.config.scaling_factor / std
        else:  # CogVideoXPipeline: z · scaling_factor
            want = raw * vae.config.scaling_factor
        torch.testing.assert_close(got, want)


def test_causal_vaes_encode_a_prefix_as_the_clips_first_latent_frames(vae_dirs):
    """What conditioning frames, image-first sampling and cached prefixes rely on; CogVideoX
    (GroupNorm over the frames encoded together) does not have it, and says so."""
    x = clip(9)
    for name in VIDEO_VAES:
        space = LatentSpace(load_vae(str(vae_dirs[name])).eval())
        whole = space.encode(x)
        first = space.encode(x[:, :1])
        same = torch.allclose(whole[:, :, :1], first, atol=1e-5)
        assert same is space.causal, name


def test_the_frame_wise_path_is_the_one_before_video_vaes():
    """The 2-D VAE is still encoded frame by frame as ``(mean − shift) · scale`` and decoded
    in chunks of 32 frames; the pipeline's regression slice (test_pipeline) pins the rest."""
    vae = make_tiny_vae()
    vae.register_to_config(scaling_factor=0.8, shift_factor=0.1)
    space = LatentSpace(vae)
    assert space.frame_wise and (space.temporal_scale, space.frame_step) == (1, 1)
    x = clip(6, batch=2)
    with torch.no_grad():
        flat = vae.encode(x.flatten(0, 1)).latent_dist.mean
        want = ((flat - 0.1) * 0.8).reshape(2, 6, *flat.shape[1:]).permute(0, 2, 1, 3, 4)
        assert torch.equal(space.encode(x), want)
        z = want.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B·F, C, h, w)
        pixels = vae.decode(z / 0.8 + 0.1).sample
        want_px = (pixels / 2 + 0.5).clamp(0, 1).reshape(2, 6, 3, SIZE, SIZE)
        assert torch.equal(space.decode(want), want_px)
    assert space.latent_frames(6) == 6 and space.valid_frames(7)


# -------------------------------------------------------------------------- the pipeline
@pytest.mark.parametrize("name", sorted(VIDEO_VAES))
def test_pipeline_generates_on_latent_frames(vae_dirs, text_encoder, name):
    pipe = build_pipe(load_vae(str(vae_dirs[name])).eval(), text_encoder)
    space = pipe.latent_space
    frames = 1 + 2 * space.frame_step
    video = generate(pipe, frames)
    assert video.shape == (1, frames, SIZE, SIZE, 3)
    assert 0 <= video.min() and video.max() <= 1
    latents = generate(pipe, frames, output_type="latent")
    s = SIZE // space.spatial_scale
    assert latents.shape == (1, LATENT_CHANNELS, space.latent_frames(frames), s, s)
    assert generate(pipe, 1).shape == (1, 1, SIZE, SIZE, 3)  # a single image


def test_pipeline_refuses_frame_counts_the_vae_cannot_make(vae_dirs, text_encoder):
    pipe = build_pipe(load_vae(str(vae_dirs["wan"])).eval(), text_encoder)
    with pytest.raises(
        ValueError,
        match="num_frames must be 1 \\+ k·4 .* got 8, the nearest valid counts are 5 and 9",
    ):
        generate(pipe, 8)
    cog = build_pipe(load_vae(str(vae_dirs["cogvideox"])).eval(), text_encoder)
    with pytest.raises(ValueError, match="got 3, the nearest valid counts are 1 and 5"):
        generate(cog, 3)  # 1 + 1·T, but an even latent count would decode to 4 frames


def test_causal_vae_continues_given_frames_and_samples_image_first(vae_dirs, text_encoder):
    pipe = build_pipe(load_vae(str(vae_dirs["wan"])).eval(), text_encoder)
    given = (np.random.default_rng(0).random((5, SIZE, SIZE, 3)) * 255).astype(np.uint8)
    for k in (1, 5):  # one frame (image-to-video), 1 + 1·4 frames (one more latent frame)
        video = generate(pipe, 9, conditioning_frames=given[:k], output_type="pt")
        assert video.shape == (1, 9, 3, SIZE, SIZE)
        torch.testing.assert_close(
            video[0, :k], torch.from_numpy(given[:k]).permute(0, 3, 1, 2).float() / 255
        )
    with pytest.raises(ValueError, match="conditioning frames must be 1 \\+ k·4"):
        generate(pipe, 9, conditioning_frames=given[:2])
    assert generate(pipe, 9, image_first=True).shape == (1, 9, SIZE, SIZE, 3)
    # references: each image a clip of one frame → one latent frame each
    refs = pipe.encode_references([given[0], given[1]], SIZE, SIZE)
    assert refs.shape == (1, 2, LATENT_CHANNELS, SIZE // 4, SIZE // 4)


def test_non_causal_vae_refuses_given_frames_and_image_first(vae_dirs, text_encoder):
    pipe = build_pipe(load_vae(str(vae_dirs["cogvideox"])).eval(), text_encoder)
    given = np.zeros((1, SIZE, SIZE, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="conditioning frames need a causal VAE"):
        generate(pipe, 5, conditioning_frames=given)
    with pytest.raises(ValueError, match="image-first sampling .* need a causal VAE"):
        generate(pipe, 5, image_first=True)


def test_saved_pipeline_keeps_its_video_vae(vae_dirs, text_encoder, tmp_path):
    pipe = build_pipe(load_vae(str(vae_dirs["ltx"])).eval(), text_encoder)
    pipe.save_pretrained(tmp_path, save_text_encoder=False)
    encoder, tokenizer = text_encoder
    loaded = ShapesVideoPipeline.from_pretrained(
        tmp_path, text_encoder=encoder, tokenizer=tokenizer
    )
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.vae) is AutoencoderKLLTXVideo
    torch.testing.assert_close(loaded.vae.latents_std, pipe.vae.latents_std)
    np.testing.assert_array_equal(generate(loaded, 5), generate(pipe, 5))


# -------------------------------------------------------------------------- training
TINY_RUN = """\
model: {size: dit_tiny, patch_size: 2}
data: {size: 16, clip_frames: 9, cache_clips: 4, cache_images: 4, cond_prob: 0.5}
stages:
  - {name: images, steps: 1, frames: 1, image_batch_size: 2}
  - {name: clips5, steps: 1, frames: 5, batch_size: 2}
  - {name: clips9, steps: 1, frames: 9, batch_size: 2, image_every: 2}
warmup: 1
log_every: 1
sample_every: 0
mixed_precision: "no"
"""


def _config(tmp_path, vae_dir, *overrides, edit: tuple[str, str] = ("", "")) -> DiTTrainConfig:
    """TINY_RUN on ``vae_dir`` with ``edit`` (old, new) applied to its text."""
    yaml = tmp_path / "video_vae.yaml"
    yaml.write_text(TINY_RUN.replace(*edit) + f"vae: {vae_dir}\n")
    return load_config(DiTTrainConfig, yaml, [f"output_dir={tmp_path / 'run'}", *overrides])


def test_train_dit_on_a_video_vae_exports_a_pipeline_that_generates(
    vae_dirs, text_encoder, tmp_path, monkeypatch
):
    monkeypatch.setattr(train_dit, "load_text_encoder", lambda spec, dtype=None: text_encoder)
    cfg = _config(tmp_path, vae_dirs["wan"])
    reset_accelerate()
    try:
        final = train_dit.main(cfg)
    finally:
        reset_accelerate()
    assert sorted(losses(tmp_path / "run")) == [1, 2, 3]  # images, 5 and 9 frames
    # the latent cache holds latent frames: 9 pixel frames → 3 with a 4× temporal VAE
    from train.latent_cache import load_cache

    (cache_dir,) = [p for p in (tmp_path / "run" / "latents").iterdir() if p.is_dir()]
    cache = load_cache(cache_dir)
    assert cache.clips.shape[1:3] == (LATENT_CHANNELS, 3) and cache.images.shape[1] == 4
    encoder, tokenizer = text_encoder
    pipe = ShapesVideoPipeline.from_pretrained(final, text_encoder=encoder, tokenizer=tokenizer)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.vae) is AutoencoderKLWan
    assert generate(pipe, 9).shape == (1, 9, SIZE, SIZE, 3)


def test_frame_counts_a_video_vae_cannot_take_are_config_errors(vae_dirs, tmp_path):
    wan = LatentSpace(load_vae(str(vae_dirs["wan"])))
    check_latent_frames(_config(tmp_path, vae_dirs["wan"]), wan)
    for edit, key in (
        (("frames: 5", "frames: 8"), "stage clips5: frames is 8"),
        (("clip_frames: 9", "clip_frames: 16"), "data.clip_frames is 16"),
    ):
        with pytest.raises(ConfigError, match=f"{key}.*nearest valid counts are"):
            check_latent_frames(_config(tmp_path, vae_dirs["wan"], edit=edit), wan)
    cog = LatentSpace(load_vae(str(vae_dirs["cogvideox"])))
    # 5 frames fit CogVideoX's rule, but a 5-frame prefix of its 9-frame latents is not
    # the encoding of those 5 frames (not causal)
    with pytest.raises(ConfigError, match=r"stages \['clips5'\].*not causal"):
        check_latent_frames(_config(tmp_path, vae_dirs["cogvideox"]), cog)
    whole = ("frames: 5", "frames: 9")  # every clip stage takes the cached clips whole
    check_latent_frames(_config(tmp_path, vae_dirs["cogvideox"], edit=whole), cog)
    cfg = _config(tmp_path, vae_dirs["cogvideox"], "sample_image_first=true", edit=whole)
    with pytest.raises(ConfigError, match="sample_image_first needs a causal VAE"):
        check_latent_frames(cfg, cog)


def test_a_run_with_a_bad_frame_count_stops_before_any_encoding(
    vae_dirs, text_encoder, tmp_path, monkeypatch
):
    monkeypatch.setattr(train_dit, "load_text_encoder", lambda spec, dtype=None: text_encoder)
    monkeypatch.setattr(train_dit, "build_cache", lambda *a, **k: pytest.fail("encoded"))
    cfg = _config(tmp_path, vae_dirs["ltx"], edit=("frames: 5", "frames: 4"))
    reset_accelerate()
    try:
        with pytest.raises(ConfigError, match="stage clips5: frames is 4.* 3 and 5"):
            train_dit.main(cfg)
    finally:
        reset_accelerate()


def test_shard_latents_of_a_video_vae_are_latent_frame_prefixes(vae_dirs):
    """precompute: clips encoded whole up to their longest valid length; windows are the
    first latent frames, as the on-the-fly stream encodes a clip's first frames."""
    from train.buckets import Bucket
    from train.precompute import _encode_clips, prefix_window

    vae = load_vae(str(vae_dirs["wan"])).eval()
    clips = [clip(11, seed=1)[0], clip(5, seed=2)[0], clip(1, seed=3)[0]]
    stored = _encode_clips(vae, clips, batch_frames=64)
    assert [tuple(z.shape[:2]) for z in stored] == [(4, 3), (4, 2), (4, 1)]  # 9, 5, 1 frames
    assert all(z.dtype == torch.float16 for z in stored)
    window = LatentSpace(vae).encode(clips[0][None, :5])[0]
    torch.testing.assert_close(stored[0][:, :2].float(), window, atol=2e-3, rtol=2e-3)
    start, meta = prefix_window({"meta": {"condition_frames": 2}}, Bucket(5, SIZE, SIZE, 1))
    assert (start, meta) == (0, {"condition_frames": 2})


def test_cached_shard_latents_give_the_batches_encoded_on_the_fly(
    shards,  # noqa: F811
    vae_dirs,
    text_encoder,
    tmp_path,
):
    """Shards with a video VAE: ``data.latents`` and on-the-fly encoding read the same
    5-frame prefixes of test_scale's 8-frame clips, as 2 latent frames."""
    from tests.test_scale import SHARD_RUN
    from train.precompute import ShardLatents, cache_spec, encode_shards
    from train.shards import ShardDataset

    yaml = tmp_path / "shards.yaml"
    run = SHARD_RUN.replace("SHARDS", str(shards)).replace("frames: 4", "frames: 5")
    yaml.write_text(run + f"vae: {vae_dirs['wan']}\n")
    cfg = load_config(DiTTrainConfig, yaml, [f"data.latents={tmp_path / 'latents'}"])
    vae = load_vae(cfg.vae).eval()
    check_latent_frames(cfg, LatentSpace(vae))
    encoder, tokenizer = text_encoder
    cache = ShardLatents.create(cfg.data.latents, cache_spec(cfg, vae, encoder), encoder, tokenizer)
    urls = ShardDataset(cfg.data.shards).urls
    encode_shards(cache, cache.missing(urls), vae, encoder, tokenizer, progress=False)
    plain = train_dit.ShardBatchStream(cfg, 1, False, prefix_windows=True)
    cached = train_dit.ShardBatchStream(cfg, 1, False, latents=cache, prefix_windows=True)
    for _ in range(3):
        pixels, read = next(plain), next(cached)
        assert read["key"] == pixels["key"] and pixels["video"].shape[1] == 5
        z = encode_videos(vae, pixels["video"])  # (B, C, 2, h, w)
        assert read["latents"].shape == z.shape and z.shape[2] == 2
        torch.testing.assert_close(read["latents"].float(), z, atol=2e-3, rtol=2e-3)


def test_studio_cuts_a_count_the_vae_cannot_make_from_the_next_it_can(vae_dirs, text_encoder):
    """`studio generate --frames 16` (the default) on a 4× video VAE: 17 frames made, 16
    kept, the same as the first 16 of a 17-frame request; valid counts are asked as they are."""
    from studio.generate import GenerateRequest, model_frames, sample

    pipe = build_pipe(load_vae(str(vae_dirs["wan"])).eval(), text_encoder)
    assert [model_frames(pipe, f) for f in (16, 17, 1, 2, 0)] == [17, 17, 1, 5, 0]
    request = GenerateRequest(prompt=PROMPT, steps=2, frames=16, height=SIZE, width=SIZE)
    video = sample(pipe, request)
    assert video.shape == (16, SIZE, SIZE, 3)
    longer = sample(
        pipe, GenerateRequest(prompt=PROMPT, steps=2, frames=17, height=SIZE, width=SIZE)
    )
    assert np.array_equal(video, longer[:16])
