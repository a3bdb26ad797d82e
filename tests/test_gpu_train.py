"""The one-call GPU recipe (benchmarks/gpu_train): its config, the float16 text encoder it
carries and the folder it brings back. run.sh itself was run end to end on this CPU at a tiny
scale (docs/scale.md); the pieces are checked here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from train.config import DiTTrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "benchmarks" / "gpu_train"


def test_recipe_continues_the_shipped_model_within_one_call():
    cfg = load_config(DiTTrainConfig, str(RECIPE / "train.yaml"), [])
    assert cfg.init_from == "studio/default_model" and cfg.image_model_from == cfg.init_from
    assert cfg.vae == "studio/default_model/vae"
    assert cfg.text_encoder == ".carry/minilm-fp16"  # pack_te.py's default destination
    assert cfg.export_dtype == "float16"  # weights that come back small
    # the device allows 10 minutes a command: training stops well before, caches built there
    assert 0 < cfg.time_limit_minutes <= 8 and cfg.data.num_workers > 1
    assert cfg.data.cache_dir.startswith("/tmp/") and cfg.output_dir.startswith("/tmp/")
    # the shipped lineage's last step, as configs/train states it
    wordnet = load_config(
        DiTTrainConfig, str(ROOT / "configs/train/dit_shapes_storyboard_wordnet.yaml"), []
    )
    assert cfg.data.wordnet_phrasing_prob == wordnet.data.wordnet_phrasing_prob
    assert cfg.timestep_shift == wordnet.timestep_shift and cfg.model == wordnet.model


def test_distillation_recipe_is_the_same_call_with_the_shipped_model_as_teacher():
    """distill_video.yaml (experiments/guidance_distill on a lent GPU): train.yaml's call, the
    student given the guidance input and the shipped model as its teacher and start."""
    base = load_config(DiTTrainConfig, str(RECIPE / "train.yaml"), [])
    cfg = load_config(DiTTrainConfig, str(RECIPE / "distill_video.yaml"), [])
    assert cfg.model.guidance_embeds and not base.model.guidance_embeds
    assert cfg.guidance_distill.teacher == cfg.init_from == "studio/default_model"
    assert (ROOT / cfg.guidance_distill.teacher / "transformer" / "config.json").is_file()
    assert cfg.time_limit_minutes == base.time_limit_minutes and cfg.export_dtype == "float16"
    assert cfg.data == base.data and cfg.text_encoder == base.text_encoder


def test_finish_brings_back_the_pipeline_naming_the_packaged_encoder(tmp_path):
    run = tmp_path / "run"
    pipe = run / "pipeline"
    for sub in ("transformer", "text_encoder", "tokenizer"):
        (pipe / sub).mkdir(parents=True)
        (pipe / sub / "weights.safetensors").write_bytes(b"x" * 1000)
    index = {
        "_class_name": "ShapesVideoPipeline",
        "text_encoder": ["transformers", "BertModel"],
        "tokenizer": ["transformers", "BertTokenizerFast"],
        "text_encoder_spec": ".carry/minilm-fp16",
        "transformer": ["models.video_dit", "VideoDiT"],
    }
    (pipe / "model_index.json").write_text(json.dumps(index))
    (run / "log.jsonl").write_text('{"step": 50}\n')
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, str(RECIPE / "finish.py"), str(run), str(out)], check=True, cwd=ROOT
    )
    back = out / "pipeline"
    assert (back / "transformer" / "weights.safetensors").is_file()
    assert not (back / "text_encoder").exists() and not (back / "tokenizer").exists()
    saved = json.loads((back / "model_index.json").read_text())
    assert saved["text_encoder_spec"] == "minilm"
    assert saved["text_encoder"] == [None, None] and saved["tokenizer"] == [None, None]
    assert saved["transformer"] == index["transformer"]
    assert (out / "log.jsonl").read_text() == '{"step": 50}\n'


def test_packed_text_encoder_is_small_and_float16(tmp_path):
    from safetensors import safe_open

    dest = tmp_path / "te"
    done = subprocess.run(
        [sys.executable, str(RECIPE / "pack_te.py"), str(dest)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "relative error" in done.stdout
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    assert size < 60e6  # beside the 64 MiB a device call carries
    with safe_open(str(next(dest.glob("*.safetensors"))), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}
