"""Positional embeddings shared by the video models (thin wrappers over diffusers')."""

from __future__ import annotations

import functools

import torch
from diffusers.models.embeddings import get_1d_sincos_pos_embed_from_grid, get_2d_sincos_pos_embed


def spatial_pos_embed(height: int, width: int, dim: int) -> torch.Tensor:
    """2-D sin-cos embedding (MAE/DiT) for an ``height × width`` token grid → (height·width, dim).

    ``base_size=height`` keeps the grid in token units, so a 16×16 latent and a crop of it
    share coordinates.
    """
    if height != width:
        # diffusers' helper takes a (h, w) grid; positions stay in token units either way.
        return get_2d_sincos_pos_embed(dim, (height, width), base_size=max(height, width)).float()
    return get_2d_sincos_pos_embed(dim, height, base_size=height).float()


def temporal_pos_embed(num_frames: int, dim: int, offset: float = 0.0) -> torch.Tensor:
    """1-D sin-cos embedding of frame indices ``offset … offset + num_frames - 1`` → (F, dim)."""
    positions = torch.arange(num_frames, dtype=torch.float64) + offset
    return get_1d_sincos_pos_embed_from_grid(dim, positions).float()


@functools.lru_cache(maxsize=32)
def clip_pos_embed(
    frames: int, height: int, width: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spatial embedding (height·width, dim) and its sum with the temporal one for every
    frame, (frames, height·width, dim): one addition to the clip's tokens instead of two.
    Computed once per shape (the denoising loop asks for the same one at every step); the
    tensors are shared, so do not modify them in place."""
    with torch.inference_mode(False):  # usable later with autograd too
        spatial = spatial_pos_embed(height, width, dim)
        return spatial, temporal_pos_embed(frames, dim)[:, None] + spatial[None]
