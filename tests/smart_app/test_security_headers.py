"""The app's pages carry PHI: a Content-Security-Policy, no Referer, no caching; the JWKS stays cacheable."""

from __future__ import annotations

from flask import Flask


def test_pages_forbid_foreign_scripts_referers_and_caching(app: Flask) -> None:
    client = app.test_client()
    for path in ("/app/", "/app/launch", "/app/claim/cr-1", "/app/appeal/1/packet.pdf"):
        response = client.get(path)
        csp = response.headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "object-src 'none'" in csp, (path, csp)
        assert response.headers.get("Referrer-Policy") == "no-referrer", path
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path
        assert response.headers.get("Cache-Control") == "no-store", (path, response.status_code)


def test_the_jwks_keeps_its_public_cache_lifetime(app: Flask) -> None:
    response = app.test_client().get("/app/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
