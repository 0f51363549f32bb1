"""Build the synthetic Riverbend clinic FHIR R4 transaction Bundles in fhir_fixtures/ (deterministic)."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fhir_fixtures"

FIXTURE_ID = "https://ptguard.dev/fixture-id"
FIXTURE_URL = "https://ptguard.dev/fixture/"
EXT = "https://ptguard.dev/fhir/StructureDefinition/"
PAYER_ID = "https://ptguard.dev/payer-id"
NPI = "http://hl7.org/fhir/sid/us-npi"
MRN = "https://riverbend-pt.example/mrn"

CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
CARC = "https://x12.org/codes/claim-adjustment-reason-codes"
RARC = "https://x12.org/codes/remittance-advice-remark-codes"
GROUP = "https://x12.org/codes/claim-adjustment-group-codes"
ADJ = "http://terminology.hl7.org/CodeSystem/adjudication"
C4BB = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudicationDiscriminator"
V2_0360 = "http://terminology.hl7.org/CodeSystem/v2-0360"
NUCC = "http://nucc.org/provider-taxonomy"
UCUM = "http://unitsofmeasure.org"

Json = dict[str, Any]

# --------------------------------------------------------------------------------------------------
# Code tables (short paraphrased descriptors; prices are the clinic's invented charge master)
# --------------------------------------------------------------------------------------------------
CPT_DISPLAY = {
    "97161": "Physical therapy evaluation, low complexity",
    "97165": "Occupational therapy evaluation, low complexity",
    "97110": "Therapeutic exercise, each 15 minutes",
    "97112": "Neuromuscular re-education, each 15 minutes",
    "97116": "Gait training, each 15 minutes",
    "97140": "Manual therapy techniques, each 15 minutes",
    "97530": "Therapeutic activities, each 15 minutes",
    "97535": "Self-care/home management training, each 15 minutes",
}
FEES = {
    "97161": 150.00,
    "97165": 155.00,
    "97110": 55.00,
    "97112": 58.00,
    "97116": 52.00,
    "97140": 52.00,
    "97530": 65.00,
    "97535": 58.00,
}
MODIFIER_DISPLAY = {
    "GP": "Services delivered under an outpatient physical therapy plan of care",
    "GO": "Services delivered under an outpatient occupational therapy plan of care",
    "CQ": "Outpatient PT services furnished in whole or in part by a physical therapist assistant",
    "CO": "Outpatient OT services furnished in whole or in part by an occupational therapy assistant",
    "KX": "Requirements specified in the medical policy have been met",
    "59": "Distinct procedural service",
    "XE": "Separate encounter",
    "XS": "Separate structure",
    "XP": "Separate practitioner",
    "XU": "Unusual non-overlapping service",
}
ICD_DISPLAY = {
    "S39.012D": "Strain of muscle, fascia and tendon of lower back, subsequent encounter",
    "M17.11": "Unilateral primary osteoarthritis, right knee",
    "S46.011D": "Strain of muscle(s) and tendon(s) of the rotator cuff of right shoulder, subsequent encounter",
    "Z47.1": "Aftercare following joint replacement surgery",
    "Z96.651": "Presence of right artificial knee joint",
    "Z96.641": "Presence of right artificial hip joint",
    "M75.02": "Adhesive capsulitis of left shoulder",
    "R26.81": "Unsteadiness on feet",
    "M62.81": "Muscle weakness (generalized)",
    "M48.062": "Spinal stenosis, lumbar region with neurogenic claudication",
    "G20.A1": "Parkinson's disease without dyskinesia, without mention of fluctuations",
    "S83.511D": "Sprain of anterior cruciate ligament of right knee, subsequent encounter",
    "M54.16": "Radiculopathy, lumbar region",
    "M17.0": "Bilateral primary osteoarthritis of knee",
    "R26.2": "Difficulty in walking, not elsewhere classified",
    "S52.531D": "Colles' fracture of right radius, subsequent encounter for closed fracture with routine healing",
}
CARC_DISPLAY = {
    "50": "These are non-covered services because this is not deemed a 'medical necessity' by the payer.",
    "97": "The benefit for this service is included in the payment/allowance for another service/procedure "
    "that has already been adjudicated.",
}
RARC_DISPLAY = {
    "N130": "Consult plan benefit documents/guidelines for information about restrictions for this service.",
    "N657": "This should be billed with the appropriate code for these services.",
    "M80": "Not covered when performed during the same session/date as a previously processed service "
    "for the patient.",
}
GROUP_DISPLAY = {"CO": "Contractual Obligations", "PR": "Patient Responsibility"}


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------
def full_url(slug: str) -> str:
    """The urn:uuid fullUrl every fixture resource gets, derived from its slug."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, FIXTURE_URL + slug)}"


def ref(slug: str, display: str | None = None) -> Json:
    out: Json = {"reference": full_url(slug)}
    if display:
        out["display"] = display
    return out


def offset(day: date) -> str:
    """UTC offset of the clinic's zone (US Eastern) on a 2026/2027 day: EDT 8 Mar-31 Oct 2026, else EST."""
    return "-04:00" if date(2026, 3, 8) <= day < date(2026, 11, 1) else "-05:00"


def ts(day: str, hm: str) -> str:
    d = date.fromisoformat(day)
    return f"{day}T{hm}:00{offset(d)}"


def add_minutes(day: str, hm: str, minutes: int) -> str:
    t = datetime.fromisoformat(f"{day}T{hm}") + timedelta(minutes=minutes)
    return t.strftime("%H:%M")


def money(value: float) -> Json:
    return {"value": round(value, 2), "currency": "USD"}


def fake_npi(n: int) -> str:
    """An obviously invented NPI (199990nnn + check digit) that passes the Luhn check with prefix 80840."""
    base = f"199990{n:03d}"
    digits = "80840" + base
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return base + str((10 - total % 10) % 10)


def cpt(code: str) -> Json:
    return {"coding": [{"system": CPT, "code": code, "display": CPT_DISPLAY[code]}], "text": CPT_DISPLAY[code]}


def modifier(code: str) -> Json:
    system = CPT if code.isdigit() else HCPCS
    return {"coding": [{"system": system, "code": code, "display": MODIFIER_DISPLAY[code]}]}


def icd(code: str) -> Json:
    return {"coding": [{"system": ICD10, "code": code, "display": ICD_DISPLAY[code]}]}


def resource(rtype: str, slug: str, extra_ids: list[Json] | None = None, **body: Any) -> Json:
    out: Json = {"resourceType": rtype, "id": slug}
    ext = body.pop("extension", None)
    if ext:
        out["extension"] = ext
    out["identifier"] = [{"system": FIXTURE_ID, "value": slug}, *(extra_ids or [])]
    out.update(body)
    return out


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


class Bundle:
    """An ordered transaction Bundle; adding the same slug twice must add the same resource."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.entries: dict[str, Json] = {}

    def add(self, res: Json) -> Json:
        slug = res["id"]
        if slug in self.entries:
            if self.entries[slug] != res:
                raise ValueError(f"slug {slug} added twice with different content")
            return self.entries[slug]
        self.entries[slug] = res
        return res

    def to_json(self) -> Json:
        return {
            "resourceType": "Bundle",
            "id": f"bundle-{self.name}",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": full_url(slug),
                    "resource": res,
                    "request": {
                        "method": "POST",
                        "url": res["resourceType"],
                        "ifNoneExist": f"identifier={FIXTURE_ID}|{slug}",
                    },
                }
                for slug, res in self.entries.items()
            ],
        }


# --------------------------------------------------------------------------------------------------
# Shared resources: clinic, payers, practitioners
# --------------------------------------------------------------------------------------------------
CLINIC = "org-riverbend"
CLINIC_NAME = "Riverbend Physical Therapy"
CLINIC_ADDRESS = {
    "line": ["1200 Fixture Lane, Suite 4"],
    "city": "Harrisburg",
    "state": "PA",
    "postalCode": "17101",
    "country": "US",
}

PAYERS: dict[str, str] = {
    "aetna": "Aetna Life Insurance Company",
    "uhc": "UnitedHealthcare Insurance Company",
    "cigna": "Cigna Health and Life Insurance Company",
    "anthem": "Anthem Blue Cross",
    "bcbs": "Blue Cross Blue Shield of Texas",
    "humana": "Humana Insurance Company",
    "medicare": "Medicare Part B (Novitas Solutions)",
    "medicare-advantage": "Humana Medicare Advantage",
    "molina": "Molina Healthcare",
    "medicaid-mco": "Sunflower Health Plan (Medicaid)",
}


@dataclass(frozen=True)
class Clinician:
    slug: str
    given: str
    family: str
    suffix: str
    qual: str  # v2-0360 code: PT, PTA, OT, MD
    qual_display: str
    taxonomy: str
    taxonomy_display: str
    npi_n: int
    gender: str

    @property
    def display(self) -> str:
        return f"{self.given} {self.family}, {self.suffix}"


CLINICIANS: dict[str, Clinician] = {
    c.slug: c
    for c in [
        Clinician("prac-okafor", "Renata", "Okafor", "PT, DPT", "PT", "Physical Therapist",
                  "225100000X", "Physical Therapist", 101, "female"),
        Clinician("prac-lindqvist", "Anders", "Lindqvist", "PT", "PT", "Physical Therapist",
                  "225100000X", "Physical Therapist", 102, "male"),
        Clinician("prac-brennan", "Colin", "Brennan", "PTA", "PTA", "Physical Therapist Assistant",
                  "225200000X", "Physical Therapy Assistant", 103, "male"),
        Clinician("prac-haddad", "Leila", "Haddad", "OTR/L", "OT", "Occupational Therapist",
                  "225X00000X", "Occupational Therapist", 104, "female"),
        Clinician("prac-castellano", "Victor", "Castellano", "MD", "MD", "Doctor of Medicine",
                  "207X00000X", "Orthopaedic Surgery", 105, "male"),
        Clinician("prac-ramanathan", "Priya", "Ramanathan", "MD", "MD", "Doctor of Medicine",
                  "207Q00000X", "Family Medicine", 106, "female"),
    ]
}


def clinic_org() -> Json:
    return resource(
        "Organization",
        CLINIC,
        [{"system": NPI, "value": fake_npi(900)}],
        active=True,
        type=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                           "code": "prov", "display": "Healthcare Provider"}]}],
        name=CLINIC_NAME,
        telecom=[{"system": "phone", "value": "555-0100", "use": "work"}],
        address=[CLINIC_ADDRESS],
    )


def payer_org(payer: str) -> Json:
    return resource(
        "Organization",
        f"org-payer-{payer}",
        [{"system": PAYER_ID, "value": payer}],
        active=True,
        type=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                           "code": "pay", "display": "Payer"}]}],
        name=PAYERS[payer],
    )


def practitioner(c: Clinician) -> Json:
    return resource(
        "Practitioner",
        c.slug,
        [{"system": NPI, "value": fake_npi(c.npi_n)}],
        active=True,
        name=[{"use": "official", "family": c.family, "given": [c.given], "suffix": [c.suffix],
               "text": c.display}],
        gender=c.gender,
        qualification=[{"code": {"coding": [{"system": V2_0360, "code": c.qual, "display": c.qual_display}],
                                 "text": c.qual}}],
    )


def practitioner_role(c: Clinician) -> Json:
    slug = c.slug.replace("prac-", "role-")
    body: Json = {
        "active": True,
        "practitioner": ref(c.slug, c.display),
        "code": [{"coding": [{"system": NUCC, "code": c.taxonomy, "display": c.taxonomy_display}],
                  "text": c.qual}],
    }
    if c.qual != "MD":
        body["organization"] = ref(CLINIC, CLINIC_NAME)
    return resource("PractitionerRole", slug, **body)


def add_shared(b: Bundle, payers: list[str], clinicians: list[str]) -> None:
    b.add(clinic_org())
    for p in payers:
        b.add(payer_org(p))
    for slug in clinicians:
        c = CLINICIANS[slug]
        b.add(practitioner(c))
        if c.qual != "MD":
            b.add(practitioner_role(c))


# --------------------------------------------------------------------------------------------------
# Patient-level and visit-level builders
# --------------------------------------------------------------------------------------------------
@dataclass
class Line:
    code: str
    minutes: int
    units: int
    modifiers: tuple[str, ...] = ()
    performer: str | None = None  # defaults to the visit's clinician
    assistant_minutes: int | None = None


@dataclass
class Obs:
    key: str
    text: str
    value: float
    unit: str
    ucum: str


@dataclass
class Ctx:
    """One patient's bundle and the slugs its visits refer to."""

    bundle: Bundle
    file: str
    payer: str
    pkey: str  # surname slug, e.g. "whitfield"
    patient_name: str
    discipline: str  # PT or OT
    therapist: str
    dx: list[str]
    claims: dict[str, list[Json]] = field(default_factory=dict)

    @property
    def patient(self) -> str:
        return f"pat-{self.pkey}"

    @property
    def coverage(self) -> str:
        return f"cov-{self.pkey}"

    @property
    def referral(self) -> str:
        return f"sr-{self.pkey}"


def make_patient(
    *,
    payer: str,
    given: str,
    family: str,
    birth: str,
    gender: str,
    mrn: str,
    member_id: str,
    coverage_type: str,
    dx: list[str],
    therapist: str,
    referrer: str,
    referral_date: str,
    poc_start: str,
    poc_end: str,
    poc_certified: str,
    goals: list[tuple[str, str]],
    planned: list[str],
    discipline: str = "PT",
    extra_clinicians: tuple[str, ...] = (),
    ytd_amount: float | None = None,
) -> Ctx:
    pkey = family.lower().replace(" ", "-")
    file = f"patient-{payer}-{pkey}.json"
    b = Bundle(f"{payer}-{pkey}")
    add_shared(b, [payer], [therapist, *extra_clinicians, referrer])
    name = f"{given} {family}"
    ctx = Ctx(b, file, payer, pkey, name, discipline, therapist, dx)

    b.add(resource(
        "Patient",
        ctx.patient,
        [{"system": MRN, "value": mrn}],
        active=True,
        name=[{"use": "official", "family": family, "given": [given]}],
        gender=gender,
        birthDate=birth,
        telecom=[{"system": "phone", "value": "555-0199", "use": "home"}],
        address=[{"line": ["1 Example Court"], "city": "Harrisburg", "state": "PA", "postalCode": "17101"}],
        managingOrganization=ref(CLINIC, CLINIC_NAME),
    ))

    cov_ext = None
    if ytd_amount is not None:
        cov_ext = [{"url": EXT + "ytd-therapy-amount", "valueMoney": money(ytd_amount)}]
    b.add(resource(
        "Coverage",
        ctx.coverage,
        [{"system": f"https://ptguard.dev/member-id/{payer}", "value": member_id}],
        extension=cov_ext,
        status="active",
        type={"text": coverage_type},
        subscriber=ref(ctx.patient, name),
        subscriberId=member_id,
        beneficiary=ref(ctx.patient, name),
        relationship={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
                                  "code": "self", "display": "Self"}]},
        period={"start": "2026-01-01", "end": "2026-12-31"},
        payor=[ref(f"org-payer-{payer}", PAYERS[payer])],
        order=1,
    ))

    discipline_word = "Physical" if discipline == "PT" else "Occupational"
    referrer_c = CLINICIANS[referrer]
    b.add(resource(
        "ServiceRequest",
        ctx.referral,
        status="active",
        intent="order",
        category=[{"text": "Referral"}],
        code={"text": f"{discipline_word} therapy evaluation and treatment"},
        subject=ref(ctx.patient, name),
        authoredOn=referral_date,
        requester=ref(referrer, referrer_c.display),
        performer=[ref(CLINIC, CLINIC_NAME)],
        reasonCode=[icd(code) for code in dx],
    ))

    goal_slugs = []
    for i, (text, due) in enumerate(goals, start=1):
        slug = f"goal-{pkey}-{i}"
        goal_slugs.append(slug)
        b.add(resource(
            "Goal",
            slug,
            lifecycleStatus="active",
            achievementStatus={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/goal-achievement",
                                           "code": "in-progress", "display": "In Progress"}]},
            category=[{"text": "Functional"}],
            description={"text": text},
            subject=ref(ctx.patient, name),
            startDate=poc_start,
            target=[{"dueDate": due}],
            expressedBy=ref(therapist, CLINICIANS[therapist].display),
        ))

    b.add(resource(
        "CarePlan",
        f"poc-{pkey}",
        extension=[{"url": EXT + "poc-certified", "valueDateTime": poc_certified}],
        basedOn=[ref(ctx.referral)],
        status="active",
        intent="plan",
        category=[{"text": "Plan of care"}],
        title=f"{discipline_word} therapy plan of care",
        description=f"Outpatient {discipline_word.lower()} therapy, 2-3 visits per week; certification period "
        f"{poc_start} to {poc_end}.",
        subject=ref(ctx.patient, name),
        period={"start": poc_start, "end": poc_end},
        created=poc_start,
        author=ref(therapist, CLINICIANS[therapist].display),
        goal=[ref(s) for s in goal_slugs],
        activity=[{"detail": {"kind": "ServiceRequest", "code": cpt(code), "status": "in-progress",
                              "description": CPT_DISPLAY[code]}} for code in planned],
    ))
    return ctx


def add_observation(ctx: Ctx, slug: str, o: Obs, when: str, encounter: str | None, performer: str) -> None:
    body: Json = {
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "exam", "display": "Exam"}]}],
        "code": {"text": o.text},
        "subject": ref(ctx.patient, ctx.patient_name),
    }
    if encounter:
        body["encounter"] = ref(encounter)
    body["effectiveDateTime"] = when
    body["performer"] = [ref(performer, CLINICIANS[performer].display)]
    body["valueQuantity"] = {"value": o.value, "unit": o.unit, "system": UCUM, "code": o.ucum}
    ctx.bundle.add(resource("Observation", slug, **body))


def add_visit(
    ctx: Ctx,
    key: str,
    day: str,
    start: str,
    lines: list[Line],
    *,
    note: str | None = None,
    note_type: str | None = None,
    clinician: str | None = None,
    observations: list[Obs] | None = None,
) -> str:
    """Encounter + one Procedure per code + optional note/observations + the Claim. Returns the Encounter slug."""
    b = ctx.bundle
    clinician = clinician or ctx.therapist
    enc = f"enc-{key}"
    word = "physical" if ctx.discipline == "PT" else "occupational"
    t = add_minutes(day, start, 5)
    spans = []
    for line in lines:
        end = add_minutes(day, t, line.minutes)
        spans.append((t, end))
        t = end
    enc_end = add_minutes(day, t, 5)
    b.add(resource(
        "Encounter",
        enc,
        status="finished",
        **{"class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                     "display": "ambulatory"}},
        type=[{"text": f"Outpatient {word} therapy visit"}],
        subject=ref(ctx.patient, ctx.patient_name),
        participant=[{
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                  "code": "PPRF", "display": "primary performer"}]}],
            "individual": ref(clinician, CLINICIANS[clinician].display),
        }],
        period={"start": ts(day, start), "end": ts(day, enc_end)},
        basedOn=[ref(ctx.referral)],
        serviceProvider=ref(CLINIC, CLINIC_NAME),
    ))

    for line, (s, e) in zip(lines, spans, strict=True):
        performer = line.performer or clinician
        ext: list[Json] = [{
            "url": EXT + "timed-minutes",
            "valueQuantity": {"value": line.minutes, "unit": "min", "system": UCUM, "code": "min"},
        }]
        if line.assistant_minutes is not None:
            ext.append({"url": EXT + "assistant-minutes", "valueInteger": line.assistant_minutes})
        if line.code in ("97161", "97165"):
            ext = []  # evaluations are untimed
        b.add(resource(
            "Procedure",
            f"proc-{key}-{line.code}",
            extension=ext,
            status="completed",
            code=cpt(line.code),
            subject=ref(ctx.patient, ctx.patient_name),
            encounter=ref(enc),
            performedPeriod={"start": ts(day, s), "end": ts(day, e)},
            performer=[{"actor": ref(performer, CLINICIANS[performer].display)}],
            reasonCode=[icd(ctx.dx[0])],
        ))

    if note:
        title = note_type or f"{ctx.discipline} daily treatment note"
        b.add(resource(
            "DocumentReference",
            f"doc-{key}-note",
            status="current",
            docStatus="final",
            type={"text": title},
            category=[{"text": "Clinical note"}],
            subject=ref(ctx.patient, ctx.patient_name),
            date=ts(day, enc_end),
            author=[ref(clinician, CLINICIANS[clinician].display)],
            description=f"{title}, {day}",
            content=[{"attachment": {"contentType": "text/plain", "language": "en-US", "data": b64(note),
                                     "title": f"{title} {day}", "creation": ts(day, enc_end)}}],
            context={"encounter": [ref(enc)], "period": {"start": ts(day, start), "end": ts(day, enc_end)}},
        ))

    for o in observations or []:
        add_observation(ctx, f"obs-{key}-{o.key}", o, ts(day, enc_end), enc, clinician)

    # Claim
    items = []
    care_team = [{"sequence": 1, "provider": ref(ctx.therapist, CLINICIANS[ctx.therapist].display),
                  "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claimcareteamrole",
                                       "code": "primary", "display": "Primary provider"}]}}]
    if clinician != ctx.therapist:
        care_team.append({"sequence": 2, "provider": ref(clinician, CLINICIANS[clinician].display),
                          "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claimcareteamrole",
                                               "code": "assist", "display": "Assisting Provider"}]}})
    for seq, line in enumerate(lines, start=1):
        item: Json = {
            "sequence": seq,
            "careTeamSequence": [ct["sequence"] for ct in care_team],
            "diagnosisSequence": list(range(1, len(ctx.dx) + 1)),
            "productOrService": cpt(line.code),
        }
        if line.modifiers:
            item["modifier"] = [modifier(m) for m in line.modifiers]
        item.update({
            "servicedDate": day,
            "locationCodeableConcept": {"coding": [{"system": "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set",
                                                    "code": "11", "display": "Office"}]},
            "quantity": {"value": line.units},
            "unitPrice": money(FEES[line.code]),
            "net": money(FEES[line.code] * line.units),
            "encounter": [ref(enc)],
        })
        items.append(item)
    claim = f"claim-{key}"
    ctx.claims[claim] = items
    b.add(resource(
        "Claim",
        claim,
        status="active",
        type={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional",
                          "display": "Professional"}]},
        use="claim",
        patient=ref(ctx.patient, ctx.patient_name),
        billablePeriod={"start": day, "end": day},
        created=ts(day, "18:00"),
        provider=ref(CLINIC, CLINIC_NAME),
        priority={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
        referral=ref(ctx.referral),
        careTeam=care_team,
        diagnosis=[{"sequence": i, "diagnosisCodeableConcept": icd(code)} for i, code in enumerate(ctx.dx, 1)],
        insurance=[{"sequence": 1, "focal": True, "coverage": ref(ctx.coverage)}],
        item=items,
        total=money(sum(i["net"]["value"] for i in items)),
    ))
    return enc


def add_progress_report(ctx: Ctx, key: str, day: str, text: str) -> None:
    ctx.bundle.add(resource(
        "DocumentReference",
        f"doc-{key}-progress",
        status="current",
        docStatus="final",
        type={"text": f"{ctx.discipline} progress report"},
        category=[{"text": "Clinical note"}],
        subject=ref(ctx.patient, ctx.patient_name),
        date=ts(day, "17:00"),
        author=[ref(ctx.therapist, CLINICIANS[ctx.therapist].display)],
        description=f"{ctx.discipline} progress report, {day}",
        content=[{"attachment": {"contentType": "text/plain", "language": "en-US", "data": b64(text),
                                 "title": f"Progress report {day}", "creation": ts(day, "17:00")}}],
        context={"encounter": [ref(f"enc-{key}")]},
    ))


def add_evaluation_doc(ctx: Ctx, key: str, day: str, text: str) -> None:
    ctx.bundle.add(resource(
        "DocumentReference",
        f"doc-{key}-eval",
        status="current",
        docStatus="final",
        type={"text": f"{ctx.discipline} initial evaluation"},
        category=[{"text": "Clinical note"}],
        subject=ref(ctx.patient, ctx.patient_name),
        date=ts(day, "17:00"),
        author=[ref(ctx.therapist, CLINICIANS[ctx.therapist].display)],
        content=[{"attachment": {"contentType": "text/plain", "language": "en-US", "data": b64(text),
                                 "title": f"Initial evaluation {day}", "creation": ts(day, "17:00")}}],
        context={"encounter": [ref(f"enc-{key}")]},
    ))


@dataclass
class Denial:
    item: int
    carc: str
    group: str
    rarc: str | None


def add_claim_response(
    ctx: Ctx, key: str, created: str, disposition: str, denials: list[Denial], paid: dict[int, float] | None = None
) -> None:
    claim = f"claim-{key}"
    items = ctx.claims[claim]
    paid = paid or {}
    out_items = []
    total_submitted = 0.0
    total_benefit = 0.0
    notes = []
    for item in items:
        seq = item["sequence"]
        submitted = item["net"]["value"]
        total_submitted += submitted
        denial = next((d for d in denials if d.item == seq), None)
        benefit = 0.0 if denial else paid.get(seq, 0.0)
        total_benefit += benefit
        adj: list[Json] = [
            {"category": {"coding": [{"system": ADJ, "code": "submitted", "display": "Submitted Amount"}]},
             "amount": money(submitted)},
            {"category": {"coding": [{"system": ADJ, "code": "benefit", "display": "Benefit Amount"}]},
             "amount": money(benefit)},
        ]
        item_out: Json = {"itemSequence": seq}
        if denial:
            # Same shape as ptguard/remit/to_fhir.py: group in an `adjudication-group` extension, RARC in a
            # `remark-code` item extension plus a numbered processNote. The category carries the CARIN
            # discriminator under both its STU1 name (denialreason) and its current name (rejectreason).
            adj.append({
                "extension": [{"url": EXT + "adjudication-group",
                               "valueCodeableConcept": {"coding": [{"system": GROUP, "code": denial.group,
                                                                    "display": GROUP_DISPLAY[denial.group]}]}}],
                "category": {"coding": [
                    {"system": C4BB, "code": "denialreason", "display": "Denial Reason"},
                    {"system": C4BB, "code": "rejectreason", "display": "Reject Reason"},
                ]},
                "reason": {"coding": [
                    {"system": CARC, "code": denial.carc, "display": CARC_DISPLAY[denial.carc]},
                    {"system": GROUP, "code": denial.group, "display": GROUP_DISPLAY[denial.group]},
                ], "text": f"{denial.group}-{denial.carc}"},
                "amount": money(submitted),
            })
            if denial.rarc:
                item_out["extension"] = [{"url": EXT + "remark-code", "valueCodeableConcept": {"coding": [
                    {"system": RARC, "code": denial.rarc, "display": RARC_DISPLAY[denial.rarc]}]}}]
                notes.append(f"RARC {denial.rarc} (line {seq}, {items[seq - 1]['productOrService']['coding'][0]['code']}):"
                             f" {RARC_DISPLAY[denial.rarc]}")
                item_out["noteNumber"] = [len(notes)]
        item_out["adjudication"] = adj
        out_items.append(item_out)
    body: Json = {
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional",
                             "display": "Professional"}]},
        "use": "claim",
        "patient": ref(ctx.patient, ctx.patient_name),
        "created": created,
        "insurer": ref(f"org-payer-{ctx.payer}", PAYERS[ctx.payer]),
        "requestor": ref(CLINIC, CLINIC_NAME),
        "request": ref(claim),
        "outcome": "complete",
        "disposition": disposition,
        "item": out_items,
        "total": [
            {"category": {"coding": [{"system": ADJ, "code": "submitted", "display": "Submitted Amount"}]},
             "amount": money(total_submitted)},
            {"category": {"coding": [{"system": ADJ, "code": "benefit", "display": "Benefit Amount"}]},
             "amount": money(total_benefit)},
        ],
        "payment": {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/ex-paymenttype",
                                 "code": "complete", "display": "Complete"}]},
            "date": created[:10],
            "amount": money(total_benefit),
        },
        "processNote": [{"number": i, "type": "display", "text": t} for i, t in enumerate(notes, start=1)],
    }
    if not notes:
        body.pop("processNote")
    ctx.bundle.add(resource("ClaimResponse", f"cr-{key}", **body))


# --------------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------------
@dataclass
class Scenario:
    key: str
    file: str
    payer: str
    visit_date: str
    discipline: str
    summary: str
    problems: list[str]
    shows: str


SCENARIOS: list[Scenario] = []
BUNDLES: list[Bundle] = []


def scenario(ctx: Ctx, key: str, day: str, summary: str, problems: list[str], shows: str) -> None:
    SCENARIOS.append(Scenario(key, ctx.file, ctx.payer, day, ctx.discipline, summary, problems, shows))


def prior_visits(ctx: Ctx, key: str, days: list[str], lines: list[Line], *, start: str = "09:00",
                 kx_from: int | None = None, first: int = 1, template: str | None = None,
                 values: list[dict[str, Any]] | None = None, obs: tuple[str, str, str, str] | None = None) -> None:
    """Earlier visits (encounter, procedures, claim, short note). kx_from: visit number from which KX is added.

    template/values give each visit a short daily note; obs = (key, text, unit, ucum) records values["measure"].
    """
    for n, day in enumerate(days, start=first):
        ls = []
        for line in lines:
            mods = line.modifiers
            if kx_from is not None and n >= kx_from:
                mods = (*mods, "KX")
            ls.append(Line(line.code, line.minutes, line.units, mods, line.performer, line.assistant_minutes))
        vals = values[n - first] if values else {}
        note = template.format(n=n, **vals) if template else None
        observations = [Obs(obs[0], obs[1], vals["measure"], obs[2], obs[3])] if obs and vals else None
        add_visit(ctx, f"{key}-p{n:02d}", day, start, ls, note=note, observations=observations)


LINDAHL_PRIOR = (
    "Visit {n} of the current episode. Patient reports hip pain {pain}/10 and that showering still makes her "
    "nervous. Therapeutic exercise (97110), 12 minutes in its own block: isolated hip abductor strengthening in "
    "standing with a yellow band. Therapeutic activities (97530), 26 minutes in a separate block: stepping into "
    "and out of a shower stall over a 5-inch threshold block while holding a grab bar, and retrieving clothes "
    "from a floor-level laundry basket with a reacher. These were dynamic, functional tasks combining "
    "single-leg stance, weight transfer and reaching to the floor. She completed {crossings} threshold crossings "
    "each direction; Five Times Sit to Stand {measure} seconds. When she lost balance on the crossing the "
    "therapist {mod}. She tolerated the session well and reported pain {pain}/10 at the end. Skilled guarding "
    "and task grading by the therapist were required for safety. Toward goal 1: step into and out of a shower "
    "stall over a 5-inch threshold independently. 97110 addressed isolated hip strength; 97530 addressed the "
    "functional bathing and laundry tasks. These tasks cannot be done alone as a home program yet because of "
    "her balance loss on the threshold."
)
PRUITT_PRIOR = (
    "Visit under the current plan of care. Patient reports leg tingling 2/10 after standing at the kitchen "
    "counter. Therapeutic exercise (97110), 12 minutes in a separate block: isolated lumbar flexion and hip "
    "strengthening. Therapeutic activities (97530), 26 minutes one-on-one: walking with a loaded shopping cart "
    "through a simulated store aisle with reaches to low and high shelves. The cart task was dynamic and functional, "
    "combining gait, trunk flexion and extension and reaching. She walked {measure} ft with the cart before "
    "needing to rest. When leg symptoms rose to 4/10 the therapist {mod}; symptoms settled to 2/10. She tolerated "
    "the session well. Skilled monitoring of neurogenic symptoms by the therapist was required to grade the "
    "task. Toward goal 1: walk 600 ft through a grocery store pushing a cart without stopping. 97110 addressed "
    "isolated strength; 97530 addressed the functional shopping task. The task cannot yet be done as an "
    "independent home program because symptom-guided pacing still needs the therapist."
)
GALLAGHER_PRIOR = (
    "Treatment day {n} of the episode. Patient reports freezing when turning at the kitchen counter this week. "
    "Therapeutic exercise (97110), 12 minutes in a separate block: isolated hip extensor and ankle dorsiflexor "
    "strengthening with a red band. Therapeutic activities (97530), 26 minutes: 180-degree turns carrying a cup "
    "between a counter and a table, and chair rise-to-walk trials, simulating moving around his kitchen. These "
    "were dynamic, multi-step functional tasks combining turning, weight shifting and dual-task carrying. He "
    "completed {turns} turns with the cup; TUG {measure} seconds. When he froze mid-turn the therapist {mod}. He "
    "tolerated the session well with mild fatigue. Skilled cueing and guarding were required because of his "
    "fall risk during turns. Toward goal 1: turn 180 degrees while carrying a cup without freezing to move "
    "around the kitchen safely. 97110 addressed isolated strength, whereas 97530 addressed the functional "
    "turning and transfer tasks. He cannot yet practise this safely as an independent home program because "
    "freezing persists without external cues."
)


def build_aetna() -> None:
    ctx = make_patient(
        payer="aetna", given="Gregory", family="Whitfield", birth="1979-03-14", gender="male", mrn="RB-TEST-0101",
        member_id="W-TEST-4410291", coverage_type="Commercial PPO", dx=["S39.012D"],
        therapist="prac-okafor", referrer="prac-castellano", referral_date="2026-10-05",
        poc_start="2026-10-12", poc_end="2027-01-09", poc_certified="2026-10-14T11:20:00-04:00",
        goals=[
            ("Lift a 35 lb box from floor to a 48-inch shelf with correct body mechanics to return to full duty "
             "as a warehouse associate", "2026-12-18"),
            ("Carry a 25 lb crate 100 ft with pain no higher than 2/10 to complete restocking rounds", "2026-12-18"),
        ],
        planned=["97530", "97110", "97140"],
    )
    add_observation(ctx, "obs-whitfield-baseline-lift",
                    Obs("lift", "Floor-to-waist lift, maximum load", 10, "lb", "[lb_av]"),
                    ts("2026-10-12", "10:00"), None, "prac-okafor")
    note = (
        "Patient reports low back stiffness after a 20-minute drive, pain 4/10 on arrival; he wants to return to "
        "full duty restocking shelves at the distribution center. Therapeutic activities (97530), 38 minutes of "
        "direct one-on-one time: floor-to-waist lifting of a weighted crate to simulate warehouse restocking, "
        "followed by carrying the crate 40 ft and placing it on a 48-inch shelf with a turn to either side. "
        "Set-up: a plastic milk crate loaded with sandbags to 20 lb, a 12-inch step to raise the pick-up height "
        "for the warm-up set, and an adjustable shelving unit set at 48 inches. This was a dynamic, "
        "multi-planar task combining squatting, hip hinge, carrying, trunk rotation and reaching, not isolated "
        "strengthening. He completed 3 sets of 5 lifts with 20 lb from floor to waist, 2 carries of 40 ft and "
        "10 shelf placements. During the second set he rounded the lumbar spine and lifted with trunk flexion, "
        "so the therapist reduced the load to 15 lb, moved the pick-up point back onto the step and added "
        "tactile and verbal cues for a hip hinge with a neutral spine; form was correct on the third set and the "
        "load was returned to 20 lb for the last 3 lifts. Patient tolerated the session well, reported pain 3/10 "
        "at the end and said the lift felt easier than last week. Skilled cueing and real-time adjustment of load "
        "and height by the therapist were required for safety because he loses lumbar neutral as he fatigues. "
        "This work is directed toward goal 1: lift 35 lb from floor to a 48-inch shelf with correct mechanics to "
        "return to full duty as a warehouse associate. Maximum lift has improved from 10 lb at evaluation to "
        "20 lb today. He cannot yet progress this safely as an independent home program because load and "
        "technique must be adjusted set by set. Plan: progress to 25 lb and add an uneven-surface carry next visit."
    )
    day = "2026-11-02"
    add_visit(ctx, "aetna-01", day, "09:00", [Line("97530", 38, 3, ("GP",))], note=note, observations=[
        Obs("lift", "Floor-to-waist lift, maximum load", 20, "lb", "[lb_av]"),
        Obs("carry", "Crate carry distance at 20 lb", 40, "ft", "[ft_i]"),
        Obs("pain", "Pain numeric rating scale, end of session", 3, "score", "{score}"),
    ])
    add_claim_response(ctx, "aetna-01", "2026-11-20T08:15:00-05:00",
                       "Claim denied: services not considered medically necessary under the member's plan "
                       "(clinical policy for physical therapy).",
                       [Denial(1, "50", "CO", "N130")])
    scenario(ctx, "aetna-01", day,
             "Well-documented 97530 (38 min, 3 units, GP) for warehouse lifting; denied CARC 50 - the appeal case.",
             [], "Clean note and claim; ClaimResponse CO-50 + N130 for the appeal builder")
    BUNDLES.append(ctx.bundle)


def build_uhc() -> None:
    ctx = make_patient(
        payer="uhc", given="Teresa", family="Delgado", birth="1965-07-02", gender="female", mrn="RB-TEST-0102",
        member_id="U-TEST-90817723", coverage_type="Commercial Choice Plus", dx=["M17.11"],
        therapist="prac-lindqvist", referrer="prac-ramanathan", referral_date="2026-09-28",
        poc_start="2026-10-01", poc_end="2026-12-29", poc_certified="2026-10-03T09:40:00-04:00",
        goals=[
            ("Climb a 14-step flight of stairs reciprocally with one rail to reach the upstairs bedroom",
             "2026-12-15"),
            ("Rise from a low sofa without arm support 5 times in a row to manage social outings", "2026-12-15"),
        ],
        planned=["97110", "97530", "97140"],
    )
    note = (
        "Patient arrived for scheduled session and reports right knee soreness 3/10 on stairs this week. "
        "Performed 30 minutes of exercise: squats 3x10 to chair height, theraband rows with green band 3x15, "
        "leg press 3x12 at 70 lb, bridges 3x15 and seated knee extension with a 5 lb ankle weight 3x10. "
        "Exercises were performed for lower extremity strengthening and general conditioning. "
        "Rest breaks of 60 seconds were taken between sets. "
        "Patient tolerated well with no increase in soreness; 3/10 at end of session. "
        "Home exercise program reviewed and patient reports doing it 4 times a week. "
        "Continue current program next visit."
    )
    day = "2026-10-20"
    add_visit(ctx, "uhc-01", day, "13:00", [Line("97530", 30, 2, ("GP",))], note=note, observations=[
        Obs("legpress", "Leg press, working load", 70, "lb", "[lb_av]"),
    ])
    add_claim_response(ctx, "uhc-01", "2026-11-06T10:02:00-05:00",
                       "Claim denied: documentation does not support the medical necessity of therapeutic "
                       "activities as billed.",
                       [Denial(1, "50", "CO", "N657")])
    scenario(ctx, "uhc-01", day,
             "Note describes plain strengthening (squats, rows, leg press, bridges) but bills 97530 x2; "
             "denied CARC 50.",
             ["note.activity-specific", "note.dynamic-functional", "note.functional-goal", "note.modifications", "note.skilled-need"],
             "97110-style note billed as 97530 (no functional task, no goal link, no modification, no skill)")
    BUNDLES.append(ctx.bundle)


def build_cigna() -> None:
    ctx = make_patient(
        payer="cigna", given="Kenji", family="Nakamura", birth="1971-11-23", gender="male", mrn="RB-TEST-0103",
        member_id="C-TEST-55102384", coverage_type="Commercial Open Access Plus", dx=["S46.011D"],
        therapist="prac-okafor", referrer="prac-castellano", referral_date="2026-09-30",
        poc_start="2026-10-06", poc_end="2027-01-03", poc_certified="2026-10-08T16:05:00-04:00",
        goals=[
            ("Place a 5 lb object on a 68-inch shelf without shoulder hiking to put groceries away independently",
             "2026-12-11"),
            ("Reach overhead to wash hair with both hands for 2 minutes without pain above 2/10", "2026-12-11"),
        ],
        planned=["97530", "97110", "97140"],
    )
    add_observation(ctx, "obs-nakamura-baseline-flexion",
                    Obs("flexion", "Right shoulder active flexion", 118, "deg", "deg"),
                    ts("2026-10-06", "11:00"), None, "prac-okafor")
    note = (
        "Patient reports he can now reach the second kitchen shelf but not the top one; shoulder pain 2/10 on "
        "arrival. Therapeutic activities (97530), 31 minutes one-on-one: overhead reaching to place and retrieve "
        "canned goods on a cabinet shelf and two-handed lifting of a grocery bag from counter to shelf, "
        "simulating putting groceries away at home. Set-up: wall-mounted adjustable shelf at 60 and 68 inches, "
        "1 lb cans, and a reusable grocery bag loaded to 6 lb. The task was dynamic and multi-planar, combining "
        "shoulder elevation with trunk rotation, weight shift and grip in a functional sequence rather than "
        "isolated range-of-motion exercise. He completed 20 shelf placements at 60 inches, 12 at 68 inches and "
        "8 bag lifts to 60 inches; active flexion during the reach measured 148 degrees. At 68 inches he hiked "
        "the shoulder, so the therapist lowered the shelf to 60 inches, reduced the bag to 4 lb and added mirror "
        "feedback and tactile cues for scapular upward rotation; the hike resolved and he finished the last set "
        "at 68 inches with the 1 lb cans. Patient tolerated the activity well, reported pain 3/10 at the end, "
        "easing to 2/10 after 5 minutes. Skilled observation and moment-to-moment modification by the therapist "
        "were needed to prevent compensation that would stress the healing tendon. Progress toward goal 1: "
        "place a 5 lb object on a 68-inch shelf without shoulder hiking to put groceries away independently. "
        "Last week flexion was 135 degrees and he could only use the 60-inch shelf, so the task has progressed. "
        "The activity cannot yet be performed safely as an independent home program because of the substitution "
        "pattern. Plan: progress the bag to 6 lb at 68 inches next session."
    )
    day = "2026-10-27"
    add_visit(ctx, "cigna-01", day, "10:00", [Line("97530", 31, 3, ("GP",))], note=note, observations=[
        Obs("flexion", "Right shoulder active flexion", 148, "deg", "deg"),
        Obs("shelf", "Overhead shelf placement, maximum height", 68, "in", "[in_i]"),
    ])
    scenario(ctx, "cigna-01", day,
             "Good note, but 31 timed minutes billed as 3 units of 97530 (supports 2).",
             ["units.billed-vs-supported"], "Units over the 8-minute-rule table")
    BUNDLES.append(ctx.bundle)


def build_bcbs() -> None:
    ctx = make_patient(
        payer="bcbs", given="Marcus", family="Bellweather", birth="1968-05-09", gender="male", mrn="RB-TEST-0104",
        member_id="XYT-TEST-7730215", coverage_type="Commercial PPO (BlueCard)", dx=["Z47.1", "Z96.651"],
        therapist="prac-okafor", referrer="prac-castellano", referral_date="2026-10-02",
        poc_start="2026-10-07", poc_end="2027-01-04", poc_certified="2026-10-09T13:30:00-04:00",
        goals=[
            ("Ascend and descend a 12-step flight reciprocally while carrying a laundry basket to do laundry in "
             "the basement independently", "2026-12-16"),
            ("Get in and out of his pickup truck independently without using the door for support", "2026-12-16"),
        ],
        planned=["97530", "97140", "97110", "97116"],
    )
    note = (
        "Patient is 5 weeks after right total knee arthroplasty; reports morning stiffness and difficulty getting "
        "in and out of his truck, pain 4/10. Manual therapy (97140), 15 minutes, 10:05 to 10:20: grade III "
        "tibiofemoral anterior glides and patellar mobilizations in supine to improve knee flexion, which "
        "improved from 98 to 104 degrees. Therapeutic activities (97530), 24 minutes, 10:20 to 10:44, in a "
        "separate time block after manual therapy was finished: stair negotiation carrying a laundry basket, "
        "sit-to-stand from a 17-inch chair, and vehicle transfer practice at truck seat height. Set-up: 7-inch "
        "practice stairs with one rail, a laundry basket loaded to 8 lb, and a transfer platform raised to "
        "26 inches to match his pickup. These were dynamic, functional tasks combining weight shifting, balance, "
        "step sequencing and trunk control. He completed 4 flights of 4 steps ascending reciprocally, "
        "10 sit-to-stands without arm support and 5 truck transfers. On descent he led with the operated leg and "
        "snapped the knee into extension, so the therapist switched him to a step-to pattern, reduced the basket "
        "to 4 lb and cued controlled eccentric loading; by the third flight he descended reciprocally with good "
        "control. He tolerated the session well and reported pain 4/10 at the end. The therapist's skilled "
        "cueing and real-time grading of the task were required for safety on the stairs. Toward goal 1: "
        "ascend and descend a 12-step flight carrying a laundry basket to do laundry in the basement "
        "independently. Manual therapy addressed joint mobility as a distinct service, whereas 97530 addressed "
        "the functional stair, transfer and carrying tasks. These tasks cannot yet be done as a home program "
        "because he loses knee control on descent."
    )
    day = "2026-11-05"
    add_visit(ctx, "bcbs-01", day, "10:00",
              [Line("97140", 15, 1, ("GP",)), Line("97530", 24, 2, ("GP",))], note=note, observations=[
                  Obs("flexion", "Right knee active flexion", 104, "deg", "deg"),
                  Obs("sts", "Sit-to-stand from 17-inch chair without arms, repetitions", 10, "repetitions",
                      "{reps}"),
              ])
    add_claim_response(ctx, "bcbs-01", "2026-11-24T07:45:00-05:00",
                       "Line 2 (97530) denied as included in another service billed on the same date; line 1 "
                       "paid.",
                       [Denial(2, "97", "CO", "M80")], paid={1: 41.60})
    scenario(ctx, "bcbs-01", day,
             "97140 (15 min) + 97530 (24 min) same day, distinct blocks documented, but no 59/X modifier; "
             "97530 denied CARC 97 / M80.",
             ["ncci.pair-modifier"], "NCCI 97140/97530 pair without a bypass modifier")
    BUNDLES.append(ctx.bundle)


def build_anthem() -> None:
    ctx = make_patient(
        payer="anthem", given="Lucia", family="Ferreira", birth="1972-02-18", gender="female", mrn="RB-TEST-0105",
        member_id="ANT-TEST-3348120", coverage_type="Commercial PPO", dx=["M75.02"],
        therapist="prac-okafor", referrer="prac-castellano", referral_date="2026-10-09",
        poc_start="2026-10-14", poc_end="2027-01-11", poc_certified="2026-10-16T10:10:00-04:00",
        goals=[
            ("Lift a 5 lb dinner plate stack onto a 66-inch cupboard shelf with the left arm to unload the "
             "dishwasher independently", "2026-12-23"),
            ("Reach behind the back to fasten clothing without assistance; QuickDASH 30 or lower", "2026-12-23"),
        ],
        planned=["97530", "97140", "97110"],
    )
    add_observation(ctx, "obs-ferreira-baseline-quickdash", Obs("qd", "QuickDASH score", 61, "score", "{score}"),
                    ts("2026-10-14", "14:30"), None, "prac-okafor")
    note = (
        "Patient reports she still cannot put plates away in the upper cupboard with her left arm; pain 5/10 at "
        "end range. Manual therapy (97140), 15 minutes, 14:05 to 14:20, first time block: grade III-IV "
        "posterior and inferior glenohumeral glides in supine; passive flexion improved from 118 to 126 degrees. "
        "Therapeutic activities (97530), 30 minutes, 14:20 to 14:50, separate time block with no overlap: "
        "unloading a dishwasher rack and lifting a stack of plates onto an upper cupboard shelf, and "
        "reaching behind the back to simulate fastening clothing. Set-up: a mock kitchen station with a "
        "dishwasher rack at 12 inches, shelves at 56 and 66 inches, plate stacks weighted at 3 and 5 lb, and a "
        "towel for the behind-back reach. This was a dynamic, multi-planar functional task requiring "
        "coordinated bending, rotation, overhead reaching and motor planning. She completed 3 rounds of "
        "10 transfers from rack to the 56-inch shelf with 3 lb, then 6 transfers to the 66-inch shelf; "
        "behind-back reach improved from the sacrum to L3. At the 66-inch shelf she shrugged and leaned back, so "
        "the therapist reduced the stack to 3 lb, had her step closer and use a staggered stance, and gave "
        "verbal cues to lead with the thumb; the lean resolved. She tolerated the session well and reported "
        "pain 4/10 afterwards. Skilled judgment was required to choose the shelf height and load from her "
        "movement quality in real time. Toward goal 1: lift a 5 lb plate stack onto a 66-inch shelf with the "
        "left arm to unload the dishwasher independently. QuickDASH today 48, down from 61 at evaluation. "
        "97140 treated capsular mobility in its own block; 97530 trained the functional kitchen and dressing "
        "tasks. She cannot safely progress these tasks as a home program yet because of the compensation at "
        "shoulder height."
    )
    day = "2026-11-09"
    add_visit(ctx, "anthem-01", day, "14:00",
              [Line("97140", 15, 1, ("GP",)), Line("97530", 30, 2, ("GP", "59"))], note=note, observations=[
                  Obs("qd", "QuickDASH score", 48, "score", "{score}"),
                  Obs("flexion", "Left shoulder passive flexion", 126, "deg", "deg"),
              ])
    scenario(ctx, "anthem-01", day,
             "97140 + 97530-59 in documented distinct 15-minute blocks: NCCI met, but Anthem reportedly denies "
             "the column-2 code even with 59.",
             ["ncci.payer-bypass-risk"], "Correct 59 use that is still at risk for this payer")
    BUNDLES.append(ctx.bundle)


def build_medicare_01() -> None:
    ctx = make_patient(
        payer="medicare", given="Harold", family="Abernathy", birth="1947-09-30", gender="male",
        mrn="RB-TEST-0106", member_id="MBI-TEST-0106", coverage_type="Medicare Part B",
        dx=["R26.81", "M62.81"], therapist="prac-okafor", referrer="prac-ramanathan",
        referral_date="2026-10-14", poc_start="2026-10-19", poc_end="2027-01-16",
        poc_certified="2026-10-23T15:00:00-04:00",
        goals=[
            ("Transfer in and out of the bathtub with a tub bench independently to bathe safely at home",
             "2026-12-21"),
            ("Timed Up and Go under 14 seconds with a rolling walker to lower fall risk in the home",
             "2026-12-21"),
        ],
        planned=["97530", "97110", "97112", "97116"],
        extra_clinicians=("prac-brennan",),
    )
    add_observation(ctx, "obs-abernathy-baseline-tug", Obs("tug", "Timed Up and Go", 19.5, "s", "s"),
                    ts("2026-10-19", "10:00"), None, "prac-okafor")
    note = (
        "Treatment provided by Colin Brennan, PTA, under the plan of care established by Renata Okafor, PT, "
        "DPT. Patient reports one near-fall this week while turning away from the kitchen sink; no injury. "
        "Therapeutic activities (97530), 30 minutes one-on-one: tub transfer training with a transfer bench, and "
        "turning while carrying a plate from counter to table to simulate meal set-up at home. Set-up: a mock "
        "bathtub with a 16-inch wall, a tub transfer bench, a grab bar, and a rolling walker for a 15 ft "
        "carrying route. These were dynamic functional tasks requiring weight shifting, lifting the legs over an "
        "obstacle, turning and dual-task carrying. He completed 6 tub transfers in and out with contact guard "
        "and 8 plate carries with turns; TUG today 16.8 seconds with the walker. During the first transfers he "
        "lifted the right leg before shifting his weight and lost balance backward, so the PTA had him scoot "
        "farther back on the bench, hold the grab bar and lift one leg at a time with verbal cues to lean "
        "forward; he completed the last 4 transfers with standby assist. When he let go of the walker to carry "
        "the plate, a walker tray was added and a lighter plastic plate used. Patient tolerated the session "
        "well, reported mild fatigue and no dizziness, and said he feels more confident with the bench. Skilled "
        "cueing and hands-on guarding were required for safety because of his fall risk. Toward goal 1: "
        "transfer in and out of the tub with a bench independently to bathe safely at home. These tasks cannot "
        "be practised safely alone as a home program until he sequences the transfer reliably."
    )
    day = "2026-11-04"
    add_visit(ctx, "medicare-01", day, "08:00",
              [Line("97530", 30, 2, ("GP",), performer="prac-brennan", assistant_minutes=30)],
              note=note, clinician="prac-brennan", observations=[
                  Obs("tug", "Timed Up and Go", 16.8, "s", "s"),
              ])
    scenario(ctx, "medicare-01", day,
             "97530 furnished entirely by the PTA (30 min), billed GP without CQ; plan of care certified and "
             "current.",
             ["modifier.assistant"], "Assistant-furnished service missing CQ")
    BUNDLES.append(ctx.bundle)


def build_medicare_02() -> None:
    ctx = make_patient(
        payer="medicare", given="Margaret", family="Lindahl", birth="1946-04-11", gender="female",
        mrn="RB-TEST-0107", member_id="MBI-TEST-0107", coverage_type="Medicare Part B",
        dx=["Z47.1", "Z96.641"], therapist="prac-lindqvist", referrer="prac-castellano",
        referral_date="2026-10-20", poc_start="2026-10-26", poc_end="2027-01-23",
        poc_certified="2026-10-28T12:00:00-04:00",
        goals=[
            ("Step into and out of a shower stall over a 5-inch threshold independently with a grab bar",
             "2026-12-30"),
            ("Pick up a laundry item from a floor-level basket without loss of balance to manage laundry at home",
             "2026-12-30"),
        ],
        planned=["97530", "97110", "97116"],
        ytd_amount=2150.00,
    )
    prior = [Line("97110", 12, 1, ("GP",)), Line("97530", 26, 2, ("GP",))]
    # 2,150.00 before these visits; each visit is 185.00. Visit 2 crosses 2,480, so it and visit 3 carry KX.
    prior_visits(ctx, "medicare-02", ["2026-10-27", "2026-10-29", "2026-11-03"], prior, kx_from=2,
                 template=LINDAHL_PRIOR, obs=("5xsts", "Five Times Sit to Stand", "s", "s"), values=[
                     {"crossings": 4, "measure": 19.4, "mod": "added a second grab bar and had her step in "
                      "sideways", "pain": 3},
                     {"crossings": 6, "measure": 18.1, "mod": "lowered the threshold block to 3 inches for the "
                      "first set and cued a longer step", "pain": 2},
                     {"crossings": 8, "measure": 17.0, "mod": "raised the block back to 5 inches and removed one "
                      "hand from the grab bar", "pain": 2},
                 ])
    note = (
        "Patient reports she avoided showering on her own this week because stepping over the shower threshold "
        "feels unsteady; hip pain 2/10. Therapeutic exercise (97110), 12 minutes in its own block: isolated "
        "right hip abductor and extensor strengthening in standing with a yellow band, 2 sets of 12. "
        "Therapeutic activities (97530), 26 minutes in a separate block: stepping into and out of a shower "
        "stall over a threshold while holding a grab bar, and retrieving clothes from a floor-level laundry "
        "basket with a reacher and a supported half-kneel. Set-up: a 5-inch threshold block beside a "
        "wall-mounted grab bar, a non-slip mat, and a laundry basket on the floor. These were dynamic, "
        "functional tasks combining single-leg stance, weight transfer, turning and reaching to the floor. She "
        "completed 10 threshold crossings each direction and 8 basket retrievals; Five Times Sit to Stand "
        "16.2 seconds. She caught the left heel on the block twice, so the therapist had her lead with the "
        "operated leg going in, added a visual target on the floor and gave verbal cues to clear the heel; no "
        "further catches. She tolerated the session well, reported pain 2/10 and said she felt safer. Skilled "
        "guarding and task grading by the therapist were required for safety. Toward goal 1: step into and out "
        "of a shower stall over a 5-inch threshold independently. 97110 addressed isolated hip strength; 97530 "
        "addressed the functional bathing and laundry tasks. These tasks cannot be done alone as a home program "
        "yet because of the balance loss on the threshold."
    )
    day = "2026-11-10"
    add_visit(ctx, "medicare-02", day, "09:00", [Line("97110", 12, 1, ("GP",)), Line("97530", 26, 2, ("GP",))],
              note=note, observations=[Obs("5xsts", "Five Times Sit to Stand", 16.2, "s", "s")])
    scenario(ctx, "medicare-02", day,
             "Year-to-date PT spending over the 2026 KX threshold ($2,150 Coverage ytd-therapy-amount + "
             "$555 of prior claims = $2,705 before this visit); 97530 billed without KX.",
             ["medicare.kx-threshold"], "KX missing above the therapy threshold")
    BUNDLES.append(ctx.bundle)


def build_medicare_03() -> None:
    ctx = make_patient(
        payer="medicare", given="Eleanor", family="Pruitt", birth="1952-01-27", gender="female",
        mrn="RB-TEST-0108", member_id="MBI-TEST-0108", coverage_type="Medicare Part B",
        dx=["M48.062"], therapist="prac-okafor", referrer="prac-ramanathan",
        referral_date="2026-07-14", poc_start="2026-07-20", poc_end="2026-10-17",
        poc_certified="2026-07-24T14:45:00-04:00",
        goals=[
            ("Walk 600 ft through a grocery store pushing a cart without stopping for leg symptoms",
             "2026-10-16"),
            ("Carry a 10 lb laundry basket up 3 porch steps with one rail", "2026-10-16"),
        ],
        planned=["97530", "97110", "97116"],
    )
    prior = [Line("97110", 12, 1, ("GP",)), Line("97530", 26, 2, ("GP",))]
    prior_visits(ctx, "medicare-03", ["2026-10-13", "2026-10-15"], prior, template=PRUITT_PRIOR,
                 obs=("cartwalk", "Walking distance with shopping cart before rest", "ft", "[ft_i]"), values=[
                     {"measure": 450, "mod": "added a seated rest with forward flexion at 250 ft"},
                     {"measure": 480, "mod": "moved the standing rest to 300 ft and cued a forward lean on the "
                      "cart"},
                 ])
    add_progress_report(ctx, "medicare-03-p01", "2026-10-13", (
        "Progress report for visits 2026-08-17 to 2026-10-13. Cart walking distance improved from 200 ft to "
        "450 ft before leg symptoms; porch steps with a 10 lb basket now with one rail and standby assist. "
        "Goals remain appropriate; continued skilled therapy recommended for 2-3 visits per week."
    ))
    note = (
        "Patient reports she walked through the pharmacy last weekend without sitting down but needed to lean on "
        "the counter; leg tingling 2/10 after standing. Therapeutic activities (97530), 35 minutes one-on-one: "
        "walking with a loaded shopping cart through a simulated store aisle with stops to reach items from "
        "low and high shelves, then carrying a laundry basket up porch steps. Set-up: a shopping cart loaded "
        "to 15 lb, shelving at 18 and 60 inches, 6-inch steps with one rail, and a 10 lb basket. These were "
        "dynamic, functional tasks combining gait, trunk flexion and extension, reaching and carrying. She "
        "walked 520 ft with the cart with 8 reaches and climbed 3 porch steps 4 times with the basket. After "
        "300 ft her leg symptoms rose to 4/10 with an extended trunk posture, so the therapist had her use a "
        "slight forward lean on the cart handle and added a standing rest with a flexion stretch at 300 ft; "
        "symptoms settled to 2/10 and she completed the distance. She tolerated the session well. Skilled "
        "monitoring of neurogenic symptoms and posture-based grading by the therapist were required. Toward "
        "goal 1: walk 600 ft through a grocery store pushing a cart without stopping. Walking distance improved "
        "from 450 ft at the last progress report to 520 ft today. These tasks cannot be done as an independent "
        "home program because symptom-guided pacing still needs the therapist."
    )
    day = "2026-11-03"
    add_visit(ctx, "medicare-03", day, "11:00", [Line("97530", 35, 2, ("GP",))], note=note, observations=[
        Obs("cartwalk", "Walking distance with shopping cart before rest", 520, "ft", "[ft_i]"),
    ])
    scenario(ctx, "medicare-03", day,
             "Plan-of-care certification lapsed: certified period 2026-07-20 to 2026-10-17, visit 2026-11-03, "
             "no recertification on file.",
             ["poc.certification"], "Visit outside the certified plan-of-care period")
    BUNDLES.append(ctx.bundle)


def build_medicare_04() -> None:
    ctx = make_patient(
        payer="medicare", given="Walter", family="Gallagher", birth="1955-06-08", gender="male",
        mrn="RB-TEST-0109", member_id="MBI-TEST-0109", coverage_type="Medicare Part B",
        dx=["G20.A1", "R26.81"], therapist="prac-lindqvist", referrer="prac-ramanathan",
        referral_date="2026-09-29", poc_start="2026-10-05", poc_end="2027-01-02",
        poc_certified="2026-10-08T17:10:00-04:00",
        goals=[
            ("Turn 180 degrees while carrying a cup of water without freezing or loss of balance to move "
             "around the kitchen safely", "2026-12-14"),
            ("Rise from a dining chair and start walking within 3 seconds, 5 of 5 trials", "2026-12-14"),
        ],
        planned=["97530", "97110", "97112", "97116"],
    )
    # Treatment day 1: evaluation. Days 2-10: treatment visits. Visit under test = day 11.
    add_visit(ctx, "medicare-04-p01", "2026-10-05", "09:00",
              [Line("97161", 30, 1, ("GP",)), Line("97110", 15, 1, ("GP",))])
    add_evaluation_doc(ctx, "medicare-04-p01", "2026-10-05", (
        "Initial evaluation. 71-year-old man with Parkinson's disease referred for balance and transfers. "
        "Freezing when turning in the kitchen; 2 falls in 3 months. TUG 15.9 seconds, 180-degree turn 6 steps "
        "with hesitation. Plan: 2-3 visits per week for 12 weeks; therapeutic activities, neuromuscular "
        "re-education, gait training and home program."
    ))
    add_observation(ctx, "obs-gallagher-baseline-tug", Obs("tug", "Timed Up and Go", 15.9, "s", "s"),
                    ts("2026-10-05", "09:50"), "enc-medicare-04-p01", "prac-lindqvist")
    prior = [Line("97110", 12, 1, ("GP",)), Line("97530", 26, 2, ("GP",))]
    days = ["2026-10-07", "2026-10-09", "2026-10-12", "2026-10-14", "2026-10-16", "2026-10-19", "2026-10-21",
            "2026-10-23", "2026-10-26"]
    mods = [
        "added tape targets on the floor for each step of the turn",
        "widened the turning arc and gave a verbal count of three",
        "switched on a metronome at 90 beats per minute",
        "raised the metronome to 96 beats per minute",
        "replaced the empty cup with a half-full cup of water",
        "moved the table 2 ft farther away to lengthen the route",
        "removed the floor targets for the last set and kept the count",
        "added a head turn to answer a question while walking",
        "added a second cup so both hands were occupied",
    ]
    tug = [15.7, 15.4, 15.2, 14.9, 14.6, 14.2, 13.9, 13.6, 13.4]
    prior_visits(ctx, "medicare-04", days, prior, first=2, template=GALLAGHER_PRIOR,
                 obs=("tug", "Timed Up and Go", "s", "s"),
                 values=[{"measure": t, "turns": 6 + i, "mod": m} for i, (t, m) in enumerate(zip(tug, mods,
                                                                                                strict=True))])
    note = (
        "Patient reports one freezing episode at the refrigerator this week, no fall. Therapeutic exercise "
        "(97110), 12 minutes in a separate block: isolated hip extensor and ankle dorsiflexor strengthening, "
        "2 sets of 12 with a red band. Therapeutic activities (97530), 26 minutes: turning 180 degrees while "
        "carrying a cup of water between a counter and a table, and rising from a dining chair to start "
        "walking toward a target, simulating moving around his kitchen. Set-up: a kitchen counter and table "
        "6 ft apart, a plastic cup half full of water, tape targets on the floor, and a metronome at "
        "96 beats per minute. These were dynamic, multi-step functional tasks combining turning, weight "
        "shifting and dual-task carrying. He completed 12 turns with the cup and 10 chair rise-and-walk trials; "
        "TUG today 13.1 seconds and the 180-degree turn took 4 steps. On the first 4 turns he froze at the "
        "midpoint, so the therapist added the metronome cue and taught a wide arc turn with a verbal count; he "
        "then completed 8 turns without freezing. He tolerated the session well with mild fatigue and said "
        "the count helps. Skilled cueing and guarding were required because of his fall risk during turns. "
        "Toward goal 1: turn 180 degrees while carrying a cup without freezing to move around the kitchen "
        "safely. 97110 addressed isolated strength, whereas 97530 addressed the functional turning and "
        "transfer tasks. He cannot yet use these strategies safely as an independent home program because "
        "freezing still occurs without the external cue."
    )
    day = "2026-10-28"
    add_visit(ctx, "medicare-04", day, "09:00", prior, note=note, observations=[
        Obs("tug", "Timed Up and Go", 13.1, "s", "s"),
        Obs("turn", "180-degree turn, steps", 4, "steps", "{steps}"),
    ])
    scenario(ctx, "medicare-04", day,
             "11th treatment day since the episode start (evaluation 2026-10-05) with no PT progress report "
             "on file.",
             ["progress-report.due"], "Progress report overdue (10 prior encounters in the bundle)")
    BUNDLES.append(ctx.bundle)


def build_humana() -> None:
    ctx = make_patient(
        payer="humana", given="Ingrid", family="Rasmussen", birth="1978-12-01", gender="female",
        mrn="RB-TEST-0110", member_id="H-TEST-66019283", coverage_type="Commercial PPO", dx=["S83.511D"],
        therapist="prac-okafor", referrer="prac-castellano", referral_date="2026-09-21",
        poc_start="2026-09-28", poc_end="2026-12-26", poc_certified="2026-10-01T08:55:00-04:00",
        goals=[
            ("Descend a flight of 12 stairs carrying a 10 lb basket reciprocally without the rail to manage "
             "household tasks", "2026-12-18"),
            ("Perform a lateral shuffle and pivot on the right leg for 30 seconds to return to recreational "
             "pickleball", "2026-12-18"),
        ],
        planned=["97530", "97110", "97112"],
    )
    note = (
        "Patient is 14 weeks after right ACL reconstruction and wants to return to household stair tasks and "
        "recreational pickleball. Therapeutic activities (97530), 40 minutes one-on-one: descending stairs "
        "while carrying a basket, and a lateral shuffle with a pivot to return a ball, simulating court play. "
        "Set-up: a 12-step staircase, a 10 lb basket, cones 10 ft apart and a ball machine at low speed. These "
        "were dynamic, multi-planar tasks combining deceleration, rotation on a planted foot and reaction to a "
        "moving ball. She completed 3 flights with the 10 lb basket reciprocally and 4 bouts of 30 seconds of "
        "shuffle and pivot; single-leg hop distance was 72 percent of the other side. On the pivot her right "
        "knee moved into valgus, so the therapist narrowed the shuffle to 6 ft, slowed the ball machine and "
        "cued a soft knee and hip-led turn; knee alignment was maintained for the last 2 bouts. Skilled "
        "assessment of knee alignment and real-time grading by the therapist were required to protect the "
        "graft. Toward goal 2: shuffle and pivot on the right leg for 30 seconds to return to recreational "
        "pickleball. Plan: progress ball speed next visit."
    )
    day = "2026-10-29"
    add_visit(ctx, "humana-01", day, "16:00", [Line("97530", 40, 3, ("GP",))], note=note, observations=[
        Obs("hop", "Single-leg hop distance, limb symmetry index", 72, "%", "%"),
    ])
    scenario(ctx, "humana-01", day,
             "Decent 97530 note (40 min, 3 units) with no statement of why a home program is not enough and "
             "no patient-response sentence.",
             ["note.why-not-home-program", "note.patient-response"], "Humana's home-program expectation")
    BUNDLES.append(ctx.bundle)


def build_molina() -> None:
    ctx = make_patient(
        payer="molina", given="Minh", family="Tran", birth="1990-08-17", gender="male", mrn="RB-TEST-0111",
        member_id="MOL-TEST-20418837", coverage_type="Medicaid managed care", dx=["M54.16"],
        therapist="prac-lindqvist", referrer="prac-ramanathan", referral_date="2026-10-16",
        poc_start="2026-10-21", poc_end="2027-01-18", poc_certified="2026-10-23T10:30:00-04:00",
        goals=[
            ("Lift and carry a 30 lb package from the van floor to a porch 50 ft away to return to work as a "
             "delivery driver", "2026-12-30"),
            ("Step in and out of the delivery van cab 20 times in a shift without leg symptoms", "2026-12-30"),
        ],
        planned=["97530", "97110", "97140"],
    )
    note = (
        "Patient reports his left leg symptoms are less frequent and he is eager to get back to his delivery "
        "route. Therapeutic activities (97530), 28 minutes one-on-one: lifting a package from a simulated van "
        "floor, carrying it along a walkway, and stepping up into and down from a simulated van cab. Set-up: a "
        "raised platform at van-floor height, a moderately weighted cardboard box, and a step with a handle to "
        "mimic the cab entry. These were dynamic, functional tasks combining a hip hinge, carrying, step-ups "
        "and turning. When he began to lift with a flexed spine the therapist lightened the box and cued a "
        "staggered stance and hip hinge, and he corrected his form. He tolerated the session well and said his "
        "back felt looser afterwards. Skilled cueing was required to protect the irritable nerve root while "
        "loading. Toward goal 1: lift and carry a package from the van floor to a porch to return to work as a "
        "delivery driver. This cannot be done as a home program yet because lifting form breaks down without "
        "feedback."
    )
    day = "2026-11-12"
    add_visit(ctx, "molina-01", day, "15:00", [Line("97530", 28, 2, ("GP",))], note=note)
    scenario(ctx, "molina-01", day,
             "Functional delivery-driver simulation with goal link and modifications, but no numbers: no loads, "
             "repetitions, distances or test scores.",
             ["note.objective-measures"], "Objective measures missing (and no Observations)")
    BUNDLES.append(ctx.bundle)


def build_medadv() -> None:
    ctx = make_patient(
        payer="medicare-advantage", given="Clarice", family="Beaumont", birth="1953-10-22", gender="female",
        mrn="RB-TEST-0112", member_id="HMA-TEST-48120937", coverage_type="Medicare Advantage PPO",
        dx=["M17.0", "R26.2"], therapist="prac-okafor", referrer="prac-ramanathan",
        referral_date="2026-10-26", poc_start="2026-11-02", poc_end="2027-01-30",
        poc_certified="2026-11-04T13:15:00-05:00",
        goals=[
            ("Get up from the floor using a sturdy chair within 30 seconds to recover after a fall while "
             "gardening", "2027-01-15"),
            ("Walk 300 ft on grass carrying a 5 lb watering can without loss of balance", "2027-01-15"),
        ],
        planned=["97530", "97110", "97116"],
    )
    note = (
        "Patient reports knee aching 3/10 after gardening at the weekend and worries about getting up if she "
        "falls in the yard. Session included quad sets, straight leg raises and mini squats with a yellow band, "
        "followed by floor-to-stand transfer practice using a sturdy chair and walking on an uneven foam path "
        "carrying a watering can. Set-up: an exercise mat on the floor, a firm armless chair, a 20 ft foam "
        "path and a 5 lb watering can. The transfer and carrying work were dynamic, functional tasks combining "
        "kneeling, half-kneel to stand, weight shift and carrying on an unstable surface. She completed 2 sets "
        "of 10 for each exercise, 5 floor-to-stand transfers in an average of 38 seconds, and 6 laps of the "
        "foam path. On the transfers she pushed up through a flexed trunk and lost balance forward, so the "
        "therapist moved the chair closer, taught a half-kneel sequence leading with the stronger left leg and "
        "gave tactile cues at the pelvis; her last 2 transfers took 31 seconds without loss of balance. She "
        "tolerated the session well and reported knee aching 3/10 at the end. Skilled cueing and guarding were "
        "required for safety during the floor transfers. Toward goal 1: get up from the floor using a chair "
        "within 30 seconds to recover after a fall while gardening. She cannot practise floor recovery alone "
        "as a home program yet because she loses balance forward on rising."
    )
    day = "2026-11-16"
    add_visit(ctx, "medadv-01", day, "10:30", [Line("97110", 14, 1, ("GP",)), Line("97530", 24, 2, ("GP",))],
              note=note, observations=[
                  Obs("floorrise", "Floor-to-stand transfer time with chair", 31, "s", "s"),
              ])
    scenario(ctx, "medadv-01", day,
             "97110 (14 min) + 97530 (24 min) in one narrative with no separate time blocks and no sentence "
             "distinguishing the two services.",
             ["note.distinct-from-other-codes"], "Same-day 97110 not distinguished from 97530")
    BUNDLES.append(ctx.bundle)


def build_medicaid() -> None:
    ctx = make_patient(
        payer="medicaid-mco", given="Jasmine", family="Reyes-Holt", birth="1985-03-05", gender="female",
        mrn="RB-TEST-0113", member_id="SUN-TEST-7702915", coverage_type="Medicaid managed care (KanCare)",
        dx=["S52.531D"], therapist="prac-haddad", referrer="prac-castellano", referral_date="2026-10-19",
        poc_start="2026-10-26", poc_end="2027-01-23", poc_certified="2026-10-29T09:05:00-04:00",
        goals=[
            ("Lift a 3 lb pot of water from counter to stove with the right hand to prepare meals for her "
             "children independently", "2026-12-21"),
            ("Open a standard jar lid with the right hand to manage kitchen tasks without help", "2026-12-21"),
        ],
        planned=["97530", "97110", "97535"],
        discipline="OT",
    )
    add_observation(ctx, "obs-reyes-holt-baseline-grip", Obs("grip", "Right grip strength (dynamometer)",
                                                              22, "lb", "[lb_av]"),
                    ts("2026-10-26", "14:00"), None, "prac-haddad")
    note = (
        "Patient is 9 weeks after a right distal radius fracture and reports she still asks her teenage son to "
        "lift pots and open jars; wrist pain 3/10. Therapeutic activities (97530), 33 minutes one-on-one: "
        "simulated meal preparation, lifting a pot of water from counter to stove, pouring into a measuring "
        "cup, opening jar lids and reaching into an upper cabinet for a bowl. Set-up: the clinic kitchen with a "
        "stove-height counter, a saucepan filled to 3 lb, jars with lids of graded tightness and a cabinet at "
        "60 inches. These were dynamic, functional tasks combining grip, forearm rotation, wrist control and "
        "reaching in a realistic sequence. She completed 10 pot transfers at 2 lb and 4 at 3 lb, opened 6 of "
        "8 jars, and right grip strength measured 31 lb, up from 22 lb at evaluation. When she began lifting "
        "the pot with the wrist in flexion and shoulder hiking, it was reduced to 2 lb, she switched to a "
        "two-handed lift with the left hand under the base, and a built-up handle was added. She tolerated the "
        "activity well and reported pain 4/10 at the end, easing with rest. Toward goal 1: lift a 3 lb pot "
        "from counter to stove with the right hand to prepare meals for her children independently."
    )
    day = "2026-11-18"
    add_visit(ctx, "medicaid-01", day, "13:00", [Line("97530", 33, 2, ("GO",))], note=note, observations=[
        Obs("grip", "Right grip strength (dynamometer)", 31, "lb", "[lb_av]"),
        Obs("pot", "Pot lift counter to stove, maximum load", 3, "lb", "[lb_av]"),
    ])
    scenario(ctx, "medicaid-01", day,
             "Occupational therapy (GO, OTR/L) kitchen simulation after a wrist fracture; complete except that "
             "nothing says why the therapist's skill was needed.",
             ["note.skilled-need"], "OT discipline with a missing skilled-need statement")
    BUNDLES.append(ctx.bundle)


def build_shared() -> Bundle:
    b = Bundle("clinic-shared")
    add_shared(b, list(PAYERS), list(CLINICIANS))
    return b


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------
def q(s: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return orjson.dumps(s).decode("utf-8")


def scenarios_yaml() -> str:
    lines = [
        "# Generated by scripts/build_fixtures.py - do not edit by hand.",
        "# One scenario = one Encounter; intended_problems are the gaps the fixture was written to contain.",
        "scenarios:",
    ]
    for s in SCENARIOS:
        lines += [
            f"  - id: {s.key}",
            f"    encounter: enc-{s.key}",
            f"    file: {s.file}",
            f"    payer: {s.payer}",
            f"    discipline: {s.discipline}",
            f"    visit_date: {q(s.visit_date)}",
            f"    summary: {q(s.summary)}",
        ]
        if s.problems:
            lines.append("    intended_problems:")
            lines += [f"      - {p}" for p in s.problems]
        else:
            lines.append("    intended_problems: []")
    return "\n".join(lines) + "\n"


def readme() -> str:
    rows = "\n".join(
        f"| `{s.key}` | `{s.file}` | {s.payer} | {s.discipline} | {s.visit_date} | {s.shows} | "
        f"{', '.join(f'`{p}`' for p in s.problems) or 'none'} |"
        for s in SCENARIOS
    )
    return f"""# Synthetic clinic fixtures

FHIR R4 **transaction** Bundles for an invented outpatient clinic, *{CLINIC_NAME}*. Every person,
organisation identifier, NPI, member id, MRN, address and phone number here is invented; the payer
names are real companies only so that payer mapping can be exercised. Nothing comes from a real chart.

- One Bundle per patient (`patient-<payer>-<surname>.json`), each self-contained: the clinic, payer
  Organization, Practitioners and PractitionerRoles it references are repeated in it.
- `clinic-shared.json` holds every Organization, Practitioner and PractitionerRole once.
- Every resource has `id = <slug>` and identifier `{FIXTURE_ID}|<slug>`; entry `fullUrl` is
  `urn:uuid:` + uuid5(NAMESPACE_URL, `{FIXTURE_URL}<slug>`) and every entry is a conditional
  create (`ifNoneExist`), so posting the same shared resource twice is idempotent.
- Visits are in Oct-Nov 2026, clinic time zone US Eastern (`-04:00` until 31 Oct, `-05:00` after).
- `scenarios.yaml` lists, per scenario Encounter, the problems the fixture was written to contain
  (`intended_problems`); the rules engine's expected findings are reconciled against it.

## Scenarios

| scenario | file | payer | disc. | visit | what it shows | intended problems |
|---|---|---|---|---|---|---|
{rows}

Denials (ClaimResponse; the CARC, with the group code as a second coding, in
`item.adjudication[category=denialreason/rejectreason].reason`; the group also in the `adjudication-group`
extension and the RARC in the item's `remark-code` extension and `processNote`, as `ptguard/remit` maps 835s): `aetna-01` CO-50 + N130, `uhc-01` CO-50 + N657,
`bcbs-01` CO-97 + M80 on the 97530 line.

## Regenerate

```
.venv/bin/python scripts/build_fixtures.py
.venv/bin/pytest tests/test_fixtures_shape.py -q -p no:cacheprovider
```

The generator is deterministic (no clock, no randomness): running it twice gives identical files.
"""


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for stale in OUT.glob("*.json"):
        stale.unlink()
    for build in (build_aetna, build_uhc, build_cigna, build_bcbs, build_anthem, build_medicare_01,
                  build_medicare_02, build_medicare_03, build_medicare_04, build_humana, build_molina,
                  build_medadv, build_medicaid):
        build()
    opts = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
    write(OUT / "clinic-shared.json", orjson.dumps(build_shared().to_json(), option=opts))
    for b in BUNDLES:
        name = f"patient-{b.name}.json"
        write(OUT / name, orjson.dumps(b.to_json(), option=opts))
    write(OUT / "scenarios.yaml", scenarios_yaml().encode("utf-8"))
    write(OUT / "README.md", readme().encode("utf-8"))
    print(f"wrote {len(BUNDLES) + 1} bundles and {len(SCENARIOS)} scenarios to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
