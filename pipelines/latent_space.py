"""The latent space: one interface over a frame-wise 2-D VAE and diffusers' 3-D causal VAEs.

The pipeline and the trainers see a VAE only through :class:`LatentSpace`: pixels
``(B, F, 3, H, W)`` in [-1, 1] ↔ normalised latents ``(B, C, f, h, w)``, each model with its
own normalisation (as diffusers' own pipelines apply it), and the frame arithmetic between
pixel frames ``F`` and latent frames ``f``.

* ``AutoencoderKL`` (frame-wise, the shipped default): ``f = F``, any ``F``;
  ``z = (mean − shift_factor) · scaling_factor``.
* ``AutoencoderKLWan`` (Wan 2.1/2.2): causal 3-D convolutions; the encoder reads frame 0
  alone, then chunks of 4 frames, so ``F = 1 + 4k``; ``f = 1 + (F − 1) / T`` with
  ``T = 2^(temporal downsamplings)``; ``z = (mean − latents_mean) / latents_std`` per channel.
* ``AutoencoderKLLTXVideo`` (LTX-Video): causal encoder, ``F = 1 + k·T``;
  ``z = (mean − latents_mean) · scaling_factor / latents_std`` (its buffers); a decoder with
  timestep conditioning decodes at timestep 0 (the LTX pipeline's default).
* ``AutoencoderKLCogVideoX``: ``z = (mean − shift_factor) · scaling_factor``. Its decoder
  upsamples time by keeping the first latent frame apart only when the latent count is
  odd (an even count decodes to ``T·f`` frames, not ``1 + T·(f − 1)``), so clips have
  ``F = 1 + 2T·k`` frames (an odd latent count). Its GroupNorms pool statistics over the
  frames encoded together, so it is **not** causal: the first latent frame of a clip is not
  the encoding of frame 0 alone.

Causal VAEs (every 2-D VAE, Wan, LTX) make three things exact that the pipeline and the
trainers rely on: the latents of a clip's first ``1 + k·T`` frames are the first ``k + 1``
latent frames of the clip, the first of them the encoding of frame 0 alone (an image), so
conditioning frames, image-first sampling and clip prefixes cut from cached latents all mean
what they say. Time reversal and windows that start past frame 0 are exact only frame-wise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLCogVideoX,
    AutoencoderKLLTXVideo,
    AutoencoderKLWan,
)

# the VAE classes a latent space is built on, by the ``_class_name`` of their config.json
VAE_CLASSES: dict[str, type] = {
    "AutoencoderKL": AutoencoderKL,
    "AutoencoderKLWan": AutoencoderKLWan,
    "AutoencoderKLCogVideoX": AutoencoderKLCogVideoX,
    "AutoencoderKLLTXVideo": AutoencoderKLLTXVideo,
}
AnyVAE = Union[AutoencoderKL, AutoencoderKLWan, AutoencoderKLCogVideoX, AutoencoderKLLTXVideo]  # noqa: UP007

WAN_ENCODER_CHUNK = 4  # AutoencoderKLWan._encode reads frame 0, then 4 frames at a time
DECODE_CHUNK = 32  # frames per decoder call of a frame-wise VAE


def vae_class(name: str) -> type:
    """The diffusers class of a VAE config's ``_class_name``; ValueError for any other."""
    if name not in VAE_CLASSES:
        raise ValueError(f"unsupported VAE class {name!r}; supported: {sorted(VAE_CLASSES)}")
    return VAE_CLASSES[name]


def read_vae_class(spec: str | Path, subfolder: str | None = None) -> type:
    """The class named by the ``_class_name`` of a VAE folder's (or hub id's) config.json."""
    config = AutoencoderKL.load_config(str(spec), subfolder=subfolder)
    return vae_class(config.get("_class_name", "AutoencoderKL"))


class LatentSpace:
    """Pixels ↔ normalised latents through ``vae``, and the frame arithmetic between them.

    Attributes:
        kind: ``"frames"`` (2-D, frame by frame), ``"wan"``, ``"cogvideox"`` or ``"ltx"``.
        spatial_scale: pixels per latent side.
        temporal_scale: ``T``, pixel frames per latent frame after the first.
        frame_step: clip lengths are ``1 + k·frame_step`` (1: any length).
        causal: whether a latent frame depends only on its own and earlier pixel frames.
        channels: latent channels ``C``.
    """

    def __init__(self, vae: AnyVAE):
        self.vae = vae
        config = vae.config
        if isinstance(vae, AutoencoderKLWan):
            self.kind = "wan"
            self.spatial_scale = 2 ** (len(config.dim_mult) - 1) * (config.patch_size or 1)
            self.temporal_scale = 2 ** sum(bool(d) for d in config.temperal_downsample)
            if WAN_ENCODER_CHUNK % self.temporal_scale:
                raise ValueError(
                    f"AutoencoderKLWan with temporal compression {self.temporal_scale} is not "
                    f"supported: its encoder reads {WAN_ENCODER_CHUNK} frames at a time "
                    "(compression 1, 2 or 4 fits)"
                )
            self.frame_step = WAN_ENCODER_CHUNK
            self.causal = True
            self.channels = config.z_dim
        elif isinstance(vae, AutoencoderKLCogVideoX):
            self.kind = "cogvideox"
            self.spatial_scale = 2 ** (len(config.block_out_channels) - 1)
            self.temporal_scale = int(config.temporal_compression_ratio)
            if self.temporal_scale not in (1, 2, 4):
                raise ValueError(
                    "AutoencoderKLCogVideoX with temporal_compression_ratio "
                    f"{config.temporal_compression_ratio} is not supported (1, 2 or 4 are)"
                )
            # an even latent count decodes to T·f frames: keep it odd
            self.frame_step = 2 * self.temporal_scale if self.temporal_scale > 1 else 1
            self.causal = False  # GroupNorm statistics span the frames encoded together
            self.channels = config.latent_channels
        elif isinstance(vae, AutoencoderKLLTXVideo):
            self.kind = "ltx"
            self.spatial_scale = int(vae.spatial_compression_ratio)
            self.temporal_scale = int(vae.temporal_compression_ratio)
            self.frame_step = self.temporal_scale
            self.causal = bool(config.encoder_causal)
            self.channels = config.latent_channels
        elif isinstance(vae, AutoencoderKL):
            self.kind = "frames"
            self.spatial_scale = 2 ** (len(config.block_out_channels) - 1)
            self.temporal_scale = self.frame_step = 1
            self.causal = True
            self.channels = config.latent_channels
        else:
            raise ValueError(
                f"unsupported VAE {type(vae).__name__}; supported: {sorted(VAE_CLASSES)}"
            )

    def __repr__(self) -> str:
        return (
            f"LatentSpace({type(self.vae).__name__}: {self.spatial_scale}× space, "
            f"{self.temporal_scale}× time, clips of 1 + k·{self.frame_step} frames)"
        )

    # -- frames -----------------------------------------------------------------------------
    @property
    def frame_wise(self) -> bool:
        """Each frame encoded alone: windows anywhere in a clip and time reversal are exact."""
        return self.kind == "frames"

    def valid_frames(self, num_frames: int) -> bool:
        return num_frames >= 1 and (num_frames - 1) % self.frame_step == 0

    def nearest_frames(self, num_frames: int) -> tuple[int, int]:
        """The valid counts just below (at least 1) and just above ``num_frames``."""
        k = max(0, (num_frames - 1) // self.frame_step)
        below = 1 + k * self.frame_step
        return below, below + self.frame_step if below < num_frames else below

    def frames_at_most(self, num_frames: int) -> int:
        """The longest valid clip length ≤ ``num_frames`` (≥ 1)."""
        return self.nearest_frames(max(1, num_frames))[0]

    def check_frames(self, num_frames: int, what: str = "num_frames") -> None:
        """ValueError naming the nearest valid counts when ``num_frames`` is not one."""
        if self.valid_frames(num_frames):
            return
        below, above = self.nearest_frames(num_frames)
        raise ValueError(
            f"{what} must be 1 + k·{self.frame_step} with {type(self.vae).__name__} "
            f"(temporal compression {self.temporal_scale}): got {num_frames}, the nearest "
            f"valid counts are {below} and {above}"
        )

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a ``num_frames``-frame clip (ValueError for an invalid count)."""
        self.check_frames(num_frames)
        return 1 + (num_frames - 1) // self.temporal_scale

    def pixel_frames(self, latent_frames: int) -> int:
        """Pixel frames ``latent_frames`` latent frames decode to."""
        if latent_frames < 1:
            raise ValueError(f"latent_frames must be >= 1, got {latent_frames}")
        return 1 + (latent_frames - 1) * self.temporal_scale

    def given_latent_frames(self, given_frames: int) -> int:
        """Latent frames wholly determined by a clip's first ``given_frames`` pixel frames
        (latent frame i ≥ 1 covers pixel frames 1 + T·(i − 1) … T·i); 0 for none."""
        return 0 if given_frames < 1 else 1 + (given_frames - 1) // self.temporal_scale

    # -- normalisation ----------------------------------------------------------------------
    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(mean, scale) with z_normalised = (z − mean) · scale, broadcast to (B, C, f, h, w)."""
        config, view = self.vae.config, (1, -1, 1, 1, 1)
        if self.kind == "wan":
            mean = torch.tensor(config.latents_mean, dtype=z.dtype, device=z.device).view(view)
            std = torch.tensor(config.latents_std, dtype=z.dtype, device=z.device).view(view)
            return mean, 1.0 / std
        if self.kind == "ltx":
            mean = self.vae.latents_mean.to(z).view(view)
            std = self.vae.latents_std.to(z).view(view)
            return mean, config.scaling_factor / std
        return config.shift_factor or 0.0, config.scaling_factor

    # -- encode / decode --------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, F, 3, H, W) in [-1, 1] → normalised posterior means (B, C, f, h, w)
        float32, on the VAE's device."""
        vae = self.vae
        b, f = pixels.shape[:2]
        if self.kind == "frames":
            flat = pixels.reshape(b * f, *pixels.shape[2:]).to(vae.device, vae.dtype)
            z = vae.encode(flat).latent_dist.mean.float()  # (B·F, C, h, w)
            shift, scale = self._stats(z)
            z = (z - shift) * scale
            return z.reshape(b, f, *z.shape[1:]).permute(0, 2, 1, 3, 4)
        self.check_frames(f, "frames to encode")
        x = pixels.permute(0, 2, 1, 3, 4).to(vae.device, vae.dtype)  # (B, 3, F, H, W)
        z = vae.encode(x).latent_dist.mean.float()  # (B, C, f, h, w)
        if z.shape[2] != self.latent_frames(f):  # the arithmetic above must match the model
            raise RuntimeError(
                f"{type(vae).__name__} encoded {f} frames to {z.shape[2]} latent frames, "
                f"expected {self.latent_frames(f)}"
            )
        mean, scale = self._stats(z)
        return (z - mean) * scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, f, h, w) → pixels (B, F, 3, H, W) float32 in [0, 1]."""
        vae = self.vae
        b, c, f, h, w = latents.shape
        if self.kind == "frames":
            z = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # (B·F, C, h, w)
            shift, scale = self._stats(z)
            z = z / scale + shift
            frames = torch.cat(
                [
                    vae.decode(z[i : i + DECODE_CHUNK].to(vae.dtype)).sample
                    for i in range(0, z.shape[0], DECODE_CHUNK)
                ]
            )
            frames = (frames.float() / 2 + 0.5).clamp(0, 1)
            return frames.reshape(b, f, *frames.shape[1:])
        if self.frame_step > self.temporal_scale and f % 2 == 0:
            raise ValueError(
                f"{type(vae).__name__} decodes an odd number of latent frames; got {f}"
            )
        z = latents.to(vae.device, torch.float32)
        mean, scale = self._stats(z)
        z = (z / scale + mean).to(vae.dtype)
        clips = []
        for i in range(b):  # one clip at a time: a 3-D decoder's activations are large
            kwargs = {}
            if self.kind == "ltx" and vae.config.timestep_conditioning:
                kwargs["temb"] = torch.zeros(1, device=vae.device, dtype=vae.dtype)
            clips.append(vae.decode(z[i : i + 1], **kwargs).sample)  # (1, 3, F, H, W)
        video = torch.cat(clips).permute(0, 2, 1, 3, 4)  # (B, F, 3, H, W)
        return (video.float() / 2 + 0.5).clamp(0, 1)
