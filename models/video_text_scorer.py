"""Video–text alignment model: a joint space-time video tower and a frozen-text head.

Architecture (one file, Frozen in Time style, arXiv:2104.00650):

* **Video tower** — frames are patchified (p × p) into tokens with 2-D sin-cos positions and
  a 1-D sin-cos frame position; each block runs a *temporal* self-attention across frames at
  each location (divided space-time attention, TimeSformer), a *spatial* self-attention
  within each frame, and an MLP. An image is a 1-frame video: the temporal attention is the
  identity there, so one tower embeds images and clips alike (joint image–video training).
  The clip is pooled by a max over all its tokens (``pooling="max"``, the default for new
  models): an object covers a few of the 512 tokens, and an attention pool — a learned query
  over all tokens (``pooling="query"``, the scorer shipped before 2026-11-26) — starts as a
  near-uniform mean in which the background drowns it; trained so, the tower learnt colour
  but never motion, even with motion labels (BENCHMARKS.md, "Scorer"; experiments/scorer_pilots/REPORT.md).
* **Text head** — the token states of a frozen text encoder (MiniLM by default) go through
  a projection and ``text_layers`` trainable self-attention blocks (so word order — which
  colour goes with which shape — survives pooling), then a masked mean.
* Both sides end in a linear projection to ``embed_dim`` and are L2-normalised; the score
  of a (video, caption) pair is their cosine, and ``logit_scale`` is CLIP's learned
  temperature for the contrastive loss.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .attention import Attention, mask_to_bias, masked_mean
from .embeddings import spatial_pos_embed, temporal_pos_embed
from .video_dit import FeedForward

POOLINGS = ("max", "query")
STEMS = ("patch", "conv")


def _conv_stem(in_channels: int, width: int, patch_size: int) -> nn.Sequential:
    """Two convolutions down to the same p × p token grid as a patch stem: (p/2)-pixel patches,
    then an overlapping 3 × 3 stride-2 conv over them. Each token sees its patch and a half
    patch of border, so a small object cut by a patch edge is still seen whole (an 8 px patch
    sees a 6 px shape in fragments). Full-resolution convs cost 5–10× more on CPU (measured:
    a 3 × 3 conv at 64 × 64 doubled the training step)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width // 2, kernel_size=patch_size // 2, stride=patch_size // 2),
        nn.GELU(),
        nn.Conv2d(width // 2, width, kernel_size=3, stride=2, padding=1),
    )


class _Block(nn.Module):
    """Pre-norm self-attention + MLP over (batch, tokens, D), optional key-padding bias."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_a = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads=heads, dim_head=dim // heads, bias=True)
        self.norm_m = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm_a(x), attention_mask=bias)
        return x + self.mlp(self.norm_m(x))


class _SpaceTimeBlock(nn.Module):
    """Divided space-time attention: temporal, then spatial, then MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_t = nn.LayerNorm(dim)
        self.temporal_attn = Attention(dim, heads=heads, dim_head=dim // heads, bias=True)
        self.spatial = _Block(dim, heads, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, F, N, D) → (B, F, N, D)."""
        b, f, n, d = x.shape
        if f > 1:
            h = self.norm_t(x).transpose(1, 2).reshape(b * n, f, d)  # (B·N, F, D)
            x = x + self.temporal_attn(h).reshape(b, n, f, d).transpose(1, 2)
        return self.spatial(x.reshape(b * f, n, d)).reshape(b, f, n, d)


class VideoTextScorer(ModelMixin, ConfigMixin):
    """Contrastive video–text model (the project's default scorer).

    Args:
        image_size: frame side the tower reads (frames are resized to it).
        patch_size: pixels per token side.
        num_frames: frames sampled evenly from a video before encoding.
        width, depth, heads, mlp_ratio: the video tower.
        text_dim: width of the frozen text encoder's token states.
        text_layers: trainable self-attention blocks on top of the frozen token states.
        embed_dim: width of the joint embedding space.
        text_encoder: spec of the frozen text encoder (``pipelines.components``).
        motion_channels: also feed each frame's difference from the previous one (zero for
            the first frame and for images) as 3 extra input channels: the two-stream cue
            that puts an object's leading and trailing edge — its direction — inside one
            patch, where a plain temporal attention sees only a patch changing.
        pooling: how the clip's tokens become one vector: ``"max"`` (per channel, over all
            tokens of all frames) or ``"query"`` (a learned query attends over them). The
            default stays ``"query"`` so that saved configs without the key load as trained;
            the factories and ``studio train scorer`` use ``"max"``.
        stem: ``"patch"`` (one p × p strided conv) or ``"conv"`` (half-size patches and an
            overlapping conv to the same token grid, ``_conv_stem``; needs an even ``patch_size``).
        pool_dim: with ``pooling="max"``, a token-wise linear layer + GELU to this width
            before the max (0 = none): more channels to pool, so that a channel can fire for a
            conjunction ("red" *and* "circle" in one token) — a per-channel max over the
            tower's own channels pools each object's attributes apart.
    """

    @register_to_config
    def __init__(
        self,
        image_size: int = 64,
        patch_size: int = 8,
        num_frames: int = 8,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        text_dim: int = 384,
        text_layers: int = 1,
        embed_dim: int = 128,
        text_encoder: str = "minilm",
        motion_channels: bool = False,
        pooling: str = "query",
        stem: str = "patch",
        pool_dim: int = 0,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if stem == "conv" and patch_size % 2:
            raise ValueError(f"stem 'conv' needs an even patch_size, got {patch_size}")
        if pool_dim and pooling != "max":
            raise ValueError("pool_dim needs pooling='max'")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        if width % heads or width % 4:
            raise ValueError(f"width {width} must be divisible by heads ({heads}) and by 4")
        in_channels = 6 if motion_channels else 3
        if stem == "conv":
            self.conv_stem = _conv_stem(in_channels, width, patch_size)
        else:
            self.patch = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(_SpaceTimeBlock(width, heads, mlp_ratio) for _ in range(depth))
        if pooling == "query":
            self.pool_query = nn.Parameter(torch.randn(1, 1, width) * 0.02)
            self.pool = Attention(width, heads=heads, dim_head=width // heads, bias=True)
        if pool_dim:
            self.pool_in = nn.Sequential(nn.Linear(width, pool_dim), nn.GELU())
        pooled_dim = pool_dim or width
        self.video_norm = nn.LayerNorm(pooled_dim)
        self.video_proj = nn.Linear(pooled_dim, embed_dim)
        self.text_in = nn.Linear(text_dim, width)
        self.text_blocks = nn.ModuleList(
            _Block(width, heads, mlp_ratio) for _ in range(text_layers)
        )
        self.text_norm = nn.LayerNorm(width)
        self.text_proj = nn.Linear(width, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07), as CLIP

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, F, 3, H, W) in [-1, 1], H = W = image_size → unit embeddings (B, E)."""
        if self.config.motion_channels:
            diff = torch.zeros_like(frames)
            diff[:, 1:] = frames[:, 1:] - frames[:, :-1]
            frames = torch.cat([frames, diff], dim=2)  # (B, F, 6, H, W)
        b, f, c, h, w = frames.shape
        p = self.config.patch_size
        stem = self.conv_stem if self.config.stem == "conv" else self.patch
        dtype = next(stem.parameters()).dtype
        x = stem(frames.reshape(b * f, c, h, w).to(dtype))  # (B·F, D, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B·F, N, D)
        n, d = x.shape[1:]
        x = x.reshape(b, f, n, d)
        x = x + spatial_pos_embed(h // p, w // p, d).to(x)[None, None]
        x = x + temporal_pos_embed(f, d).to(x)[None, :, None]
        for block in self.blocks:
            x = block(x)  # (B, F, N, D)
        x = x.reshape(b, f * n, d)
        if self.config.pooling == "max":
            if self.config.pool_dim:
                x = self.pool_in(x)  # (B, F·N, pool_dim)
            pooled = x.amax(dim=1)  # (B, D) or (B, pool_dim)
        else:
            pooled = self.pool(self.pool_query.expand(b, -1, -1).to(x), encoder_hidden_states=x)
            pooled = pooled[:, 0]  # (B, D)
        z = self.video_proj(self.video_norm(pooled))
        return nn.functional.normalize(z, dim=-1)

    def encode_text(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Frozen token states (B, L, text_dim) and mask (B, L) → unit embeddings (B, E)."""
        x = self.text_in(states.to(self.text_in.weight.dtype))  # (B, L, D)
        bias = mask_to_bias(mask, x.dtype)  # (B, 1, L)
        for block in self.text_blocks:
            x = block(x, bias)
        z = self.text_proj(self.text_norm(masked_mean(x, mask)))
        return nn.functional.normalize(z, dim=-1)

    def forward(
        self, frames: torch.Tensor, states: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """→ (video embeddings (B, E), text embeddings (T, E), logit scale ()).

        The logit scale comes out of ``forward`` (as CLIP's) so that every trained parameter
        is used inside it: DDP marks a parameter first touched after ``forward`` as unused,
        then fails when its gradient arrives. A view, not the parameter itself: DDP finds used
        parameters by walking the outputs' autograd graph, which a bare leaf is not part of."""
        return self.encode_video(frames), self.encode_text(states, mask), self.logit_scale.view(())


def scorer_tiny(**kw) -> VideoTextScorer:
    """Test size."""
    return VideoTextScorer(
        **{"width": 32, "depth": 1, "heads": 2, "embed_dim": 16, "pooling": "max", **kw}
    )


def scorer_s(**kw) -> VideoTextScorer:
    """The shipped Shapes World scorer: width 96, 3 blocks (~1.3 s a 32-clip training step with its text
    on 2 CPU cores)."""
    return VideoTextScorer(**{"width": 96, "depth": 3, "heads": 4, "pooling": "max", **kw})


SCORER_MODELS = {"scorer_tiny": scorer_tiny, "scorer_s": scorer_s}
