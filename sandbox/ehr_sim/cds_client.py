"""The simulator's CDS Hooks client: ES384 caller JWTs, discovery, prefetch filled from the FHIR server, calls, feedback."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from joserfc import jwt
from joserfc.jwk import ECKey

log = logging.getLogger("sandbox.ehr_sim.cds")

ALGORITHM = "ES384"
JWT_LIFETIME = 300
_TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


class CdsCallError(Exception):
    """A CDS Hooks call that did not give cards: the service refused it, failed, or could not be reached."""


class SigningKey:
    """The simulator's ES384 key pair: signs caller JWTs, publishes the public half as a JWK Set."""

    def __init__(self, key: ECKey | None = None, kid: str | None = None) -> None:
        self.kid = kid or f"ehr-sim-{uuid.uuid4().hex[:12]}"
        self.key = key or ECKey.generate_key("P-384", parameters={"kid": self.kid, "use": "sig", "alg": ALGORITHM})

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (`/.well-known/jwks.json`)."""
        public = self.key.as_dict(private=False)
        public.update({"kid": self.kid, "use": "sig", "alg": ALGORITHM})
        return {"keys": [public]}

    def caller_jwt(self, iss: str, aud: str, *, tenant: str | None = None, lifetime: int = JWT_LIFETIME) -> str:
        """A CDS Hooks 2.0 client JWT: iss, aud (exactly the URL called), exp, iat, jti; header alg/kid/typ."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": iss, "aud": aud, "exp": now + lifetime, "iat": now, "jti": uuid.uuid4().hex}
        if tenant:
            claims["tenant"] = tenant
        header = {"alg": ALGORITHM, "kid": self.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self.key, algorithms=[ALGORITHM])


def fill_template(template: str, context: Mapping[str, Any], user_id: str | None) -> str | None:
    """Replace `{{context.X}}` and user tokens; None when a token cannot be filled (the key is then left out)."""
    missing = False

    def replace(match: re.Match[str]) -> str:
        nonlocal missing
        token = match.group(1)
        if token.startswith("context."):
            value = context.get(token.split(".", 1)[1])
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                return str(value)
        elif token in USER_TOKENS and user_id and user_id.startswith(USER_TOKENS[token] + "/"):
            return user_id.split("/", 1)[1]
        missing = True
        return ""

    filled = _TOKEN.sub(replace, template)
    return None if missing else filled


@dataclass
class PrefetchResult:
    """Prefetch values by key, and per key what happened (for the page: 'read', 'search (n)', 'not found', …)."""

    values: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def _fetch_one(session: requests.Session, fhir_url: str, query: str, timeout: float) -> tuple[str, Any]:
    url = fhir_url.rstrip("/") + "/" + query.lstrip("/")
    headers = {"Accept": "application/fhir+json"}
    response = session.get(url, headers=headers, timeout=timeout)
    if response.status_code == 404 and "?" not in query:
        return "not found (null)", None
    if response.status_code >= 400:
        raise CdsCallError(f"HTTP {response.status_code}")
    body = response.json()
    if body.get("resourceType") != "Bundle":
        return "read", body
    entries = list(body.get("entry") or [])
    pages = 0
    next_url = next((lk.get("url") for lk in body.get("link") or [] if lk.get("relation") == "next"), None)
    while next_url and pages < 20:  # a prefetch is one Bundle: follow the pages and merge them
        pages += 1
        page = session.get(next_url, headers=headers, timeout=timeout).json()
        entries.extend(page.get("entry") or [])
        next_url = next((lk.get("url") for lk in page.get("link") or [] if lk.get("relation") == "next"), None)
    merged = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return f"search ({len(entries)})", merged


def fill_prefetch(
    templates: Mapping[str, str],
    context: Mapping[str, Any],
    *,
    fhir_url: str,
    user_id: str | None = None,
    session: requests.Session | None = None,
    timeout: float = 5.0,
) -> PrefetchResult:
    """Run every prefetch template against the FHIR server in parallel; failures leave the key out, as EHRs do."""
    result = PrefetchResult()
    queries: dict[str, str] = {}
    for key, template in templates.items():
        query = fill_template(template, context, user_id)
        if query is None:
            result.notes[key] = "left out (token not available)"
        else:
            queries[key] = query
    own = session is None
    http = session or requests.Session()
    try:
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(queries)))) as pool:
            futures = {key: pool.submit(_fetch_one, http, fhir_url, q, timeout) for key, q in queries.items()}
            for key, future in futures.items():
                try:
                    note, value = future.result()
                except (requests.RequestException, ValueError, CdsCallError) as exc:
                    result.notes[key] = f"left out ({type(exc).__name__ if not isinstance(exc, CdsCallError) else exc})"
                    continue
                result.values[key] = value
                result.notes[key] = note
    finally:
        if own:
            http.close()
    return result


@dataclass
class CdsClient:
    """Calls one CDS Hooks service base as an EHR would (every request carries a fresh signed JWT)."""

    base_url: str  # e.g. http://127.0.0.1:5000 (discovery is {base}/cds-services)
    issuer: Callable[[], str]  # the simulator's own URL (the JWT iss), known once it listens
    key: SigningKey
    timeout: float = 15.0
    session: requests.Session = field(default_factory=requests.Session)

    def url(self, *parts: str) -> str:
        return "/".join([self.base_url.rstrip("/"), "cds-services", *parts])

    def _headers(self, url: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.key.caller_jwt(self.issuer(), url)}",
            "Accept": "application/json",
        }

    def discovery(self) -> dict[str, Any]:
        """GET /cds-services (signed)."""
        url = self.url()
        try:
            response = self.session.get(url, headers=self._headers(url), timeout=self.timeout)
        except requests.RequestException as exc:
            raise CdsCallError(f"the CDS service cannot be reached ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise CdsCallError(f"discovery answered HTTP {response.status_code}")
        data: dict[str, Any] = response.json()
        return data

    def service(self, service_id: str) -> dict[str, Any]:
        """The discovery entry of one service."""
        for entry in self.discovery().get("services") or []:
            if isinstance(entry, dict) and entry.get("id") == service_id:
                return entry
        raise CdsCallError(f"the CDS service does not offer {service_id!r}")

    def call(self, service_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /cds-services/{id}; the JSON answer ({cards, systemActions})."""
        url = self.url(service_id)
        try:
            response = self.session.post(url, json=dict(body), headers=self._headers(url), timeout=self.timeout)
        except requests.RequestException as exc:
            raise CdsCallError(f"the CDS service cannot be reached ({type(exc).__name__})") from None
        if response.status_code != 200:
            detail = ""
            try:
                issues = response.json().get("issue") or []
                detail = "; ".join(str(i.get("diagnostics", "")) for i in issues if isinstance(i, dict))
            except ValueError:
                pass
            raise CdsCallError(f"the service answered HTTP {response.status_code}" + (f": {detail}" if detail else ""))
        data: dict[str, Any] = response.json()
        return data

    def feedback(self, service_id: str, items: list[dict[str, Any]]) -> int:
        """POST /cds-services/{id}/feedback; returns the HTTP status."""
        url = self.url(service_id, "feedback")
        try:
            response = self.session.post(
                url, json={"feedback": items}, headers=self._headers(url), timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise CdsCallError(f"the CDS service cannot be reached ({type(exc).__name__})") from None
        return response.status_code

    def close(self) -> None:
        self.session.close()
