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
* **Space-time attention with rotary positions** (``space_time_rope``) — an extra
  zero-initialised self-attention over all tokens of the clip, with 3-D RoPE, in every block: the
  score depends on relative (frame, row, column) offsets, so one hop can fetch an object
  from where it was k frames earlier. On in the shipped model (its motion fine-tune).
* **Conditioning frames** — a per-frame mask marks frames given clean (Open-Sora): their
  timestep is forced to 0 and their predicted velocity is 0, so an Euler step of any flow
  sampler leaves them exactly as given.
* **Reference elements** (SkyReels-A2, arXiv:2504.02436) — with ``max_references > 0`` each
  reference image's latent becomes tokens by a small :class:`ReferenceEncoder` (semantic
  path), which every block reads through its own zero-initialised cross-attention beside the
  text (IP-Adapter's decoupled keys/values); and the reference latents are also put before
  the clip as clean in-context frames (spatial path). A learned slot embedding ``N`` is added
  both to reference ``N``'s tokens and frame and to the text tokens of the ``<refN>``
  placeholder, which binds each placeholder to its image.
* **Embedded guidance** (``guidance_embeds``, as FLUX.1-dev's guidance-distilled
  transformer) — the classifier-free guidance scale is an input, embedded like the timestep
  and added to every frame's conditioning; a student trained to predict its teacher's guided
  output (``guidance_distill`` in :mod:`train.train_dit`) samples with one model call a step
  instead of two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention_processor import AttentionProcessor, FusedAttnProcessor2_0
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .attention import (
    Attention,
    WindowCrossAttention,
    apply_linear,
    cached_rotary_3d,
    default_processor,
    is_plain_linear,
    linear,
    mask_to_bias,
    masked_mean,
)
from .embeddings import clip_pos_embed, spatial_pos_embed


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, F, N, D), shift/scale (B, F, D) broadcast over the N tokens of a frame."""
    return torch.addcmul(shift.unsqueeze(2), x, 1 + scale.unsqueeze(2))  # one kernel


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: float = 4.0):
        hidden = int(dim * mult)
        super().__init__(
            nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fc1, act, fc2 = self
        if is_plain_linear(fc1) and type(act) is nn.GELU and act.approximate == "tanh":
            # bias and GELU inside the product where possible (attention.linear)
            return apply_linear(fc2, linear(x, fc1.weight, fc1.bias, gelu=True))
        return super().forward(x)


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
        references: bool = False,
        space_time_rope: bool = False,
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
        # Optional zero-initialised self-attention over every token of the clip with 3-D rotary
        # positions: one hop from (frame k, place p) to (frame 0, place p − v·k).
        self.norm_st = self.st_attn = self.gate_st = None
        if space_time_rope:
            self.norm_st = nn.LayerNorm(dim, eps=1e-6)
            self.st_attn = Attention(
                dim, heads=heads, dim_head=head_dim, bias=True, qk_norm="rms_norm"
            )
            self.st_attn.rotary = True  # keeps a rotary processor (set_default_attn_processor)
            self.gate_st = nn.Parameter(torch.zeros(dim))
        self.norm_c = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = Attention(
            dim, cross_attention_dim=dim, heads=heads, dim_head=head_dim, bias=True
        )
        # Reference cross-attention (decoupled from the text's; absent without references).
        self.norm_r = nn.LayerNorm(dim, eps=1e-6) if references else None
        self.ref_attn = (
            Attention(dim, cross_attention_dim=dim, heads=heads, dim_head=head_dim, bias=True)
            if references
            else None
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
        refs: torch.Tensor | None = None,
        ref_bias: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x (B, F, N, D), cond (B, F, D), text (B, L, D), text_bias (B, 1, L),
        refs (B, K, D) reference tokens, ref_bias (B, 1, K), rotary (cos, sin) each
        (F·N, head_dim) for the space-time attention → (B, F, N, D)."""
        b, f, n, d = x.shape
        # fp32 under autocast too: the modulation feeds fp32 residual arithmetic
        mod = self.adaLN(cond).to(x.dtype)  # (B, F, 6·D)
        shift_s, scale_s, gate_s, shift_m, scale_m, gate_m = mod.chunk(6, dim=-1)
        # Residual updates are fused multiply-adds, x + gate · h (torch.addcmul): one kernel
        # each at these small widths, where eager time goes to the number of kernels.

        # Spatial branch: attention among the N tokens of each frame.
        h = modulate(self.norm_s(x), shift_s, scale_s).reshape(b * f, n, d)
        s = torch.addcmul(x, gate_s.unsqueeze(2), self.spatial_attn(h).reshape(b, f, n, d))

        # Temporal branch: attention across the F frames at each location; an image has no
        # time axis, so the branch is the identity there (Frozen in Time's joint training).
        if f > 1:
            h = self.norm_t(x).transpose(1, 2).reshape(b * n, f, d)  # (B·N, F, D)
            h_t = self.temporal_attn(h).reshape(b, n, f, d).transpose(1, 2)  # (B, F, N, D)
            t = torch.addcmul(x, self.gate_temporal, h_t)
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
        # both branches' residual updates, s + t − x, plus the swap
        x = s if f == 1 else torch.addcmul(s, self.gate_temporal, h_t)
        x = torch.addcmul(x, self.gate_swap, swap)

        # Space-time attention with rotary positions (only with space_time_rope; clips only).
        if self.st_attn is not None and f > 1:
            h = self.st_attn(self.norm_st(x).reshape(b, f * n, d), rotary_emb=rotary)
            x = torch.addcmul(x, self.gate_st, h.reshape(b, f, n, d))

        # Text cross-attention over all tokens of the clip.
        h = self.cross_attn(
            self.norm_c(x).reshape(b, f * n, d),
            encoder_hidden_states=text,
            attention_mask=text_bias,
        )
        x = x + h.reshape(b, f, n, d)

        # Reference cross-attention: the same queries read the reference tokens.
        if self.ref_attn is not None and refs is not None:
            h = self.ref_attn(
                self.norm_r(x).reshape(b, f * n, d),
                encoder_hidden_states=refs,
                attention_mask=ref_bias,
            )
            x = x + h.reshape(b, f, n, d)

        h = modulate(self.norm_m(x), shift_m, scale_m)
        return torch.addcmul(x, gate_m.unsqueeze(2), self.mlp(h))


class ReferenceEncoder(nn.Module):
    """Reference latents → tokens (SkyReels-A2's semantic branch, on the VAE latent).

    Each reference latent (C, h, w) is patchified (``patch_size``), given 2-D positions and
    its slot embedding, and refined by ``depth`` pre-norm transformer layers in which the
    tokens of all references of a sample attend to each other. A learned null token is
    always appended, so a sample without references still has one key to attend to.
    """

    def __init__(self, in_channels: int, dim: int, heads: int, patch_size: int, depth: int):
        super().__init__()
        self.patch_size = patch_size
        self.patch = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                int(dim * 4),
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.null = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(
        self, latents: torch.Tensor, present: torch.Tensor, slots: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """latents (B, R, C, h, w), present (B, R) bool, slots (R, D) →
        tokens (B, R·T + 1, D) and key mask (B, R·T + 1) of 1 = attend."""
        b, r, c, h, w = latents.shape
        x = self.patch(latents.reshape(b * r, c, h, w).to(self.patch.weight.dtype))
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B·R, T, D)
        d = x.shape[-1]
        x = x + spatial_pos_embed(gh, gw, d).to(x)[None]
        x = x.reshape(b, r, gh * gw, d) + slots[None, :, None].to(x)  # (B, R, T, D)
        x = x.reshape(b, r * gh * gw, d)
        keep = present.bool()[:, :, None].expand(b, r, gh * gw).reshape(b, -1)  # (B, R·T)
        for layer in self.layers:
            # an all-padded row would give NaN: such rows attend to themselves and are dropped
            pad = ~keep & keep.any(dim=1, keepdim=True)
            x = layer(x, src_key_padding_mask=pad)
        x = torch.cat([self.norm(x), self.null.to(x).expand(b, 1, d)], dim=1)
        mask = torch.cat([keep, torch.ones(b, 1, dtype=torch.bool, device=keep.device)], dim=1)
        return x, mask.to(x.dtype)


@dataclass
class VideoDiTOutput(BaseOutput):
    """sample: predicted flow velocity, (B, C, F, H, W)."""

    sample: torch.Tensor


class VideoDiT(ModelMixin, ConfigMixin, PeftAdapterMixin):
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
        max_references: reference images a prompt may bind (``<ref1>`` …); 0 = no reference
            path (the text-to-video model).
        reference_patch_size: patch side of the reference encoder (finer than the clip's,
            since a sprite's pattern is what must be copied).
        reference_depth: transformer layers of the reference encoder.
        reference_in_context: also put the reference latents before the clip as clean
            frames (SkyReels-A2's spatial path).
        text_refiner_layers: trainable transformer layers over the projected caption tokens
            before every block reads them (a token refiner, as HunyuanVideo's): the frozen
            encoder's state of "yellow" barely says what the yellow object does, and a
            layer that lets the tokens of each object's phrase read each other can put it
            there. Zero-initialised residuals: 0 layers and N fresh layers give the same
            output, so a trained model takes them on.
        guidance_embeds: the guidance scale is an input (:meth:`forward`'s ``guidance``),
            embedded through a zero-initialised layer: a model given it starts as the
            conditional model it continues (scale 1).
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
        max_references: int = 0,
        reference_patch_size: int = 2,
        reference_depth: int = 2,
        reference_in_context: bool = True,
        space_time_rope: bool = False,
        text_refiner_layers: int = 0,
        guidance_embeds: bool = False,
    ):
        super().__init__()
        if max_references < 0:
            raise ValueError(f"max_references must be >= 0, got {max_references}")
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
        self.guidance_embed = TimestepEmbedding(256, width) if guidance_embeds else None
        self.text_proj = nn.Sequential(
            nn.Linear(text_dim, width), nn.GELU(approximate="tanh"), nn.Linear(width, width)
        )
        self.pooled_proj = nn.Sequential(
            nn.Linear(text_dim, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.text_refiner = (
            nn.ModuleList(
                TextRefinerLayer(width, heads, mlp_ratio) for _ in range(text_refiner_layers)
            )
            if text_refiner_layers
            else None
        )
        self.blocks = nn.ModuleList(
            SwapBlock(
                width,
                heads,
                head_dim,
                swap_query="spatial" if i % 2 == 0 else "temporal",
                window=tuple(window),
                mlp_ratio=mlp_ratio,
                references=max_references > 0,
                space_time_rope=space_time_rope,
            )
            for i in range(depth)
        )
        if max_references > 0:
            # slot 0 = "no reference" (text tokens outside any placeholder)
            self.ref_slots = nn.Embedding(max_references + 1, width, padding_idx=0)
            self.ref_encoder = ReferenceEncoder(
                in_channels, width, heads, reference_patch_size, reference_depth
            )
            self.ref_frame_embed = nn.Parameter(torch.zeros(width))
        else:
            self.ref_slots = self.ref_encoder = self.ref_frame_embed = None
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
        if self.guidance_embed is not None:
            nn.init.normal_(self.guidance_embed.linear_1.weight, std=0.02)
            nn.init.zeros_(self.guidance_embed.linear_2.weight)  # starts as the model it continues
            nn.init.zeros_(self.guidance_embed.linear_2.bias)
        for block in self.blocks:
            # adaLN-Zero: every modulated residual starts closed, so each block starts as identity.
            nn.init.zeros_(block.adaLN[-1].weight)
            nn.init.zeros_(block.adaLN[-1].bias)
            # Zero gates on the temporal and swap paths: the model starts as an image model.
            nn.init.zeros_(block.gate_temporal)
            nn.init.zeros_(block.gate_swap)
            if block.st_attn is not None:
                # Zero output projection and an open gate (not a zero gate): the projection's
                # many weights learn a read-out at once, where a zero gate over a random
                # attention barely opens (300 steps at 10× lr: 0.01).
                nn.init.ones_(block.gate_st)
                nn.init.zeros_(block.st_attn.to_out[0].weight)
                nn.init.zeros_(block.st_attn.to_out[0].bias)
            # Text (and reference) cross-attention output starts at zero: stable early
            # training, and a text-to-video model given a reference path is unchanged by it.
            for attn in (block.cross_attn, block.ref_attn):
                if attn is not None:
                    nn.init.zeros_(attn.to_out[0].weight)
                    nn.init.zeros_(attn.to_out[0].bias)
        if self.ref_slots is not None:
            nn.init.normal_(self.ref_slots.weight, std=0.02)
            with torch.no_grad():
                self.ref_slots.weight[0].zero_()
            nn.init.normal_(self.ref_frame_embed, std=0.02)
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
                    self.device,
                    qk_norm=getattr(module, "norm_q", None) is not None,
                    rotary=getattr(module, "rotary", False),
                )
                for name, module in self.named_modules()
                if isinstance(module, Attention)
            }
        )

    def fuse_qkv_projections(self) -> None:
        """Inference: one matrix product for q, k, v (self-attention) or k, v (cross-attention)
        in every attention module (diffusers' ``fuse_projections`` + ``FusedAttnProcessor2_0``),
        the same function with fewer, larger kernels. Training keeps updating the unfused
        weights, so fuse only a model that is done training; undo with
        :meth:`unfuse_qkv_projections` (e.g. before ``save_pretrained``)."""
        if getattr(self, "original_attn_processors", None) is not None:
            return  # already fused
        if self.config.space_time_rope:
            raise ValueError("fused projections would drop the rotary positions (space_time_rope)")
        self.original_attn_processors = self.attn_processors
        for module in self.modules():
            if isinstance(module, Attention):
                module.fuse_projections(fuse=True)
        self.set_attn_processor(FusedAttnProcessor2_0())

    def unfuse_qkv_projections(self) -> None:
        """Back to separate projections and the processors used before fusing."""
        if getattr(self, "original_attn_processors", None) is None:
            return
        self.set_attn_processor(self.original_attn_processors)
        self.original_attn_processors = None
        for module in self.modules():
            if isinstance(module, Attention):
                for name in ("to_qkv", "to_kv"):
                    if hasattr(module, name):
                        delattr(module, name)
                module.fused_projections = False

    # -- forward ----------------------------------------------------------------------------
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        return_dict: bool = True,
        reference_latents: torch.Tensor | None = None,
        reference_mask: torch.Tensor | None = None,
        text_reference_ids: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
    ) -> VideoDiTOutput | tuple[torch.Tensor]:
        """Predict the flow velocity.

        Args:
            hidden_states: noisy latents (B, C, F, H, W).
            timestep: (B,) or (B, F) in [0, num_train_timesteps]; per frame allows mixed noise.
            encoder_hidden_states: text token states (B, L, text_dim).
            encoder_attention_mask: (B, L), 1 for real tokens, 0 for padding.
            frame_mask: (B, F) bool, True for conditioning frames given clean.
            reference_latents: (B, R, C, H, W) clean latents of reference images, R ≤
                ``max_references`` (the in-context path needs the clip's H × W).
            reference_mask: (B, R) bool, False where a sample has no R-th reference (or it
                was dropped for guidance); default all True.
            text_reference_ids: (B, L) long, N on the tokens of a ``<refN>`` placeholder,
                0 elsewhere (:func:`pipelines.components.reference_token_ids`).
            guidance: (B,) or scalar classifier-free guidance scale the output is to carry
                (``guidance_embeds`` models only; None = 1, the conditional prediction).

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
        pos, clip_pos = (e.to(x) for e in clip_pos_embed(f, gh, gw, d))  # (N, D), (F, N, D)
        x = x + clip_pos

        # 2. Per-frame conditioning: timestep (0 on given frames) + pooled text; text tokens.
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        if timestep.ndim == 1:
            timestep = timestep[:, None].expand(b, f)
        if frame_mask is not None:
            timestep = timestep.masked_fill(frame_mask.bool(), 0)
        if encoder_attention_mask is None:
            encoder_attention_mask = torch.ones(encoder_hidden_states.shape[:2], device=x.device)
        text_in = encoder_hidden_states.to(dtype)
        pooled = self.pooled_proj(masked_mean(text_in, encoder_attention_mask))  # (B, D)
        text = self.text_proj(text_in)  # (B, L, D)
        text_bias = mask_to_bias(encoder_attention_mask, dtype)  # (B, 1, L)
        for layer in self.text_refiner or ():
            text = layer(text, text_bias)  # (B, L, D)
        if text_reference_ids is not None and self.ref_slots is not None:
            ids = text_reference_ids.long().clamp(0, self.config.max_references)
            text = text + self.ref_slots(ids).to(dtype)  # binds <refN> to slot N

        # 3. References: tokens for the reference cross-attention, and clean frames put
        #    before the clip (their timestep is 0; their outputs are dropped in step 5).
        refs = ref_bias = None
        r_ctx = 0
        if reference_latents is not None:
            if self.ref_encoder is None:
                raise ValueError("this model has no reference path (max_references = 0)")
            r = reference_latents.shape[1]
            if r > self.config.max_references:
                raise ValueError(
                    f"{r} references given; this model takes at most {self.config.max_references}"
                )
            present = (
                torch.ones(b, r, dtype=torch.bool, device=x.device)
                if reference_mask is None
                else reference_mask.bool().to(x.device)
            )
            slots = self.ref_slots.weight[1 : r + 1]  # (R, D)
            refs, ref_keep = self.ref_encoder(reference_latents, present, slots)  # (B, K, D)
            ref_bias = mask_to_bias(ref_keep, dtype)  # (B, 1, K)
            if self.config.reference_in_context:
                if tuple(reference_latents.shape[-2:]) != (h, w):
                    raise ValueError(
                        f"reference latents are {tuple(reference_latents.shape[-2:])}, the clip's "
                        f"are {(h, w)}; in-context references need the clip's size"
                    )
                z = reference_latents.reshape(b * r, c, h, w).to(dtype)
                ctx = self.patch(z).flatten(2).transpose(1, 2).reshape(b, r, gh * gw, d)
                ctx = ctx * present[:, :, None, None].to(dtype)  # an absent reference: empty
                ctx = ctx + pos + (self.ref_frame_embed + slots)[None, :, None].to(dtype)
                x = torch.cat([ctx, x], dim=1)  # (B, R + F, N, D)
                timestep = torch.cat([timestep.new_zeros(b, r), timestep], dim=1)
                r_ctx = r
        t_emb = self.time_embed(self.time_proj(timestep.reshape(-1)).to(dtype))
        cond = t_emb.reshape(b, r_ctx + f, d) + pooled[:, None]  # (B, R + F, D)
        if guidance is not None and self.guidance_embed is None:
            raise ValueError("this model has no guidance input (guidance_embeds = False)")
        if self.guidance_embed is not None:
            g = torch.ones(b, device=x.device) if guidance is None else guidance
            g = torch.as_tensor(g, dtype=torch.float32, device=x.device).reshape(-1).expand(b)
            g_emb = self.guidance_embed(self.time_proj(g * GUIDANCE_EMBED_SCALE).to(dtype))
            cond = cond + g_emb[:, None]  # (B, R + F, D)

        # 4. Blocks.
        rotary = None
        if self.config.space_time_rope:
            head_dim = self.config.width // self.config.heads
            rotary = tuple(r.to(x) for r in cached_rotary_3d(x.shape[1], gh, gw, head_dim))
        for block in self.blocks:
            args = (x, cond, (gh, gw), text, text_bias, refs, ref_bias, rotary)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = self._gradient_checkpointing_func(block, *args)
            else:
                x = block(*args)
        x, cond = x[:, r_ctx:], cond[:, r_ctx:]  # (B, F, N, D): the clip's frames

        # 5. Final adaLN and un-patchify.
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
#: guidance scales 1 … 10 reach the timestep projection as 100 … 1000, the timesteps' range
GUIDANCE_EMBED_SCALE = 100.0


def dit_tiny(**kw) -> VideoDiT:
    """Test-size model: 2 blocks, width 32."""
    return VideoDiT(**{"width": 32, "depth": 2, "heads": 4, **kw})


def dit_xs(**kw) -> VideoDiT:
    """The embedded default: width 128, 6 blocks; with patch 2 on a 16×16 latent (64 tokens a
    frame) it spends its compute on finer tokens rather than a wider model (DiT: Gflops, not
    parameters, track quality)."""
    return VideoDiT(**{"width": 128, "depth": 6, "heads": 4, **kw})


class TextRefinerLayer(nn.Module):
    """Pre-norm self-attention (the blocks' :class:`Attention`) and :class:`FeedForward` over
    caption tokens, both residuals zero-initialised (the identity until trained)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads=heads, dim_head=width // heads, bias=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = FeedForward(width, mlp_ratio)
        for layer in (self.attn.to_out[0], self.mlp[2]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, text: torch.Tensor, text_bias: torch.Tensor) -> torch.Tensor:
        """text (B, L, D), text_bias (B, 1, L) additive key-padding bias → (B, L, D)."""
        text = text + self.attn(self.norm1(text), attention_mask=text_bias)
        return text + self.mlp(self.norm2(text))


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
