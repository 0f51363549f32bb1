"""X12 835 remittance intake: a tolerant reader, plain dataclasses and the FHIR R4 mapping."""

from ptguard.remit.model import Adjustment, ClaimPayment, ProviderAdjustment, Remittance, ServiceLine
from ptguard.remit.to_fhir import remittance_to_fhir
from ptguard.remit.x12 import ReadResult, X12Error, read_835

__all__ = [
    "Adjustment",
    "ClaimPayment",
    "ProviderAdjustment",
    "ReadResult",
    "Remittance",
    "ServiceLine",
    "X12Error",
    "read_835",
    "remittance_to_fhir",
]
