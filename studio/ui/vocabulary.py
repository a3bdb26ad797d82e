"""The prompt help of the Generate page: word chips, example prompts and the warning about
words the model never saw. No streamlit here; the words come from the renderer's caption
grammar (:func:`world.shapes_world.caption_vocabulary`), so the help says what the model was
trained on and nothing else.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from world.shapes_world import (
    EXCLUDED_PAIRS,
    IMAGE_ONLY_COLORS,
    ClipSpec,
    ObjectSpec,
    caption,
    caption_vocabulary,
    caption_words,
)

# the order a prompt says them in: "a small red circle moving left on a black background"
SLOTS = ("size", "colour", "shape", "motion", "background")
_OBJECT = ("size", "colour", "shape")
_TOKEN = re.compile(r"<ref\d+>|[A-Za-z]+")


@dataclass(frozen=True)
class Chip:
    slot: str  # one of SLOTS
    value: str  # the grammar's value: "left", "black"
    label: str  # what the chip shows
    phrase: str  # what it puts in the prompt: "moving left", "on a black background"


def chips() -> dict[str, list[Chip]]:
    """Slot → its chips, in the grammar's order; a chip's phrase is the value's plain form."""
    vocab = caption_vocabulary()
    return {
        slot: [
            Chip(slot, value, phrases[0] if slot == "motion" else value, phrases[0])
            for value, phrases in vocab[slot].items()
        ]
        for slot in SLOTS
    }


def synonyms(slot: str) -> list[str]:
    """Every phrasing of ``slot`` the model learnt, the plain ones first."""
    vocab = caption_vocabulary()[slot]
    plain = [ps[0] for ps in vocab.values()]
    return plain + [p for ps in vocab.values() for p in ps[1:] if p not in plain]


@functools.cache
def _phrase_pattern(slot: str) -> re.Pattern:
    """Any phrasing of any value of ``slot``, as whole words, longest first."""
    phrases = sorted(
        {p for ps in caption_vocabulary()[slot].values() for p in ps}, key=len, reverse=True
    )
    return re.compile(r"\b(" + "|".join(re.escape(p) for p in phrases) + r")\b", re.IGNORECASE)


def _fix_articles(text: str) -> str:
    """ "a orange" → "an orange", "an red" → "a red" (the grammar's one vowel is orange)."""
    text = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)
    return re.sub(r"\b([Aa])n (?=[^aeiouAEIOU\s<])", r"\1 ", text)


def insert(prompt: str, chip: Chip) -> str:
    """``prompt`` with ``chip``'s phrase in its place in the grammar.

    A phrase of the same slot already in the prompt is replaced (a second colour chip
    changes the colour); otherwise the phrase goes where the grammar puts it: before the
    slots that follow it in :data:`SLOTS`, or at the end. An object word starting an empty
    prompt gets its article.
    """
    prompt = " ".join(prompt.split())
    found = _phrase_pattern(chip.slot).search(prompt)
    if found:
        return _fix_articles(prompt[: found.start()] + chip.phrase + prompt[found.end() :])
    later = SLOTS[SLOTS.index(chip.slot) + 1 :]
    starts = [m.start() for s in later if (m := _phrase_pattern(s).search(prompt))]
    at = min(starts, default=len(prompt))
    before, after = prompt[:at].rstrip(), prompt[at:].lstrip()
    if chip.slot in _OBJECT and not re.search(r"\b(a|an)$", before, re.IGNORECASE):
        if not before or not any(_phrase_pattern(s).search(before) for s in _OBJECT):
            before = f"{before} a".strip()
    return _fix_articles(" ".join(p for p in (before, chip.phrase, after) if p))


def unknown_words(prompt: str) -> list[str]:
    """The words of ``prompt`` no training caption contains, in order, each once
    (``<refN>`` placeholders are the Elements page's and count as known)."""
    known = caption_words()
    seen: dict[str, None] = {}
    for token in _TOKEN.findall(prompt):
        word = token.lower()
        if not word.startswith("<ref") and word not in known:
            seen.setdefault(word, None)
    return list(seen)


def unseen_pairs(prompt: str) -> list[str]:
    """The colour-shape pairs of ``prompt`` that training leaves out on purpose
    (``EXCLUDED_PAIRS``): the model has never seen, say, an orange triangle move."""
    sizes = [w for ws in caption_vocabulary()["size"].values() for w in ws]
    words = [w.lower() for w in _TOKEN.findall(prompt) if w.lower() not in sizes]
    pairs = zip(words, words[1:], strict=False)
    return [f"{c} {s}" for c, s in dict.fromkeys(pairs) if (c, s) in EXCLUDED_PAIRS]


def warning(prompt: str) -> str | None:
    """One sentence for the page about what the model will not understand, or None."""
    parts = []
    unknown = unknown_words(prompt)
    if unknown:
        listed = ", ".join(f"“{w}”" for w in unknown)
        parts.append(
            f"The model has never seen {listed}: it learnt from captions made of the words "
            "under *Words the model knows*, so it will ignore or misread "
            + ("this word." if len(unknown) == 1 else "these words.")
        )
    unseen = unseen_pairs(prompt)
    if unseen:
        listed = ", ".join(f"“{p}”" for p in unseen)
        parts.append(f"Training never showed {listed}: expect another colour or shape.")
    words = {w.lower() for w in _TOKEN.findall(prompt)}
    for colour in sorted(IMAGE_ONLY_COLORS & words):
        parts.append(f"“{colour}” was only in still images in training, never in a clip.")
    return " ".join(parts) or None


# Example clips, captioned by the renderer's own grammar (seeded: the same every run).
_EXAMPLES = (
    ClipSpec([ObjectSpec("circle", "red", "small", "left", 40, 24)], "black"),
    ClipSpec([ObjectSpec("square", "yellow", "large", "up", 20, 30)], "gray"),
    ClipSpec([ObjectSpec("triangle", "green", "large", "right", 8, 20)], "white"),
    ClipSpec([ObjectSpec("square", "blue", "small", "still", 24, 24)], "beige"),
    ClipSpec(
        [
            ObjectSpec("circle", "orange", "small", "down", 8, 4),
            ObjectSpec("square", "blue", "large", "left", 40, 30),
        ],
        "black",
    ),
)


def examples() -> list[str]:
    """A few prompts in the model's own words, to click instead of typing."""
    return [caption(spec, np.random.default_rng(i)) for i, spec in enumerate(_EXAMPLES)]
