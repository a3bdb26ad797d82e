"""Precomputed shard data: VAE latents and caption states encoded once per shard.

Training from shards otherwise decodes every clip and runs the VAE and the text encoder on
every step. With ``data.latents: DIR`` it reads what ``studio data encode`` (or the run
itself, for shards not encoded yet) stored there instead.

What is cached, and why whole clips: a clip is encoded *whole*, at every (height, width)
of the buckets of its kind (resized and centre-cropped as :func:`train.buckets.resize_crop`
does), an image at every image-bucket size. The VAE is frame-wise, so a window of a clip's
latents is the latents of that window: training cuts the same seeded random windows from
the cached latents that :class:`train.buckets.BucketBatches` cuts from pixels, and a run
with the cache sees the batches of a run without it, up to the float16 rounding of the
stored tensors. The stages' frame counts are therefore not part of the cache.

Layout of ``DIR``::

    DIR/<key>/cache.json                      what <key> stands for (written once)
    DIR/<key>/empty_text.safetensors          the empty caption's states (text dropout)
    DIR/<key>/<shard stem>-<id>.safetensors   one file per shard (below)

With a video VAE (:mod:`pipelines.latent_space`) a clip is encoded whole up to its longest
valid length (``1 + k·step`` frames) and stored as its latent frames; every window, cached or
not, is then the clip's first frames (a causal VAE's latents of those are the first latent
frames of the whole clip), so the two runs still see the same batches. Non-causal video VAEs
(CogVideoX) are refused (:func:`train.config.check_latent_frames`).

``<key>`` hashes everything that changes the stored numbers: the VAE (its config and
weights), the text encoder (spec, config and weights) and ``text_max_length``, the bucket
sizes, and :data:`FORMAT`. Another VAE is another key, so a cache is never read with a VAE
it was not made with. ``<id>`` hashes the shard's absolute path, size and mtime: a shard
that changes is encoded again (its old file is left behind, unused).

A shard's file holds, for its i-th raw sample (tar order, corrupt ones included so that
readers keep their place), ``i/latents/HxW`` (C, F, h, w) float16, ``i/text`` (L, D)
float16 and ``i/text_mask`` (L,) uint8; its metadata holds the samples' keys, kinds, shapes,
captions and meta as JSON. Every file is written to a temporary name and renamed into
place (pipelines/files.py), so a killed encoder leaves no file that reads as whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm

from pipelines.components import encode_text, load_text_encoder, load_vae
from pipelines.files import clean_stale_temps, temp_sibling, write_json_atomic
from pipelines.latent_space import LatentSpace

from .buckets import Bucket, BucketBatches, resize_crop
from .config import DiTTrainConfig, check_latent_frames
from .latent_cache import encode_pixels, encode_videos
from .shards import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, ShardDataset

__all__ = [
    "CachedBucketBatches",
    "CachedShardDataset",
    "ShardLatents",
    "cache_spec",
    "encode_config",
    "encode_shards",
    "prepare_shard_latents",
]

logger = logging.getLogger(__name__)

FORMAT = 1  # bump when what is stored, or how it is encoded, changes
ENCODE_FRAMES = 64  # frames per VAE call while encoding


# ---------------------------------------------------------------------------- the key
def fingerprint(module: torch.nn.Module, config: dict) -> str:
    """sha256 of a module's config (its public keys) and of every tensor of its state."""
    public = {
        k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"
    }
    digest = hashlib.sha256(json.dumps(public, sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()


def bucket_sizes(cfg: DiTTrainConfig) -> dict[str, list[list[int]]]:
    """[height, width] of every bucket of each kind ("video", "image"), as training makes
    them: ``data.buckets``, or ``data.size`` square for both kinds when none are given."""
    if not cfg.data.buckets:
        return {kind: [[cfg.data.size, cfg.data.size]] for kind in ("video", "image")}
    return {
        kind: sorted(
            {(b.height, b.width) for b in cfg.data.buckets if (b.frames == 1) == (kind == "image")}
        )
        for kind in ("video", "image")
    }


def cache_spec(cfg: DiTTrainConfig, vae, text_encoder) -> dict:
    """Everything that changes what a cache stores (its key is this dict's hash)."""
    sizes = bucket_sizes(cfg)
    spec = {
        "format": FORMAT,
        "vae": fingerprint(vae, dict(vae.config)),
        "text_encoder": {
            "spec": cfg.text_encoder,
            "weights": fingerprint(text_encoder, text_encoder.config.to_dict()),
            "max_length": cfg.text_max_length,
        },
        "sizes": {kind: [list(s) for s in sizes[kind]] for kind in sizes},
    }
    space = LatentSpace(vae)
    if not space.frame_wise:  # (absent for a frame-wise VAE: its caches keep their keys)
        spec["temporal"] = {"scale": space.temporal_scale, "step": space.frame_step}
    return spec


def _key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- the cache
@dataclass
class ShardLatents:
    """One key's folder of a shard latent cache (see the module docstring)."""

    folder: Path
    spec: dict
    empty_text: tuple[torch.Tensor, torch.Tensor]  # the empty caption: (L, D) f16, (L,) u8

    @property
    def key(self) -> str:
        return self.folder.name

    @classmethod
    @torch.no_grad()
    def create(
        cls, root: str | Path, spec: dict, text_encoder, tokenizer, vae_source: str = ""
    ) -> ShardLatents:
        """The cache for ``spec`` under ``root``, its key files written first if it is new
        (by one process: the others :meth:`open` it after)."""
        folder = Path(root) / _key(spec)
        folder.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(folder)  # a killed encoder's half-written files
        if not (folder / "cache.json").is_file():
            device = next(text_encoder.parameters()).device
            states, mask = encode_text(
                text_encoder, tokenizer, [""], spec["text_encoder"]["max_length"], device
            )
            tensors = {"text": states[0].half().cpu(), "text_mask": mask[0].to(torch.uint8).cpu()}
            _save_atomic(tensors, folder / "empty_text.safetensors", {"cache_key": folder.name})
            # cache.json last: its presence says the key's files are complete
            write_json_atomic(
                folder / "cache.json", {"key": folder.name, "vae_source": vae_source, "spec": spec}
            )
        return cls.open(root, spec)

    @classmethod
    def open(cls, root: str | Path, spec: dict) -> ShardLatents:
        """The cache for ``spec`` under ``root``; ValueError when there is none, saying what
        the caches there were made with."""
        folder = Path(root) / _key(spec)
        index = folder / "cache.json"
        if not index.is_file():
            found = sorted(p.parent.name for p in Path(root).glob("*/cache.json"))
            raise ValueError(
                f"no shard latent cache in {root} for this VAE, text encoder, text_max_length "
                f"and bucket sizes (key {folder.name}; found {found or 'none'}): encode the "
                "shards with `studio data encode CONFIG`"
            )
        stored = json.loads(index.read_text())["spec"]
        if stored != spec:  # a folder copied or edited by hand: never read it as this key's
            differ = sorted(k for k in spec if stored.get(k) != spec.get(k))
            raise ValueError(f"{index} was made with another {', '.join(differ)}; remove {folder}")
        empty = load_file(str(folder / "empty_text.safetensors"))
        return cls(folder, spec, (empty["text"], empty["text_mask"]))

    def shard_file(self, url: str) -> Path:
        """This shard's file in the cache (present or not), named by the shard's identity."""
        if "://" in url or url.startswith("pipe:"):
            raise ValueError(f"data.latents caches local shard files; {url!r} is not one")
        path = Path(url).resolve()
        stat = path.stat()
        identity = json.dumps([str(path), stat.st_size, stat.st_mtime_ns]).encode()
        return self.folder / f"{path.stem}-{hashlib.sha256(identity).hexdigest()[:16]}.safetensors"

    def missing(self, urls: list[str]) -> list[str]:
        """The shards of ``urls`` not encoded yet, or changed since they were."""
        return [url for url in urls if not self.shard_file(url).is_file()]

    def text_batch(
        self, texts: list[tuple[torch.Tensor, torch.Tensor]], dropped: np.ndarray, device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached caption states of a batch, the ``dropped`` ones replaced by the empty
        caption's → states (B, L, D) float32 and mask (B, L) long, as :func:`encode_text`
        gives for the same captions (padding to the longest; the model ignores masked tokens)."""
        rows = [self.empty_text if d else t for t, d in zip(texts, dropped, strict=True)]
        states = pad_sequence([s for s, _ in rows], batch_first=True).float()
        mask = pad_sequence([m for _, m in rows], batch_first=True).long()
        return states.to(device), mask.to(device)


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    tmp = temp_sibling(path)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------- encoding
def _raw_kind(raw: dict) -> str | None:
    """The kind ("video" or "image") :class:`ShardDataset` files a raw sample under before
    decoding its media; None where it fails before that (no or bad JSON, no media file): such
    a sample is corrupt in every stream, the others only in the stream of their own kind."""
    try:
        meta = json.loads(raw["json"])
    except (KeyError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("caption"), str):
        return None
    if any(ext in raw for ext in VIDEO_EXTENSIONS):
        return "video"
    return "image" if any(ext in raw for ext in IMAGE_EXTENSIONS) else None


def _encode_clips(vae, clips: list[torch.Tensor], batch_frames: int) -> list[torch.Tensor]:
    """Pixel clips (F_i, 3, H, W) → latents (C, f_i, h, w) float16 on the CPU: with a
    frame-wise VAE the frames of all clips encoded ``batch_frames`` at a time (f_i = F_i);
    with a video VAE each clip whole, cut to its longest valid length."""
    space = LatentSpace(vae)
    if not space.frame_wise:
        return [
            encode_videos(vae, clip[None, : space.frames_at_most(len(clip))])[0]
            .half()
            .cpu()
            .contiguous()
            for clip in clips
        ]
    frames = torch.cat(clips)
    z = torch.cat([encode_pixels(vae, chunk) for chunk in frames.split(batch_frames)])
    pieces = z.half().cpu().split([len(c) for c in clips])
    # clone: a stored tensor must own its memory (safetensors refuses shared storage)
    return [p.permute(1, 0, 2, 3).clone(memory_format=torch.contiguous_format) for p in pieces]


@torch.no_grad()
def encode_shard(
    cache: ShardLatents, url: str, vae, text_encoder, tokenizer, batch_frames: int = ENCODE_FRAMES
) -> Path:
    """Encode one shard into its cache file (atomically); → the file.

    Samples are decoded as training decodes them (:class:`ShardDataset`, whole clips at
    their own size) and encoded in groups of about ``batch_frames`` frames."""
    reader = ShardDataset(url, frames=None, size=None)  # both kinds, whole clips
    sizes = cache.spec["sizes"]
    device = next(text_encoder.parameters()).device
    entries: list[dict] = []
    tensors: dict[str, torch.Tensor] = {}
    pending: list[tuple[int, str, dict]] = []  # decoded, not yet encoded: (index, kind, sample)

    def flush() -> None:
        for kind in ("video", "image"):
            group = [(i, s) for i, k, s in pending if k == kind]
            for h, w in sizes[kind] if group else []:
                clips = [resize_crop(s["video"], h, w) for _, s in group]
                for (i, _), z in zip(group, _encode_clips(vae, clips, batch_frames), strict=True):
                    tensors[f"{i}/latents/{h}x{w}"] = z
        if pending:
            captions = [s["caption"] for _, _, s in pending]
            max_length = cache.spec["text_encoder"]["max_length"]
            states, mask = encode_text(text_encoder, tokenizer, captions, max_length, device)
            for (i, _, _), state, m in zip(pending, states, mask, strict=True):
                n = int(m.nonzero().max()) + 1  # up to its last token
                tensors[f"{i}/text"] = (state[:n] * m[:n, None]).half().cpu()
                tensors[f"{i}/text_mask"] = m[:n].to(torch.uint8).cpu()
        pending.clear()

    for raw in reader._read_raw([url]):
        i, kind = len(entries), _raw_kind(raw)
        sample = reader._decode(raw)  # None: corrupt (ShardDataset warns)
        entry = {"key": raw.get("__key__", "?"), "kind": kind, "ok": sample is not None}
        if sample is not None:
            # frame_indices would list every frame of the clip; training never reads it
            meta = {k: v for k, v in sample["meta"].items() if k != "frame_indices"}
            f, _, height, width = sample["video"].shape
            entry.update(shape=[f, height, width], caption=sample["caption"], meta=meta)
            pending.append((i, kind, sample))
        entries.append(entry)
        if sum(s["video"].shape[0] for _, _, s in pending) >= batch_frames:
            flush()
    flush()
    metadata = {
        "format": str(FORMAT),
        "cache_key": cache.key,
        "shard": str(Path(url).resolve()),
        "samples": json.dumps(entries),
        "shard_errors": str(reader.stats["shard_errors"]),
    }
    path = cache.shard_file(url)
    _save_atomic(tensors, path, metadata)
    return path


def encode_shards(
    cache: ShardLatents,
    urls: list[str],
    vae,
    text_encoder,
    tokenizer,
    batch_frames: int = ENCODE_FRAMES,
    progress: bool = True,
) -> None:
    for url in tqdm(urls, desc="encoding shards", disable=not progress):
        encode_shard(cache, url, vae, text_encoder, tokenizer, batch_frames)


def prepare_shard_latents(
    cfg: DiTTrainConfig, vae, text_encoder, tokenizer, accelerator
) -> ShardLatents:
    """The cache in ``cfg.data.latents`` for this run's VAE, text encoder and buckets, every
    shard of ``data.shards`` in it: shards not encoded yet (or changed since) are encoded
    first, split between the processes."""
    spec = cache_spec(cfg, vae, text_encoder)
    if accelerator.is_main_process:
        ShardLatents.create(cfg.data.latents, spec, text_encoder, tokenizer, cfg.vae)
    accelerator.wait_for_everyone()
    cache = ShardLatents.open(cfg.data.latents, spec)
    urls = ShardDataset(cfg.data.shards).urls
    missing = cache.missing(urls)
    rank, world = accelerator.process_index, accelerator.num_processes
    progress = accelerator.is_main_process
    encode_shards(cache, missing[rank::world], vae, text_encoder, tokenizer, progress=progress)
    accelerator.wait_for_everyone()
    accelerator.print(
        f"shard latents {cache.folder}: {len(urls)} shards, {len(missing)} of them encoded now"
    )
    return cache


def encode_config(
    cfg: DiTTrainConfig, batch_frames: int | None = None, progress: bool = True
) -> dict:
    """``studio data encode``: the shards of a training config into its ``data.latents``,
    with its VAE and text encoder; shards already there are kept. → a summary."""
    if cfg.data.latents is None:
        raise ValueError("data.latents is not set: name the cache folder (data.latents=DIR)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    vae = load_vae(cfg.vae).to(device).eval().requires_grad_(False)
    check_latent_frames(cfg, LatentSpace(vae))
    text_encoder, tokenizer = load_text_encoder(cfg.text_encoder)
    text_encoder.to(device)
    spec = cache_spec(cfg, vae, text_encoder)
    cache = ShardLatents.create(cfg.data.latents, spec, text_encoder, tokenizer, cfg.vae)
    urls = ShardDataset(cfg.data.shards).urls
    missing = cache.missing(urls)
    encode_shards(
        cache, missing, vae, text_encoder, tokenizer, batch_frames or ENCODE_FRAMES, progress
    )
    return {
        "folder": str(cache.folder),
        "shards": len(urls),
        "encoded": len(missing),
        "cached": len(urls) - len(missing),
    }


# ---------------------------------------------------------------------------- reading
class CachedShardDataset(ShardDataset):
    """:class:`ShardDataset` read from a shard latent cache instead of decoding the tars:
    the same shards per reader, order, shuffle and counts (the tars themselves are only
    stat'ed, and their headers read once for the deal of shards to readers).

    Yields ``{"latents": {(height, width): (C, F, h, w) float16}, "shape": (F, H, W) of the
    clip as stored, "text": (states (L, D) float16, mask (L,) uint8), "caption", "meta",
    "key"}``: whole clips, cut into windows by :class:`CachedBucketBatches`.
    """

    def __init__(self, cache: ShardLatents, urls, **kwargs) -> None:
        super().__init__(urls, frames=None, size=None, **kwargs)
        self.cache = cache
        self.files = {url: cache.shard_file(url) for url in self.urls}
        missing = [url for url, path in self.files.items() if not path.is_file()]
        if missing:
            raise ValueError(
                f"{len(missing)} shard(s) not in the latent cache {cache.folder} (new, or "
                f"changed since they were encoded), e.g. {missing[0]}: run `studio data encode`"
            )

    def _read_raw(self, urls: list[str]) -> Iterator[dict]:
        for url in urls:
            file = safe_open(str(self.files[url]), framework="pt")  # tensors read on demand
            metadata = file.metadata()
            if metadata.get("cache_key") != self.cache.key:
                raise ValueError(
                    f"{self.files[url]} belongs to another cache than {self.cache.folder}"
                )
            for index, entry in enumerate(json.loads(metadata["samples"])):
                yield {
                    "__key__": entry["key"],
                    "__url__": url,
                    "entry": entry,
                    "index": index,
                    "file": file,
                }
            errors = int(metadata["shard_errors"])
            if errors:
                self.stats["shard_errors"] += errors
                logger.warning("%s had %d unreadable part(s) when it was encoded", url, errors)

    def _decode(self, raw: dict) -> dict | None:
        entry, kind = raw["entry"], raw["entry"]["kind"]
        if kind is not None and not (self.videos if kind == "video" else self.images):
            self.stats["skipped_filtered"] += 1
            return None
        if not entry["ok"]:
            self.stats["skipped_corrupt"] += 1
            logger.warning("skipping corrupt sample %r from %s", raw["__key__"], raw["__url__"])
            return None
        file, i = raw["file"], raw["index"]
        latents = {
            (h, w): file.get_tensor(f"{i}/latents/{h}x{w}")
            for h, w in self.cache.spec["sizes"][kind]
        }
        self.stats["ok"] += 1
        return {
            "latents": latents,
            "shape": tuple(entry["shape"]),
            "text": (file.get_tensor(f"{i}/text"), file.get_tensor(f"{i}/text_mask")),
            "caption": entry["caption"],
            "meta": entry["meta"],
            "key": raw["__key__"],
        }


def prefix_window(sample: dict, bucket: Bucket) -> tuple[int, dict]:
    """:meth:`BucketBatches.window` for video VAEs: every window starts at frame 0 (the
    sample's ``condition_frames`` kept when the window holds them and more)."""
    meta = dict(sample["meta"])
    given = meta.get("condition_frames")
    if given is not None and not 1 <= given < bucket.frames:
        meta.pop("condition_frames")
    return 0, meta


class CachedBucketBatches(BucketBatches):
    """:class:`BucketBatches` over a :class:`CachedShardDataset`: the same buckets, seeded
    windows and batches, cut from cached latents instead of pixels (tests/test_precompute.py
    checks that both give the same batches). ``prefix_windows`` (a video VAE): every window
    is a clip's first ``bucket.frames`` pixel frames, i.e. its first latent frames.

    Yields ``{"latents": (B, C, f, h, w) float16, "text": [(states, mask)], "caption": [...],
    "meta": [...], "key": [...], "stats", "reader"}``.
    """

    STACKED = "latents"

    def __init__(self, dataset, buckets, max_frames=None, prefix_windows: bool = False):
        super().__init__(dataset, buckets, max_frames=max_frames)
        self.prefix_windows = prefix_windows
        self.temporal_scale = dataset.cache.spec.get("temporal", {}).get("scale", 1)
        if prefix_windows != ("temporal" in dataset.cache.spec):
            raise ValueError("prefix_windows must be set exactly for a cache made with a video VAE")

    def sample_shape(self, sample: dict) -> tuple[int, int, int]:
        return tuple(sample["shape"])

    def window(self, sample: dict, frames: int, bucket: Bucket) -> tuple[int, dict]:
        if self.prefix_windows:
            return prefix_window(sample, bucket)
        return super().window(sample, frames, bucket)

    def item(self, sample: dict, start: int, bucket: Bucket) -> dict:
        latents = sample["latents"][(bucket.height, bucket.width)]  # (C, f, h, w)
        if self.prefix_windows:  # start is 0; bucket.frames pixel frames → latent frames
            end = 1 + (bucket.frames - 1) // self.temporal_scale
        else:
            end = start + bucket.frames
        return {
            "latents": latents[:, start:end],
            "text": sample["text"],
            "caption": sample["caption"],
            "key": sample["key"],
        }
