"""Video diffusion transformer with swapped spatial–temporal attention.

Architecture (one file, DiT style):

* **Tokens** — every frame's latent is patchified (p × p) into H'·W' tokens; 2-D sin-cos
  positions are added per frame and 1-D sin-cos positions per frame index. An image is a
  clip with F = 1, so one model trains on images and videos (Frozen in Time).
* **Block** — a spatial self-attention within each frame and a temporal self-attention
  across frames at each location run as two branches; the **swap** (VideoFactory,
  arXiv:2305.10874) is a cross-attention inside 3-D windows whose queries come from one
  branch and keys/values from the other, the roles alternating block by block. Then text
  cross-attention and an MLP. Timestep modulation is adaLN-Zero (DiT, arXiv:2212.09748),
  per frame so that every frame can carry its own noise level.
* **Zero-initialised gates** on the temporal and swap paths: a fresh model is an image
  model and learns time gradually as the curriculum moves from images to clips.
* **Conditioning frames** — a per-frame mask marks frames given clean (Open-Sora): their
  timestep is forced to 0 and their predicted velocity is 0, so an Euler step of any flow
  sampler leaves them exactly as given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import AttentionProcessor
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .attention import Attention, WindowCrossAttention, default_processor, mask_to_bias, masked_mean
from .embeddings import spatial_pos_embed, temporal_pos_embed


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, F, N, D), shift/scale (B, F, D) broadcast over the N tokens of a frame."""
    return x * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: float = 4.0):
        hidden = int(dim * mult)
        super().__init__(
            nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
        )


class SwapBlock(nn.Module):
    """One transformer block: spatial ∥ temporal branches, windowed swap, text cross, MLP."""

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        swap_query: str,
        window: tuple[int, int, int],
        mlp_ratio: float,
    ):
        super().__init__()
        if swap_query not in ("spatial", "temporal"):
            raise ValueError(f"swap_query must be 'spatial' or 'temporal', got {swap_query!r}")
        self.swap_query = swap_query
        self.norm_s = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.spatial_attn = Attention(
            dim, heads=heads, dim_head=head_dim, bias=True, qk_norm="rms_norm"
        )
        self.norm_t = nn.LayerNorm(dim, eps=1e-6)
        self.temporal_attn = Attention(
            dim, heads=heads, dim_head=head_dim, bias=True, qk_norm="rms_norm"
        )
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_kv = nn.LayerNorm(dim, eps=1e-6)
        self.swap_attn = WindowCrossAttention(dim, heads, head_dim, window)
        self.norm_c = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = Attention(
            dim, cross_attention_dim=dim, heads=heads, dim_head=head_dim, bias=True
        )
        self.norm_m = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = FeedForward(dim, mlp_ratio)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.gate_temporal = nn.Parameter(torch.zeros(dim))
        self.gate_swap = nn.Parameter(torch.zeros(dim))

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        grid: tuple[int, int],
        text: torch.Tensor,
        text_bias: torch.Tensor,
    ) -> torch.Tensor:
        """x (B, F, N, D), cond (B, F, D), text (B, L, D), text_bias (B, 1, L) → (B, F, N, D)."""
        b, f, n, d = x.shape
        shift_s, scale_s, gate_s, shift_m, scale_m, gate_m = self.adaLN(cond).chunk(6, dim=-1)

        # Spatial branch: attention among the N tokens of each frame.
        h = modulate(self.norm_s(x), shift_s, scale_s).reshape(b * f, n, d)
        s = x + gate_s.unsqueeze(2) * self.spatial_attn(h).reshape(b, f, n, d)

        # Temporal branch: attention across the F frames at each location; an image has no
        # time axis, so the branch is the identity there (Frozen in Time's joint training).
        if f > 1:
            h = self.norm_t(x).transpose(1, 2).reshape(b * n, f, d)  # (B·N, F, D)
            h = self.temporal_attn(h).reshape(b, n, f, d).transpose(1, 2)  # (B, F, N, D)
            t = x + self.gate_temporal * h
        else:
            t = x

        # Swap: windowed cross-attention, queries from one branch and keys/values from the
        # other; which branch queries alternates from block to block.
        q_branch, kv_branch = (s, t) if self.swap_query == "spatial" else (t, s)
        gh, gw = grid
        swap = self.swap_attn(
            self.norm_q(q_branch).reshape(b, f, gh, gw, d),
            self.norm_kv(kv_branch).reshape(b, f, gh, gw, d),
        ).reshape(b, f, n, d)
        x = s + t - x + self.gate_swap * swap  # both branches' residual updates, plus the swap

        # Text cross-attention over all tokens of the clip.
        h = self.cross_attn(
            self.norm_c(x).reshape(b, f * n, d),
            encoder_hidden_states=text,
            attention_mask=text_bias,
        )
        x = x + h.reshape(b, f, n, d)

        h = modulate(self.norm_m(x), shift_m, scale_m)
        return x + gate_m.unsqueeze(2) * self.mlp(h)


@dataclass
class VideoDiTOutput(BaseOutput):
    """sample: predicted flow velocity, (B, C, F, H, W)."""

    sample: torch.Tensor


class VideoDiT(ModelMixin, ConfigMixin):
    """Latent video DiT with swapped spatial–temporal attention.

    Args:
        in_channels: latent channels C of the VAE.
        patch_size: spatial patch side p (latent pixels per token side).
        width: token width D; heads × head_dim must equal it.
        depth: number of :class:`SwapBlock`.
        heads: attention heads.
        window: (t, h, w) size, in tokens, of the swap attention's 3-D windows.
        text_dim: width of the text encoder's token states.
        mlp_ratio: MLP hidden width / D.
        max_frames: longest clip the model is meant for (used by the pipeline's checks).
        sample_size: latent side the model was trained on (informative; any multiple of p works).
        prediction_type: what the output is — ``"velocity"`` (the flow's ε − x0) or
            ``"sample"`` (x0 itself; JiT, arXiv:2511.13720: with large patches a network
            that must pass the noise through to predict a velocity has it easier predicting
            the clean sample). :meth:`to_velocity` turns either into the sampler's velocity.
        min_sigma: ``"sample"`` only: the velocity is (x_t − x0) / max(σ, min_sigma).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["SwapBlock"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        patch_size: int = 2,
        width: int = 256,
        depth: int = 8,
        heads: int = 4,
        window: tuple[int, int, int] = (4, 4, 4),
        text_dim: int = 384,
        mlp_ratio: float = 4.0,
        max_frames: int = 64,
        sample_size: int = 16,
        prediction_type: str = "velocity",
        min_sigma: float = 0.05,
    ):
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"
            )
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        if width % 4:
            raise ValueError(f"width must be divisible by 4 for 2-D sin-cos positions, got {width}")
        head_dim = width // heads
        self.gradient_checkpointing = False
        self.patch = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(256, width)
        self.text_proj = nn.Sequential(
            nn.Linear(text_dim, width), nn.GELU(approximate="tanh"), nn.Linear(width, width)
        )
        self.pooled_proj = nn.Sequential(
            nn.Linear(text_dim, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.blocks = nn.ModuleList(
            SwapBlock(
                width,
                heads,
                head_dim,
                swap_query="spatial" if i % 2 == 0 else "temporal",
                window=tuple(window),
                mlp_ratio=mlp_ratio,
            )
            for i in range(depth)
        )
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.adaLN_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.proj_out = nn.Linear(width, patch_size * patch_size * in_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All initialisation in one place (DiT)."""

        def _basic(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.apply(_basic)
        # Patch embedding like a linear layer on the flattened patch.
        w = self.patch.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch.bias)
        nn.init.normal_(self.time_embed.linear_1.weight, std=0.02)
        nn.init.normal_(self.time_embed.linear_2.weight, std=0.02)
        for block in self.blocks:
            # adaLN-Zero: every modulated residual starts closed, so each block starts as identity.
            nn.init.zeros_(block.adaLN[-1].weight)
            nn.init.zeros_(block.adaLN[-1].bias)
            # Zero gates on the temporal and swap paths: the model starts as an image model.
            nn.init.zeros_(block.gate_temporal)
            nn.init.zeros_(block.gate_swap)
            # Text cross-attention output starts at zero so early training is stable.
            nn.init.zeros_(block.cross_attn.to_out[0].weight)
            nn.init.zeros_(block.cross_attn.to_out[0].bias)
        nn.init.zeros_(self.adaLN_out[-1].weight)
        nn.init.zeros_(self.adaLN_out[-1].bias)
        # Zero output layer: the first prediction is v = 0.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    # -- attention processors (diffusers convention) ------------------------------------
    @property
    def attn_processors(self) -> dict[str, AttentionProcessor]:
        return {
            f"{name}.processor": module.processor
            for name, module in self.named_modules()
            if isinstance(module, Attention)
        }

    def set_attn_processor(self, processor) -> None:
        """One processor for every attention module, or a dict keyed like ``attn_processors``."""
        for name, module in self.named_modules():
            if isinstance(module, Attention):
                proc = processor[f"{name}.processor"] if isinstance(processor, dict) else processor
                module.set_processor(proc)

    def set_default_attn_processor(self) -> None:
        """SDPA, or xformers when installed and the model is on CUDA (not for q/k-normed
        attention, which xformers' processor would compute without its norms)."""
        self.set_attn_processor(
            {
                f"{name}.processor": default_processor(
                    self.device, qk_norm=getattr(module, "norm_q", None) is not None
                )
                for name, module in self.named_modules()
                if isinstance(module, Attention)
            }
        )

    # -- forward ----------------------------------------------------------------------------
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> VideoDiTOutput | tuple[torch.Tensor]:
        """Predict the flow velocity.

        Args:
            hidden_states: noisy latents (B, C, F, H, W).
            timestep: (B,) or (B, F) in [0, num_train_timesteps]; per frame allows mixed noise.
            encoder_hidden_states: text token states (B, L, text_dim).
            encoder_attention_mask: (B, L), 1 for real tokens, 0 for padding.
            frame_mask: (B, F) bool, True for conditioning frames given clean.

        Returns:
            velocity (B, C, F, H, W), exactly 0 on conditioning frames; or, with
            ``prediction_type="sample"``, the clean sample, equal to the input there.
        """
        b, c, f, h, w = hidden_states.shape
        p = self.config.patch_size
        if h % p or w % p:
            raise ValueError(f"latent size {h}×{w} is not divisible by the patch size {p}")
        gh, gw = h // p, w // p
        dtype = self.patch.weight.dtype

        # 1. Tokens with spatial and temporal positions.
        x = hidden_states.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w).to(dtype)
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B·F, N, D)
        d = x.shape[-1]
        x = x.reshape(b, f, gh * gw, d)  # (B, F, N, D)
        pos = spatial_pos_embed(gh, gw, d).to(x)[None, None]  # (1, 1, N, D)
        tpos = temporal_pos_embed(f, d).to(x)[None, :, None]  # (1, F, 1, D)
        x = x + pos + tpos

        # 2. Per-frame conditioning: timestep (0 on given frames) + pooled text.
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        if timestep.ndim == 1:
            timestep = timestep[:, None].expand(b, f)
        if frame_mask is not None:
            timestep = timestep.masked_fill(frame_mask.bool(), 0)
        if encoder_attention_mask is None:
            encoder_attention_mask = torch.ones(encoder_hidden_states.shape[:2], device=x.device)
        t_emb = self.time_embed(self.time_proj(timestep.reshape(-1)).to(dtype)).reshape(b, f, d)
        text_in = encoder_hidden_states.to(dtype)
        pooled = self.pooled_proj(masked_mean(text_in, encoder_attention_mask))  # (B, D)
        cond = t_emb + pooled[:, None]  # (B, F, D)
        text = self.text_proj(text_in)  # (B, L, D)
        text_bias = mask_to_bias(encoder_attention_mask, dtype)  # (B, 1, L)

        # 3. Blocks.
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = self._gradient_checkpointing_func(block, x, cond, (gh, gw), text, text_bias)
            else:
                x = block(x, cond, (gh, gw), text, text_bias)

        # 4. Final adaLN and un-patchify.
        shift, scale = self.adaLN_out(cond).chunk(2, dim=-1)
        x = self.proj_out(modulate(self.norm_out(x), shift, scale))  # (B, F, N, p·p·C)
        x = x.reshape(b, f, gh, gw, p, p, c).permute(0, 6, 1, 2, 4, 3, 5)  # (B, C, F, gh, p, gw, p)
        out = x.reshape(b, c, f, h, w)
        if frame_mask is not None:
            given = frame_mask.bool()[:, None, :, None, None]
            if self.config.prediction_type == "sample":
                out = torch.where(given, hidden_states.to(out.dtype), out)
            else:
                out = out * (~given).to(out.dtype)
        if not return_dict:
            return (out,)
        return VideoDiTOutput(sample=out)

    def to_velocity(
        self, output: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor | float
    ) -> torch.Tensor:
        """The flow velocity ε − x0 from this model's ``output`` at noisy ``sample`` and flow
        time ``sigma`` ∈ [0, 1] (scalar or (B,)): the output itself, or (x_t − x̂0) / σ."""
        if self.config.prediction_type == "velocity":
            return output
        sigma = torch.as_tensor(sigma, dtype=output.dtype, device=output.device)
        sigma = sigma.reshape(-1, *([1] * (output.ndim - 1))) if sigma.ndim else sigma
        return (sample.to(output.dtype) - output) / sigma.clamp_min(self.config.min_sigma)


PREDICTION_TYPES = ("velocity", "sample")


def dit_tiny(**kw) -> VideoDiT:
    """Test-size model: 2 blocks, width 32."""
    return VideoDiT(**{"width": 32, "depth": 2, "heads": 4, **kw})


def dit_xs(**kw) -> VideoDiT:
    """The embedded default: width 128, 6 blocks; with patch 2 on a 16×16 latent (64 tokens a
    frame) it spends its compute on finer tokens rather than a wider model (DiT: Gflops, not
    parameters, track quality)."""
    return VideoDiT(**{"width": 128, "depth": 6, "heads": 4, **kw})


def dit_s(**kw) -> VideoDiT:
    """Width 192, 6 blocks (the first shipped model: patch 4)."""
    return VideoDiT(**{"width": 192, "depth": 6, "heads": 6, **kw})


def dit_b(**kw) -> VideoDiT:
    return VideoDiT(**{"width": 384, "depth": 12, "heads": 6, **kw})


def dit_l(**kw) -> VideoDiT:
    return VideoDiT(**{"width": 768, "depth": 24, "heads": 12, **kw})


VIDEO_DIT_MODELS = {
    "dit_tiny": dit_tiny,
    "dit_xs": dit_xs,
    "dit_s": dit_s,
    "dit_b": dit_b,
    "dit_l": dit_l,
}
