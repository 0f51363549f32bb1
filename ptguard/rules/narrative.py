"""Note-text detection of the 97530 documentation elements, quoting the sentence that satisfies each."""

from __future__ import annotations

import importlib
import re
from bisect import bisect_right
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
    """One sentence of a note, with the resource it came from (and its lower-cased form for matching)."""

    reference: str
    text: str
    lower: str = ""


@dataclass(frozen=True)
class ElementPattern:
    """The compiled regexes for one documentation element and what a miss message says."""

    name: str
    looked_for: str
    regexes: tuple[re.Pattern[str], ...]

    def matches(self, sentence: str) -> bool:
        """Match against a sentence already lower-cased (patterns are compiled lower-case)."""
        return all(r.search(sentence) for r in self.regexes)


_UPPER_ESCAPE = re.compile(r"\\[A-Z]")


def _compile(pattern: str) -> re.Pattern[str]:
    """Lower-case patterns run on lower-cased text much faster than IGNORECASE ones."""
    if _UPPER_ESCAPE.search(pattern):
        return re.compile(pattern, re.IGNORECASE)
    return re.compile(pattern.lower())


# ------------------------------------------------------------------ literal prefilter (same results, less regex)
#
# Python's regex engine cannot skip ahead in a pattern that starts with `\b` (all of ours do): it tries every
# alternative at every word boundary of the text. But most matches must contain one of a few literal strings
# (`\b(lift(s|ed)?|carry|...)` → "lift", "carry", …). str.find locates those at C speed; only the sentences that
# hold one are searched with the regex. Patterns for which that could differ from searching the joined text
# (anchors, lookarounds, \B, negated classes, case-insensitive parts) get no prefilter.

_SRE: Any = importlib.import_module("re._parser")
_C: Any = importlib.import_module("re._constants")
_REPEATS = frozenset({_C.MAX_REPEAT, _C.MIN_REPEAT, _C.POSSESSIVE_REPEAT})
_SAFE_CATEGORIES = frozenset({_C.CATEGORY_DIGIT, _C.CATEGORY_WORD, _C.CATEGORY_SPACE})


def _within_sentence(items: Any) -> bool:
    """True when a parsed pattern only reads the text it matches and can never match a NUL (the joiner)."""
    for op, av in items:
        if op is _C.LITERAL:
            if av == 0:
                return False
        elif op is _C.IN:
            for iop, iav in av:
                if iop is _C.LITERAL and iav != 0:
                    continue
                if iop is _C.RANGE and iav[0] > 0:
                    continue
                if iop is _C.CATEGORY and iav in _SAFE_CATEGORIES:
                    continue
                return False
        elif op is _C.AT:
            if av is not _C.AT_BOUNDARY:
                return False
        elif op is _C.SUBPATTERN:
            if av[1] or av[2] or not _within_sentence(av[3]):  # local flags, e.g. (?i:...)
                return False
        elif op is _C.BRANCH:
            if not all(_within_sentence(alt) for alt in av[1]):
                return False
        elif op in _REPEATS:
            if not _within_sentence(av[2]):
                return False
        elif op is _C.ATOMIC_GROUP:
            if not _within_sentence(av):
                return False
        else:  # ANY, NOT_LITERAL, lookarounds, group references, conditionals
            return False
    return True


def _better(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    """The more selective of two literal sets: longer shortest string, then fewer strings."""
    if a is None or b is None:
        return a if b is None else b
    ka, kb = (min(map(len, a)), -len(a)), (min(map(len, b)), -len(b))
    return a if ka >= kb else b


def _required(items: Any) -> frozenset[str] | None:
    """Strings one of which occurs in every match of a parsed pattern (None when there is no such set)."""
    best: frozenset[str] | None = None
    run: list[str] = []
    for op, av in items:
        if op is _C.LITERAL:
            run.append(chr(av))
            continue
        if op is _C.AT:  # zero-width: literals on both sides stay adjacent
            continue
        if run:
            best = _better(best, frozenset({"".join(run)}))
            run = []
        if op is _C.SUBPATTERN:
            best = _better(best, _required(av[3]))
        elif op is _C.ATOMIC_GROUP:
            best = _better(best, _required(av))
        elif op is _C.BRANCH:
            alternatives = [_required(alt) for alt in av[1]]
            if all(alt is not None for alt in alternatives):
                best = _better(best, frozenset().union(*alternatives))  # type: ignore[arg-type]
        elif op in _REPEATS and av[0] >= 1:
            best = _better(best, _required(av[2]))
        elif op is _C.IN and all(iop is _C.LITERAL for iop, _ in av):
            best = _better(best, frozenset(chr(iav) for _, iav in av))
    if run:
        best = _better(best, frozenset({"".join(run)}))
    return best


@cache
def needles(regex: re.Pattern[str]) -> tuple[str, ...] | None:
    """Literal strings one of which is in every match of `regex`, for the prefilter; None: search everything."""
    if regex.flags & (re.IGNORECASE | re.MULTILINE | re.DOTALL | re.VERBOSE):
        return None
    try:
        parsed = _SRE.parse(regex.pattern, regex.flags)
    except Exception:
        return None
    if not _within_sentence(parsed.data):
        return None
    found = _required(parsed.data)
    if not found:
        return None
    # A string that contains another one adds nothing: any text holding it holds the shorter one too.
    return tuple(sorted(n for n in found if not any(m != n and m in n for m in found)))


@cache
def patterns() -> dict[str, ElementPattern]:
    """Element name → compiled pattern, from rules/data/narrative-patterns.yaml."""
    data: dict[str, Any] = table("narrative-patterns")
    out: dict[str, ElementPattern] = {}
    for name, spec in (data.get("elements") or {}).items():
        try:
            regexes = tuple(_compile(r) for r in spec["all"])
        except (KeyError, TypeError, re.error) as exc:
            raise RuleFileError(f"elements.{name}: {exc}", where="rules/data/narrative-patterns.yaml") from None
        out[name] = ElementPattern(name, str(spec.get("looked_for", name)), regexes)
    return out


@cache
def exercise_pattern() -> re.Pattern[str]:
    return _compile(str(table("narrative-patterns")["exercise_only"]))


def sentences(notes: list[NoteText]) -> list[Sentence]:
    """Split every note into sentences, keeping each one's source reference."""
    out: list[Sentence] = []
    for note in notes:
        for part in _SENTENCE.split(note.text):
            part = " ".join(part.split())
            if len(part) > 2:
                out.append(Sentence(note.reference, part, part.lower()))
    return out


def quote(text: str) -> str:
    """A sentence trimmed for quoting in a message."""
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 1].rstrip() + "…"


class NoteIndex:
    """A visit's sentences, each pattern run once over all of them (sentences joined by NUL)."""

    def __init__(self, notes: list[NoteText]) -> None:
        self.sentences = sentences(notes)
        self._joined = "\x00".join(s.lower for s in self.sentences)
        self._starts: list[int] = []
        pos = 0
        for s in self.sentences:
            self._starts.append(pos)
            pos += len(s.lower) + 1
        self._regex_hits: dict[int, set[int]] = {}
        self._found: dict[str, list[Sentence]] = {}

    def _hits(self, regex: re.Pattern[str]) -> set[int]:
        """Indices of the sentences in which a regex matches."""
        key = id(regex)
        if key not in self._regex_hits:
            lits = needles(regex)
            if lits is None:  # no literal every match needs: search each sentence (anchors keep their meaning)
                hits = {i for i, sentence in enumerate(self.sentences) if regex.search(sentence.lower)}
            else:
                hits = {i for i in self._holding(lits) if regex.search(self.sentences[i].lower)}
            self._regex_hits[key] = hits
        return self._regex_hits[key]

    def _holding(self, lits: tuple[str, ...]) -> set[int]:
        """Indices of the sentences that contain at least one of the strings."""
        joined, starts, out = self._joined, self._starts, set()
        count = len(starts)
        for lit in lits:
            pos = joined.find(lit)
            while pos >= 0:
                i = bisect_right(starts, pos) - 1
                out.add(i)
                if i + 1 >= count:
                    break
                pos = joined.find(lit, starts[i + 1])
        return out

    def find(self, element: str) -> list[Sentence]:
        """Sentences that satisfy an element (the first three)."""
        if element not in self._found:
            pattern = patterns().get(element)
            if pattern is None:
                raise RuleFileError(
                    f"unknown narrative element {element!r}", where="rules/data/narrative-patterns.yaml"
                )
            common = set.intersection(*(self._hits(r) for r in pattern.regexes)) if self.sentences else set()
            rank = ranking()
            scored = [(self._score(i, element, rank), i) for i in common]
            kept = sorted((-score, i) for score, i in scored if score > rank.drop_at_or_below)
            self._found[element] = [self.sentences[i] for _, i in kept[:3]]
        return self._found[element]

    def _score(self, i: int, element: str, rank: Ranking) -> int:
        score = 0
        for weight in (*rank.weights, *rank.element_weights.get(element, ())):
            if self._hit(weight.regex, i) and not (weight.unless is not None and self._hit(weight.unless, i)):
                score += weight.weight
        return score

    def _hit(self, regex: re.Pattern[str], i: int) -> bool:
        return i in self._hits(regex)


@dataclass(frozen=True)
class Weight:
    """A pattern that raises or lowers a candidate sentence's score (unless another pattern also matches)."""

    regex: re.Pattern[str]
    weight: int
    unless: re.Pattern[str] | None


@dataclass(frozen=True)
class Ranking:
    """How candidate sentences are ranked and which are too weak to count (narrative-patterns.yaml `ranking`)."""

    drop_at_or_below: int
    weights: tuple[Weight, ...]
    element_weights: dict[str, tuple[Weight, ...]]


def _weights(items: Any, where: str) -> tuple[Weight, ...]:
    out = []
    for i, item in enumerate(items or []):
        try:
            unless = _compile(str(item["unless"])) if item.get("unless") else None
            out.append(Weight(_compile(str(item["pattern"])), int(item["weight"]), unless))
        except (KeyError, TypeError, ValueError, re.error) as exc:
            raise RuleFileError(f"{where}[{i}]: {exc}", where="rules/data/narrative-patterns.yaml") from None
    return tuple(out)


@cache
def ranking() -> Ranking:
    """The ranking rules, compiled once."""
    data: dict[str, Any] = table("narrative-patterns").get("ranking") or {}
    return Ranking(
        int(data.get("drop_at_or_below", -100)),
        _weights(data.get("weights"), "ranking.weights"),
        {k: _weights(v, f"ranking.element_weights.{k}") for k, v in (data.get("element_weights") or {}).items()},
    )


def exercise_sentences(sents: list[Sentence]) -> list[Sentence]:
    """Sentences that read like isolated exercise (sets, reps, strengthening, bands)."""
    pat = exercise_pattern()
    return [s for s in sents if pat.search(s.lower)]
