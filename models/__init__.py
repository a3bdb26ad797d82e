"""Torch modules only (no I/O). Exported names are what diffusers' loaders resolve from
``model_index.json`` entries like ``["models", "VideoDiT"]``."""

from .video_dit import VIDEO_DIT_MODELS, VideoDiT, VideoDiTOutput

__all__ = ["VideoDiT", "VideoDiTOutput", "VIDEO_DIT_MODELS"]
