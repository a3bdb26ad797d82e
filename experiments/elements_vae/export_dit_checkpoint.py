"""Export the EMA weights of a `studio train dit` checkpoint (a run still in progress) as the
pipeline the run would save at its end, to judge it mid-run:

    python experiments/elements_vae/export_dit_checkpoint.py runs/dit_c16_elements OUT_DIR [STEP]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from diffusers.training_utils import EMAModel
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from models.video_dit import VideoDiT
from pipelines.components import load_text_encoder, load_vae, text_hidden_size
from pipelines.latent_space import LatentSpace
from train.checkpoint import checkpoint_root, latest_checkpoint, load_states
from train.config import DiTTrainConfig, load_config
from train.train_dit import ImageModelSource, build_model, make_pipeline, trained


def saved_config(run: str) -> DiTTrainConfig:
    """The run's saved ``config.yaml`` as today's config class reads it. It lists every key the
    class had when the run started; keys removed from the code since (options that left the
    product, experiments/README.md) are dropped with a note instead of failing the export."""
    saved = OmegaConf.load(Path(run) / "config.yaml")
    known = OmegaConf.structured(DiTTrainConfig)
    for key in list(saved):
        if key not in known:
            print(
                f"note: {run}/config.yaml: dropping {key}={saved[key]!r} (no longer a config key)"
            )
            del saved[key]
        elif isinstance(saved[key], DictConfig) and isinstance(known[key], DictConfig):
            for sub in [k for k in saved[key] if k not in known[key]]:
                print(f"note: {run}/config.yaml: dropping {key}.{sub} (no longer a config key)")
                del saved[key][sub]
    with tempfile.TemporaryDirectory() as tmp:
        OmegaConf.save(saved, Path(tmp) / "config.yaml")
        return load_config(DiTTrainConfig, Path(tmp) / "config.yaml")


def main(run: str, out: str, step: str | None = None) -> Path:
    cfg = saved_config(run)
    ckpt = checkpoint_root(run) / f"step-{int(step):07d}" if step else latest_checkpoint(run)
    vae = load_vae(cfg.vae).eval()
    text_encoder, tokenizer = load_text_encoder(cfg.text_encoder)
    space = LatentSpace(vae)
    model = build_model(
        cfg, space.channels, text_hidden_size(text_encoder), cfg.data.size // space.spatial_scale
    )
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    ema = EMAModel(trained(model), model_cls=VideoDiT, model_config=model.config)
    load_states(ckpt, {"ema": ema})  # as the trainer resumes it
    ema.copy_to(trained(model))
    image_source = ImageModelSource.load(cfg.image_model_from) if cfg.image_model_from else None
    pipe = make_pipeline(cfg, model.eval(), vae, text_encoder, tokenizer, image_source)
    pipe.save_pretrained(out)
    print(f"{ckpt} (EMA) -> {out}")
    return Path(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
