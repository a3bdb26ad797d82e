"""Typed training configs. Every default lives here; a YAML file states only what changes.

``load_config(Cls, path, overrides)`` merges defaults ← YAML ← ``key=value`` overrides with
OmegaConf's structured configs, so an unknown key or a wrong type is an error naming it.
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

if TYPE_CHECKING:
    from pipelines.latent_space import LatentSpace

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says which key and why."""


def _check(obj: Any, prefix: str = "", **rules: tuple[float | None, float | None]) -> None:
    """Range checks at construction (every config is built through its dataclass, so a YAML
    file, a ``key=value`` override and a test all pass here): ``name=(lo, hi)``, inclusive,
    ``None`` = unbounded. ``None`` values (optional fields) are not checked."""
    for name, (lo, hi) in rules.items():
        value = getattr(obj, name)
        if value is None:
            continue
        bad = isinstance(value, float) and not math.isfinite(value)
        bad = bad or (lo is not None and value < lo) or (hi is not None and value > hi)
        if bad:
            lo_s = "-inf" if lo is None else f"{lo:g}"
            hi_s = "inf" if hi is None else f"{hi:g}"
            raise ConfigError(f"{prefix}{name} must be in [{lo_s}, {hi_s}], got {value!r}")


POSITIVE_INT = (1, None)
NON_NEGATIVE = (0, None)
SHARE = (0.0, 1.0)
TINY = 1e-12  # clip norms, noise spreads and shifts must be > 0 (a learning rate may be 0: frozen)
REPORT_TO = ("none", "tensorboard", "wandb")


@dataclass
class VAETrainConfig:
    output_dir: str = "runs/vae"
    model: str = "vae_shapes"  # factory in pipelines.components.VAE_MODELS
    # constructor arguments over the factory's (AutoencoderKL's: latent_channels,
    # block_out_channels, down_block_types, ...); a new VAE only, not with ``init``
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    size: int = 64
    batch_size: int = 32
    steps: int = 3000
    lr: float = 1e-3
    warmup: int = 100
    kl_weight: float = 1e-6
    l1_weight: float = 1.0
    foreground_weight: float = 10.0  # extra loss weight on object pixels (see train_vae)
    seed: int = 0
    log_every: int = 50
    save_every: int = 500
    mixed_precision: str = "auto"  # auto | no | bf16 | fp16
    # Fine-tuning: start from this saved VAE (a diffusers folder) and keep its latent scaling;
    # ``anchor_weight`` keeps the encoder's latents of plain (non-sprite) frames where they
    # were, so a diffusion model trained on the old latents stays valid.
    init: str | None = None
    anchor_weight: float = 0.0
    mix: dict[str, float] | None = None  # ShapesWorld kind weights (None: its default mix)

    ARCHITECTURE: ClassVar[tuple[str, ...]] = ("model", "model_kwargs", "init")  # resume keeps

    def __post_init__(self) -> None:
        if self.init and self.model_kwargs:
            raise ConfigError("model_kwargs builds a new VAE: not with init (a saved VAE)")
        _check(
            self,
            size=(8, 1024),
            batch_size=POSITIVE_INT,
            steps=POSITIVE_INT,
            lr=(0.0, 1.0),
            warmup=NON_NEGATIVE,
            kl_weight=NON_NEGATIVE,
            l1_weight=NON_NEGATIVE,
            foreground_weight=NON_NEGATIVE,
            log_every=POSITIVE_INT,
            save_every=POSITIVE_INT,
            anchor_weight=NON_NEGATIVE,
        )


@dataclass
class StageConfig:
    """One curriculum stage (Frozen in Time: images first, then clips of growing length)."""

    name: str = "images"
    steps: int = 1000
    frames: int = 1  # frames per clip in this stage; 1 = images only
    batch_size: int = 32  # clips per video step
    image_batch_size: int = 64  # images per image step
    image_every: int = 0  # every k-th step is an image step (joint training); 0 = never
    lr: float | None = None  # None: keep the base learning rate
    # share of a video batch drawn from reference-element clips (needs data.cache_references
    # and model.max_references > 0); the rest stays text-to-video
    reference_prob: float = 0.0

    def __post_init__(self) -> None:
        _check(
            self,
            f"stage {self.name}: ",
            steps=POSITIVE_INT,
            frames=(1, 1024),
            batch_size=POSITIVE_INT,
            image_batch_size=POSITIVE_INT,
            image_every=NON_NEGATIVE,
            lr=(0.0, 1.0),
            reference_prob=SHARE,
        )


@dataclass
class BucketConfig:
    """One (frames, height, width) target of real-data batches with its batch size (pixels)."""

    frames: int = 16
    height: int = 64
    width: int = 64
    batch_size: int = 8

    def __post_init__(self) -> None:
        _check(
            self,
            "data.buckets: ",
            frames=(1, 1024),
            height=(8, 8192),
            width=(8, 8192),
            batch_size=POSITIVE_INT,
        )


@dataclass
class DataConfig:
    source: str = "shapes"  # shapes (procedural Shapes World) | shards (WebDataset tars)
    # source=shards: local paths, globs, brace patterns, directories or URLs of tars
    # (``studio data pack`` / ``studio data shapes`` write them); frames are VAE-encoded on
    # the fly. Batches come from ``buckets`` (train/buckets.py); none given → one video
    # bucket per stage (stage.frames, size, size, stage.batch_size) and one image bucket
    # (1, size, size, stage.image_batch_size). A stage uses the buckets with ≤ its frames.
    shards: list[str] = field(default_factory=list)
    # shards training never reads, for ``validation_clips`` (a held-out loss); empty: the
    # first clips of ``shards`` (also trained on: a fixed probe of progress, not held out)
    validation_shards: list[str] = field(default_factory=list)
    buckets: list[BucketConfig] = field(default_factory=list)
    shuffle: int = 256  # shuffle buffer (samples); 0 = shard order
    num_workers: int = 0  # workers decoding shards, or rendering the Shapes World latent cache
    # How ranks × workers share the shards: "shards" (each reads its own shards) or
    # "samples" (each reads all, keeps every n-th: use it when few shards hold the images)
    split_by: str = "shards"
    # source=shards: a folder of the shards' VAE latents and caption states, encoded once
    # (train/precompute.py; ``studio data encode CONFIG`` fills it ahead of a run) and read
    # instead of decoding and encoding every step; shards not in it yet (or changed since)
    # are encoded when the run starts. Clips are cached whole, so the batches are the same
    # as without it (up to float16 rounding). None: encode on the fly.
    latents: str | None = None
    seed: int = 0
    size: int = 64
    clip_frames: int = 16  # length of the cached clips
    cache_clips: int = 4000  # clips encoded once into the latent cache
    cache_images: int = 8000
    cache_references: int = 0  # reference-element clips (sprites, <refN> captions) cached
    cache_dir: str | None = None  # default: <output_dir>/latents
    cond_prob: float = 0.25  # chance a clip gets a random clean prefix (conditioning frames)
    # chance a clip gets exactly its first frame clean (image-to-video). With the object's
    # start known, only the caption's direction tells where it goes: a strong signal for
    # binding motion words, which text-to-video alone barely gives (an unknown start
    # position blurs left and right alike).
    first_frame_prob: float = 0.0
    reverse_prob: float = 0.25  # time-reversed clips (motion flipped in the caption)
    # Share of an image batch drawn from the end frames of clips, captioned as their clip
    # (the first frame with the clip's caption, the last with the time-reversed caption): a
    # first-frame image model (``image_model_for``) learns where a clip's objects start from
    # the words a video prompt has. The rest are images with image captions.
    clip_frame_prob: float = 0.0
    # extra single- and two-object clips of which only the first and last frames are encoded
    # for clip_frame_prob (cached beside the clips; the cached clips' own ends count too)
    cache_end_frames: int = 0
    # extra continuation clips (shapes_world.md "Scene changes": the first k frames given, k
    # in continuation_frames, half of them switching motion at k), cached beside the clips
    # and drawn with them: storyboard windows continue a few given frames (their context)
    cache_continuations: int = 0
    continuation_frames: list[int] = field(default_factory=lambda: [2, 8])
    # chance an up or down motion in a training caption is phrased from the WordNet table
    # (world/wordnet_phrasings.py: lemmas of rise/climb/fall/drop's motion senses and of
    # upward/downward) instead of the grammar's five phrasings per direction; 0 = the
    # grammar alone (docs/CAPTIONS.md), as every run before the WordNet step (2026-11-28)
    wordnet_phrasing_prob: float = 0.0
    # chance a caption (clip or image) is built in another sentence structure
    # (world.shapes_world.restructured_caption: the grammar's words, the background said first
    # or apart, objects as "there is …", "one …", "a … that is small"); 0 = the grammar's one
    # structure, as every shipped step (experiments/sentence_structures)
    sentence_structure_prob: float = 0.0

    def __post_init__(self) -> None:
        _check(
            self,
            "data.",
            shuffle=NON_NEGATIVE,
            num_workers=(0, 256),
            size=(8, 8192),
            clip_frames=(1, 1024),
            cache_clips=NON_NEGATIVE,
            cache_images=NON_NEGATIVE,
            cache_references=NON_NEGATIVE,
            cond_prob=SHARE,
            first_frame_prob=SHARE,
            reverse_prob=SHARE,
            clip_frame_prob=SHARE,
            cache_end_frames=NON_NEGATIVE,
            cache_continuations=NON_NEGATIVE,
            wordnet_phrasing_prob=SHARE,
            sentence_structure_prob=SHARE,
        )
        if self.split_by not in ("shards", "samples"):
            raise ConfigError(f"data.split_by must be shards or samples, got {self.split_by!r}")
        if self.latents is not None and not self.latents.strip():
            raise ConfigError("data.latents must name a folder (or be null), got an empty string")
        if self.latents is not None and self.source != "shards":
            raise ConfigError(
                f"data.latents caches shard data: it needs data.source shards, got {self.source!r}"
            )


@dataclass
class ModelConfig:
    size: str = "dit_s"  # factory in models.video_dit.VIDEO_DIT_MODELS
    patch_size: int = 4
    window: list[int] = field(default_factory=lambda: [4, 2, 2])
    prediction_type: str = "velocity"  # velocity | sample (x0; see models/video_dit.py)
    max_references: int = 0  # reference images per prompt (0: text-to-video only)
    # zero-initialised space-time self-attention with 3-D rotary positions in every block
    space_time_rope: bool = False
    # trainable layers over the caption tokens (models/video_dit.py; experiments/binding)
    text_refiner_layers: int = 0
    # the guidance scale as an input (a guidance-distilled student: guidance_distill)
    guidance_embeds: bool = False

    def __post_init__(self) -> None:
        _check(
            self, "model.", patch_size=(1, 64), max_references=(0, 16), text_refiner_layers=(0, 16)
        )


@dataclass
class GuidanceDistillConfig:
    """Guidance distillation (Meng et al., arXiv:2210.03142, stage one): the model, given the
    guidance scale as an input (``model.guidance_embeds``), learns its teacher's guided
    output ``u + w·(c − u)`` (c: the caption's output, u: the empty caption's) at the same
    noised latents, w drawn uniformly from ``scales``; sampling then takes one model call a
    step instead of two (experiments/guidance_distill)."""

    # saved pipeline (its transformer, or with image_model_for its image_transformer) or
    # model folder whose guided output is learnt; None = no distillation (the data's flow)
    teacher: str | None = None
    scales: list[float] = field(default_factory=lambda: [1.0, 6.0])

    def __post_init__(self) -> None:
        if len(self.scales) != 2 or not 0.0 <= self.scales[0] <= self.scales[1] <= 50.0:
            raise ConfigError(
                f"guidance_distill.scales must be [lo, hi] with 0 <= lo <= hi <= 50, got "
                f"{list(self.scales)}"
            )


@dataclass
class LoRAConfig:
    """Low-rank adapters (peft) on the DiT's attention projections: ``training: lora``."""

    rank: int = 8
    alpha: float = 8.0  # the adapter's update is scaled by alpha / rank
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])

    def __post_init__(self) -> None:
        _check(self, "lora.", rank=(1, 1024), alpha=(TINY, 1e6))
        if not self.target_modules:
            raise ConfigError("lora.target_modules must name at least one module")


@dataclass
class DiTTrainConfig:
    output_dir: str = "runs/dit"
    # a diffusers VAE folder: AutoencoderKL (frame-wise), or a video VAE (AutoencoderKLWan,
    # AutoencoderKLCogVideoX, AutoencoderKLLTXVideo) whose clips are 1 + k·step frames
    # (pipelines/latent_space.py; checked when a run starts: check_latent_frames)
    vae: str = "runs/vae/final"
    text_encoder: str = "minilm"
    # tokens a caption keeps (longer ones are cut, with a warning); saved with the pipeline,
    # which encodes prompts the same way
    text_max_length: int = 64
    model: ModelConfig = field(default_factory=ModelConfig)
    # Fine-tuning: start the transformer from this saved pipeline (its ``transformer``
    # folder) or transformer folder; parameters the saved model lacks (e.g. a new reference
    # path) keep their fresh initialisation. The architecture keys of ``model`` must match.
    init_from: str | None = None
    # with init_from: tensors of another shape (a new patch size's patch embedding and output)
    # keep their fresh initialisation instead of being an error
    init_partial: bool = False
    # Train a first-frame image model for this saved pipeline (Emu Video's factorisation):
    # the run saves that pipeline with the trained model as its ``image_transformer``,
    # sampled with this run's ``timestep_shift`` (its ``image_shift``). Stages must be
    # images only (frames: 1).
    image_model_for: str | None = None
    # The other way round: train a video model for the first-frame image model of this saved
    # pipeline; the run saves (and previews) its pipeline with that ``image_transformer``,
    # ``image_shift``, ``image_stochastic`` and ``first_frame_guidance`` kept.
    image_model_from: str | None = None
    # "full": every weight trains; "lora": the init_from model stays frozen and low-rank
    # adapters train (``lora``); the run saves the adapter (<output_dir>/lora), loaded with
    # ``studio generate --lora`` or the pipeline's ``load_lora_weights``
    training: str = "full"
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    # dtype the exported trained model is stored in ("float32" | "float16": half the bytes;
    # it is loaded back at the pipeline's dtype)
    export_dtype: str = "float32"
    data: DataConfig = field(default_factory=DataConfig)
    stages: list[StageConfig] = field(
        default_factory=lambda: [
            StageConfig(name="images", steps=600, frames=1, image_batch_size=64),
            StageConfig(name="clips8", steps=1600, frames=8, batch_size=16, image_every=4),
            StageConfig(name="clips16", steps=1400, frames=16, batch_size=12, image_every=4),
        ]
    )
    lr: float = 4e-4
    # Learning rate of the text path (text_proj, pooled_proj, every cross_attn), × lr.
    text_lr_multiplier: float = 1.0
    weight_decay: float = 0.0
    warmup: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    text_dropout: float = 0.1
    # extra chance that a reference clip loses its references (guidance learns the
    # unconditional; a dropped caption always drops its references too)
    reference_dropout: float = 0.1
    # Timestep density: "logit_normal" (SD3; mean/std below) concentrates training on
    # mid noise; "uniform" (rectified flow) trains both ends as much as the middle — on a
    # 16×16 latent with small objects the layout is decided above t = 0.9 and the edges
    # below t = 0.2, where logit-normal(0, 1) puts only ~1.4 % and ~8 % of its samples.
    timestep_sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # SD3's timestep shift t' = s·t / (1 + (s − 1)·t), applied to the density above and used
    # by the saved pipeline's sampler (scheduler ``shift``), so the model is sampled where it
    # was trained. A 16-frame clip has 16× an image's latents: its layout and motion are
    # decided above t = 0.95 (sampling from a real clip noised to 0.95 keeps its motion,
    # from 0.98 loses it), where logit-normal(0.8, 0.8) puts 0.4 % of its samples.
    timestep_shift: float = 1.0
    # The saved pipeline's default sampling: the first frame as an image, then the clip
    # continuing it (Emu Video); for models trained with data.first_frame_prob > 0.
    sample_image_first: bool = False
    # Extra loss weight on object latents (found as latents far from their frame's median,
    # the background), dilated by one latent pixel; 1 = plain mean. Small objects cover
    # ~5 % of a frame, so without it the loss is mostly background.
    foreground_weight: float = 1.0
    foreground_threshold: float = 1.5
    # Binding hard negatives (experiments/binding): for every two-object Shapes World clip
    # whose objects move differently, the same noised clip is also denoised under its caption
    # with the two motions swapped, and a hinge asks the object-pixel error under the true
    # caption to stay below the swapped one's by ``binding_margin`` in log terms:
    # binding_weight · relu(margin + log e_true − log e_swapped). 0 = off.
    binding_weight: float = 0.0
    binding_margin: float = 0.1
    # Given frames as the model will meet them (experiments/elements_vae/REPORT.md): at sampling they are
    # its own earlier frames (image-first's frame 0, a storyboard window's context), blobs
    # with rounded corners, not renders. In ``context_blur_prob`` of the clips with given
    # frames, those frames' latents are blurred (Gaussian, sigma uniform in [0,
    # ``context_blur``] latent pixels) while the frames to generate keep their clean
    # targets: the model learns to continue a blob as the shape its caption names. 0 = off.
    context_blur: float = 0.0
    context_blur_prob: float = 0.5
    # Where the loss is taken: "velocity" (ε − x0; with x0-prediction that is |x0 − x̂0|²/t²,
    # so low-noise samples dominate) or "sample" (|x0 − x̂0|², x0-prediction only: every noise
    # level alike, so the high-noise samples, where the caption alone decides the layout and
    # the motion, carry their share).
    loss_space: str = "velocity"
    seed: int = 0
    log_every: int = 25
    save_every: int = 250
    sample_every: int = 1000
    sample_prompts: list[str] = field(
        default_factory=lambda: [
            "a red square moving right on a black background",
            "a large yellow circle moving up and a small green triangle moving left on a gray background",
        ]
    )
    sample_steps: int = 20
    guidance_scale: float = 4.0
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    # micro-batches per optimizer step (accelerate's accumulate): the effective batch is a
    # stage's batch × this × processes; steps, schedule and checkpoints count optimizer steps
    gradient_accumulation_steps: int = 1
    # accelerate trackers for loss, lr, throughput, validation loss and previews:
    # "tensorboard" (logs in <output_dir>/logs), "wandb", or "none" (log.jsonl only)
    report_to: str = "none"
    # held-out validation loss every sample_every steps, on this many fixed Shapes World
    # clips (their own seed, fixed noise and timesteps); 0 = none
    validation_clips: int = 0
    max_steps: int | None = None  # stop early (for tests); None = run all stages
    # Stop at the first step that ends past this many minutes since the run started (building
    # its caches and loading the models count), checkpoint there and export as at the end: a
    # lent machine's fixed lease (benchmarks/gpu_train). None = no limit.
    time_limit_minutes: float | None = None
    guidance_distill: GuidanceDistillConfig = field(default_factory=GuidanceDistillConfig)

    # keys a resume must keep (train.checkpoint.check_resumable)
    ARCHITECTURE: ClassVar[tuple[str, ...]] = (
        "model", "vae", "text_encoder", "data.size", "training", "lora",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("stages must list at least one stage")
        _check(
            self,
            lr=(0.0, 1.0),
            text_lr_multiplier=(0.0, 1e4),
            weight_decay=NON_NEGATIVE,
            warmup=NON_NEGATIVE,
            grad_clip=(TINY, None),
            ema_decay=(0.0, 1.0),
            text_dropout=SHARE,
            reference_dropout=SHARE,
            logit_std=(TINY, None),
            timestep_shift=(TINY, 1e4),
            foreground_weight=NON_NEGATIVE,
            binding_weight=NON_NEGATIVE,
            binding_margin=NON_NEGATIVE,
            context_blur=(0.0, 16.0),
            context_blur_prob=SHARE,
            log_every=POSITIVE_INT,
            save_every=POSITIVE_INT,
            sample_every=NON_NEGATIVE,
            sample_steps=(1, 1000),
            guidance_scale=(0.0, 100.0),
            max_steps=POSITIVE_INT,
            time_limit_minutes=(TINY, None),
            text_max_length=(1, 4096),
            gradient_accumulation_steps=(1, 4096),
            validation_clips=(0, 4096),
        )
        if self.training not in ("full", "lora"):
            raise ConfigError(f"training must be full or lora, got {self.training!r}")
        if self.training == "lora" and not self.init_from:
            raise ConfigError("training: lora adapts a trained model: set init_from")
        if self.report_to not in REPORT_TO:
            raise ConfigError(f"report_to must be one of {REPORT_TO}, got {self.report_to!r}")
        if self.guidance_distill.teacher is not None and not self.model.guidance_embeds:
            raise ConfigError(
                "guidance_distill.teacher needs model.guidance_embeds: true (the student takes "
                "the guidance scale as an input)"
            )

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


def check_latent_frames(cfg: DiTTrainConfig, space: LatentSpace) -> None:
    """ConfigError, before any data is encoded, for what a video VAE cannot train on: frame
    counts (stages, ``data.clip_frames``, buckets) other than ``1 + k·step``; and, with a
    non-causal one (CogVideoX), what relies on a clip's prefix being encoded alone (stages
    shorter than the cached clips, cached shard latents, image-first sampling)."""
    if space.frame_wise:
        return
    name = type(space.vae).__name__

    def check(frames: int, key: str) -> None:
        if not space.valid_frames(frames):
            below, above = space.nearest_frames(frames)
            raise ConfigError(
                f"{key} is {frames}: {name} takes clips of 1 + k·{space.frame_step} frames "
                f"(temporal compression {space.temporal_scale}); the nearest valid counts are "
                f"{below} and {above}"
            )

    for stage in cfg.stages:
        check(stage.frames, f"stage {stage.name}: frames")
    if cfg.data.source == "shapes":
        check(cfg.data.clip_frames, "data.clip_frames")
    for bucket in cfg.data.buckets:
        check(bucket.frames, "data.buckets: frames")
    if space.causal:
        return
    why = f"{name} is not causal (the latents of a clip's first frames depend on the rest)"
    shorter = [s.name for s in cfg.stages if 1 < s.frames != cfg.data.clip_frames]
    if cfg.data.source == "shapes" and shorter:
        raise ConfigError(
            f"stages {shorter} cut clips shorter than data.clip_frames = "
            f"{cfg.data.clip_frames}: {why}; give every clip stage frames: "
            f"{cfg.data.clip_frames}"
        )
    if cfg.data.latents is not None:
        raise ConfigError(
            f"data.latents caches whole clips and cuts their prefixes: {why}; encode on the "
            "fly (data.latents: null)"
        )
    if cfg.sample_image_first:
        raise ConfigError(f"sample_image_first needs a causal VAE: {why}")


@dataclass
class ScorerModelConfig:
    size: str = "scorer_s"  # factory in models.video_text_scorer.SCORER_MODELS
    image_size: int = 64
    patch_size: int = 8
    num_frames: int = 8  # frames sampled evenly from a clip
    stem: str = "patch"  # "patch" | "conv" (models.video_text_scorer.VideoTextScorer)
    pool_dim: int = 0  # token-wise expansion before the max pool (0 = none)
    text_layers: int = 1  # trainable blocks over the frozen text encoder's token states

    def __post_init__(self) -> None:
        _check(
            self,
            "model.",
            image_size=(8, 1024),
            patch_size=(1, 256),
            num_frames=(1, 256),
            pool_dim=NON_NEGATIVE,
            text_layers=NON_NEGATIVE,
        )


@dataclass
class ScorerTrainConfig:
    """Contrastive training of the Shapes World video–text scorer (``studio train scorer``)."""

    output_dir: str = "runs/scorer"
    text_encoder: str = "minilm"  # frozen
    model: ScorerModelConfig = field(default_factory=ScorerModelConfig)
    # Fine-tuning: start from this saved scorer folder (e.g. studio/default_scorer); the
    # ``model`` keys must match its architecture. The schedule (warmup, cosine) starts afresh.
    init_from: str | None = None
    steps: int = 900
    batch_size: int = 32  # clips (or images) per step
    image_every: int = 5  # every k-th step is an image batch (joint training); 0 = never
    two_object_prob: float = 0.5
    # Counterfactual captions per sample added to the text side of the contrastive loss
    # (hard negatives: a changed colour or shape, a reversed direction, swapped bindings).
    hard_negatives: int = 2
    # Weight of an auxiliary loss: a linear head (training only) reads the clip's motions
    # from the video embedding and from the caption's (train_scorer.motion_aux_loss). 0 = off.
    motion_aux_weight: float = 0.0
    # The scorer judges every concept, so by default it sees the whole world; the
    # generator's training exclusions (purple clips, orange triangles, blue circles) are
    # about the generator's data.
    exclusions: bool = False
    lr: float = 5e-4
    warmup: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 25
    save_every: int = 200
    eval_clips: int = 200  # held-out clips evaluated at the end
    eval_seed: int = 9_000_001  # disjoint from training seeds
    mixed_precision: str = "auto"
    max_steps: int | None = None  # stop early (for tests)
    # Data with the generator's own faults (issue 34, train/scorer_data.py); all off by default,
    # and off leaves a step's batch and loss exactly as before. Video steps only.
    # Degraded renders: this many fresh layouts per step, each rendered and damaged by one of
    # ``degradations`` (scorer_data.DEGRADATIONS; empty = all), labelled by the judge
    # (``degraded_judge``; false: by the degradation's intent, the judge where it has none).
    # A kind listed twice is drawn twice as often. ``degraded_variants`` > 1 damages each
    # layout that many times and ranks the variants among themselves (scorer_data.degraded_groups).
    degraded_per_step: int = 0
    degradations: list[str] = field(default_factory=list)
    degraded_judge: bool = True
    degraded_variants: int = 1
    # Judged generated clips of training prompts: `studio batch` folders
    # (experiments/scorer_generated/make_generated.py), judged on load where not yet judged;
    # this many prompts per step, a share of them among prompts with both a correct and a
    # wrong sample. A correct sample is a positive of its caption, a wrong one a hard negative.
    generated_dirs: list[str] = field(default_factory=list)
    generated_per_step: int = 0
    generated_mixed_share: float = 0.5
    # Pairwise ranking (scorer_data.ranking_loss): a correct clip above a wrong one of the same
    # caption (mean over those pairs), plus ``rank_cross_weight`` × the mean over pairs across
    # captions; ``rank_margin`` in cosine units.
    rank_weight: float = 0.0
    rank_cross_weight: float = 0.0
    rank_margin: float = 0.0

    ARCHITECTURE: ClassVar[tuple[str, ...]] = ("model", "text_encoder")

    def __post_init__(self) -> None:
        _check(
            self,
            steps=POSITIVE_INT,
            batch_size=(2, None),  # contrastive: a batch needs negatives
            image_every=NON_NEGATIVE,
            two_object_prob=SHARE,
            hard_negatives=NON_NEGATIVE,
            motion_aux_weight=NON_NEGATIVE,
            lr=(0.0, 1.0),
            warmup=NON_NEGATIVE,
            weight_decay=NON_NEGATIVE,
            grad_clip=(TINY, None),
            log_every=POSITIVE_INT,
            save_every=POSITIVE_INT,
            eval_clips=NON_NEGATIVE,
            max_steps=POSITIVE_INT,
            degraded_per_step=NON_NEGATIVE,
            degraded_variants=(1, 8),
            generated_per_step=NON_NEGATIVE,
            generated_mixed_share=SHARE,
            rank_weight=NON_NEGATIVE,
            rank_cross_weight=NON_NEGATIVE,
            rank_margin=(0.0, 2.0),
        )
        from .scorer_data import DEGRADATIONS

        unknown = [k for k in self.degradations if k not in DEGRADATIONS]
        if unknown:
            raise ConfigError(f"unknown degradations {unknown}; allowed: {list(DEGRADATIONS)}")
        if self.generated_per_step and not self.generated_dirs:
            raise ConfigError("generated_per_step > 0 needs generated_dirs (judged batch folders)")
        if self.rank_weight and not (self.degraded_per_step or self.generated_per_step):
            raise ConfigError(
                "rank_weight > 0 ranks degraded or generated clips: set degraded_per_step or "
                "generated_per_step"
            )


def _load_yaml_layers(path: Path, seen: tuple[Path, ...] = ()) -> list:
    """The YAML at ``path`` after the layers of its ``base:`` chain, base first.

    ``base: other.yaml`` (relative to the file's folder) lets an experiment config state only
    what it changes; lists (``stages``) are replaced whole, mappings merged key by key.
    """
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise ConfigError(f"config base chain loops: {chain}")
    try:
        layer = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    if layer is not None and not isinstance(layer, DictConfig):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, got a list")
    base = layer.pop("base", None) if isinstance(layer, DictConfig) else None
    if base is None:
        return [layer]
    if not isinstance(base, str):
        raise ConfigError(f"bad config in {path}: base must be a file name, got {base!r}")
    return [*_load_yaml_layers(path.parent / base, (*seen, path.resolve())), layer]


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """defaults ← YAML (after its ``base:`` chain) ← ``key=value`` overrides → ``cls``."""
    layers = _load_yaml_layers(Path(path)) if path is not None else []
    where = f" in {path}" if path is not None else ""
    if overrides:  # a range check fails on the merged whole: the file or an override
        where = f"{where} with {' '.join(overrides)}"
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(cls), *layers)
        for item in overrides or []:
            key, sep, text = item.partition("=")
            try:
                if not sep or not key.strip():
                    raise ConfigError(f"bad override {item!r}: expected key=value")
                # the value read as the YAML of a dotlist, then set in place: an index into a
                # list (stages.0.steps=5) changes that item instead of failing to merge
                value = OmegaConf.from_dotlist([f"value={text}"]).value
                _set_override(cfg, key.strip(), value, item)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or "not valid YAML"
                raise ConfigError(f"bad override {item!r}: {problem}") from None
            except (OmegaConfBaseException, TypeError, IndexError) as exc:  # the override's fault
                raise ConfigError(f"bad override {item!r}: {str(exc).splitlines()[0]}") from None
        return OmegaConf.to_object(cfg)
    except ConfigError as exc:  # a range check of the dataclasses (or a bad override, as is)
        if str(exc).startswith("bad override"):
            raise
        raise ConfigError(f"bad config{where}: {exc}") from None
    except OmegaConfBaseException as exc:
        message = str(exc).splitlines()[0]
        # A type error's first line names only the value; say which key it was given for.
        key = getattr(exc, "full_key", None)
        if key:
            message = f"{key}: {message}"
        raise ConfigError(f"bad config{where}: {message}") from None


def _set_override(cfg: DictConfig, key: str, value: Any, item: str) -> None:
    """Set ``key`` (dotted; a list item by its index) to ``value`` in place. Under a key that
    is null (an optional mapping such as a VAE's ``mix``) the override builds the mapping, as
    a merged dotlist does; an index past a list's end is said as such."""
    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, ListConfig):
            if not part.isdigit() or int(part) >= len(node):
                where = ".".join(parts[:depth])
                raise ConfigError(
                    f"bad override {item!r}: {where} has {len(node)} items (indices 0.."
                    f"{len(node) - 1})"
                )
            node = node[int(part)]
        else:
            node = node.get(part) if isinstance(node, DictConfig) else None
        if node is None:  # an unset optional node: a merged dotlist creates it
            cfg.merge_with(OmegaConf.from_dotlist([item]))
            return
    OmegaConf.update(cfg, key, value, merge=True)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def cpu_has_fast_bf16() -> bool:
    """True where bf16 matrix products are fast on this CPU (AMX or AVX512-BF16).

    Without them PyTorch emulates bf16 GEMMs, which measured ~400× *slower* than fp32 here.
    """
    if platform.system() != "Linux":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("amx_bf16", "avx512_bf16"))


def resolve_mixed_precision(setting: str) -> str:
    """'auto' → bf16 on CUDA with bf16 support or on a CPU with AMX/AVX512-BF16, else 'no'."""
    allowed = ("auto", "no", "bf16", "fp16")
    if setting in (False, "False", "false"):
        # YAML 1.1 reads a bare `no` (in a file or a key=value override) as the boolean
        # false, which a str field then holds as "False".
        setting = "no"
    if setting in (True, "True", "true"):  # a bare yes/on/true: which precision is not said
        raise ConfigError(
            f"mixed_precision must be one of {allowed}, got yes/true: name one (bf16, fp16)"
        )
    if setting not in allowed:
        raise ConfigError(f"mixed_precision must be one of {allowed}, got {setting!r}")
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "no"
