"""Attention building blocks: processor choice and 3-D window partitioning.

Modules own the weights (diffusers' :class:`Attention`); processors own the math. SDPA is
the default everywhere (:class:`SDPAProcessor`); xformers' memory-efficient kernel is used
only when it is installed *and* the model runs on CUDA (it has no CPU kernels worth using).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention as _DiffusersAttention
from diffusers.models.attention_processor import XFormersAttnProcessor
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from diffusers.models.normalization import RMSNorm
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "Attention",
    "SDPAProcessor",
    "default_processor",
    "linear",
    "apply_linear",
    "is_plain_linear",
    "xformers_available",
    "window_partition",
    "window_reverse",
    "WindowCrossAttention",
    "rotary_3d",
    "cached_rotary_3d",
]


def xformers_available() -> bool:
    return importlib.util.find_spec("xformers") is not None


def default_processor(
    device: torch.device | str | None = None, qk_norm: bool = False, rotary: bool = False
):
    """SDPA (:class:`SDPAProcessor`) by default; xformers when installed and ``device`` is CUDA.

    ``qk_norm``: the module normalises queries and keys (``norm_q``/``norm_k``); ``rotary``: it
    takes rotary positions. diffusers' ``XFormersAttnProcessor`` does neither, so such modules
    always get SDPA (whose CUDA kernels are memory-efficient too) rather than silently
    computing another function.
    """
    if qk_norm or rotary:
        return SDPAProcessor()
    if device is not None and torch.device(device).type == "cuda" and xformers_available():
        return XFormersAttnProcessor()
    return SDPAProcessor()


@functools.cache
def _processor_kwargs(processor_type: type) -> frozenset[str]:
    return frozenset(inspect.signature(processor_type.__call__).parameters)


class Attention(_DiffusersAttention):
    """diffusers' ``Attention`` — the same submodules under the same names (``to_q``, ``to_k``,
    ``to_v``, ``to_out.0``, ``norm_q``, ``norm_k``), so checkpoints and LoRA adapters that
    target them are unchanged — with :class:`SDPAProcessor` as its default processor and a
    lighter ``forward``: diffusers inspects the processor's signature on every call to drop
    keyword arguments it does not take; here that is looked up once per processor class."""

    def __init__(self, *args, processor=None, **kwargs):
        super().__init__(*args, processor=processor or SDPAProcessor(), **kwargs)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if kwargs:
            accepted = _processor_kwargs(type(self.processor))
            unused = [k for k in kwargs if k not in accepted]
            if unused:
                logger.warning(
                    "%s ignores %s", type(self.processor).__name__, ", ".join(sorted(unused))
                )
                kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        return self.processor(
            self,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            **kwargs,
        )


# oneDNN's linear with the bias and an activation fused into the matrix product (the kernel
# inductor emits on CPU); eager PyTorch adds the bias in a separate pass and its tanh-GELU is
# slow on CPU (about half the cost of the 192 → 768 product that feeds it).
_ONEDNN_LINEAR = (
    getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if torch.backends.mkldnn.is_available()
    else None
)


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: bool = False
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, then GELU (tanh approximation) when ``gelu``, as one oneDNN
    kernel on CPU where nothing needs gradients (inference); otherwise, and on other devices,
    the plain ops. Under CPU autocast it casts to the autocast dtype as ``F.linear`` would."""
    if (
        _ONEDNN_LINEAR is not None
        and torch.backends.mkldnn.enabled
        and x.device.type == "cpu"
        and not torch.compiler.is_compiling()  # inductor fuses itself, and lowers this op
        # only for constant weights
        and not (
            torch.is_grad_enabled()
            and any(t is not None and t.requires_grad for t in (x, weight, bias))
        )
    ):
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        if x.dtype in (torch.float32, torch.bfloat16) and all(
            t is None or t.dtype == x.dtype for t in (weight, bias)
        ):
            try:
                if gelu:
                    return _ONEDNN_LINEAR(x, weight, bias, "gelu", [], "tanh")
                return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
            except RuntimeError:  # a layout or build oneDNN does not take: the plain ops
                pass
    out = F.linear(x, weight, bias)
    return F.gelu(out, approximate="tanh") if gelu else out


def is_plain_linear(layer: nn.Module) -> bool:
    """A bare ``nn.Linear`` whose weights may be used directly: not LoRA-wrapped (peft
    replaces the layer), and without hooks (e.g. diffusers' leaf-level offloading), which
    calling the layer would run."""
    return type(layer) is nn.Linear and not (layer._forward_hooks or layer._forward_pre_hooks)


def apply_linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)``, through :func:`linear` when ``layer`` is a plain ``nn.Linear`` (a LoRA- or
    otherwise wrapped or hooked layer runs its own forward)."""
    if is_plain_linear(layer):
        return linear(x, layer.weight, layer.bias)
    return layer(x)


def _fused_linear(attn: nn.Module, names: tuple[str, ...], x: torch.Tensor) -> torch.Tensor | None:
    """``cat([attn.<name>(x) for name in names], -1)`` from one matrix product over the
    concatenated weights, or None when a projection is not a plain ``nn.Linear`` (a LoRA-wrapped
    or hooked one must run its own layer: :func:`is_plain_linear`). The weights are concatenated on every call (a few per cent of
    the product's time at width 192) rather than cached: a cache keyed on the weights' version
    counters would miss in-place writes through ``.data``, which is how diffusers'
    ``EMAModel.copy_to`` puts EMA weights in; and concatenating inside the graph lets training
    reach each projection's own weights."""
    layers = [getattr(attn, name) for name in names]
    if not all(is_plain_linear(layer) for layer in layers):
        return None
    biases = [layer.bias for layer in layers]
    if any(b is None for b in biases) and not all(b is None for b in biases):
        return None
    weight = torch.cat([layer.weight for layer in layers])
    bias = None if biases[0] is None else torch.cat(biases)
    return linear(x, weight, bias)


def _is_head_rms_norm(norm: nn.Module | None, head_dim: int) -> bool:
    return (
        type(norm) is RMSNorm
        and norm.dim == (head_dim,)
        and norm.weight is not None
        and norm.bias is None
    )


def _rms_rope(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    rotary: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """diffusers' ``RMSNorm`` (fp32 statistics, then the per-channel weight) of x (…, S, G, H,
    hd) — G stacked tensors (q and k) sharing one pass, ``weight`` (G, 1, hd) — followed by
    RoPE in diffusers' interleaved-pair convention (``apply_rotary_emb`` with
    ``use_real=True``): ``rotary`` = (cos, sin), each (S, hd). Returns fp32 (…, S, G, H, hd),
    in the reference's dtype: 3 full-size kernels for the norm, 5 with RoPE, where the
    reference runs 6 per norm and 5 per RoPE, each for q and k separately."""
    hd = x.shape[-1]
    # the reference's output dtype: its weight's if half precision, else fp32
    out_dtype = weight.dtype if weight.dtype in (torch.float16, torch.bfloat16) else torch.float32
    x = x.float()  # one cast up front (bf16 autocast): mixed-dtype kernels are slow on CPU
    # rsqrt(mean(x²) + eps) from one reduction over the head channels
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    inv = torch.rsqrt(norm.square() / hd + eps)  # (…, S, G, H, 1), small
    weight = weight.float()
    if rotary is None:
        return (x * inv * weight).to(out_dtype)
    # RoPE of y = n ⊙ w, n the normalised x: y·cos + pairs(y)·sin with pairs(y)[2i] = −y[2i+1],
    # pairs(y)[2i+1] = y[2i], i.e. the flipped pair times (−1, +1). The weight and the sign
    # fold into the small (S, G, 1, hd) tables, which leaves 4 full-size kernels after the
    # reduction: n, flip(n), n·cos_w and + flip(n)·sin_w.
    cos, sin = (r.to(device=x.device, dtype=torch.float32)[:, None, None] for r in rotary)
    pair = (hd // 2, 2)
    sign = torch.tensor([-1.0, 1.0], device=x.device)
    cos_w = cos * weight  # (S, G, 1, hd)
    sin_w = (sin.unflatten(-1, pair) * sign * weight.unflatten(-1, pair).flip(-1)).flatten(-2)
    n = x * inv
    flipped = n.unflatten(-1, pair).flip(-1).flatten(-2)
    return torch.addcmul(n * cos_w, flipped, sin_w).to(out_dtype)


class SDPAProcessor:
    """torch SDPA for :class:`Attention` — self- or cross-attention, optional q/k RMS norms,
    optional rotary positions (``rotary_emb`` = (cos, sin) from :func:`rotary_3d`) — the
    function of diffusers' ``AttnProcessor2_0`` (with RoPE applied to q and k after their norms,
    given ``rotary_emb``) in fewer, larger kernels:

    * q, k, v (k, v for cross-attention) from one matrix product (:func:`_fused_linear`),
      biases added inside the products (:func:`linear`);
    * the q and k RMS norms and RoPE in one pass over q and k together (:func:`_rms_rope`);
    * SDPA reads q, k, v as strided views of that output and writes (B, S, H, hd), so no
      head transposition is copied on either side;
    * a key-padding bias (B, 1, L) broadcasts over heads and queries instead of being
      repeated per head;
    * under CPU autocast the attention runs in fp32, which is faster there than bf16.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if (
            hidden_states.ndim != 3
            or attn.spatial_norm is not None
            or attn.group_norm is not None
            or attn.norm_cross is not None
            or attn.residual_connection
            or attn.rescale_output_factor != 1.0
            or attn.added_kv_proj_dim is not None
            or attn.inner_dim != attn.inner_kv_dim
        ):
            raise ValueError(
                "SDPAProcessor takes (B, S, D) inputs to a plain q/k/v attention (no spatial, "
                "group or cross norms, residual, rescaling, added or grouped k/v projections); "
                f"got {tuple(hidden_states.shape)} for {attn.__class__.__name__}"
            )
        heads = attn.heads
        hd = attn.inner_dim // heads
        self_attn = encoder_hidden_states is None
        if not self_attn and rotary_emb is not None:
            raise ValueError("rotary positions are for self-attention")
        fused_norm = _is_head_rms_norm(attn.norm_q, hd) and _is_head_rms_norm(attn.norm_k, hd)
        if rotary_emb is not None and not fused_norm:
            raise ValueError("rotary positions need the q/k RMS norms (qk_norm='rms_norm')")

        qk = None  # q and k side by side, (B, S, 2, H, hd), when one product made both
        if self_attn:
            qkv = _fused_linear(attn, ("to_q", "to_k", "to_v"), hidden_states)
            if qkv is not None:
                qkv = qkv.unflatten(-1, (3, heads, hd))  # (B, S, 3, H, hd)
                qk, v = qkv[:, :, :2], qkv[:, :, 2]
                q, k = qk.unbind(2)
            else:
                q, k, v = (
                    apply_linear(getattr(attn, name), hidden_states).unflatten(-1, (heads, hd))
                    for name in ("to_q", "to_k", "to_v")
                )
        else:
            q = apply_linear(attn.to_q, hidden_states).unflatten(-1, (heads, hd))
            kv = _fused_linear(attn, ("to_k", "to_v"), encoder_hidden_states)
            if kv is not None:
                k, v = kv.unflatten(-1, (2, heads, hd)).unbind(2)
            else:
                k, v = (
                    apply_linear(getattr(attn, name), encoder_hidden_states).unflatten(
                        -1, (heads, hd)
                    )
                    for name in ("to_k", "to_v")
                )  # (B, L, H, hd)

        if fused_norm:
            weight = torch.stack([attn.norm_q.weight, attn.norm_k.weight])[:, None]  # (2, 1, hd)
            if qk is not None and attn.norm_q.eps == attn.norm_k.eps:
                q, k = _rms_rope(qk, weight, attn.norm_q.eps, rotary_emb).unbind(2)
            else:
                q = _rms_rope(q[:, :, None], weight[:1], attn.norm_q.eps, rotary_emb)[:, :, 0]
                k = _rms_rope(k[:, :, None], weight[1:], attn.norm_k.eps, rotary_emb)[:, :, 0]
        elif attn.norm_q is not None or attn.norm_k is not None:  # other norms: as diffusers
            q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, S, hd)
            if attn.norm_q is not None:
                q = attn.norm_q(q)
            if attn.norm_k is not None:
                k = attn.norm_k(k)
            q, k = q.transpose(1, 2), k.transpose(1, 2)

        if attention_mask is not None and attention_mask.ndim == 3:
            attention_mask = attention_mask.unsqueeze(1)  # (B, 1, 1 | S, L): broadcast over heads
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, S | L, hd)
        if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # CPU flash attention at these head sizes is slower in bf16 than in fp32 (it
            # converts inside), so under autocast the attention itself stays fp32
            with torch.autocast("cpu", enabled=False):
                if attention_mask is not None and attention_mask.dtype != torch.bool:
                    attention_mask = attention_mask.float()  # an additive bias made under autocast
                out = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), attn_mask=attention_mask
                )
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        # out: (B, H, S, hd), stored as (B, S, H, hd). No cast back to q's dtype as diffusers
        # does: under autocast the output projection casts again.
        out = out.transpose(1, 2).flatten(2)  # (B, S, D)
        return attn.to_out[1](apply_linear(attn.to_out[0], out))


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


@functools.lru_cache(maxsize=16)
def cached_rotary_3d(
    frames: int, height: int, width: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rotary_3d`, computed once per shape (the denoising loop asks for the same one at
    every step). Shared tensors: do not modify them in place."""
    with torch.inference_mode(False):  # usable later with autograd too
        return rotary_3d(frames, height, width, head_dim)


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
    fp, hp, wp = -(-f // wt) * wt, -(-h // wh) * wh, -(-w // ww) * ww
    valid = None
    if (fp, hp, wp) != (f, h, w):
        valid = torch.ones(1, f, h, w, 1, dtype=x.dtype, device=x.device)
        for dim, m in ((1, wt), (2, wh), (3, ww)):
            x = _pad_to(x, dim, m)
            valid = _pad_to(valid, dim, m)

    def split(t: torch.Tensor) -> torch.Tensor:
        bb = t.shape[0]
        t = t.reshape(bb, fp // wt, wt, hp // wh, wh, wp // ww, ww, t.shape[-1])
        t = t.permute(0, 1, 3, 5, 2, 4, 6, 7)  # (B, nF, nH, nW, wt, wh, ww, D)
        return t.reshape(-1, wt * wh * ww, t.shape[-1])

    windows = split(x)
    bias = None
    if valid is not None:
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
