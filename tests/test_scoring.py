"""CLIPSIM / CLIPScore / X-CLIP scorers on tiny random models saved to a temporary folder and
loaded through the same path users use; numbers checked against a direct computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.scoring import ClipSimScorer, XClipScorer, load_scorer

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def tiny_clip_tokenizer(folder):
    """A character-level CLIP BPE tokenizer (no merges) written from scratch: no download."""
    from transformers import CLIPTokenizer

    vocab = {}
    for ch in LETTERS + ".,;!?'<>0123456789":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def text_cfg(vocab_size):
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=40,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)


def make_tiny_clip(folder):
    """A tiny random CLIPModel + processor saved in ``folder`` (the `clip_dir` fixture)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok = tiny_clip_tokenizer(folder)
    torch.manual_seed(0)
    config = CLIPConfig(text_config=text_cfg(len(tok)), vision_config=VISION, projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=ip, tokenizer=tok).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def xclip_dir(tmp_path_factory):
    from transformers import VideoMAEImageProcessor, XCLIPConfig, XCLIPModel, XCLIPProcessor

    folder = tmp_path_factory.mktemp("tiny_xclip")
    tok = tiny_clip_tokenizer(folder)
    torch.manual_seed(0)
    config = XCLIPConfig(
        text_config=text_cfg(len(tok)),
        vision_config={
            **VISION,
            "num_frames": 4,
            "mit_hidden_size": 16,
            "mit_intermediate_size": 32,
            "mit_num_hidden_layers": 1,
            "mit_num_attention_heads": 2,
        },
        projection_dim=16,
        prompt_layers=1,
        prompt_num_attention_heads=2,
        prompt_mlp_dim=32,
    )
    XCLIPModel(config).save_pretrained(folder)
    ip = VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    XCLIPProcessor(image_processor=ip, tokenizer=tok).save_pretrained(folder)
    return folder


def video(n=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)


def test_clipsim_matches_a_direct_computation(clip_dir):
    from transformers import CLIPModel, CLIPProcessor

    scorer = load_scorer(f"clip:{clip_dir}")
    frames, caption = video(), "a red circle moving left"
    result = scorer.score(frames, caption)

    model, proc = (
        CLIPModel.from_pretrained(clip_dir).eval(),
        CLIPProcessor.from_pretrained(clip_dir),
    )
    with torch.no_grad():
        inputs = proc(text=[caption], images=list(frames), return_tensors="pt", padding=True)
        out = model(**inputs)
    img = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
    txt = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
    cos = (img @ txt[0]).numpy()
    np.testing.assert_allclose(result.frame_scores, cos, atol=1e-5)
    assert result.score == pytest.approx(float(cos.mean()), abs=1e-5)
    assert result.clipscore == pytest.approx(float(np.mean(2.5 * np.maximum(cos, 0))), abs=1e-5)


def test_clipsim_ignores_frame_order_by_construction(clip_dir):
    scorer = ClipSimScorer.from_pretrained(clip_dir)
    frames = video(6, seed=1)
    a = scorer.score(frames, "a blue square moving up").score
    b = scorer.score(frames[::-1].copy(), "a blue square moving up").score
    assert a == pytest.approx(b, abs=1e-6)


def test_xclip_matches_a_direct_computation(xclip_dir):
    from transformers import XCLIPModel, XCLIPProcessor

    scorer = load_scorer(f"xclip:{xclip_dir}")
    frames, caption = video(9, seed=2), "a green triangle sinking"
    result = scorer.score(frames, caption)

    model, proc = (
        XCLIPModel.from_pretrained(xclip_dir).eval(),
        XCLIPProcessor.from_pretrained(xclip_dir),
    )
    idx = np.linspace(0, 8, 4).round().astype(int)
    with torch.no_grad():
        inputs = proc(text=[caption], videos=[list(frames[idx])], return_tensors="pt", padding=True)
        out = model(**inputs)
        cos = float(out.logits_per_video[0, 0] / model.logit_scale.exp())
    assert result.score == pytest.approx(cos, abs=1e-5)


def test_wrong_model_type_and_bad_specs(clip_dir, xclip_dir, tmp_path):
    with pytest.raises(
        ValueError, match="is a 'clip' model; this scorer needs one of \\('xclip',\\)"
    ):
        XClipScorer.from_pretrained(clip_dir)
    with pytest.raises(ValueError, match="scorer spec must be"):
        load_scorer(f"blip:{clip_dir}")
    with pytest.raises(ValueError, match="cannot load a scorer"):
        load_scorer(f"clip:{tmp_path / 'nothing'}")


def test_long_captions_are_truncated_with_a_warning(clip_dir):
    scorer = ClipSimScorer.from_pretrained(clip_dir)
    with pytest.warns(UserWarning, match="truncated to the tokenizer's limit 40"):
        result = scorer.score(video(2), "a very long caption " * 10)
    assert np.isfinite(result.score)


def test_bad_frames_are_refused(clip_dir):
    scorer = ClipSimScorer.from_pretrained(clip_dir)
    with pytest.raises(ValueError, match="frames must be"):
        scorer.score(np.zeros((0, 8, 8, 3), np.uint8), "x")
    with pytest.raises(ValueError, match="uint8"):
        scorer.score(np.zeros((2, 8, 8, 3), np.float32), "x")


# ---------------------------------------------------------------------------- studio score
def write_clip(path, seed=0, n=4):
    from pipelines.video_io import write_video

    write_video(path, video(n, seed)[:, :32, :32], fps=8)
    return path


def test_cli_scores_pairs_reports_bad_lines_and_keeps_going(cli, clip_dir, tmp_path):
    write_clip(tmp_path / "a.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"video": "a.mp4", "caption": "a red circle"})
        + "\n"
        + "{not json\n"
        + json.dumps({"video": "broken.mp4", "caption": "a blue square"})
        + "\n"
        + json.dumps({"video": "a.mp4"})
        + "\n"
    )
    out = tmp_path / "scores.jsonl"
    code, stdout, err = cli("score", pairs, "--out", out, "--scorer", f"clip:{clip_dir}", "--quiet")
    assert code == 1  # something could not be scored; the rest was
    assert "pairs.jsonl:2: not JSON" in err and "pairs.jsonl:4: expected" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["video"] for r in rows] == ["a.mp4", "broken.mp4"]
    assert len(rows[0]["frame_scores"]) == 4 and -1 <= rows[0]["score"] <= 1
    assert "error" in rows[1] and "score" not in rows[1]


def test_cli_scores_a_batch_folder_with_a_report(cli, clip_dir, tmp_path):
    run = tmp_path / "batch"
    run.mkdir()
    records = []
    for i, prompt in enumerate(["a red circle", "a blue square"]):
        write_clip(run / f"{prompt}-0.mp4", seed=i)
        records.append({"prompt": prompt, "sample": 0, "video": f"{prompt}-0.mp4", "status": "ok"})
    records.append({"prompt": "a failed one", "sample": 0, "status": "error", "error": "x"})
    (run / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code, stdout, err = cli("score", run, "--scorer", f"clip:{clip_dir}", "--quiet")
    assert code == 0, err
    summary = json.loads((run / "scores.json").read_text())
    assert summary["scored"] == 2 and set(summary["per_prompt"]) == {
        "a red circle",
        "a blue square",
    }
    assert (run / "scores.png").stat().st_size > 0 and "| a red circle |" in (
        run / "scores.md"
    ).read_text()


@pytest.mark.parametrize(
    "scorer, pattern",
    [("shapes:/nonexistent/scorer", "cannot load a scorer"), ("blip:x", "scorer spec must be")],
)
def test_cli_bad_scorer_exits_2(cli, tmp_path, scorer, pattern):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"video": "a.mp4", "caption": "a red circle"}) + "\n")
    code, _, err = cli("score", pairs, "--out", tmp_path / "s.jsonl", "--scorer", scorer)
    assert code == 2 and pattern in err and len(err.strip().splitlines()) == 1


def test_generate_best_of_keeps_the_top_scored_candidate(
    cli, clip_dir, tiny_pipeline_dir, tmp_path
):
    out = tmp_path / "best.mp4"
    args = ["generate", "a red circle moving left", "--out", out, "--model", tiny_pipeline_dir]
    args += ["--frames", "4", "--steps", "2", "--seed", "10", "--quiet"]
    code, _, err = cli(*args, "--best-of", "3", "--scorer", f"clip:{clip_dir}")
    assert code == 0, err
    side = json.loads(out.with_suffix(".json").read_text())
    cands = side["best_of"]["candidates"]
    assert [c["seed"] for c in cands] == [10, 11, 12] and side["best_of"]["n"] == 3
    best = max(cands, key=lambda c: c["score"])
    assert side["seed"] == side["best_of"]["chosen_seed"] == best["seed"]
    # the kept clip is the one its seed gives on its own
    again = tmp_path / "again.mp4"
    assert (
        cli("generate", "--from-sidecar", out.with_suffix(".json"), "--out", again, "--quiet")[0]
        == 0
    )
    from pipelines.video_io import read_video

    np.testing.assert_array_equal(read_video(out)[0], read_video(again)[0])


def test_cli_score_refuses_to_write_over_its_input(cli, clip_dir, tmp_path):
    write_clip(tmp_path / "a.mp4")
    pairs = tmp_path / "pairs.jsonl"
    text = json.dumps({"video": "a.mp4", "caption": "a red circle"}) + "\n{not json\n"
    pairs.write_text(text)
    code, _, err = cli("score", pairs, "--out", pairs, "--scorer", f"clip:{clip_dir}")
    assert code == 2 and "is the input it scores" in err
    assert pairs.read_text() == text
    run = tmp_path / "run"
    run.mkdir()
    manifest = run / "manifest.jsonl"
    manifest.write_text(json.dumps({"prompt": "x", "sample": 0, "status": "error"}) + "\n")
    code, _, err = cli("score", run, "--out", manifest, "--scorer", f"clip:{clip_dir}")
    assert code == 2 and "is the input it scores" in err


def test_scorer_without_best_of_exits_2(cli, clip_dir, tmp_path):
    out = tmp_path / "x.mp4"
    code, _, err = cli("generate", "a red circle", "--out", out, "--scorer", f"clip:{clip_dir}")
    assert code == 2 and "--best-of 2 or more" in err
    assert not out.exists()


def test_best_of_without_a_scorer_ranks_with_the_shipped_one(cli, tiny_pipeline_dir, tmp_path):
    """As in the web UI: --best-of N alone ranks with the shipped scorer."""
    from pipelines.scoring import load_scorer
    from pipelines.video_io import read_video
    from studio.shipped import scorer_spec

    out = tmp_path / "x.mp4"
    args = ["generate", "a red circle moving left", "--out", out, "--model", tiny_pipeline_dir]
    code, _, err = cli(*args, "--frames", "4", "--steps", "2", "--best-of", "2", "--quiet")
    assert code == 0, err
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["best_of"]["scorer"] == "VideoTextScorer" and side["best_of"]["n"] == 2
    best = max(side["best_of"]["candidates"], key=lambda c: c["score"])
    assert side["seed"] == side["best_of"]["chosen_seed"] == best["seed"]
    # the scores are the shipped scorer's: the kept clip (through the codec) scores as recorded
    kept = load_scorer(scorer_spec("default")).score(read_video(out)[0], side["prompt"]).score
    assert kept == pytest.approx(best["score"], abs=0.02)
