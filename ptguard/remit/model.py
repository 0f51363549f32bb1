"""Plain dataclasses for what an X12 835 remittance says: interchange, payment, claims, lines, adjustments."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

GROUP_CODES = frozenset({"CO", "PR", "OA", "PI", "CR"})


@dataclass(slots=True)
class Adjustment:
    """One CAS triplet (group, CARC, amount, optional quantity); one CAS segment holds up to six."""

    group: str
    reason: str
    amount: Decimal
    quantity: Decimal | None = None


@dataclass(slots=True)
class ProcedureCode:
    """An SVC01/SVC06 composite: qualifier (HC, AD, NU, ZZ …), code, up to four modifiers, description."""

    qualifier: str
    code: str
    modifiers: list[str] = field(default_factory=list)
    description: str | None = None


@dataclass(slots=True)
class ServiceLine:
    """One SVC loop (2110): the billed procedure, amounts, units, date, adjustments and remarks."""

    procedure: ProcedureCode
    charge: Decimal
    paid: Decimal
    revenue_code: str | None = None
    units: Decimal | None = None
    original_procedure: ProcedureCode | None = None
    original_units: Decimal | None = None
    service_date: date | None = None
    service_period_start: date | None = None
    service_period_end: date | None = None
    adjustments: list[Adjustment] = field(default_factory=list)
    remark_codes: list[str] = field(default_factory=list)
    line_control_number: str | None = None
    allowed_amount: Decimal | None = None
    segment_number: int = 0


@dataclass(slots=True)
class ClaimPayment:
    """One CLP loop (2100): the payer's decision on one claim."""

    patient_control_number: str
    status: str
    charge: Decimal
    paid: Decimal
    patient_responsibility: Decimal | None = None
    filing_indicator: str | None = None
    payer_claim_control_number: str | None = None
    facility_code: str | None = None
    frequency_code: str | None = None
    patient_last_name: str | None = None
    patient_first_name: str | None = None
    patient_middle_name: str | None = None
    patient_member_id: str | None = None
    patient_id_qualifier: str | None = None
    subscriber_member_id: str | None = None
    rendering_provider_name: str | None = None
    rendering_provider_id: str | None = None
    statement_from: date | None = None
    statement_to: date | None = None
    received_date: date | None = None
    adjustments: list[Adjustment] = field(default_factory=list)
    moa_remark_codes: list[str] = field(default_factory=list)
    mia_remark_codes: list[str] = field(default_factory=list)
    service_lines: list[ServiceLine] = field(default_factory=list)
    segment_number: int = 0
    raw_segments: list[str] = field(default_factory=list)

    @property
    def remark_codes(self) -> list[str]:
        """Claim-level remark codes (MOA then MIA), in file order, without duplicates."""
        return list(dict.fromkeys([*self.moa_remark_codes, *self.mia_remark_codes]))


@dataclass(slots=True)
class ProviderAdjustment:
    """One PLB composite adjustment: reason (WO, L6, CV, FB …), reference, amount (positive reduces payment)."""

    provider_id: str
    fiscal_period_end: date | None
    reason: str
    reference: str | None
    amount: Decimal


@dataclass(slots=True)
class Party:
    """An N1 loop party (payer PR or payee PE): name and identifier."""

    name: str | None = None
    id_qualifier: str | None = None
    identifier: str | None = None


@dataclass(slots=True)
class Remittance:
    """One ST/SE 835 transaction with its envelope control numbers."""

    source: str
    interchange_control_number: str
    group_control_number: str
    transaction_control_number: str
    version: str
    interchange_date: date | None = None
    sender_id: str | None = None
    receiver_id: str | None = None
    payer: Party = field(default_factory=Party)
    payee: Party = field(default_factory=Party)
    payment_amount: Decimal | None = None
    credit_debit: str | None = None
    payment_method: str | None = None
    handling_code: str | None = None
    payment_date: date | None = None
    trace_number: str | None = None
    trace_originator: str | None = None
    production_date: date | None = None
    provider_adjustments: list[ProviderAdjustment] = field(default_factory=list)
    claims: list[ClaimPayment] = field(default_factory=list)
    segment_number: int = 0
