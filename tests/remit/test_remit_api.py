"""The HTTP intake endpoint: API keys, 202 + background job, idempotency, notify with an SSRF allow-list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from remit_util import FIXTURES
from sqlalchemy import func, select

from ptguard.remit.fetch import allowed, parse_bases
from ptguard.store.db import session_scope
from ptguard.store.models import RemitFile, WorkItem
from webapp import create_app

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
X12 = {"Content-Type": "application/edi-x12"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'api.sqlite3'}",
            "PTGUARD_REMIT_API_KEYS": f"other-key,{KEY}",
            "PTGUARD_REMIT_FETCH_BASES": "https://clearinghouse.example/files/",
            "PTGUARD_REMIT_MAX_BYTES": "200000",
        }
    )
    yield app
    app.extensions["ptguard_remit_jobs"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def finished(app: Flask, client: FlaskClient, job_id: str) -> dict[str, Any]:
    app.extensions["ptguard_remit_jobs"].wait(job_id, timeout=30)
    response = client.get(f"/remit/jobs/{job_id}", headers=AUTH)
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    assert body["status"] in ("done", "error")
    return body


def counts(app: Flask) -> tuple[int, int]:
    with session_scope(app.config["DATABASE_URL"]) as s:
        return (
            s.scalar(select(func.count()).select_from(RemitFile)) or 0,
            s.scalar(select(func.count()).select_from(WorkItem)) or 0,
        )


def test_without_or_with_a_wrong_key_is_401(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    data = (FIXTURES / "aetna-01.835").read_bytes()
    assert client.post("/remit/835", data=data, headers=X12).status_code == 401
    wrong = client.post("/remit/835", data=data, headers={**X12, "Authorization": "Bearer nope-secret"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/remit/jobs/x", headers={"Authorization": "Basic abc"}).status_code == 401
    assert "nope-secret" not in caplog.text and KEY not in caplog.text


def test_post_835_is_accepted_then_imported_and_idempotent(app: Flask, client: FlaskClient) -> None:
    data = (FIXTURES / "aetna-01.835").read_bytes()
    response = client.post("/remit/835", data=data, headers={**AUTH, **X12, "X-Filename": "../../era.835"})
    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    assert response.headers["Location"] == f"/remit/jobs/{job_id}"
    job = finished(app, client, job_id)
    assert job["status"] == "done" and job["result"]["status"] == "imported"
    assert job["result"]["file"] == "era.835" and job["result"]["therapy_denial_lines"] == 1
    before = counts(app)
    assert before == (1, 1)
    again = client.post("/remit/835", data=data, headers={**AUTH, "Content-Type": "text/plain"})
    assert again.status_code == 202
    job2 = finished(app, client, again.get_json()["job_id"])
    assert job2["result"]["status"] == "already-imported"
    assert counts(app) == before


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"", X12, 400, "empty"),
        (b"<html>hello</html>", X12, 400, "not an X12 interchange"),
        (b"ISA*00*", {"Content-Type": "application/json"}, 415, "Content-Type"),
        (b"ISA" + b"*" * 300_000, X12, 413, "limit"),
    ],
)
def test_bad_bodies_get_specific_errors(
    client: FlaskClient, body: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    response = client.post("/remit/835", data=body, headers={**AUTH, **headers})
    assert response.status_code == status
    assert words in response.get_json()["error"]


def test_unknown_job_is_404(client: FlaskClient) -> None:
    assert client.get("/remit/jobs/does-not-exist", headers=AUTH).status_code == 404


def test_notify_refuses_urls_outside_the_allow_list(client: FlaskClient) -> None:
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "https://clearinghouse.example.evil.com/files/a.835",
        "https://clearinghouse.example@evil.com/files/a.835",
        "https://clearinghouse.example/other/a.835",
        "https://clearinghouse.example/files/../admin",
        "file:///etc/passwd",
    ):
        response = client.post("/remit/notify", json={"file_url": url, "file_id": "a"}, headers=AUTH)
        assert response.status_code == 403, url
        assert "allow-listed" in response.get_json()["error"]
    assert client.post("/remit/notify", json={"file_id": "a"}, headers=AUTH).status_code == 400
    assert client.post("/remit/notify", data="nope", headers=AUTH).status_code == 400


@responses.activate
def test_notify_fetches_from_an_allowed_base_and_imports(app: Flask, client: FlaskClient) -> None:
    url = "https://clearinghouse.example/files/era-77.835"
    responses.get(url, body=(FIXTURES / "uhc-151.835").read_bytes(), status=200)
    response = client.post("/remit/notify", json={"file_url": url, "file_id": "era-77"}, headers=AUTH)
    assert response.status_code == 202
    job = finished(app, client, response.get_json()["job_id"])
    assert job["status"] == "done" and job["result"]["status"] == "imported" and job["result"]["claims"] == 1
    missing = "https://clearinghouse.example/files/missing.835"
    responses.get(missing, status=404)
    response = client.post("/remit/notify", json={"file_url": missing, "file_id": "m"}, headers=AUTH)
    job = finished(app, client, response.get_json()["job_id"])
    assert job["status"] == "error" and "HTTP 404" in job["error"]


def test_allow_list_rules() -> None:
    bases = parse_bases("https://ch.example/era, http://10.0.0.5:8080/drop/")
    assert bases == ["https://ch.example/era/", "http://10.0.0.5:8080/drop/"]
    assert allowed("https://ch.example/era/x.835", bases)
    assert allowed("http://10.0.0.5:8080/drop/a/b.835", bases)
    assert not allowed("https://ch.example/era-other/x.835", bases)
    assert not allowed("http://ch.example/era/x.835", bases)
    assert not allowed("http://10.0.0.5:8081/drop/x.835", bases)
    with pytest.raises(Exception, match="not an absolute"):
        parse_bases("ftp://x/")


@pytest.mark.parametrize(
    "url",
    [
        "https://ch.example/era/%2e%2e/admin",
        "https://ch.example/era/%2E%2E/%2E%2E/etc/passwd",
        "https://ch.example/era/%2e%2E/era-other/x.835",
        "https://ch.example/era/..;/admin",
        "https://ch.example/era/x;jsessionid=1/../../admin",
        "https://ch.example/era/%2fadmin",
        "https://ch.example/era/..%2F..%2Fadmin",
        "https://ch.example/era/..%5cadmin",
        "https://ch.example/era/..\\admin",
        "https://ch.example/era\\..\\admin",
        "https://ch.example/era/%252e%252e/admin",
        "https://ch.example/era/./../admin",
        "https://ch.example//era/x.835",
        "https://ch.example/era/x.835#frag",
    ],
)
def test_allow_list_cannot_be_climbed_out_of_with_encodings(url: str) -> None:
    bases = parse_bases("https://ch.example/era")
    assert not allowed(url, bases), url


def test_allow_list_fetches_the_normalised_url() -> None:
    from ptguard.remit.fetch import normalise

    bases = parse_bases("https://ch.example/era")
    assert normalise("https://ch.example/era/a/%2e%2e/b.835", bases) == "https://ch.example/era/b.835"
    assert normalise("https://ch.example/era/./x%20y.835", bases) == "https://ch.example/era/x%20y.835"
    assert normalise("https://ch.example/era/x%00.835", bases) is None
    assert normalise("https://ch.example/era/x.835?v=1", bases) == "https://ch.example/era/x.835?v=1"


@responses.activate
def test_notify_with_encoded_dot_dot_is_refused_without_a_request(client: FlaskClient) -> None:
    for url in (
        "https://clearinghouse.example/files/%2e%2e/admin",
        "https://clearinghouse.example/files/%2E%2E/admin",
        "https://clearinghouse.example/files/..;/admin",
        "https://clearinghouse.example/files/%2fadmin",
        "https://clearinghouse.example/files/..\\admin",
    ):
        response = client.post("/remit/notify", json={"file_url": url, "file_id": "a"}, headers=AUTH)
        assert response.status_code == 403, url
    assert len(responses.calls) == 0
