"""CDS Hooks test fixtures: signing keys, a token factory, the app with trusted issuers, a mocked FHIR server."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

# tests/ is on sys.path (its conftest), so `import cds_hooks` could find this folder as a namespace package before
# the installed one (an editable install resolves after the path scan): put the repository root first.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
if getattr(sys.modules.get("cds_hooks"), "__file__", "x") is None:
    del sys.modules["cds_hooks"]

from cdshelpers import BASE, EHR_ISS, LAUNCH, Keys, TokenFactory, issuers_config  # noqa: E402
from joserfc import jwt  # noqa: E402


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def token(keys: Keys) -> TokenFactory:
    """token(path, key=..., alg=..., iss=..., header={...}, **claim_overrides) → a signed JWT for BASE+path."""

    def make(
        path: str = "/cds-services",
        *,
        key: Any = None,
        alg: str = "ES384",
        iss: str = EHR_ISS,
        header: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": iss,
            "aud": BASE + path,
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
        }
        body.update(claims)
        for name in drop:
            body.pop(name, None)
        signing = key if key is not None else keys.es384
        hdr = {"alg": alg, "typ": "JWT", "kid": signing.kid, **(header or {})}
        return jwt.encode(hdr, body, signing, algorithms=[alg])

    return make


@pytest.fixture
def app(tmp_path: Path, keys: Keys) -> Any:
    from webapp import create_app

    return create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'cds.sqlite3'}",
            "CDS_ISSUERS": issuers_config(keys),
            "SMART_LAUNCH_URL": LAUNCH,
            "PUBLIC_BASE_URL": None,
            "CDS_TIME_BUDGET_MS": 2000,
        }
    )


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
