"""The appeal letter model: paragraphs of sentences, each tied to the chart resources it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SentenceKind = Literal["fact", "citation", "argument", "gap"]
# Source prefixes that are not chart resources: the payer's criteria file and ptguard's rule tables.
NON_CHART_PREFIXES = ("policy:", "rule:")


@dataclass
class Sentence:
    """One sentence of the letter: its words, the resources behind it, and any gap left to fill."""

    id: str
    text: str
    sources: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    edited: bool = False
    original_text: str | None = None
    kind: SentenceKind = "argument"

    @property
    def chart_sources(self) -> list[str]:
        return [s for s in self.sources if not s.startswith(NON_CHART_PREFIXES)]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "kind": self.kind,
            "sources": list(self.sources),
            "gaps": list(self.gaps),
            "edited": self.edited,
        }
        if self.original_text is not None:
            out["original_text"] = self.original_text
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sentence:
        return cls(
            id=str(data["id"]),
            text=str(data["text"]),
            sources=[str(s) for s in data.get("sources") or []],
            gaps=[str(g) for g in data.get("gaps") or []],
            edited=bool(data.get("edited")),
            original_text=data.get("original_text"),
            kind=data.get("kind", "argument"),
        )


@dataclass
class Paragraph:
    """A run of sentences under an optional heading."""

    id: str
    heading: str | None
    sentences: list[Sentence] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "heading": self.heading, "sentences": [s.to_dict() for s in self.sentences]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Paragraph:
        return cls(
            id=str(data["id"]),
            heading=data.get("heading"),
            sentences=[Sentence.from_dict(s) for s in data.get("sentences") or []],
        )


@dataclass
class ExhibitBlock:
    """Part of an exhibit page: a heading, a paragraph of text, or a table."""

    kind: Literal["heading", "text", "table"]
    text: str = ""
    rows: list[list[str]] = field(default_factory=list)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.text:
            out["text"] = self.text
        if self.rows:
            out["rows"] = self.rows
        if self.source:
            out["source"] = self.source
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExhibitBlock:
        return cls(
            kind=data["kind"],
            text=str(data.get("text", "")),
            rows=[[str(c) for c in r] for r in data.get("rows") or []],
            source=data.get("source"),
        )


@dataclass
class Exhibit:
    """A document attached to the appeal (daily note, evaluation, plan of care, measures table, ...)."""

    label: str
    title: str
    kind: str
    sources: list[str]
    blocks: list[ExhibitBlock] = field(default_factory=list)
    pdf_base64: str | None = None

    def to_dict(self, *, with_content: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "title": self.title, "kind": self.kind, "sources": self.sources}
        if with_content:
            out["blocks"] = [b.to_dict() for b in self.blocks]
            if self.pdf_base64:
                out["pdf_base64"] = self.pdf_base64
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Exhibit:
        return cls(
            label=str(data["label"]),
            title=str(data["title"]),
            kind=str(data["kind"]),
            sources=[str(s) for s in data.get("sources") or []],
            blocks=[ExhibitBlock.from_dict(b) for b in data.get("blocks") or []],
            pdf_base64=data.get("pdf_base64"),
        )


@dataclass
class AppealLetter:
    """The whole letter: addressing, paragraphs, exhibits, the deadline, gaps and notes for the biller."""

    claim_response: str
    claim: str | None
    patient: str | None
    payer_id: str
    payer_name: str
    category: str
    path: str
    level: str | None
    subject: str
    paragraphs: list[Paragraph] = field(default_factory=list)
    exhibits: list[Exhibit] = field(default_factory=list)
    deadline: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    template: str = ""
    generated_at: str = ""
    assembly_ms: float = 0.0
    claim_number: str | None = None  # the number the payer knows the claim by (for the letter's heading)

    def sentences(self) -> list[Sentence]:
        return [s for p in self.paragraphs for s in p.sentences]

    @property
    def gaps(self) -> list[dict[str, str]]:
        return [{"sentence": s.id, "gap": g} for s in self.sentences() for g in s.gaps]

    def sentence(self, sentence_id: str) -> Sentence | None:
        return next((s for s in self.sentences() if s.id == sentence_id), None)

    def plain_text(self) -> str:
        parts: list[str] = []
        for p in self.paragraphs:
            if p.heading:
                parts.append(p.heading)
            parts.append(" ".join(s.text for s in p.sentences))
        return "\n\n".join(parts)

    def to_dict(self, *, with_exhibit_content: bool = True) -> dict[str, Any]:
        return {
            "claim_response": self.claim_response,
            "claim": self.claim,
            "claim_number": self.claim_number,
            "patient": self.patient,
            "payer": {"id": self.payer_id, "name": self.payer_name},
            "category": self.category,
            "path": self.path,
            "level": self.level,
            "subject": self.subject,
            "paragraphs": [p.to_dict() for p in self.paragraphs],
            "exhibits": [e.to_dict(with_content=with_exhibit_content) for e in self.exhibits],
            "gaps": self.gaps,
            "deadline": self.deadline,
            "notes": list(self.notes),
            "template": self.template,
            "generated_at": self.generated_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppealLetter:
        payer = data.get("payer") or {}
        return cls(
            claim_response=str(data["claim_response"]),
            claim=data.get("claim"),
            claim_number=data.get("claim_number"),
            patient=data.get("patient"),
            payer_id=str(payer.get("id", "")),
            payer_name=str(payer.get("name", "")),
            category=str(data.get("category", "")),
            path=str(data.get("path", "")),
            level=data.get("level"),
            subject=str(data.get("subject", "")),
            paragraphs=[Paragraph.from_dict(p) for p in data.get("paragraphs") or []],
            exhibits=[Exhibit.from_dict(e) for e in data.get("exhibits") or []],
            deadline=data.get("deadline"),
            notes=[str(n) for n in data.get("notes") or []],
            template=str(data.get("template", "")),
            generated_at=str(data.get("generated_at", "")),
        )


def edit_sentence(letter: AppealLetter, sentence_id: str, new_text: str, *, keep_sources: bool) -> Sentence:
    """Replace a sentence's words; its source tie is kept only when the editor says so (and the view shows it)."""
    sentence = letter.sentence(sentence_id)
    if sentence is None:
        raise KeyError(sentence_id)
    new_text = " ".join(new_text.split())
    if new_text == sentence.text:
        return sentence
    if sentence.original_text is None:
        sentence.original_text = sentence.text
    sentence.text = new_text
    sentence.edited = True
    if not keep_sources:
        sentence.sources = []
        sentence.kind = "argument"
    if "[GAP" not in new_text:
        sentence.gaps = []
        if sentence.kind == "gap":
            sentence.kind = "fact" if sentence.chart_sources else "argument"
    return sentence
