"""The documentation check as a function: files in, one Evaluation per therapy encounter out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptguard.chart import build_visits
from ptguard.errors import MALFORMED_DATA, InputError, NotFoundError, debugging
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


INPUT_SUFFIXES = frozenset({".json", ".ndjson", ".xml"})


def expand_inputs(paths: list[str | Path]) -> list[tuple[Path, bool]]:
    """(file, named explicitly) pairs; a directory stands for the FHIR files directly inside it."""
    out: list[tuple[Path, bool]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(x for x in p.iterdir() if x.suffix in INPUT_SUFFIXES and x.is_file())
            if not found:
                raise InputError("directory holds no .json, .ndjson or .xml files", where=str(p))
            out.extend((f, False) for f in found)
        else:
            out.append((p, True))
    return out


def _label(files: list[tuple[Path, bool]]) -> str:
    return str(files[0][0]) if len(files) == 1 else f"{len(files)} input files"


def load_inputs(paths: list[str | Path]) -> LoadResult:
    """Load every input into one collection (references resolve across files).

    A file named on the command line must load; a bad file found in a directory is a data-quality finding
    and the others are still read.
    """
    return load_input_files(paths)[0]


def load_input_files(
    paths: list[str | Path], *, unreadable: Callable[[Path, Exception], None] | None = None
) -> tuple[LoadResult, list[tuple[Path, LoadResult]]]:
    """load_inputs, also keeping which file held what: (merged, [(file, its load)]).

    A file whose data trips the loader (a wrong JSON type no check foresaw) is an InputError when named on the
    command line; found in a directory it goes to `unreadable(file, error)`, else becomes a data-quality finding,
    and the others are still read. PTGUARD_DEBUG re-raises.
    """
    files = expand_inputs(paths)
    merged = LoadResult(source=_label(files))
    parts: list[tuple[Path, LoadResult]] = []
    for f, explicit in files:
        try:
            part = load_path(f)
        except InputError as exc:
            if explicit:
                raise
            merged.findings.append(
                data_quality("unreadable-file", f"skipped: {exc.message}", str(f), severity="warning")
            )
            continue
        except MALFORMED_DATA as exc:
            if debugging():
                raise
            shape = f"its data has an unexpected shape ({type(exc).__name__})"
            if explicit:
                raise InputError(f"cannot read the file: {shape}", where=str(f)) from None
            if unreadable is not None:
                unreadable(f, exc)
            else:
                merged.findings.append(data_quality("unreadable-file", f"skipped: {shape}", str(f), severity="warning"))
            continue
        merged.extend(part)
        parts.append((f, part))
    return merged, parts


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
    report = CheckReport(sources=[str(p) for p, _ in expand_inputs(paths)], data_quality=list(loaded.findings))
    report.resource_count = len(loaded.resources)
    if not loaded.resources:
        why = loaded.findings[0].message if loaded.findings else "no FHIR resources in the input"
        raise InputError(why, where=loaded.source)
    builder, visits = build_visits(
        loaded,
        encounter_id=encounter,
        payer_override=payer,
        payer_map=payer_map,
        validate_limit=validate_limit,
    )
    report.data_quality.extend(builder.load_findings)
    if builder.unresolved_count > len([f for f in builder.load_findings if f.id == "data-quality.missing-reference"]):
        report.data_quality.append(
            data_quality(
                "missing-reference",
                f"{builder.unresolved_count} references in all do not resolve; the first 50 are listed",
                loaded.source,
                severity="warning",
            )
        )
    if encounter is not None and not visits:
        raise NotFoundError(f"no Encounter with id {encounter!r} in {loaded.source}")
    if validate_limit is not None and len(visits) > validate_limit > 0:
        report.data_quality.append(
            data_quality(
                "validation-sampled",
                f"full FHIR R4 validation ran on the first {validate_limit} of {len(visits)} encounters "
                "(use --validate all to validate every one)",
                loaded.source,
            )
        )
    for visit in visits:  # a criterion that fails on one visit is a finding of it (engine.evaluate), never a stop
        report.evaluations.append(evaluate(visit, payer=payer, criteria_dir=criteria_dir, method=method))
    return report
