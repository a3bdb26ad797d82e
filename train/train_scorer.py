"""Train and evaluate the Shapes World video–text scorer (the project's default scorer).

    studio train scorer --config configs/train/scorer_shapes.yaml [key=value ...]
    studio eval scorer [--model PATH] [--clips 200]

Recipe: CLIP's symmetric contrastive loss between the video tower and the text head on top
of a frozen MiniLM, with clips rendered on the fly, images as 1-frame videos every
``image_every``-th step (Frozen in Time's joint training), and counterfactual captions of
each clip — one colour or shape changed, a direction reversed, colours or motions swapped
between two objects — added to the text side as hard negatives. Without them a contrastive
model learns bags of words; with them it has to read the order of the frames and which
attribute belongs to which object.

Optionally (issue 34, all off by default) every video step also takes *groups* of clips that
look like generated ones (train/scorer_data.py): renders damaged the ways generated clips are,
and generated clips of training prompts, each judged by the pixel judge against its caption. A
group's correct clip joins the contrastive rows, its wrong clips are hard-negative *videos*
(text→video side), and a pairwise ranking term puts a caption's right clips above its wrong
ones (``group_losses``): what best-of-N asks of the scorer.

Evaluation on held-out clips: text→video and video→text recall@1/5/10 and median rank, and
counterfactual accuracy (the true caption must outscore each counterfactual), for the
scorer and, side by side, for its per-frame baseline (the same tower on single frames,
embeddings averaged: blind to frame order).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from models.video_text_scorer import SCORER_MODELS, VideoTextScorer
from pipelines.components import encode_text, load_text_encoder, text_hidden_size
from pipelines.scoring import VideoTextScorer as Scorer
from pipelines.scoring import frames_to_tensor
from world.shapes_world import (
    COUNTERFACTUALS,
    MOTIONS,
    ClipSpec,
    ShapesWorld,
    caption,
    counterfactual,
    render,
)

from .checkpoint import (
    InterruptFlag,
    init_weights_from,
    optimizer_step,
    resume,
    start_run,
)
from .config import ScorerTrainConfig, resolve_mixed_precision
from .scorer_data import (
    IMAGE_COUNTERFACTUALS,  # noqa: F401  (re-exported: it lived here)
    GeneratedSet,
    GroupBatch,
    degraded_groups,
    judge_generated,
    negatives_for,
    ranking_loss,
)
from .train_dit import drop_log_after


# ---------------------------------------------------------------------------- data
def motion_targets(spec: ClipSpec) -> list[float]:
    """Multi-hot over ``MOTIONS``: which motions the clip shows (order-free, so two objects
    need no matching). A motion that changes mid-clip counts both."""
    shown = {o.motion for o in spec.objects} | {
        o.motion_after for o in spec.objects if o.motion_after
    }
    return [float(m in shown) for m in MOTIONS]


def make_batch(
    world: ShapesWorld, cfg: ScorerTrainConfig, rng: np.random.Generator, image: bool
) -> tuple[torch.Tensor, list[str], list[str], torch.Tensor]:
    """→ frames (B, F, 3, S, S) in [-1, 1], true captions (B), hard-negative captions,
    motion targets (B, len(MOTIONS))."""
    frames, captions, negatives, motions = [], [], [], []
    m = cfg.model
    for _ in range(cfg.batch_size):
        kind = "image" if image else ("video2" if rng.random() < cfg.two_object_prob else "video1")
        spec = world.sample_spec(rng, kind)
        seed = int(rng.integers(1 << 32))
        captions.append(caption(spec, np.random.default_rng(seed), image=image))
        negatives += negatives_for(spec, seed, cfg.hard_negatives, rng, image)
        frames.append(frames_to_tensor(render(spec), m.num_frames, m.image_size))
        motions.append(motion_targets(spec))
    return torch.stack(frames), captions, negatives, torch.tensor(motions)


def extra_groups(
    world: ShapesWorld,
    generated: GeneratedSet | None,
    cfg: ScorerTrainConfig,
    step: int,
    rank: int,
) -> GroupBatch | None:
    """A video step's degraded and generated groups (None when both are off), from a
    generator of their own: the rendered batch draws exactly what it drew without them."""
    if not cfg.degraded_per_step and generated is None:
        return None
    rng = np.random.default_rng([cfg.seed, step, rank, 34])
    m = cfg.model
    parts = []
    if cfg.degraded_per_step:
        parts.append(
            degraded_groups(
                world,
                rng,
                cfg.degraded_per_step,
                m.num_frames,
                m.image_size,
                tuple(cfg.degradations),
                cfg.two_object_prob,
                cfg.hard_negatives,
                cfg.degraded_judge,
                cfg.degraded_variants,
            )
        )
    if generated is not None:
        parts.append(
            generated.groups(
                rng,
                cfg.generated_per_step,
                m.num_frames,
                m.image_size,
                cfg.hard_negatives,
                cfg.generated_mixed_share,
            )
        )
    return GroupBatch.cat(parts)


def motion_aux_loss(
    head: torch.nn.Module, video: torch.Tensor, text: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """One linear head reads the clip's motions from the video embedding and from its true
    caption's embedding (BCE). Contrastive training alone leaves both embeddings blind to
    direction (experiments/scorer_pilots/REPORT.md: a clip and its time-reversal embed at cosine 0.99997, "left" and
    "right" captions at 0.9985), since neither side carries it for the other to match; the
    shared head makes both carry it, along the same axes. video (B, E), text (B, E)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    return (bce(head(video), targets) + bce(head(text), targets)) / 2


def contrastive_loss(
    video: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    negative_videos: torch.Tensor | None = None,
) -> torch.Tensor:
    """video (B, E), text (B + K, E): rows 0..B-1 of ``text`` are the true captions, the
    rest hard negatives that only the video→text direction sees. ``negative_videos`` (N, E):
    clips that fit no caption of the batch (judged wrong for their own), hard negatives that
    only the text→video direction sees."""
    b = video.shape[0]
    scale = logit_scale.clamp(max=math.log(100.0)).exp()
    logits = scale * video @ text.T  # (B, B + K)
    target = torch.arange(b, device=video.device)
    v2t = torch.nn.functional.cross_entropy(logits, target)
    if negative_videos is None or not len(negative_videos):
        t2v = torch.nn.functional.cross_entropy(logits[:, :b].T, target)
    else:
        t2v_logits = scale * text[:b] @ torch.cat([video, negative_videos]).T  # (B, B + N)
        t2v = torch.nn.functional.cross_entropy(t2v_logits, target)
    return (v2t + t2v) / 2


def group_losses(
    video: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    b: int,
    extra: GroupBatch,
    cfg: ScorerTrainConfig,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The contrastive loss of a rendered batch joined by ``extra``'s groups, and the ranking
    loss among ``extra``'s clips (None without a pair).

    video (B + M, E): the B rendered clips, then ``extra``'s M clips; text (B + G + K, E):
    the rendered captions, the G groups' captions, then every hard-negative caption. Each
    group's anchor (a correct clip) is the row of its caption; the clips judged wrong are
    hard-negative videos for every caption; the ranking term compares each clip's cosine with
    its own group's caption (scorer_data.ranking_loss), at the contrastive temperature held
    fixed (so the ranking cannot move it)."""
    device = video.device
    anchors = torch.tensor(extra.anchors, device=device) + b
    rows = torch.cat([video[:b], video[anchors]])  # (B + G, E)
    clips = video[b:]  # (M, E)
    labels, groups = extra.labels.to(device), extra.groups.to(device)
    loss = contrastive_loss(rows, text, logit_scale, negative_videos=clips[~labels])
    if cfg.rank_weight == 0:
        return loss, None
    own = text[b + groups]  # (M, E) each clip's caption
    scores = (clips * own).sum(-1)
    ranked = extra.ranked.to(device)
    scale = logit_scale.detach().clamp(max=math.log(100.0)).exp()
    rank = ranking_loss(scores[ranked], labels[ranked], groups[ranked], scale,
                        cfg.rank_margin, cfg.rank_cross_weight)  # fmt: skip
    return loss, rank


def build_model(cfg: ScorerTrainConfig, text_dim: int) -> VideoTextScorer:
    factory = SCORER_MODELS.get(cfg.model.size)
    if factory is None:
        raise ValueError(
            f"unknown scorer size {cfg.model.size!r}; allowed: {sorted(SCORER_MODELS)}"
        )
    return factory(
        image_size=cfg.model.image_size,
        patch_size=cfg.model.patch_size,
        num_frames=cfg.model.num_frames,
        stem=cfg.model.stem,
        pool_dim=cfg.model.pool_dim,
        text_layers=cfg.model.text_layers,
        text_dim=text_dim,
        text_encoder=cfg.text_encoder,
    )


# ---------------------------------------------------------------------------- main
def main(cfg: ScorerTrainConfig) -> Path:
    # ======================================================== setup
    # image batches leave the temporal attention out: DDP must expect unused parameters
    accelerator, out = start_run(
        cfg, resolve_mixed_precision(cfg.mixed_precision), find_unused_parameters=True
    )
    rank = accelerator.process_index
    text_encoder, tokenizer = load_text_encoder(cfg.text_encoder)
    text_encoder.to(accelerator.device)
    world = ShapesWorld(size=cfg.model.image_size, frames=16, exclusions=cfg.exclusions)

    model = build_model(cfg, text_hidden_size(text_encoder))
    if cfg.init_from:
        fresh = init_weights_from(model, cfg.init_from)
        accelerator.print(f"initialised from {cfg.init_from}; {len(fresh)} new tensors")
    accelerator.print(
        f"VideoTextScorer {cfg.model.size}: "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"
    )
    # the auxiliary motion head (training only, not exported): see motion_aux_loss
    motion_head = (
        torch.nn.Linear(model.config.embed_dim, len(MOTIONS)) if cfg.motion_aux_weight > 0 else None
    )
    params = list(model.parameters()) + (list(motion_head.parameters()) if motion_head else [])
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, cfg.warmup))
        return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / cfg.steps, 1.0))))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    if motion_head is None:
        model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    else:
        model, motion_head, optimizer, schedule = accelerator.prepare(
            model, motion_head, optimizer, schedule
        )

    # ======================================================== data with the generator's faults
    generated = None
    if cfg.generated_per_step:
        if accelerator.is_main_process:  # judge once, before any process reads the labels
            for d in cfg.generated_dirs:
                judge_generated(Path(d))
        accelerator.wait_for_everyone()
        generated = GeneratedSet.from_dirs(cfg.generated_dirs, cfg.model.num_frames, judge=False)
        accelerator.print(f"generated clips: {generated.stats()}")

    # ======================================================== resume
    start = resume(accelerator, out)
    total = min(cfg.steps, cfg.max_steps or cfg.steps)

    # ======================================================== train
    if accelerator.is_main_process:
        drop_log_after(out / "log.jsonl", start)
    log = (out / "log.jsonl").open("a") if accelerator.is_main_process else None
    bar = tqdm(range(start, total), initial=start, total=total, desc="scorer",
               disable=not accelerator.is_main_process)  # fmt: skip
    t_last, seen, loss_sum, loss_n = time.time(), 0, 0.0, 0
    rank_sum, rank_n = 0.0, 0  # this process's ranking loss, logged beside the total
    model.train()
    interrupt = InterruptFlag()  # Ctrl-C: finish the step, checkpoint it, then stop
    try:
        for step in bar:
            rng = np.random.default_rng([cfg.seed, step, rank])
            image = cfg.image_every > 0 and step % cfg.image_every == cfg.image_every - 1
            frames, captions, negatives, motions = make_batch(world, cfg, rng, image)
            extra = None if image else extra_groups(world, generated, cfg, step, rank)
            texts = captions + negatives
            if extra is not None:  # the groups' captions follow the rendered ones
                texts = captions + extra.captions + negatives + extra.negatives
                frames = torch.cat([frames, extra.frames])
            states, mask = encode_text(text_encoder, tokenizer, texts, device=accelerator.device)
            b = len(captions)
            with accelerator.autocast():
                video, text, logit_scale = model(frames.to(accelerator.device), states, mask)
                if extra is None:
                    loss, rank_loss = (
                        contrastive_loss(video.float(), text.float(), logit_scale),
                        None,
                    )
                else:
                    loss, rank_loss = group_losses(
                        video.float(), text.float(), logit_scale, b, extra, cfg
                    )
                    if rank_loss is not None:
                        loss = loss + cfg.rank_weight * rank_loss
                if motion_head is not None and not image:  # images show no motion
                    aux = motion_aux_loss(
                        motion_head, video[:b].float(), text[:b].float(), motions.to(video.device)
                    )
                    loss = loss + cfg.motion_aux_weight * aux
            clipped = (
                model if motion_head is None else [*model.parameters(), *motion_head.parameters()]
            )
            # the rate this step trains at (the step advances it)
            lr_used = schedule.get_last_lr()[0]
            optimizer_step(accelerator, clipped, optimizer, schedule, loss, cfg.grad_clip)

            loss_sum += accelerator.reduce(loss.detach(), reduction="mean").item()
            loss_n += 1
            if rank_loss is not None:
                rank_sum += rank_loss.item()
                rank_n += 1
            seen += frames.shape[0] * accelerator.num_processes
            if (step + 1) % cfg.log_every == 0:
                entry = {
                    "step": step + 1,
                    "loss": loss_sum / loss_n,
                    "samples_per_s": seen / (time.time() - t_last),
                    "lr": lr_used,
                    "processes": accelerator.num_processes,
                }
                if rank_n:
                    entry["rank_loss"] = rank_sum / rank_n
                bar.set_postfix(loss=f"{entry['loss']:.4f}", sps=f"{entry['samples_per_s']:.1f}")
                if log:
                    log.write(json.dumps(entry) + "\n")
                    log.flush()
                t_last, seen, loss_sum, loss_n = time.time(), 0, 0.0, 0
                rank_sum, rank_n = 0.0, 0
            due = (step + 1) % cfg.save_every == 0 or step + 1 == total
            interrupt.checkpoint(accelerator, out, step + 1, due)
    finally:  # on any way out: a later Ctrl-C in this process acts as usual
        interrupt.restore()

    # ======================================================== export + held-out evaluation
    accelerator.wait_for_everyone()
    final = out / "model"
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model).eval()
        unwrapped.save_pretrained(final)
        if cfg.eval_clips:
            scorer = Scorer(unwrapped, text_encoder, tokenizer, device=str(accelerator.device))
            report = evaluate(scorer, cfg.eval_clips, cfg.eval_seed, progress=True)
            write_report(report, final)
            accelerator.print(markdown(report))
        accelerator.print(f"saved scorer to {final}")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the process group (see studio/batch.py)
    return final


# ---------------------------------------------------------------------------- evaluation
def held_out_clips(n: int, seed: int, size: int = 64) -> list[tuple[ClipSpec, str, np.ndarray]]:
    """``n`` clips, half with one object and half with two, from a seed training never uses;
    the whole world (no exclusions). → (spec, caption seed, frames)."""
    world = ShapesWorld(size=size, frames=16, seed=seed, exclusions=False)
    out = []
    for i in range(n):
        kind = "video2" if i % 2 else "video1"
        rng = np.random.default_rng([seed, i])
        spec = world.sample_spec(rng, kind)
        out.append((spec, int(rng.integers(1 << 32)), render(spec)))
    return out


def _fits(spec: ClipSpec, text: str) -> bool:
    """Does ``spec`` show everything ``text`` says? (A caption that omits the size fits both
    sizes, so several held-out clips can fit one caption.)"""
    from itertools import permutations

    from evals.contract import parse_caption

    e = parse_caption(text)
    if e.background != spec.background or len(e.objects) != len(spec.objects):
        return False
    return any(
        all(
            (x.color, x.shape, x.motion) == (o.color, o.shape, o.motion)
            and x.size in (None, o.size)
            for x, o in zip(e.objects, order, strict=True)
        )
        for order in permutations(spec.objects)
    )


def r1_ceiling(specs: list[ClipSpec], captions: list[str]) -> float:
    """Best text→video R@1 a perfect scorer can expect: a caption that fits k clips finds
    its own clip first with probability 1/k."""
    return float(np.mean([1.0 / sum(_fits(s, c) for s in specs) for c in captions]))


def _retrieval(sim: torch.Tensor) -> dict[str, float]:
    """sim (N texts, N videos), the true pairs on the diagonal → recalls and median ranks."""
    n = sim.shape[0]
    diag = sim.diag()
    t2v = (sim > diag[:, None]).sum(1) + 1  # rank of the true video for each text
    v2t = (sim > diag[None, :]).sum(0) + 1  # rank of the true text for each video
    out: dict[str, float] = {"n": n}
    for name, ranks in (("t2v", t2v), ("v2t", v2t)):
        for k in (1, 5, 10):
            out[f"{name}_R@{k}"] = float((ranks <= k).double().mean())
        out[f"{name}_median_rank"] = float(ranks.float().median())
    return out


@torch.no_grad()
def evaluate(scorer: Scorer, n_clips: int = 200, seed: int = 9_000_001, progress: bool = False):
    """Retrieval and counterfactual accuracy of ``scorer`` and of its per-frame baseline."""
    clips = held_out_clips(n_clips, seed, scorer.model.config.image_size)
    captions = [caption(spec, np.random.default_rng(cs)) for spec, cs, _ in clips]
    videos = [frames for _, _, frames in clips]
    text = scorer.text_embeds(captions)
    embeds = {
        "scorer": scorer.video_embeds(videos),
        "per_frame": scorer.frame_average_embeds(videos),
    }
    report: dict = {
        "clips": n_clips,
        "seed": seed,
        "t2v_R@1_ceiling": r1_ceiling([spec for spec, _, _ in clips], captions),
        "methods": {},
    }
    cf_rng = np.random.default_rng([seed, 1])
    counter = {k: [] for k in COUNTERFACTUALS}  # (clip index, counterfactual caption)
    for i, (spec, cs, _) in enumerate(tqdm(clips, desc="counterfactuals", disable=not progress)):
        for kind in COUNTERFACTUALS:
            cf = counterfactual(spec, kind, cf_rng)
            if cf is not None:
                counter[kind].append((i, caption(cf, np.random.default_rng(cs))))
    cf_text = {k: scorer.text_embeds([c for _, c in v]) if v else None for k, v in counter.items()}
    for method, v in embeds.items():
        sim = text @ v.T
        result = _retrieval(sim)
        true = sim.diag()
        for kind, pairs in counter.items():
            if not pairs:
                continue
            idx = torch.tensor([i for i, _ in pairs])
            cf_score = (cf_text[kind] * v[idx]).sum(-1)
            wins = (true[idx] > cf_score).double()
            result[f"cf_{kind}"] = float(wins.mean())
            result[f"cf_{kind}_n"] = len(pairs)
            if not kind.startswith("binding"):  # split by the clip's number of objects
                objects = torch.tensor([len(clips[i][0].objects) for i, _ in pairs])
                for k, name in ((1, "one"), (2, "two")):
                    if (objects == k).any():
                        result[f"cf_{kind}_{name}"] = float(wins[objects == k].mean())
        bind = [result.get("cf_binding_color"), result.get("cf_binding_motion")]
        ns = [result.get("cf_binding_color_n", 0), result.get("cf_binding_motion_n", 0)]
        if sum(ns):
            result["cf_binding"] = sum((b or 0) * n for b, n in zip(bind, ns, strict=True)) / sum(
                ns
            )
        report["methods"][method] = result
    return report


BARS = {
    "t2v_R@1": 0.90,
    "cf_color": 0.97,
    "cf_shape": 0.95,
    "cf_direction": 0.95,
    "cf_binding": 0.85,
}


def markdown(report: dict) -> str:
    rows = [
        ("text→video R@1", "t2v_R@1"), ("text→video R@5", "t2v_R@5"),
        ("text→video R@10", "t2v_R@10"), ("text→video median rank", "t2v_median_rank"),
        ("video→text R@1", "v2t_R@1"), ("video→text R@5", "v2t_R@5"),
        ("video→text R@10", "v2t_R@10"), ("video→text median rank", "v2t_median_rank"),
        ("counterfactual: colour", "cf_color"), ("counterfactual: shape", "cf_shape"),
        ("  shape: one object", "cf_shape_one"), ("  shape: two objects", "cf_shape_two"),
        ("counterfactual: direction", "cf_direction"),
        ("counterfactual: binding (both kinds)", "cf_binding"),
        ("  binding: colours swapped", "cf_binding_color"),
        ("  binding: motions swapped", "cf_binding_motion"),
    ]  # fmt: skip
    m = report["methods"]
    lines = [
        f"Held-out Shapes World clips: {report['clips']} (seed {report['seed']}), "
        "half one object, half two. A caption may fit several clips (one that omits the size "
        "fits both sizes): a perfect scorer's expected text→video R@1 here is "
        f"{report['t2v_R@1_ceiling']:.3f}.",
        "",
        "| metric | scorer | per-frame baseline | bar |",
        "|---|---:|---:|---|",
    ]

    def fmt(v, key: str) -> str:
        return "—" if v is None else (f"{v:.0f}" if "rank" in key else f"{v:.3f}")

    for label, key in rows:
        bar = BARS.get(key)
        ok = (
            ""
            if bar is None
            else (f"≥ {bar:.2f} " + ("met" if m["scorer"].get(key, 0) >= bar else "**not met**"))
        )
        lines.append(
            f"| {label} | {fmt(m['scorer'].get(key), key)} | "
            f"{fmt(m['per_frame'].get(key), key)} | {ok} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report: dict, folder: Path) -> dict[str, Path]:
    from pipelines.files import write_json_atomic

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "eval.json", "md": folder / "eval.md"}
    write_json_atomic(paths["json"], report)
    tmp = paths["md"].with_suffix(".md.tmp")
    tmp.write_text(markdown(report))
    tmp.replace(paths["md"])
    return paths
