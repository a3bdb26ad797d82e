"""Train the swap-attention video DiT with flow matching, jointly on images and videos.

    studio train dit --config configs/train/dit_shapes.yaml [key=value ...]
    accelerate launch -m studio.cli train dit --config ...      # same command, many processes

Recipe: rectified flow (x_t = (1 - t)·x0 + t·ε, target ε - x0) with logit-normal (SD3) or uniform t;
text dropout for classifier-free guidance; EMA weights for sampling; a curriculum of stages
from images to clips of growing length (Frozen in Time), with image steps interleaved in the
video stages so that image-only concepts keep being seen; random clean prefixes (the
conditioning-frame mask) so the model learns continuation.

Data: ``data.source: shapes`` draws Shapes World latents from a cache encoded once;
``data.source: shards`` streams real clips and images from WebDataset shards in buckets
(train/buckets.py) and encodes them with the VAE on the fly, or reads their latents and
caption states precomputed in ``data.latents`` (train/precompute.py).

Latents: a frame-wise VAE or a video VAE (:mod:`pipelines.latent_space`). With a video VAE
every frame count (stages, ``data.clip_frames``, buckets) is ``1 + k·step`` pixel frames
(checked at start, :func:`check_latent_frames`), the model trains on latent frames, clips are
cut to their prefixes only (a window starting later would begin with a latent frame that is
no image) and never reversed in time; images are clips of one frame.

Guidance distillation (``guidance_distill.teacher``): the target is not the data's flow but
the teacher's guided output at the same noised latents, the scale drawn per sample and given
to the student (``model.guidance_embeds``), so that it samples with one call a step.

Every batch, its noise and its timesteps are a pure function of (seed, step, rank): the
data position *is* the step (a shard stream is replayed to it on resume), so resuming from a
checkpoint with the same number of processes reproduces the uninterrupted run.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from models.video_dit import PREDICTION_TYPES, VIDEO_DIT_MODELS, VideoDiT
from pipelines.components import (
    encode_text,
    load_text_encoder,
    load_vae,
    reference_token_ids,
    text_hidden_size,
)
from pipelines.latent_space import LatentSpace
from pipelines.text_to_video import ShapesVideoPipeline, to_uint8
from pipelines.video_io import write_video
from world.shapes_world import ClipSpec, ShapesWorld, caption

from .buckets import Bucket, BucketBatches
from .checkpoint import (
    InterruptFlag,
    init_weights_from,
    optimizer_step,
    resume,
    start_run,
)
from .config import (
    DiTTrainConfig,
    StageConfig,
    check_latent_frames,
    resolve_mixed_precision,
)
from .latent_cache import (
    END_KINDS,
    LatentCache,
    build_cache,
    cache_key,
    encode_videos,
    load_cache,
    save_cache,
)
from .precompute import (
    CachedBucketBatches,
    CachedShardDataset,
    ShardLatents,
    prefix_window,
    prepare_shard_latents,
)
from .shards import ShardDataset

REVERSED = {"left": "right", "right": "left", "up": "down", "down": "up", "still": "still"}


# ---------------------------------------------------------------------------- batches
EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def stage_at(cfg: DiTTrainConfig, step: int) -> tuple[int, StageConfig]:
    """Curriculum stage of a global step."""
    end = 0
    for i, stage in enumerate(cfg.stages):
        end += stage.steps
        if step < end:
            return i, stage
    return len(cfg.stages) - 1, cfg.stages[-1]


def is_image_step(stage: StageConfig, step: int) -> bool:
    return stage.frames == 1 or (
        stage.image_every > 0 and step % stage.image_every == stage.image_every - 1
    )


def _spec_caption(
    spec: dict,
    rng: np.random.Generator,
    image: bool,
    reverse: bool = False,
    refs: bool = False,
    wordnet_prob: float = 0.0,
    structure_prob: float = 0.0,
) -> str:
    spec = dict(spec)
    if reverse:
        spec["objects"] = [dict(o, motion=REVERSED[o["motion"]]) for o in spec["objects"]]
    return caption(
        ClipSpec.from_dict(spec),
        rng,
        image=image,
        refs=refs,
        wordnet_prob=wordnet_prob,
        structure_prob=structure_prob,
    )


def swapped_motions(spec: dict) -> dict | None:
    """A two-object clip spec with its objects' motions (and motions after a scene change)
    swapped, the binding hard negative of ``binding_weight``; None when the clip has not two
    objects that move differently (the swap would not change what the caption says)."""
    objects = spec["objects"]
    if len(objects) != 2:
        return None
    a, b = objects

    def said(o: dict) -> str:  # the motion the caption names (after a scene change, the new one)
        return o["motion_after"] if spec.get("switch_frame") is not None else o["motion"]

    if said(a) == said(b):
        return None
    keys = ("motion", "motion_after")
    return dict(
        spec,
        objects=[dict(a, **{k: b.get(k) for k in keys}), dict(b, **{k: a.get(k) for k in keys})],
    )


def image_batch(
    cache: LatentCache,
    size: int,
    rng: np.random.Generator,
    ends: tuple[torch.Tensor, list[dict]] | None = None,
    clip_frame_prob: float = 0.0,
    wordnet_prob: float = 0.0,
    structure_prob: float = 0.0,
) -> tuple[torch.Tensor, list[str]]:
    """→ latents (B, C, 1, h, w), captions. With ``ends`` (:func:`clip_end_frames`), each
    sample is with chance ``clip_frame_prob`` a clip's first frame with the clip's caption or
    its last frame with the time-reversed caption, else an image with an image caption.
    ``wordnet_prob``: see :func:`world.shapes_world.caption` (clip captions only);
    ``structure_prob``: likewise (every caption)."""
    if ends is None:  # images only: indices drawn at once, as before clip frames existed
        idx = rng.integers(len(cache.images), size=size)
        latents = cache.images[idx].float().unsqueeze(2)
        captions = [
            _spec_caption(cache.image_specs[i], rng, image=True, structure_prob=structure_prob)
            for i in idx
        ]
        return latents, captions
    from_clips = rng.random(size) < clip_frame_prob
    latents, captions = [], []
    for j in range(size):
        if from_clips[j]:
            k, last = int(rng.integers(len(ends[1]))), bool(rng.random() < 0.5)
            latents.append(ends[0][k, int(last)])
            captions.append(
                _spec_caption(
                    ends[1][k],
                    rng,
                    False,
                    reverse=last,
                    wordnet_prob=wordnet_prob,
                    structure_prob=structure_prob,
                )
            )
        else:
            i = int(rng.integers(len(cache.images)))
            latents.append(cache.images[i])
            captions.append(
                _spec_caption(cache.image_specs[i], rng, image=True, structure_prob=structure_prob)
            )
    return torch.stack(latents).float().unsqueeze(2), captions


def clip_end_frames(
    cache: LatentCache, frame_wise: bool = True
) -> tuple[torch.Tensor, list[dict]] | None:
    """First and last frames (E, 2, C, h, w) of the cache's single- and two-object clips and
    of its end-frame part, with their specs; None when there are none. With a video VAE
    (``frame_wise`` False) a clip's last latent frame is no image: the end-frame part only."""
    keep = [i for i, s in enumerate(cache.clip_specs) if frame_wise and s.get("kind") in END_KINDS]
    parts = [cache.clips[keep][:, :, [0, -1]].permute(0, 2, 1, 3, 4)] if keep else []
    specs = [cache.clip_specs[i] for i in keep]
    if cache.end_frames is not None and len(cache.end_frames):
        parts.append(cache.end_frames)
        specs += cache.end_specs
    return (torch.cat(parts), specs) if parts else None


def video_batch(
    cache: LatentCache,
    stage: StageConfig,
    cfg: DiTTrainConfig,
    rng: np.random.Generator,
    space: LatentSpace | None = None,
) -> tuple[torch.Tensor, list[str], torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None, list]:
    """→ latents (B, C, f, h, w), captions, frame_mask (B, f) bool (True = given clean),
    references: None, or (reference latents (B, R, C, h, w), present (B, R) bool) when the
    stage draws ``reference_prob`` of its clips from the cache's reference-element clips, and
    negatives: per clip, its caption with the two objects' motions swapped in the same
    phrasing (:func:`swapped_motions`), or None; drawn only when ``cfg.binding_weight`` > 0.

    ``space``: the cache's latent space (None: frame-wise). With a video VAE a clip's window
    is its prefix and is never reversed (:mod:`train.latent_cache`)."""
    frame_wise = space is None or space.frame_wise
    full = cache.clips.shape[2]
    f = stage.frames if frame_wise else space.latent_frames(stage.frames)
    if f > full:
        raise ValueError(f"stage {stage.name!r} wants {f} frames but cached clips have {full}")

    def window_start() -> int:
        return int(rng.integers(full - f + 1)) if frame_wise else 0

    def reversed_in_time() -> bool:
        return frame_wise and rng.random() < cfg.data.reverse_prob

    with_refs = stage.reference_prob > 0
    if with_refs and (cache.ref_clips is None or len(cache.ref_clips) == 0):
        raise ValueError(
            f"stage {stage.name!r} has reference_prob > 0 but the latent cache has no "
            "reference clips (set data.cache_references)"
        )
    # A window of a scene-change clip would mislabel its motion: those clips only whole.
    eligible = [
        i for i, s in enumerate(cache.clip_specs) if f == full or s.get("switch_frame") is None
    ]
    idx = rng.choice(eligible, size=stage.batch_size)
    is_ref = (rng.random(stage.batch_size) < stage.reference_prob) if with_refs else None
    latents, captions, negatives = [], [], []
    mask = torch.zeros(stage.batch_size, f, dtype=torch.bool)
    refs = present = None
    if with_refs:
        refs = torch.zeros(stage.batch_size, *cache.ref_images.shape[1:])
        present = torch.zeros(stage.batch_size, cache.ref_images.shape[1], dtype=torch.bool)
    for j, i in enumerate(idx):
        if with_refs and is_ref[j]:
            k = int(rng.integers(len(cache.ref_clips)))
            spec = cache.ref_specs[k]
            start = window_start()
            z = cache.ref_clips[k, :, start : start + f].float()
            n = len(spec["objects"])
            refs[j, :n] = cache.ref_images[k, :n].float()
            present[j, :n] = True
            reverse = reversed_in_time()
            if reverse:
                z = z.flip(1)
            latents.append(z)
            captions.append(
                _spec_caption(
                    spec,
                    rng,
                    False,
                    reverse=reverse,
                    refs=True,
                    wordnet_prob=cfg.data.wordnet_phrasing_prob,
                )
            )
            negatives.append(None)
            continue
        spec = cache.clip_specs[i]
        start = window_start()
        z = cache.clips[i, :, start : start + f].float()
        given = spec.get("condition_frames") if f == full else None
        if given is not None and not frame_wise:  # pixel frames → latent frames they fix
            given = space.given_latent_frames(given)
        reverse = given is None and spec.get("switch_frame") is None and reversed_in_time()
        if reverse:  # a frame-wise VAE makes time reversal exact in latent space
            z = z.flip(1)
        if given is None:
            given = conditioning_prefix(cfg, f, rng)
        if given:
            mask[j, :given] = True
        latents.append(z)
        swapped = swapped_motions(spec) if cfg.binding_weight > 0 else None
        phrasing = copy.deepcopy(rng) if swapped is not None else None

        clip_caption = functools.partial(
            _spec_caption,
            image=False,
            reverse=reverse,
            wordnet_prob=cfg.data.wordnet_phrasing_prob,
            structure_prob=cfg.data.sentence_structure_prob,
        )
        captions.append(clip_caption(spec, rng))
        # the same draws: the same words, the motions swapped
        negatives.append(None if swapped is None else clip_caption(swapped, phrasing))
    references = (refs, present) if with_refs and present.any() else None
    return torch.stack(latents), captions, mask, references, negatives


# ------------------------------------------------------------------- batches from shards
def stage_buckets(cfg: DiTTrainConfig, stage: StageConfig, images: bool) -> list[Bucket]:
    """The buckets a stage draws its image (or video) batches from."""
    if cfg.data.buckets:
        chosen = [
            Bucket(b.frames, b.height, b.width, b.batch_size)
            for b in cfg.data.buckets
            if (b.frames == 1) == images and b.frames <= stage.frames
        ]
    else:
        s = cfg.data.size
        chosen = [
            Bucket(1, s, s, stage.image_batch_size)
            if images
            else Bucket(stage.frames, s, s, stage.batch_size)
        ]
    if not chosen:
        kind = "1-frame (image)" if images else f"multi-frame bucket with ≤ {stage.frames} frames"
        raise ValueError(f"stage {stage.name!r} needs a {kind} in data.buckets")
    return chosen


def steps_before(cfg: DiTTrainConfig, stage_idx: int, step: int, images: bool) -> int:
    """How many image (``images``) or video steps of stage ``stage_idx`` precede ``step``:
    the number of batches that stage's stream has given this rank by then."""
    begin = sum(s.steps for s in cfg.stages[:stage_idx])
    stage = cfg.stages[stage_idx]
    return sum(1 for s in range(begin, step) if is_image_step(stage, s) == images)


class ShardBatchStream:
    """An endless, deterministic stream of bucketed batches for one stage and one kind
    (images or videos) of this rank: epoch after epoch of ``data.shards``, replayed to
    ``skip`` batches on resume. ``stats()`` sums the readers' counts (ok, skipped_corrupt, …).
    With ``latents`` (``data.latents``) the batches hold cached latents and caption states
    instead of pixels: the same batches, read instead of decoded. ``prefix_windows`` (a video
    VAE): every clip is cut to its first frames, as the cached latents are."""

    def __init__(
        self,
        cfg: DiTTrainConfig,
        stage_idx: int,
        images: bool,
        skip: int = 0,
        latents: ShardLatents | None = None,
        prefix_windows: bool = False,
    ):
        stage = cfg.stages[stage_idx]
        self.kind = "image" if images else "video"
        reading = dict(
            shuffle=cfg.data.shuffle,
            seed=cfg.data.seed * 1000 + 2 * stage_idx + int(images),
            images=images,
            videos=not images,
            split_by=cfg.data.split_by,
        )
        buckets = stage_buckets(cfg, stage, images)
        if latents is None:
            dataset = ShardDataset(cfg.data.shards, frames=None, size=None, **reading)
            batches = PrefixBucketBatches if prefix_windows else BucketBatches
            self.batches = batches(dataset, buckets, max_frames=stage.frames)
        else:
            dataset = CachedShardDataset(latents, cfg.data.shards, **reading)
            self.batches = CachedBucketBatches(
                dataset, buckets, max_frames=stage.frames, prefix_windows=prefix_windows
            )
        self.num_workers = cfg.data.num_workers
        self.epoch, self.iterator, self.given = 0, None, 0
        self.counts: dict[tuple, dict[str, int]] = {}
        for _ in range(skip):
            next(self)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        while True:
            if self.iterator is None:
                self.batches.set_epoch(self.epoch)
                loader = torch.utils.data.DataLoader(
                    self.batches, batch_size=None, num_workers=self.num_workers
                )
                self.iterator, self.given = iter(loader), 0
            try:
                batch = next(self.iterator)
            except StopIteration:
                if self.given == 0:
                    raise ValueError(  # the data's or the config's fault: one error line
                        f"the shards gave no {self.kind} batch in a whole epoch "
                        f"(this reader's counts: {self.batches.stats()}); check data.shards and the "
                        "batch sizes of data.buckets (a bucket larger than the samples it gets in "
                        "an epoch never fills), set data.split_by: samples when only a few shards hold "
                        "this kind (each process reads its own shards), or image_every: 0 when "
                        "the shards hold no images"
                    ) from None
                self.epoch, self.iterator = self.epoch + 1, None
                continue
            self.given += 1
            self.counts[tuple(batch["reader"])] = batch["stats"]
            return batch

    def stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for counts in self.counts.values():
            for k, v in counts.items():
                total[k] = total.get(k, 0) + int(v)
        return total


class PrefixBucketBatches(BucketBatches):
    """:class:`BucketBatches` whose windows all start at a clip's first frame (video VAEs)."""

    def window(self, sample: dict, frames: int, bucket: Bucket) -> tuple[int, dict]:
        return prefix_window(sample, bucket)


def check_shard_split(cfg: DiTTrainConfig, processes: int) -> None:
    """Every reader (process × DataLoader worker) gets images if any stage has image steps,
    and videos if any has clip steps (:meth:`ShardDataset.check_split`)."""
    readers = processes * max(1, cfg.data.num_workers)
    kinds = set()
    for stage in cfg.stages:
        if stage.frames == 1 or stage.image_every > 0:
            kinds.add(True)
        if stage.frames > 1:
            kinds.add(False)
    for images in sorted(kinds):
        ShardDataset(
            cfg.data.shards, images=images, videos=not images, split_by=cfg.data.split_by
        ).check_split(readers)


def conditioning_prefix(cfg: DiTTrainConfig, f: int, rng: np.random.Generator) -> int:
    """Frames given clean at the start of an f-frame clip that has no prefix of its own:
    exactly the first with ``data.first_frame_prob`` (image-to-video: only the caption says
    where the object goes next), else 1..f/2 with ``data.cond_prob``, else none."""
    if f < 2:
        return 0
    if cfg.data.first_frame_prob > 0 and rng.random() < cfg.data.first_frame_prob:
        return 1
    if rng.random() < cfg.data.cond_prob:
        return int(rng.integers(1, f // 2 + 1))
    return 0


def shard_batch(
    batch: dict, vae, cfg: DiTTrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """A bucketed batch (pixels, or cached latents) → latents (B, C, f, h, w), captions,
    frame_mask (B, f) or None (``condition_frames``, in pixel frames, → the latent frames they
    fix)."""
    x0 = batch["latents"].float() if "latents" in batch else encode_videos(vae, batch["video"])
    b, f = x0.shape[0], x0.shape[2]
    space = LatentSpace(vae)
    mask = torch.zeros(b, f, dtype=torch.bool)
    if f > 1:
        for j, meta in enumerate(batch["meta"]):
            given = meta.get("condition_frames")
            if given is not None:
                given = space.given_latent_frames(given)
            else:
                given = conditioning_prefix(cfg, f, rng)
            if given:
                mask[j, :given] = True
    return x0, list(batch["caption"]), mask


# ---------------------------------------------------------------------------- helpers
TIMESTEP_SAMPLINGS = ("logit_normal", "uniform")
DATA_SOURCES = ("shapes", "shards")
LOSS_SPACES = ("velocity", "sample")


def sample_timesteps(cfg: DiTTrainConfig, b: int, generator: torch.Generator) -> torch.Tensor:
    """(B,) flow times in (0, 1): logit-normal (SD3) or uniform (rectified flow), then
    shifted towards noise by ``cfg.timestep_shift`` (1 = unchanged)."""
    if cfg.timestep_sampling == "uniform":
        t = torch.rand(b, generator=generator)
    elif cfg.timestep_sampling == "logit_normal":
        t = torch.sigmoid(torch.randn(b, generator=generator) * cfg.logit_std + cfg.logit_mean)
    else:
        raise ValueError(
            f"timestep_sampling must be one of {TIMESTEP_SAMPLINGS}, got {cfg.timestep_sampling!r}"
        )
    return shift_timesteps(t, cfg.timestep_shift)


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's shift s·t / (1 + (s − 1)·t), as diffusers' flow-matching scheduler applies it."""
    return shift * t / (1 + (shift - 1) * t)


def foreground_mask(x0: torch.Tensor, threshold: float) -> torch.Tensor:
    """Latents (B, C, F, h, w) → (B, 1, F, h, w) in {0, 1}: 1 where a latent pixel is farther
    than ``threshold`` from its frame's median latent (the background: a solid colour covers
    most of every frame), dilated by one pixel so that object edges count as object."""
    b, c, f, h, w = x0.shape
    frames = x0.permute(0, 2, 1, 3, 4).reshape(b * f, c, h * w)
    background = frames.median(dim=-1, keepdim=True).values  # (B·F, C, 1)
    far = (frames - background).norm(dim=1).reshape(b * f, 1, h, w) > threshold
    fg = torch.nn.functional.max_pool2d(far.float(), 3, stride=1, padding=1)
    return fg.reshape(b, f, 1, h, w).permute(0, 2, 1, 3, 4)


def blur_latents(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Latents (B, C, F, h, w) blurred over (h, w) by a Gaussian of ``sigma`` (B,) latent
    pixels each (0 = unchanged), edges replicated."""
    b, c, f, h, w = x.shape
    r = max(1, int(math.ceil(2 * float(sigma.max()))))
    d = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(d[None] ** 2) / (2 * sigma.to(x)[:, None].clamp_min(1e-3) ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # (B, 2r+1)
    flat = x.permute(0, 2, 1, 3, 4).reshape(1, b * f * c, h, w)
    kk = k.repeat_interleave(f * c, dim=0)[:, None]  # (B·F·C, 1, 2r+1)
    flat = torch.nn.functional.pad(flat, (r, r, r, r), mode="replicate")
    flat = torch.nn.functional.conv2d(flat, kk[:, :, None, :], groups=b * f * c)
    flat = torch.nn.functional.conv2d(flat, kk[:, :, :, None], groups=b * f * c)
    out = flat.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
    return torch.where((sigma > 0).to(x.device)[:, None, None, None, None], out, x)


def _unwrap(model):
    """The VideoDiT under a DDP/accelerate wrapper."""
    return getattr(model, "module", model)


@dataclass
class GuidanceTeacher:
    """The frozen model whose classifier-free guided output a guidance-embedding student
    learns (``cfg.guidance_distill``), with the empty caption's states for its unconditional
    half (what the pipeline's unconditional half reads)."""

    model: VideoDiT
    empty_text: torch.Tensor  # (1, L, D)
    empty_mask: torch.Tensor  # (1, L)
    scales: tuple[float, float]

    @classmethod
    def load(cls, cfg: DiTTrainConfig, text_encoder, tokenizer, device) -> GuidanceTeacher:
        folder = Path(cfg.guidance_distill.teacher)
        sub = "image_transformer" if cfg.image_model_for is not None else "transformer"
        if (folder / sub).is_dir():
            folder = folder / sub
        if not (folder / "config.json").is_file():
            raise ValueError(f"guidance_distill.teacher: no saved model at {folder}")
        model = (
            VideoDiT.from_pretrained(folder, use_safetensors=True)
            .float()
            .to(device)
            .eval()
            .requires_grad_(False)
        )
        for key in ("prediction_type", "patch_size", "in_channels"):
            if model.config[key] != getattr(cfg.model, key, model.config[key]):
                raise ValueError(
                    f"guidance_distill.teacher {folder}: {key} {model.config[key]!r}, the "
                    f"student's is {getattr(cfg.model, key)!r}"
                )
        if model.config.max_references:
            raise ValueError("guidance_distill: a teacher with a reference path is not supported")
        text, mask = encode_text(text_encoder, tokenizer, [""], cfg.text_max_length, device)
        return cls(model, text, mask, tuple(cfg.guidance_distill.scales))

    def draw(self, b: int, generator: torch.Generator) -> torch.Tensor:
        """(B,) guidance scales, uniform in ``scales``."""
        lo, hi = self.scales
        return lo + (hi - lo) * torch.rand(b, generator=generator)

    @torch.no_grad()
    def goal(
        self, xt, t, text, text_mask, frame_mask, w: torch.Tensor, loss_space: str
    ) -> torch.Tensor:
        """The guided output u + w·(c − u) at ``xt``, as a clean sample (``loss_space``
        sample) or a velocity: (B, C, F, h, w)."""
        b = xt.shape[0]
        cond = self.model(xt, t * 1000, text, text_mask, frame_mask=frame_mask).sample.float()
        empty, mask = self.empty_text.expand(b, -1, -1), self.empty_mask.expand(b, -1)
        uncond = self.model(xt, t * 1000, empty, mask, frame_mask=frame_mask).sample.float()
        ww = w.to(cond)[:, None, None, None, None]
        guided = uncond + ww * (cond - uncond)  # the pipeline's guidance, in output space
        if loss_space == "sample":
            return guided
        return self.model.to_velocity(guided, xt, t)


#: The binding hard negatives are taken at noise levels t ≥ this (flow time, 1 = noise): where
#: the caption, not the noised clip, still decides which object goes where.
BINDING_MIN_T = 0.5


def flow_loss(
    model,
    x0: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    frame_mask: torch.Tensor | None,
    cfg: DiTTrainConfig,
    generator: torch.Generator,
    negative: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    teacher: GuidanceTeacher | None = None,
    **conditions,
) -> torch.Tensor:
    """Rectified-flow loss on the generated (not given) frames, object latents weighted
    ``cfg.foreground_weight`` times the background's. ``conditions``: reference keywords
    of :meth:`VideoDiT.forward`.

    ``negative``: (rows (K,) long, text (K, L, D), text_mask (K, L)), captions that do not
    hold for those rows' clips (the binding hard negatives); adds ``cfg.binding_weight`` ·
    mean relu(margin + log e_true − log e_negative), e being a row's mean error on its object
    latents (:func:`foreground_mask`) in the generated frames, at the same noise and time, for
    the rows noised to t ≥ :data:`BINDING_MIN_T`.

    ``teacher``: the target is its guided output at a scale drawn per row, which the model
    is given (guidance distillation), instead of the data's flow."""
    b = x0.shape[0]
    t = sample_timesteps(cfg, b, generator).to(x0.device)  # (B,)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    tt = t[:, None, None, None, None]
    xt = (1 - tt) * x0 + tt * noise
    if frame_mask is not None:
        keep = frame_mask[:, None, :, None, None]
        given = x0
        if cfg.context_blur > 0:
            blurred = torch.rand(b, generator=generator) < cfg.context_blur_prob
            sigma = cfg.context_blur * torch.rand(b, generator=generator) * blurred
            given = blur_latents(x0, sigma.to(x0.device))
        xt = torch.where(keep, given, xt)

    goal = x0 if cfg.loss_space == "sample" else noise - x0  # (B, C, F, h, w)
    if teacher is not None:
        w = teacher.draw(b, generator).to(x0.device)
        goal = teacher.goal(xt, t, text, text_mask, frame_mask, w, cfg.loss_space)
        conditions = {**conditions, "guidance": w}

    def error(out: torch.Tensor, rows=slice(None)) -> torch.Tensor:
        """Squared error of the model's output for ``rows``, in ``cfg.loss_space``."""
        pred = (
            out
            if cfg.loss_space == "sample"
            else _unwrap(model).to_velocity(out, xt[rows], t[rows])
        )
        return (pred - goal[rows]) ** 2

    out = model(xt, t * 1000, text, text_mask, frame_mask=frame_mask, **conditions).sample.float()
    err = error(out)
    weight = torch.ones_like(x0[:, :1])  # (B, 1, F, h, w)
    if cfg.foreground_weight != 1.0:
        fg = foreground_mask(x0, cfg.foreground_threshold)
        weight = weight + (cfg.foreground_weight - 1.0) * fg
    if frame_mask is not None:
        weight = weight * (~frame_mask)[:, None, :, None, None].to(weight.dtype)
    weight = weight.expand_as(err)
    loss = (err * weight).sum() / weight.sum().clamp_min(1.0)
    if negative is None or cfg.binding_weight == 0 or len(negative[0]) == 0:
        return loss
    rows, neg_text, neg_mask = negative
    high = t[rows] >= BINDING_MIN_T  # below it the noised clip shows where each object goes
    if not bool(high.any()):
        return loss
    rows, neg_text, neg_mask = rows[high], neg_text[high], neg_mask[high]
    fmask = None if frame_mask is None else frame_mask[rows]
    neg_conditions = {k: v[rows] for k, v in conditions.items()}
    if "text_reference_ids" in neg_conditions:  # negatives are plain clips: no <refN> token
        neg_conditions["text_reference_ids"] = torch.zeros_like(neg_mask, dtype=torch.long)
    neg_out = model(
        xt[rows], t[rows] * 1000, neg_text, neg_mask, frame_mask=fmask, **neg_conditions
    )
    neg_err = error(neg_out.sample.float(), rows)
    objects = foreground_mask(x0[rows], cfg.foreground_threshold)  # (K, 1, F, h, w)
    if fmask is not None:
        objects = objects * (~fmask)[:, None, :, None, None].to(objects.dtype)
    objects = objects.expand_as(neg_err)
    dims = tuple(range(1, err.ndim))
    area = objects.sum(dim=dims).clamp_min(1.0)
    e_true = (err[rows] * objects).sum(dim=dims) / area  # (K,)
    e_neg = (neg_err * objects).sum(dim=dims) / area
    hinge = torch.relu(cfg.binding_margin + torch.log(e_true + 1e-8) - torch.log(e_neg + 1e-8))
    return loss + cfg.binding_weight * hinge.mean()


def model_factory(cfg: DiTTrainConfig):
    """The constructor ``model.size`` names; ValueError naming the sizes there are."""
    factory = VIDEO_DIT_MODELS.get(cfg.model.size)
    if factory is None:
        raise ValueError(
            f"unknown model.size {cfg.model.size!r}; allowed: {sorted(VIDEO_DIT_MODELS)}"
        )
    return factory


def build_model(
    cfg: DiTTrainConfig, latent_channels: int, text_dim: int, latent_size: int
) -> VideoDiT:
    return model_factory(cfg)(
        in_channels=latent_channels,
        patch_size=cfg.model.patch_size,
        prediction_type=cfg.model.prediction_type,
        window=tuple(cfg.model.window),
        text_dim=text_dim,
        sample_size=latent_size,
        max_frames=max(64, max(s.frames for s in cfg.stages)),
        max_references=cfg.model.max_references,
        space_time_rope=cfg.model.space_time_rope,
        text_refiner_layers=cfg.model.text_refiner_layers,
        guidance_embeds=cfg.model.guidance_embeds,
    )


@dataclass
class ImageModelSource:
    """What ``image_model_from`` takes from a saved pipeline: its first-frame image model, the
    settings that belong to it, and the dtype its weights are stored in."""

    model: VideoDiT
    settings: dict
    stored_dtype: torch.dtype

    @classmethod
    def load(cls, folder: str | Path) -> ImageModelSource:
        source = ShapesVideoPipeline.from_pretrained(folder, text_encoder=None, tokenizer=None)
        if source.image_transformer is None:
            raise ValueError(f"image_model_from: {folder} has no image_transformer")
        settings = {k: source.config[k] for k in IMAGE_MODEL_KEYS if k in source.config}
        model = source.image_transformer.eval().requires_grad_(False)
        return cls(model, settings, stored_dtype(Path(folder) / "image_transformer"))


def make_pipeline(
    cfg: DiTTrainConfig,
    model,
    vae,
    text_encoder,
    tokenizer,
    image_source: ImageModelSource | None = None,
) -> ShapesVideoPipeline:
    """The pipeline a run saves and previews: sampled with the run's time shift (scheduler
    ``shift``), image-first when ``cfg.sample_image_first``, with ``image_source``'s image
    model and its settings (``image_model_from``)."""
    pipe = ShapesVideoPipeline(
        transformer=model,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=cfg.timestep_shift),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_spec=cfg.text_encoder,
        image_first=cfg.sample_image_first,
        text_max_length=cfg.text_max_length,
    )
    if image_source is not None:
        image_model = image_source.model.to(device=model.device, dtype=model.dtype)
        pipe.register_modules(image_transformer=image_model)
        pipe.register_to_config(**image_source.settings)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# pipeline settings that belong to its first-frame image model (kept by ``image_model_from``)
IMAGE_MODEL_KEYS = ("image_shift", "image_stochastic", "first_frame_guidance", "first_frame_steps")


def stored_dtype(folder: Path) -> torch.dtype:
    """The dtype a saved model's weights are stored in (its first safetensors tensor's)."""
    from safetensors import safe_open

    with safe_open(str(sorted(folder.glob("*.safetensors"))[0]), framework="pt") as f:
        return f.get_tensor(next(iter(f.keys()))).dtype


def image_model_pipeline(
    cfg: DiTTrainConfig, model: VideoDiT, text_encoder, tokenizer
) -> ShapesVideoPipeline:
    """The pipeline ``cfg.image_model_for`` with ``model`` as its first-frame image model,
    sampled with the run's time shift (``image_shift``)."""
    pipe = ShapesVideoPipeline.from_pretrained(
        cfg.image_model_for, text_encoder=text_encoder, tokenizer=tokenizer
    )
    if pipe.config.text_encoder_spec != cfg.text_encoder:
        raise ValueError(
            f"image_model_for: the pipeline's text encoder is {pipe.config.text_encoder_spec!r}, "
            f"this run's is {cfg.text_encoder!r}; they must be the same"
        )
    pipe.register_modules(image_transformer=model)
    pipe.register_to_config(image_shift=cfg.timestep_shift)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def drop_log_after(path: Path, step: int) -> None:
    """Forget log lines past ``step``: a run that stopped after its last checkpoint repeats
    those steps on resume, and each step should appear in the log once."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]

    def logged_step(line: str) -> int | None:
        try:
            return json.loads(line).get("step", 0)
        except json.JSONDecodeError:  # a line cut short by the interruption
            return None

    kept = [line for line in lines if (n := logged_step(line)) is not None and n <= step]
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept))


TEXT_MODULES = ("text_proj", "pooled_proj", "text_refiner")  # + every block's cross_attn


def add_lora(model: VideoDiT, cfg: DiTTrainConfig) -> None:
    """Freeze ``model`` and add peft low-rank adapters (``cfg.lora``) to its attention
    projections: only they train."""
    from peft import LoraConfig

    model.requires_grad_(False)
    config = LoraConfig(
        r=cfg.lora.rank,
        lora_alpha=cfg.lora.alpha,
        target_modules=list(cfg.lora.target_modules),
        init_lora_weights="gaussian",
    )
    model.add_adapter(config)


def trained(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters a run trains (all; a LoRA run's adapters only), in model order: the EMA
    follows exactly these."""
    return [p for p in model.parameters() if p.requires_grad]


def export_lora(model: VideoDiT, ema, out: Path) -> Path:
    """The adapter with its EMA weights, in diffusers' LoRA layout (``<out>/lora``), loadable
    with ``ShapesVideoPipeline.load_lora_weights``; the base model is not written."""
    from peft.utils import get_peft_model_state_dict

    ema.store(trained(model))
    ema.copy_to(trained(model))
    try:
        layers = get_peft_model_state_dict(model)
        ShapesVideoPipeline.save_lora_weights(out / "lora", transformer_lora_layers=layers)
    finally:
        ema.restore(trained(model))
    return out / "lora"


def param_groups(model: torch.nn.Module, cfg: DiTTrainConfig) -> list[dict]:
    """AdamW groups: the text path (token and pooled projections, every text cross-attention)
    at ``cfg.text_lr_multiplier`` × the base learning rate; the rest at the base rate. The
    schedule scales both alike."""
    text, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:  # the frozen base of a LoRA run
            continue
        if name.split(".", 1)[0] in TEXT_MODULES or ".cross_attn." in name:
            text.append(p)
        else:
            rest.append(p)
    groups = [{"params": rest, "lr": cfg.lr}]
    if text:
        groups.append({"params": text, "lr": cfg.lr * cfg.text_lr_multiplier})
    return groups


def lr_lambda(cfg: DiTTrainConfig):
    total = cfg.total_steps

    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, cfg.warmup))
        _, stage = stage_at(cfg, step)
        scale = (stage.lr / cfg.lr) if stage.lr is not None else 1.0
        # cosine over the whole run down to 10 %: late steps refine, early steps move fast
        return warm * scale * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0))))

    return f


def batch_loss(
    cfg: DiTTrainConfig,
    step: int,
    micro: int,
    rank: int,
    cache: LatentCache | None,
    ends,
    streams: dict,
    vae,
    text_encoder,
    tokenizer,
    model,
    accelerator,
    shard_latents: ShardLatents | None = None,
    teacher: GuidanceTeacher | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One micro-batch of optimizer step ``step`` → (its latents (B, C, F, h, w), its loss).

    Everything random is drawn from (seed, step, rank[, micro]), so a resumed run and a run
    with another number of micro-batches per step see the same data at the same place; the
    first micro-batch of a step is what a run without accumulation draws. ``shard_latents``:
    shard batches come from that cache, caption states included. ``teacher``: guidance
    distillation (:func:`flow_loss`)."""
    stage_idx, stage = stage_at(cfg, step)
    rng = np.random.default_rng([cfg.seed, step, rank] + ([micro] if micro else []))
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    images = is_image_step(stage, step)
    references = cached_text = negatives = None
    if cache is not None and images:
        x0, captions = image_batch(
            cache,
            stage.image_batch_size,
            rng,
            ends,
            cfg.data.clip_frame_prob,
            wordnet_prob=cfg.data.wordnet_phrasing_prob,
            structure_prob=cfg.data.sentence_structure_prob,
        )
        frame_mask = None
    elif cache is not None:
        x0, captions, frame_mask, references, negatives = video_batch(
            cache, stage, cfg, rng, LatentSpace(vae)
        )
    else:
        if (stage_idx, images) not in streams:  # replayed to this step's position
            skip = steps_before(cfg, stage_idx, step, images) * cfg.gradient_accumulation_steps
            prefix = not LatentSpace(vae).frame_wise
            streams[(stage_idx, images)] = ShardBatchStream(
                cfg, stage_idx, images, skip, shard_latents, prefix_windows=prefix
            )
        batch = next(streams[(stage_idx, images)])
        x0, captions, frame_mask = shard_batch(batch, vae, cfg, rng)
        cached_text = batch.get("text")  # caption states from the cache (data.latents)
    device = accelerator.device
    if frame_mask is not None:
        frame_mask = frame_mask.to(device) if frame_mask.any() else None
    dropped = rng.random(len(captions)) < cfg.text_dropout
    captions = ["" if d else c for c, d in zip(captions, dropped, strict=True)]
    if cached_text is not None:
        text, text_mask = shard_latents.text_batch(cached_text, dropped, device)
    else:
        text, text_mask = encode_text(
            text_encoder, tokenizer, captions, cfg.text_max_length, device
        )
    conditions = {}
    if references is not None:
        ref_latents, present = references
        # unconditional rows: no caption → no references; plus reference-only dropout
        keep = ~torch.from_numpy(dropped | (rng.random(len(captions)) < cfg.reference_dropout))
        ids = reference_token_ids(tokenizer, captions, cfg.text_max_length)
        conditions = dict(
            reference_latents=ref_latents.to(device),
            reference_mask=(present & keep[:, None]).to(device),
            text_reference_ids=ids.to(device),
        )
    negative = None
    if negatives is not None:
        rows = [j for j, c in enumerate(negatives) if c is not None and not dropped[j]]
        if rows:
            neg_text, neg_mask = encode_text(
                text_encoder, tokenizer, [negatives[j] for j in rows], cfg.text_max_length,
                device,
            )  # fmt: skip
            negative = (torch.tensor(rows, device=device), neg_text, neg_mask)
    with accelerator.autocast():
        loss = flow_loss(
            model, x0.to(device), text, text_mask, frame_mask, cfg, generator, negative,
            teacher, **conditions,
        )  # fmt: skip
    return x0, loss


VALIDATION_SEED = 777_000_001  # Shapes World indices no training cache draws


@dataclass
class ValidationSet:
    """Fixed held-out clips for a validation loss comparable across steps and runs: latents,
    their encoded captions, and one fixed generator seed for noise and timesteps."""

    x0: torch.Tensor  # (N, C, F, h, w)
    text: torch.Tensor
    text_mask: torch.Tensor

    @classmethod
    @torch.no_grad()
    def build(cls, cfg: DiTTrainConfig, vae, text_encoder, tokenizer, device) -> ValidationSet:
        """``cfg.validation_clips`` clips: from Shapes World at its own seed (data.source
        shapes), or the first clips of ``data.validation_shards`` (else of ``data.shards``) in
        shard order (shards), at the last stage's frame count (after an image stage: the
        shortest clip the VAE takes above 1)."""
        frames = max(1 + LatentSpace(vae).frame_step, cfg.stages[-1].frames)
        n = cfg.validation_clips
        if cfg.data.source == "shapes":
            world = ShapesWorld(size=cfg.data.size, frames=frames, seed=VALIDATION_SEED)
            kinds = ("video1", "video2")
            samples = [world.sample(i, kind=kinds[i % 2]) for i in range(n)]
            pixels = torch.from_numpy(np.stack([s.frames for s in samples]))  # (N, F, H, W, 3)
            pixels = pixels.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
            captions = [s.meta["caption"] for s in samples]
        else:
            source = "data.validation_shards" if cfg.data.validation_shards else "data.shards"
            data = ShardDataset(
                cfg.data.validation_shards or cfg.data.shards, frames=frames,
                size=cfg.data.size, frame_sampling="first", images=False, split_by="samples",
            )  # fmt: skip
            items = [item for _, item in zip(range(n), data, strict=False)]
            if not items:
                raise ValueError(f"validation_clips > 0 but {source} gave no clip")
            pixels = torch.stack([item["video"] for item in items])
            captions = [item["caption"] for item in items]
        x0 = encode_videos(vae, pixels.to(vae.device, vae.dtype)).float()
        text, mask = encode_text(text_encoder, tokenizer, captions, cfg.text_max_length, device)
        return cls(x0.to(device), text, mask)

    @torch.no_grad()
    def loss(self, model, cfg: DiTTrainConfig, accelerator) -> float:
        was_training = model.training
        model.eval()
        with accelerator.autocast():
            loss = flow_loss(
                model, self.x0, self.text, self.text_mask, None, cfg,
                torch.Generator().manual_seed(VALIDATION_SEED),
            )  # fmt: skip
        model.train(was_training)
        return float(loss)


def log_previews(accelerator, folder: Path, step: int) -> None:
    """The preview clips of ``folder`` to the trackers: TensorBoard gets each clip as a strip
    of its frames, W&B the MP4 itself."""
    from pipelines.video_io import read_video

    for tracker in accelerator.trackers:
        for clip in sorted(folder.glob("*.mp4")):
            if tracker.name == "tensorboard":
                frames, _ = read_video(clip)
                tracker.log_images(
                    {f"preview/{clip.stem}": np.concatenate(frames, 1)}, step, dataformats="HWC"
                )
            elif tracker.name == "wandb":
                import wandb

                tracker.log({f"preview/{clip.stem}": wandb.Video(str(clip))}, step=step)


# ---------------------------------------------------------------------------- main
def _shapes_cache(cfg: DiTTrainConfig, vae, out: Path, accelerator) -> LatentCache:
    """The Shapes World latent cache of this config: built by the main process if missing.

    Reference-element clips live in a cache of their own beside the text-to-video one
    (``<key>-references-<n>``), so adding them reuses an existing text-to-video cache.
    """
    key = cache_key(
        dict(vae.config),
        cfg.data.size,
        cfg.data.clip_frames,
        cfg.data.cache_clips,
        cfg.data.cache_images,
        cfg.data.seed,
    )
    root = Path(cfg.data.cache_dir or out / "latents")
    n_refs, n_ends = cfg.data.cache_references, cfg.data.cache_end_frames
    n_conts, (k_lo, k_hi) = cfg.data.cache_continuations, cfg.data.continuation_frames
    parts = {root / key: {"n_clips": cfg.data.cache_clips, "n_images": cfg.data.cache_images}}
    refs_path = root / f"{key}-references-{n_refs}"
    ends_path = root / f"{key}-end-frames-{n_ends}"
    conts_path = root / f"{key}-continuations-{n_conts}-k{k_lo}-{k_hi}"
    if n_refs:
        parts[refs_path] = {"n_references": n_refs}
    if n_ends:
        parts[ends_path] = {"n_end_frames": n_ends}
    if n_conts:
        parts[conts_path] = {
            "n_continuations": n_conts,
            "continuation_frames": (k_lo, k_hi),
        }
    if accelerator.is_main_process:
        for path, counts in parts.items():
            if load_cache(path) is None:
                built = build_cache(
                    vae,
                    **({"n_clips": 0, "n_images": 0} | counts),
                    size=cfg.data.size,
                    frames=cfg.data.clip_frames,
                    seed=cfg.data.seed,
                    workers=cfg.data.num_workers,
                )
                save_cache(built, path)
    accelerator.wait_for_everyone()
    cache = load_cache(root / key)
    if n_refs:
        refs = load_cache(refs_path)
        cache.ref_clips, cache.ref_images, cache.ref_specs = (
            refs.ref_clips,
            refs.ref_images,
            refs.ref_specs,
        )
    if n_ends:
        ends = load_cache(ends_path)
        cache.end_frames, cache.end_specs = ends.end_frames, ends.end_specs
    if n_conts:  # drawn like the other clips: their share of video batches is their count's
        conts = load_cache(conts_path)
        cache.clips = torch.cat([cache.clips, conts.clips])
        cache.clip_specs = cache.clip_specs + conts.clip_specs
    accelerator.print(
        f"latent cache {root / key}: {len(cache.clips)} clips, {len(cache.images)} images, "
        f"{n_refs} reference clips, {n_ends} extra clip end frames "
        f"({n_conts} of the clips are extra continuations, k in {k_lo}..{k_hi})"
    )
    return cache


def main(cfg: DiTTrainConfig) -> Path:
    started = time.time()  # time_limit_minutes counts from here: caches and loading included
    # ======================================================== setup
    # the config's own checks, before the run folder is written
    model_factory(cfg)
    if cfg.model.prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"model.prediction_type must be one of {PREDICTION_TYPES}, "
            f"got {cfg.model.prediction_type!r}"
        )
    if cfg.timestep_sampling not in TIMESTEP_SAMPLINGS:
        raise ValueError(
            f"timestep_sampling must be one of {TIMESTEP_SAMPLINGS}, got {cfg.timestep_sampling!r}"
        )
    if cfg.loss_space not in LOSS_SPACES:
        raise ValueError(f"loss_space must be one of {LOSS_SPACES}, got {cfg.loss_space!r}")
    if cfg.loss_space == "sample" and cfg.model.prediction_type != "sample":
        raise ValueError(
            "loss_space 'sample' needs model.prediction_type 'sample' (x0-prediction), got "
            f"{cfg.model.prediction_type!r}"
        )
    if cfg.data.source not in DATA_SOURCES:
        raise ValueError(f"data.source must be one of {DATA_SOURCES}, got {cfg.data.source!r}")
    if cfg.data.source == "shards" and not cfg.data.shards:
        raise ValueError("data.source is 'shards' but data.shards is empty")
    if cfg.data.validation_shards and cfg.data.source != "shards":
        raise ValueError("data.validation_shards needs data.source 'shards'")
    if set(cfg.data.validation_shards) & set(cfg.data.shards):
        raise ValueError("data.validation_shards must not name shards data.shards trains on")
    if cfg.data.clip_frame_prob > 0 and cfg.data.source != "shapes":
        raise ValueError(
            "data.clip_frame_prob needs data.source 'shapes' (the latent cache's clips)"
        )
    if len(cfg.data.continuation_frames) != 2 or cfg.data.cache_continuations < 0:
        raise ValueError(
            "data.continuation_frames must be [lo, hi] and data.cache_continuations >= 0, got "
            f"{list(cfg.data.continuation_frames)} and {cfg.data.cache_continuations}"
        )
    if cfg.export_dtype not in EXPORT_DTYPES:
        raise ValueError(
            f"export_dtype must be one of {sorted(EXPORT_DTYPES)}, got {cfg.export_dtype!r}"
        )
    if cfg.image_model_from is not None:
        if cfg.image_model_for is not None:
            raise ValueError("image_model_from and image_model_for exclude each other")
        if not (Path(cfg.image_model_from) / "image_transformer").is_dir():
            raise ValueError(
                f"image_model_from: no saved pipeline with an image_transformer at "
                f"{cfg.image_model_from}"
            )
    if cfg.image_model_for is not None:
        if any(s.frames != 1 for s in cfg.stages):
            raise ValueError("image_model_for trains an image model: every stage needs frames: 1")
        if not (Path(cfg.image_model_for) / "model_index.json").is_file():
            raise ValueError(f"image_model_for: no saved pipeline at {cfg.image_model_for}")
    vae_spec = str(cfg.vae)
    if not Path(vae_spec).expanduser().exists() and (
        vae_spec.startswith((".", "/", "~")) or vae_spec.count("/") != 1  # not a hub id
    ):  # before the run folder is written, and before a hub lookup's misleading message
        raise ValueError(
            f"vae {vae_spec} not found: train one first (studio train vae --config "
            "configs/train/vae_shapes.yaml writes runs/vae/final), or set vae= to a VAE folder"
        )
    # image batches (F = 1) leave the temporal and swap paths unused
    accelerator, out = start_run(
        cfg,
        resolve_mixed_precision(cfg.mixed_precision),
        find_unused_parameters=True,
        accumulation=cfg.gradient_accumulation_steps,
        report_to=cfg.report_to,
    )
    rank = accelerator.process_index
    vae = load_vae(cfg.vae).to(accelerator.device).eval().requires_grad_(False)
    space = LatentSpace(vae)
    check_latent_frames(cfg, space)  # before any data is encoded
    image_source = None  # loaded once: previews and the export share it
    if cfg.image_model_from is not None:
        image_source = ImageModelSource.load(cfg.image_model_from)
    text_encoder, tokenizer = load_text_encoder(cfg.text_encoder)
    text_encoder.to(accelerator.device)
    latent_size = cfg.data.size // space.spatial_scale
    if cfg.data.source == "shapes" and (
        cfg.data.size % space.spatial_scale or latent_size % cfg.model.patch_size
    ):
        raise ValueError(  # before the latent cache is built, not after it
            f"data.size {cfg.data.size} must be a multiple of the VAE's {space.spatial_scale} px "
            f"per latent times model.patch_size {cfg.model.patch_size}"
        )

    # ======================================================== data: latent cache (Shapes World)
    if cfg.data.source == "shards":  # fail now, not at the epoch that starves a reader
        check_shard_split(cfg, accelerator.num_processes)
    shard_latents = None
    if cfg.data.latents is not None:  # shards encoded once (those not encoded yet: now)
        shard_latents = prepare_shard_latents(cfg, vae, text_encoder, tokenizer, accelerator)
    cache = ends = None
    if cfg.data.source == "shapes":
        cache = _shapes_cache(cfg, vae, out, accelerator)
        if cfg.data.clip_frame_prob > 0:
            ends = clip_end_frames(cache, space.frame_wise)
            if ends is None:
                raise ValueError(
                    "data.clip_frame_prob > 0 but the cache has no single- or two-object clips "
                    "(set data.cache_clips or data.cache_end_frames; with a video VAE only "
                    "data.cache_end_frames counts)"
                )
            accelerator.print(f"clip end frames: {len(ends[1])} clips")

    # ======================================================== model, optimiser, EMA
    model = build_model(cfg, space.channels, text_hidden_size(text_encoder), latent_size)
    if cfg.init_from:
        fresh = init_weights_from(model, cfg.init_from, partial=cfg.init_partial)
        accelerator.print(f"initialised from {cfg.init_from}; {len(fresh)} new tensors")
    if cfg.training == "lora":
        add_lora(model, cfg)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    accelerator.print(
        f"VideoDiT {cfg.model.size}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"
    )
    teacher = None
    if cfg.guidance_distill.teacher is not None:
        teacher = GuidanceTeacher.load(cfg, text_encoder, tokenizer, accelerator.device)
        accelerator.print(f"guidance distillation from {cfg.guidance_distill.teacher}")
    ema = EMAModel(
        trained(model),
        decay=cfg.ema_decay,
        use_ema_warmup=True,
        power=0.75,
        model_cls=VideoDiT,
        model_config=model.config,
    )
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99)
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    ema.to(accelerator.device)

    validation = None
    if cfg.validation_clips:
        validation = ValidationSet.build(cfg, vae, text_encoder, tokenizer, accelerator.device)

    # ======================================================== resume
    start = resume(accelerator, out, states={"ema": ema})
    total = min(cfg.total_steps, cfg.max_steps or cfg.total_steps)

    # ======================================================== train
    if accelerator.is_main_process:
        drop_log_after(out / "log.jsonl", start)
        drop_log_after(out / "validation.jsonl", start)
    log = (out / "log.jsonl").open("a") if accelerator.is_main_process else None
    bar = tqdm(
        range(start, total),
        initial=start,
        total=total,
        desc="dit",
        disable=not accelerator.is_main_process,
    )
    t_last, samples_since, loss_sum, loss_n = time.time(), 0, 0.0, 0
    model.train()
    streams: dict[tuple[int, bool], ShardBatchStream] = {}
    accumulate = cfg.gradient_accumulation_steps
    deadline = None if cfg.time_limit_minutes is None else started + 60 * cfg.time_limit_minutes
    interrupt = InterruptFlag()  # Ctrl-C: finish the step, checkpoint it, then stop
    try:
        for step in bar:
            stage_idx, stage = stage_at(cfg, step)
            step_loss, step_samples = 0.0, 0
            # the rate this step trains at (the step advances it)
            lr_used = schedule.get_last_lr()[0]
            for micro in range(accumulate):  # one optimizer step: `accumulate` micro-batches
                with accelerator.accumulate(model):
                    x0, loss = batch_loss(
                        cfg, step, micro, rank, cache, ends, streams, vae, text_encoder, tokenizer,
                        model, accelerator, shard_latents, teacher,
                    )  # fmt: skip
                    optimizer_step(accelerator, model, optimizer, schedule, loss, cfg.grad_clip)
                step_loss += accelerator.reduce(loss.detach(), reduction="mean").item() / accumulate
                step_samples += x0.shape[0] * accelerator.num_processes
            ema.step(trained(accelerator.unwrap_model(model)))

            loss_sum += step_loss
            loss_n += 1
            samples_since += step_samples
            if (step + 1) % cfg.log_every == 0:
                elapsed = time.time() - t_last
                entry = {
                    "step": step + 1,
                    "stage": stage.name,
                    "loss": loss_sum / loss_n,
                    "samples_per_s": samples_since / elapsed,
                    "lr": lr_used,
                    "processes": accelerator.num_processes,
                    "effective_batch": step_samples,  # per optimizer step, all processes
                }
                bar.set_postfix(
                    stage=stage.name,
                    loss=f"{entry['loss']:.4f}",
                    sps=f"{entry['samples_per_s']:.1f}",
                )
                if log:
                    log.write(json.dumps(entry) + "\n")
                    log.flush()
                accelerator.log({k: v for k, v in entry.items() if k != "stage"}, step=step + 1)
                t_last, samples_since, loss_sum, loss_n = time.time(), 0, 0.0, 0
            # every process stops at the same step: the first past its deadline (or asked to stop
            # with Ctrl-C) decides
            due = (step + 1) % cfg.save_every == 0 or step + 1 == total
            out_of_time = interrupt.checkpoint(
                accelerator, out, step + 1, due, states={"ema": ema}, deadline=deadline
            )
            if validation is not None and cfg.sample_every and (step + 1) % cfg.sample_every == 0:
                val = validation.loss(accelerator.unwrap_model(model), cfg, accelerator)
                if accelerator.is_main_process:
                    with (out / "validation.jsonl").open("a") as fh:
                        fh.write(json.dumps({"step": step + 1, "validation_loss": val}) + "\n")
                accelerator.log({"validation_loss": val}, step=step + 1)
            if (
                accelerator.is_main_process
                and cfg.sample_every
                and (step + 1) % cfg.sample_every == 0
            ):
                write_samples(
                    accelerator.unwrap_model(model),
                    ema,
                    vae,
                    text_encoder,
                    tokenizer,
                    cfg,
                    out / "samples" / f"step-{step + 1:07d}",
                    image_source,
                )
                log_previews(accelerator, out / "samples" / f"step-{step + 1:07d}", step + 1)
            if out_of_time:
                accelerator.print(
                    f"time limit ({cfg.time_limit_minutes} min) reached at step {step + 1} of "
                    f"{total}: checkpointed; exporting"
                )
                break
    finally:  # on any way out: a later Ctrl-C in this process acts as usual
        interrupt.restore()
    # ======================================================== data report (shards)
    if streams:
        report_data(accelerator, streams, out)

    # ======================================================== export (EMA weights)
    accelerator.wait_for_everyone()
    final = out / ("lora" if cfg.training == "lora" else "pipeline")
    if accelerator.is_main_process and cfg.training == "lora":
        export_lora(accelerator.unwrap_model(model), ema, out)
        accelerator.print(f"saved the LoRA adapter (EMA weights) to {final}")
    elif accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        ema.store(trained(unwrapped))
        ema.copy_to(trained(unwrapped))
        exported = unwrapped.eval()
        if cfg.export_dtype != "float32":
            exported = copy.deepcopy(exported).to(EXPORT_DTYPES[cfg.export_dtype])
        if cfg.image_model_for is not None:
            pipe = image_model_pipeline(cfg, exported, text_encoder, tokenizer)
        else:
            pipe = make_pipeline(cfg, exported, vae, text_encoder, tokenizer, image_source)
            if image_source is not None:  # saved as the source stored it
                pipe.image_transformer.to(image_source.stored_dtype)
        pipe.save_pretrained(final)  # the text encoder too, where its spec is a local folder
        ema.restore(trained(unwrapped))
        accelerator.print(f"saved pipeline with EMA weights to {final}")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the process group (see studio/batch.py)
    return final


def report_data(accelerator, streams: dict, out: Path) -> dict[str, int]:
    """Sum every rank's shard counts (this run of the process, not the whole training) →
    ``data_stats.json`` and one line on the console."""
    from accelerate.utils import gather_object

    mine: dict[str, int] = {}
    for stream in streams.values():
        for k, v in stream.stats().items():
            mine[k] = mine.get(k, 0) + v
    total: dict[str, int] = {}
    for counts in gather_object([mine]):
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
    if accelerator.is_main_process:
        (out / "data_stats.json").write_text(json.dumps(total, indent=1, sort_keys=True))
        accelerator.print("data: " + ", ".join(f"{k} {v}" for k, v in sorted(total.items())))
    return total


@torch.no_grad()
def write_samples(
    model,
    ema,
    vae,
    text_encoder,
    tokenizer,
    cfg: DiTTrainConfig,
    folder: Path,
    image_source: ImageModelSource | None = None,
) -> None:
    """Preview videos with the EMA weights (the training weights are restored after)."""
    folder.mkdir(parents=True, exist_ok=True)
    ema.store(trained(model))
    ema.copy_to(trained(model))
    model.eval()
    try:
        if cfg.image_model_for is not None:  # first frames of the video pipeline it is for
            pipe, frames = image_model_pipeline(cfg, model, text_encoder, tokenizer), 1
        else:
            pipe = make_pipeline(cfg, model, vae, text_encoder, tokenizer, image_source)
            last = cfg.stages[-1].frames
            frames = last if last > 1 else LatentSpace(vae).frames_at_most(16)
        for i, prompt in enumerate(cfg.sample_prompts):
            video = pipe(
                prompt,
                num_frames=frames,
                height=cfg.data.size,
                width=cfg.data.size,
                num_inference_steps=cfg.sample_steps,
                guidance_scale=cfg.guidance_scale,
                generator=torch.Generator().manual_seed(i),
            ).frames[0]
            write_video(folder / f"{i}.mp4", to_uint8(video), fps=8)
        (folder / "prompts.json").write_text(json.dumps(cfg.sample_prompts, indent=1))
    finally:
        ema.restore(trained(model))
        model.train()
