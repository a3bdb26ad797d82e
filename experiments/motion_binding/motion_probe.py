"""Motion probes: does the model follow the motion a caption asks for, and from which noise on?

    python experiments/motion_binding/motion_probe.py noise-level [--model PATH] [--n 16] [--t0 1.0 0.98 0.95 0.9]
        [--given K] [--trajectories N] [--cache DIR] [--steps 25] [--guidance 4]
    python experiments/motion_binding/motion_probe.py direction-sensitivity [--model PATH] [--n 12]
        [--t 0.99 0.97 0.95 0.9 0.7] [--given K]
    python experiments/motion_binding/motion_probe.py direction [--model PATH] [--prompts 6] [--negative-reversed]
    python experiments/motion_binding/motion_probe.py text-attention [--model PATH] [--caption TEXT] [--t 0.99 0.5]
    python experiments/motion_binding/motion_probe.py carry [--model PATH] [--given-frames 1 4] [--t 0.99 0.9 0.7]

Every part also takes ``--weights FILE.safetensors`` (a raw transformer state dict, e.g. a
fine-tune's checkpoint) and ``--window T H W`` (every block's swap-attention window, for
fine-tunes that changed it), and ``--device``.

* ``noise-level``: real single-object moving clips from the latent cache, captioned as in
  training, are noised to a start time t0 and sampled down to 0 (Euler, classifier-free
  guidance, the model's own scheduler shift), then decoded and judged. If motion is right
  from t0 = 0.9 but wrong from 1.0, the model decides the motion in the first steps.
  ``--given K`` keeps the first K frames clean (continuation), so the motion can be read off
  them. ``--trajectories N`` prints the centroid tracks of the first N real and generated clips.
* ``direction-sensitivity``: left/right-moving clips noised to t, one model call each with
  the true caption, the reversed direction and a changed colour: the error of x̂0 against the
  truth, and how much x̂0 moves when the direction vs the colour of the caption is swapped.
* ``text-attention``: the share of each block's text cross-attention that each word of a
  caption gets (averaged over heads and all video tokens of a random latent).
* ``carry``: still and left/right-moving clips with their first K frames given clean, the
  rest noised to t: the x̂0 error on the generated frames, beside the background alone and the
  last given frame repeated. A model that carries the given object forward beats the
  background baseline clearly for still objects; one that can move it does so for moving ones.
* ``direction``: six fixed object/background prompts × four directions through the normal
  pipeline call (same seed per prompt across directions): the mean velocity of the first
  detected object and the share of clips that move the asked way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from evals.contract import parse_caption
from evals.detect import detect
from evals.detect import detect_background as _detect_background
from evals.detect import frame_candidates as _frame_candidates
from evals.shapes import judge
from pipelines.components import encode_text
from pipelines.text_to_video import ShapesVideoPipeline, to_uint8
from train.latent_cache import LatentCache, load_cache
from train.train_dit import REVERSED, _spec_caption, shift_timesteps

DEFAULT_MODEL = "studio/default_model"
DEFAULT_CACHE = "runs/dit/latents/2e27032d45b2165d"
ACCURACY_KEYS = ("colour", "shape", "motion", "count", "all_correct")
MOVING = ("left", "right", "up", "down")
#: A colour swap for the direction-sensitivity captions, as big a change as a direction swap.
OTHER_COLOUR = {
    "red": "blue",
    "blue": "green",
    "green": "red",
    "yellow": "red",
    "orange": "blue",
    "white": "red",
    "black": "red",
    "gray": "red",
    "beige": "red",
}
#: (object, background) of the `direction` prompts.
PROBE_PROMPTS = (
    ("red square", "black"),
    ("blue circle", "gray"),
    ("green triangle", "beige"),
    ("yellow square", "black"),
    ("white circle", "white"),
    ("orange square", "gray"),
)
#: (axis of the velocity (vx, vy), sign) of each direction; image y grows downwards.
DIRECTION_AXIS = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}
#: |v| along the asked axis, in px/frame, above which a clip counts as moving that way.
MIN_SPEED = 0.5

Text = tuple[torch.Tensor, torch.Tensor]  # token states (B, L, D_text), mask (B, L)


# ----------------------------------------------------------------------------------------------
# Shared: model, data, sampling, judging
# ----------------------------------------------------------------------------------------------


def load_model(
    path: str, weights: str | None, window: list[int] | None, device: str
) -> ShapesVideoPipeline:
    """The pipeline at ``path``, optionally with a raw transformer state dict loaded over it
    and every block's swap-attention window set to ``window`` (t, h, w)."""
    pipe = ShapesVideoPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    tr = pipe.transformer.eval()
    if weights is not None:
        tr.load_state_dict(load_file(weights))
    if window is not None:
        for block in tr.blocks:
            block.swap_attn.window = tuple(window)
    return pipe.to(device)


def encode(pipe: ShapesVideoPipeline, prompts: list[str]) -> Text:
    """Prompts encoded in one batch, so that they share one padded length."""
    with torch.no_grad():
        return encode_text(pipe.text_encoder, pipe.tokenizer, prompts, device=pipe.device)


def moving_clips(cache: LatentCache, motions: tuple[str, ...], first: int, n: int) -> list[int]:
    """Indices of the ``first``-th to ``first + n``-th cached single-object clips, without
    scene change or given frames, whose object moves in one of ``motions``."""
    eligible = [
        i
        for i, s in enumerate(cache.clip_specs)
        if len(s["objects"]) == 1
        and s["objects"][0]["motion"] in motions
        and s.get("switch_frame") is None
        and not s.get("condition_frames")
    ]
    if first + n > len(eligible):
        raise ValueError(
            f"asked for clips {first}..{first + n - 1} but the cache has {len(eligible)} "
            f"single-object clips moving {'/'.join(motions)}"
        )
    return eligible[first : first + n]


def load_clips(
    path: str, motions: tuple[str, ...], first: int, n: int
) -> tuple[torch.Tensor, list[dict]]:
    """→ clean latents (n, C, F, h, w) float32 and their clip specs."""
    cache = load_cache(Path(path))
    if cache is None:
        raise ValueError(f"no latent cache at {path} (expected latents.safetensors + specs.json)")
    idx = moving_clips(cache, motions, first, n)
    return cache.clips[idx].float(), [cache.clip_specs[i] for i in idx]


def given_mask(batch: int, frames: int, given: int, device: torch.device) -> torch.Tensor | None:
    """(batch, frames) bool, True on the first ``given`` frames (kept clean); None for 0."""
    if given < 0 or given >= frames:
        raise ValueError(
            f"--given must be in [0, {frames - 1}] for {frames}-frame clips, got {given}"
        )
    if not given:
        return None
    mask = torch.zeros(batch, frames, dtype=torch.bool, device=device)
    mask[:, :given] = True
    return mask


def noised(x0: torch.Tensor, t: float, given: int, seed: int = 1) -> torch.Tensor:
    """x0 on the flow path at time t, (1 − t)·x0 + t·ε, with the first ``given`` frames clean."""
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0.device)
    xt = (1 - t) * x0 + t * noise
    xt[:, :, :given] = x0[:, :, :given]
    return xt


def shifted_sigmas(t0: float, steps: int, shift: float) -> torch.Tensor:
    """Flow times for sampling from t0 to 0 with ``round(steps · t0)`` Euler steps (``steps``
    is the count for the whole range), with the scheduler's time shift s·σ / (1 + (s − 1)·σ)
    (SD3, Esser et al. 2024) applied. t0 is the unshifted start: the clip starts at noise
    level shift(t0), e.g. 0.983 for t0 = 0.95 and s = 3."""
    return shift_timesteps(torch.linspace(t0, 0, int(round(steps * t0)) + 1), shift)


def guided_velocity(
    pipe: ShapesVideoPipeline,
    x: torch.Tensor,
    sigma: float,
    text: Text,
    mask: torch.Tensor | None,
    guidance: float,
) -> torch.Tensor:
    """Classifier-free guided flow velocity at x (B, C, F, h, w); ``text`` holds the B
    unconditional prompts, then the B captions. Zero on given frames."""
    tr = pipe.transformer
    inp = torch.cat([x, x])
    mask_in = None if mask is None else torch.cat([mask, mask])
    t = torch.full((len(inp),), sigma * pipe.scheduler.config.num_train_timesteps, device=x.device)
    with torch.no_grad():
        out = tr(inp, t, *text, frame_mask=mask_in).sample
    v = tr.to_velocity(out, inp, sigma)
    if mask_in is not None:
        v = v * (~mask_in)[:, None, :, None, None]
    uncond, cond = v.chunk(2)
    return uncond + guidance * (cond - uncond)


def sample_from(
    pipe: ShapesVideoPipeline,
    x0: torch.Tensor,
    t0: float,
    text: Text,
    steps: int,
    guidance: float,
    given: int,
) -> torch.Tensor:
    """Noise the clean latents x0 to shift(t0) and sample back to 0 (Euler); → latents."""
    sigmas = shifted_sigmas(t0, steps, float(pipe.scheduler.config.shift))
    mask = given_mask(x0.shape[0], x0.shape[2], given, x0.device)
    x = noised(x0, float(sigmas[0]), given)
    for a, b in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        x = x + (b - a) * guided_velocity(pipe, x, a, text, mask, guidance)
    return x


def to_videos(pipe: ShapesVideoPipeline, latents: torch.Tensor) -> np.ndarray:
    """Latents (B, C, F, h, w) → uint8 videos (B, F, H, W, 3)."""
    return to_uint8(pipe.decode_latents(latents).permute(0, 1, 3, 4, 2).cpu().numpy())


def accuracy(videos: np.ndarray, captions: list[str]) -> dict[str, float]:
    """Share of clips that `studio eval`'s judge passes, per criterion of ACCURACY_KEYS."""
    results = [judge(v, parse_caption(c)) for v, c in zip(videos, captions, strict=True)]
    return {k: float(np.mean([bool(r[k]) for r in results])) for k in ACCURACY_KEYS}


def centroid_track(video: np.ndarray) -> str:
    """Per frame, "x,y" of the largest object candidate the detector sees ("-": none)."""
    bg_rgb = _detect_background(video)[2]
    track = []
    for cands in _frame_candidates(video, bg_rgb):
        c = max(cands, key=lambda d: d["area"]) if cands else None
        track.append(f"{c['cx']:.0f},{c['cy']:.0f}" if c else "-")
    return " ".join(track)


def predict_x0(
    pipe: ShapesVideoPipeline, xt: torch.Tensor, t: float, text: Text, mask: torch.Tensor | None
) -> torch.Tensor:
    """The model's clean-sample estimate x̂0 at xt, flow time t: its output for
    prediction_type "sample", x_t − t·v for "velocity"."""
    tr = pipe.transformer
    steps = torch.full((len(xt),), t * pipe.scheduler.config.num_train_timesteps, device=xt.device)
    with torch.no_grad():
        out = tr(xt, steps, *text, frame_mask=mask).sample
    return out if tr.config.prediction_type == "sample" else xt - t * out


def table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


# ----------------------------------------------------------------------------------------------
# Parts
# ----------------------------------------------------------------------------------------------


def run_noise_level(pipe: ShapesVideoPipeline, args: argparse.Namespace) -> None:
    x0, specs = load_clips(args.cache, MOVING, args.first, args.n)
    x0 = x0.to(pipe.device)
    rng = np.random.default_rng(0)
    captions = [_spec_caption(s, rng, image=False) for s in specs]
    text = encode(pipe, [""] * len(captions) + captions)
    shift = float(pipe.scheduler.config.shift)
    print(
        f"{args.n} cached clips from #{args.first}, scheduler shift {shift:g}, "
        f"{args.steps} steps for the full range, guidance {args.guidance:g}, "
        f"{args.given} given frames\n"
    )
    rows, tracks = [], {}
    for t0 in args.t0:
        sigmas = shifted_sigmas(t0, args.steps, shift)
        videos = to_videos(
            pipe, sample_from(pipe, x0, t0, text, args.steps, args.guidance, args.given)
        )
        acc = accuracy(videos, captions)
        rows.append(
            [f"{t0:g}", f"{sigmas[0]:.3f}", str(len(sigmas) - 1)]
            + [f"{acc[k]:.0%}" for k in ACCURACY_KEYS]
        )
        tracks[t0] = [centroid_track(v) for v in videos[: args.trajectories]]
    table(["t0", "σ start", "steps"] + [k.replace("_", " ") for k in ACCURACY_KEYS], rows)
    if not args.trajectories:
        return
    real = to_videos(pipe, x0[: args.trajectories])
    print("\nCentroid (x,y) per frame of the largest detected candidate, - for none:\n")
    track_rows = []
    for j, caption in enumerate(captions[: args.trajectories]):
        track_rows.append([str(j), caption, "real", centroid_track(real[j])])
        track_rows += [["", "", f"t0 = {t0:g}", tracks[t0][j]] for t0 in args.t0]
    table(["clip", "caption", "source", "track"], track_rows)


def run_direction_sensitivity(pipe: ShapesVideoPipeline, args: argparse.Namespace) -> None:
    x0, specs = load_clips(args.cache, ("left", "right"), args.first, args.n)
    x0 = x0.to(pipe.device)
    true, reversed_, recoloured = [], [], []
    for s in specs:
        o, bg = s["objects"][0], s["background"]
        true.append(f"a {o['color']} {o['shape']} moving {o['motion']} on a {bg} background")
        reversed_.append(
            f"a {o['color']} {o['shape']} moving {REVERSED[o['motion']]} on a {bg} background"
        )
        other = OTHER_COLOUR.get(o["color"], "red")
        recoloured.append(f"a {other} {o['shape']} moving {o['motion']} on a {bg} background")
    texts = [encode(pipe, caps) for caps in (true, reversed_, recoloured)]
    mask = given_mask(x0.shape[0], x0.shape[2], args.given, x0.device)
    free = slice(args.given, None)  # given frames are exact, so errors are over the rest

    def mse(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(((a[:, :, free] - b[:, :, free]) ** 2).mean())

    print(
        f"{args.n} cached left/right clips from #{args.first}, {args.given} given frames; "
        "x̂0 MSE over the generated frames\n"
    )
    rows = []
    for t in args.t:
        xt = noised(x0, t, args.given)
        p, p_rev, p_col = (predict_x0(pipe, xt, t, text, mask) for text in texts)
        rows.append(
            [f"{t:g}"]
            + [f"{mse(q, x0):.4f}" for q in (p, p_rev, p_col)]
            + [f"{mse(p, p_rev):.5f}", f"{mse(p, p_col):.5f}"]
        )
    table(
        [
            "t",
            "MSE true caption",
            "MSE reversed direction",
            "MSE other colour",
            "Δx̂0 direction swap",
            "Δx̂0 colour swap",
        ],
        rows,
    )


def run_direction(pipe: ShapesVideoPipeline, args: argparse.Namespace) -> None:
    probes = PROBE_PROMPTS[: args.prompts]
    neg = "reversed direction" if args.negative_reversed else "empty"
    print(
        f"{len(probes)} prompts × {len(MOVING)} directions, seed = prompt index, "
        f"{args.steps} steps, guidance {args.guidance:g}, negative prompt: {neg}\n"
    )
    rows = []
    for d in MOVING:
        prompts = [f"a {o} moving {d} on a {bg} background" for o, bg in probes]
        negatives = (
            [f"a {o} moving {REVERSED[d]} on a {bg} background" for o, bg in probes]
            if args.negative_reversed
            else None
        )
        frames = pipe(
            prompts,
            negative_prompt=negatives,
            generator=[torch.Generator().manual_seed(i) for i in range(len(prompts))],
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
        ).frames
        detections = [detect(to_uint8(v)) for v in frames]
        vs = np.array([det.objects[0].velocity for det in detections if det.objects])
        axis, sign = DIRECTION_AXIS[d]
        ok = int((sign * vs[:, axis] > MIN_SPEED).sum()) if len(vs) else 0
        mean = f"({vs[:, 0].mean():+.2f}, {vs[:, 1].mean():+.2f})" if len(vs) else "–"
        share = f"{ok / len(vs):.0%} ({ok}/{len(vs)})" if len(vs) else "–"
        rows.append([d, f"{len(vs)}/{len(prompts)}", mean, share])
    table(
        ["direction", "detected", "mean velocity (vx, vy) px/frame", "moving the asked way"], rows
    )


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def flow_time(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a flow time must be in (0, 1], got {value}")
    return value


def _free_mse(a: torch.Tensor, x0: torch.Tensor, given: int) -> str:
    """MSE of ``a`` against ``x0`` over the frames after the first ``given``, formatted."""
    return f"{float(((a - x0)[:, :, given:] ** 2).mean()):.3f}"


def run_carry(pipe: ShapesVideoPipeline, args: argparse.Namespace) -> None:
    """Given K clean frames, can the model carry the object into the noisy ones? x̂0 error on
    the generated frames for still and for moving objects, beside two baselines: the
    background alone (the frame's median latent: no object at all) and the last given frame
    repeated (exact for a still object)."""
    rng = np.random.default_rng(0)
    rows = []
    for label, motions in (("still", ("still",)), ("left/right", ("left", "right"))):
        x0, specs = load_clips(args.cache, motions, args.first, args.n)
        x0 = x0.to(pipe.device)
        text = encode(pipe, [_spec_caption(s, rng, image=False) for s in specs])
        background = x0.flatten(3).median(dim=-1).values[..., None, None].expand_as(x0)
        for given in args.given_frames:
            mask = given_mask(len(x0), x0.shape[2], given, x0.device)
            repeated = x0[:, :, given - 1 : given].expand_as(x0)
            model = [
                _free_mse(predict_x0(pipe, noised(x0, t, given), t, text, mask), x0, given)
                for t in args.t
            ]
            baselines = [_free_mse(b, x0, given) for b in (background, repeated)]
            rows.append([label, str(given), *baselines, *model])
    print(
        f"{args.n} cached clips of each kind from #{args.first}; x̂0 MSE on the generated frames\n"
    )
    table(
        ["object", "given", "background only", "last given repeated"]
        + [f"model, t = {t:g}" for t in args.t],
        rows,
    )


def run_text_attention(pipe: ShapesVideoPipeline, args: argparse.Namespace) -> None:
    """How much of each block's text cross-attention goes to each token of one caption: the
    softmax weights averaged over heads and over every video token of a random latent."""
    tr = pipe.transformer
    text = encode(pipe, [args.caption])
    tokens = pipe.tokenizer.convert_ids_to_tokens(pipe.tokenizer(args.caption)["input_ids"])
    inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(i: int):
        def hook(module, a, kw):
            inputs[i] = (a[0] if a else kw["hidden_states"], kw["encoder_hidden_states"])

        return hook

    hooks = [
        b.cross_attn.register_forward_pre_hook(keep(i), with_kwargs=True)
        for i, b in enumerate(tr.blocks)
    ]
    c, size = tr.config.in_channels, tr.config.sample_size
    x = torch.randn(1, c, args.frames, size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    try:
        for t in args.t:
            predict_x0(pipe, x.to(pipe.device), t, text, None)
            for i, (h, e) in sorted(inputs.items()):
                a = tr.blocks[i].cross_attn
                with torch.no_grad():
                    q, k = a.to_q(h), a.to_k(e)  # (1, N, D), (1, L, D)
                q = q.unflatten(-1, (a.heads, -1)).transpose(1, 2)  # (1, H, N, d)
                k = k.unflatten(-1, (a.heads, -1)).transpose(1, 2)  # (1, H, L, d)
                w = (q @ k.transpose(-1, -2) * a.scale).softmax(-1).mean(dim=(0, 1, 2))
                rows.append([f"{t:g}", str(i)] + [f"{v:.3f}" for v in w.tolist()])
    finally:
        for hk in hooks:
            hk.remove()
    print(f"caption: {args.caption!r}; random latent, {args.frames} frames\n")
    table(["t", "block", *tokens], rows)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default=DEFAULT_MODEL, help="pipeline directory")
    common.add_argument("--weights", default=None, help="transformer state dict (.safetensors)")
    common.add_argument(
        "--window", type=int, nargs=3, metavar=("T", "H", "W"), help="swap-attention window"
    )
    common.add_argument("--device", default="cpu")
    common.add_argument("--steps", type=int, default=25, help="Euler steps for the full range")
    common.add_argument("--guidance", type=float, default=4.0)

    cached = argparse.ArgumentParser(add_help=False)
    cached.add_argument("--cache", default=DEFAULT_CACHE, help="latent cache directory")
    cached.add_argument("--given", type=int, default=0, help="first K frames kept clean")

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = ap.add_subparsers(dest="part", required=True, metavar="PART")
    p = parts.add_parser("noise-level", parents=[common, cached], help="accuracy vs start t0")
    p.add_argument("--n", type=positive_int, default=16, help="clips")
    p.add_argument("--first", type=int, default=100, help="first eligible clip")
    p.add_argument("--t0", type=flow_time, nargs="+", default=[1.0, 0.98, 0.95, 0.9])
    p.add_argument("--trajectories", type=int, default=0, metavar="N", help="tracks of N clips")
    p.set_defaults(run=run_noise_level)
    p = parts.add_parser(
        "direction-sensitivity", parents=[common, cached], help="x̂0 vs caption changes"
    )
    p.add_argument("--n", type=positive_int, default=12, help="clips")
    p.add_argument("--first", type=int, default=0, help="first eligible clip")
    p.add_argument("--t", type=flow_time, nargs="+", default=[0.99, 0.97, 0.95, 0.9, 0.7])
    p.set_defaults(run=run_direction_sensitivity)
    p = parts.add_parser("carry", parents=[common], help="given frames carried into noisy ones")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="latent cache directory")
    p.add_argument("--given-frames", type=positive_int, nargs="+", default=[1, 4], metavar="K")
    p.add_argument("--n", type=positive_int, default=12, help="clips of each kind")
    p.add_argument("--first", type=int, default=0, help="first eligible clip")
    p.add_argument("--t", type=flow_time, nargs="+", default=[0.99, 0.9, 0.7])
    p.set_defaults(run=run_carry)
    p = parts.add_parser("text-attention", parents=[common], help="cross-attention per word")
    p.add_argument("--caption", default="a red circle moving left on a black background")
    p.add_argument("--frames", type=positive_int, default=16)
    p.add_argument("--t", type=flow_time, nargs="+", default=[0.99, 0.5])
    p.set_defaults(run=run_text_attention)
    p = parts.add_parser("direction", parents=[common], help="generated motion per direction")
    p.add_argument(
        "--prompts", type=positive_int, default=len(PROBE_PROMPTS), help="use the first N"
    )
    p.add_argument("--negative-reversed", action="store_true", help="reversed prompt as negative")
    p.set_defaults(run=run_direction)
    return ap


def main() -> None:
    args = build_parser().parse_args()
    pipe = load_model(args.model, args.weights, args.window, args.device)
    args.run(pipe, args)


if __name__ == "__main__":
    main()
