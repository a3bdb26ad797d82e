"""Latent cache: Shapes World clips and images encoded once by the VAE.

Encoding every frame on the fly would cost more than the DiT step on a CPU, so the
default recipe renders ``cache_clips`` clips and ``cache_images`` images once, encodes them
and keeps the latents (fp16, safetensors) with each sample's layout. Captions are drawn
anew from the layout every time a sample is used, so the model sees many phrasings of the
same clip, and clips can be cut into shorter windows or reversed in time (a frame-wise VAE
makes both exact in latent space).

With a video VAE (:mod:`pipelines.latent_space`) clips are stored as its latent frames
(``clip_frames = 1 + k·T`` pixel frames → ``1 + k``), images and reference images as clips of
one frame; training then takes only prefixes of clips (exact for a causal VAE) and never
reverses them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from pipelines.latent_space import LatentSpace
from world.shapes_world import ClipSpec, ShapesWorld

VIDEO_KINDS = ("video1", "video2", "continuation")
VIDEO_WEIGHTS = {"video1": 0.4, "video2": 0.45, "continuation": 0.15}
END_KINDS = ("video1", "video2")  # clips whose first frame fits their whole caption


@dataclass
class LatentCache:
    clips: torch.Tensor  # (N, C, f, h, w) float16 (f latent frames)
    images: torch.Tensor  # (M, C, h, w) float16
    clip_specs: list[dict]  # ClipSpec dicts (+ "kind")
    image_specs: list[dict]
    # reference-element clips (patterned sprites captioned <refN>) and their reference images
    ref_clips: torch.Tensor | None = None  # (K, C, f, h, w) float16
    ref_images: torch.Tensor | None = None  # (K, MAX_SPRITES, C, h, w) float16, zero-padded
    ref_specs: list[dict] | None = None
    # first and last frames of single- and two-object clips (first-frame image models)
    end_frames: torch.Tensor | None = None  # (E, 2, C, h, w) float16
    end_specs: list[dict] | None = None


MAX_SPRITES = 2  # objects per reference clip (shapes_world.md: 1 or 2)


def cache_key(
    vae_config: dict,
    size: int,
    frames: int,
    n_clips: int,
    n_images: int,
    seed: int,
) -> str:
    blob = json.dumps(
        {
            "vae": {k: v for k, v in vae_config.items() if not k.startswith("_")},
            "size": size,
            "frames": frames,
            "clips": n_clips,
            "images": n_images,
            "seed": seed,
            "v": 1,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _to_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., S, S, 3) → float (..., 3, S, S) in [-1, 1]."""
    return torch.from_numpy(frames).movedim(-1, -3).float() / 127.5 - 1.0


@torch.no_grad()
def encode(vae, frames: np.ndarray) -> torch.Tensor:
    """uint8 images (N, S, S, 3) → normalised latents (N, C, h, w) float32 (posterior means)."""
    return encode_pixels(vae, _to_pixels(frames))


@torch.no_grad()
def encode_pixels(vae, x: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] → normalised latents (N, C, h, w) float32 (posterior
    means), each image a clip of one frame."""
    return LatentSpace(vae).encode(x[:, None])[:, :, 0]


@torch.no_grad()
def encode_videos(vae, videos: torch.Tensor) -> torch.Tensor:
    """Pixels (B, F, 3, H, W) in [-1, 1] → latents (B, C, f, h, w): frame by frame with a 2-D
    VAE (f = F), a clip at a time with a video VAE."""
    return LatentSpace(vae).encode(videos)


def build_cache(
    vae,
    n_clips: int,
    n_images: int,
    size: int = 64,
    frames: int = 16,
    seed: int = 0,
    batch_frames: int = 256,
    progress: bool = True,
    n_references: int = 0,
    n_end_frames: int = 0,
    n_continuations: int = 0,
    continuation_frames: tuple[int, int] = (2, 8),
    workers: int = 0,
) -> LatentCache:
    """Render and encode; deterministic for a seed (sample i of each part uses index i).
    ``workers`` > 0 renders in that many processes (the same samples: each is a function of
    its index), leaving the encoding to this one.

    ``n_references`` reference-element clips are added with their reference images (the
    training exclusions hold: no held-out sprite is rendered). ``n_end_frames`` single- and
    two-object clips are rendered whole (their objects' start depends on their motion) and
    only their first and last frames encoded. ``n_continuations`` continuation clips (k in
    ``continuation_frames`` given, half of them switching motion at k) follow the
    ``n_clips`` clips in ``clips``."""
    world = ShapesWorld(
        size=size, frames=frames, seed=seed, mix=VIDEO_WEIGHTS | {"image": 0.0, "reference": 0.0}
    )
    bar = tqdm(
        total=n_clips + n_continuations + n_images + n_references + n_end_frames,
        desc="latent cache",
        disable=not progress,
    )
    per_batch = max(1, batch_frames // frames)
    pool = ProcessPoolExecutor(workers) if workers > 0 else None
    try:
        clip_lat, clip_specs = [], []
        cont_world = ShapesWorld(
            size=size,
            frames=frames,
            seed=seed,
            mix={"continuation": 1.0},
            continuation_frames=continuation_frames,
        )
        # the plain clips, then the extra continuations (their sample indices start at 4·10⁸)
        for part_world, base, n in ((world, 0, n_clips), (cont_world, 4 * 10**8, n_continuations)):
            for samples in _sample_batches(part_world, base, n, per_batch, pool):
                clip_lat.append(_encode_clips(vae, samples, frames))
                clip_specs += [_spec(s) for s in samples]
                bar.update(len(samples))
        image_lat, image_specs = [], []
        for samples in _sample_batches(world, 10**8, n_images, batch_frames, pool, kind="image"):
            image_lat.append(encode(vae, np.concatenate([s.frames for s in samples])).half().cpu())
            image_specs += [_spec(s) for s in samples]
            bar.update(len(samples))
        ref_clips = ref_images = ref_specs = None
        if n_references:
            ref_world = ShapesWorld(size=size, frames=frames, seed=seed, mix={"reference": 1.0})
            ref_clips, ref_images, ref_specs = [], [], []
            for samples in _sample_batches(ref_world, 2 * 10**8, n_references, per_batch, pool):
                ref_clips.append(_encode_clips(vae, samples, frames))
                refs = encode(vae, np.concatenate([np.stack(s.references) for s in samples]))
                padded = torch.zeros(len(samples), MAX_SPRITES, *refs.shape[1:])
                k = 0
                for i, s in enumerate(samples):
                    padded[i, : len(s.references)] = refs[k : k + len(s.references)]
                    k += len(s.references)
                ref_images.append(padded.half().cpu())
                ref_specs += [_spec(s) for s in samples]
                bar.update(len(samples))
            ref_clips, ref_images = torch.cat(ref_clips), torch.cat(ref_images)
        end_frames = end_specs = None
        if n_end_frames:
            end_world = ShapesWorld(
                size=size, frames=frames, seed=seed, mix={k: VIDEO_WEIGHTS[k] for k in END_KINDS}
            )
            end_frames, end_specs = [], []
            for samples in _sample_batches(
                end_world, 3 * 10**8, n_end_frames, batch_frames // 2, pool
            ):
                z = encode(vae, np.concatenate([s.frames[[0, -1]] for s in samples]))  # 2 a clip
                end_frames.append(z.reshape(len(samples), 2, *z.shape[1:]).half().cpu())
                end_specs += [_spec(s) for s in samples]
                bar.update(len(samples))
            end_frames = torch.cat(end_frames)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    bar.close()
    space = LatentSpace(vae)
    c, h, f = space.channels, size // space.spatial_scale, space.latent_frames(frames)
    return LatentCache(
        clips=torch.cat(clip_lat) if clip_lat else torch.zeros(0, c, f, h, h, dtype=torch.float16),
        images=torch.cat(image_lat) if image_lat else torch.zeros(0, c, h, h, dtype=torch.float16),
        clip_specs=clip_specs,
        image_specs=image_specs,
        ref_clips=ref_clips,
        ref_images=ref_images,
        ref_specs=ref_specs,
        end_frames=end_frames,
        end_specs=end_specs,
    )


def _sample_batches(
    world: ShapesWorld, base: int, n: int, per_batch: int, pool: Executor | None = None, **kwargs
):
    """Samples ``base + 0 .. base + n - 1`` of ``world``, in lists of at most ``per_batch``;
    with ``pool``, rendered there."""
    draw = functools.partial(_draw, world, kwargs)
    for start in range(0, n, per_batch):
        indices = range(base + start, base + min(n, start + per_batch))
        if pool is None:
            yield [draw(i) for i in indices]
        else:
            yield list(pool.map(draw, indices, chunksize=max(1, len(indices) // 32)))


def _draw(world: ShapesWorld, kwargs: dict, index: int):
    return world.sample(index, **kwargs)


def _encode_clips(vae, samples: list, frames: int) -> torch.Tensor:
    """Equal-length clips of ``frames`` frames → latents (N, C, f, h, w) float16 on the CPU."""
    pixels = _to_pixels(np.stack([s.frames for s in samples]))  # (N, F, 3, S, S)
    assert pixels.shape[1] == frames, (pixels.shape, frames)
    return encode_videos(vae, pixels).half().cpu()


def _spec(sample) -> dict:
    """A sample's layout as cached: its ClipSpec dict and its kind."""
    return {**ClipSpec.from_dict(sample.meta).to_dict(), "kind": sample.meta["kind"]}


def save_cache(cache: LatentCache, path: Path) -> None:
    """Atomic: tensors and specs go to temporary names, then are renamed."""
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "latents.safetensors.tmp"
    tensors = {"clips": cache.clips.contiguous(), "images": cache.images.contiguous()}
    specs = {"clips": cache.clip_specs, "images": cache.image_specs}
    if cache.ref_clips is not None:
        tensors.update(
            ref_clips=cache.ref_clips.contiguous(), ref_images=cache.ref_images.contiguous()
        )
        specs["references"] = cache.ref_specs
    if cache.end_frames is not None:
        tensors["end_frames"] = cache.end_frames.contiguous()
        specs["end_frames"] = cache.end_specs
    save_file(tensors, str(tmp))
    specs_tmp = path / "specs.json.tmp"
    specs_tmp.write_text(json.dumps(specs))
    os.replace(specs_tmp, path / "specs.json")
    os.replace(tmp, path / "latents.safetensors")


def load_cache(path: Path) -> LatentCache | None:
    if not (path / "latents.safetensors").is_file() or not (path / "specs.json").is_file():
        return None
    tensors = load_file(str(path / "latents.safetensors"))
    specs = json.loads((path / "specs.json").read_text())
    return LatentCache(
        tensors["clips"],
        tensors["images"],
        specs["clips"],
        specs["images"],
        ref_clips=tensors.get("ref_clips"),
        ref_images=tensors.get("ref_images"),
        ref_specs=specs.get("references"),
        end_frames=tensors.get("end_frames"),
        end_specs=specs.get("end_frames"),
    )
