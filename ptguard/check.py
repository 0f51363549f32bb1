"""The documentation check as a function: files in, one Evaluation per therapy encounter out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptguard.chart import build_visits
from ptguard.errors import InputError, NotFoundError
from ptguard.fhir.load import LoadResult, load_path
from ptguard.findings import Finding, data_quality
from ptguard.rules.criteria_files import DEFAULT_CRITERIA_DIR
from ptguard.rules.engine import Evaluation, evaluate
from ptguard.rules.units import Method

# Encounters whose resources get full R4 validation before the check switches to its own light checks.
DEFAULT_VALIDATE_LIMIT = 100


@dataclass
class CheckReport:
    """Everything `ptguard check` says about its input."""

    sources: list[str]
    evaluations: list[Evaluation] = field(default_factory=list)
    data_quality: list[Finding] = field(default_factory=list)
    resource_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": self.sources,
            "resources": self.resource_count,
            "encounters": [e.to_dict() for e in self.evaluations],
            "data_quality": [f.to_dict() for f in self.data_quality],
        }


def expand_inputs(paths: list[str | Path]) -> list[Path]:
    """Files as given; a directory stands for the *.json and *.ndjson files directly inside it."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(x for x in p.iterdir() if x.suffix in {".json", ".ndjson"} and x.is_file())
            if not found:
                raise InputError("directory holds no .json or .ndjson files", where=str(p))
            out.extend(found)
        else:
            out.append(p)
    return out


def load_inputs(paths: list[str | Path]) -> LoadResult:
    """Load every input file into one collection (references resolve across files)."""
    files = expand_inputs(paths)
    merged = LoadResult(source=", ".join(str(f) for f in files))
    for f in files:
        part = load_path(f)
        merged.resources.extend(part.resources)
        merged.full_urls.extend(part.full_urls)
        merged.findings.extend(part.findings)
    return merged


def run_check(
    paths: list[str | Path],
    *,
    encounter: str | None = None,
    payer: str | None = None,
    method: Method | None = None,
    criteria_dir: Path = DEFAULT_CRITERIA_DIR,
    payer_map: Path | None = None,
    validate_limit: int | None = DEFAULT_VALIDATE_LIMIT,
) -> CheckReport:
    """Load, assemble visits, evaluate each against its payer's criteria."""
    loaded = load_inputs(paths)
    report = CheckReport(sources=[str(p) for p in expand_inputs(paths)], data_quality=list(loaded.findings))
    report.resource_count = len(loaded.resources)
    if not loaded.resources:
        why = loaded.findings[0].message if loaded.findings else "no FHIR resources in the input"
        raise InputError(why, where=loaded.source)
    _builder, visits = build_visits(
        loaded,
        encounter_id=encounter,
        payer_override=payer,
        payer_map=payer_map,
        validate_limit=validate_limit,
    )
    if encounter is not None and not visits:
        raise NotFoundError(f"no Encounter with id {encounter!r} in the input", where=loaded.source)
    if validate_limit is not None and len(visits) > validate_limit > 0:
        report.data_quality.append(
            data_quality(
                "validation-sampled",
                f"full FHIR R4 validation ran on the first {validate_limit} of {len(visits)} encounters "
                "(use --validate all to validate every one)",
                loaded.source,
            )
        )
    for visit in visits:
        report.evaluations.append(evaluate(visit, payer=payer, criteria_dir=criteria_dir, method=method))
    return report
