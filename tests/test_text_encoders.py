"""Text encoders by folder: standalone CLIPTextModel (SD's ``text_encoder/``) and
T5EncoderModel (SD3's and PixArt's) folders load beside full CLIP/T5 and BERT-like ones; the
caption length is a setting, and a caption it cuts is reported."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import (
    AutoTokenizer,
    CLIPTextConfig,
    CLIPTextModel,
    T5Config,
    T5EncoderModel,
)

from pipelines.components import encode_text, load_text_encoder, minilm_path

LONG = "a red square moving left " * 12  # ~ 60 words


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    vocab = 31000  # MiniLM's tokenizer (30 522 ids) is saved beside each model
    clip = CLIPTextConfig(
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=vocab,
        bos_token_id=0,
        eos_token_id=2,
        max_position_embeddings=128,
    )
    t5 = T5Config(d_model=12, d_ff=16, num_layers=1, num_heads=2, d_kv=4, vocab_size=vocab)
    made = {"clip_text": CLIPTextModel(clip), "t5_encoder": T5EncoderModel(t5)}
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    for name, model in made.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


@pytest.mark.parametrize(
    "name, cls, width", [("clip_text", CLIPTextModel, 8), ("t5_encoder", T5EncoderModel, 12)]
)
def test_standalone_encoder_folders_load(folders, name, cls, width):
    model, tokenizer = load_text_encoder(str(folders / name))
    assert type(model) is cls
    states, mask = encode_text(model, tokenizer, ["a red square", "a blue circle moving up"])
    assert states.shape[0] == 2 and states.shape[2] == width
    assert mask.sum(1).tolist()[0] < mask.sum(1).tolist()[1]


def test_a_cut_caption_is_reported_once_and_the_limit_is_a_setting(text_encoder, caplog):
    model, tokenizer = text_encoder
    with caplog.at_level(logging.WARNING, logger="pipelines.components"):
        states, mask = encode_text(model, tokenizer, [LONG + "x1"], max_length=16)
        encode_text(model, tokenizer, [LONG + "x1"], max_length=16)  # the same prompt again
    assert mask.shape[1] == 16
    cut = [r for r in caplog.records if "prompt cut to 16" in r.getMessage()]
    assert len(cut) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelines.components"):
        _, mask = encode_text(model, tokenizer, [LONG + "x2"], max_length=128)
    assert mask.shape[1] > 16 and not caplog.records  # fits: nothing to report


def test_pipeline_keeps_its_text_length_through_save_and_load(tiny_pipe, text_encoder, tmp_path):
    from pipelines.text_to_video import ShapesVideoPipeline

    encoder, tokenizer = text_encoder
    tiny_pipe.register_to_config(text_max_length=12)
    try:
        tiny_pipe.save_pretrained(tmp_path, save_text_encoder=False)
        _, mask = tiny_pipe.encode_prompt([LONG], None, torch.device("cpu"))
    finally:
        tiny_pipe.register_to_config(text_max_length=64)
    assert mask.shape[1] == 12
    loaded = ShapesVideoPipeline.from_pretrained(
        tmp_path, text_encoder=encoder, tokenizer=tokenizer
    )
    assert loaded.config.text_max_length == 12


def test_an_exported_pipeline_loads_anywhere_it_is_moved(folders, tmp_path):
    """A pipeline whose text encoder is a local folder saves that encoder with it: moved to
    another folder (the encoder's folder gone), it loads with ShapesVideoPipeline and with
    plain DiffusionPipeline (diffusers' custom-pipeline hook) and draws the same frames."""
    import shutil

    from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler

    from pipelines.text_to_video import ShapesVideoPipeline
    from tests.conftest import make_tiny_dit, make_tiny_vae

    source = tmp_path / "t5"
    shutil.copytree(folders / "t5_encoder", source)
    encoder, tokenizer = load_text_encoder(str(source))
    pipe = ShapesVideoPipeline(
        transformer=make_tiny_dit(opened=True, text_dim=12),
        vae=make_tiny_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=encoder,
        tokenizer=tokenizer,
        text_encoder_spec=str(source),
    )
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_frames=2, height=16, width=16, num_inference_steps=2, output_type="np")

    def frames(p):
        return p("a red square", generator=torch.Generator().manual_seed(0), **kw).frames

    expected = frames(pipe)
    pipe.save_pretrained(tmp_path / "a")
    assert (tmp_path / "a" / "text_encoder" / "config.json").is_file()
    shutil.move(tmp_path / "a", tmp_path / "elsewhere")
    shutil.rmtree(source)

    moved = ShapesVideoPipeline.from_pretrained(tmp_path / "elsewhere")
    moved.set_progress_bar_config(disable=True)
    assert type(moved.text_encoder) is T5EncoderModel
    assert (frames(moved) == expected).all()
    plain = DiffusionPipeline.from_pretrained(
        tmp_path / "elsewhere", custom_pipeline="pipeline", trust_remote_code=True
    )
    plain.set_progress_bar_config(disable=True)
    assert type(plain).__name__ == "ShapesVideoPipeline"
    assert (frames(plain) == expected).all()


def test_a_pipeline_naming_a_missing_encoder_folder_says_so(tiny_pipeline_dir, tmp_path):
    import json
    import shutil

    from pipelines.text_to_video import ShapesVideoPipeline

    folder = tmp_path / "p"
    shutil.copytree(tiny_pipeline_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder_spec"] = "/no/such/runs/te"
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="text encoder folder '/no/such/runs/te' not found"):
        ShapesVideoPipeline.from_pretrained(folder)
