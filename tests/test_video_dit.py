"""models.video_dit / models.attention: shapes, determinism, save/load, zero-init, gradients,
the swap attention, conditioning frames and attention processors.

Model tests come from :class:`ModelTesterMixin` plus a small config class per model
(diffusers ``tests/models`` style); a new model adds a subclass with its own config.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb

from models import attention as attention_mod
from models.attention import (
    Attention,
    SDPAProcessor,
    WindowCrossAttention,
    default_processor,
    mask_to_bias,
    masked_mean,
    rotary_3d,
    window_partition,
    window_reverse,
)
from models.embeddings import spatial_pos_embed, temporal_pos_embed
from models.video_dit import SwapBlock, VideoDiT, dit_tiny

from .conftest import open_zero_inits


class ModelTesterMixin:
    """Shared tests for latent video models ``(B, C, F, H, W) → (B, C, F, H, W)``."""

    model_class: type
    init_kwargs: dict
    text_dim: int
    latent_hw: tuple[int, int] = (8, 8)

    # -- helpers ---------------------------------------------------------------------------
    def make_model(self, seed: int = 0, opened: bool = True, **kw):
        torch.manual_seed(seed)
        model = self.model_class(**{**self.init_kwargs, **kw})
        if opened:
            open_zero_inits(model, seed)
        return model.eval()

    def make_inputs(self, frames: int = 4, batch: int = 2, hw=None, seed: int = 0) -> dict:
        g = torch.Generator().manual_seed(seed)
        h, w = hw or self.latent_hw
        c = self.init_kwargs.get("in_channels", 4)
        mask = torch.ones(batch, 5)
        mask[0, 3:] = 0  # a padded prompt
        return {
            "hidden_states": torch.randn(batch, c, frames, h, w, generator=g),
            "timestep": torch.rand(batch, generator=g) * 1000,
            "encoder_hidden_states": torch.randn(batch, 5, self.text_dim, generator=g),
            "encoder_attention_mask": mask,
        }

    # -- tests -----------------------------------------------------------------------------
    @pytest.mark.parametrize(
        "frames, hw",
        [
            (4, (8, 8)),  # a clip
            (1, (8, 8)),  # an image is a clip with F = 1
            (5, (8, 8)),  # odd frame count: temporal windows need padding
            (3, (6, 10)),  # odd token grid (3×5): every window axis needs padding
        ],
    )
    def test_output_shape(self, frames, hw):
        model = self.make_model()
        inputs = self.make_inputs(frames=frames, hw=hw)
        with torch.no_grad():
            out = model(**inputs).sample
        assert out.shape == inputs["hidden_states"].shape
        assert torch.isfinite(out).all()
        assert out.abs().sum() > 0  # the opened model predicts something

    def test_return_tuple(self):
        model = self.make_model()
        inputs = self.make_inputs()
        with torch.no_grad():
            (out,) = model(**inputs, return_dict=False)
            ref = model(**inputs).sample
        torch.testing.assert_close(out, ref, rtol=0, atol=0)

    def test_deterministic(self):
        inputs = self.make_inputs()
        with torch.no_grad():
            a = self.make_model(seed=3)(**inputs).sample
            b = self.make_model(seed=3)(**inputs).sample
            c = self.make_model(seed=4)(**inputs).sample
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert not torch.allclose(a, c)

    def test_save_load_round_trip(self, tmp_path):
        model = self.make_model()
        model.save_pretrained(tmp_path)
        assert (tmp_path / "config.json").is_file()
        assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
        loaded = self.model_class.from_pretrained(tmp_path).eval()

        def public(config):  # JSON stores tuples as lists; "_" keys are bookkeeping
            return {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in config.items()
                if not k.startswith("_")
            }

        assert public(loaded.config) == public(model.config)
        inputs = self.make_inputs(frames=5)
        with torch.no_grad():
            torch.testing.assert_close(
                loaded(**inputs).sample, model(**inputs).sample, rtol=0, atol=0
            )

    def test_fresh_model_predicts_zero(self):
        model = self.make_model(opened=False)
        with torch.no_grad():
            out = model(**self.make_inputs()).sample
        assert torch.equal(out, torch.zeros_like(out))

    def test_per_frame_timesteps(self):
        model = self.make_model()
        inputs = self.make_inputs(frames=4)
        t = inputs.pop("timestep")
        with torch.no_grad():
            shared = model(timestep=t, **inputs).sample
            per_frame_same = model(timestep=t[:, None].expand(-1, 4), **inputs).sample
            varied = t[:, None].repeat(1, 4)
            varied[:, 2:] = 10.0
            per_frame = model(timestep=varied, **inputs).sample
        assert per_frame.shape == shared.shape
        torch.testing.assert_close(per_frame_same, shared)
        assert not torch.allclose(per_frame, shared)

    def test_frame_mask_gives_zero_velocity_on_given_frames(self):
        model = self.make_model()
        inputs = self.make_inputs(frames=5)
        mask = torch.zeros(2, 5, dtype=torch.bool)
        mask[0, :2] = True  # sample 0: two given frames
        mask[1, :1] = True  # sample 1: one given frame
        with torch.no_grad():
            out = model(**inputs, frame_mask=mask).sample
        assert torch.equal(out[0, :, :2], torch.zeros_like(out[0, :, :2]))
        assert torch.equal(out[1, :, :1], torch.zeros_like(out[1, :, :1]))
        assert (out[0, :, 2:].abs().amax(dim=(0, 2, 3)) > 0).all()
        assert (out[1, :, 1:].abs().amax(dim=(0, 2, 3)) > 0).all()

    def test_sample_prediction_keeps_given_frames_and_converts_to_velocity(self):
        model = self.make_model(prediction_type="sample")
        inputs = self.make_inputs(frames=4)
        mask = torch.zeros(2, 4, dtype=torch.bool)
        mask[:, :2] = True
        with torch.no_grad():
            out = model(**inputs, frame_mask=mask).sample
        x = inputs["hidden_states"]
        assert torch.equal(out[:, :, :2], x[:, :, :2])  # given frames are their own x0
        sigma = torch.tensor([0.5, 0.02])
        v = model.to_velocity(out, x, sigma)
        assert torch.equal(v[:, :, :2], torch.zeros_like(v[:, :, :2]))
        assert torch.allclose(v[0], (x[0] - out[0]) / 0.5)
        assert torch.allclose(v[1], (x[1] - out[1]) / 0.05)  # σ clamped at min_sigma
        # an exact x0 gives the exact flow velocity: x_t = (1 − σ)·x0 + σ·ε → ε − x0
        x0, eps = torch.randn(2, 3), torch.randn(2, 3)
        xt = 0.7 * x0 + 0.3 * eps
        assert torch.allclose(model.to_velocity(x0, xt, 0.3), eps - x0, atol=1e-6)
        velocity_model = self.make_model()
        assert velocity_model.to_velocity(out, x, sigma) is out
        with pytest.raises(ValueError, match="prediction_type must be one of"):
            self.make_model(prediction_type="epsilon")

    def test_gradient_checkpointing_matches(self):
        model = self.make_model()
        inputs = self.make_inputs(frames=3)
        model.train()
        model(**inputs).sample.square().mean().backward()
        ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        model.enable_gradient_checkpointing()
        assert model.gradient_checkpointing
        model(**inputs).sample.square().mean().backward()
        for name, p in model.named_parameters():
            if name in ref:
                torch.testing.assert_close(p.grad, ref[name], msg=name)


class TestVideoDiT(ModelTesterMixin):
    model_class = VideoDiT
    text_dim = 16
    init_kwargs = dict(
        in_channels=4,
        patch_size=2,
        width=32,
        depth=2,
        heads=4,
        window=(2, 2, 2),
        text_dim=16,
        mlp_ratio=2.0,
        max_frames=16,
        sample_size=8,
    )

    # -- zero-init and gradients -------------------------------------------------------------
    def test_gates_start_at_zero(self):
        model = self.make_model(opened=False)
        for block in model.blocks:
            assert torch.equal(block.gate_temporal, torch.zeros_like(block.gate_temporal))
            assert torch.equal(block.gate_swap, torch.zeros_like(block.gate_swap))
        assert [b.swap_query for b in model.blocks] == ["spatial", "temporal"]

    def _open_all_but_gates(self, gates: float):
        """Opened model, gates on the temporal and swap paths set to ``gates``."""
        model = self.make_model(opened=True).train()
        with torch.no_grad():
            for block in model.blocks:
                block.gate_temporal.fill_(gates)
                block.gate_swap.fill_(gates)
        return model

    def _grads(self, model, frames: int):
        model.zero_grad(set_to_none=True)
        model(**self.make_inputs(frames=frames)).sample.square().mean().backward()

        def norm(p):
            return 0.0 if p.grad is None else p.grad.abs().sum().item()

        return norm

    def test_zero_gates_still_get_gradients(self):
        # A zero gate in front of a live path must still learn (otherwise it stays closed).
        model = self._open_all_but_gates(0.0)
        norm = self._grads(model, frames=4)
        for block in model.blocks:
            assert norm(block.gate_temporal) > 0
            assert norm(block.gate_swap) > 0
            # ...while the weights behind a closed gate get nothing yet.
            assert norm(block.temporal_attn.to_q.weight) == 0
            assert norm(block.swap_attn.attn.to_q.weight) == 0

    def test_open_gates_pass_gradients_to_temporal_and_swap_weights(self):
        model = self._open_all_but_gates(0.5)
        norm = self._grads(model, frames=4)
        for block in model.blocks:
            for p in (
                block.temporal_attn.to_q.weight,
                block.temporal_attn.to_v.weight,
                block.temporal_attn.to_out[0].weight,
                block.swap_attn.attn.to_q.weight,
                block.swap_attn.attn.to_k.weight,
                block.swap_attn.attn.to_out[0].weight,
            ):
                assert norm(p) > 0

    def test_images_skip_the_temporal_branch(self):
        model = self._open_all_but_gates(0.5)
        norm = self._grads(model, frames=1)
        for block in model.blocks:
            assert norm(block.temporal_attn.to_q.weight) == 0
            assert norm(block.gate_temporal) == 0
            assert norm(block.swap_attn.attn.to_q.weight) > 0

    # -- the swap ------------------------------------------------------------------------------
    def test_swap_roles_alternate_between_blocks(self):
        """Block 0 queries with the spatial branch, block 1 with the temporal branch."""
        model = self._open_all_but_gates(0.0).eval()  # gate_temporal = 0 → temporal branch = x
        seen = {}

        def capture(i):
            def hook(module, args, kwargs):
                seen[i] = (args[0].clone(), args[1].clone())

            return hook

        def capture_in(i):
            def hook(module, args):
                seen[f"x{i}"] = args[0].clone()

            return hook

        for i, block in enumerate(model.blocks):
            block.swap_attn.register_forward_pre_hook(capture(i), with_kwargs=True)
            block.register_forward_pre_hook(capture_in(i))
        with torch.no_grad():
            model(**self.make_inputs(frames=4))
        for i, block in enumerate(model.blocks):
            x = seen[f"x{i}"]  # (B, F, N, D)
            query, context = seen[i]  # (B, F, gh, gw, D)
            t_branch = block.norm_kv(x) if block.swap_query == "spatial" else block.norm_q(x)
            t_seen = context if block.swap_query == "spatial" else query
            s_seen = query if block.swap_query == "spatial" else context
            torch.testing.assert_close(t_seen.flatten(2, 3), t_branch)
            # the other role holds the spatial branch, which differs from x
            assert not torch.allclose(s_seen.flatten(2, 3), t_branch, atol=1e-3)

    @pytest.mark.parametrize("swap_query", ["spatial", "temporal"])
    def test_swap_mixes_frames_within_its_window_only(self, swap_query):
        """Only the temporal and swap paths carry information between frames.

        A change in frame 0 reaches frame 1 (same 2-frame window) through the swap alone,
        and never reaches frames 2-3 (the next window) when the temporal path is closed.
        """
        torch.manual_seed(0)
        block = SwapBlock(32, 4, 8, swap_query, window=(2, 2, 2), mlp_ratio=2.0)
        open_zero_inits(block)
        block.eval()
        g = torch.Generator().manual_seed(1)
        x = torch.randn(1, 4, 16, 32, generator=g)  # (B, F, N, D), a 4×4 token grid
        cond = torch.randn(1, 4, 32, generator=g)
        text = torch.randn(1, 3, 32, generator=g)
        bias = torch.zeros(1, 1, 3)
        x2 = x.clone()
        # perturb one token of frame 0 (not by a constant: the LayerNorms would remove it)
        x2[:, 0, 0] += torch.randn(32, generator=g)

        def changed(gate_temporal: float, gate_swap: float) -> torch.Tensor:
            with torch.no_grad():
                block.gate_temporal.fill_(gate_temporal)
                block.gate_swap.fill_(gate_swap)
                a = block(x, cond, (4, 4), text, bias)
                b = block(x2, cond, (4, 4), text, bias)
            return (a - b).abs().amax(dim=(0, 2, 3))  # per frame

        closed = changed(0.0, 0.0)
        assert closed[0] > 0 and torch.equal(closed[1:], torch.zeros(3))
        swap_only = changed(0.0, 1.0)
        assert swap_only[1] > 1e-4  # would be 0 if the swap were a no-op
        assert torch.equal(swap_only[2:], torch.zeros(2))  # would fail if it were global
        temporal = changed(1.0, 0.0)
        assert (temporal[1:] > 1e-4).all()  # temporal attention spans the whole clip


def assert_closed_path_changes_nothing(tester: ModelTesterMixin, close) -> None:
    """A model with an optional zero-initialised path, opened everywhere and then with that
    path closed again by ``close(model)``, computes what the model without it computes."""
    with_it = tester.make_model(opened=False)
    open_zero_inits(with_it, 0)  # opens the blocks and the path's zero layers too
    with torch.no_grad():
        close(with_it)
    without = VideoDiT(**TestVideoDiT.init_kwargs).eval()
    assert without.load_state_dict(with_it.state_dict(), strict=False).missing_keys == []
    inputs = tester.make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(with_it(**inputs).sample, without(**inputs).sample)


class TestVideoDiTSpaceTimeRope(ModelTesterMixin):
    """The zero-initialised space-time attention with 3-D rotary positions."""

    model_class = VideoDiT
    text_dim = 16
    init_kwargs = {**TestVideoDiT.init_kwargs, "space_time_rope": True}

    def test_starts_as_the_model_without_it(self):
        def close(model):
            for block in model.blocks:
                block.st_attn.to_out[0].weight.zero_()
                block.st_attn.to_out[0].bias.zero_()

        assert_closed_path_changes_nothing(self, close)

    def test_open_gate_mixes_frames_and_places_and_learns(self):
        """Perturbing one token of frame 0 changes the output at another place of a later
        frame; gradients reach the attention's weights and its gate."""
        model = self.make_model()
        for block in model.blocks:  # only the space-time path links frames and places
            block.gate_temporal.data.zero_()
            block.gate_swap.data.zero_()
        inputs = self.make_inputs(frames=3, batch=1)
        with torch.no_grad():
            base = model(**inputs).sample
            x = inputs["hidden_states"].clone()
            x[:, :, 0, :2, :2] += 3.0  # frame 0, the top-left token (patch 2)
            moved = model(**{**inputs, "hidden_states": x}).sample
        diff = (moved - base).abs()
        assert diff[:, :, 2, 4:, 4:].amax() > 1e-4  # frame 2, bottom-right
        model.train()
        model(**inputs).sample.square().mean().backward()
        block = model.blocks[0]
        assert block.st_attn.to_q.weight.grad.abs().sum() > 0
        assert block.gate_st.grad.abs().sum() > 0

    def test_processor_survives_set_default_and_fusing_is_refused(self):
        model = self.make_model()
        model.set_default_attn_processor()
        kinds = {
            name: type(p).__name__
            for name, p in model.attn_processors.items()
            if ".st_attn." in name
        }
        assert kinds and set(kinds.values()) == {"SDPAProcessor"}  # which takes rotary_emb
        with pytest.raises(ValueError, match="rotary"):
            model.fuse_qkv_projections()


def test_rotary_scores_depend_on_relative_offsets_only():
    """Same query and key content everywhere: after 3-D RoPE the score of two tokens depends
    on their (frame, row, column) offset, not on where they are."""
    from diffusers.models.embeddings import apply_rotary_emb

    from models.attention import rotary_3d

    f, h, w, d = 4, 3, 3, 16
    cos, sin = rotary_3d(f, h, w, d)
    assert cos.shape == sin.shape == (f * h * w, d)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(d, generator=g).expand(1, 1, f * h * w, d)
    k = torch.randn(d, generator=g).expand(1, 1, f * h * w, d)
    score = (apply_rotary_emb(q, (cos, sin)) @ apply_rotary_emb(k, (cos, sin)).transpose(-1, -2))[
        0, 0
    ]

    def idx(t, r, c):
        return (t * h + r) * w + c

    # offset (1 frame, 1 row, 0 columns) at two different places
    a = score[idx(1, 1, 0), idx(0, 0, 0)]
    b = score[idx(3, 2, 2), idx(2, 1, 2)]
    torch.testing.assert_close(a, b)
    # and a different offset scores differently
    assert not torch.allclose(a, score[idx(2, 1, 0), idx(0, 0, 0)])
    with pytest.raises(ValueError, match="too small"):
        rotary_3d(2, 2, 2, 4)


def test_factory_model_fits_the_tiny_vae_and_minilm(tiny_dit, tiny_vae):
    """The conftest components fit together: latent channels, text width, zero output."""
    from .conftest import TEXT_DIM

    assert tiny_dit.config.in_channels == tiny_vae.config.latent_channels
    assert tiny_dit.config.text_dim == TEXT_DIM
    assert (tiny_dit.config.width, tiny_dit.config.depth) == (32, 2)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        z = tiny_vae.encode(frames).latent_dist.mean  # (F, C, 8, 8)
        latents = z.permute(1, 0, 2, 3)[None]  # (1, C, F, 8, 8)
        out = tiny_dit(latents, torch.tensor([10.0]), torch.randn(1, 4, TEXT_DIM, generator=g))
    assert out.sample.shape == latents.shape
    assert torch.equal(out.sample, torch.zeros_like(out.sample))


class TestWindowAttention:
    def test_key_value_branch_reaches_the_query_output(self):
        torch.manual_seed(0)
        attn = WindowCrossAttention(16, heads=2, head_dim=8, window=(2, 2, 2)).eval()
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, 4, 4, 4, 16, generator=g)  # (B, F, H, W, D)
        kv = torch.randn(1, 4, 4, 4, 16, generator=g)
        kv2 = kv.clone()
        kv2[0, 0, 0, 0] += torch.randn(16, generator=g)  # one token of window (0, 0, 0)
        with torch.no_grad():
            a, b = attn(q, kv), attn(q, kv2)
            c = attn(q + 0, kv)
        assert a.shape == q.shape
        torch.testing.assert_close(a, c, rtol=0, atol=0)
        diff = (a - b).abs()
        assert (diff[0, :2, :2, :2].amax(dim=-1) > 0).all()  # every query of that window
        outside = diff.clone()
        outside[0, :2, :2, :2] = 0
        assert torch.equal(outside, torch.zeros_like(outside))  # and nothing else

    def test_query_branch_changes_only_its_own_token(self):
        torch.manual_seed(0)
        attn = WindowCrossAttention(16, heads=2, head_dim=8, window=(2, 2, 2)).eval()
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, 4, 4, 4, 16, generator=g)
        kv = torch.randn(1, 4, 4, 4, 16, generator=g)
        q2 = q.clone()
        q2[0, 1, 1, 1] += torch.randn(16, generator=g)
        with torch.no_grad():
            diff = (attn(q, kv) - attn(q2, kv)).abs().amax(dim=-1)
        assert diff[0, 1, 1, 1] > 0
        diff[0, 1, 1, 1] = 0
        assert torch.equal(diff, torch.zeros_like(diff))

    @pytest.mark.parametrize(
        "shape, window, padded",
        [
            ((2, 4, 4, 6, 8), (2, 2, 3), False),
            ((2, 5, 3, 7, 8), (2, 2, 4), True),  # padding on every axis
            ((1, 1, 4, 4, 8), (4, 2, 2), False),  # an image: the window shrinks to 1 frame
        ],
    )
    def test_partition_reverse_round_trip(self, shape, window, padded):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        windows, bias, win = window_partition(x, window)
        b, f, h, w, d = shape
        assert win == (min(window[0], f), min(window[1], h), min(window[2], w))
        n_windows = -(-f // win[0]) * -(-h // win[1]) * -(-w // win[2])
        assert windows.shape == (b * n_windows, win[0] * win[1] * win[2], d)
        torch.testing.assert_close(window_reverse(windows, win, (b, f, h, w)), x, rtol=0, atol=0)
        # The first window holds the first wt×wh×ww tokens in (t, h, w) order.
        first = x[0, : win[0], : win[1], : win[2]].reshape(-1, d)
        n_real = first.shape[0]
        torch.testing.assert_close(windows[0, :n_real], first, rtol=0, atol=0)
        if not padded:
            assert bias is None
        else:
            assert bias.shape == (b * n_windows, 1, win[0] * win[1] * win[2])
            fp = -(-f // win[0]) * win[0]
            hp = -(-h // win[1]) * win[1]
            wp = -(-w // win[2]) * win[2]
            assert int(torch.isinf(bias).sum()) == b * (fp * hp * wp - f * h * w)
            # padded slots are zeros; every window keeps at least one real token
            assert torch.isfinite(bias).any(dim=-1).all()


class TestConfigAndProcessors:
    def test_width_not_divisible_by_heads(self):
        with pytest.raises(ValueError, match=r"width \(30\).*heads \(4\)"):
            VideoDiT(width=30, heads=4, depth=1, text_dim=8)

    def test_width_not_divisible_by_four(self):
        with pytest.raises(ValueError, match="6"):
            VideoDiT(width=6, heads=3, depth=1, text_dim=8)

    def test_bad_swap_query(self):
        with pytest.raises(ValueError, match="'both'"):
            SwapBlock(32, 4, 8, "both", window=(2, 2, 2), mlp_ratio=2.0)

    def test_latent_not_divisible_by_patch(self):
        model = dit_tiny(patch_size=2, text_dim=8, depth=1)
        with pytest.raises(ValueError, match="7×8"):
            model(torch.zeros(1, 4, 2, 7, 8), torch.zeros(1), torch.zeros(1, 3, 8))

    def test_cpu_gets_sdpa_not_xformers(self, monkeypatch):
        assert isinstance(default_processor("cpu"), SDPAProcessor)
        assert isinstance(default_processor(torch.device("cpu")), SDPAProcessor)
        assert isinstance(default_processor(None), SDPAProcessor)
        # even where xformers is installed, CPU keeps SDPA; CUDA alone switches
        monkeypatch.setattr(attention_mod, "xformers_available", lambda: True)
        assert isinstance(default_processor("cpu"), SDPAProcessor)
        assert type(default_processor("cuda")).__name__ == "XFormersAttnProcessor"
        assert isinstance(default_processor("cuda", rotary=True), SDPAProcessor)
        monkeypatch.setattr(attention_mod, "xformers_available", lambda: False)
        assert isinstance(default_processor("cuda"), SDPAProcessor)

    def test_set_attn_processor_reaches_every_attention(self):
        model = dit_tiny(patch_size=2, text_dim=8)
        n_attention = sum(isinstance(m, Attention) for m in model.modules())
        assert n_attention == 4 * len(model.blocks)  # spatial, temporal, swap, text
        assert len(model.attn_processors) == n_attention
        model.set_attn_processor(AttnProcessor())
        assert all(type(p) is AttnProcessor for p in model.attn_processors.values())
        model.set_default_attn_processor()  # on CPU: SDPA
        assert all(type(p) is SDPAProcessor for p in model.attn_processors.values())
        # dict form, keyed like attn_processors
        procs = {k: AttnProcessor() for k in model.attn_processors}
        first = next(iter(procs))
        procs[first] = AttnProcessor2_0()
        model.set_attn_processor(procs)
        assert type(model.attn_processors[first]) is AttnProcessor2_0
        assert sum(type(p) is AttnProcessor for p in model.attn_processors.values()) == (
            n_attention - 1
        )

    def test_cuda_default_keeps_sdpa_for_qk_normed_attention(self, monkeypatch):
        # diffusers' XFormersAttnProcessor ignores norm_q/norm_k: the spatial and temporal
        # attentions (qk_norm="rms_norm") must stay on SDPA even where xformers is chosen.
        assert isinstance(default_processor("cuda", qk_norm=True), SDPAProcessor)
        monkeypatch.setattr(attention_mod, "xformers_available", lambda: True)
        monkeypatch.setattr(VideoDiT, "device", property(lambda self: torch.device("cuda")))
        model = dit_tiny(patch_size=2, text_dim=8)
        model.set_default_attn_processor()
        kinds = {k: type(p).__name__ for k, p in model.attn_processors.items()}
        for i in range(len(model.blocks)):
            assert kinds[f"blocks.{i}.spatial_attn.processor"] == "SDPAProcessor"
            assert kinds[f"blocks.{i}.temporal_attn.processor"] == "SDPAProcessor"
            assert kinds[f"blocks.{i}.swap_attn.attn.processor"] == "XFormersAttnProcessor"
            assert kinds[f"blocks.{i}.cross_attn.processor"] == "XFormersAttnProcessor"

    def test_processors_agree_where_they_apply(self):
        """The classic processor (like xformers') has no q/k norms; on the other modules
        (swap and text attention, with their -inf padding biases) it must match SDPA."""
        torch.manual_seed(0)
        model = open_zero_inits(dit_tiny(patch_size=2, text_dim=8, window=(2, 2, 2))).eval()
        g = torch.Generator().manual_seed(0)
        mask = torch.tensor([[1.0, 1.0, 0.0]])
        args = (
            torch.randn(1, 4, 3, 6, 6, generator=g),  # 3 frames, 3×3 tokens: padded windows
            torch.tensor([500.0]),
            torch.randn(1, 3, 8, generator=g),
            mask,
        )
        with torch.no_grad():
            sdpa = model(*args).sample
            model.set_attn_processor(
                {
                    f"{name}.processor": AttnProcessor2_0()
                    if module.norm_q is not None
                    else AttnProcessor()
                    for name, module in model.named_modules()
                    if isinstance(module, Attention)
                }
            )
            classic = model(*args).sample
        torch.testing.assert_close(classic, sdpa, rtol=1e-4, atol=1e-5)
        assert sdpa.abs().amax() > 0


def test_fused_qkv_projections_compute_the_same_and_unfuse_cleanly():
    """Fusing (inference speed-up) changes kernels, not the function; unfusing restores the
    processors and the state dict, so a fused model can still be saved as before."""
    torch.manual_seed(0)
    model = open_zero_inits(dit_tiny(patch_size=2, text_dim=8, window=(2, 2, 2))).eval()
    keys = set(model.state_dict())
    g = torch.Generator().manual_seed(0)
    args = (
        torch.randn(2, 4, 3, 6, 6, generator=g),
        torch.tensor([500.0, 20.0]),
        torch.randn(2, 3, 8, generator=g),
        torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]),  # a padded prompt
    )
    with torch.no_grad():
        plain = model(*args).sample
        model.fuse_qkv_projections()
        kinds = {type(p).__name__ for p in model.attn_processors.values()}
        assert kinds == {"FusedAttnProcessor2_0"}
        assert model.blocks[0].spatial_attn.to_qkv.out_features == 3 * 32
        assert model.blocks[0].cross_attn.to_kv.out_features == 2 * 32
        fused = model(*args).sample
        model.unfuse_qkv_projections()
        back = model(*args).sample
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)
    assert torch.equal(back, plain)
    assert set(model.state_dict()) == keys
    assert {type(p).__name__ for p in model.attn_processors.values()} == {"SDPAProcessor"}


# -- the optimised forward against the reference computation -----------------------------------
class RotaryAttnProcessor:
    """SDPA self-attention with rotary positions (RoPE, Su et al. 2021) on queries and keys,
    after their norms: ``rotary_emb`` = (cos, sin), each (S, head_dim), from
    :func:`rotary_3d`. The score of two tokens then depends on their relative position, so a
    query can ask for "the token k frames back and j columns left" whatever its own place.

    The plain form of what :class:`SDPAProcessor` computes given ``rotary_emb`` (the model's
    default), the reference the optimised forward is compared with."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise ValueError("RotaryAttnProcessor is for self-attention")
        q, k, v = (
            proj(hidden_states).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
            for proj in (attn.to_q, attn.to_k, attn.to_v)
        )  # (B, heads, S, head_dim)
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        if rotary_emb is not None:
            q, k = apply_rotary_emb(q, rotary_emb), apply_rotary_emb(k, rotary_emb)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        out = out.transpose(1, 2).flatten(2).to(q.dtype)  # (B, S, D)
        return attn.to_out[1](attn.to_out[0](out))


def reference_block(block: SwapBlock, x, cond, grid, text, text_bias, rotary):
    """SwapBlock.forward as first written (before issue 36's speed work): diffusers'
    AttnProcessor2_0 and the plain RotaryAttnProcessor, separate multiply and add kernels."""
    sdpa, rope = AttnProcessor2_0(), RotaryAttnProcessor()
    b, f, n, d = x.shape
    shift_s, scale_s, gate_s, shift_m, scale_m, gate_m = block.adaLN(cond).chunk(6, dim=-1)

    def modulate(h, shift, scale):
        return h * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)

    h = modulate(block.norm_s(x), shift_s, scale_s).reshape(b * f, n, d)
    s = x + gate_s.unsqueeze(2) * sdpa(block.spatial_attn, h).reshape(b, f, n, d)
    t = x
    if f > 1:
        h = block.norm_t(x).transpose(1, 2).reshape(b * n, f, d)
        h = sdpa(block.temporal_attn, h).reshape(b, n, f, d).transpose(1, 2)
        t = x + block.gate_temporal * h
    q_branch, kv_branch = (s, t) if block.swap_query == "spatial" else (t, s)
    gh, gw = grid
    query = block.norm_q(q_branch).reshape(b, f, gh, gw, d)
    q_win, bias, win = window_partition(query, block.swap_attn.window)
    kv_win, _, _ = window_partition(block.norm_kv(kv_branch).reshape(b, f, gh, gw, d), win)
    out = sdpa(block.swap_attn.attn, q_win, encoder_hidden_states=kv_win, attention_mask=bias)
    swap = window_reverse(out, win, (b, f, gh, gw)).reshape(b, f, n, d)
    x = s + t - x + block.gate_swap * swap
    if block.st_attn is not None and f > 1:
        h = rope(block.st_attn, block.norm_st(x).reshape(b, f * n, d), rotary_emb=rotary)
        x = x + block.gate_st * h.reshape(b, f, n, d)
    h = sdpa(
        block.cross_attn,
        block.norm_c(x).reshape(b, f * n, d),
        encoder_hidden_states=text,
        attention_mask=text_bias,
    )
    x = x + h.reshape(b, f, n, d)
    h = modulate(block.norm_m(x), shift_m, scale_m)
    fc1, act, fc2 = block.mlp
    return x + gate_m.unsqueeze(2) * fc2(act(fc1(h)))


def reference_forward(model: VideoDiT, hidden_states, timestep, encoder_hidden_states, mask):
    """VideoDiT.forward as first written, for a text-to-video model (no references, no frame
    mask): uncached positions, :func:`reference_block`."""
    b, c, f, h, w = hidden_states.shape
    p = model.config.patch_size
    gh, gw = h // p, w // p
    x = hidden_states.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    x = model.patch(x).flatten(2).transpose(1, 2)
    d = x.shape[-1]
    x = x.reshape(b, f, gh * gw, d)
    x = x + spatial_pos_embed(gh, gw, d)[None, None] + temporal_pos_embed(f, d)[None, :, None]
    timestep = timestep[:, None].expand(b, f)
    pooled = model.pooled_proj(masked_mean(encoder_hidden_states, mask))
    text = model.text_proj(encoder_hidden_states)
    text_bias = mask_to_bias(mask, x.dtype)
    t_emb = model.time_embed(model.time_proj(timestep.reshape(-1)))
    cond = t_emb.reshape(b, f, d) + pooled[:, None]
    rotary = None
    if model.config.space_time_rope:
        rotary = rotary_3d(f, gh, gw, model.config.width // model.config.heads)
    for block in model.blocks:
        x = reference_block(block, x, cond, (gh, gw), text, text_bias, rotary)
    shift, scale = model.adaLN_out(cond).chunk(2, dim=-1)
    x = model.norm_out(x) * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)
    x = model.proj_out(x).reshape(b, f, gh, gw, p, p, c).permute(0, 6, 1, 2, 4, 3, 5)
    return x.reshape(b, c, f, h, w)


def equality_case(space_time_rope: bool, frames: int, hw=(8, 8), seed: int = 0):
    """An opened tiny model (padded swap windows when ``hw`` is not a multiple of 4) and
    inputs with a padded prompt."""
    torch.manual_seed(seed)
    model = VideoDiT(**{**TestVideoDiT.init_kwargs, "space_time_rope": space_time_rope})
    open_zero_inits(model, seed)
    inputs = TestVideoDiT().make_inputs(frames=frames, hw=hw, seed=seed)
    return model.eval(), inputs


def assert_equal_to_float_tolerance(out: torch.Tensor, ref: torch.Tensor) -> None:
    scale = ref.abs().amax().item()
    assert scale > 0.1  # the opened model predicts something
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("space_time_rope", [False, True])
@pytest.mark.parametrize("frames, hw", [(4, (8, 8)), (3, (6, 10)), (1, (8, 8))])
def test_optimised_forward_equals_the_reference(space_time_rope, frames, hw):
    """Fused projections, joint q/k norm and RoPE, fused multiply-adds and oneDNN linears
    compute the reference function to float tolerance: clips, padded windows, images, and
    the padded prompt's -inf bias."""
    model, inputs = equality_case(space_time_rope, frames, hw)
    with torch.no_grad():
        out = model(**inputs).sample
        ref = reference_forward(model, *inputs.values())
    assert_equal_to_float_tolerance(out, ref)


def test_optimised_forward_equals_the_reference_with_lora():
    """With a peft LoRA on the projections (the trainer's default targets, random adapter
    weights) the wrapped layers run their own forward, and the result still matches."""
    from peft import LoraConfig

    model, inputs = equality_case(space_time_rope=True, frames=4)
    with torch.no_grad():
        before = model(**inputs).sample
    model.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights=False,
        )
    )
    assert type(model.blocks[0].spatial_attn.to_q).__name__ == "Linear"  # peft's, not nn's
    assert type(model.blocks[0].spatial_attn.to_q) is not torch.nn.Linear
    with torch.no_grad():
        out = model(**inputs).sample
        ref = reference_forward(model, *inputs.values())
    assert_equal_to_float_tolerance(out, ref)
    assert (out - before).abs().amax() > 1e-3  # the adapter is in the computation


def test_optimised_training_gradients_equal_the_reference():
    """With gradients on, the fused projections concatenate inside the graph: every
    projection's own weights get the reference gradients."""
    model, inputs = equality_case(space_time_rope=True, frames=3, hw=(6, 10))
    model.train()
    model(**inputs).sample.square().mean().backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    reference_forward(model, *inputs.values()).square().mean().backward()
    for name, p in model.named_parameters():
        if p.grad is None:
            assert fast[name] is None or not fast[name].any(), name
            continue
        scale = p.grad.abs().amax().item()
        torch.testing.assert_close(fast[name], p.grad, rtol=0, atol=1e-5 * scale + 1e-9, msg=name)


def test_weights_changed_through_data_are_used():
    """No stale fused weights: an in-place write through ``.data`` (how diffusers' EMAModel
    swaps EMA weights in, invisible to version counters) changes the next forward."""
    model, inputs = equality_case(space_time_rope=True, frames=4)
    with torch.inference_mode():
        before = model(**inputs).sample
        for block in model.blocks:
            for attn in (block.spatial_attn, block.st_attn, block.swap_attn.attn):
                attn.to_k.weight.data.mul_(1.5)
        after = model(**inputs).sample
        ref = reference_forward(model, *inputs.values())
    assert (after - before).abs().amax() > 1e-3
    assert_equal_to_float_tolerance(after, ref)


@pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="bf16 autocast on CPU needs oneDNN"
)
def test_bf16_autocast_is_as_close_to_fp32_as_the_reference():
    """Under CPU bf16 autocast the optimised forward (attention kept in fp32) is no further
    from the fp32 output than the reference forward under the same autocast."""
    model, inputs = equality_case(space_time_rope=True, frames=4)
    with torch.inference_mode():
        fp32 = reference_forward(model, *inputs.values())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**inputs).sample.float()
            ref = reference_forward(model, *inputs.values()).float()
    err, ref_err = (out - fp32).abs().mean(), (ref - fp32).abs().mean()
    assert err <= 1.25 * ref_err, (err, ref_err)


def test_hooked_projections_run_their_own_forward():
    """A projection with a hook (as diffusers' leaf-level offloading adds) is called, not
    bypassed by the fused product or the oneDNN kernel, and the result still matches."""
    model, inputs = equality_case(space_time_rope=True, frames=4)
    block = model.blocks[0]
    layers = {
        "spatial to_k": block.spatial_attn.to_k,
        "space-time to_out": block.st_attn.to_out[0],
        "mlp fc1": block.mlp[0],
    }
    calls = []
    for name, layer in layers.items():
        layer.register_forward_hook(lambda *_, name=name: calls.append(name))
    with torch.inference_mode():
        out = model(**inputs).sample
        assert sorted(calls) == sorted(layers)  # once each
        ref = reference_forward(model, *inputs.values())
    assert_equal_to_float_tolerance(out, ref)


@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_kernel_equals_linear_then_gelu(gelu, bias):
    """attention.linear (oneDNN's fused kernel where available) against F.linear + GELU, on a
    3-D strided input, in fp32 and under bf16 autocast, with and without gradients."""
    import torch.nn.functional as F

    from models.attention import linear

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 24, 5, generator=g).transpose(1, 2)  # (2, 5, 24), not contiguous
    w = torch.randn(40, 24, generator=g)
    b = torch.randn(40, generator=g) if bias else None

    def plain():
        out = F.linear(x, w, b)
        return F.gelu(out, approximate="tanh") if gelu else out

    with torch.inference_mode():
        torch.testing.assert_close(linear(x, w, b, gelu=gelu), plain(), rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast, ref = linear(x, w, b, gelu=gelu), plain()
        assert fast.dtype == ref.dtype == torch.bfloat16
        torch.testing.assert_close(fast.float(), ref.float(), rtol=2e-2, atol=5e-2)
    w.requires_grad_(True)
    out = linear(x, w, b, gelu=gelu)
    out.sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_text_refiner_starts_as_the_identity_and_then_mixes_the_caption():
    """text_refiner_layers: fresh layers leave the output as it was (a trained model takes
    them on); once trained, a token's state depends on the other tokens of its caption."""
    torch.manual_seed(0)
    plain = dit_tiny(in_channels=4, patch_size=2, text_dim=32).eval()
    refined = dit_tiny(in_channels=4, patch_size=2, text_dim=32, text_refiner_layers=2).eval()
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("text_refiner.") for k in missing) and missing
    x = torch.randn(2, 4, 3, 8, 8)
    text, mask = torch.randn(2, 5, 32), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    args = (x, torch.tensor([500.0, 900.0]), text, mask)
    torch.testing.assert_close(refined(*args).sample, plain(*args).sample)
    for layer in refined.text_refiner:  # as if trained
        torch.nn.init.normal_(layer.attn.to_out[0].weight, std=0.2)
    changed = text.clone()
    changed[:, 2] += 1.0  # one token of each caption
    one = refined.text_proj(text)
    bias = mask_to_bias(mask, one.dtype)
    a, b = one, refined.text_proj(changed)
    for layer in refined.text_refiner:
        a, b = layer(a, bias), layer(b, bias)
    assert not torch.allclose(a[:, 0], b[:, 0])  # token 0 read token 2
    torch.testing.assert_close(
        refined.text_proj(changed)[:, 0], one[:, 0]
    )  # the projection alone does not


def test_guidance_embedding_starts_as_the_conditional_model_then_carries_the_scale():
    """guidance_embeds: a fresh guidance input leaves the model it continues unchanged at any
    scale (zero-initialised); once trained the output depends on the scale; None means 1; a
    model without the input refuses a scale."""
    torch.manual_seed(0)
    plain = dit_tiny(in_channels=4, patch_size=2, text_dim=32).eval()
    student = dit_tiny(in_channels=4, patch_size=2, text_dim=32, guidance_embeds=True).eval()
    missing, unexpected = student.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and missing and all(k.startswith("guidance_embed.") for k in missing)
    open_zero_inits(plain)  # a trained trunk, the same in both
    student.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 4, 3, 8, 8)
    args = (x, torch.tensor([500.0, 900.0]), torch.randn(2, 5, 32), torch.ones(2, 5))
    ref = plain(*args).sample
    for g in (None, 1.0, torch.tensor([2.0, 6.0])):
        torch.testing.assert_close(student(*args, guidance=g).sample, ref)
    torch.nn.init.normal_(student.guidance_embed.linear_2.weight, std=0.2)  # as if trained
    at_1 = student(*args, guidance=torch.tensor([1.0, 1.0])).sample
    torch.testing.assert_close(student(*args).sample, at_1)  # None = scale 1
    at_3 = student(*args, guidance=torch.tensor([3.0, 3.0])).sample
    assert not torch.allclose(at_1, at_3)
    mixed = student(*args, guidance=torch.tensor([1.0, 3.0])).sample  # per sample
    torch.testing.assert_close(mixed[0], at_1[0])
    torch.testing.assert_close(mixed[1], at_3[1])
    with pytest.raises(ValueError, match="no guidance input"):
        plain(*args, guidance=torch.tensor([3.0, 3.0]))
