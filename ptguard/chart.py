"""TherapyVisit: one therapy encounter assembled from loaded FHIR data, with every fact's source reference."""

from __future__ import annotations

import base64
import binascii
import html
import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

from ptguard.errors import MALFORMED_DATA, ConfigError, debugging
from ptguard.fhir import codes
from ptguard.fhir.dates import has_zone, minutes_between, parse_date, parse_datetime
from ptguard.fhir.load import LoadResult, Resource
from ptguard.fhir.refs import ResourceIndex, element, elements, integers, ref_string, strings, text, wrong_type
from ptguard.fhir.validate import validate
from ptguard.findings import Finding, data_quality
from ptguard.rules.tables import table

EXT = "https://ptguard.dev/fhir/StructureDefinition/"
PAYER_ID_SYSTEM = "https://ptguard.dev/payer-id"
Role = Literal["therapist", "assistant", "unknown"]
Discipline = Literal["PT", "OT", "unknown"]
log = logging.getLogger(__name__)
_MIN_IN_TEXT = re.compile(r"\b(\d{1,3})\s*(?:min(?:ute)?s?)\b", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]+>")
_NOT_HELD = frozenset({"cancelled", "entered-in-error"})
# Elements whose wrong JSON type is worth a data-quality finding (the readers then treat them as absent).
_PROCEDURE_SHAPE: tuple[tuple[str, type], ...] = (("status", str), ("extension", list), ("performer", list), ("note", list))
_ENCOUNTER_SHAPE: tuple[tuple[str, type], ...] = (("status", str), ("period", dict))
_PROGRESS = re.compile(r"progress (report|note)|re-?evaluation|recertif", re.IGNORECASE)


@dataclass(frozen=True)
class NoteText:
    """A piece of note text and the resource it came from."""

    reference: str
    text: str
    kind: str


@dataclass(frozen=True)
class Clinician:
    """The person who performed a procedure, and whether they are a therapist or an assistant."""

    reference: str
    name: str
    role: Role
    discipline: Discipline
    qualifications: tuple[str, ...]


@dataclass(frozen=True)
class ProcedureLine:
    """One performed therapy procedure with its minutes and modifiers."""

    reference: str
    code: str
    minutes: int | None
    minutes_source: str
    modifiers: tuple[str, ...]
    performers: tuple[Clinician, ...]
    assistant_minutes: int | None


@dataclass(frozen=True)
class BilledLine:
    """One Claim item: code, modifiers, units and amount."""

    reference: str
    claim_reference: str
    sequence: int | None
    code: str
    modifiers: tuple[str, ...]
    units: float | None
    net: float | None
    diagnoses: tuple[str, ...]


@dataclass(frozen=True)
class Measure:
    """An objective measure (Observation) with its value and date."""

    reference: str
    name: str
    value: str
    when: date | None
    this_visit: bool


@dataclass(frozen=True)
class GoalInfo:
    """A patient goal, as written."""

    reference: str
    text: str
    due: date | None
    status: str


@dataclass(frozen=True)
class PlanOfCare:
    """A plan of care (CarePlan) with its certification period and dates."""

    reference: str
    start: date | None
    end: date | None
    certified: date | None
    sent: date | None
    planned_codes: tuple[str, ...]


@dataclass(frozen=True)
class Referral:
    """A physician order or referral (ServiceRequest)."""

    reference: str
    authored: date | None
    requester: str


@dataclass
class TherapyVisit:
    """Everything the rules need about one therapy encounter."""

    encounter_reference: str
    encounter_id: str
    patient_reference: str
    patient_name: str
    visit_date: date | None
    start: datetime | None
    payer_id: str
    payer_name: str
    payer_reference: str | None
    coverage_reference: str | None
    procedures: list[ProcedureLine] = field(default_factory=list)
    billed: list[BilledLine] = field(default_factory=list)
    notes: list[NoteText] = field(default_factory=list)
    measures: list[Measure] = field(default_factory=list)
    goals: list[GoalInfo] = field(default_factory=list)
    plans: list[PlanOfCare] = field(default_factory=list)
    referrals: list[Referral] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    treatment_day: int | None = None
    episode_start: date | None = None
    last_progress_report: date | None = None
    progress_report_reference: str | None = None
    treatment_days_since_report: int | None = None
    ytd_therapy_amount: float | None = None
    this_visit_amount: float | None = None
    findings: list[Finding] = field(default_factory=list)
    # False when the encounter's data could not be read (see `mark_unchecked`): no criteria are run on it.
    checked: bool = True

    @property
    def codes(self) -> set[str]:
        """Every therapy code performed or billed on this visit."""
        return {p.code for p in self.procedures} | {b.code for b in self.billed}

    def minutes_by_code(self) -> dict[str, int]:
        """Timed minutes per code (summing several Procedures of the same code)."""
        out: dict[str, int] = defaultdict(int)
        for p in self.procedures:
            if p.minutes is not None:
                out[p.code] += p.minutes
        return dict(out)

    def billed_units_by_code(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for b in self.billed:
            if b.units is not None:
                out[b.code] += b.units
        return dict(out)

    def modifiers_for(self, code: str) -> set[str]:
        """Modifiers on the billed lines of a code, else on its Procedures."""
        billed = {m for b in self.billed if b.code == code for m in b.modifiers}
        if billed or any(b.code == code for b in self.billed):
            return billed
        return {m for p in self.procedures if p.code == code for m in p.modifiers}

    def note_text(self) -> str:
        return "\n".join(n.text for n in self.notes)


# ---------------------------------------------------------------- helpers

def malformed_data(reference: str, exc: BaseException) -> Finding:
    """The data-quality finding for an encounter the safety net could not check."""
    return data_quality(
        "malformed-data",
        f"{reference} could not be checked: malformed data ({type(exc).__name__}); set PTGUARD_DEBUG=1 for details",
        reference,
        severity="warning",
    )


def mark_unchecked(visit: TherapyVisit, exc: BaseException) -> TherapyVisit:
    """Make `visit` an unchecked one: nothing of its chart, only the malformed-data finding (no criterion runs)."""
    visit.checked = False
    visit.procedures, visit.billed, visit.notes, visit.measures = [], [], [], []
    visit.goals, visit.plans, visit.referrals, visit.diagnoses = [], [], [], []
    visit.findings = [malformed_data(visit.encounter_reference, exc)]
    return visit


def _coding_words(concept: Any) -> list[str]:
    """Codes, displays and text of a concept (what tells a therapist from an assistant)."""
    words = [w for c in codes.codings(concept) for w in (text(c.get("code")), text(c.get("display"))) if w]
    concept_text = text(concept.get("text")) if isinstance(concept, dict) else None
    if concept_text:
        words.append(concept_text)
    return words



def _ext_value(resource: Any, name: str) -> Any:
    for ext in elements(resource, "extension"):
        if ext.get("url") == EXT + name:
            for key, value in ext.items():
                if key.startswith("value"):
                    return value
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return _number(value.get("value"))
    return None


MAX_MINUTES = 8 * 60  # longer than any single outpatient therapy code in one visit: treated as a data error
_HOURS = frozenset({"h", "hr", "hour", "hours"})


def _minutes_value(value: Any) -> int | None:
    """Minutes from an integer or a Quantity (min or h), rounded to the nearest whole minute."""
    number = _number(value)
    if number is None:
        return None
    unit = str(value.get("code") or value.get("unit") or "min").lower() if isinstance(value, dict) else "min"
    if unit in _HOURS:
        number *= 60
    return round(number) if math.isfinite(number) and abs(number) < 1e9 else -1


def _money(value: Any) -> float | None:
    return _number(value) if isinstance(value, dict) else None


def _human_name(resource: Resource | None) -> str:
    if not resource:
        return ""
    for name in elements(resource, "name"):
        if isinstance(name.get("text"), str):
            return str(name["text"])
        given = " ".join(strings(name, "given"))
        family = text(name.get("family")) or ""
        full = f"{given} {family}".strip()
        if full:
            return full
    if isinstance(resource.get("name"), str):
        return str(resource["name"])
    return ""


_INVISIBLE = re.compile(r"(?is)<\s*(script|style|head|template)\b.*?<\s*/\s*\1\s*>|<!--.*?-->")


def html_to_text(markup: str) -> str:
    """Visible text of an XHTML/HTML fragment (no script, style or comments), blocks turned into line breaks."""
    markup = _INVISIBLE.sub(" ", markup)
    markup = re.sub(r"(?i)<\s*(br|/p|/div|/li|/tr|/h\d)\s*/?>", "\n", markup)
    return html.unescape(_TAGS.sub(" ", markup)).replace("\xa0", " ")


class AttachmentError(ValueError):
    """Why an attachment's text could not be read (shown as a data-quality finding)."""


def _attachment_text(att: dict[str, Any]) -> str | None:
    """Text of an inline attachment; None when it has no inline data; AttachmentError when it is unreadable."""
    data = att.get("data")
    if not isinstance(data, str):
        return None
    ctype = (text(att.get("contentType")) or "text/plain").lower()
    if not (ctype.startswith("text/") or "html" in ctype or "xml" in ctype):
        raise AttachmentError(f"attachment is {ctype.split(';')[0]}, not text; its content was not read")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise AttachmentError("attachment data is not valid base64") from None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        decoded = raw.decode("latin-1")
    if "html" in ctype or "xml" in ctype:
        decoded = html_to_text(decoded)
    return decoded


def _modifier_codes(concepts: Iterable[Any]) -> tuple[str, ...]:
    out: list[str] = []
    for concept in concepts:
        for c in codes.codings(concept):
            code = c.get("code")
            if isinstance(code, str) and code.strip():
                out.append(code.strip().upper())
    return tuple(dict.fromkeys(out))


class _Roles:
    def __init__(self) -> None:
        data = table("clinician-roles")
        self.therapist = {s.upper() for s in data["therapist"]}
        self.assistant = {s.upper() for s in data["assistant"]}
        self.occupational = {s.upper() for s in data["occupational"]}

    def classify(self, words: Iterable[str]) -> tuple[Role, Discipline]:
        items = {w.strip().upper() for w in words if w and w.strip()}
        role: Role = "assistant" if items & self.assistant else "therapist" if items & self.therapist else "unknown"
        if items & self.occupational:
            return role, "OT"
        return role, ("PT" if role != "unknown" else "unknown")


class _PayerMap:
    def __init__(self, path: Path | None) -> None:
        if path is not None:
            import yaml

            try:
                data = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"payer map cannot be read ({exc.__class__.__name__})", where=str(path)) from None
        else:
            data = table("payer-map")
        where = str(path) if path is not None else "rules/data/payer-map.yaml"
        if not isinstance(data, dict) or not isinstance(data.get("name_patterns", []), list):
            raise ConfigError("the payer map must be a mapping with a name_patterns list", where=where)
        self.system = str(data.get("identifier_system", PAYER_ID_SYSTEM))
        self.patterns: list[tuple[re.Pattern[str], str]] = []
        for i, item in enumerate(data.get("name_patterns", [])):
            try:
                self.patterns.append((re.compile(str(item["pattern"]), re.IGNORECASE), str(item["payer"])))
            except (KeyError, TypeError, re.error) as exc:
                raise ConfigError(f"name_patterns[{i}]: {type(exc).__name__} {exc}", where=where) from None
        self.default = str(data.get("default", "default-commercial"))

    def payer_for(self, org: Resource | None, display: str) -> str:
        if org:
            for ident in elements(org, "identifier"):
                value = text(ident.get("value"))
                if ident.get("system") == self.system and value:
                    return value
        name = _human_name(org) or display
        for pattern, payer in self.patterns:
            if pattern.search(name):
                return str(payer)
        return str(self.default)


@cache
def _payer_map(path: Path | None) -> _PayerMap:
    return _PayerMap(path)


def payer_id_for(org: Resource | None, display: str, *, payer_map: Path | None = None) -> str:
    """The ptguard payer id of a payer Organization and/or its display name (identifier, then name patterns)."""
    return _payer_map(payer_map).payer_for(org, display)


# ---------------------------------------------------------------- the builder


class ChartBuilder:
    """Indexes a load once, then assembles a TherapyVisit per therapy encounter."""

    def __init__(self, result: LoadResult, *, payer_map: Path | None = None, validate_limit: int | None = None) -> None:
        self.result = result
        self.index = ResourceIndex.from_load(result)
        self.validate_limit = validate_limit
        self.validated_encounters = 0
        self.validate_resources = validate_limit is None or validate_limit > 0
        codes_table = table("therapy-codes")
        self.timed_codes = set(codes_table["timed"])
        self.therapy_codes = self.timed_codes | set(codes_table["untimed"])
        self.roles = _Roles()
        self.payers = _PayerMap(payer_map)
        self._group()

    # grouping: one pass per resource type, each reference resolved once
    def _key(self, reference: Any, source: Resource, path: str = "reference") -> int | None:
        target = self.index.resolve(reference, source)
        if target is None:
            ref = ref_string(reference)
            if ref:
                self._unresolved(source, path, ref)
            return None
        return id(target)

    def _unresolved(self, source: Resource, path: str, ref: str) -> None:
        self.unresolved_count += 1
        if len(self.load_findings) < 50:
            self.load_findings.append(
                data_quality(
                    "missing-reference",
                    f"{path} points to {ref[:80]}, which is not in the data",
                    self.index.label(source),
                    severity="warning",
                )
            )

    def _shape(self, source: Resource, path: str, problem: str | None) -> None:
        """A data-quality finding for an element of the wrong JSON type, which the readers treat as absent."""
        if problem:
            where = f"{path}.{problem}" if path and not problem.startswith("is ") else f"{path} {problem}".strip()
            self.load_findings.append(
                data_quality(
                    "wrong-type",
                    f"{self.index.label(source)} {where}; it was read as absent",
                    self.index.label(source),
                    severity="warning",
                )
            )

    def _patient_key(self, resource: Resource, *paths: str) -> int | str | None:
        for path in paths:
            value = resource.get(path)
            if isinstance(value, list):
                value = value[0] if value else None
            ref = ref_string(value)
            if ref:
                target = self.index.resolve(ref, resource)
                return id(target) if target is not None else ref
        return None

    def _group(self) -> None:
        ix = self.index
        self.load_findings: list[Finding] = []
        self.unresolved_count = 0
        self.procs_by_enc: dict[int, list[Resource]] = defaultdict(list)
        for p in ix.of_type("Procedure"):
            self._shape(p, "code", codes.concept_problem(p.get("code")))
            for key, kind in _PROCEDURE_SHAPE:
                self._shape(p, "", wrong_type(p, key, kind))
            k = self._key(p.get("encounter") or p.get("context"), p, "Procedure.encounter")
            if k is not None:
                self.procs_by_enc[k].append(p)
        self.items_by_enc: dict[int, list[tuple[Resource, dict[str, Any]]]] = defaultdict(list)
        self.claims_by_patient: dict[int | str, list[Resource]] = defaultdict(list)
        for claim in ix.of_type("Claim"):
            pk = self._patient_key(claim, "patient")
            if pk is not None:
                self.claims_by_patient[pk].append(claim)
            items = claim.get("item")
            if items is not None and not (isinstance(items, list) and all(isinstance(i, dict) for i in items)):
                self.load_findings.append(
                    data_quality(
                        "bad-claim-items",
                        "Claim.item is not a list of line objects; its lines could not be read",
                        ix.label(claim),
                        severity="warning",
                    )
                )
            for i, item in enumerate(items if isinstance(items, list) else []):
                if not isinstance(item, dict):
                    continue
                self._shape(claim, f"item[{i}].productOrService", codes.concept_problem(item.get("productOrService")))
                for enc_ref in elements(item, "encounter"):
                    k = self._key(enc_ref, claim, "Claim.item.encounter")
                    if k is not None:
                        self.items_by_enc[k].append((claim, item))
        self.docs_by_enc: dict[int, list[Resource]] = defaultdict(list)
        self.docs_by_patient: dict[int | str, list[Resource]] = defaultdict(list)
        for doc in ix.of_type("DocumentReference"):
            for enc_ref in elements(element(doc, "context"), "encounter"):
                k = self._key(enc_ref, doc, "DocumentReference.context.encounter")
                if k is not None:
                    self.docs_by_enc[k].append(doc)
            pk = self._patient_key(doc, "subject")
            if pk is not None:
                self.docs_by_patient[pk].append(doc)
        for enc in ix.of_type("Encounter"):
            for key, kind in _ENCOUNTER_SHAPE:
                self._shape(enc, "", wrong_type(enc, key, kind))
        self.comps_by_enc: dict[int, list[Resource]] = defaultdict(list)
        for comp in ix.of_type("Composition"):
            k = self._key(comp.get("encounter"), comp)
            if k is not None:
                self.comps_by_enc[k].append(comp)
        self.by_patient: dict[str, dict[int | str, list[Resource]]] = {}
        for rtype, paths in (
            ("Observation", ("subject",)),
            ("Goal", ("subject",)),
            ("CarePlan", ("subject",)),
            ("ServiceRequest", ("subject",)),
            ("Coverage", ("beneficiary", "subscriber")),
            ("Encounter", ("subject",)),
            ("Condition", ("subject",)),
        ):
            groups: dict[int | str, list[Resource]] = defaultdict(list)
            for res in ix.of_type(rtype):
                pk = self._patient_key(res, *paths)
                if pk is not None:
                    groups[pk].append(res)
            self.by_patient[rtype] = groups
        self._therapy_dates: dict[int | str, list[date]] = {}
        self._codes: dict[int, str | None] = {}
        self._enc_codes: dict[int, set[str]] = {}

    def _code_of(self, element: dict[str, Any], key: str) -> str | None:
        """The CPT/HCPCS code of a Procedure or Claim item, read once per element."""
        cache_key = id(element)
        if cache_key not in self._codes:
            self._codes[cache_key] = codes.procedure_code(element.get(key))
        return self._codes[cache_key]

    def _encounter_codes(self, enc: Resource) -> set[str]:
        if id(enc) in self._enc_codes:
            return self._enc_codes[id(enc)]
        found: set[str] = set()
        for p in self.procs_by_enc.get(id(enc), []):
            code = self._code_of(p, "code")
            if code:
                found.add(code)
        for _claim, item in self.items_by_enc.get(id(enc), []):
            code = self._code_of(item, "productOrService")
            if code:
                found.add(code)
        self._enc_codes[id(enc)] = found
        return found

    def is_therapy_encounter(self, enc: Resource) -> bool:
        return bool(self._encounter_codes(enc) & self.therapy_codes)

    def therapy_encounters(self) -> list[Resource]:
        """Therapy encounters that happened (cancelled and entered-in-error ones are left out, with a note)."""
        out: list[Resource] = []
        seen: set[str] = set()
        for e in self.index.of_type("Encounter"):
            if not self.is_therapy_encounter(e):
                continue
            label = self.index.label(e)
            status = text(e.get("status"))
            if status in _NOT_HELD:
                self.load_findings.append(
                    data_quality("encounter-not-held", f"Encounter status is {status}; not checked", label)
                )
                continue
            if e.get("id") and label in seen:
                self.load_findings.append(
                    data_quality(
                        "duplicate-id", "two Encounters share this id; both are checked", label, severity="warning"
                    )
                )
            seen.add(label)
            out.append(e)
        return out

    def _therapy_dates_for(self, pk: int | str) -> list[date]:
        if pk not in self._therapy_dates:
            dates = {
                d
                for e in self.by_patient["Encounter"].get(pk, [])
                if self.is_therapy_encounter(e) and (d := parse_date(element(e, "period").get("start"))) is not None
            }
            self._therapy_dates[pk] = sorted(dates)
        return self._therapy_dates[pk]

    # ------------------------------------------------------------ assembly

    def build(self, encounter: Resource, *, payer_override: str | None = None) -> TherapyVisit:
        """The visit of one encounter.

        The readers treat a wrong-typed element as absent; should one still trip over malformed data, this
        encounter comes back unchecked with a data-quality finding (the others are unaffected). With
        PTGUARD_DEBUG set the error is raised instead.
        """
        try:
            return self._assemble(encounter, payer_override=payer_override)
        except MALFORMED_DATA as exc:
            if debugging():
                raise
            log.warning("an encounter could not be read; it is reported unchecked (%s)", type(exc).__name__)
            ref = self.index.label(encounter)
            visit = TherapyVisit(
                encounter_reference=ref,
                encounter_id=text(encounter.get("id")) or ref,
                patient_reference=ref_string(encounter.get("subject")) or "",
                patient_name="",
                visit_date=parse_date(element(encounter, "period").get("start")),
                start=None,
                payer_id=payer_override or "default-commercial",
                payer_name="",
                payer_reference=None,
                coverage_reference=None,
            )
            return mark_unchecked(visit, exc)

    def _assemble(self, encounter: Resource, *, payer_override: str | None) -> TherapyVisit:
        ix = self.index
        ref = ix.label(encounter)
        findings: list[Finding] = []
        self.validate_resources = self.validate_limit is None or self.validated_encounters < self.validate_limit
        if self.validate_resources:
            self.validated_encounters += 1
            findings.extend(validate(encounter, ref))
        period = element(encounter, "period")
        start_raw = period.get("start")
        if start_raw is None:
            findings.append(
                data_quality(
                    "no-date", "Encounter has no period.start; date-based rules skipped", ref, severity="warning"
                )
            )
        elif parse_date(start_raw) is None:
            findings.append(
                data_quality(
                    "bad-date",
                    f"Encounter.period.start {str(start_raw)[:40]!r} is not a valid date; date-based rules skipped",
                    ref,
                    severity="warning",
                )
            )
        elif not has_zone(start_raw):
            findings.append(data_quality("no-timezone", "Encounter.period.start has no timezone offset", ref))
        elif isinstance(start_raw, str) and len(start_raw) < 10:
            findings.append(
                data_quality(
                    "partial-date",
                    f"Encounter.period.start {start_raw!r} gives no day; the first of the period was used",
                    ref,
                )
            )
        visit_date = parse_date(start_raw)
        patient = ix.resolve(encounter.get("subject"), encounter)
        pk: int | str | None = id(patient) if patient is not None else ref_string(encounter.get("subject"))
        if patient is None:
            findings.append(
                data_quality(
                    "missing-reference",
                    f"Encounter.subject {ref_string(encounter.get('subject')) or '(none)'} is not in the data",
                    ref,
                    severity="warning",
                )
            )
        visit = TherapyVisit(
            encounter_reference=ref,
            encounter_id=text(encounter.get("id")) or ref,
            patient_reference=ix.label(patient) if patient else (ref_string(encounter.get("subject")) or ""),
            patient_name=_human_name(patient),
            visit_date=visit_date,
            start=parse_datetime(start_raw),
            payer_id="default-commercial",
            payer_name="",
            payer_reference=None,
            coverage_reference=None,
            findings=findings,
        )
        self._procedures(visit, encounter)
        claims = self._billed(visit, encounter, pk)
        self._payer(visit, claims, pk, payer_override)
        self._notes(visit, encounter)
        if pk is not None:
            self._patient_context(visit, encounter, pk)
        return visit

    def _clinician(self, actor_ref: Any, source: Resource) -> Clinician | None:
        ix = self.index
        actor = ix.resolve(actor_ref, source)
        if actor is None:
            ref = ref_string(actor_ref)
            return Clinician(ref or "", "", "unknown", "unknown", ()) if ref else None
        words: list[str] = []
        practitioner = actor
        if actor.get("resourceType") == "PractitionerRole":
            for concept in elements(actor, "code"):
                words.extend(_coding_words(concept))
            practitioner = ix.resolve(actor.get("practitioner"), actor) or actor
        for q in elements(practitioner, "qualification"):
            words.extend(_coding_words(q.get("code")))
        role, discipline = self.roles.classify(words)
        quals = tuple(dict.fromkeys(w for w in words if w))
        return Clinician(ix.label(actor), _human_name(practitioner), role, discipline, quals)

    def _procedures(self, visit: TherapyVisit, encounter: Resource) -> None:
        ix = self.index
        for p in self.procs_by_enc.get(id(encounter), []):
            code = codes.procedure_code(p.get("code"))
            pref = ix.label(p)
            if not code or code not in self.therapy_codes:
                continue
            if text(p.get("status")) in {"not-done", "entered-in-error"}:
                continue
            if self.validate_resources:
                visit.findings.extend(validate(p, pref))
            minutes: int | None = None
            source = "none"
            raw_ext = _ext_value(p, "timed-minutes")
            ext = _minutes_value(raw_ext)
            if raw_ext is not None and ext is None:
                visit.findings.append(
                    data_quality(
                        "wrong-type",
                        f"{code}: the timed-minutes extension value {str(raw_ext)[:40]!r} is not a number; ignored",
                        pref,
                        severity="warning",
                    )
                )
            if ext is not None:
                minutes, source = ext, "timed-minutes extension"
            else:
                period = element(p, "performedPeriod")
                span = minutes_between(period.get("start"), period.get("end"))
                if span is not None:
                    minutes, source = span, "performedPeriod"
                else:
                    for note in elements(p, "note"):
                        m = _MIN_IN_TEXT.search(text(note.get("text")) or "")
                        if m:
                            minutes, source = int(m.group(1)), "Procedure.note"
                            break
            if minutes is not None and not 0 <= minutes <= MAX_MINUTES:
                visit.findings.append(
                    data_quality(
                        "implausible-minutes",
                        f"{code}: {minutes} minutes (from {source}) is not a plausible treatment time; ignored",
                        pref,
                        severity="warning",
                    )
                )
                minutes, source = None, "none"
            if minutes is None and code in self.timed_codes:
                visit.findings.append(
                    data_quality(
                        "no-minutes",
                        f"{code} has no recorded minutes (timed-minutes, performedPeriod or note)",
                        pref,
                        severity="warning",
                    )
                )
            mods = [
                ext.get("valueCoding") for ext in elements(p, "extension") if ext.get("url") == EXT + "modifier"
            ]
            performers = tuple(
                c
                for perf in elements(p, "performer")
                if (c := self._clinician(perf.get("actor"), p)) is not None
            )
            assistant = _number(_ext_value(p, "assistant-minutes"))
            assistant_minutes: int | None
            if assistant is not None and math.isfinite(assistant):
                assistant_minutes = int(assistant)
            elif performers and all(c.role == "assistant" for c in performers):
                assistant_minutes = minutes
            elif any(c.role == "assistant" for c in performers):
                assistant_minutes = None
            else:
                assistant_minutes = 0
            visit.procedures.append(
                ProcedureLine(pref, code, minutes, source, _modifier_codes(mods), performers, assistant_minutes)
            )

    def _claim_diagnoses(self, claim: Resource) -> dict[int, str]:
        out: dict[int, str] = {}
        for d in elements(claim, "diagnosis"):
            code = codes.code_in(d.get("diagnosisCodeableConcept"), (codes.ICD10CM,))
            if not code and d.get("diagnosisReference"):
                cond = self.index.resolve(d.get("diagnosisReference"), claim)
                code = codes.code_in(element(cond, "code") or None, (codes.ICD10CM,))
            seq = d.get("sequence")
            if code and isinstance(seq, int) and not isinstance(seq, bool):
                out[seq] = code
        return out

    def _billed(self, visit: TherapyVisit, encounter: Resource, pk: int | str | None) -> list[Resource]:
        ix = self.index
        pairs = list(self.items_by_enc.get(id(encounter), []))
        if not pairs and pk is not None and visit.visit_date is not None:
            for claim in self.claims_by_patient.get(pk, []):
                for item in elements(claim, "item"):
                    if parse_date(item.get("servicedDate")) == visit.visit_date and not item.get("encounter"):
                        pairs.append((claim, item))
        claims: list[Resource] = []
        for claim, item in pairs:
            code = self._code_of(item, "productOrService")
            if not code:
                continue
            if claim not in claims:
                claims.append(claim)
                if self.validate_resources:
                    visit.findings.extend(validate(claim, ix.label(claim)))
            dx = self._claim_diagnoses(claim)
            raw_seq = item.get("sequence")
            seq = raw_seq if isinstance(raw_seq, int) and not isinstance(raw_seq, bool) else None
            pointers = integers(item, "diagnosisSequence")
            diagnoses = tuple(dx[p] for p in pointers if p in dx) or tuple(dx.values())
            units = _number(item.get("quantity"))
            if item.get("quantity") is not None and (units is None or units < 0 or units > 96):
                visit.findings.append(
                    data_quality(
                        "bad-units",
                        f"{code}: quantity {str(item.get('quantity'))[:40]} is not a usable number of units; billed units unknown",
                        f"{ix.label(claim)}#item{seq if seq is not None else '?'}",
                        severity="warning",
                    )
                )
                units = None
            visit.billed.append(
                BilledLine(
                    reference=f"{ix.label(claim)}#item{seq if seq is not None else '?'}",
                    claim_reference=ix.label(claim),
                    sequence=seq,
                    code=code,
                    modifiers=_modifier_codes(elements(item, "modifier")),
                    units=units,
                    net=_money(item.get("net")),
                    diagnoses=diagnoses,
                )
            )
            for d in diagnoses:
                if d not in visit.diagnoses:
                    visit.diagnoses.append(d)
        return claims

    def _payer(self, visit: TherapyVisit, claims: list[Resource], pk: int | str | None, override: str | None) -> None:
        ix = self.index
        coverage: Resource | None = None
        for claim in claims:
            insurances = elements(claim, "insurance")
            insurances.sort(key=lambda i: i.get("focal") is not True)
            for ins in insurances:
                coverage = ix.resolve(ins.get("coverage"), claim)
                if coverage:
                    break
            if coverage:
                break
        if coverage is None and pk is not None:
            for cov in self.by_patient["Coverage"].get(pk, []):
                if cov.get("status") is not None and text(cov.get("status")) != "active":
                    continue
                period = element(cov, "period")
                s, e = parse_date(period.get("start")), parse_date(period.get("end"))
                d = visit.visit_date
                if d is None or ((s is None or s <= d) and (e is None or d <= e)):
                    coverage = cov
                    break
        org: Resource | None = None
        display = ""
        if coverage is not None:
            visit.coverage_reference = ix.label(coverage)
            payors = elements(coverage, "payor")
            payor = payors[0] if payors else None
            org = ix.resolve(payor, coverage)
            display = (text(payor.get("display")) or "") if payor is not None else ""
            visit.payer_reference = ix.label(org) if org else ref_string(payor)
            ytd_ext = _money(_ext_value(coverage, "ytd-therapy-amount"))
            if ytd_ext is not None:
                visit.ytd_therapy_amount = ytd_ext
        visit.payer_name = _human_name(org) or display
        if override:
            visit.payer_id = override
        elif coverage is not None:
            visit.payer_id = self.payers.payer_for(org, display)
        else:
            visit.findings.append(
                data_quality(
                    "no-coverage",
                    "no Coverage found for this visit; default commercial criteria used",
                    visit.encounter_reference,
                    severity="warning",
                )
            )

    def _notes(self, visit: TherapyVisit, encounter: Resource) -> None:
        ix = self.index
        # The rules scan at most this many characters per note (narrative-patterns.yaml `max_note_characters`):
        # a megabyte-sized note would otherwise cost seconds of regex time on every check.
        limit = int(table("narrative-patterns").get("max_note_characters") or 100_000)

        def add(ref: str, body: str, kind: str) -> None:
            body = body.strip()
            if len(body) > limit:
                visit.findings.append(
                    data_quality("note-truncated", f"note truncated to {limit} characters for checking", ref)
                )
                body = body[:limit]
            visit.notes.append(NoteText(ref, body, kind))

        for doc in self.docs_by_enc.get(id(encounter), []):
            if doc.get("status") == "entered-in-error":
                continue
            dref = ix.label(doc)
            for content in elements(doc, "content"):
                att = element(content, "attachment")
                if not att:
                    continue
                try:
                    content_text = _attachment_text(att)
                except AttachmentError as exc:
                    visit.findings.append(data_quality("note-unreadable", str(exc), dref, severity="warning"))
                    continue
                if content_text is None:
                    if att.get("url") and not att.get("data"):
                        visit.findings.append(
                            data_quality("note-not-inline", "note text is only at a URL; not read", dref)
                        )
                    continue
                add(dref, content_text, "note")
        for comp in self.comps_by_enc.get(id(encounter), []):
            cref = ix.label(comp)
            stack = elements(comp, "section")
            while stack:
                sec = stack.pop(0)
                div = text(element(sec, "text").get("div"))
                if div is not None:
                    add(cref, html_to_text(div), "composition")
                stack.extend(elements(sec, "section"))
        for p in self.procs_by_enc.get(id(encounter), []):
            for note in elements(p, "note"):
                note_text = text(note.get("text"))
                if note_text is not None:
                    add(ix.label(p), note_text, "procedure-note")

    def _patient_context(self, visit: TherapyVisit, encounter: Resource, pk: int | str) -> None:
        ix = self.index
        vd = visit.visit_date
        for obs in self.by_patient["Observation"].get(pk, []):
            if text(obs.get("status")) in {"entered-in-error", "cancelled"}:
                continue
            when = parse_date(obs.get("effectiveDateTime") or element(obs, "effectivePeriod").get("start"))
            if vd and when and when > vd:
                continue
            value = _observation_value(obs)
            if value is None:
                continue
            this_visit = ix.resolve(obs.get("encounter"), obs) is encounter
            visit.measures.append(Measure(ix.label(obs), codes.text_of(obs.get("code")), value, when, this_visit))
        for goal in self.by_patient["Goal"].get(pk, []):
            goal_text = codes.text_of(goal.get("description"))
            due = next(
                (
                    parse_date(t.get("dueDate"))
                    for t in elements(goal, "target")
                    if t.get("dueDate")
                ),
                None,
            )
            visit.goals.append(GoalInfo(ix.label(goal), goal_text, due, text(goal.get("lifecycleStatus")) or ""))
        for plan in self.by_patient["CarePlan"].get(pk, []):
            if text(plan.get("status")) in {"entered-in-error", "revoked", "draft"}:
                continue
            period = element(plan, "period")
            planned = tuple(
                c
                for act in elements(plan, "activity")
                if (c := codes.procedure_code(element(act, "detail").get("code")))
            )
            visit.plans.append(
                PlanOfCare(
                    ix.label(plan),
                    parse_date(period.get("start")),
                    parse_date(period.get("end")),
                    parse_date(_ext_value(plan, "poc-certified")),
                    parse_date(_ext_value(plan, "poc-sent")),
                    planned,
                )
            )
        for sr in self.by_patient["ServiceRequest"].get(pk, []):
            if text(sr.get("status")) in {"entered-in-error", "revoked"}:
                continue
            requester = ix.resolve(sr.get("requester"), sr)
            visit.referrals.append(Referral(ix.label(sr), parse_date(sr.get("authoredOn")), _human_name(requester)))
        self._episode(visit, pk)
        self._ytd(visit, pk)
        if not visit.diagnoses:
            for reason in elements(encounter, "reasonCode"):
                code = codes.code_in(reason, (codes.ICD10CM,))
                if code:
                    visit.diagnoses.append(code)

    def current_plan(self, visit: TherapyVisit) -> PlanOfCare | None:
        """The plan whose period covers the visit, else the latest one that started before it."""
        vd = visit.visit_date
        if vd is None or not visit.plans:
            return visit.plans[0] if visit.plans else None
        covering = [p for p in visit.plans if p.start and p.start <= vd and (p.end is None or vd <= p.end)]
        if covering:
            return max(covering, key=lambda p: p.start or date.min)
        before = [p for p in visit.plans if p.start and p.start <= vd]
        return max(before, key=lambda p: p.start or date.min) if before else None

    def _episode(self, visit: TherapyVisit, pk: int | str) -> None:
        vd = visit.visit_date
        if vd is None:
            return
        dates = self._therapy_dates_for(pk)
        plan = self.current_plan(visit)
        start = plan.start if plan and plan.start else (dates[0] if dates else vd)
        visit.episode_start = start
        in_episode = [d for d in dates if start <= d <= vd]
        visit.treatment_day = len(in_episode) or None
        reports: list[tuple[date, str]] = []
        for doc in self.docs_by_patient.get(pk, []):
            type_text = codes.text_of(doc.get("type"))
            if not _PROGRESS.search(type_text):
                continue
            d = parse_date(doc.get("date"))
            if d and start <= d <= vd:
                reports.append((d, self.index.label(doc)))
        if reports:
            last, ref = max(reports)
            visit.last_progress_report, visit.progress_report_reference = last, ref
            visit.treatment_days_since_report = len([d for d in in_episode if d > last])
        else:
            visit.treatment_days_since_report = visit.treatment_day

    def _ytd(self, visit: TherapyVisit, pk: int | str) -> None:
        vd = visit.visit_date
        if vd is None:
            return
        before = 0.0
        current = 0.0
        seen = False
        for claim in self.claims_by_patient.get(pk, []):
            for item in elements(claim, "item"):
                code = self._code_of(item, "productOrService")
                net = _money(item.get("net"))
                d = parse_date(item.get("servicedDate")) or parse_date(element(claim, "billablePeriod").get("start"))
                if not code or code not in self.therapy_codes or net is None or d is None or d.year != vd.year:
                    continue
                seen = True
                if d < vd:
                    before += net
                elif d == vd:
                    current += net
        if seen or visit.ytd_therapy_amount is not None:
            visit.ytd_therapy_amount = (visit.ytd_therapy_amount or 0.0) + before
            visit.this_visit_amount = current


def _observation_value(obs: Resource) -> str | None:
    q = obs.get("valueQuantity")
    if isinstance(q, dict) and q.get("value") is not None:
        unit = text(q.get("unit")) or text(q.get("code")) or ""
        return f"{q['value']} {unit}".strip()
    for key in ("valueString", "valueInteger", "valueBoolean"):
        if key in obs:
            return str(obs[key])
    if isinstance(obs.get("valueCodeableConcept"), dict):
        return codes.text_of(obs["valueCodeableConcept"])
    return None


def build_visits(
    result: LoadResult,
    *,
    encounter_id: str | None = None,
    payer_override: str | None = None,
    payer_map: Path | None = None,
    validate_limit: int | None = None,
) -> tuple[ChartBuilder, list[TherapyVisit]]:
    """All therapy visits of a load (or the one asked for), with the builder that made them.

    `validate_limit` caps how many encounters get full fhir.resources validation (None = all, 0 = none):
    bulk exports come from one system, so their first encounters show its data-quality problems.
    """
    builder = ChartBuilder(result, payer_map=payer_map, validate_limit=validate_limit)
    encounters = builder.therapy_encounters()
    if encounter_id is not None:
        wanted = encounter_id.split("/")[-1]
        encounters = [e for e in builder.index.of_type("Encounter") if str(e.get("id")) == wanted]
    return builder, [builder.build(e, payer_override=payer_override) for e in encounters]
