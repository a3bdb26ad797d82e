"""Why shapes go wrong (issue 3): which shape is drawn for which, and where it is decided.

    python experiments/squares/shape_probe.py confusion runs/eval_img   # a judged run's single objects
    python experiments/squares/shape_probe.py denoise [MODEL]            # rendered shapes, noised, denoised
    python experiments/squares/shape_probe.py continue [MODEL] [--motion still] [--shift S] [--guidance G]  # clips continuing a rendered frame

``confusion`` reads a judged run (``studio eval shapes DIR``, its ``eval.json``): for every
one-object prompt where the judge found exactly one object, the named shape against the one
found, and the median fill ratio (area / box, the judge's square-vs-disc measure: square 1,
disc 0.785, squares need ≥ ``SQUARE_MIN_FILL``) of each named shape, over the clip and in
frame 0 alone (the image model's frame in an image-first pipeline).

``denoise`` renders 24 single squares and circles (both sizes, four colours and
backgrounds), encodes them with the model's VAE, noises them to σ, and decodes one x̂0 of each
model (the image model and the video model, one frame) with the true caption: the fill of
the result says whether the model can keep a square's corners once the object is there. The
first rows are the renders and their VAE reconstructions.

``continue`` gives the video model a rendered first frame (a perfect square, circle or
triangle, 8 of each: both sizes, four colours, backgrounds and directions, starting centred)
and lets it generate the other 15 frames of the clip from the true caption (seeds 0–7): the
judge's shape verdict and the median fill of the generated frames say whether the video model
keeps a shape it is given; the fill at frames 1, 2, 4, 8 and 15 says whether it is lost at
once or drifts away frame by frame. ``--motion still`` asks for objects staying still (the
same frame 16 times) instead of moving.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from evals.contract import SHAPES, SQUARE_MIN_FILL, parse_caption
from evals.detect import detect_background, frame_candidates
from evals.shapes import judge
from pipelines.video_io import read_video
from studio.generate import default_model_path, load_pipeline
from world.shapes_world import ClipSpec, ObjectSpec, box_side, render


def frame_fills(video: np.ndarray) -> list[float | None]:
    """Fill ratio of the largest object in each frame of a uint8 (F, H, W, 3) video."""
    _, _, bg_rgb = detect_background(video)
    cands = frame_candidates(video, np.asarray(bg_rgb, np.float32))
    return [max(c, key=lambda d: d["area"])["fill"] if c else None for c in cands]


def confusion(run_dir: Path) -> None:
    items = json.loads((run_dir / "eval.json").read_text())["items"]
    pairs: Counter = Counter()
    clip_fill, first_fill = defaultdict(list), defaultdict(list)
    for item in items:
        objs = item["expect"]["objects"]
        if item.get("status") != "ok" or len(objs) != 1:
            continue
        found = item["detected"]["objects"]
        if len(found) != 1:
            continue
        named = objs[0]["shape"]
        pairs[named, found[0]["shape"]] += 1
        fills = frame_fills(read_video(run_dir / item["video"]))
        seen = [f for f in fills if f is not None]
        if seen:
            clip_fill[named].append(float(np.median(seen)))
        if fills[0] is not None:
            first_fill[named].append(fills[0])
    print(f"run {run_dir}: one-object prompts, exactly one object found")
    print(
        "| named | "
        + " | ".join(f"found {s}" for s in SHAPES)
        + " | fill (clip) | fill (frame 0) |"
    )
    print("|---|" + "---:|" * (len(SHAPES) + 2))
    for named in SHAPES:
        row = [str(pairs[named, s]) for s in SHAPES]
        med = [f"{np.median(v):.3f}" if v else "-" for v in (clip_fill[named], first_fill[named])]
        print(f"| {named} | " + " | ".join(row + med) + " |")
    print(f"(squares need fill >= {SQUARE_MIN_FILL})")


@torch.no_grad()
def denoise(model_dir: str, sigmas: list[float]) -> None:
    pipe = load_pipeline(model_dir)
    rng = np.random.default_rng(0)
    specs = []
    for i in range(24):
        shape, size = ("square", "circle")[i % 2], ("small", "large")[(i // 2) % 2]
        color = ("red", "green", "blue", "yellow")[(i // 4) % 4]
        side = box_side(size)
        x, y = rng.uniform(4, 60 - side, 2)
        obj = ObjectSpec(shape, color, size, "still", x, y)
        specs.append(ClipSpec([obj], ("black", "white", "gray", "beige")[i % 4], frames=1))
    images = np.stack([render(s)[0] for s in specs])  # (N, H, W, 3)
    shapes = [s.objects[0].shape for s in specs]
    prompts = [
        f"a {s.objects[0].size} {s.objects[0].color} {s.objects[0].shape} "
        f"on a {s.background} background"
        for s in specs
    ]
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float()[:, None] / 127.5 - 1
    z = pipe.encode_frames(pixels).float()  # (N, C, 1, h, w)

    def fills(frames: np.ndarray) -> str:
        by = defaultdict(list)
        for f, s in zip(frames, shapes, strict=True):
            fill = frame_fills(f[None])[0]
            if fill is not None:
                by[s].append(fill)
        return " | ".join(f"{np.median(by[s]):.3f}" for s in ("square", "circle"))

    def decoded(latents: torch.Tensor) -> np.ndarray:
        frames = pipe.decode_latents(latents)[:, 0].permute(0, 2, 3, 1).numpy()
        return (frames * 255).round().astype(np.uint8)

    print(f"model {model_dir}: median fill of 12 squares | 12 circles")
    print("| input | σ | squares | circles | x̂0 MSE |\n|---|---:|---:|---:|---:|")
    print(f"| render | - | {fills(images)} | - |")
    print(f"| VAE reconstruction | - | {fills(decoded(z))} | - |")
    text, mask = pipe.encode_prompt(prompts, None, torch.device("cpu"))
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    models = [("image model", pipe.image_transformer), ("video model", pipe.transformer)]
    for name, model in models:
        if model is None:
            continue
        for s in sigmas:
            xt = (1 - s) * z + s * noise
            t = torch.full((len(z),), s * pipe.scheduler.config.num_train_timesteps)
            out = model(xt.to(model.dtype), t, text.to(model.dtype), mask).sample.float()
            x0 = xt - s * model.to_velocity(out, xt, s)  # whatever the model predicts
            mse = float(((x0 - z) ** 2).mean())
            print(f"| {name} x̂0 | {s:g} | {fills(decoded(x0))} | {mse:.4f} |")


@torch.no_grad()
def continue_given(
    model_dir: str, motion_kind: str = "moving", shift: float | None = None, guidance: float = 4.0
) -> None:
    """``motion_kind``: "moving" (left, right, up, down in turn) or "still"; ``shift``: the
    video sampler's time shift instead of the pipeline's; ``guidance``: its guidance scale."""
    pipe = load_pipeline(model_dir)
    if shift is not None:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            pipe.scheduler.config, shift=shift
        )
    shift_used = pipe.scheduler.config.shift
    print(
        f"model {model_dir}: 15 frames continuing a rendered frame 0 ({motion_kind}, "
        f"shift {shift_used:g}, guidance {guidance:g})"
    )
    print(
        "| shape | shape right | median fill of the generated frames "
        "| median fill at frames 1 / 2 / 4 / 8 / 15 |\n|---|---:|---|---|"
    )
    for shape in SHAPES:
        right, fills, by_frame = 0, [], []
        for i in range(8):
            size, color = ("small", "large")[i % 2], ("red", "green", "blue", "yellow")[i % 4]
            bg = ("black", "white", "gray", "beige")[(i // 2) % 4]
            motion = ("left", "right", "up", "down")[i % 4] if motion_kind == "moving" else "still"
            corner = 32 - box_side(size) / 2
            spec = ClipSpec([ObjectSpec(shape, color, size, motion, corner, corner)], bg)
            phrase = "staying still" if motion == "still" else f"moving {motion}"
            prompt = f"a {size} {color} {shape} {phrase} on a {bg} background"
            out = pipe(
                prompt,
                num_frames=16,
                conditioning_frames=render(spec)[:1],
                guidance_scale=guidance,
                generator=torch.Generator().manual_seed(i),
            ).frames[0]
            video = (out * 255).round().astype(np.uint8)
            per_frame = frame_fills(video)
            by_frame.append(per_frame)
            seen = [f for f in per_frame[1:] if f is not None]
            fills.append(f"{np.median(seen):.2f}" if seen else "-")
            right += bool(judge(video, parse_caption(prompt))["shape"])
        profile = []
        for k in (1, 2, 4, 8, 15):
            at_k = [clip[k] for clip in by_frame if clip[k] is not None]
            profile.append(f"{np.median(at_k):.2f}" if at_k else "-")
        print(f"| {shape} | {right}/8 | {' '.join(fills)} | {' / '.join(profile)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("confusion")
    c.add_argument("run_dir")
    d = sub.add_parser("denoise")
    d.add_argument("model", nargs="?", default=str(default_model_path()))
    d.add_argument("--sigma", type=float, nargs="+", default=[0.05, 0.15, 0.3, 0.5, 0.7])
    g = sub.add_parser("continue")
    g.add_argument("model", nargs="?", default=str(default_model_path()))
    g.add_argument("--motion", choices=("moving", "still"), default="moving")
    g.add_argument("--shift", type=float, default=None, help="video sampler time shift")
    g.add_argument("--guidance", type=float, default=4.0)
    args = ap.parse_args()
    if args.cmd == "confusion":
        confusion(Path(args.run_dir))
    elif args.cmd == "denoise":
        denoise(args.model, args.sigma)
    else:
        continue_given(args.model, args.motion, args.shift, args.guidance)


if __name__ == "__main__":
    main()
