"""train.text_only: a pipeline shipped without its reference path draws the same clips from
text and refuses references like a model that never had the path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import build_tiny_pipeline, make_tiny_dit

SMALL = ["--frames", "4", "--height", "16", "--width", "16", "--steps", "2", "--quiet"]


def test_dropping_the_reference_path_keeps_the_rest(monkeypatch):
    import train.text_only as text_only

    model = make_tiny_dit(0, opened=True, max_references=2)
    plain = text_only.drop_reference_path(model)
    assert plain.config.max_references == 0 and plain.ref_encoder is None
    kept = plain.state_dict()
    assert all(v.equal(model.state_dict()[k]) for k, v in kept.items())
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in model.parameters())

    # the forward check fails when the copy would draw something else from text alone
    class Shifted(text_only.VideoDiT):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.sample.add_(1e-3 if self.config.max_references == 0 else 0.0)
            return out

    monkeypatch.setattr(text_only, "VideoDiT", Shifted)
    with pytest.raises(ValueError, match="differs"):
        text_only.drop_reference_path(model)


def test_the_copy_draws_the_same_clips_and_refuses_references(cli, text_encoder, tmp_path):
    from pipelines.video_io import read_video
    from train.text_only import main

    source, copy = tmp_path / "with_refs", tmp_path / "text_only"
    build_tiny_pipeline(text_encoder, 0, max_references=2).save_pretrained(
        source, save_text_encoder=False
    )
    assert main([str(source), str(copy)]) == copy
    assert not (copy / "pipeline.py").exists()  # no diffusers hook: this package loads it
    with pytest.raises(SystemExit, match="exists"):
        main([str(source), str(copy)])
    with pytest.raises(SystemExit, match="no reference path"):
        main([str(copy), str(tmp_path / "again")])

    prompt = "a red square moves left on a blue background"
    for name in ("with_refs", "text_only"):
        code, _, err = cli(
            "generate",
            prompt,
            "--model",
            tmp_path / name,
            "--seed",
            "3",
            "--out",
            tmp_path / f"{name}.mp4",
            *SMALL,
        )
        assert code == 0, err
    a, b = (read_video(tmp_path / f"{n}.mp4")[0] for n in ("with_refs", "text_only"))
    np.testing.assert_array_equal(a, b)

    sprite = tmp_path / "sprite.png"
    Image.new("RGBA", (32, 32), (255, 0, 0, 255)).save(sprite)
    out = tmp_path / "ref.mp4"
    code, _, err = cli(
        "generate", "<ref1> moving left", "--ref", sprite, "--model", copy, "--out", out, *SMALL
    )
    assert code == 2 and "no reference-element conditioning" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
