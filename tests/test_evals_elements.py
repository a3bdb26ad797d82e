"""evals.elements: the sprite judge reads identity (shape + both pattern colours) and
motion off renderer ground truth, clean and degraded; wrong colours and wrong motions are
caught; the held-out suite (built by train.elements_suite) uses only held-out sprites; run
folders (filled by studio.elements_batch) score 100 % on ground truth, through the renderer
and through a (fake) pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evals.elements import (
    ELEMENTS_SUITE_PATH,
    ELEMENTS_VAL_PATH,
    ElementsExpectation,
    ExpectedSprite,
    detect_sprites,
    evaluate_elements_dir,
    judge_elements,
    load_elements_suite,
    parse_elements_caption,
)
from evals.report import write_elements_report
from pipelines.video_io import read_video, write_video
from studio.cli import main
from studio.elements_batch import generate_elements_run, reference_images, render_ground_truth_run
from studio.errors import StudioError
from train.elements_suite import (
    build_elements_suite,
    build_elements_val,
    write_elements_suite,
    write_elements_val,
)
from train.scorer_data import gaussian_blur
from world import shapes_world as sw
from world.placement import place_sprites

REVERSED = {"left": "right", "right": "left", "up": "down", "down": "up", "still": "left"}


# ------------------------------------------------------------------------------------ helpers


def reference_samples(n: int, seed: int) -> list[sw.Sample]:
    """``n`` reference clips (1–2 sprites) without exclusions: every sprite may appear."""
    world = sw.ShapesWorld(seed=seed, exclusions=False, mix={"reference": 1.0})
    return [world.sample(i) for i in range(n)]


def expectation_of(meta: dict) -> ElementsExpectation:
    """The exact expectation of a rendered sample (its objects in placeholder order)."""
    sprites = [
        ExpectedSprite(o["shape"], o["color"], o["color2"], o["motion"], o["pattern"], o["size"])
        for o in meta["objects"]
    ]
    return ElementsExpectation(sprites, meta["background"])


def sprite_clip(
    objects: list[tuple], background: str = "gray", frames: int = 16
) -> tuple[np.ndarray, ElementsExpectation]:
    """Render ``(shape, pattern, color, color2, size, motion, x, y)`` sprites at S = 64."""
    specs = [
        sw.ObjectSpec(shape=sh, color=c1, size=sz, motion=m, x=x, y=y, pattern=pat, color2=c2)
        for sh, pat, c1, c2, sz, m, x, y in objects
    ]
    exp = ElementsExpectation(
        [ExpectedSprite(o.shape, o.color, o.color2, o.motion, o.pattern, o.size) for o in specs],
        background,
    )
    return sw.render(sw.ClipSpec(specs, background, frames)), exp


def degrade(frames: np.ndarray, rng: np.random.Generator, tmp: Path) -> np.ndarray:
    """A stand-in for a generator's output: Gaussian blur (σ = 1 px), a global tint of up to
    ±10 levels, noise (σ = 6) and an H.264 (yuv420p) round trip through the project's writer."""
    x = gaussian_blur(frames, 1.0) + rng.uniform(-10, 10, size=3) + rng.normal(0, 6, frames.shape)
    x = np.clip(x, 0, 255).round().astype(np.uint8)
    path = tmp / "degraded.mp4"
    write_video(path, x, fps=8)
    return read_video(path)[0]


def ref_rates(results: list[dict]) -> dict[str, float]:
    refs = [r for res in results for r in res["references"]]
    return {
        "identity": sum(r["identity"] for r in refs) / len(refs),
        "motion": sum(r["motion"] for r in refs) / len(refs),
    }


@pytest.fixture(scope="module")
def small_suite() -> list[dict]:
    return build_elements_suite(n=3, seed=5)


# --------------------------------------------------------------------------- ground truth


def test_judge_reads_rendered_ground_truth():
    samples = reference_samples(60, seed=1)
    results = [judge_elements(s.frames, expectation_of(s.meta)) for s in samples]
    rates = ref_rates(results)
    assert rates["identity"] >= 0.95 and rates["motion"] >= 0.95, rates
    assert sum(r["all_correct"] for r in results) / len(results) >= 0.95
    # the sample covers what the claim is about
    objects = [o for s in samples for o in s.meta["objects"]]
    assert {(o["shape"], o["pattern"]) for o in objects} == {
        (sh, p) for sh in sw.SHAPES for p in sw.PATTERNS
    }
    assert {s.meta["background"] for s in samples} == set(sw.BACKGROUNDS)
    assert {len(s.meta["objects"]) for s in samples} == {1, 2}
    assert {o["motion"] for o in objects} == set(sw.MOTIONS)


def test_judge_tolerates_blur_tint_noise_and_h264(tmp_path):
    rng = np.random.default_rng(0)
    samples = reference_samples(36, seed=2)
    results = [
        judge_elements(degrade(s.frames, rng, tmp_path), expectation_of(s.meta)) for s in samples
    ]
    rates = ref_rates(results)
    assert rates["identity"] >= 0.9 and rates["motion"] >= 0.9, rates


def test_detection_reports_colours_shape_size_and_velocity():
    frames, _ = sprite_clip([("triangle", "hstripes", "red", "blue", "large", "right", 4, 20)])
    det = detect_sprites(frames)
    assert det.background == "gray" and len(det.sprites) == 1
    sprite = det.sprites[0]
    assert set(sprite.colors) == {"red", "blue"} and sprite.shape == "triangle"
    assert sprite.size == "large" and sprite.motion == "right"
    assert sprite.velocity[0] == pytest.approx(2.0, abs=0.1)
    assert sprite.velocity[1] == pytest.approx(0.0, abs=0.1)
    assert min(sprite.color_shares.values()) > 0.3


# ------------------------------------------------------------------------ wrong is wrong


@pytest.mark.parametrize("shape", sw.SHAPES)
@pytest.mark.parametrize("pattern", sw.PATTERNS)
def test_recoloured_stripe_is_identity_wrong(shape, pattern):
    frames, exp = sprite_clip([(shape, pattern, "green", "yellow", "large", "down", 20, 8)])
    assert judge_elements(frames, exp)["references"][0]["identity"]
    # paint the second pattern colour (yellow) blue: same shape, same motion, wrong identity
    recoloured = frames.copy()
    recoloured[(frames == sw.OBJECT_COLORS["yellow"]).all(-1)] = sw.OBJECT_COLORS["blue"]
    ref = judge_elements(recoloured, exp)["references"][0]
    assert ref["shape"] and ref["motion"]
    assert not ref["colours"] and not ref["identity"]
    assert set(ref["detected"]["colors"]) == {"green", "blue"}


def test_plain_object_and_wrong_shape_are_identity_wrong():
    frames, exp = sprite_clip([("square", "vstripes", "red", "blue", "large", "left", 30, 20)])
    plain = frames.copy()
    plain[(frames == sw.OBJECT_COLORS["blue"]).all(-1)] = sw.OBJECT_COLORS["red"]
    ref = judge_elements(plain, exp)["references"][0]
    assert ref["detected"]["colors"] == ["red"] and not ref["identity"]
    circle, _ = sprite_clip([("circle", "vstripes", "red", "blue", "large", "left", 30, 20)])
    ref = judge_elements(circle, exp)["references"][0]
    assert ref["colours"] and not ref["shape"] and not ref["identity"]


@pytest.mark.parametrize("motion", sw.MOTIONS)
def test_wrong_motion_is_motion_wrong(motion):
    frames, exp = sprite_clip([("circle", "checker", "green", "yellow", "small", motion, 26, 26)])
    assert judge_elements(frames, exp)["motion"]
    exp.sprites[0].motion = REVERSED[motion]
    result = judge_elements(frames, exp)
    assert result["references"][0]["identity"]
    assert not result["references"][0]["motion"] and not result["all_correct"]


def test_two_references_match_by_identity_not_order():
    objects = [
        ("square", "hstripes", "red", "blue", "small", "right", 4, 6),
        ("triangle", "checker", "green", "yellow", "large", "up", 34, 38),
    ]
    frames, exp = sprite_clip(objects, background="beige")
    result = judge_elements(frames, exp)
    assert result["all_correct"], result
    # listed the other way round: still matched to the right sprites
    flipped = ElementsExpectation(exp.sprites[::-1], "beige")
    assert judge_elements(frames, flipped)["all_correct"]
    # motions swapped between the two references: both motions wrong, identities right
    swapped = ElementsExpectation(
        [
            ExpectedSprite("square", "red", "blue", "up"),
            ExpectedSprite("triangle", "green", "yellow", "right"),
        ],
        "beige",
    )
    result = judge_elements(frames, swapped)
    assert [r["identity"] for r in result["references"]] == [True, True]
    assert [r["motion"] for r in result["references"]] == [False, False]
    # a reference nothing in the video looks like: missing, and the count is off
    extra = ElementsExpectation([*exp.sprites, ExpectedSprite("circle", "red", "green")], None)
    result = judge_elements(frames, extra)
    assert result["references"][2]["detected"] is None and not result["count"]


def test_blank_and_noise_videos_are_wrong_not_errors():
    exp = ElementsExpectation([ExpectedSprite("circle", "green", "yellow", "left")], "black")
    blank = np.full((16, 64, 64, 3), 15, dtype=np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    for frames in (blank, noise):
        result = judge_elements(frames, exp)
        assert not result["references"][0]["identity"] and not result["all_correct"]


# ---------------------------------------------------------------------------- captions


def test_parse_elements_caption_reads_renderer_captions():
    for s in reference_samples(40, seed=3):
        refs = s.meta["objects"]
        exp = parse_elements_caption(s.caption, refs)
        assert [sp.motion for sp in exp.sprites] == [o["motion"] for o in refs], s.caption
        assert exp.background == s.meta["background"]
        assert [(sp.shape, sp.colors) for sp in exp.sprites] == [
            (o["shape"], frozenset((o["color"], o["color2"]))) for o in refs
        ]


@pytest.mark.parametrize(
    "text, n_refs, match",
    [
        ("<ref1> moving left on a gray background", 2, "does not name <ref2>"),
        ("<ref3> moving left on a gray background", 2, "only 2 reference"),
        ("<ref1> moving left and <ref1> moving up", 1, "more than once"),
        ("<ref1> moving left and right", 1, "contradictory"),
        ("<ref1> moving left on a gray and black background", 1, "several backgrounds"),
    ],
)
def test_parse_elements_caption_errors_explain_themselves(text, n_refs, match):
    refs = [{"shape": "square", "color": "red", "color2": "blue"}] * n_refs
    with pytest.raises(ValueError, match=match):
        parse_elements_caption(text, refs)


# -------------------------------------------------------------------------------- suite


def test_suite_uses_only_heldout_sprites_and_is_balanced():
    suite = build_elements_suite()
    assert [e["category"] for e in suite].count("one_ref") == 40
    assert [e["category"] for e in suite].count("two_refs") == 40
    refs = [r for e in suite for r in e["references"]]
    for r in refs:
        assert sw.is_heldout_sprite(r["shape"], r["pattern"], r["color"], r["color2"]), r
        assert "purple" not in (r["color"], r["color2"])
        assert not sw.is_excluded(r["shape"], r["color"], r["color2"]), r
    for e in suite:
        pairs = [frozenset((r["color"], r["color2"])) for r in e["references"]]
        assert len(set(pairs)) == len(pairs), e  # the judge can tell the two apart
        assert len(e["references"]) == (1 if e["category"] == "one_ref" else 2)
    motions = [m for e in suite for m in e["motions"]]
    assert {motions.count(m) for m in sw.MOTIONS} == {len(motions) // 5}
    assert {r["size"] for r in refs} == set(sw.SIZES) and {r["shape"] for r in refs} == set(
        sw.SHAPES
    )
    assert {e["background"] for e in suite} == set(sw.BACKGROUNDS)
    assert len({e["name"] for e in suite}) == len(suite)  # prompts may repeat: refs differ


def test_suite_is_deterministic_parses_and_fits_the_canvas():
    suite = build_elements_suite(seed=11)
    assert suite == build_elements_suite(seed=11)
    assert suite != build_elements_suite(seed=12)
    for k, e in enumerate(suite):
        exp = parse_elements_caption(e["prompt"], e["references"])
        assert [sp.motion for sp in exp.sprites] == e["motions"], e["prompt"]
        assert exp.background == e["background"], e["prompt"]
        rng = np.random.default_rng([k])
        assert place_sprites(e["references"], e["motions"], e["background"], rng) is not None


def test_committed_suite_is_up_to_date(tmp_path):
    fresh = write_elements_suite(tmp_path / "suite.jsonl")
    assert fresh.read_text() == ELEMENTS_SUITE_PATH.read_text(), (
        "regenerate with `python -m train.elements_suite`"
    )
    assert load_elements_suite() == build_elements_suite()


def test_validation_suite_uses_training_sprites_and_is_committed(tmp_path):
    val = build_elements_val()
    assert [e["category"] for e in val].count("one_ref") == 20
    assert [e["category"] for e in val].count("two_refs") == 20
    for r in (r for e in val for r in e["references"]):
        assert not sw.is_heldout_sprite(r["shape"], r["pattern"], r["color"], r["color2"]), r
        assert not sw.is_excluded(r["shape"], r["color"], r["color2"]), r
    held_out = build_elements_suite()
    assert not {e["name"] for e in val} & {e["name"] for e in held_out}
    for e in val:  # the judge reads what the prompt says
        exp = parse_elements_caption(e["prompt"], e["references"])
        assert [sp.motion for sp in exp.sprites] == e["motions"], e["prompt"]
    fresh = write_elements_val(tmp_path / "val.jsonl")
    assert fresh.read_text() == ELEMENTS_VAL_PATH.read_text(), (
        "regenerate with `python -m train.elements_suite`"
    )


def test_reference_images_are_the_renderers(small_suite):
    entry = next(e for e in small_suite if len(e["references"]) == 2)
    images = reference_images(entry)
    assert [im.shape for im in images] == [(64, 64, 3)] * 2
    assert all(im.dtype == np.uint8 for im in images)
    assert (images[0][0, 0] == sw.REFERENCE_BACKGROUND).all()
    for im, ref in zip(images, entry["references"], strict=True):
        seen = {tuple(int(v) for v in px) for px in im.reshape(-1, 3)}
        want = {sw.REFERENCE_BACKGROUND, sw.OBJECT_COLORS[ref["color"]]}
        assert seen == want | {sw.OBJECT_COLORS[ref["color2"]]}


# --------------------------------------------------------------------------- run folders


def test_ground_truth_run_scores_everything_right_and_resumes(tmp_path, small_suite):
    counts = render_ground_truth_run(small_suite, tmp_path)
    assert counts == {"done": 6, "skipped": 0, "failed": 0, "total": 6}
    report = evaluate_elements_dir(tmp_path)
    overall = report["overall"]
    assert overall["n_refs_one"] == 3 and overall["n_refs_two"] == 6
    for key in ("identity_one_ref", "identity_two_refs", "motion", "all_correct"):
        assert overall[key] == 1.0, (key, report["items"])
    assert all(overall["passes"].values())
    assert (tmp_path / "elements-000-ref1.png").is_file()
    assert json.loads((tmp_path / "elements-000-0.json").read_text())["source"] == "ground_truth"

    assert render_ground_truth_run(small_suite, tmp_path)["skipped"] == 6
    paths = write_elements_report(report, tmp_path / "report")
    assert json.loads(paths["json"].read_text())["overall"]["motion"] == 1.0
    assert "identity, two references" in paths["markdown"].read_text()


def test_failed_or_unreadable_videos_count_as_wrong(tmp_path, small_suite):
    render_ground_truth_run(small_suite[:2], tmp_path)
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    records[0] |= {"status": "error", "error": "out of memory"}
    (tmp_path / records[1]["video"]).write_bytes(b"not a video")
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report = evaluate_elements_dir(tmp_path)
    assert report["overall"]["n_failed"] == 2 and report["overall"]["identity_one_ref"] == 0.0
    assert [it["status"] for it in report["items"]] == ["error", "unreadable"]
    with pytest.raises(ValueError, match="no manifest.jsonl"):
        evaluate_elements_dir(tmp_path / "empty")


class GroundTruthPipe:
    """A stand-in for the elements pipeline: renders each suite entry's ground truth as
    float frames in [0, 1] and records how it was called."""

    def __init__(self, suite: list[dict]) -> None:
        self.by_prompt = {e["prompt"]: e for e in suite}
        self.calls: list[dict] = []

    def __call__(
        self,
        prompt,
        reference_images=None,
        num_frames=16,
        num_inference_steps=25,
        guidance_scale=4.0,
        generator=None,
    ):
        entry = self.by_prompt[prompt]
        self.calls.append(
            {"prompt": prompt, "refs": reference_images, "seed": generator.initial_seed()}
        )
        rng = np.random.default_rng(generator.initial_seed())
        spec = place_sprites(entry["references"], entry["motions"], entry["background"], rng)
        spec.frames = num_frames
        frames = sw.render(spec).astype(np.float32) / 255.0

        class Out:
            pass

        out = Out()
        out.frames = frames[None]
        return out


def test_generate_elements_run_calls_the_pipeline_by_contract(tmp_path, small_suite):
    pipe = GroundTruthPipe(small_suite)
    counts = generate_elements_run(pipe, small_suite, tmp_path, samples=2, seed=7, steps=3)
    assert counts == {"done": 12, "skipped": 0, "failed": 0, "total": 12}
    assert sorted({c["seed"] for c in pipe.calls}) == [7, 8]
    for call in pipe.calls:
        entry = pipe.by_prompt[call["prompt"]]
        want = reference_images(entry)
        assert len(call["refs"]) == len(entry["references"])
        assert all(np.array_equal(a, b) for a, b in zip(call["refs"], want, strict=True))
    sidecar = json.loads((tmp_path / "elements-000-1.json").read_text())
    assert sidecar["seed"] == 8 and sidecar["steps"] == 3 and sidecar["source"] == "model"
    assert evaluate_elements_dir(tmp_path)["overall"]["all_correct"] == 1.0
    # resumable: nothing is generated twice
    pipe.calls.clear()
    again = generate_elements_run(pipe, small_suite, tmp_path, samples=2, seed=7, steps=3)
    assert again["skipped"] == 12 and pipe.calls == []
    # a resume with other settings, or the renderer into the model's folder, is refused before
    # any video is made (the folder would mix two settings under one report)
    for kwargs, word in (
        ({"steps": 4}, "steps 3"),
        ({"seed": 8}, "seed 7"),
        ({"frames": 8}, "frames 16"),
    ):
        with pytest.raises(StudioError, match=f"already holds videos made with {word}"):
            generate_elements_run(
                pipe, small_suite, tmp_path, samples=2, **{"seed": 7, "steps": 3} | kwargs
            )
    with pytest.raises(StudioError, match="source 'model'"):
        render_ground_truth_run(small_suite, tmp_path, samples=2, seed=7)
    assert pipe.calls == []


def test_generate_elements_run_checks_every_finished_video_before_making_one(tmp_path, small_suite):
    pipe = GroundTruthPipe(small_suite)
    generate_elements_run(pipe, small_suite, tmp_path, steps=3)
    manifest = tmp_path / "manifest.jsonl"
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    lines[0] |= {"status": "error", "error": "out of memory"}  # the first video to redo
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    pipe.calls.clear()
    for kwargs in ({"steps": 4}, {"steps": 3, "lora": "adapters/style"}):
        with pytest.raises(StudioError, match="already holds videos made with"):
            generate_elements_run(pipe, small_suite, tmp_path, **kwargs)
    assert pipe.calls == [] and {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # the same settings redo the first video and keep every other line, in order
    counts = generate_elements_run(pipe, small_suite, tmp_path, steps=3)
    assert (counts["done"], counts["skipped"]) == (1, len(lines) - 1)
    after = [json.loads(x) for x in manifest.read_text().splitlines()]
    assert [x["status"] for x in after] == ["ok"] * len(lines) and after[1:] == lines[1:]


def test_an_interrupted_elements_run_keeps_the_finished_lines_after_it(tmp_path, small_suite):
    pipe = GroundTruthPipe(small_suite)
    generate_elements_run(pipe, small_suite, tmp_path, steps=3)
    manifest = tmp_path / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    for line in (lines[0], lines[2]):  # two videos to redo
        (tmp_path / json.loads(line)["video"]).unlink()

    def interrupted(*args, **kwargs):
        if len(pipe.calls) == 1:  # the second video to redo: a Ctrl-C while it is made
            raise KeyboardInterrupt
        return pipe(*args, **kwargs)

    pipe.calls.clear()
    with pytest.raises(KeyboardInterrupt):
        generate_elements_run(interrupted, small_suite, tmp_path, steps=3)
    # the first redone video's line is written, and no finished line after it is lost
    assert manifest.read_text().splitlines() == [lines[0], lines[1], *lines[3:]]


def test_generate_elements_run_refuses_a_pipeline_without_references(tmp_path, small_suite):
    def text_only(prompt, num_frames=16, generator=None):  # no reference_images
        raise AssertionError("must not be called")

    with pytest.raises(ValueError, match="takes no reference_images"):
        generate_elements_run(text_only, small_suite, tmp_path)
    assert not (tmp_path / "manifest.jsonl").exists()


def test_cli_eval_elements_ground_truth(tmp_path, small_suite, capsys):
    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps(e) + "\n" for e in small_suite))
    run = tmp_path / "run"
    code = main(["eval", "elements", str(run), "--ground-truth", "--suite", str(suite), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "6 videos written" in out and "| motion (per reference) | 9 | 100 % |" in out
    assert json.loads((run / "eval.json").read_text())["overall"]["all_correct"] == 1.0

    assert main(["eval", "elements", str(tmp_path / "nothing")]) == 2
    assert "no manifest.jsonl" in capsys.readouterr().err
    suite.write_text('{"name": "x"}\n')
    assert main(["eval", "elements", str(run), "--ground-truth", "--suite", str(suite)]) == 2
    assert "bad suite entry" in capsys.readouterr().err


def test_generate_elements_run_with_a_tiny_reference_pipeline(tmp_path, small_suite, text_encoder):
    """The call contract holds for the real pipeline (random weights: videos are judged, not
    expected right); a text-to-video model is refused before any video is made."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from pipelines.text_to_video import ShapesVideoPipeline
    from tests.conftest import build_tiny_pipeline, make_tiny_dit, make_tiny_vae, open_zero_inits

    encoder, tokenizer = text_encoder
    pipe = ShapesVideoPipeline(
        transformer=open_zero_inits(make_tiny_dit(max_references=2), seed=3),
        vae=make_tiny_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=encoder,
        tokenizer=tokenizer,
    )
    pipe.set_progress_bar_config(disable=True)
    entries = [small_suite[0], small_suite[-1]]  # one reference, then two
    counts = generate_elements_run(pipe, entries, tmp_path, steps=1, frames=4)
    assert counts["done"] == 2, (tmp_path / "manifest.jsonl").read_text()
    frames, _ = read_video(tmp_path / "elements-000-0.mp4")
    assert frames.shape == (4, 64, 64, 3)
    assert evaluate_elements_dir(tmp_path)["overall"]["n_failed"] == 0

    with pytest.raises(ValueError, match="not trained with reference elements"):
        generate_elements_run(build_tiny_pipeline(text_encoder), entries, tmp_path / "t2v")
    assert not (tmp_path / "t2v").exists()
