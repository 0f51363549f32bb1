"""Code systems ptguard reads (CPT, HCPCS, CARC, RARC, group codes) and their real-world variants."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CARC = "https://x12.org/codes/claim-adjustment-reason-codes"
RARC = "https://x12.org/codes/remittance-advice-remark-codes"
GROUP = "https://x12.org/codes/claim-adjustment-group-codes"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
C4BB_ADJUDICATION_DISCRIMINATOR = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudicationDiscriminator"

# Every spelling seen in real data, mapped to the canonical URL (compared without case and trailing slash).
_ALIASES: dict[str, str] = {
    "http://www.ama-assn.org/go/cpt": CPT,
    "https://www.ama-assn.org/go/cpt": CPT,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "http://www.cms.gov/medicare/coding/hcpcsreleasecodesets": HCPCS,
    "https://www.cms.gov/medicare/coding/hcpcsreleasecodesets": HCPCS,
    "hhttps://www.cms.gov/medicare/coding/hcpcsreleasecodesets": HCPCS,
    "https://bluebutton.cms.gov/resources/codesystem/hcpcs": HCPCS,
    "http://bluebutton.cms.gov/resources/codesystem/hcpcs": HCPCS,
    "urn:oid:2.16.840.1.113883.6.285": HCPCS,
    "https://x12.org/codes/claim-adjustment-reason-codes": CARC,
    "http://x12.org/codes/claim-adjustment-reason-codes": CARC,
    "https://www.x12.org/codes/claim-adjustment-reason-codes": CARC,
    "http://www.wpc-edi.com/reference/codelists/healthcare/claim-adjustment-reason-codes": CARC,
    "https://www.wpc-edi.com/reference/codelists/healthcare/claim-adjustment-reason-codes": CARC,
    "https://x12.org/codes/remittance-advice-remark-codes": RARC,
    "http://x12.org/codes/remittance-advice-remark-codes": RARC,
    "https://www.x12.org/codes/remittance-advice-remark-codes": RARC,
    "http://www.wpc-edi.com/reference/codelists/healthcare/remittance-advice-remark-codes": RARC,
    "https://www.wpc-edi.com/reference/codelists/healthcare/remittance-advice-remark-codes": RARC,
    "https://x12.org/codes/claim-adjustment-group-codes": GROUP,
    "http://x12.org/codes/claim-adjustment-group-codes": GROUP,
    "http://www.wpc-edi.com/reference/codelists/healthcare/claim-adjustment-group-codes": GROUP,
    "https://www.wpc-edi.com/reference/codelists/healthcare/claim-adjustment-group-codes": GROUP,
    "http://hl7.org/fhir/sid/icd-10-cm": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10": ICD10CM,
    "https://bluebutton.cms.gov/resources/codesystem/diagnosis-type": "https://bluebutton.cms.gov/resources/codesystem/diagnosis-type",
}

MODIFIER_SYSTEMS = frozenset({CPT, HCPCS, "http://terminology.hl7.org/CodeSystem/modifiers"})


def normalise_system(system: Any) -> str | None:
    """The canonical URL for a code system, or the input stripped when it is not one we know; None for a non-string."""
    if not isinstance(system, str):
        return None
    if not system:
        return system
    key = system.strip().rstrip("/").lower()
    return _ALIASES.get(key, system.strip())


def _usable(coding: dict[str, Any]) -> bool:
    """A Coding whose system and code, when present, are strings (a number or list there makes it unreadable)."""
    return all(coding.get(k) is None or isinstance(coding.get(k), str) for k in ("system", "code"))


def codings(concept: Any) -> Iterator[dict[str, Any]]:
    """Codings of a CodeableConcept (or a bare Coding, or a list of either), skipping malformed entries.

    Only JSON objects are yielded, and only those whose `system` and `code` are strings when present; a `coding`
    that is not a list counts as absent (`concept_problem` says why, for a data-quality finding).
    """
    if isinstance(concept, list):
        for item in concept:
            yield from codings(item)
        return
    if not isinstance(concept, dict):
        return
    if "coding" in concept:
        found = concept.get("coding")
        for c in found if isinstance(found, list) else []:
            if isinstance(c, dict) and _usable(c):
                yield c
    elif ("code" in concept or "system" in concept) and _usable(concept):
        yield concept


def concept_problem(concept: Any) -> str | None:
    """Why a CodeableConcept cannot be read as written (`coding is not a list`, ...), or None when it can."""
    if concept is None:
        return None
    if not isinstance(concept, dict):
        return "is not an object"
    found = concept.get("coding")
    if found is None:
        return None
    if not isinstance(found, list):
        return "coding is not a list"
    for i, c in enumerate(found):
        if not isinstance(c, dict):
            return f"coding[{i}] is not an object"
        for key in ("system", "code"):
            if c.get(key) is not None and not isinstance(c.get(key), str):
                return f"coding[{i}].{key} is not a string"
    return None


def code_in(concept: Any, systems: Iterable[str]) -> str | None:
    """The first code of a concept whose (normalised) system is one of `systems`."""
    wanted = set(systems)
    for c in codings(concept):
        if normalise_system(c.get("system")) in wanted and isinstance(c.get("code"), str):
            return str(c["code"]).strip()
    return None


def procedure_code(concept: Any) -> str | None:
    """A CPT or HCPCS code from a concept; a bare 5-character code with no system counts as CPT."""
    found = code_in(concept, (CPT, HCPCS))
    if found:
        return found.upper()
    for c in codings(concept):
        code = c.get("code")
        if not c.get("system") and isinstance(code, str) and len(code) == 5 and code[:4].isdigit():
            return code.upper()
    return None


def text_of(concept: Any) -> str:
    """Human-readable text of a concept: its text, else the first display, else the first code."""
    if isinstance(concept, dict) and isinstance(concept.get("text"), str):
        return str(concept["text"])
    for c in codings(concept):
        if isinstance(c.get("display"), str):
            return str(c["display"])
    for c in codings(concept):
        if isinstance(c.get("code"), str):
            return str(c["code"])
    return ""
