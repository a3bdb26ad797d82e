"""Attention building blocks: processor choice and 3-D window partitioning.

Modules own the weights (diffusers' :class:`Attention`); processors own the math. SDPA is
the default everywhere; xformers' memory-efficient kernel is used only when it is
installed *and* the model runs on CUDA (it has no CPU kernels worth using).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import (
    Attention,
    AttnProcessor2_0,
    XFormersAttnProcessor,
)
from diffusers.models.embeddings import apply_rotary_emb, get_1d_rotary_pos_embed

__all__ = [
    "Attention",
    "default_processor",
    "xformers_available",
    "window_partition",
    "window_reverse",
    "WindowCrossAttention",
    "RotaryAttnProcessor",
    "rotary_3d",
]


def xformers_available() -> bool:
    return importlib.util.find_spec("xformers") is not None


def default_processor(device: torch.device | str | None = None, qk_norm: bool = False):
    """SDPA by default; xformers when installed and ``device`` is CUDA.

    ``qk_norm``: the module normalises queries and keys (``norm_q``/``norm_k``). diffusers'
    ``XFormersAttnProcessor`` skips those norms, so such modules always get SDPA (whose CUDA
    kernels are memory-efficient too) rather than silently computing another function.
    """
    if qk_norm:
        return AttnProcessor2_0()
    if device is not None and torch.device(device).type == "cuda" and xformers_available():
        return XFormersAttnProcessor()
    return AttnProcessor2_0()


class RotaryAttnProcessor:
    """SDPA self-attention with rotary positions (RoPE, Su et al. 2021) on queries and keys,
    after their norms: ``rotary_emb`` = (cos, sin), each (S, head_dim), from
    :func:`rotary_3d`. The score of two tokens then depends on their relative position, so a
    query can ask for "the token k frames back and j columns left" whatever its own place."""

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


def rotary_3d(
    frames: int, height: int, width: int, head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (frames·height·width, head_dim), for tokens in (frame, row, column)
    order: the head's channels split between time (a quarter) and the two spatial axes (the
    rest, half each), each axis a 1-D RoPE of its integer coordinate (diffusers' helper)."""
    t_dim = 2 * (head_dim // 8)
    s_dim = 2 * ((head_dim - t_dim) // 4)
    t_dim = head_dim - 2 * s_dim
    if min(t_dim, s_dim) < 2:
        raise ValueError(f"head_dim {head_dim} is too small for 3-D rotary positions")
    axes = [
        get_1d_rotary_pos_embed(dim, n, theta=theta, use_real=True, repeat_interleave_real=True)
        for dim, n in ((t_dim, frames), (s_dim, height), (s_dim, width))
    ]  # each (cos, sin) of (n, dim)
    grid = torch.stack(
        torch.meshgrid(
            torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij"
        ),
        dim=-1,
    ).reshape(-1, 3)  # (S, 3)
    cos = torch.cat([axes[a][0][grid[:, a]] for a in range(3)], dim=-1)
    sin = torch.cat([axes[a][1][grid[:, a]] for a in range(3)], dim=-1)
    return cos, sin


def _pad_to(x: torch.Tensor, dim: int, multiple: int) -> torch.Tensor:
    pad = (-x.shape[dim]) % multiple
    if pad == 0:
        return x
    shape = list(x.shape)
    shape[dim] = pad
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def window_partition(
    x: torch.Tensor, window: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int, int]]:
    """Split a token grid into non-overlapping 3-D windows (Swin/VideoFactory).

    x: (B, F, H, W, D) → windows (B·nW, wt·wh·ww, D), a key-padding bias (B·nW, 1, wt·wh·ww)
    or None when no padding was needed, and the padded grid size (Fp, Hp, Wp).
    Windows larger than the grid shrink to it, so images (F = 1) get 1-frame windows.
    """
    b, f, h, w, d = x.shape
    wt, wh, ww = min(window[0], f), min(window[1], h), min(window[2], w)
    valid = torch.ones(1, f, h, w, 1, dtype=x.dtype, device=x.device)
    for dim, m in ((1, wt), (2, wh), (3, ww)):
        x = _pad_to(x, dim, m)
        valid = _pad_to(valid, dim, m)
    fp, hp, wp = x.shape[1:4]

    def split(t: torch.Tensor) -> torch.Tensor:
        bb = t.shape[0]
        t = t.reshape(bb, fp // wt, wt, hp // wh, wh, wp // ww, ww, t.shape[-1])
        t = t.permute(0, 1, 3, 5, 2, 4, 6, 7)  # (B, nF, nH, nW, wt, wh, ww, D)
        return t.reshape(-1, wt * wh * ww, t.shape[-1])

    windows = split(x)
    bias = None
    if (fp, hp, wp) != (f, h, w):
        keep = split(valid).squeeze(-1)  # (nW, Nw) for one sample
        bias = torch.zeros_like(keep).masked_fill(keep == 0, float("-inf"))
        bias = bias.repeat(b, 1).unsqueeze(1)  # (B·nW, 1, Nw)
    return windows, bias, (wt, wh, ww)


def window_reverse(
    windows: torch.Tensor, window: tuple[int, int, int], shape: tuple[int, int, int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B·nW, Nw, D) → (B, F, H, W, D), padding cropped."""
    b, f, h, w = shape
    wt, wh, ww = window
    fp, hp, wp = -(-f // wt) * wt, -(-h // wh) * wh, -(-w // ww) * ww
    d = windows.shape[-1]
    x = windows.reshape(b, fp // wt, hp // wh, wp // ww, wt, wh, ww, d)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, fp, hp, wp, d)
    return x[:, :f, :h, :w]


class WindowCrossAttention(torch.nn.Module):
    """Cross-attention inside 3-D windows: queries from one branch, keys/values from another.

    This is VideoFactory's *swapped* spatial–temporal cross-attention: within each
    (t × h × w) window, tokens of the query branch attend to the tokens of the other
    branch, so appearance (spatial branch) and motion (temporal branch) exchange
    information locally in space-time at the cost of a small window attention.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, window: tuple[int, int, int]):
        super().__init__()
        self.window = tuple(window)
        self.attn = Attention(
            query_dim=dim, cross_attention_dim=dim, heads=heads, dim_head=head_dim, bias=True
        )

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """query, context: (B, F, H, W, D) → (B, F, H, W, D)."""
        b, f, h, w, _ = query.shape
        q_win, bias, win = window_partition(query, self.window)  # (B·nW, Nw, D)
        kv_win, _, _ = window_partition(context, self.window)  # (B·nW, Nw, D)
        out = self.attn(q_win, encoder_hidden_states=kv_win, attention_mask=bias)
        return window_reverse(out, win, (b, f, h, w))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of ``x`` (B, L, D) where ``mask`` (B, L) is 1 → (B, D)."""
    mask = mask.to(x.dtype).unsqueeze(-1)
    return (x * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def mask_to_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Key-padding mask (B, L) of 1 = keep → additive bias (B, 1, L) for the processors."""
    return (
        torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        .masked_fill(mask == 0, float("-inf"))
        .unsqueeze(1)
    )
