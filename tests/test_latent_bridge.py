"""train.latent_bridge: carrying a pipeline onto another VAE's latent by linear maps."""

from __future__ import annotations

import copy

import torch

from tests.conftest import LATENT_CHANNELS, build_tiny_pipeline


def unit_variance(vae):
    """``vae`` with the scaling factor a trained VAE states: latents of unit variance on
    Shapes World frames (the maps' ridge term assumes that scale)."""
    from train.latent_bridge import frames
    from train.latent_cache import encode_videos

    vae.register_to_config(scaling_factor=1.0)
    with torch.no_grad():
        std = encode_videos(vae, frames(8)).std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    return vae


def permuted_vae(vae, perm: torch.Tensor):
    """A copy of ``vae`` whose latent is ``vae``'s with its channels permuted by ``perm``
    (encode: z_new[:, i] = z_old[:, perm[i]]), decoding the same pixels."""
    new = copy.deepcopy(vae)
    c = len(perm)
    with torch.no_grad():
        rows = torch.cat([perm, perm + c])  # the mean's channels, then the log-variance's
        new.quant_conv.weight.copy_(vae.quant_conv.weight[rows])
        new.quant_conv.bias.copy_(vae.quant_conv.bias[rows])
        new.post_quant_conv.weight.copy_(vae.post_quant_conv.weight[:, perm])
    return new


def test_a_pipeline_carried_onto_a_permuted_latent_draws_what_it_drew(text_encoder):
    """The maps must find the permutation: the carried transformer, given the new latent,
    predicts the permuted prediction of the original on the old one. Patches flattened in
    another channel order than the weights' fail this."""
    from train.latent_bridge import bridge

    pipe = build_tiny_pipeline(text_encoder, 0, prediction_type="sample")
    unit_variance(pipe.vae)
    original = copy.deepcopy(pipe.transformer)
    perm = torch.tensor([2, 0, 3, 1])
    assert len(perm) == LATENT_CHANNELS
    bridge(pipe, permuted_vae(pipe.vae, perm), clips=48)

    carried = pipe.transformer
    assert carried.config.in_channels == LATENT_CHANNELS
    kept = {
        k: v for k, v in original.state_dict().items() if not k.startswith(("patch.", "proj_out."))
    }
    for k, v in kept.items():
        torch.testing.assert_close(carried.state_dict()[k], v.float(), rtol=0, atol=0)

    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, LATENT_CHANNELS, 3, 8, 8, generator=g)
    text = torch.randn(2, 5, 384, generator=g)
    t = torch.tensor([300.0, 700.0])
    with torch.no_grad():
        want = original(z, t, text).sample[:, perm]
        got = carried(z[:, perm], t, text).sample
    assert (got - want).abs().max() < 0.05 * want.abs().max()
    assert not torch.allclose(original(z[:, perm], t, text).sample[:, perm], want, atol=1e-3)


def test_a_wider_latent_gets_a_model_that_reads_it(text_encoder, tmp_path):
    """A VAE with more channels: the carried pipeline has the new VAE and a transformer that
    reads and writes its channels, saves and draws a clip."""
    from pipelines.components import vae_tiny
    from pipelines.text_to_video import ShapesVideoPipeline
    from train.latent_bridge import bridge

    pipe = build_tiny_pipeline(text_encoder, 0, prediction_type="sample")
    torch.manual_seed(1)
    wide = unit_variance(vae_tiny(sample_size=16, latent_channels=8).eval())
    bridge(pipe, wide, clips=24)
    assert pipe.vae is wide
    assert pipe.transformer.patch.weight.shape[1] == 8
    assert pipe.transformer.proj_out.weight.shape[0] == 2 * 2 * 8
    pipe.save_pretrained(tmp_path, save_text_encoder=False)
    again = ShapesVideoPipeline.from_pretrained(
        tmp_path, text_encoder=text_encoder[0], tokenizer=text_encoder[1]
    )
    video = again(
        "a red circle moving left",
        num_frames=2,
        height=16,
        width=16,
        num_inference_steps=2,
        output_type="np",
    ).frames
    assert video.shape[-3:] == (16, 16, 3) and video.std() > 0
