"""Match an 835 claim (CLP01) to the original FHIR Claim, its Encounters and Procedures, on a server or in an index."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ptguard.errors import NotFoundError
from ptguard.fhir.client import FhirClient
from ptguard.fhir.refs import ResourceIndex, ref_string

Resource = dict[str, Any]

CLAIM_ID_SYSTEM_SETTING = "PTGUARD_CLAIM_ID_SYSTEM"
_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass
class ClaimMatch:
    """What CLP01 matched: the Claim, its patient, insurer, encounters per item and procedures (or why not)."""

    control_number: str
    claim: Resource | None = None
    claim_ref: str | None = None
    rule: str = ""
    patient_ref: str | None = None
    insurer_ref: str | None = None
    insurer: Resource | None = None
    encounters: dict[int, list[str]] = field(default_factory=dict)
    procedures: dict[str, list[str]] = field(default_factory=dict)
    reason: str | None = None

    @property
    def matched(self) -> bool:
        """True when a Claim was found."""
        return self.claim is not None

    def encounter_refs(self) -> list[str]:
        """Every Encounter the Claim's items point to, in order, once each."""
        return list(dict.fromkeys(r for refs in self.encounters.values() for r in refs))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "control_number": self.control_number,
            "matched": self.matched,
            "claim": self.claim_ref,
            "rule": self.rule or None,
            "patient": self.patient_ref,
            "insurer": self.insurer_ref,
            "encounters": self.encounter_refs(),
            "procedures": sorted({p for ps in self.procedures.values() for p in ps}),
            "reason": self.reason,
        }


def claim_id_systems(extra: Mapping[str, str] | None) -> list[str]:
    """Identifier systems to match CLP01 against, from PTGUARD_CLAIM_ID_SYSTEM (comma-separated); [] = any system."""
    raw = (extra or {}).get(CLAIM_ID_SYSTEM_SETTING, "")
    return [s.strip() for s in raw.split(",") if s.strip()]


def _escape(value: str) -> str:
    """FHIR search escaping of a token value (`\\`, `|`, `,`, `$`)."""
    return re.sub(r"([\\|,$])", r"\\\1", value)


def _label(resource: Resource) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


class ClaimMatcher:
    """Finds the Claim behind a CLP01: by identifier (configured systems, else any system), then by id.

    Works against a FHIR server (`fhir`) or a local ResourceIndex (`index`); results are cached per CLP01.
    A CLP01 that several Claims carry is not matched (the reason says so) rather than guessed.
    """

    def __init__(
        self,
        *,
        fhir: FhirClient | None = None,
        index: ResourceIndex | None = None,
        systems: Sequence[str] = (),
        with_procedures: bool = True,
    ) -> None:
        if fhir is None and index is None:
            raise ValueError("ClaimMatcher needs a FHIR client or a resource index")
        self.fhir = fhir
        self.index = index
        self.systems = list(systems)
        self.with_procedures = with_procedures
        self._cache: dict[str, ClaimMatch] = {}

    # ------------------------------------------------------------------ finding the Claim

    def _by_identifier(self, value: str, system: str | None) -> list[Resource]:
        if self.fhir is not None:
            token = f"{_escape(system)}|{_escape(value)}" if system else _escape(value)
            return self.fhir.search("Claim", {"identifier": token, "_count": "10"}, max_pages=1)
        assert self.index is not None
        out = []
        for claim in self.index.of_type("Claim"):
            for ident in claim.get("identifier") or []:
                if (
                    isinstance(ident, dict)
                    and ident.get("value") == value
                    and (system is None or ident.get("system") == system)
                ):
                    out.append(claim)
                    break
        return out

    def _by_id(self, value: str) -> Resource | None:
        if not _ID_RE.match(value):
            return None
        if self.fhir is not None:
            try:
                return self.fhir.read("Claim", value)
            except NotFoundError:
                return None
        assert self.index is not None
        return self.index.get("Claim", value)

    def _find(self, clp01: str) -> tuple[Resource | None, str, str | None]:
        rules: list[str | None] = list(self.systems) or [None]
        for system in rules:
            found = self._by_identifier(clp01, system)
            distinct = {id(c) if self.fhir is None else c.get("id"): c for c in found}
            if len(distinct) == 1:
                return next(iter(distinct.values())), f"identifier {system or '(any system)'}", None
            if len(distinct) > 1:
                return None, "", f"{len(distinct)} Claims carry identifier {clp01!r}; not guessing"
        claim = self._by_id(clp01)
        if claim is not None:
            return claim, "id", None
        where = ", ".join(self.systems) if self.systems else "any system"
        return None, "", f"no Claim with identifier {clp01!r} ({where}) or id {clp01!r}"

    # ------------------------------------------------------------------ following the Claim

    def _ref(self, value: Any, source: Resource) -> str | None:
        if self.index is not None:
            target = self.index.resolve(value, source)
            return self.index.label(target) if target is not None else ref_string(value)
        return ref_string(value)

    def _resolve(self, value: Any, source: Resource, rtype: str) -> Resource | None:
        if self.index is not None:
            return self.index.resolve(value, source)
        ref = ref_string(value)
        if not ref or self.fhir is None:
            return None
        parts = ref.rstrip("/").split("/")
        if len(parts) < 2 or parts[-2] != rtype or not _ID_RE.match(parts[-1]):
            return None
        try:
            return self.fhir.read(rtype, parts[-1])
        except NotFoundError:
            return None

    def _insurer(self, claim: Resource) -> tuple[str | None, Resource | None]:
        insurer = claim.get("insurer")
        if isinstance(insurer, dict) and ref_string(insurer):
            return self._ref(insurer, claim), self._resolve(insurer, claim, "Organization")
        for ins in claim.get("insurance") or []:
            if not isinstance(ins, dict) or ins.get("focal") is False:
                continue
            coverage = self._resolve(ins.get("coverage"), claim, "Coverage")
            if coverage is None:
                continue
            for payor in coverage.get("payor") or []:
                if isinstance(payor, dict) and ref_string(payor):
                    ref = self._ref(payor, coverage)
                    return ref, self._resolve(payor, coverage, "Organization")
        return None, None

    def _procedures(self, encounter_ref: str) -> list[str]:
        if self.fhir is not None:
            found = self.fhir.search("Procedure", {"encounter": encounter_ref, "_count": "100"}, max_pages=5)
            return [_label(p) for p in found]
        assert self.index is not None
        target = self.index.resolve(encounter_ref)
        if target is None:
            return []
        return [self.index.label(p) for p in self.index.referencing("Procedure", "encounter", target)]

    def match(self, clp01: str) -> ClaimMatch:
        """The match for one CLP01 (cached)."""
        if clp01 in self._cache:
            return self._cache[clp01]
        claim, rule, reason = self._find(clp01)
        result = ClaimMatch(control_number=clp01, claim=claim, rule=rule, reason=reason)
        if claim is not None:
            result.claim_ref = self.index.label(claim) if self.index is not None else _label(claim)
            result.patient_ref = self._ref(claim.get("patient"), claim)
            result.insurer_ref, result.insurer = self._insurer(claim)
            for item in claim.get("item") or []:
                if not isinstance(item, dict) or not isinstance(item.get("sequence"), int):
                    continue
                refs = [r for e in item.get("encounter") or [] if (r := self._ref(e, claim))]
                if refs:
                    result.encounters[item["sequence"]] = refs
            if self.with_procedures:
                for enc in result.encounter_refs():
                    result.procedures[enc] = self._procedures(enc)
        self._cache[clp01] = result
        return result


def apply_match(claim_response: Resource, match: ClaimMatch) -> Resource:
    """Point a mapped ClaimResponse's request, patient and insurer at the matched Claim's resources (in place)."""
    if not match.matched:
        return claim_response
    request = dict(claim_response.get("request") or {})
    request["reference"] = match.claim_ref
    claim_response["request"] = request
    if match.patient_ref:
        patient = dict(claim_response.get("patient") or {})
        patient["reference"] = match.patient_ref
        claim_response["patient"] = patient
    if match.insurer_ref:
        insurer = dict(claim_response.get("insurer") or {})
        insurer["reference"] = match.insurer_ref
        claim_response["insurer"] = insurer
    return claim_response
