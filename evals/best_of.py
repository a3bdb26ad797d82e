"""How well a scorer picks among generated samples: the judge's verdicts against the scorer's
choice, for a batch folder with several samples per prompt (``studio batch --samples N``).

For every prompt with N judged samples, the judge's all-correct verdict of
* the first sample (what a user gets without best-of-N),
* the sample the scorer ranks highest (best-of-N by the scorer),
* the sample it ranks lowest (the worst pick: how much the ranking matters at all),
* the oracle (a correct sample whenever there is one);
per category and overall, with the share of the first→oracle gap the pick closes, and the
ROC AUC of the scores against the verdicts (pairs of one correct and one wrong sample, ties
counted half). The scores come from the caller (``studio eval scorer --generated``), so this
module needs no model.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

PICKS = ("first", "pick", "worst", "oracle")


def auc(scores: list[float], labels: list[bool]) -> float | None:
    """ROC AUC (Mann-Whitney): P(score of a correct sample > score of a wrong one), ties ½;
    None without both kinds."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def best_of_report(items: list[dict[str, Any]], scores: dict[str, float]) -> dict[str, Any]:
    """``items``: the judge's per-video items (``evals.shapes.evaluate_dir``'s ``items``: prompt,
    sample, video, category, status, all_correct); ``scores``: video → scorer score. Prompts
    with fewer than two judged samples are left out (nothing to pick among)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        if item.get("status") == "ok" and item["video"] in scores:
            groups[item["prompt"]].append(item)
    per_category: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    all_scores, all_labels = [], []
    samples = set()
    for group in groups.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda it: it["sample"])
        samples.add(len(group))
        ranked = sorted(group, key=lambda it: scores[it["video"]])
        verdicts = {
            "first": group[0]["all_correct"],
            "pick": ranked[-1]["all_correct"],
            "worst": ranked[0]["all_correct"],
            "oracle": any(it["all_correct"] for it in group),
        }
        for category in (group[0].get("category") or "uncategorized", "overall"):
            for pick, ok in verdicts.items():
                per_category[category][pick].append(bool(ok))
        all_scores += [scores[it["video"]] for it in group]
        all_labels += [bool(it["all_correct"]) for it in group]

    table = {}
    for category, picks in per_category.items():
        row: dict[str, Any] = {"prompts": len(picks["first"])}
        for pick in PICKS:
            row[pick] = round(sum(picks[pick]) / len(picks[pick]), 4)
        gap = row["oracle"] - row["first"]
        row["gap_closed"] = round((row["pick"] - row["first"]) / gap, 4) if gap > 0 else None
        table[category] = row
    area = auc(all_scores, all_labels)
    return {
        "samples_per_prompt": sorted(samples),
        "categories": dict(sorted(table.items(), key=lambda kv: (kv[0] == "overall", kv[0]))),
        "auc": None if area is None else round(area, 4),
        "videos": len(all_scores),
    }


def best_of_markdown(report: dict[str, Any]) -> str:
    lines = [
        "| category | prompts | first | scorer's pick | worst pick | oracle | gap closed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for category, row in report["categories"].items():
        closed = "—" if row["gap_closed"] is None else f"{row['gap_closed']:.0%}"
        name = f"**{category}**" if category == "overall" else category
        lines.append(
            f"| {name} | {row['prompts']} | {row['first']:.0%} | {row['pick']:.0%} | "
            f"{row['worst']:.0%} | {row['oracle']:.0%} | {closed} |"
        )
    area = "—" if report["auc"] is None else f"{report['auc']:.3f}"
    lines.append("")
    lines.append(
        f"All-correct by the judge; {report['videos']} videos, "
        f"{report['samples_per_prompt']} samples per prompt; pick AUC against the judge's "
        f"verdict: {area}."
    )
    return "\n".join(lines)
