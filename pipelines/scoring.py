"""Text–video alignment scores with any transformers CLIP or X-CLIP.

- **CLIPSIM** (Wu et al., GODIVA 2021; NÜWA): the cosine between CLIP's image embedding of
  each frame and its text embedding of the caption, averaged over frames. Reported as the raw
  cosine (papers often print it ×100).
- **CLIPScore** (Hessel et al. 2021): ``w · max(cos, 0)`` with ``w = 2.5``, per frame, averaged.
- **X-CLIP** (Ni et al. 2022): one video embedding from frames sampled uniformly to the
  model's frame count, against its video-conditioned text embedding; the score is their cosine.

A per-frame average cannot tell "moving left" from "moving right" (the same frames reversed
score the same); X-CLIP's temporal transformer can, in principle. Each scorer takes uint8
frames ``(F, H, W, 3)`` and a caption; the processor does the resizing and normalisation the
model was trained with.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

CLIPSCORE_W = 2.5


@dataclass
class ScoreResult:
    score: float  # the scorer's number (CLIPSIM: mean cosine over frames)
    frame_scores: list[float] = field(default_factory=list)  # per-frame cosines (CLIP scorers)
    clipscore: float | None = None  # CLIPScore, w · max(cos, 0) averaged (CLIP scorers)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be (F > 0, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    return frames


def _load(path_or_id: str | Path, expected: tuple[str, ...]):
    """Config first, so a folder holding another model type fails with a clear message."""
    from transformers import AutoConfig, AutoModel, AutoProcessor
    from transformers.utils import logging as hf_logging

    from .components import NO_REMOTE_CODE, refuse_remote_code

    refuse_remote_code(path_or_id, "scorer")
    local = Path(str(path_or_id)).expanduser()
    if local.exists():  # a folder here wins over a hub id spelt the same
        path_or_id = local
    elif str(path_or_id).startswith(("/", ".", "~")):
        # a path, not a hub id: say so, not the hub's "repo id must use alphanumeric chars"
        raise ValueError(f"cannot load a scorer from {path_or_id}: no such folder")
    try:
        config = AutoConfig.from_pretrained(str(path_or_id), **NO_REMOTE_CODE)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot load a scorer from {path_or_id}: {first}") from None
    if config.model_type not in expected:
        raise ValueError(
            f"{path_or_id} is a {config.model_type!r} model; this scorer needs one of {expected}"
        )
    hf_logging.disable_progress_bar()  # no "Loading weights" bar under `--quiet`
    model = AutoModel.from_pretrained(str(path_or_id), **NO_REMOTE_CODE).eval()
    processor = AutoProcessor.from_pretrained(str(path_or_id), **NO_REMOTE_CODE)
    return model, processor


class _TextTruncation:
    """Captions beyond the tokenizer's limit are cut, with a warning naming the caption."""

    def _warn_long(self, captions: list[str], tok) -> None:
        limit = self.max_text_tokens
        for c in captions:
            n = len(tok(c)["input_ids"])
            if n > limit:
                warnings.warn(
                    f"caption of {n} tokens truncated to the tokenizer's limit {limit}: {c[:60]!r}…",
                    stacklevel=4,
                )

    def _tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        tok = self.processor.tokenizer
        self._warn_long(captions, tok)
        limit = self.max_text_tokens
        return tok(captions, padding=True, truncation=True, max_length=limit, return_tensors="pt")


class ClipSimScorer(_TextTruncation):
    """CLIPSIM and CLIPScore with a transformers ``CLIPModel`` (local folder or hub id)."""

    name = "clipsim"

    def __init__(self, model, processor, device: str = "cpu", batch_frames: int = 64):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.batch_frames = batch_frames
        self.max_text_tokens = model.config.text_config.max_position_embeddings

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, device: str = "cpu") -> ClipSimScorer:
        return cls(*_load(path_or_id, ("clip",)), device=device)

    @torch.no_grad()
    def text_embeds(self, captions: list[str]) -> torch.Tensor:
        inputs = {k: v.to(self.device) for k, v in self._tokenize(captions).items()}
        out = self.model.get_text_features(**inputs)
        out = getattr(out, "pooler_output", out)  # transformers 5 returns an output object
        return torch.nn.functional.normalize(out.float(), dim=-1)

    @torch.no_grad()
    def frame_embeds(self, frames: np.ndarray) -> torch.Tensor:
        frames = _check_frames(frames)
        chunks = []
        for i in range(0, len(frames), self.batch_frames):
            pix = self.processor.image_processor(
                images=list(frames[i : i + self.batch_frames]), return_tensors="pt"
            )["pixel_values"].to(self.device)
            out = self.model.get_image_features(pixel_values=pix)
            chunks.append(getattr(out, "pooler_output", out).float())
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    def score(self, frames: np.ndarray, caption: str) -> ScoreResult:
        cos = (self.frame_embeds(frames) @ self.text_embeds([caption])[0]).tolist()
        return ScoreResult(
            score=float(np.mean(cos)),
            frame_scores=[float(c) for c in cos],
            clipscore=float(np.mean([CLIPSCORE_W * max(c, 0.0) for c in cos])),
        )


class XClipScorer(_TextTruncation):
    """Video–text cosine with a transformers ``XCLIPModel`` (local folder or hub id)."""

    name = "xclip"

    def __init__(self, model, processor, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.num_frames = model.config.vision_config.num_frames
        self.max_text_tokens = model.config.text_config.max_position_embeddings

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, device: str = "cpu") -> XClipScorer:
        return cls(*_load(path_or_id, ("xclip",)), device=device)

    def sample_indices(self, n: int) -> np.ndarray:
        """``num_frames`` indices spread evenly over ``n`` frames (repeats when n is short)."""
        return np.linspace(0, n - 1, self.num_frames).round().astype(int)

    @torch.no_grad()
    def score(self, frames: np.ndarray, caption: str) -> ScoreResult:
        frames = _check_frames(frames)
        clip = list(frames[self.sample_indices(len(frames))])
        pix = self.processor.image_processor(images=clip, return_tensors="pt")["pixel_values"]
        if pix.ndim == 4:  # an image processor gives (F, 3, H, W); a video one (1, F, 3, H, W)
            pix = pix[None]
        text = self._tokenize([caption])
        out = self.model(
            pixel_values=pix.to(self.device),  # (1, F, 3, H, W)
            input_ids=text["input_ids"].to(self.device),
            attention_mask=text["attention_mask"].to(self.device),
        )
        cos = out.logits_per_video[0, 0] / self.model.logit_scale.exp()
        return ScoreResult(score=float(cos))


def frames_to_tensor(frames: np.ndarray, num_frames: int, side: int) -> torch.Tensor:
    """uint8 (F, H, W, 3) → (F', 3, side, side) in [-1, 1]: ``num_frames`` frames spread
    evenly over the clip (a 1-frame input stays one frame: an image), area-resized."""
    n = num_frames if len(frames) > 1 else 1
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    x = torch.from_numpy(np.ascontiguousarray(frames[idx])).permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (side, side):
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="area")
    return x / 127.5 - 1.0


class VideoTextScorer(_TextTruncation):
    """The project's own video–text model (``models.video_text_scorer``) with its frozen
    text encoder: the default scorer (``studio/default_scorer``), trained on Shapes World by
    ``studio train scorer``. Unlike a per-frame average it reads the frames in order, so it
    can tell "moving left" from "moving right"."""

    name = "shapes"

    def __init__(self, model, text_encoder, tokenizer, device: str = "cpu", batch: int = 64):
        self.model = model.to(device).eval()
        self.text_encoder = text_encoder.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.batch = batch
        self.max_text_tokens = min(64, getattr(tokenizer, "model_max_length", 64) or 64)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu") -> VideoTextScorer:
        from models.video_text_scorer import VideoTextScorer as Model

        from .components import load_text_encoder

        path = Path(path)
        config = path / "config.json"
        if not config.is_file():
            raise ValueError(f"cannot load a scorer from {path}: no config.json there")
        name = json.loads(config.read_text()).get("_class_name")
        if name != Model.__name__:
            raise ValueError(f"{path} holds a {name!r}; this scorer needs a {Model.__name__!r}")
        model = Model.from_pretrained(str(path), use_safetensors=True)
        text_encoder, tokenizer = load_text_encoder(model.config.text_encoder)
        return cls(model, text_encoder, tokenizer, device=device)

    # -- inputs --------------------------------------------------------------------------------
    def frames_to_tensor(self, frames: np.ndarray) -> torch.Tensor:
        c = self.model.config
        return frames_to_tensor(_check_frames(frames), c.num_frames, c.image_size)

    # -- embeddings ----------------------------------------------------------------------------
    @torch.no_grad()
    def text_embeds(self, captions: list[str]) -> torch.Tensor:
        from .components import encode_text

        out = []
        for i in range(0, len(captions), self.batch):
            chunk = captions[i : i + self.batch]
            self._warn_long(chunk, self.tokenizer)
            states, mask = encode_text(
                self.text_encoder, self.tokenizer, chunk, self.max_text_tokens, self.device
            )
            out.append(self.model.encode_text(states, mask).float())
        return torch.cat(out)

    @torch.no_grad()
    def video_embeds(self, videos: list[np.ndarray]) -> torch.Tensor:
        """Clips of one length each (any lengths across the list) → (N, E)."""
        out = []
        for v in videos:  # lengths may differ; the tower is cheap per clip
            out.append(self.model.encode_video(self.frames_to_tensor(v)[None].to(self.device)))
        return torch.cat(out).float()

    @torch.no_grad()
    def frame_average_embeds(self, videos: list[np.ndarray]) -> torch.Tensor:
        """Per-frame baseline: every sampled frame embedded as a 1-frame video (an image),
        the embeddings averaged and renormalised — blind to frame order by construction."""
        out = []
        for v in videos:
            x = self.frames_to_tensor(v).to(self.device)  # (F', 3, S, S)
            z = self.model.encode_video(x[:, None]).mean(0)  # each frame alone
            out.append(torch.nn.functional.normalize(z, dim=-1)[None])
        return torch.cat(out).float()

    def score(self, frames: np.ndarray, caption: str) -> ScoreResult:
        cos = self.video_embeds([frames])[0] @ self.text_embeds([caption])[0]
        return ScoreResult(score=float(cos))

    # -- rewards for the generator ------------------------------------------------------------
    def scores(self, videos: list[np.ndarray], captions: str | list[str]) -> torch.Tensor:
        """Rank clips: the score of each uint8 clip (F, H, W, 3) against its caption (one
        caption for all, or one each) → (N,), what ``score`` gives one clip at a time."""
        captions = [captions] * len(videos) if isinstance(captions, str) else list(captions)
        if len(captions) != len(videos):
            raise ValueError(f"{len(videos)} videos but {len(captions)} captions")
        return (self.video_embeds(videos) * self.text_embeds(captions)).sum(-1)

    def reward(
        self,
        frames: torch.Tensor,
        captions: str | list[str],
        value_range: tuple[float, float] = (0.0, 1.0),
        layout: str = "BFCHW",
    ) -> torch.Tensor:
        """A differentiable reward for tuning a generator on the scorer (reward-weighted or
        DPO pairs ranked by it; DRaFT, Clark et al. 2023, and ReFL, Xu et al. 2023, which
        backpropagate it into the sampler): the cosine of each clip with its caption.

        Args:
            frames: float pixels, ``layout`` "BFCHW" (the text-to-video pipeline's
                ``output_type="pt"``), "BCFHW" or "BFHWC", values in ``value_range`` —
                (0, 1) or (-1, 1). Frames are picked evenly to the tower's ``num_frames`` and
                area-resized to its ``image_size``, both differentiable.
            captions: one for all clips, or one per clip.

        Returns:
            (B,) cosines, differentiable w.r.t. ``frames`` (and the scorer's weights, unless
            the caller freezes them); the caption side carries no gradient.
        """
        if layout not in ("BFCHW", "BCFHW", "BFHWC"):
            raise ValueError(f"layout must be BFCHW, BCFHW or BFHWC, got {layout!r}")
        if tuple(value_range) not in ((0.0, 1.0), (-1.0, 1.0)):
            raise ValueError(f"value_range must be (0, 1) or (-1, 1), got {value_range}")
        if frames.ndim != 5 or not frames.is_floating_point():
            raise ValueError(f"frames must be a float (B, F, C, H, W)-like tensor, got "
                             f"{frames.dtype} {tuple(frames.shape)}")  # fmt: skip
        if layout == "BCFHW":
            frames = frames.transpose(1, 2)
        elif layout == "BFHWC":
            frames = frames.permute(0, 1, 4, 2, 3)
        b, f, c, h, w = frames.shape
        if c != 3:
            raise ValueError(f"frames must have 3 channels in layout {layout}, got {c}")
        captions = [captions] * b if isinstance(captions, str) else list(captions)
        if len(captions) != b:
            raise ValueError(f"{b} clips but {len(captions)} captions")
        cfg = self.model.config
        n = cfg.num_frames if f > 1 else 1  # as frames_to_tensor: an image stays one frame
        idx = torch.linspace(0, f - 1, n).round().long().to(frames.device)
        x = frames.to(self.device).index_select(1, idx.to(self.device))  # (B, F', 3, H, W)
        if value_range[0] == 0.0:
            x = x * 2 - 1
        if (h, w) != (cfg.image_size, cfg.image_size):
            side = cfg.image_size
            x = torch.nn.functional.interpolate(x.flatten(0, 1), size=(side, side), mode="area")
            x = x.unflatten(0, (b, n))
        video = self.model.encode_video(x).float()  # (B, E)
        text = self.text_embeds(captions).to(video.device)  # (B, E), no gradient
        return (video * text).sum(-1)


SCORER_KINDS = {"clip": ClipSimScorer, "xclip": XClipScorer, "shapes": VideoTextScorer}


def split_spec(spec: str) -> tuple[str, str] | None:
    """``KIND:WHERE`` → (kind, where) for a kind of :data:`SCORER_KINDS`; None otherwise."""
    kind, sep, where = spec.partition(":")
    return (kind, where) if sep and kind in SCORER_KINDS and where else None


def load_scorer(spec: str, device: str = "cpu"):
    """``shapes:PATH``, ``clip:PATH_OR_ID`` or ``xclip:PATH_OR_ID`` → a scorer (the studio
    resolves ``default``, the shipped scorer, to ``shapes:DIR``: studio.shipped.scorer_spec)."""
    parts = split_spec(spec)
    if parts is None:
        raise ValueError(
            f"scorer spec must be shapes:PATH, clip:PATH_OR_ID or xclip:PATH_OR_ID, got {spec!r}"
        )
    return SCORER_KINDS[parts[0]].from_pretrained(parts[1], device=device)
