"""Export the VAE of a `studio train vae` checkpoint (a run still in progress) as a diffusers
folder, with the starting VAE's latent scaling, for benchmarks/elements_vae_ceiling.py:

    python experiments/elements_vae/export_checkpoint.py runs/vae_sprites_long OUT_DIR [STEP]
"""

from __future__ import annotations

import sys
from pathlib import Path

from diffusers import AutoencoderKL
from safetensors.torch import load_file

from train.checkpoint import checkpoint_root, latest_checkpoint
from train.config import VAETrainConfig, load_config


def main(run: str, out: str, step: str | None = None) -> Path:
    cfg = load_config(VAETrainConfig, Path(run) / "config.yaml")
    ckpt = checkpoint_root(run) / f"step-{int(step):07d}" if step else latest_checkpoint(run)
    # the architecture and the latent scaling
    vae = AutoencoderKL.from_pretrained(cfg.init, use_safetensors=True)
    state = load_file(str(ckpt / "model.safetensors"))
    vae.load_state_dict({k.removeprefix("vae."): v for k, v in state.items()})
    vae.save_pretrained(out)
    print(f"{ckpt} -> {out}")
    return Path(out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
