"""``studio`` command line: generate, storyboard, batch, eval, data, train.

User errors print one line ``error: …`` and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

from .errors import StudioError
from .shipped import scorer_spec

# pipelines.text_to_video.DEFAULT_GUIDANCE, repeated so that `studio --help` does not import torch
# (tests/test_cli.py checks that the two agree)
DEFAULT_GUIDANCE = 3.0
DEFAULT_STEPS = 12  # likewise pipelines.text_to_video.DEFAULT_STEPS
GUIDANCE_HELP = "classifier-free guidance scale (default %(default)s)"

EXIT_USAGE = 2
# `studio data shapes --size`: the pipeline generates sides up to 1024 px; a larger canvas
# only exhausts memory
MAX_DATA_SIZE = 1024


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _bounded_int(high: int):
    """An argparse type: a whole number from 1 to ``high``."""

    def parse(text: str) -> int:
        value = _positive_int(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# generate's options that replace a sidecar's recorded setting under --from-sidecar
SIDECAR_OVERRIDES = {
    "prompt": "prompt",
    "--negative": "negative_prompt",
    "--seed": "seed",
    "--steps": "steps",
    "--guidance": "guidance",
    "--frames": "frames",
    "--fps": "fps",
    "--height": "height",
    "--width": "width",
    "--image-first": "image_first",
    "--lora": "lora",
}


# storyboard's options (every StoryboardOptions field but per_scene), which also replace a
# storyboard sidecar's recorded setting under --from-sidecar
STORYBOARD_SIDECAR_OVERRIDES = {
    flag: flag.lstrip("-").replace("-", "_")
    for flag in (
        "--seed", "--steps", "--guidance", "--window", "--context", "--height", "--width",
        "--image-first", "--full-windows", "--candidates", "--lora",
    )
}  # fmt: skip


def _positional_or_option(args: argparse.Namespace, name: str, metavar: str) -> str:
    """A value a command takes either positionally (as it always has) or as ``--NAME`` (as the
    other commands take it): one of the two, the same if both."""
    positional, option = getattr(args, name), getattr(args, f"{name}_option")
    if positional and option and positional != option:
        raise StudioError(f"{metavar} given twice: {positional} and --{name} {option}")
    if not (positional or option):
        raise StudioError(f"give {metavar} (or --{name} {metavar})")
    return positional or option


def _given_options(args: argparse.Namespace, options: dict[str, str]) -> dict:
    """Of ``options`` (flag → request field), those typed on the command line (whatever
    their value, the default included) → {flag: value}."""
    parser = build_parser()
    for sub in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        for command in sub.choices.values():
            for action in command._actions:
                action.default = argparse.SUPPRESS
    typed = vars(parser.parse_known_args(args.argv)[0])
    dests = {flag: flag.lstrip("-").replace("-", "_") for flag in options}
    return {flag: getattr(args, dest) for flag, dest in dests.items() if dest in typed}


def _replay(args: argparse.Namespace, settings, overrides: dict[str, str]) -> tuple:
    """For ``--from-sidecar``: the model to use (``--model``, else the sidecar's, so that the
    same sidecar gives the same frames), and the options typed beside the sidecar set on
    ``settings`` in place of what it recorded (same clip, another seed) → (model, {flag:
    value} of those)."""
    from .generate import sidecar_model

    model = args.model if args.model is not None else sidecar_model(args.from_sidecar)
    changed = _given_options(args, overrides)
    for flag, value in changed.items():
        setattr(settings, overrides[flag], value)
    if changed and not args.quiet:
        print(f"{args.from_sidecar}'s settings with {', '.join(changed)} replaced")
    return model, changed


# ---------------------------------------------------------------------------- commands
def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .generate import (
        GenerateRequest,
        check_model_takes_references,
        check_output_path,
        check_prompt_references,
        check_request,
        clean_stale_temps,
        generate,
        max_references,
        model_for,
        read_references,
        reference_size,
        request_from_sidecar,
    )

    model = args.model
    if args.from_sidecar:
        if args.ref:
            raise StudioError(
                "--ref cannot be combined with --from-sidecar: the sidecar names its references"
            )
        request = request_from_sidecar(args.from_sidecar)
        model, changed = _replay(args, request, SIDECAR_OVERRIDES)
        if changed:
            check_request(request)
    else:
        if args.prompt is None:
            raise StudioError(
                'no prompt; give a sentence such as "a red circle moving left on a black background"'
            )
        request = GenerateRequest(
            prompt=args.prompt,
            negative_prompt=args.negative,
            seed=args.seed,
            steps=args.steps,
            guidance=args.guidance,
            frames=args.frames,
            fps=args.fps,
            height=args.height,
            width=args.width,
            image_first=args.image_first,
            references=list(args.ref or []),
            lora=args.lora,
        )
        check_request(request)  # a sidecar's settings are checked as it is read
    if not request.prompt.strip():
        raise StudioError(
            'the prompt is empty; give a sentence such as "a red circle moving left on a black background"'
        )
    # Every input is checked before the scorer or the model loads: a bad one fails at once.
    request.references = read_references(request.references, size=reference_size(request))
    check_prompt_references(request.prompt, len(request.references))
    out = check_output_path(args.out)
    clean_stale_temps(out.parent)  # what a killed run left beside the output
    model_path = model_for(model, references=bool(request.references))
    check_model_takes_references(len(request.references), max_references(model_path), model_path)
    # The bar opens at the first finished step, once the model has loaded and accepted the
    # inputs: a rejected request then prints only its one-line error.
    bar = None

    def progress(step: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(
                total=total * args.best_of, desc="denoising", unit="step", disable=args.quiet
            )
        if step:  # 0: a step of the first frame (image first), not of the clip
            bar.update(1)

    scorer = None
    if args.scorer and args.best_of == 1:
        raise StudioError("--scorer ranks --best-of N candidates: give --best-of 2 or more")
    if args.best_of > 1:
        from pipelines.scoring import load_scorer

        from .shipped import configured_scorer_spec

        # unless one is named, the web UI's ($STUDIO_SCORER, else the shipped one); loaded
        # before any generation, so a bad spec costs nothing
        spec = args.scorer or configured_scorer_spec()
        if spec is None or spec == "none":
            raise StudioError("--best-of N needs a scorer: no shipped scorer here; give --scorer")
        scorer = load_scorer(scorer_spec(spec))
    try:
        result = generate(
            request, args.out, model=model, progress=progress, best_of=args.best_of, scorer=scorer
        )
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {result.path} ({len(result.frames)} frames) and {result.sidecar}")
    return 0


def cmd_storyboard(args: argparse.Namespace) -> int:
    """``studio storyboard``: validate everything, generate all windows, then write the files
    (a failure at any point leaves no output behind)."""
    from tqdm.auto import tqdm

    from pipelines.storyboard import load_storyboard

    from .generate import (
        StoryboardOptions,
        check_output_path,
        clean_stale_temps,
        render_storyboard,
        storyboard_from_sidecar,
    )

    if bool(args.story) == bool(args.from_sidecar):
        raise StudioError("give a storyboard file or --from-sidecar FILM.json (one of the two)")
    out = check_output_path(args.out)
    clean_stale_temps(out.parent)
    model = args.model
    if args.from_sidecar:
        story, options = storyboard_from_sidecar(args.from_sidecar)
        model, changed = _replay(args, options, STORYBOARD_SIDECAR_OVERRIDES)
        if args.per_scene is not None:  # else as the film was made: its scene files too
            options.per_scene = args.per_scene
    else:
        changed = {}
        story = load_storyboard(Path(args.story))
        options = StoryboardOptions(
            per_scene=bool(args.per_scene),
            **{name: getattr(args, name) for name in STORYBOARD_SIDECAR_OVERRIDES.values()},
        )
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # opened once the inputs are accepted: a rejected story prints one line
            bar = tqdm(total=total, desc="windows", unit="window", disable=args.quiet)
        bar.update(1)

    try:
        result = render_storyboard(story, out, options, model=model, progress=progress)
    except StudioError as exc:  # a replayed film's recorded values: say which file holds them
        name = Path(args.from_sidecar).name if args.from_sidecar else ""
        if name and not str(exc).startswith(name):
            typed = f" with {', '.join(changed)}" if changed else ""  # may be what was typed
            raise StudioError(f"replaying {name}{typed}: {exc}") from None
        raise
    finally:
        if bar is not None:
            bar.close()
    n_scenes = len(story.scenes)
    extra = f", {n_scenes} scene files" if options.per_scene else ""
    print(
        f"wrote {out} ({len(result.frames)} frames, {n_scenes} scenes{extra}) and {result.sidecar}"
    )
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    # Under torchrun / accelerate launch every process runs this; see docs/scale.md.
    from .batch import BatchOptions, process_state, run_batch

    summary = run_batch(
        BatchOptions(
            prompts=Path(args.prompts),
            out_dir=Path(args.out_dir),
            samples=args.samples,
            seed=args.seed,
            model=args.model,
            steps=args.steps,
            guidance=args.guidance,
            frames=args.frames,
            fps=args.fps,
            height=args.height,
            width=args.width,
            image_first=args.image_first,
            lora=args.lora,
            negative=args.negative,
            compile=args.compile,
        ),
        progress=not args.quiet,
    )
    if process_state().is_main_process:  # every process has the whole run's counts
        print(
            f"{summary['done']} videos written, {summary['skipped']} already done, {summary['failed']} failed"
            + (
                f", {summary['malformed_lines']} malformed lines skipped"
                if summary["malformed_lines"]
                else ""
            )
            + f" → {Path(args.out_dir) / 'manifest.jsonl'}"
        )
    # skipped lines are work not done, as failed videos are (and as `studio score` says them)
    return 0 if summary["failed"] == 0 and summary["malformed_lines"] == 0 else 1


def cmd_eval_shapes(args: argparse.Namespace) -> int:
    from evals.report import write_shapes_report
    from evals.shapes import evaluate_dir

    run_dir = Path(args.dir)
    if args.generate:
        from evals.shapes import SUITE_PATH, write_suite

        from .batch import BatchOptions, run_batch
        from .generate import ensure_output_dir

        ensure_output_dir(run_dir)
        suite = Path(args.suite) if args.suite else SUITE_PATH
        if not suite.is_file():
            suite = write_suite(run_dir / "suite.jsonl")
        run_batch(
            BatchOptions(
                prompts=suite,
                out_dir=run_dir,
                samples=args.samples,
                seed=args.seed,
                model=args.model,
                lora=args.lora,
                steps=args.steps,
                guidance=args.guidance,
            ),
            progress=not args.quiet,
        )
    if not run_dir.is_dir():
        raise StudioError(f"folder not found: {run_dir} (pass --generate to fill it)")
    if not (run_dir / "manifest.jsonl").is_file():
        raise StudioError(
            f"no manifest.jsonl in {run_dir}: run `studio batch` first or pass --generate"
        )
    report = evaluate_dir(run_dir)
    paths = write_shapes_report(report, Path(args.out) if args.out else run_dir)
    print(paths["markdown"].read_text())
    print(f"report: {paths['json']}, {paths['markdown']}, {paths['contact_sheet']}")
    return 0


def cmd_eval_elements(args: argparse.Namespace) -> int:
    """``studio eval elements DIR``: identity and motion of reference sprites; ``--generate``
    first fills DIR with the model's videos of the held-out suite, ``--ground-truth`` with
    the renderer's (what a perfect model would score)."""
    from evals.elements import ELEMENTS_SUITE_PATH, evaluate_elements_dir, load_elements_suite
    from evals.report import write_elements_report

    from .elements_batch import generate_elements_run, render_ground_truth_run

    run_dir = Path(args.dir)
    if args.generate or args.ground_truth:
        try:
            suite = load_elements_suite(Path(args.suite) if args.suite else ELEMENTS_SUITE_PATH)
        except ValueError as exc:
            raise StudioError(str(exc)) from None
        if args.ground_truth:
            counts = render_ground_truth_run(
                suite, run_dir, samples=args.samples, seed=args.seed, progress=not args.quiet
            )
        else:
            from .generate import load_pipeline, model_for

            model = model_for(args.model, references=True)
            try:
                counts = generate_elements_run(
                    load_pipeline(model, lora=args.lora),
                    suite,
                    run_dir,
                    samples=args.samples,
                    seed=args.seed,
                    steps=args.steps,
                    guidance=args.guidance,
                    model=str(model),
                    progress=not args.quiet,
                    lora=args.lora,
                )
            except ValueError as exc:  # a pipeline that takes no reference images
                raise StudioError(str(exc)) from None
        print(
            f"{counts['done']} videos written, {counts['skipped']} already done, "
            f"{counts['failed']} failed → {run_dir / 'manifest.jsonl'}"
        )
    try:
        report = evaluate_elements_dir(run_dir)
    except ValueError as exc:
        raise StudioError(str(exc)) from None
    paths = write_elements_report(report, Path(args.out) if args.out else run_dir)
    print(paths["markdown"].read_text())
    print(f"report: {paths['json']}, {paths['markdown']}")
    return 0


def cmd_eval_storyboards(args: argparse.Namespace) -> int:
    from evals.report import write_storyboard_report
    from evals.storyboards import evaluate_storyboard_dir

    if args.generate:
        render_storyboard_suite(args)

    report = evaluate_storyboard_dir(Path(args.dir))
    paths = write_storyboard_report(report, Path(args.out) if args.out else Path(args.dir))
    print(paths["markdown"].read_text())
    print(f"report: {paths['json']}, {paths['markdown']}")
    return 0


def render_storyboard_suite(args: argparse.Namespace) -> None:
    """Render every story of the suite into ``args.dir`` as NAME.mp4 + NAME.json."""
    import json

    from tqdm.auto import tqdm

    from evals.storyboards import STORYBOARD_SUITE_PATH
    from pipelines.storyboard import storyboard_from_data

    from .generate import StoryboardOptions, ensure_output_dir, load_pipeline, render_storyboard

    run_dir = ensure_output_dir(args.dir)
    suite = Path(args.suite) if args.suite else STORYBOARD_SUITE_PATH
    try:
        stories = json.loads(suite.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StudioError(f"cannot read the storyboard suite {suite}: {exc}") from None
    options = StoryboardOptions(
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        window=args.window,
        context=args.context,
        image_first=args.image_first,
        full_windows=args.full_windows,
        candidates=args.candidates,
        lora=args.lora,
    )
    pipe = load_pipeline(args.model, lora=args.lora)
    for entry in tqdm(stories, desc="storyboards", unit="story", disable=args.quiet):
        out = run_dir / f"{entry['name']}.mp4"
        if out.with_suffix(".json").is_file() and out.is_file():
            continue  # resumable, like `studio batch`
        story = storyboard_from_data({"fps": entry["fps"], "scenes": entry["scenes"]})
        render_storyboard(story, out, options, model=args.model, pipe=pipe)


def cmd_eval_scorer(args: argparse.Namespace) -> int:
    from pipelines.scoring import VideoTextScorer
    from train.train_scorer import evaluate, markdown, write_report

    from .shipped import DEFAULT_SCORER_DIR

    if args.generated and not (Path(args.generated) / "manifest.jsonl").is_file():
        raise StudioError(f"no manifest.jsonl in {args.generated}: give a `studio batch` folder")
    path = DEFAULT_SCORER_DIR if args.model == "default" else Path(args.model)
    scorer = VideoTextScorer.from_pretrained(path)
    if args.generated:
        return eval_scorer_on_generated(scorer, Path(args.generated), args)
    report = evaluate(scorer, args.clips, args.seed, progress=not args.quiet)
    out = Path(args.out) if args.out else Path("runs") / "eval_scorer"
    paths = write_report(report, out)
    print(markdown(report))
    print(f"wrote {paths['json']} and {paths['md']}")
    return 0


def eval_scorer_on_generated(scorer, run_dir: Path, args: argparse.Namespace) -> int:
    """``studio eval scorer --generated DIR``: best-of-N by the scorer against the judge on a
    batch folder with several samples per prompt (evals.best_of)."""
    from evals.best_of import best_of_markdown, best_of_report
    from evals.shapes import evaluate_dir

    from .generate import ensure_output_dir, write_json_atomic
    from .score import pairs_from_batch_dir, score_pairs

    out = ensure_output_dir(Path(args.out) if args.out else run_dir)  # before any work
    pairs, problems = pairs_from_batch_dir(run_dir)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    judged = evaluate_dir(run_dir)
    rows = score_pairs(scorer, pairs, run_dir, progress=not args.quiet)
    scores = {r["video"]: r["score"] for r in rows if "score" in r}
    report = best_of_report(judged["items"], scores)
    if not report["categories"]:
        raise StudioError(
            f"{run_dir} has no prompt with two or more judged samples: make it with "
            "`studio batch ... --samples N` (N >= 2) or `studio eval shapes DIR --generate --samples N`"
        )
    write_json_atomic(out / "best_of.json", report)
    (out / "best_of.md").write_text(best_of_markdown(report) + "\n")
    print(best_of_markdown(report))
    print(f"wrote {out / 'best_of.json'} and {out / 'best_of.md'}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """``studio score PAIRS.jsonl --out SCORES.jsonl`` or ``studio score BATCH_DIR``."""
    from pipelines.scoring import load_scorer

    from .generate import write_jsonl_atomic
    from .score import check_writable, pairs_from_batch_dir, read_pairs, score_pairs, summarise
    from .score import write_report as write_score_report

    src = Path(args.input)
    if not src.exists():
        raise StudioError(f"nothing at {src}: give a pairs .jsonl file or a batch folder")
    if src.is_dir():
        pairs, problems = pairs_from_batch_dir(src)
        base, out = src, Path(args.out) if args.out else src / "scores.jsonl"
        check_writable(src / "scores.json")  # the report goes beside the manifest
    else:
        if not args.out:
            raise StudioError("--out SCORES.jsonl is required when scoring a pairs file")
        pairs, problems = read_pairs(src)
        base, out = src.parent, Path(args.out)
    scored = src / "manifest.jsonl" if src.is_dir() else src
    if out.exists() and out.resolve() == scored.resolve():
        raise StudioError(f"--out {out} is the input it scores; write the scores to another file")
    check_writable(out)  # before scoring: a bad --out costs nothing
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if not pairs:
        raise StudioError(f"nothing to score in {src}")
    scorer = load_scorer(scorer_spec(args.scorer))
    rows = score_pairs(scorer, pairs, base, progress=not args.quiet)
    write_jsonl_atomic(out, rows)
    summary = summarise(rows, args.scorer)
    msg = (
        f"scored {summary['scored']} of {summary['n']} videos (mean {summary['mean']:.4f}) → {out}"
    )
    if src.is_dir():
        paths = write_score_report(summary, src)
        msg += f"; report {paths['markdown']}, {paths['chart']}"
    print(msg)
    return 0 if summary["failed"] == 0 and not problems else 1


def cmd_data_shapes(args: argparse.Namespace) -> int:
    from train.shards import write_shapes_shards

    from .generate import ensure_output_dir

    if args.size > MAX_DATA_SIZE:  # the renderer refuses sizes too small to draw shapes in
        raise StudioError(f"--size must be at most {MAX_DATA_SIZE} px, got {args.size}")
    ensure_output_dir(args.out)
    summary = write_shapes_shards(
        args.out,
        clips=args.clips,
        images=args.images,
        seed=args.seed,
        shard_size=args.shard_size,
        size=args.size,
        frames=args.frames,
        progress=not args.quiet,
    )
    n = len(summary.get("shards", []))
    counts = summary.get("counts", {})
    made = ", ".join(f"{k} {v}" for k, v in counts.items()) if isinstance(counts, dict) else counts
    print(f"wrote {n} shard{'s' * (n != 1)} to {args.out}; samples by kind: {made}")
    return 0


def cmd_data_sprite(args: argparse.Namespace) -> int:
    """``studio data sprite OUT.png``: a reference element as Shapes World draws one (the
    sprite alone, centred on white), for ``studio generate --ref``."""
    from PIL import Image

    from pipelines.files import temp_sibling
    from world.shapes_world import ObjectSpec, render_reference

    from .generate import check_output_folder

    out = Path(_positional_or_option(args, "out", "OUT.png"))
    if out.suffix.lower() != ".png":
        raise StudioError(f"the sprite is written as PNG: name it NAME.png, got {out.name!r}")
    color, color2 = args.colors
    if color == color2:  # shapes_world.md: a two-colour pattern
        raise StudioError(f"--colors: the pattern's two colours must differ, got {color} twice")
    try:
        sprite = ObjectSpec(
            args.shape, color, args.size, "still", 0, 0, pattern=args.pattern, color2=color2
        )
    except ValueError as e:  # what the world refuses beyond the choices above
        raise StudioError(str(e)) from None
    check_output_folder(out)
    image = render_reference(sprite, image_size=args.image_size)
    tmp = temp_sibling(out)  # the studio's temporary name: a killed run's is cleaned later
    try:
        Image.fromarray(image).save(tmp, format="PNG")
        tmp.replace(out)  # no half-written file under the real name
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    print(f"wrote {out}: a {args.size} {args.shape}, {args.pattern} in {color} and {color2}")
    return 0


def cmd_data_pack(args: argparse.Namespace) -> int:
    if args.shard_size < 1:
        raise StudioError(f"--shard-size must be >= 1, got {args.shard_size}")
    manifest = Path(args.manifest)
    if not manifest.is_file():  # before importing torch: a typo fails at once
        raise StudioError(f"manifest not found: {manifest}")
    from train.pack import pack_manifest

    report = pack_manifest(
        manifest,
        args.out,
        args.shard_size,
        prefix=args.prefix,
        progress=not args.quiet,
        max_frames=args.max_frames,
        max_pixels=args.max_pixels,
    )
    print(
        f"written {report.written}, failed {report.failed}, shards {len(report.shards)} "
        f"in {args.out}; report {report.report_path}"
    )
    if report.written == 0:
        raise StudioError(
            f"nothing could be packed from {manifest}: all {report.failed} rows failed "
            f"(reasons in {report.report_path})"
        )
    return 0


def cmd_data_encode(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.config_option and args.config and "=" in args.config:
        overrides.insert(0, args.config)  # with --config every positional is an override
        args.config = None
    config = _positional_or_option(args, "config", "CONFIG")
    if not Path(config).is_file():  # before importing torch: a typo fails at once
        raise StudioError(f"config not found: {config}")
    from train.config import DiTTrainConfig, load_config
    from train.precompute import encode_config

    cfg = load_config(DiTTrainConfig, config, overrides)
    summary = encode_config(cfg, batch_frames=args.batch_frames, progress=not args.quiet)
    print(
        f"encoded {summary['encoded']} of {summary['shards']} shards ({summary['cached']} "
        f"already encoded) in {summary['folder']}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from train.config import DiTTrainConfig, ScorerTrainConfig, VAETrainConfig, load_config

    if args.what == "vae":
        from train.train_vae import main

        cfg = load_config(VAETrainConfig, args.config, args.overrides)
    elif args.what == "scorer":
        from train.train_scorer import main

        cfg = load_config(ScorerTrainConfig, args.config, args.overrides)
    else:
        from train.train_dit import main

        cfg = load_config(DiTTrainConfig, args.config, args.overrides)
    final = main(cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # one line for a run, not one per process
        print(f"done: {final}")
    return 0


# ---------------------------------------------------------------------------- parser
def ui_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The streamlit command line and environment that ``studio ui`` runs."""
    from .gallery import HOME_ENV
    from .shipped import MODEL_ENV, SCORER_ENV
    from .uploads import MAX_PIXELS_ENV, MAX_UPLOAD_MB_ENV

    if not (math.isfinite(args.max_upload_mb) and args.max_upload_mb > 0):
        raise StudioError(f"--max-upload-mb must be a positive number, got {args.max_upload_mb}")
    if args.max_upload_pixels <= 0:
        raise StudioError(f"--max-upload-pixels must be positive, got {args.max_upload_pixels}")
    app = Path(__file__).parent / "ui" / "app.py"
    env = {MAX_UPLOAD_MB_ENV: str(args.max_upload_mb), MAX_PIXELS_ENV: str(args.max_upload_pixels)}
    if args.home:
        env[HOME_ENV] = str(Path(args.home).resolve())
    if args.model:
        env[MODEL_ENV] = str(Path(args.model).resolve())
    if args.scorer:
        from pipelines.scoring import SCORER_KINDS

        if (
            args.scorer not in ("default", "none")
            and args.scorer.partition(":")[0] not in SCORER_KINDS
        ):
            raise StudioError(
                "--scorer must be default, shapes:PATH, clip:PATH_OR_ID or xclip:PATH_OR_ID, "
                f"got {args.scorer!r}"
            )
        env[SCORER_ENV] = args.scorer
    cmd = [
        sys.executable,
        "-m",
        "studio.ui.serve",  # `python -m streamlit`, with the model loading as it starts
        "run",
        str(app),
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        # streamlit's own cap (whole MB, at least 1) backs up the studio's finer check
        "--server.maxUploadSize",
        str(max(1, math.ceil(args.max_upload_mb))),
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        # The generating thread shares this process's GIL with streamlit's script runs (a
        # fragment per open tab polls every second). After each run streamlit by default
        # rescans every imported module's source for edits and runs a full gc.collect(2):
        # with torch and transformers loaded that held the GIL almost all the time, and two
        # open tabs made a 4 s generation take minutes (streamlit 1.67). A served studio does
        # not reload on edits, and python's own collector is enough.
        "--server.fileWatcherType",
        "none",
        "--runner.postScriptGC",
        "false",
    ]
    return cmd, env


def cmd_ui(args: argparse.Namespace) -> int:
    """``studio ui``: serve the Streamlit studio (localhost unless --host says otherwise)."""
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise StudioError('the studio UI needs streamlit: pip install -e ".[ui]"')
    cmd, env = ui_command(args)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach it can use the studio")
    print(f"studio UI on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    os.execve(cmd[0], cmd, {**os.environ, **env})  # replaces this process: signals go to it
    return 0  # pragma: no cover


def cmd_serve(args: argparse.Namespace) -> int:
    """``studio serve``: the HTTP API (docs/api.md) over the UI's queue and gallery."""
    from . import api  # without fastapi/uvicorn: one StudioError line naming the extra

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach it can use the studio")
    url = f"http://{args.host}:{args.port}"
    print(f"studio API on {url} (docs: {url}/docs; Ctrl-C stops it)", flush=True)
    api.serve(
        host=args.host, port=args.port, home=args.home, model=args.model, lora_dirs=args.lora_dir
    )
    return 0


# ---------------------------------------------------------------------------- options
def _option_groups() -> dict[str, argparse.ArgumentParser]:
    """The options several commands share, each declared once (argparse ``parents``); a
    command that needs another default says so with ``set_defaults``."""
    from pipelines.storyboard import DEFAULT_CANDIDATES, DEFAULT_CONTEXT, MAX_CANDIDATES

    def group(title: str) -> tuple[argparse.ArgumentParser, argparse._ArgumentGroup]:
        parent = argparse.ArgumentParser(add_help=False)
        return parent, parent.add_argument_group(title)

    runtime, g = group("runtime")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    model, g = group("model")
    g.add_argument(
        "--model", default=None, help="model folder (default: the shipped model, or $STUDIO_MODEL)"
    )
    g.add_argument(
        "--lora",
        default=None,
        metavar="PATH[:SCALE]",
        help="a LoRA adapter on the model (`studio train dit` with training: lora writes "
        "RUN/lora) at SCALE (default 1.0)",
    )

    sampling, g = group("sampling")
    g.add_argument(
        "--seed", type=int, default=0, help="random seed (0 .. 2**63-1, default %(default)s)"
    )
    g.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"denoising steps (1..1000, default {DEFAULT_STEPS})",
    )
    g.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help=GUIDANCE_HELP)

    image_first, g = group("first frame")
    g.add_argument(
        "--image-first",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="generate frame 0 as an image, then the clip continuing it (default: the model's "
        "own setting, image_first in its model_index.json)",
    )

    timing, g = group("clip")
    g.add_argument(
        "--frames", type=int, default=16, help="frames in the clip (default %(default)s)"
    )
    g.add_argument(
        "--fps",
        type=int,  # its range is checked with the request's, in the words every front end uses
        default=8,
        help="frames per second of the file, 1 to 120 (default %(default)s)",
    )

    size, g = group("size")
    g.add_argument("--height", type=int, default=64, help="pixels (default %(default)s)")
    g.add_argument("--width", type=int, default=64, help="pixels (default %(default)s)")

    windows, g = group("storyboard windows")
    g.add_argument(
        "--window",
        type=_positive_int,
        default=16,
        help="frames per model call (default %(default)s)",
    )
    g.add_argument(
        "--context",
        type=_positive_int,
        default=DEFAULT_CONTEXT,
        help=f"frames carried into each window (default: {DEFAULT_CONTEXT}, "
        "pipelines.storyboard.DEFAULT_CONTEXT)",
    )
    g.add_argument(
        "--candidates",
        type=_positive_int,
        default=DEFAULT_CANDIDATES,
        help="draws of each continued window, the most continuous kept (colour histogram and "
        f"seam step against the given frames); time grows with it (default: {DEFAULT_CANDIDATES}, "
        f"at most {MAX_CANDIDATES})",
    )
    g.add_argument(
        "--full-windows",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="generate every window at --window frames and keep the ones a scene needs "
        "(default; --no-full-windows generates only those)",
    )

    server, g = group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default: localhost)")
    g.add_argument("--port", type=_bounded_int(65535), help="port (ui: 8501, serve: 8000)")
    g.add_argument(
        "--home",
        default=None,
        help="gallery folder (default: $STUDIO_HOME or ~/.local/share/shapes-video-studio)",
    )
    g.add_argument("--model", default=None, help="pipeline folder (default: the shipped model)")

    report, g = group("report")
    g.add_argument("--out", default=None, help="report folder (default: DIR)")
    return {
        "runtime": runtime,
        "model": model,
        "sampling": sampling,
        "image_first": image_first,
        "timing": timing,
        "size": size,
        "windows": windows,
        "report": report,
        "server": server,
    }


VIDEO_OUT_HELP = "output file: .mp4 (H.264), .gif or .webm"


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one ``error:`` line (the README's promise for every bad
    input), naming the command and pointing at its ``--help``; subcommands inherit it."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="studio", description="Text-to-video studio (Shapes World default model)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def parents(*groups: str) -> list[argparse.ArgumentParser]:
        # fresh groups for every command: argparse shares a parent's actions with each child,
        # so one command's set_defaults would otherwise change every other command's default
        made = _option_groups()
        return [made[g] for g in groups]

    def command(name: str, *groups: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=parents(*groups), **kw)

    g = command(
        "generate", "model", "sampling", "timing", "size", "image_first", "runtime",
        help="turn a sentence into a video file",
        description="Generate one clip and its sidecar JSON.",
    )  # fmt: skip
    g.add_argument(
        "prompt", nargs="?", help='e.g. "a red circle moving left on a black background"'
    )
    g.add_argument("--out", required=True, help=VIDEO_OUT_HELP)
    g.add_argument("--negative", default=None, help="negative prompt")
    g.add_argument(
        "--ref",
        action="append",
        metavar="PATH",
        help="a reference element image (PNG, JPEG, WebP, BMP), repeatable up to 3 times: the "
        "K-th --ref is <refK> in the prompt, e.g. '<ref1> moving left on a gray background'",
    )
    g.add_argument(
        "--from-sidecar",
        default=None,
        help="re-run the settings recorded in a sidecar JSON; the prompt and options given "
        "beside it (--seed, --steps, --frames, …) replace the recorded ones",
    )
    g.add_argument(
        "--best-of",
        type=_positive_int,
        default=1,
        help="generate N candidates (seeds SEED..SEED+N-1), keep the one --scorer ranks highest",
    )
    g.add_argument(
        "--scorer",
        default=None,
        help="for --best-of: default (the shipped Shapes World scorer; used when this is not "
        "given), shapes:PATH, clip:PATH_OR_ID or xclip:PATH_OR_ID",
    )
    g.set_defaults(func=cmd_generate)

    sb = command(
        "storyboard", "model", "sampling", "windows", "size", "image_first", "runtime",
        help="generate a multi-scene video from a storyboard file",
        description="Generate scenes {prompt, frames | seconds} one after the other in overlapping "
        "windows, each conditioned on the last frames of the video so far; writes OUT and its "
        "sidecar OUT.json (each scene's prompt and [start, end) frame range).",
    )  # fmt: skip
    sb.add_argument(
        "story", nargs="?", help="storyboard .yaml/.yml/.json (see docs/storyboards.md)"
    )
    sb.add_argument("--out", required=True, help=VIDEO_OUT_HELP)
    sb.add_argument(
        "--from-sidecar",
        default=None,
        metavar="FILM.json",
        help="re-make the film a storyboard sidecar records (its story, options and model); "
        "options given beside it (--seed, --steps, …) replace the recorded ones",
    )
    sb.add_argument(
        "--per-scene",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also write OUT-scene1.mp4, OUT-scene2.mp4, … (default: no; with --from-sidecar, "
        "as the film was made)",
    )
    sb.set_defaults(func=cmd_storyboard)

    b = command(
        "batch", "model", "sampling", "timing", "size", "image_first", "runtime",
        help="generate many prompts (VBench-style names, resumable)",
        description="One video per (prompt, sample) named {prompt}-{i}.mp4, plus manifest.jsonl. "
        "Re-running resumes. Under `torchrun --nproc_per_node N -m studio.cli batch ...` or "
        "`accelerate launch` the videos are shared among the processes (docs/scale.md).",
    )  # fmt: skip
    b.add_argument(
        "prompts",
        help='a .txt file (one prompt a line), .jsonl ({"prompt": ...} a line) or .json (an array of them)',
    )
    b.add_argument("--out-dir", required=True, help="folder for the videos, sidecars and manifest")
    b.add_argument(
        "--samples", type=_positive_int, default=1, help="videos per prompt (default %(default)s)"
    )
    b.add_argument("--negative", default=None, help="negative prompt, for every video")
    b.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the transformer: ~1 min before the first video, faster after "
        "(pays for long batches)",
    )
    b.set_defaults(func=cmd_batch)

    e = sub.add_parser("eval", help="evaluate generated videos")
    esub = e.add_subparsers(dest="what", required=True, metavar="WHAT")

    def evaluation(name: str, *groups: str, **kw) -> argparse.ArgumentParser:
        return esub.add_parser(name, parents=parents(*groups), **kw)

    es = evaluation(
        "shapes", "report", "model", "sampling", "runtime",
        help="analytical Shapes World judge over a batch output folder",
        description="Judge colour, shape, motion and background of every video in DIR/manifest.jsonl.",
    )  # fmt: skip
    es.add_argument(
        "dir",
        help="a `studio batch` output folder (or where to generate the suite with --generate)",
    )
    es.add_argument(
        "--generate", action="store_true", help="first generate the held-out suite into DIR"
    )
    es.add_argument(
        "--suite", default=None, help="prompt suite JSONL (default: the built-in held-out suite)"
    )
    es.add_argument(
        "--samples", type=_positive_int, default=2, help="videos per prompt (default %(default)s)"
    )
    es.set_defaults(func=cmd_eval_shapes, seed=1000)

    eel = evaluation(
        "elements", "report", "model", "sampling", "runtime",
        help="judge elements-to-video: identity and motion of reference sprites",
        description="Judge every video in DIR/manifest.jsonl against its reference sprites and "
        "prompt: identity (shape and both pattern colours) and motion per reference, with one "
        "reference and with two. --generate first renders the held-out suite (sprites never "
        "seen in training) with the model; --ground-truth with the Shapes World renderer.",
    )  # fmt: skip
    eel.add_argument("dir", help="an elements run folder (or where to fill one)")
    fill = eel.add_mutually_exclusive_group()
    fill.add_argument(
        "--generate",
        action="store_true",
        help="first generate the suite with the model into DIR (finished videos are kept)",
    )
    fill.add_argument(
        "--ground-truth",
        action="store_true",
        help="first render the suite with the renderer into DIR: the judge's own check",
    )
    eel.add_argument(
        "--suite",
        default=None,
        help="suite JSONL (default: the built-in held-out suite; to choose settings: "
        "evals/suites/elements_val.jsonl)",
    )
    eel.add_argument(
        "--samples", type=_positive_int, default=1, help="videos per entry (default %(default)s)"
    )
    eel.set_defaults(func=cmd_eval_elements, seed=1000, guidance=4.0)  # as measured

    esb = evaluation(
        "storyboards", "report", "model", "sampling", "windows", "image_first", "runtime",
        help="judge storyboard videos: scene motion, identity and jumps at boundaries",
        description="Judge every storyboard sidecar (*.json from `studio storyboard`) in DIR "
        "with its video: per-scene motion, colour and shape kept across each boundary, and "
        "the position jump at each boundary (px at 64 px).",
    )  # fmt: skip
    esb.add_argument("dir", help="a folder of `studio storyboard` outputs")
    esb.add_argument(
        "--generate",
        action="store_true",
        help="first render the held-out storyboard suite into DIR (finished stories are kept)",
    )
    esb.add_argument(
        "--suite", default=None, help="storyboard suite JSON (default: the shipped one)"
    )
    esb.set_defaults(func=cmd_eval_storyboards)

    ev = evaluation(
        "scorer", "runtime",
        help="retrieval and counterfactual accuracy of a video-text scorer on held-out clips",
        description="Render held-out Shapes World clips (half one object, half two) and report "
        "text→video / video→text R@1/5/10 and median rank, and how often the true caption "
        "outscores one with a changed colour, a changed shape, a reversed direction, or "
        "attributes swapped between two objects — for the scorer and for its per-frame "
        "baseline (the same tower on single frames, averaged).",
    )  # fmt: skip
    ev.add_argument("--model", default="default", help="default, or a `studio train scorer` folder")
    ev.add_argument(
        "--clips", type=_positive_int, default=200, help="held-out clips (default %(default)s)"
    )
    ev.add_argument(
        "--seed", type=_nonneg_int, default=9_000_001, help="their seed (default %(default)s)"
    )
    ev.add_argument("--out", default=None, help="report folder (default: runs/eval_scorer, or DIR)")
    ev.add_argument(
        "--generated",
        metavar="DIR",
        default=None,
        help="instead: a batch folder with several samples per prompt; reports the judge's "
        "all-correct for the first sample, the scorer's pick, the worst pick and the oracle, "
        "per category, and the pick's AUC against the judge (best_of.json, best_of.md)",
    )
    ev.set_defaults(func=cmd_eval_scorer)

    d = sub.add_parser("data", help="build training data")
    dsub = d.add_subparsers(dest="what", required=True, metavar="WHAT")
    ds = dsub.add_parser(
        "shapes",
        parents=parents("runtime"),
        help="render Shapes World into WebDataset shards",
        description="Render clips and images (training-set exclusions on) into WebDataset tar shards.",
    )
    ds.add_argument("--out", required=True, help="folder for the shards")
    ds.add_argument(
        "--clips", type=_nonneg_int, default=1000, help="video clips (default %(default)s)"
    )
    ds.add_argument(
        "--images", type=_nonneg_int, default=1000, help="still images (default %(default)s)"
    )
    ds.add_argument("--seed", type=int, default=0, help="the world's seed (default %(default)s)")
    ds.add_argument(
        "--shard-size",
        type=_positive_int,
        default=1000,
        help="samples per shard (default %(default)s)",
    )
    ds.add_argument(
        "--size", type=_positive_int, default=64, help="canvas side in px (default %(default)s)"
    )
    ds.add_argument(
        "--frames", type=_positive_int, default=16, help="frames per clip (default %(default)s)"
    )
    ds.set_defaults(func=cmd_data_shapes)
    from world.shapes_world import OBJECT_COLORS, PATTERNS, SHAPES, SIZES

    dsp = dsub.add_parser(
        "sprite",
        help="draw a reference element (a patterned sprite) for --ref",
        description="Draw a Shapes World sprite as its reference image: one shape filled with "
        "a two-colour pattern, alone and centred on white (docs/shapes_world.md, "
        "'Reference elements'). Give it to `studio generate --ref`.",
    )
    dsp.add_argument("out", metavar="OUT.png", nargs="?", help="the PNG to write (or --out)")
    dsp.add_argument("--out", dest="out_option", metavar="OUT.png", help="the PNG to write")
    dsp.add_argument("--shape", choices=SHAPES, default="circle", help="(default %(default)s)")
    dsp.add_argument(
        "--pattern", choices=PATTERNS, default="hstripes", help="(default %(default)s)"
    )
    dsp.add_argument(
        "--colors",
        nargs=2,
        metavar=("COLOR", "COLOR2"),
        choices=list(OBJECT_COLORS),
        default=["red", "yellow"],
        help="the pattern's two colours, from the object palette (default: red yellow)",
    )
    dsp.add_argument(
        "--size", choices=SIZES, default="large", help="its size in the clip (default %(default)s)"
    )
    dsp.add_argument(
        "--image-size",
        type=_bounded_int(MAX_DATA_SIZE),
        default=64,
        help=f"side of the image in px (64; at most {MAX_DATA_SIZE})",
    )
    dsp.set_defaults(func=cmd_data_sprite)
    dp = dsub.add_parser(
        "pack",
        parents=parents("runtime"),
        help="pack your videos and images with captions into WebDataset shards",
        description="Pack the files of a manifest (CSV with a header row, or JSONL) into "
        "WebDataset tar shards: columns path (relative to the manifest's folder), caption, "
        "and for videos optional start, end in seconds. Unreadable files are skipped and "
        "listed in OUT/pack_report.json.",
    )
    dp.add_argument("manifest", help="MANIFEST.csv or MANIFEST.jsonl")
    dp.add_argument(
        "--out", required=True, help="shard folder (best empty: a folder is read whole)"
    )
    dp.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    dp.add_argument("--prefix", default="data", help="shard and key prefix (default: data)")
    dp.add_argument(
        "--max-frames",
        type=_positive_int,
        help="skip clips of more frames (default 4096, what training reads)",
    )
    dp.add_argument(
        "--max-pixels",
        type=_positive_int,
        help="skip images of more pixels, before decoding them (default 4096*4096)",
    )
    dp.set_defaults(func=cmd_data_pack)
    de = dsub.add_parser(
        "encode",
        parents=parents("runtime"),
        help="precompute the VAE latents and caption states of a DiT config's shards",
        description="Encode the shards of a DiT training config (data.shards) once, with its "
        "VAE and text encoder, into its data.latents folder, which `studio train dit` with "
        "that config then reads instead of decoding and encoding every step. Shards already "
        "encoded are kept: run it again after adding or changing shards.",
    )
    de.add_argument(
        "config",
        nargs="?",
        help="the training YAML, as `studio train dit --config` takes (or --config)",
    )
    de.add_argument("--config", dest="config_option", metavar="CONFIG", help="the training YAML")
    de.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. data.latents=runs/latents"
    )
    de.add_argument(
        "--batch-frames", type=_positive_int, default=None, help="frames per VAE call (64)"
    )
    de.set_defaults(func=cmd_data_encode)

    sc = sub.add_parser(
        "score",
        parents=parents("runtime"),
        help="text-video alignment scores (the shipped scorer, CLIPSIM or X-CLIP)",
        description='Score videos against captions: PAIRS.jsonl lines {"video", "caption"} '
        "→ the same lines with score (CLIP: CLIPSIM = mean per-frame cosine, frame_scores, "
        "clipscore = mean 2.5·max(cos, 0)); or a `studio batch` folder through its manifest, "
        "with a report (scores.json, scores.md, scores.png).",
    )
    sc.add_argument("input", help="PAIRS.jsonl, or a `studio batch` output folder")
    sc.add_argument(
        "--out", default=None, help="SCORES.jsonl (default for a folder: DIR/scores.jsonl)"
    )
    sc.add_argument(
        "--scorer",
        default="default",
        help="default (the shipped Shapes World video-text scorer; reads frame order), "
        "shapes:PATH (one trained by `studio train scorer`), clip:PATH_OR_ID (any transformers "
        "CLIPModel: CLIPSIM) or xclip:PATH_OR_ID (XCLIPModel)",
    )
    sc.set_defaults(func=cmd_score)

    u = command(
        "ui", "server",
        help="the studio web UI (Streamlit)",
        description="Serve the Streamlit studio: generate, storyboard, elements, gallery.",
    )  # fmt: skip
    u.set_defaults(port=8501)
    u.add_argument(
        "--scorer",
        default=None,
        help="scorer for best-of-N: default (the shipped one; used when this is not given), "
        "shapes:PATH, clip:PATH_OR_ID, xclip:PATH_OR_ID, or none (no best-of-N)",
    )
    u.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload")
    u.add_argument(
        "--max-upload-pixels", type=int, default=4096 * 4096, help="most pixels in an upload"
    )
    u.set_defaults(func=cmd_ui)

    sv = command(
        "serve", "server",
        help="the studio HTTP API (FastAPI), same queue and gallery as the UI",
        description="Serve the HTTP API: submit, follow, cancel and download jobs (docs/api.md; "
        "interactive docs at /docs).",
    )  # fmt: skip
    sv.add_argument(
        "--lora-dir",
        action="append",
        metavar="DIR",
        help="a folder jobs' LoRA adapters may be in (repeat for more; default: the studio's "
        "home and the folder the server starts in, unless that is / or your home)",
    )
    sv.set_defaults(port=8000)
    sv.set_defaults(func=cmd_serve)

    t = sub.add_parser(
        "train",
        help="train a component",
        description="Train from a YAML config; extra key=value pairs override it.",
    )
    t.add_argument("what", choices=["vae", "dit", "scorer"])
    t.add_argument("--config", default=None, help="YAML stating what differs from the defaults")
    t.add_argument(
        "overrides",
        nargs="*",
        help="key=value overrides, e.g. lr=2e-4, or stages.0.steps=500 for a DiT (a list item by its index)",
    )
    t.set_defaults(func=cmd_train)
    return parser


def _out_of_memory(exc: BaseException) -> bool:
    """Python's and numpy's MemoryError, torch's OutOfMemoryError (a RuntimeError) and its
    CPU allocator's failures (a plain RuntimeError naming the allocator)."""
    text = str(exc)
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or "DefaultCPUAllocator" in text
        or "not enough memory" in text
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `studio train dit --config X key=value`: argparse stops the positional overrides at the
    # option, so key=value pairs after it come back unknown; they are overrides all the same.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "func", None) in (cmd_train, cmd_data_encode) and all(
            "=" in e and not e.startswith("-") for e in extra
        ):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what was typed (_given_options)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from .folders import removing_created_folders_on_failure

    try:
        with removing_created_folders_on_failure():  # no empty folder of its own left
            return args.func(args)
    except (StudioError, ValueError, OSError) as exc:
        if os.environ.get("STUDIO_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (MemoryError, RuntimeError) as exc:
        if os.environ.get("STUDIO_DEBUG") or not _out_of_memory(exc):
            raise
        print(
            "error: out of memory: ask for fewer or smaller frames (--frames, --height, "
            "--width, a shorter storyboard) or fewer samples at once",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
