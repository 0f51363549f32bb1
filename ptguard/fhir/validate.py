"""Selective validation with fhir.resources R4B: failures become data-quality findings, never exceptions."""

from __future__ import annotations

from functools import cache
from typing import Any

from ptguard.findings import Finding, data_quality


@cache
def _model(rtype: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(rtype)
    except KeyError:
        return None


def validate(resource: dict[str, Any], reference: str) -> list[Finding]:
    """Validate one resource against R4B; each error becomes a finding naming the element path."""
    rtype = str(resource.get("resourceType"))
    model = _model(rtype)
    if model is None:
        return [data_quality("unknown-type", f"{rtype} is not an R4 resource type", reference, severity="warning")]
    try:
        model.model_validate(resource)
    except Exception as exc:
        errors = getattr(exc, "errors", None)
        details: list[str] = []
        if callable(errors):
            for err in errors()[:5]:
                loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
                details.append(f"{loc or rtype}: {err.get('msg', 'invalid')}")
        else:
            details.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return [
            data_quality("invalid-resource", f"{reference} does not validate as FHIR R4 ({d})", reference)
            for d in details
        ]
    return []
