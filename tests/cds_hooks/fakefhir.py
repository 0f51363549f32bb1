"""An in-memory FHIR server for unit tests, served through `responses`, over the fixture clinic."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import responses

FIXTURES = Path(__file__).resolve().parents[2] / "fhir_fixtures"
SHARED = "clinic-shared.json"

# search parameter -> element paths holding the reference (a small subset of FHIR R4 search)
_REF_PARAMS = {
    "patient": ("subject", "patient", "beneficiary"),
    "subject": ("subject",),
    "encounter": ("encounter", "context.encounter", "item.encounter"),
    "request": ("request",),
}


def _rewrite(value: Any, urls: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _rewrite(v, urls) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in urls:
            out["reference"] = urls[ref]
        return out
    if isinstance(value, list):
        return [_rewrite(v, urls) for v in value]
    return value


def load_resources(files: Iterable[str]) -> list[dict[str, Any]]:
    """Resources of fixture transaction Bundles, with urn:uuid references rewritten to Type/id."""
    entries: list[dict[str, Any]] = []
    for name in files:
        entries.extend(orjson.loads((FIXTURES / name).read_bytes())["entry"])
    urls = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries if e.get("fullUrl")}
    return [_rewrite(e["resource"], urls) for e in entries]


def _values(resource: Any, path: str) -> list[Any]:
    current = [resource]
    for part in path.split("."):
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, dict) and part in item:
                v = item[part]
                nxt.extend(v if isinstance(v, list) else [v])
        current = nxt
    return current


class FakeFhir:
    """GET Type/id and GET Type?params over a list of resources; records the Authorization headers it saw."""

    def __init__(self, resources: list[dict[str, Any]], base: str = "https://ehr.test/fhir") -> None:
        self.base = base.rstrip("/")
        self.resources = resources
        self.auth_seen: list[str | None] = []
        self.paths: list[str] = []

    @classmethod
    def for_files(cls, *files: str, base: str = "https://ehr.test/fhir") -> FakeFhir:
        return cls(load_resources([*files, SHARED]), base)

    def register(self, rsps: responses.RequestsMock) -> None:
        rsps.add_callback(responses.GET, re.compile(re.escape(self.base) + r"/.*"), callback=self._handle)

    def _handle(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        self.auth_seen.append(request.headers.get("Authorization"))
        parts = urlsplit(request.url)
        path = parts.path[len(urlsplit(self.base).path) :].strip("/")
        self.paths.append(path + ("?" + parts.query if parts.query else ""))
        headers = {"Content-Type": "application/fhir+json"}
        if "/" in path:
            rtype, _, rid = path.partition("/")
            for r in self.resources:
                if r["resourceType"] == rtype and r.get("id") == rid:
                    return 200, headers, orjson.dumps(r)
            outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}
            return 404, headers, orjson.dumps(outcome)
        params = parse_qsl(parts.query)
        found = [r for r in self.resources if r["resourceType"] == path and self._match(r, params)]
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [
                {"fullUrl": f"{self.base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                for r in found
            ],
        }
        return 200, headers, orjson.dumps(bundle)

    def _match(self, resource: dict[str, Any], params: list[tuple[str, str]]) -> bool:
        for key, value in params:
            if key.startswith("_"):
                continue
            if key in _REF_PARAMS:
                refs = {
                    v.get("reference") for p in _REF_PARAMS[key] for v in _values(resource, p) if isinstance(v, dict)
                }
                if value not in refs:
                    return False
            elif key == "status":
                if resource.get("status") != value:
                    return False
            elif key == "identifier":
                system, _, code = value.partition("|")
                if not any(
                    i.get("system") == system and i.get("value") == code for i in resource.get("identifier", [])
                ):
                    return False
        return True
