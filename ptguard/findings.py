"""Finding: one result of a check (rule or data quality), with its evidence and the fix to make."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["met", "missing", "at-risk"]
Severity = Literal["info", "warning", "critical"]
SEVERITY_ORDER: dict[str, int] = {"critical": 0, "warning": 1, "info": 2}


# Evidence texts that describe what was done with a resource rather than quote it.
SEARCHED = "searched; nothing matched"
NOTE_PRESENT = "note text"
NOT_QUOTES = frozenset({SEARCHED, NOTE_PRESENT})


@dataclass(frozen=True)
class Evidence:
    """A piece of the chart a finding rests on: the resource and the words or values quoted from it."""

    reference: str
    text: str

    @property
    def is_quote(self) -> bool:
        """False for the placeholders that say a resource was searched or present, which quote nothing from it."""
        return self.text not in NOT_QUOTES

    def to_dict(self) -> dict[str, str]:
        return {"reference": self.reference, "text": self.text}


@dataclass(frozen=True)
class Citation:
    """The policy or rule a finding applies: its name, number, and where to read it."""

    source: str
    number: str | None = None
    url: str | None = None

    def label(self) -> str:
        return f"{self.source} {self.number}".strip() if self.number else self.source

    def to_dict(self) -> dict[str, str]:
        out = {"source": self.source}
        if self.number:
            out["number"] = self.number
        if self.url:
            out["url"] = self.url
        return out


@dataclass(frozen=True)
class Finding:
    """One checked criterion for one encounter."""

    id: str
    title: str
    status: Status
    severity: Severity
    message: str
    evidence: tuple[Evidence, ...] = ()
    citation: Citation | None = None
    fix: str | None = None
    category: str = "documentation"
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_problem(self) -> bool:
        return self.status != "met"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "category": self.category,
            "status": self.status,
            "severity": self.severity,
            "message": self.message,
            "evidence": [e.to_dict() for e in self.evidence],
        }
        if self.citation:
            out["citation"] = self.citation.to_dict()
        if self.fix:
            out["fix"] = self.fix
        if self.data:
            out["data"] = self.data
        return out


def data_quality(ident: str, message: str, reference: str, *, severity: Severity = "info") -> Finding:
    """A finding about the input itself (unreadable resource, missing reference, invalid field)."""
    return Finding(
        id=f"data-quality.{ident}",
        title="Data quality",
        status="at-risk",
        severity=severity,
        message=message,
        evidence=(Evidence(reference, message),),
        category="data-quality",
    )


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Problems first, critical before warning before info; stable otherwise."""
    return sorted(findings, key=lambda f: (not f.is_problem, SEVERITY_ORDER[f.severity]))
