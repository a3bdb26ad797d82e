"""Export the EMA weights of a `studio train dit` checkpoint (a run still in progress) as the
pipeline the run would save at its end, to judge it mid-run:

    python experiments/elements_vae/export_dit_checkpoint.py runs/dit_c16_elements OUT_DIR [STEP]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from pipelines.components import load_text_encoder, load_vae, text_hidden_size
from pipelines.latent_space import LatentSpace
from train.checkpoint import checkpoint_root, latest_checkpoint
from train.config import DiTTrainConfig, load_config
from train.train_dit import ImageModelSource, build_model, make_pipeline, trained


def main(run: str, out: str, step: str | None = None) -> Path:
    cfg = load_config(DiTTrainConfig, Path(run) / "config.yaml")
    ckpt = checkpoint_root(run) / f"step-{int(step):07d}" if step else latest_checkpoint(run)
    vae = load_vae(cfg.vae).eval()
    text_encoder, tokenizer = load_text_encoder(cfg.text_encoder)
    space = LatentSpace(vae)
    model = build_model(
        cfg, space.channels, text_hidden_size(text_encoder), cfg.data.size // space.spatial_scale
    )
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    shadow = load_file(str(ckpt / "ema.state.safetensors"))  # in the order EMAModel was given
    with torch.no_grad():
        for i, param in enumerate(trained(model)):
            param.copy_(shadow[f"shadow_params.{i}"])
    image_source = ImageModelSource.load(cfg.image_model_from) if cfg.image_model_from else None
    pipe = make_pipeline(cfg, model.eval(), vae, text_encoder, tokenizer, image_source)
    pipe.save_pretrained(out)
    print(f"{ckpt} (EMA) -> {out}")
    return Path(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
