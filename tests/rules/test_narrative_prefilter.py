"""The literal prefilter in front of the note-text regexes never changes which sentences match."""

from __future__ import annotations

import random
import re

from ptguard.chart import NoteText, build_visits
from ptguard.check import load_inputs
from ptguard.rules import narrative
from tests.conftest import FIXTURES


def _all_regexes() -> list[re.Pattern[str]]:
    out = [r for p in narrative.patterns().values() for r in p.regexes]
    rank = narrative.ranking()
    out += [w.regex for w in rank.weights] + [w.regex for ws in rank.element_weights.values() for w in ws]
    out += [w.unless for w in rank.weights if w.unless is not None]
    return out


def _corpus() -> list[NoteText]:
    _b, visits = build_visits(load_inputs([FIXTURES]), validate_limit=0)
    notes = [n for v in visits for n in v.notes]
    words = " ".join(n.text for n in notes).split()
    rng = random.Random(97530)
    for i in range(300):  # shuffled words make sentences the fixtures never wrote
        notes.append(
            NoteText(f"Random/{i}", " ".join(rng.choice(words) for _ in range(rng.randint(3, 25))) + ".", "note")
        )
    return notes


def test_prefiltered_hits_equal_plain_regex_hits() -> None:
    index = narrative.NoteIndex(_corpus())
    compared = 0
    for regex in _all_regexes():
        expected = {i for i, s in enumerate(index.sentences) if regex.search(s.lower)}
        assert index._hits(regex) == expected, regex.pattern[:60]
        compared += len(index.sentences)
    assert compared > 10_000


def test_needles_are_in_every_match() -> None:
    for regex in _all_regexes():
        lits = narrative.needles(regex)
        if not lits:
            continue
        for sentence in (
            "lifting a 15 lb crate toward goal 2",
            "reached overhead; tolerated well 3/10",
            "set-up: a step",
        ):
            if regex.search(sentence):
                assert any(lit in sentence for lit in lits), (regex.pattern[:40], lits)
