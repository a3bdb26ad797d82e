"""Fill an elements run folder with the held-out suite's videos, made by a model
(``studio eval elements DIR --generate``) or by the renderer (``--ground-truth``: what a perfect
model would score). The judge (:mod:`evals.elements`) then scores the folder.

A folder holds per (suite entry, sample) ``NAME-i.mp4``, its sidecar ``NAME-i.json``, the
reference images ``NAME-refK.png`` and a ``manifest.jsonl`` line; runs resume.
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evals.contract import REFERENCE_SIDE
from evals.elements import MANIFEST, SUITE_CANVAS, read_manifest

#: Makes a video (F, H, W, 3) uint8 for (suite entry, its reference images, seed).
VideoMaker = Callable[[dict[str, Any], list[np.ndarray], int], np.ndarray]


def reference_images(entry: dict[str, Any], side: int = REFERENCE_SIDE) -> list[np.ndarray]:
    """The entry's reference images, (side, side, 3) uint8 each, in placeholder order
    (``world.shapes_world.render_reference``: the sprite centred on (240, 240, 240))."""
    from world.shapes_world import ObjectSpec, render_reference

    return [
        render_reference(
            ObjectSpec(
                shape=r["shape"],
                color=r["color"],
                size=r["size"],
                motion="still",
                x=0.0,
                y=0.0,
                pattern=r["pattern"],
                color2=r["color2"],
            ),
            side,
            SUITE_CANVAS,
        )
        for r in entry["references"]
    ]


def _run_suite(
    suite: list[dict[str, Any]],
    out_dir: Path,
    samples: int,
    seed: int,
    make_video: VideoMaker,
    sidecar_extra: dict[str, Any],
    fps: int = 8,
    progress: bool = False,
    settings: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Fill ``out_dir`` with one video per (entry, sample): ``NAME-i.mp4``, its sidecar
    ``NAME-i.json``, the reference images ``NAME-refK.png`` and a ``manifest.jsonl`` line.

    Resumable: a (entry, sample) whose manifest line is ``ok`` for the same prompt and
    references, and whose files exist, is skipped; StudioError when its sidecar records other
    ``settings`` (or another seed, fps or source) than this run's, as ``studio batch`` does.
    A failing video is recorded as ``error`` and the run goes on. Sample ``i`` uses seed
    ``seed + i``, like ``studio batch``.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from pipelines.files import write_json_atomic, write_jsonl_atomic
    from pipelines.video_io import write_video

    from .generate import check_same_settings, ensure_output_dir

    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    out = ensure_output_dir(out_dir)
    manifest = out / MANIFEST
    previous = {(r.get("name"), r.get("sample")): r for r in read_manifest(manifest)}
    counts = {"done": 0, "skipped": 0, "failed": 0, "total": len(suite) * samples}
    jobs = [(e, i) for e in suite for i in range(samples)]

    # 1. Resume: keep the finished videos, each checked against this run's settings before
    #    anything is made (a refused run leaves the folder as it was)
    results: dict[int, dict[str, Any]] = {}  # job index → its manifest line
    shared = {"fps": fps, "source": sidecar_extra.get("source")} | (settings or {})
    for j, (entry, i) in enumerate(jobs):
        stem = f"{entry['name']}-{i}"
        prev = previous.get((entry["name"], i))
        if (
            prev is not None
            and prev.get("status") == "ok"
            and prev.get("prompt") == entry["prompt"]  # the same entry, not a renamed one
            and prev.get("references") == entry["references"]
            and (out / f"{stem}.mp4").is_file()
            and (out / f"{stem}.json").is_file()
        ):
            check_same_settings(out / f"{stem}.json", shared | {"seed": seed + i}, "another folder")
            results[j] = prev
    counts["skipped"] = len(results)
    todo = [j for j in range(len(jobs)) if j not in results]

    for j in tqdm(todo, desc="elements", unit="video", disable=not progress):
        entry, i = jobs[j]
        stem = f"{entry['name']}-{i}"
        # 2. Reference images, written once per entry
        refs = reference_images(entry)
        ref_names = [f"{entry['name']}-ref{k}.png" for k in range(1, len(refs) + 1)]
        for name, image in zip(ref_names, refs, strict=True):
            if not (out / name).is_file():
                Image.fromarray(image).save(out / name)
        record = {
            "name": entry["name"],
            "category": entry.get("category"),
            "prompt": entry["prompt"],
            "sample": i,
            "seed": seed + i,
            "video": f"{stem}.mp4",
            "sidecar": f"{stem}.json",
            "reference_images": ref_names,
            "references": entry["references"],
        }
        # 3. The video and its sidecar
        try:
            frames = make_video(entry, refs, seed + i)
            write_video(out / f"{stem}.mp4", frames, fps=fps)
            write_json_atomic(
                out / f"{stem}.json",
                {
                    "prompt": entry["prompt"],
                    "seed": seed + i,
                    "frames": int(frames.shape[0]),
                    "fps": fps,
                    "height": int(frames.shape[1]),
                    "width": int(frames.shape[2]),
                    "reference_images": ref_names,
                    "references": entry["references"],
                    "output": f"{stem}.mp4",
                    **sidecar_extra,
                },
            )
            record["status"] = "ok"
            counts["done"] += 1
        except Exception as exc:  # one failing video must not stop the run
            record |= {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            counts["failed"] += 1
        results[j] = record
        # The manifest after every video, the finished ones still to come included: an
        # interruption loses at most this one.
        write_jsonl_atomic(manifest, [results[k] for k in sorted(results)])
    write_jsonl_atomic(manifest, [results[k] for k in sorted(results)])
    return counts


def generate_elements_run(
    pipe: Any,
    suite: list[dict[str, Any]],
    out_dir: Path,
    samples: int = 1,
    seed: int = 0,
    steps: int = 25,
    guidance: float = 4.0,
    frames: int = 16,
    fps: int = 8,
    model: str | None = None,
    progress: bool = False,
    lora: str | None = None,
) -> dict[str, int]:
    """Generate every (suite entry, sample) with ``pipe`` into ``out_dir`` (resumable).
    ``model`` and ``lora`` (the adapter ``pipe`` was loaded with) are recorded and compared
    on a resume.

    The pipeline is called as ``pipe(prompt, reference_images=[(64, 64, 3) uint8, ...],
    num_frames=frames, num_inference_steps=steps, guidance_scale=guidance,
    generator=torch.Generator().manual_seed(seed + i)).frames[0]`` (float (F, H, W, 3) in
    [0, 1]). Returns counts ``{done, skipped, failed, total}``. A pipeline whose call takes
    no ``reference_images`` is refused up front (ValueError) rather than failing every video.
    """
    import torch

    from pipelines.text_to_video import to_uint8

    params = inspect.signature(pipe).parameters
    if "reference_images" not in params and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    ):
        raise ValueError(
            f"{type(pipe).__name__} takes no reference_images: this model cannot generate "
            "elements-to-video"
        )
    # The settings and the model are shared by every video: a bad one (e.g. a model trained
    # without references) is one clear error, not a run of identical failures.
    check = getattr(pipe, "check_inputs", None)
    if check is not None and "reference_images" in inspect.signature(check).parameters:
        for entry in {len(e["references"]): e for e in suite}.values():  # one per ref count
            check(
                prompt=entry["prompt"],
                negative_prompt=None,
                num_frames=frames,
                height=SUITE_CANVAS,
                width=SUITE_CANVAS,
                num_inference_steps=steps,
                guidance_scale=guidance,
                output_type="np",
                conditioning_frames=None,
                reference_images=reference_images(entry),
            )

    def make_video(entry: dict[str, Any], refs: list[np.ndarray], seed_i: int) -> np.ndarray:
        out = pipe(
            entry["prompt"],
            reference_images=refs,
            num_frames=frames,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(seed_i),
        ).frames[0]
        return to_uint8(np.asarray(out))

    extra: dict[str, Any] = {"steps": steps, "guidance": guidance, "source": "model", "lora": lora}
    if model is not None:
        from .generate import model_record, package_versions

        extra |= {**model_record(model), "versions": package_versions()}
    # what a resume must share; the model by its weights (a path may be written two ways)
    settings = {"steps": steps, "guidance": guidance, "frames": frames, "lora": lora}
    settings |= {"weights_hash": extra["weights_hash"]} if extra.get("weights_hash") else {}
    return _run_suite(
        suite, Path(out_dir), samples, seed, make_video, extra, fps, progress, settings
    )


def render_ground_truth_run(
    suite: list[dict[str, Any]],
    out_dir: Path,
    samples: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, int]:
    """Render every (suite entry, sample) with the Shapes World renderer (exclusions off:
    the held-out sprites are drawn) into ``out_dir``, in the same layout as
    :func:`generate_elements_run`. Scoring it shows what the judge gives a perfect model;
    the videos go through the same H.264 writer, so compression is part of the check."""
    from world.placement import place_sprites
    from world.shapes_world import render

    def make_video(entry: dict[str, Any], refs: list[np.ndarray], seed_i: int) -> np.ndarray:
        rng = np.random.default_rng([seed_i, zlib.crc32(entry["name"].encode())])
        spec = place_sprites(entry["references"], entry["motions"], entry["background"], rng)
        if spec is None:
            raise ValueError(f"no layout fits entry {entry['name']!r}")
        return render(spec)

    extra = {"source": "ground_truth"}
    return _run_suite(suite, Path(out_dir), samples, seed, make_video, extra, 8, progress)
