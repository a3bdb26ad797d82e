"""The WordNet widening of the up/down caption slots (world/wordnet_phrasings.py).

The rule runs on a tiny WordNet database written here in the wndb(5WN) format, so the
selection (motion senses only, conflicts dropped, two forms per lemma) is checked without
the 10 MB database; the vendored table is checked for the shape training relies on.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from world.shapes_world import MOTION_PHRASES, ClipSpec, ObjectSpec, caption
from world.wordnet_phrasings import (
    HEADS,
    build_table,
    ing_form,
    load_table,
    main,
    phrasings,
    third_person,
)


def _write_pos(dict_dir, pos_name, synsets):
    """synsets: list of (lexfile, [lemmas]); writes data.<pos> and index.<pos>."""
    header = "  1 This is a test database.\n"
    data, offsets, offset = [], [], len(header.encode())
    for lexfile, words in synsets:
        body = f"{offset:08d} {lexfile:02d} v {len(words):02x} "
        body += " ".join(f"{w} 0" for w in words) + " 000 | a gloss\n"
        data.append(body)
        offsets.append(offset)
        offset += len(body.encode())
    (dict_dir / f"data.{pos_name}").write_text(header + "".join(data))
    index: dict[str, list[int]] = {}
    for off, (_, words) in zip(offsets, synsets, strict=True):
        for w in words:
            index.setdefault(w.lower(), []).append(off)
    lines = [
        f"{w} v {len(offs)} 0 {len(offs)} 0 " + " ".join(f"{o:08d}" for o in offs) + "\n"
        for w, offs in sorted(index.items())
    ]
    (dict_dir / f"index.{pos_name}").write_text(header + "".join(lines))


@pytest.fixture
def tiny_wordnet(tmp_path):
    verbs = [
        (38, ["rise", "go_up", "Ascend"]),  # a motion sense: kept (lemmas lower-cased)
        (30, ["rise", "increase"]),  # "prices rise": another file, left out
        (38, ["climb", "clamber"]),
        (38, ["fall", "descend", "sink"]),
        (40, ["fall", "devolve"]),  # "the estate fell to her": left out
        (38, ["drop", "plummet", "wobble"]),
        (38, ["wobble", "rise"]),  # a lemma under both directions: dropped from both
    ]
    adverbs = [(2, ["upward", "upwards"]), (2, ["downward", "downwards"])]
    _write_pos(tmp_path, "verb", verbs)
    _write_pos(tmp_path, "adv", adverbs)
    return tmp_path


def test_rule_keeps_motion_senses_and_both_grammar_forms(tiny_wordnet):
    table = build_table(tiny_wordnet)
    up, down = set(table["up"]), set(table["down"])
    assert {"rises", "rising", "goes up", "going up", "ascends", "ascending"} <= up
    assert {"climbs", "clambering", "moving upwards", "moves upward"} <= up
    assert {"falls", "descending", "sinks", "sinking", "plummets", "dropping"} <= down
    assert {"moving downwards", "moves downward"} <= down
    for left_out in ("increases", "increasing", "devolves", "devolving"):
        assert left_out not in up | down
    assert not any("wobbl" in p for p in up | down)  # under both: dropped
    assert not up & down
    assert len(table["up"]) == len(up)  # no phrasing listed twice


def test_main_writes_the_table(tiny_wordnet, tmp_path, capsys):
    out = tmp_path / "table.json"
    main([str(tiny_wordnet), "--out", str(out)])
    assert load_table(out) == {d: tuple(build_table(tiny_wordnet)[d]) for d in HEADS}
    assert "up:" in capsys.readouterr().out


def test_missing_head_is_a_clear_error(tmp_path):
    _write_pos(tmp_path, "verb", [(38, ["rise"])])
    _write_pos(tmp_path, "adv", [(2, ["upward"])])
    with pytest.raises(KeyError, match="'climb' is not a verb"):
        build_table(tmp_path)


@pytest.mark.parametrize(
    ("verb", "third", "ing"),
    [
        ("rise", "rises", "rising"),
        ("go", "goes", "going"),
        ("drop", "drops", "dropping"),
        ("get", "gets", "getting"),
        ("fall", "falls", "falling"),
        ("sink", "sinks", "sinking"),
        ("climb", "climbs", "climbing"),
        ("descend", "descends", "descending"),
        ("lie", "lies", "lying"),
        ("fly", "flies", "flying"),
    ],
)
def test_inflection(verb, third, ing):
    assert third_person(verb) == third
    assert ing_form(verb) == ing


def test_multiword_lemmas_inflect_their_first_word():
    assert phrasings("v", "come_up") == ["comes up", "coming up"]
    assert phrasings("r", "downwards") == ["moving downwards", "moves downwards"]


def test_vendored_table():
    table = load_table()
    assert set(table) == {"up", "down"}
    for direction, phrases in table.items():
        assert len(phrases) >= 10 and len(set(phrases)) == len(phrases)
        assert all(p and p == p.strip().lower() for p in phrases)
        opposite = "down" if direction == "up" else "up"
        assert not set(phrases) & set(table[opposite])
        assert not set(phrases) & set(MOTION_PHRASES[opposite])


def _spec(motion):
    return ClipSpec([ObjectSpec("square", "blue", "large", motion, 5, 30)], "gray")


def _motion_phrase(text):
    """'a large blue square rises against a gray backdrop' → 'rises'."""
    return re.split(r" (?:on|against|over) a gray ", text.split(" square ")[1])[0]


def test_caption_wordnet_prob():
    table = load_table()
    for motion in ("up", "down"):
        plain = {caption(_spec(motion), np.random.default_rng(i)) for i in range(100)}
        assert all(any(p in t for p in MOTION_PHRASES[motion]) for t in plain)
        wide = [
            caption(_spec(motion), np.random.default_rng(i), wordnet_prob=1.0) for i in range(100)
        ]
        phrase = {_motion_phrase(t) for t in wide}
        assert phrase <= set(table[motion]) and len(phrase) >= 8
    # other motions spend no draw on it: their captions are the grammar's, draw for draw
    for motion in ("left", "still"):
        for i in range(20):
            assert caption(_spec(motion), np.random.default_rng(i), wordnet_prob=1.0) == caption(
                _spec(motion), np.random.default_rng(i)
            )
    # about half of the up captions from the table at 0.5
    half = [caption(_spec("up"), np.random.default_rng(i), wordnet_prob=0.5) for i in range(400)]
    base = [t for t in half if _motion_phrase(t) in MOTION_PHRASES["up"]]
    assert 120 < len(base) < 280


def test_training_batches_use_the_table_when_asked():
    import torch

    from train.config import DiTTrainConfig, StageConfig
    from train.latent_cache import LatentCache
    from train.train_dit import image_batch, video_batch

    spec = {**_spec("down").to_dict(), "kind": "video1"}
    cache = LatentCache(
        torch.zeros(2, 2, 4, 2, 2).half(), torch.zeros(1, 2, 2, 2).half(), [spec] * 2, [spec]
    )
    stage = StageConfig(name="clips", steps=1, frames=4, batch_size=32)
    table = set(load_table()["down"])
    for prob, expect_table in ((0.0, False), (1.0, True)):
        cfg = DiTTrainConfig()
        cfg.data.wordnet_phrasing_prob, cfg.data.reverse_prob = prob, 0.0
        _, captions, _, _, _ = video_batch(cache, stage, cfg, np.random.default_rng(0))
        from_table = [_motion_phrase(t) in table - set(MOTION_PHRASES["down"]) for t in captions]
        assert any(from_table) == expect_table
        assert all(_motion_phrase(t) in table for t in captions) == expect_table
    ends = (torch.zeros(1, 2, 2, 2, 2), [spec])
    _, captions = image_batch(cache, 32, np.random.default_rng(0), ends, 1.0, wordnet_prob=1.0)
    # first frames say "down", last frames the reversed "up": both from the table
    both = table | set(load_table()["up"])
    assert all(_motion_phrase(t) in both for t in captions)
