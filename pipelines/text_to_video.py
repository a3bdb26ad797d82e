"""Text-to-video pipeline: text encoder → swap-attention video DiT (flow matching) → VAE.

The VAE is a frame-wise ``AutoencoderKL`` or one of diffusers' 3-D video VAEs, seen through
:class:`pipelines.latent_space.LatentSpace`: the transformer runs on latent frames, which a
video VAE compresses in time (``1 + k·T`` pixel frames → ``1 + k`` latent frames)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from inspect import signature
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.loaders import CogVideoXLoraLoaderMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from models import VideoDiT

from .components import (
    DEFAULT_TEXT_ENCODER,
    DEFAULT_TEXT_MAX_LENGTH,
    encode_text,
    load_text_encoder,
    reference_token_ids,
    spec_resolves_anywhere,
)
from .latent_space import AnyVAE, LatentSpace

MAX_STEPS = 1000
MAX_GUIDANCE = 50.0
# chosen on the validation prompts for the shipped model (experiments/squares/REPORT.md)
DEFAULT_GUIDANCE = 3.0
# sampling steps of every front end's default (the shipped model's; experiments/fast_sampling)
DEFAULT_STEPS = 12
OUTPUT_TYPES = ("np", "pt", "pil", "latent")


@dataclass
class VideoPipelineOutput(BaseOutput):
    """frames: np (B, F, H, W, 3) float in [0, 1]; pt (B, F, 3, H, W); pil list of lists; or
    latents (B, C, f, h, w) for ``output_type="latent"`` (f latent frames: F with a
    frame-wise VAE, 1 + (F − 1) / T with a video VAE compressing time T×)."""

    frames: np.ndarray | torch.Tensor | list


CUSTOM_PIPELINE_FILE = "pipeline"
CUSTOM_PIPELINE_SHIM = """\
# diffusers' custom-pipeline hook, for loading this folder with plain diffusers:
#   DiffusionPipeline.from_pretrained(FOLDER, custom_pipeline="pipeline", trust_remote_code=True)
# It only imports the installed shapes-video-studio package. ShapesVideoPipeline.from_pretrained
# and the studio commands never run this file.
from pipelines.text_to_video import ShapesVideoPipeline  # noqa: F401
"""


# LoRA: diffusers' loader for pipelines whose one LoRA-able component is ``transformer`` (as
# CogVideoX's): ``load_lora_weights``, ``set_adapters``, ``save_lora_weights``, ``fuse_lora``.
class ShapesVideoPipeline(DiffusionPipeline, CogVideoXLoraLoaderMixin):
    """Text-to-video with a :class:`VideoDiT`, a diffusers VAE (``AutoencoderKL`` applied per
    frame, or the 3-D ``AutoencoderKLWan`` / ``AutoencoderKLCogVideoX`` /
    ``AutoencoderKLLTXVideo``: see :mod:`pipelines.latent_space`), any transformers text
    encoder, and a flow-matching scheduler.

    With a video VAE ``num_frames`` must be ``1 + k·step`` (its ``latent_space.frame_step``:
    T for Wan and LTX, 2T for CogVideoX) and the transformer runs on the latent frames.
    Conditioning frames (``1 + j·step`` of them) and image-first sampling need a causal VAE
    (Wan, LTX), whose first latent frame encodes frame 0 alone; CogVideoX refuses them.

    ``text_encoder_spec`` names the text encoder (see :mod:`pipelines.components`); a saved
    pipeline may omit the encoder's weights (``save_text_encoder=False``) and have them loaded
    from the spec, which keeps the shipped default model small.

    ``image_transformer`` (optional) is a text-to-image model of its own (Emu Video's
    factorisation): it draws every single frame generated from text alone — the first frame
    of an image-first clip, and ``num_frames=1`` — while ``transformer`` continues it. It may
    use another patch size, its own sampling shift (``image_shift``; None: the scheduler's)
    and its own sampler (``image_stochastic``: True = diffusers' ``stochastic_sampling``, each
    step re-noised from the predicted clean frame; None: the scheduler's setting). With
    reference images the first frame comes from ``transformer``, the one that reads them.

    ``first_frame_guidance`` (None: the call's ``guidance_scale``) is the guidance scale of the
    first frame of an image-first clip, so the clip's continuation can be guided less (or more)
    than the frame it continues; ``first_frame_steps`` (None: the call's
    ``num_inference_steps``) its number of steps, so the clip can take fewer steps with a
    higher-order solver while the frame that fixes the objects' look keeps its own sampler's.
    """

    model_cpu_offload_seq = "text_encoder->image_transformer->transformer->vae"
    _optional_components = ["image_transformer", "text_encoder", "tokenizer"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        transformer: VideoDiT,
        vae: AnyVAE,
        scheduler: FlowMatchEulerDiscreteScheduler,
        text_encoder=None,
        tokenizer=None,
        text_encoder_spec: str = DEFAULT_TEXT_ENCODER,
        default_fps: int = 8,
        image_first: bool = False,
        image_transformer: VideoDiT | None = None,
        image_shift: float | None = None,
        image_stochastic: bool | None = None,
        first_frame_guidance: float | None = None,
        first_frame_steps: int | None = None,
        text_max_length: int = DEFAULT_TEXT_MAX_LENGTH,
    ):
        super().__init__()
        self.register_modules(
            transformer=transformer,
            vae=vae,
            scheduler=scheduler,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            image_transformer=image_transformer,
        )
        self.register_to_config(
            text_encoder_spec=text_encoder_spec,
            default_fps=default_fps,
            image_first=image_first,
            image_shift=image_shift,
            image_stochastic=image_stochastic,
            first_frame_guidance=first_frame_guidance,
            first_frame_steps=first_frame_steps,
            text_max_length=text_max_length,
        )

    # -- saving / loading -------------------------------------------------------------------
    def save_pretrained(self, save_directory, save_text_encoder: bool | None = None, **kwargs):
        """diffusers layout, portable: the folder loads wherever it is copied.

        ``save_text_encoder``: None (default) saves the encoder's weights unless its spec
        resolves anywhere without them (``minilm``, shipped in a package, or a hub id);
        False stores only the spec. Writes ``pipeline.py``, the hook of diffusers' custom
        pipelines, so ``DiffusionPipeline.from_pretrained(folder, custom_pipeline="pipeline",
        trust_remote_code=True)`` works too; it only imports this installed package, and this
        package's own loaders never run it."""
        if save_text_encoder is None:
            save_text_encoder = self.text_encoder is not None and not spec_resolves_anywhere(
                self.config.text_encoder_spec
            )
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / f"{CUSTOM_PIPELINE_FILE}.py").write_text(CUSTOM_PIPELINE_SHIM)
        if save_text_encoder:
            return super().save_pretrained(save_directory, **kwargs)
        text_encoder, tokenizer = self.text_encoder, self.tokenizer
        self.register_modules(text_encoder=None, tokenizer=None)
        try:
            return super().save_pretrained(save_directory, **kwargs)
        finally:
            self.register_modules(text_encoder=text_encoder, tokenizer=tokenizer)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Like diffusers', but a text encoder saved as a spec only is loaded from that spec,
        and weights load from safetensors only (never a pickled ``.bin``)."""
        kwargs.setdefault("use_safetensors", True)
        index_path = Path(pretrained_model_name_or_path) / "model_index.json"
        if "text_encoder" not in kwargs and index_path.is_file():
            index = json.loads(index_path.read_text())
            if (index.get("text_encoder") or [None])[0] is None:
                dtype = kwargs.get("torch_dtype", torch.float32)
                encoder, tokenizer = load_text_encoder(
                    index.get("text_encoder_spec", DEFAULT_TEXT_ENCODER), dtype=dtype
                )
                kwargs.update(text_encoder=encoder, tokenizer=tokenizer)
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        image_model = getattr(pipe, "image_transformer", None)
        if image_model is not None and image_model.dtype != pipe.transformer.dtype:
            # an image model stored in half precision (small weights) runs at the pipeline's
            image_model.to(pipe.transformer.dtype)
        return pipe

    # -- helpers ----------------------------------------------------------------------------
    @property
    def latent_space(self) -> LatentSpace:
        """The VAE's latent space: encode/decode, spatial and temporal scales, frame counts."""
        return LatentSpace(self.vae)

    @property
    def vae_scale(self) -> int:
        return self.latent_space.spatial_scale

    @property
    def max_references(self) -> int:
        """Reference images a prompt may bind with ``<refN>`` (0: a text-to-video model)."""
        return int(self.transformer.config.get("max_references", 0) or 0)

    @property
    def latent_multiple(self) -> int:
        """Height and width must be multiples of this (VAE downscale × patch size)."""
        multiple = self.vae_scale * self.transformer.config.patch_size
        if getattr(self, "image_transformer", None) is not None:
            image_patch = self.image_transformer.config.patch_size
            multiple = math.lcm(multiple, self.vae_scale * image_patch)
        return multiple

    def _uses_image_model(self, num_frames: int, conditioning_frames, reference_images) -> bool:
        """Whether ``image_transformer`` draws this request: one frame from text alone."""
        return (
            getattr(self, "image_transformer", None) is not None
            and num_frames == 1
            and conditioning_frames is None
            and not reference_images
        )

    def check_inputs(
        self,
        prompt,
        negative_prompt,
        num_frames: int,
        height: int,
        width: int,
        num_inference_steps: int,
        guidance_scale: float,
        output_type: str,
        conditioning_frames,
        reference_images=None,
    ) -> list[str]:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ValueError(
                f"prompt must be a non-empty string (or a list of them); got {prompt!r}"
            )
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            if len(negative_prompt) != len(prompts):
                raise ValueError(
                    f"negative_prompt has {len(negative_prompt)} entries but prompt has {len(prompts)}"
                )
        space = self.latent_space
        max_frames = space.pixel_frames(self.transformer.config.max_frames)
        if not isinstance(num_frames, int) or not 1 <= num_frames <= max_frames:
            raise ValueError(
                f"num_frames must be an integer in 1..{max_frames}, got {num_frames!r}"
            )
        space.check_frames(num_frames)  # a video VAE: 1 + k·step frames
        m = self.latent_multiple
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value < m or value % m or value > 1024:
                raise ValueError(
                    f"{name} must be a positive multiple of {m} (VAE scale × patch size) up "
                    f"to 1024, got {value!r}"
                )
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= MAX_STEPS:
            raise ValueError(
                f"num_inference_steps must be an integer in 1..{MAX_STEPS}, got {num_inference_steps!r}"
            )
        if not 0 <= guidance_scale <= MAX_GUIDANCE:
            raise ValueError(f"guidance_scale must be in 0..{MAX_GUIDANCE}, got {guidance_scale!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if conditioning_frames is not None and len(conditioning_frames) >= num_frames:
            raise ValueError(
                f"{len(conditioning_frames)} conditioning frames leave nothing to generate in a "
                f"{num_frames}-frame clip"
            )
        if conditioning_frames is not None and not space.frame_wise:
            self._check_causal("conditioning frames")
            space.check_frames(len(conditioning_frames), "the number of conditioning frames")
        self.check_references(prompts, reference_images)
        return prompts

    def check_references(self, prompts: list[str], reference_images) -> None:
        """Every ``<refN>`` has its image and every image its placeholder, within the model's
        limit (:func:`pipelines.elements.check_placeholders`)."""
        from .elements import check_placeholders, placeholders

        n = len(reference_images or [])
        if self.max_references == 0 and (n or any(placeholders(p) for p in prompts)):
            raise ValueError(
                "this model was not trained with reference elements (<refN> / reference "
                "images); use a model with max_references > 0"
            )
        if n > self.max_references:
            raise ValueError(
                f"{n} reference images given; this model takes at most {self.max_references}"
            )
        for p in prompts:
            check_placeholders(p, n)

    @torch.no_grad()
    def encode_references(self, images: list, height: int, width: int) -> torch.Tensor:
        """Reference images (any size or mode) → latents (1, R, C, h, w) at the clip's size.

        Each image becomes a (height × height) square on the reference white
        (:func:`pipelines.elements.prepare_reference`), padded with that white to the
        clip's width (or height) when the clip is not square.
        """
        from .elements import REFERENCE_BACKGROUND, prepare_reference

        side = min(height, width)
        pixels = []
        for image in images:
            square = prepare_reference(image, size=side)  # (side, side, 3) uint8
            canvas = np.empty((height, width, 3), dtype=np.uint8)
            canvas[:] = REFERENCE_BACKGROUND
            top, left = (height - side) // 2, (width - side) // 2
            canvas[top : top + side, left : left + side] = square
            pixels.append(canvas)
        x = self._to_pixels(np.stack(pixels))  # (R, 3, H, W) in [-1, 1]
        # each reference a clip of one frame (a video VAE would compress R frames in time)
        return self.encode_frames(x[:, None]).permute(2, 0, 1, 3, 4)  # (1, R, C, h, w)

    def encode_prompt(
        self, prompts: list[str], negative: list[str] | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """→ states (B or 2B, L, D_text), mask (same, L); negatives first when guided."""
        texts = (negative or []) + prompts
        states, mask = encode_text(
            self.text_encoder,
            self.tokenizer,
            texts,
            max_length=self.config.text_max_length,
            device=device,
        )
        return states.to(self.transformer.dtype), mask

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Pixels (B, F, 3, H, W) in [-1, 1] → normalised latent means (B, C, f, h, w)."""
        return self.latent_space.encode(frames)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, f, h, w) → pixels (B, F, 3, H, W) in [0, 1]."""
        return self.latent_space.decode(latents)

    @property
    def drawing_first_frame(self) -> bool:
        """True while an image-first call draws its first frame (for step callbacks)."""
        return getattr(self, "_drawing_first_frame", False)

    def _check_causal(self, what: str) -> None:
        """ValueError for ``what`` (frames given clean at the start) with a non-causal VAE,
        whose first latent frames also depend on the frames generated after them."""
        if not self.latent_space.causal:
            raise ValueError(
                f"{what} need a causal VAE, whose first latent frame encodes frame 0 alone; "
                f"{type(self.vae).__name__} is not causal (its normalisation spans the frames "
                "encoded together): generate from text alone, or use a frame-wise, Wan or LTX VAE"
            )

    @staticmethod
    def _to_pixels(frames) -> torch.Tensor:
        """Conditioning frames: uint8 (F, H, W, 3) array/tensor or float (F, 3, H, W) in [-1, 1]."""
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(frames)
        if frames.dtype == torch.uint8:
            frames = frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return frames

    # -- generation -------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_frames: int = 16,
        height: int = 64,
        width: int = 64,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        conditioning_frames: np.ndarray | torch.Tensor | None = None,
        reference_images: list | None = None,
        image_first: bool | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict]
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> VideoPipelineOutput | tuple:
        """Generate clips.

        Args:
            conditioning_frames: frames given clean at the start of the clip (uint8
                (Fc, H, W, 3) or float (Fc, 3, H, W) in [-1, 1]); they are kept exactly and the
                rest is generated to continue them (continuation, image-to-video, storyboards).
            image_first: generate the first frame as an image from the prompt, then the clip
                as its continuation (Emu Video's factorised text-to-video); None = the
                pipeline's ``image_first`` config. Ignored with ``conditioning_frames`` or for
                a single frame.
            reference_images: up to ``max_references`` images (PIL or uint8/float arrays, any
                size or mode), the same for every prompt; ``<refN>`` in a prompt names the
                N-th. The unconditional half of guidance sees neither text nor references.
            guidance_scale: classifier-free guidance; ≤ 1 = none. A model with embedded
                guidance (``guidance_embeds``, a guidance-distilled student) takes the scale as
                an input and runs once a step; given a ``negative_prompt`` it runs twice, as
                classic guidance between the prompt and the negative at embedded scale 1.
            callback_on_step_end: ``fn(pipe, step, timestep, kwargs) -> dict`` after each step
                (image-first: the first frame's steps too, while ``pipe.drawing_first_frame``
                is true); returned tensors (e.g. ``latents``) replace the pipeline's.
        """
        # 1. Check inputs
        prompts = self.check_inputs(
            prompt,
            negative_prompt,
            num_frames,
            height,
            width,
            num_inference_steps,
            guidance_scale,
            output_type,
            conditioning_frames,
            reference_images,
        )
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        for name in tensor_inputs:
            if name not in self._callback_tensor_inputs:
                raise ValueError(
                    f"callback tensor input {name!r} is not one of {self._callback_tensor_inputs}"
                )
        device = self._execution_device
        batch = len(prompts)
        uses_image_model = self._uses_image_model(num_frames, conditioning_frames, reference_images)
        model = self.image_transformer if uses_image_model else self.transformer
        # embedded guidance: one model call a step carries the scale (1 = the conditional)
        takes_scale = bool(model.config.get("guidance_embeds"))
        embedded = takes_scale and negative_prompt is None
        guided = guidance_scale > 1.0 and not embedded
        guidance_kw = {}
        if takes_scale:
            scale_in = max(guidance_scale, 1.0) if embedded else 1.0
            guidance_kw = {"guidance": torch.tensor([scale_in], device=device)}

        # 2. Encode the prompt (negatives first, batched with the prompt for guidance)
        negatives = None
        if guided:
            negatives = (
                [negative_prompt or ""] * batch
                if negative_prompt is None or isinstance(negative_prompt, str)
                else list(negative_prompt)
            )
        text, text_mask = self.encode_prompt(prompts, negatives, device)
        ref_kwargs = {}
        if reference_images:
            refs = self.encode_references(list(reference_images), height, width)
            rows = text.shape[0]
            present = torch.ones(rows, refs.shape[1], dtype=torch.bool, device=device)
            if guided:
                present[: len(negatives)] = False  # unconditional rows: no references
            ref_kwargs = dict(
                reference_latents=refs.expand(rows, *refs.shape[1:]).to(self.transformer.dtype),
                reference_mask=present,
                text_reference_ids=reference_token_ids(
                    self.tokenizer, (negatives or []) + prompts, self.config.text_max_length
                ).to(device),
            )

        # 3. Model and timesteps (a single frame from text alone: the image model, if any)
        scheduler, scale = self.scheduler, self.vae_scale
        if uses_image_model:
            overrides = {
                "shift": self.config.get("image_shift"),
                "stochastic_sampling": self.config.get("image_stochastic"),
            }
            overrides = {k: v for k, v in overrides.items() if v is not None}
            if overrides:
                scheduler = FlowMatchEulerDiscreteScheduler.from_config(
                    scheduler.config, **overrides
                )
        scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = scheduler.timesteps

        # 4. Initial noise (latent frames), conditioning frames placed clean at the start
        c = model.config.in_channels
        latent_frames = self.latent_space.latent_frames(num_frames)
        shape = (batch, c, latent_frames, height // scale, width // scale)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        # a copy: the given frames are written into it, and a caller's tensor must not change
        latents = latents.to(device, torch.float32, copy=True)
        frame_mask = pixels = None  # pixels: given frames (1 or B, Fc, 3, H, W) in [-1, 1]
        if conditioning_frames is not None:
            pixels = self._to_pixels(conditioning_frames)[None]
            if tuple(pixels.shape[-2:]) != (height, width):
                raise ValueError(
                    f"conditioning frames are {tuple(pixels.shape[-2:])}, the clip is {(height, width)}"
                )
            given = self.encode_frames(pixels.expand(batch, *pixels.shape[1:])).float()
            k = given.shape[2]  # latent frames of the given frames
            latents[:, :, :k] = given.to(device)
            frame_mask = torch.zeros(batch, latent_frames, dtype=torch.bool, device=device)
            frame_mask[:, :k] = True
        elif num_frames > 1 and (self.config.image_first if image_first is None else image_first):
            # Factorised (Emu Video): the first frame as an image, kept clean while the rest
            # of the clip is generated to continue it (a causal VAE's first latent frame is
            # the image's latent).
            self._check_causal("image-first sampling (a first frame given as an image)")
            first_guidance = self.config.get("first_frame_guidance")
            first_guidance = guidance_scale if first_guidance is None else first_guidance
            self._drawing_first_frame = True  # what the callback's caller can tell apart
            try:
                first = self(
                    prompts,
                    negative_prompt,
                    num_frames=1,
                    height=height,
                    width=width,
                    num_inference_steps=self.config.get("first_frame_steps") or num_inference_steps,
                    guidance_scale=first_guidance,
                    generator=generator,
                    reference_images=reference_images,
                    image_first=False,
                    output_type="latent",
                    callback_on_step_end=callback_on_step_end,
                    callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
                ).frames  # (B, C, 1, h, w)
            finally:
                self._drawing_first_frame = False
            latents[:, :, :1] = first.to(latents)
            frame_mask = torch.zeros(batch, latent_frames, dtype=torch.bool, device=device)
            frame_mask[:, :1] = True
            scheduler.set_timesteps(num_inference_steps, device=device)  # the image used it
            timesteps = scheduler.timesteps

        # 5. Denoising loop (only the scheduler advances latents; given frames get v = 0)
        # a stochastic step re-noises every frame: given ones are put back after each step
        keep = given_latents = None
        if frame_mask is not None and scheduler.config.get("stochastic_sampling"):
            keep, given_latents = frame_mask[:, None, :, None, None], latents.clone()
        self._num_timesteps = len(timesteps)
        # diffusers' flow solvers (Euler, UniPC, DPM-Solver++ with flow sigmas) all step on the
        # velocity; the stochastic ones draw from the generator
        step_kw = (
            {"generator": generator} if "generator" in signature(scheduler.step).parameters else {}
        )
        for i, t in enumerate(self.progress_bar(timesteps)):
            sigma = t / scheduler.config.num_train_timesteps
            model_in = torch.cat([latents, latents]) if guided else latents
            mask_in = None
            if frame_mask is not None:
                mask_in = torch.cat([frame_mask, frame_mask]) if guided else frame_mask
            out = model(
                model_in.to(model.dtype),
                t.expand(model_in.shape[0]),
                text,
                text_mask,
                frame_mask=mask_in,
                **ref_kwargs,
                **guidance_kw,
            ).sample.float()
            velocity = model.to_velocity(out, model_in, sigma)
            if guided:
                uncond, cond = velocity.chunk(2)
                velocity = uncond + guidance_scale * (cond - uncond)
            latents = scheduler.step(velocity, t, latents, return_dict=False, **step_kw)[0]
            if keep is not None:
                latents = torch.where(keep, given_latents, latents)
            if callback_on_step_end is not None:
                step_tensors = {"latents": latents}
                out = (
                    callback_on_step_end(self, i, t, {k: step_tensors[k] for k in tensor_inputs})
                    or {}
                )
                latents = out.get("latents", latents)

        # 6. Decode
        if output_type == "latent":
            frames = latents
        else:
            video = self.decode_latents(latents)  # (B, F, 3, H, W) in [0, 1]
            if pixels is not None:
                # Given frames are returned as given, not as their VAE reconstruction.
                given_px = (pixels.to(video) + 1) / 2
                video[:, : given_px.shape[1]] = given_px.clamp(0, 1)
            if output_type == "pt":
                frames = video
            else:
                frames = video.permute(0, 1, 3, 4, 2).cpu().numpy()  # (B, F, H, W, 3)
                if output_type == "pil":
                    frames = [
                        [Image.fromarray((f * 255).round().astype(np.uint8)) for f in clip]
                        for clip in frames
                    ]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return VideoPipelineOutput(frames=frames)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] → uint8 (rounded)."""
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
