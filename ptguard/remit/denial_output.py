"""`ptguard denial` core: a ClaimResponse / EOB / Bundle / 835 file → decoded denials with their deadlines."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Any

from ptguard.chart import payer_id_for
from ptguard.denials.decode import Denial, decode, unreadable_denial
from ptguard.errors import MALFORMED_DATA, InputError, debugging
from ptguard.fhir.load import LoadResult, Resource, load_bytes
from ptguard.fhir.refs import ResourceIndex
from ptguard.remit.intake import deadline_for
from ptguard.remit.to_fhir import remittance_to_fhir
from ptguard.remit.x12 import read_835

log = logging.getLogger(__name__)

MAX_BYTES = 100 * 1024 * 1024
_ADJUDICATIONS = ("ClaimResponse", "ExplanationOfBenefit")


def looks_like_x12(data: bytes) -> bool:
    """True when the bytes start (after a BOM and blanks) with an ISA or ST segment, in UTF-8/latin-1 or UTF-16."""
    head = data[:64]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(head) > 1 and head[1:2] == b"\x00"):
        head = data[:128].decode("utf-16", errors="ignore").encode("latin-1", errors="ignore")
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return head[:3] in (b"ISA", b"ST*", b"ST|")


def denial_dict(denial: Denial, *, payer_id: str | None, today: date) -> dict[str, Any]:
    """The JSON shape of schemas/denial-output.schema.json for one decoded adjudication."""
    out = denial.to_dict()
    out["payer_id"] = payer_id
    out["codes"] = denial.codes()
    deadline = deadline_for(payer_id, denial.notice_date, denial.path, today=today) if payer_id else None
    if deadline is not None:
        out["deadline"] = deadline.to_dict()
    return out


def _payer_of(resource: Resource, index: ResourceIndex | None, override: str | None) -> str | None:
    if override:
        return override
    insurer = resource.get("insurer")
    org = index.resolve(insurer, resource) if index is not None and insurer else None
    display = insurer.get("display") if isinstance(insurer, dict) else None
    name = display or (org or {}).get("name")
    if org is None and not name:
        return None
    return payer_id_for(org, str(name or ""))


def describe(data: bytes, source: str, *, today: date, payer: str | None = None) -> list[dict[str, Any]]:
    """Decode every ClaimResponse / EOB in the bytes (FHIR JSON/XML/NDJSON, or an X12 835 mapped on the fly)."""
    if looks_like_x12(data):
        read = read_835(data, Path(source).name)
        resources: list[Resource] = [
            r for rem in read.remittances for r in remittance_to_fhir(rem, raw_reference=None)
            if r.get("resourceType") == "ClaimResponse"
        ]
        index = None
        loaded: LoadResult | None = None
        if not resources:
            raise InputError("the 835 holds no claim that could be read", where=Path(source).name)
    else:
        loaded = load_bytes(data, Path(source).name)
        index = ResourceIndex.from_load(loaded)
        resources = [r for r in loaded.resources if r.get("resourceType") in _ADJUDICATIONS]
        if not resources:
            kinds = sorted({str(r.get("resourceType")) for r in loaded.resources}) or ["nothing"]
            raise InputError(f"no ClaimResponse or ExplanationOfBenefit in the file (found {', '.join(kinds)})",
                             where=Path(source).name)
    file_notes = [f.to_dict() for f in loaded.findings] if loaded is not None else []  # e.g. a duplicate copy
    out = []
    for resource in resources:
        try:
            payer_id = _payer_of(resource, index, payer)
            denial = decode(resource, index=index, payer_hint=payer_id)
            entry = denial_dict(denial, payer_id=payer_id, today=today)
        except MALFORMED_DATA as exc:  # this adjudication only: noted, the others of the file go on
            if debugging():
                raise
            log.warning("could not decode a %s (%s)", resource.get("resourceType"), type(exc).__name__)
            entry = denial_dict(unreadable_denial(resource, exc, index=index), payer_id=payer, today=today)
        entry["data_quality"] = [*file_notes, *entry.get("data_quality", [])]
        out.append(entry)
    return out


def describe_file(path: Path, *, today: date, payer: str | None = None) -> list[dict[str, Any]]:
    """`describe` on a file, with clear errors for a missing, unreadable or oversized one."""
    if path.is_dir():
        raise InputError("is a folder; name one ClaimResponse, ExplanationOfBenefit, Bundle or 835 file", where=str(path))
    if not path.is_file():
        raise InputError("no such file", where=str(path))
    if path.stat().st_size > MAX_BYTES:
        raise InputError("file is over the 100 MiB limit", where=str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", where=str(path)) from None
    return describe(data, str(path), today=today, payer=payer)
