"""Load FHIR R4 JSON, NDJSON and XML (Bundles, single resources, CDS Hooks requests) as raw dicts."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ptguard.errors import InputError, UnsupportedVersionError
from ptguard.fhir.dates import parse_datetime
from ptguard.findings import Finding, Severity, data_quality

Resource = dict[str, Any]

MAX_BYTES_DEFAULT = 512 * 1024 * 1024

# Resource types that exist only in R5 (a sample that is enough to recognise R5 data).
R5_ONLY_TYPES = frozenset(
    {
        "ActorDefinition",
        "ArtifactAssessment",
        "BiologicallyDerivedProductDispense",
        "ConditionDefinition",
        "DeviceAssociation",
        "DeviceDispense",
        "DeviceUsage",
        "EncounterHistory",
        "FormularyItem",
        "GenomicStudy",
        "ImagingSelection",
        "InventoryItem",
        "InventoryReport",
        "NutritionIntake",
        "NutritionProduct",
        "Permission",
        "Requirements",
        "TestPlan",
        "Transport",
    }
)
# Element names that R5 introduced on resources ptguard reads.
_R5_FIELDS: dict[str, frozenset[str]] = {
    "Encounter": frozenset({"actualPeriod", "plannedStartDate", "plannedEndDate", "virtualService", "careTeam"}),
    "Claim": frozenset({"traceNumber", "diagnosisRelatedGroup", "encounter", "event"}),
    "ClaimResponse": frozenset({"traceNumber", "decision", "diagnosisRelatedGroup", "event"}),
    "DocumentReference": frozenset({"attester", "bodySite", "modality", "version", "basedOn"}),
}
# Code values that R5 introduced for elements R4 also has (R4 Encounter.status says "finished", R5 "completed").
_R5_CODES: dict[str, dict[str, frozenset[str]]] = {
    "Encounter": {"status": frozenset({"completed", "discharged", "on-hold", "discontinued"})},
}
# Findings of a Bundle's entries that could not be used (skipped), as opposed to notes about usable data.
# Each carries `data["reason"]`: why, without what the loader then did ("; skipped", "; nothing read").
SKIPPED_ENTRY_FINDINGS = frozenset(
    {"data-quality.bad-bundle", "data-quality.bad-entry", "data-quality.not-a-resource", "data-quality.r5-resource"}
)


@dataclass
class LoadResult:
    """What a file held: resources in order (with the Bundle fullUrl of each), and data-quality findings."""

    source: str
    resources: list[Resource] = field(default_factory=list)
    full_urls: list[str | None] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    bundle_type: str | None = None
    # Identity key (Type/id, fullUrl) -> position in `resources`, and where each kept copy was read.
    _positions: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _origins: dict[int, str] = field(default_factory=dict, repr=False, compare=False)

    def add(self, resource: Resource, full_url: str | None = None, where: str | None = None) -> None:
        """Append a resource; another copy of one already read (same Type/id or fullUrl) is read once.

        Identical copies are dropped silently. Copies that differ keep the one with the later
        meta.lastUpdated (else the first read) and leave a data-quality finding naming Type/id.
        """
        keys = identity_keys(resource, full_url)
        pos = next((self._positions[k] for k in keys if k in self._positions), None)
        if pos is None:
            pos = len(self.resources)
            self.resources.append(resource)
            self.full_urls.append(full_url)
            self._origins[pos] = where or self.source
        else:
            self._duplicate(pos, resource, full_url, where or self.source)
        for k in keys:
            self._positions.setdefault(k, pos)

    def extend(self, other: LoadResult) -> None:
        """Merge another load into this one (duplicates across the two are read once), findings included."""
        for i, (res, url) in enumerate(zip(other.resources, other.full_urls, strict=False)):
            self.add(res, url, other._origins.get(i, other.source))
        self.findings.extend(other.findings)

    def _duplicate(self, pos: int, resource: Resource, full_url: str | None, where: str) -> None:
        kept = self.resources[pos]
        if kept == resource:
            return
        name = _name(kept, self.full_urls[pos])
        first_where = self._origins.get(pos, self.source)
        old_ts, new_ts = _last_updated(kept), _last_updated(resource)
        if new_ts is not None and (old_ts is None or new_ts > old_ts):
            self.resources[pos] = resource
            self.full_urls[pos] = full_url or self.full_urls[pos]
            self._origins[pos] = where
            used = f"used the copy from {where} (later meta.lastUpdated)"
        elif old_ts is not None and new_ts is not None and old_ts > new_ts:
            used = f"used the copy from {first_where} (later meta.lastUpdated)"
        else:
            used = f"used the first copy, from {first_where} (no later meta.lastUpdated to choose by)"
        self.findings.append(
            data_quality(
                "duplicate-resource",
                f"{name} appears more than once with different content ({first_where}; {where}); {used}",
                name,
                severity="warning",
            )
        )


def identity_keys(resource: Resource, full_url: str | None) -> list[str]:
    """What makes two entries the same resource: `Type/id` and the Bundle fullUrl."""
    keys = []
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        keys.append(f"{resource.get('resourceType')}/{rid}")
    if full_url:  # type-qualified: a Claim written with its Patient's fullUrl is still a Claim of its own
        keys.append(f"{resource.get('resourceType')} {full_url}")
    return keys


def _name(resource: Resource, full_url: str | None) -> str:
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return f"{resource.get('resourceType')}/{rid}"
    return full_url or str(resource.get("resourceType"))


def _last_updated(resource: Resource) -> datetime | None:
    meta = resource.get("meta")
    value = meta.get("lastUpdated") if isinstance(meta, dict) else None
    parsed = parse_datetime(value)
    return parsed.astimezone(UTC) if parsed is not None else None


def r5_reason(resource: Resource) -> str | None:
    """Why a resource looks like FHIR R5 rather than R4, or None when nothing says so."""
    rtype = resource.get("resourceType")
    if rtype in R5_ONLY_TYPES:
        return f"{rtype} exists only in FHIR R5"
    meta = resource.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    for profile in profiles if isinstance(profiles, list) else []:
        if isinstance(profile, str) and re.search(r"/(5\.0|R5)(/|$)", profile):
            return f"meta.profile {profile} is an R5 profile"
    r5_fields = _R5_FIELDS.get(str(rtype), frozenset())
    present = sorted(r5_fields.intersection(resource))
    if rtype == "Encounter" and isinstance(resource.get("class"), list):
        present.append("class (a list)")
    for element, values in _R5_CODES.get(str(rtype), {}).items():
        value = resource.get(element)
        if isinstance(value, str) and value in values:
            present.append(f"{element} {value!r} (an R5 code)")
    if present:
        return f"{rtype} has R5-only element(s) {', '.join(present)}"
    return None


def parse_json_bytes(raw: bytes, source: str) -> Any:
    """orjson.loads with a byte-order mark removed and a one-line error naming the place of a syntax error."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "UTF-8" in exc.msg or "surrogates" in exc.msg:
            raise InputError("the file is not UTF-8 text (FHIR JSON must be UTF-8)", where=source) from None
        raise InputError(f"malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", where=source) from None


def json_kind(value: Any) -> str:
    """What kind of JSON value this is, in words for a message: null, true/false, a number, a string, an array…"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "value"


def _skipped(ident: str, reason: str, done: str, where: str, *, severity: Severity = "info") -> Finding:
    """A finding about input that could not be used: `reason; done` as its message, the reason alone in its data."""
    finding = data_quality(ident, f"{reason}{done}", where, severity=severity)
    return replace(finding, data={"reason": reason})


def _add_resource(result: LoadResult, item: Any, where: str, full_url: str | None = None) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("resourceType"), str):
        result.findings.append(_skipped("not-a-resource", "entry has no resourceType", "; skipped", where))
        return
    reason = r5_reason(item)
    if reason:
        result.findings.append(
            _skipped("r5-resource", f"{reason}; ptguard reads FHIR R4 only", ", skipped", where, severity="warning")
        )
        return
    if item["resourceType"] == "Bundle":
        _add_bundle(result, item, where)
        return
    result.add(item, full_url, where)


def _add_bundle(result: LoadResult, bundle: Resource, where: str) -> None:
    if result.bundle_type is None:
        result.bundle_type = bundle.get("type")
    entries = bundle.get("entry")
    if entries is None:
        return
    if not isinstance(entries, list):
        result.findings.append(_skipped("bad-bundle", "Bundle.entry is not a list", "; nothing read", where))
        return
    for i, entry in enumerate(entries):
        ewhere = f"{where} entry[{i}]"
        if not isinstance(entry, dict):
            result.findings.append(_skipped("bad-entry", "Bundle entry is not an object", "; skipped", ewhere))
            continue
        resource = entry.get("resource")
        if resource is None:
            if "request" not in entry and "response" not in entry:  # not a DELETE request or a batch answer
                result.findings.append(_skipped("bad-entry", "Bundle entry has no resource", "; skipped", ewhere))
            continue
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) and entry.get("fullUrl") else None
        _add_resource(result, resource, ewhere, full_url)


def _add_cds_request(result: LoadResult, request: dict[str, Any], where: str) -> None:
    """A CDS Hooks request: its prefetch values and draftOrders are the resources."""
    prefetch = request.get("prefetch") or {}
    if isinstance(prefetch, dict):
        for key, value in prefetch.items():
            if value is None:
                continue
            _add_resource(result, value, f"{where} prefetch.{key}")
    context = request.get("context") or {}
    if isinstance(context, dict):
        for key in ("draftOrders", "selections_bundle"):
            if isinstance(context.get(key), dict):
                _add_resource(result, context[key], f"{where} context.{key}")


def load_json_value(value: Any, source: str) -> LoadResult:
    """Interpret already-parsed JSON: a resource, a Bundle, a list of resources, or a CDS Hooks request."""
    result = LoadResult(source=source)
    if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        reason = r5_reason(value)
        if reason:
            raise UnsupportedVersionError(f"{reason}; ptguard reads FHIR R4 only", where=source)
        _add_resource(result, value, source)
    elif isinstance(value, dict) and "hook" in value and ("context" in value or "prefetch" in value):
        _add_cds_request(result, value, source)
        if not result.resources:
            result.findings.append(
                data_quality("no-prefetch", "CDS Hooks request carries no prefetch resources; nothing read", source)
            )
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                _add_resource(result, item, f"{source}[{i}]")
        if not result.resources:
            result.findings.append(data_quality("not-fhir", "JSON array holds no FHIR resources", source))
    elif isinstance(value, dict):
        embedded = list(_embedded_resources(value))
        for path, item in embedded:
            _add_resource(result, item, f"{source} {path}")
        keys = ", ".join(sorted(value)[:5])
        what = f"{len(embedded)} embedded resource(s) read" if embedded else "nothing read"
        result.findings.append(
            data_quality("not-fhir", f"JSON object is not a FHIR resource (keys: {keys}); {what}", source)
        )
    else:
        raise InputError(f"JSON {json_kind(value)} is not a FHIR resource", where=source)
    return result


def _embedded_resources(value: Any, path: str = "$") -> Iterable[tuple[str, Resource]]:
    """FHIR resources nested anywhere in non-FHIR JSON (e.g. CDS Hooks card suggestions)."""
    if isinstance(value, dict):
        if isinstance(value.get("resourceType"), str):
            yield path, value
            return
        for key, item in value.items():
            yield from _embedded_resources(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _embedded_resources(item, f"{path}[{i}]")


def load_ndjson(raw: bytes, source: str) -> LoadResult:
    """One resource per line; a bad line is a data-quality finding, not the end of the file."""
    result = LoadResult(source=source)
    for lineno, line in enumerate(raw.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        where = f"{source} line {lineno}"
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            result.findings.append(data_quality("malformed-line", f"malformed JSON ({exc.msg}); line skipped", where))
            continue
        _add_resource(result, item, where)
    return result


def load_xml(raw: bytes, source: str) -> LoadResult:
    """FHIR XML through fhir.resources R4B, then back to plain JSON dicts."""
    from xml.etree import ElementTree as ET

    try:
        root = ET.fromstring(raw, parser=ET.XMLParser())  # noqa: S314
    except ET.ParseError as exc:
        raise InputError(f"malformed XML ({exc})", where=source) from None
    rtype = root.tag.split("}")[-1]
    try:
        from fhir.resources.R4B import get_fhir_model_class

        model = get_fhir_model_class(rtype)
        obj = model.model_validate_xml(raw)
        value = orjson.loads(obj.model_dump_json(exclude_none=True))
    except KeyError:
        raise InputError(f"XML root <{rtype}> is not a FHIR R4 resource", where=source) from None
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"FHIR XML could not be read ({first})", where=source) from None
    return load_json_value(value, source)


def load_bytes(raw: bytes, source: str, *, fmt: str | None = None) -> LoadResult:
    """Load from bytes; `fmt` is json, ndjson or xml, else sniffed from the content."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    stripped = raw.lstrip()
    if not stripped:
        raise InputError("file is empty", where=source)
    if fmt is None:
        if stripped[:1] == b"<":
            fmt = "xml"
        elif source.endswith(".ndjson") or _looks_like_ndjson(stripped):
            fmt = "ndjson"
        else:
            fmt = "json"
    if fmt == "xml":
        return load_xml(raw, source)
    if fmt == "ndjson":
        return load_ndjson(raw, source)
    return load_json_value(parse_json_bytes(raw, source), source)


def _looks_like_ndjson(data: bytes) -> bool:
    first, _, rest = data.partition(b"\n")
    if not rest.strip() or not first.rstrip().endswith(b"}"):
        return False
    try:
        orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    return True


def load_path(path: str | Path, *, max_bytes: int = MAX_BYTES_DEFAULT) -> LoadResult:
    """Load one file, with clear errors for a missing, unreadable, or oversized file."""
    p = Path(path)
    source = str(p)
    if not p.exists():
        raise InputError("no such file", where=source)
    if p.is_dir():
        raise InputError("is a directory; give a file", where=source)
    if not p.is_file():
        raise InputError("is not a regular file (a device, pipe or socket); give a file", where=source)
    size = p.stat().st_size
    if size > max_bytes:
        raise InputError(
            f"file is {size // (1024 * 1024)} MiB, over the {max_bytes // (1024 * 1024)} MiB limit", where=source
        )
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", where=source) from None
    return load_bytes(raw, p.name if len(source) > 200 else source)


def load_many(paths: Iterable[str | Path]) -> LoadResult:
    """Several files as one collection (e.g. a patient's Bundle plus an NDJSON export)."""
    paths = list(paths)
    merged = LoadResult(source=", ".join(str(p) for p in paths))
    for p in paths:
        merged.extend(load_path(p))
    return merged


__all__ = [
    "SKIPPED_ENTRY_FINDINGS",
    "LoadResult",
    "Resource",
    "json_kind",
    "load_bytes",
    "load_json_value",
    "load_many",
    "load_path",
    "r5_reason",
]
