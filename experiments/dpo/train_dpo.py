"""Diffusion-DPO (Wallace et al. 2023) of the shipped video model on ``pairs.py``'s pairs: the
render of a layout wins over the model's own continuation of its frame 0 (issue 35, lever 2).

    python experiments/dpo/train_dpo.py PAIRS OUT [--steps 400] [--batch 6] [--lr 2e-5]
        [--beta 500] [--sft 1.0] [--losers wrong|all] [--shift 4] [--model studio/default_model]

Policy and a frozen reference both start as ``--model``'s video transformer. Per pair, one flow
time and one noise for both clips (frame 0 given clean, as image-first sampling gives it);
e = the flow-velocity squared error on the generated frames, object latents weighted 4× as
the lineage trains (``train.train_dit.foreground_mask``, the union of both clips' objects);
loss = −log σ(−β · ((e_w − e_w,ref) − (e_l − e_l,ref))) + ``--sft`` · e_w (the render's own
diffusion loss, which anchors the policy). ``--losers wrong``: only pairs whose drawn clip the
judge rejects (all correct with the shape held, ``evals.shapes``). A tenth of the pairs is held
aside: the log reports the policy's implicit accuracy on them (how often it ranks the render
above the drawn clip by more than the reference does). Checkpoint every 100 steps
(``OUT/state.pt``: resumes exactly); ``OUT/pipeline`` = ``--model`` with the policy as its
transformer.

``--phrasing P``: each step captions a pair's layout afresh (``caption(spec, rng,
wordnet_prob=P)``, layouts from ``PAIRS/prompts.jsonl``) instead of its drawn clip's prompt, so
the pairs speak the lineage's phrasings. ``--anchor CONFIG``: each step also adds
``--anchor-weight`` × the lineage's own diffusion loss on one of CONFIG's batches
(``train.train_dit.batch_loss``: its latent cache, built once under ``--anchor-cache``, its
image steps and caption phrasings; the VAE and text encoder are ``--model``'s; ``--anchor-set
key=value`` overrides CONFIG, e.g. smaller cache counts). ``--freeze-text``: the text pathway
(``TEXT_PATHWAY``: the text projections and every block's cross-attention and its norm) stays
as ``--model`` has it; only what draws (self-attention, MLPs, modulation) learns.

``--image`` (run G, pairs from ``image_pairs.py``): the first-frame image model
(``image_transformer``) is the policy instead; one frame, none given, every latent weighted
as above (objects 4×); ``OUT/pipeline`` = ``--model`` with the policy as its image model,
stored in fp16 as the shipped image model is.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from pipelines.components import load_text_encoder, load_vae
from pipelines.text_to_video import ShapesVideoPipeline
from train.config import DiTTrainConfig, load_config, resolve_mixed_precision
from train.train_dit import _shapes_cache, batch_loss, foreground_mask, shift_timesteps
from world.shapes_world import ClipSpec, caption

FOREGROUND_WEIGHT, FOREGROUND_THRESHOLD = 4.0, 1.5  # the lineage's (dit_shapes.yaml)
TEXT_PATHWAY = ("text_proj.", "pooled_proj.", ".cross_attn.", ".norm_c.")  # --freeze-text


def load_pairs(folder: Path, losers: str) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    wins, loses, meta = [], [], []
    for path in sorted(folder.glob("pairs_*.pt")):
        d = torch.load(path, weights_only=True)  # tensors, str and bool only: nothing runs
        if not d["meta"]:  # a chunk whose prompts gave no pair (pairs.py --draws)
            continue
        wins.append(d["win"])
        loses.append(d["lose"])
        meta += d["meta"]
    win, lose = torch.cat(wins).float(), torch.cat(loses).float()
    if losers == "wrong":
        keep = [  # image_pairs.py's losers carry "right" (always False)
            i
            for i, m in enumerate(meta)
            if not m.get("right", m.get("all_correct") and m.get("shape_held"))
        ]
        win, lose, meta = win[keep], lose[keep], [meta[i] for i in keep]
    return win, lose, meta


def errors(model, x0, noise, t, text, mask) -> torch.Tensor:
    """(B, C, F, h, w) flow-velocity squared error of ``model`` on clips ``x0`` (B, C, F, h, w),
    frame 0 given (a single frame: none given, the image model)."""
    tt = t[:, None, None, None, None]
    xt = (1 - tt) * x0 + tt * noise
    frame_mask = None
    if x0.shape[2] > 1:
        frame_mask = torch.zeros(x0.shape[0], x0.shape[2], dtype=torch.bool)
        frame_mask[:, 0] = True
        xt[:, :, :1] = x0[:, :, :1]
    out = model(xt, t * 1000, text, mask, frame_mask=frame_mask).sample.float()
    pred = model.to_velocity(out, xt, t)
    return (pred - (noise - x0)) ** 2  # (B, C, F, h, w)


def weights(win: torch.Tensor, lose: torch.Tensor) -> torch.Tensor:
    """(B, 1, F, h, w): objects of either clip 4×, frame 0 (given, in a clip) 0."""
    fg = torch.maximum(
        foreground_mask(win, FOREGROUND_THRESHOLD), foreground_mask(lose, FOREGROUND_THRESHOLD)
    )
    w = 1.0 + (FOREGROUND_WEIGHT - 1.0) * fg
    if win.shape[2] > 1:
        w[:, :, 0] = 0.0
    return w


def pair_losses(policy, ref, win, lose, text, mask, generator, shift):
    """→ (dpo loss (B,), e_w policy (B,), implicit margin (B,))."""
    b = win.shape[0]
    t = shift_timesteps(torch.rand(b, generator=generator), shift)
    noise = torch.randn(win.shape, generator=generator)
    w = weights(win, lose)
    both = torch.cat([win, lose])
    args = (both, torch.cat([noise, noise]), torch.cat([t, t]))
    cond = (torch.cat([text, text]), torch.cat([mask, mask]))
    ww = torch.cat([w, w]).expand(2 * b, *win.shape[1:])

    def per_clip(err):
        return (err * ww).flatten(1).sum(1) / ww.flatten(1).sum(1)

    e = per_clip(errors(policy, *args, *cond))
    with torch.no_grad():
        e_ref = per_clip(errors(ref, *args, *cond))
    margin = (e_ref[:b] - e[:b]) - (e_ref[b:] - e[b:])  # > 0: the policy prefers the render more
    return e, e_ref, margin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs")
    ap.add_argument("out")
    ap.add_argument("--model", default="studio/default_model")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--beta", type=float, default=500.0)
    ap.add_argument("--sft", type=float, default=1.0)
    ap.add_argument("--losers", choices=("wrong", "all"), default="wrong")
    ap.add_argument("--shift", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phrasing", type=float, default=None, metavar="P")
    ap.add_argument("--anchor", default=None, metavar="CONFIG")
    ap.add_argument("--anchor-weight", type=float, default=1.0)
    ap.add_argument("--anchor-cache", default="runs/dpo_latents")
    ap.add_argument("--anchor-set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--freeze-text", action="store_true")
    ap.add_argument("--image", action="store_true")
    args = ap.parse_args()
    if args.image and (args.phrasing is not None or args.anchor is not None):
        ap.error("--image takes neither --phrasing nor --anchor (both are the video model's)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    win, lose, meta = load_pairs(Path(args.pairs), args.losers)
    n = len(meta)
    held = list(range(0, n, 10))  # a tenth held aside
    train_rows = [i for i in range(n) if i % 10]
    print(f"{n} pairs ({len(train_rows)} train, {len(held)} held aside), losers: {args.losers}")
    pipe = ShapesVideoPipeline.from_pretrained(args.model)
    with torch.no_grad():
        text, mask = pipe.encode_prompt([m["prompt"] for m in meta], None, torch.device("cpu"))
    text = text.float()
    layouts = None
    if args.phrasing is not None:  # the layout of each pair's prompt
        lines = [
            json.loads(x) for x in (Path(args.pairs) / "prompts.jsonl").read_text().splitlines()
        ]
        by_prompt = {r["prompt"]: r["spec"] for r in lines}
        layouts = [ClipSpec.from_dict(by_prompt[m["prompt"]]) for m in meta]
    anchor = None
    if args.anchor is not None:  # the lineage's own batches
        cfg = load_config(
            DiTTrainConfig,
            args.anchor,
            [f"vae={args.model}/vae", f"data.cache_dir={args.anchor_cache}", *args.anchor_set],
        )
        accelerator = Accelerator(
            cpu=True, mixed_precision=resolve_mixed_precision(cfg.mixed_precision)
        )
        vae = load_vae(cfg.vae).eval().requires_grad_(False)
        cache = _shapes_cache(cfg, vae, out, accelerator)
        encoder, tokenizer = load_text_encoder(cfg.text_encoder)
        anchor = (cfg, cache, vae, encoder, tokenizer, accelerator)
    part = "image_transformer" if args.image else "transformer"
    policy = getattr(pipe, part).float().train()
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    if args.freeze_text:
        for name, param in policy.named_parameters():
            if name.startswith(TEXT_PATHWAY[:2]) or any(t in name for t in TEXT_PATHWAY[2:]):
                param.requires_grad_(False)
    learned = [p for p in policy.parameters() if p.requires_grad]
    print(
        f"learning {sum(p.numel() for p in learned):,} of "
        f"{sum(p.numel() for p in policy.parameters()):,} parameters"
    )
    opt = torch.optim.AdamW(learned, lr=args.lr, weight_decay=0.0)
    step = 0
    state_path = out / "state.pt"
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        policy.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        print(f"resumed at step {step}")

    def save() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": policy.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
        tmp.replace(state_path)

    def held_accuracy() -> float:
        g = torch.Generator().manual_seed(12345)
        policy.eval()
        right = 0
        with torch.no_grad():
            for k in range(0, len(held), 8):
                rows = held[k : k + 8]
                _, _, m = pair_losses(
                    policy, ref, win[rows], lose[rows], text[rows], mask[rows], g, args.shift
                )
                right += int((m > 0).sum())
        policy.train()
        return right / max(len(held), 1)

    log = open(out / "log.jsonl", "a")
    t0 = time.time()
    while step < args.steps:
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        pick = torch.randint(len(train_rows), (args.batch,), generator=g)
        rows = [train_rows[int(i)] for i in pick]
        t_rows, m_rows = text[rows], mask[rows]
        if layouts is not None:
            rng = np.random.default_rng([args.seed, step])
            phrased = [caption(layouts[i], rng, wordnet_prob=args.phrasing) for i in rows]
            with torch.no_grad():
                t_rows, m_rows = pipe.encode_prompt(phrased, None, torch.device("cpu"))
            t_rows = t_rows.float()
        e, e_ref, margin = pair_losses(
            policy, ref, win[rows], lose[rows], t_rows, m_rows, g, args.shift
        )
        b = len(rows)
        dpo = -F.logsigmoid(args.beta * margin).mean()
        loss = dpo + args.sft * e[:b].mean()
        lineage = None
        if anchor is not None:
            cfg, cache, vae, encoder, tokenizer, accelerator = anchor
            _, lineage = batch_loss(
                cfg, step, 0, 0, cache, None, {}, vae, encoder, tokenizer, policy, accelerator
            )
            loss = loss + args.anchor_weight * lineage.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(learned, 1.0)
        opt.step()
        step += 1
        if step % 10 == 0 or step == args.steps:
            rec = {
                "step": step,
                "dpo": round(dpo.item(), 4),
                "e_w": round(e[:b].mean().item(), 4),
                "e_l": round(e[b:].mean().item(), 4),
                "margin": margin.mean().item(),
                "acc": (margin > 0).float().mean().item(),
                **({} if lineage is None else {"lineage": round(lineage.item(), 4)}),
                "s": round(time.time() - t0, 1),
            }
            if step % 50 == 0 or step == args.steps:
                rec["held_acc"] = held_accuracy()
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if step % 100 == 0 or step == args.steps:
            save()
    # export: the base pipeline with the policy as its transformer
    target = out / "pipeline"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(args.model, target)
    shutil.rmtree(target / part)
    if args.image:
        policy = policy.half()  # as the shipped image model is stored
    policy.eval().save_pretrained(target / part)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
