"""FhirClient limits: redirects are never followed; slow or huge answers are cut off by a deadline and a size cap."""

from __future__ import annotations

import pytest
import responses

from ptguard.errors import FhirServerError
from ptguard.fhir.client import FhirClient

BASE = "https://fhir.example.test/R4"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@responses.activate
def test_redirects_are_not_followed(status: int) -> None:
    responses.get(f"{BASE}/Patient/p1", status=status, headers={"Location": "http://169.254.169.254/latest"})
    responses.get("http://169.254.169.254/latest", json={"resourceType": "Patient", "id": "p1"})
    with FhirClient(BASE, retries=0) as client, pytest.raises(FhirServerError, match="redirect not followed"):
        client.read("Patient", "p1")
    assert [c.request.url for c in responses.calls] == [f"{BASE}/Patient/p1"]
