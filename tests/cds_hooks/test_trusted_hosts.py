"""The CDS `aud` check never trusts a caller-chosen Host header (PTGUARD_TRUSTED_HOSTS, PTGUARD_PUBLIC_BASE_URL)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from cdshelpers import Keys, TokenFactory, issuers_config

from cds_hooks.routes import host_trusted, parse_trusted_hosts
from webapp.serve import startup_warnings

DISCOVERY = "/cds-services"


def _app(tmp_path: Path, keys: Keys, **extra: Any) -> Any:
    from webapp import create_app

    return create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'h.sqlite3'}",
            "CDS_ISSUERS": issuers_config(keys),
            "PUBLIC_BASE_URL": None,
            **extra,
        }
    )


def _get(client: Any, jwt: str, host: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {jwt}"}
    if host is not None:
        headers["Host"] = host
    return client.get(DISCOVERY, headers=headers)


def test_forged_host_with_matching_aud_is_refused(client: Any, token: TokenFactory) -> None:
    evil = _get(client, token(aud="http://evil.example/cds-services"), host="evil.example")
    assert evil.status_code == 401
    assert evil.data == b""
    assert evil.headers.get("WWW-Authenticate") == "Bearer"


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:5000", "[::1]:8000", "LOCALHOST"])
def test_loopback_hosts_are_trusted_by_default(client: Any, token: TokenFactory, host: str) -> None:
    aud = f"http://{host.lower()}/cds-services"
    assert _get(client, token(aud=aud), host=host).status_code == 200


def test_trusted_hosts_setting(tmp_path: Path, keys: Keys, token: TokenFactory) -> None:
    c = _app(tmp_path, keys, CDS_TRUSTED_HOSTS="ptguard.internal:8443, cds.example.org").test_client()
    assert _get(c, token(aud="http://ptguard.internal:8443/cds-services"), "ptguard.internal:8443").status_code == 200
    assert _get(c, token(aud="http://cds.example.org:99/cds-services"), "cds.example.org:99").status_code == 200
    assert _get(c, token(aud="http://ptguard.internal:9/cds-services"), "ptguard.internal:9").status_code == 401
    # once the list is set, loopback is trusted only if listed
    assert _get(c, token(aud="http://localhost/cds-services"), "localhost").status_code == 401
    assert _get(c, token(aud="http://evil.example/cds-services"), "evil.example").status_code == 401


def test_public_base_url_ignores_the_host_header(tmp_path: Path, keys: Keys, token: TokenFactory) -> None:
    c = _app(tmp_path, keys, PUBLIC_BASE_URL="https://ptguard.example.org").test_client()
    assert _get(c, token(aud="https://ptguard.example.org/cds-services"), "evil.example").status_code == 200
    assert _get(c, token(aud="http://evil.example/cds-services"), "evil.example").status_code == 401


def test_host_parsing() -> None:
    default = parse_trusted_hosts(None)
    assert host_trusted("localhost", default) and host_trusted("[::1]", default)
    assert not host_trusted("localhost.evil.example", default)
    assert not host_trusted("evil.example/localhost", default)
    assert not host_trusted("", default)
    assert not host_trusted("user@localhost", default)


def test_serve_warns_when_public_without_public_base_url() -> None:
    assert startup_warnings("127.0.0.1", {}) == []
    assert startup_warnings("0.0.0.0", {"PTGUARD_PUBLIC_BASE_URL": "https://p.example"}) == []
    (warning,) = startup_warnings("0.0.0.0", {})
    assert "PTGUARD_PUBLIC_BASE_URL" in warning and "PTGUARD_TRUSTED_HOSTS" in warning


def test_run_serve_prints_the_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    import webapp
    from webapp import serve

    monkeypatch.delenv("PTGUARD_PUBLIC_BASE_URL", raising=False)
    monkeypatch.setattr(webapp, "create_app", lambda: (_ for _ in ()).throw(SystemExit(0)))
    out = io.StringIO()
    args = argparse.Namespace(host="0.0.0.0", port=0, workers=1, threads=1, dev=True)
    with pytest.raises(SystemExit):
        serve.run_serve(args, out)
    assert "WARNING" in out.getvalue() and "PTGUARD_PUBLIC_BASE_URL" in out.getvalue()
