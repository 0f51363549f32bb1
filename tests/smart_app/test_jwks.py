"""The app publishes the public half of its private_key_jwt keys at /app/.well-known/jwks.json."""

from __future__ import annotations

import orjson
from joserfc.jwk import ECKey

from webapp import create_app


def test_jwks_lists_public_keys_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = ECKey.generate_key("P-384", parameters={"kid": "app-key-1"})
    key_file = tmp_path / "key.json"
    key_file.write_bytes(orjson.dumps(key.as_dict(private=True)))
    issuers = orjson.dumps(
        {
            "issuers": [
                {
                    "fhir_base": "https://ehr.example/fhir",
                    "client_id": "ptguard",
                    "auth_method": "private_key_jwt",
                    "private_key_path": str(key_file),
                },
                {"fhir_base": "https://other.example/fhir", "client_id": "ptguard"},
            ]
        }
    ).decode()
    app = create_app(
        {"TESTING": True, "PTGUARD_SMART_ISSUERS": issuers, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    )
    response = app.test_client().get("/app/.well-known/jwks.json")
    assert response.status_code == 200
    (published,) = response.json["keys"]
    assert published["kid"] == "app-key-1" and published["alg"] == "ES384" and published["crv"] == "P-384"
    assert "d" not in published
