"""Several draws per storyboard window: how much could picking one help, and how much does
``continuity_cost`` get? (issue 5)

    python benchmarks/storyboard_candidates.py [MODEL] [--stories 20] [--candidates 3] [--seed 777]
        [--scorer default]

Storyboards come from the held-out suite's builder with another seed (``--seed``), minus any
story that shares a prompt with the held-out suite or the validation set; never the suite
itself. Each is generated with ``--candidates`` draws per continued window, the one with the
lowest :func:`pipelines.storyboard.continuity_cost` kept (``studio storyboard --candidates``).
Every draw of every continued window is judged as ``studio eval storyboards`` judges a scene
boundary: the given frames against the draw's new frames (colour and shape kept, jump
≤ 4 px), and the new frames' motion against the window's prompt. Reported per window: the
failure rates of draw 0 (what one draw gives), of ``continuity_cost``'s pick, and of an
oracle that takes the draw with the fewest failures (the ceiling of any picker). With
``--scorer SPEC`` (``studio score``'s specs), one more row: the draw whose new frames the
scorer finds closest to the window's prompt (a text–video picker instead of a continuity one).
The path through the story follows ``continuity_cost``'s picks either way, so every row judges
the same draws.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from evals import storyboards as sb
from pipelines.scoring import load_scorer
from pipelines.storyboard import (
    DEFAULT_CONTEXT,
    DEFAULT_WINDOW,
    continuity_cost,
    generate_storyboard,
    load_storyboard,
    plan_windows,
)
from studio.generate import load_pipeline
from studio.shipped import scorer_spec

KEYS = ("identity_kept", "jump_ok", "motion")


def dev_stories(n: int, seed: int) -> list[dict]:
    """``n`` builder stories sharing no prompt with the held-out suite or the validation set."""
    taken = {
        sc["prompt"]
        for path in (sb.STORYBOARD_SUITE_PATH, sb.STORYBOARD_VAL_PATH)
        for st in json.loads(path.read_text())
        for sc in st["scenes"]
    }
    stories = sb.build_storyboard_suite(n=3 * n, seed=seed)
    return [st for st in stories if not {sc["prompt"] for sc in st["scenes"]} & taken][:n]


def verdict(given: np.ndarray, new: np.ndarray, before: str, prompt: str) -> dict[str, bool]:
    """The boundary judge on ``given`` → ``new`` (prompts: the given frames' and the window's)."""
    k = len(given)
    result = sb.evaluate_storyboard(
        np.concatenate([given, new]), [(before, 0, k), (prompt, k, k + len(new))]
    )
    boundary = result["boundaries"][0]
    return {
        "identity_kept": bool(boundary["identity_kept"]),
        "jump_ok": bool(boundary["jump_ok"]),
        "motion": bool(result["scenes"][1]["motion"]),
    }


def run(
    pipe,
    stories: list[dict],
    candidates: int,
    window: int = DEFAULT_WINDOW,
    context: int = DEFAULT_CONTEXT,
    scorer=None,
    **kw,
) -> dict[str, dict[str, float]]:
    """Generate ``stories`` with ``pipe`` (``kw``: more ``generate_storyboard`` arguments)
    and tally each kept draw's verdicts per continued window (``scorer``: any
    ``pipelines.scoring`` scorer, for a "scorer" row)."""
    names = ["draw 0", "continuity_cost", *(["scorer"] if scorer is not None else []), "oracle"]
    picks: dict[str, list[dict[str, bool]]] = {name: [] for name in names}
    for entry in tqdm(stories, desc="stories", unit="story"):
        story = load_storyboard(json.dumps({"fps": entry["fps"], "scenes": entry["scenes"]}))
        drawn: list[tuple[np.ndarray, np.ndarray, float]] = []

        def cost(given: np.ndarray, new: np.ndarray, drawn=drawn) -> float:
            drawn.append((given, new, continuity_cost(given, new)))
            return drawn[-1][2]

        generate_storyboard(
            pipe, story, window=window, context=context, candidates=candidates,
            continuity=cost, **kw,
        )  # fmt: skip
        prompts = [s.prompt for s in story.scenes for _ in range(s.frames)]  # per frame
        windows = plan_windows([s.frames for s in story.scenes], window, context)
        later = [w for w in windows if w.cond]
        for i, w in enumerate(later):
            group = drawn[i * candidates : (i + 1) * candidates]
            before, prompt = prompts[w.start - 1], prompts[w.start]
            vs = [verdict(g, n, before, prompt) for g, n, _ in group]
            fails = [sum(not v[k] for k in KEYS) for v in vs]
            picks["draw 0"].append(vs[0])
            picks["continuity_cost"].append(vs[int(np.argmin([c for *_, c in group]))])
            if scorer is not None:
                scores = [scorer.score(n, prompt).score for _, n, _ in group]
                picks["scorer"].append(vs[int(np.argmax(scores))])
            picks["oracle"].append(vs[int(np.argmin(fails))])
    return {
        name: {k: float(np.mean([v[k] for v in vs])) for k in KEYS} | {"windows": len(vs)}
        for name, vs in picks.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--stories", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--seed", type=int, default=777, help="the story builder's seed")
    ap.add_argument(
        "--scorer",
        default=None,
        help="also pick by this scorer (default, shapes:PATH, clip:PATH_OR_ID, xclip:PATH_OR_ID)",
    )
    args = ap.parse_args()
    stories = dev_stories(args.stories, args.seed)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    scorer = load_scorer(scorer_spec(args.scorer)) if args.scorer else None
    table = run(pipe, stories, args.candidates, scorer=scorer)
    n = table["draw 0"]["windows"]
    print(f"{len(stories)} stories, {n} continued windows, {args.candidates} draws each")
    print("| kept draw | " + " | ".join(KEYS) + " |\n|---|" + "---:|" * len(KEYS))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.0%}" for k in KEYS) + " |")
    out = Path("runs") / "storyboard_candidates.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
