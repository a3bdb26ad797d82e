"""End-to-end check of the CUDA path with tiny random components (no downloads).

    python benchmarks/gpu_smoke.py OUT_DIR

Builds a tiny VAE and a tiny random BERT text encoder (with MiniLM's tokenizer when the
package is installed, else a word-level one), trains the DiT for a few steps through
``train.train_dit.main`` (mixed precision "auto" → bf16 on CUDA), then generates with the
exported pipeline on the GPU and reports the device, dtype and attention processors used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from pipelines.components import vae_tiny
from pipelines.text_to_video import ShapesVideoPipeline
from train.config import (
    DiTTrainConfig,
    ModelConfig,
    StageConfig,
    load_config,
    resolve_mixed_precision,
)
from train.train_dit import main as train_dit


def tiny_text_encoder(folder: Path) -> None:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        set(
            "a small large red green blue yellow purple orange circle square triangle moving left right "
            "up down still on black white gray beige background and".split()
        )
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)


def main(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    tiny_text_encoder(out / "text")
    vae_tiny().save_pretrained(out / "vae")
    cfg = load_config(DiTTrainConfig, None, [])
    cfg.output_dir, cfg.vae, cfg.text_encoder = (
        str(out / "run"),
        str(out / "vae"),
        str(out / "text"),
    )
    cfg.model = ModelConfig(size="dit_tiny", patch_size=2, window=[4, 2, 2])
    cfg.data.cache_clips, cfg.data.cache_images, cfg.data.size = 16, 16, 32
    cfg.stages = [
        StageConfig(name="i", steps=4, frames=1, image_batch_size=8),
        StageConfig(name="v", steps=6, frames=8, batch_size=4, image_every=2),
    ]
    cfg.sample_every, cfg.log_every, cfg.save_every = 0, 2, 5
    final = train_dit(cfg)
    pipe = ShapesVideoPipeline.from_pretrained(final).to("cuda")
    pipe.transformer.set_default_attn_processor()
    video = pipe(
        "a red circle moving left on a black background",
        num_frames=8,
        height=32,
        width=32,
        num_inference_steps=4,
        generator=torch.Generator("cuda").manual_seed(0),
    ).frames
    report = {
        "cuda": torch.cuda.get_device_name(0),
        "mixed_precision": resolve_mixed_precision("auto"),
        "losses": [
            json.loads(line)["loss"]
            for line in (out / "run" / "log.jsonl").read_text().splitlines()
        ],
        "video_shape": list(video.shape),
        "finite": bool(torch.isfinite(torch.from_numpy(video)).all()),
        "processors": sorted({type(p).__name__ for p in pipe.transformer.attn_processors.values()}),
        "transformer_device": str(pipe.transformer.device),
    }
    print(json.dumps(report, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gpu_smoke"))
