"""Note-text detection of the 97530 documentation elements, quoting the sentence that satisfies each."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from ptguard.chart import NoteText
from ptguard.errors import RuleFileError
from ptguard.rules.tables import table

_SENTENCE = re.compile(r"(?<=[.!?;])\s+(?=[A-Z0-9\"'(])|\n+")
QUOTE_LIMIT = 240


@dataclass(frozen=True)
class Sentence:
    """One sentence of a note, with the resource it came from."""

    reference: str
    text: str


@dataclass(frozen=True)
class ElementPattern:
    """The compiled regexes for one documentation element and what a miss message says."""

    name: str
    looked_for: str
    regexes: tuple[re.Pattern[str], ...]

    def matches(self, sentence: str) -> bool:
        return all(r.search(sentence) for r in self.regexes)


@cache
def patterns() -> dict[str, ElementPattern]:
    """Element name → compiled pattern, from rules/data/narrative-patterns.yaml."""
    data: dict[str, Any] = table("narrative-patterns")
    out: dict[str, ElementPattern] = {}
    for name, spec in (data.get("elements") or {}).items():
        try:
            regexes = tuple(re.compile(r, re.IGNORECASE) for r in spec["all"])
        except (KeyError, TypeError, re.error) as exc:
            raise RuleFileError(f"elements.{name}: {exc}", where="rules/data/narrative-patterns.yaml") from None
        out[name] = ElementPattern(name, str(spec.get("looked_for", name)), regexes)
    return out


@cache
def exercise_pattern() -> re.Pattern[str]:
    return re.compile(str(table("narrative-patterns")["exercise_only"]), re.IGNORECASE)


def sentences(notes: list[NoteText]) -> list[Sentence]:
    """Split every note into sentences, keeping each one's source reference."""
    out: list[Sentence] = []
    for note in notes:
        for part in _SENTENCE.split(note.text):
            part = " ".join(part.split())
            if len(part) > 2:
                out.append(Sentence(note.reference, part))
    return out


def quote(text: str) -> str:
    """A sentence trimmed for quoting in a message."""
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 1].rstrip() + "…"


def find(element: str, sents: list[Sentence]) -> list[Sentence]:
    """Sentences that satisfy an element (first few only)."""
    pattern = patterns().get(element)
    if pattern is None:
        raise RuleFileError(f"unknown narrative element {element!r}", where="rules/data/narrative-patterns.yaml")
    return [s for s in sents if pattern.matches(s.text)][:3]


def exercise_sentences(sents: list[Sentence]) -> list[Sentence]:
    """Sentences that read like isolated exercise (sets, reps, strengthening, bands)."""
    pat = exercise_pattern()
    return [s for s in sents if pat.search(s.text)]
