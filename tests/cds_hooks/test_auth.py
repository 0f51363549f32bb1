"""Caller verification: hostile and broken JWTs get a bare 401; per-issuer algorithms; jku allow-list; jti replay."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import responses
import yaml
from cdshelpers import EHR_ISS, ES256_ISS, JKU_ISS, JKU_URL, RS256_ISS, RS_ISS, Keys, TokenFactory, issuers_config
from joserfc import jwt
from joserfc.jwk import OctKey

from cds_hooks.jwt import (
    AuthError,
    JwksCache,
    MemoryReplayCache,
    RedisReplayCache,
    Verifier,
    load_issuers,
    parse_issuers,
)
from ptguard.errors import ConfigError
from tests.shared_data import require_service

DISCOVERY = "/cds-services"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _hs256(claims: dict[str, Any], secret: bytes, kid: str = "es384-1") -> str:
    """An HS256 JWT signed by hand (joserfc rightly refuses to use a PEM public key as an HMAC secret)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(mac)}"


def _claims(path: str = DISCOVERY, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": EHR_ISS,
        "aud": "http://localhost" + path,
        "exp": now + 300,
        "iat": now,
        "jti": str(uuid.uuid4()),
        **over,
    }


def _get(client: Any, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get(DISCOVERY, headers=headers)


def _hostile(keys: Keys, token: TokenFactory) -> dict[str, str | None]:
    """At least 12 hostile or broken tokens, each with the reason it must fail."""
    hs_secret = OctKey.import_key(json.dumps(keys.es384.as_dict(private=False)).encode())
    public_pem = keys.es384.as_pem(private=False)
    good = token()
    head, payload, sig = good.split(".")
    tampered_claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered_claims["iss"] = ES256_ISS
    now = int(time.time())
    return {
        "alg none": _unsigned(_claims()),
        "alg None (case)": _unsigned(_claims(), alg="None"),
        "HS256 signed with the public key as secret": jwt.encode(
            {"alg": "HS256", "typ": "JWT", "kid": "es384-1"}, _claims(), hs_secret, algorithms=["HS256"]
        ),
        # Key confusion: the issuer's public key, as the PEM text anyone can fetch, used as the HMAC secret.
        "HS256 with the issuer's public key in PEM form as secret": _hs256(_claims(), public_pem),
        "HS256 with the PEM public key, trailing newline stripped": _hs256(_claims(), public_pem.rstrip(b"\n")),
        "wrong aud": token(aud="http://localhost/cds-services/other"),
        "aud is the FHIR base, not the service URL": token(aud="https://ehr.test/fhir"),
        "expired beyond leeway": token(exp=now - 120, iat=now - 420),
        "future iat beyond leeway": token(iat=now + 300, exp=now + 600),
        "nbf a year ahead": token(nbf=now + 365 * 86400),
        "nbf not a number": token(nbf="x"),
        "unknown iss": token(iss="https://evil.test"),
        "jku not on the allow-list": token(header={"jku": "https://evil.test/jwks.json"}),
        "unknown kid": token(header={"kid": "nope"}, key=keys.stranger),
        "signed by another key with a known kid": token(key=keys.stranger),
        "tampered payload": f"{head}.{_b64(json.dumps(tampered_claims).encode())}.{sig}",
        "missing jti": token(drop=("jti",)),
        "missing exp": token(drop=("exp",)),
        "RS256 from an issuer that allows ES384 only": token(key=keys.rs256, alg="RS256"),
        "ES256 from an ES384-only issuer": token(key=keys.es256, alg="ES256"),
        "garbage": "not.a.jwt",
        "two parts": "abc.def",
        "missing header": None,
        "empty bearer": "",
    }


def test_hostile_tokens_get_a_bare_401(client: Any, keys: Keys, token: TokenFactory) -> None:
    cases = _hostile(keys, token)
    assert len(cases) >= 12
    for name, bad in cases.items():
        response = _get(client, bad)
        assert response.status_code == 401, name
        assert response.data == b"", name  # bare: nothing that helps an attacker


def test_basic_scheme_and_lowercase_bearer(client: Any, token: TokenFactory) -> None:
    assert client.get(DISCOVERY, headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    assert client.get(DISCOVERY, headers={"Authorization": f"bearer {token()}"}).status_code == 200


def test_replayed_jti_is_refused(client: Any, token: TokenFactory) -> None:
    same = token()
    assert _get(client, same).status_code == 200
    assert _get(client, same).status_code == 401


def test_valid_tokens_per_issuer_algorithm(client: Any, keys: Keys, token: TokenFactory) -> None:
    # ES384 (spec default), ES256 (one EHR signs ES256; allowed for that issuer only), RS384 (Epic-style).
    assert _get(client, token()).status_code == 200
    assert _get(client, token(key=keys.es256, alg="ES256", iss=ES256_ISS)).status_code == 200
    assert _get(client, token(key=keys.rs384, alg="RS384", iss=RS_ISS)).status_code == 200


def test_rs256_day_long_token_only_where_configured(client: Any, keys: Keys, token: TokenFactory) -> None:
    now = int(time.time())
    day = {"iat": now, "exp": now + 86400}
    # The issuer configured for RS256 with a day-long lifetime: accepted.
    assert _get(client, token(key=keys.rs256, alg="RS256", iss=RS256_ISS, **day)).status_code == 200
    # The same kind of token from an issuer with defaults (RS384, 10-minute lifetime): refused.
    assert _get(client, token(key=keys.rs384, alg="RS384", iss=RS_ISS, **day)).status_code == 401
    assert _get(client, token(key=keys.rs256, alg="RS256", iss=RS_ISS)).status_code == 401


def test_unknown_claims_like_epic_sub_are_accepted(client: Any, token: TokenFactory) -> None:
    assert _get(client, token(sub="epic-client-id-1234", tenant_name="site", extra={"a": 1})).status_code == 200


def test_small_clock_skew_is_tolerated(client: Any, token: TokenFactory) -> None:
    now = int(time.time())
    assert _get(client, token(iat=now + 2, exp=now + 302)).status_code == 200  # iat a little in the future
    assert _get(client, token(iat=now - 330, exp=now - 30)).status_code == 200  # expired 30 s ago, within leeway


def test_aud_must_be_the_exact_url_called(client: Any, token: TokenFactory) -> None:
    path = "/cds-services/ptguard-97530-signing/feedback"
    body = {
        "feedback": [{"card": str(uuid.uuid4()), "outcome": "accepted", "outcomeTimestamp": "2026-12-03T10:00:00Z"}]
    }
    ok = client.post(path, json=body, headers={"Authorization": f"Bearer {token(path)}"})
    assert ok.status_code == 400  # past the JWT check; refused only because the card is not one ptguard issued
    assert ok.json["issue"][0]["expression"] == ["feedback[0].card"]
    # a token minted for discovery cannot be replayed against a service URL
    wrong = client.post(path, json=body, headers={"Authorization": f"Bearer {token(DISCOVERY)}"})
    assert wrong.status_code == 401
    slash = client.post(
        path, json=body, headers={"Authorization": f"Bearer {token(path, aud='http://localhost' + path + '/')}"}
    )
    assert slash.status_code == 401


def test_public_base_url_behind_a_proxy(tmp_path: Path, keys: Keys, token: TokenFactory) -> None:
    from webapp import create_app

    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite3'}",
            "CDS_ISSUERS": issuers_config(keys),
            "PUBLIC_BASE_URL": "https://ptguard.example.org/",
        }
    )
    c = app.test_client()
    public = token(aud="https://ptguard.example.org/cds-services")
    assert _get(c, public).status_code == 200
    assert _get(c, token()).status_code == 401  # the internal URL is not what the EHR called


def test_jku_not_allow_listed_is_refused_without_any_fetch(client: Any, keys: Keys, token: TokenFactory) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        bad = token(iss=JKU_ISS, key=keys.jku, header={"jku": "http://169.254.169.254/latest/meta-data"})
        assert _get(client, bad).status_code == 401
        other = token(iss=EHR_ISS, header={"jku": JKU_URL})  # allowed for another issuer only
        assert _get(client, other).status_code == 401
        assert len(rsps.calls) == 0, "no HTTP request may be made for a jku that is not allow-listed"


def test_allow_listed_jku_is_fetched_once_and_cached(client: Any, keys: Keys, token: TokenFactory) -> None:
    with responses.RequestsMock() as rsps:
        rsps.get(JKU_URL, json=Keys.public(keys.jku))
        for _ in range(3):
            assert _get(client, token(iss=JKU_ISS, key=keys.jku, header={"jku": JKU_URL})).status_code == 200
        assert len(rsps.calls) == 1


def test_jwks_endpoint_down_gives_401_not_500(client: Any, keys: Keys, token: TokenFactory) -> None:
    with responses.RequestsMock() as rsps:
        rsps.get(JKU_URL, body="<html>oops</html>", status=502)
        assert _get(client, token(iss=JKU_ISS, key=keys.jku, header={"jku": JKU_URL})).status_code == 401


def test_jwks_url_issuer_and_key_rotation(keys: Keys) -> None:
    url = "https://rot.test/jwks"
    verifier = Verifier(parse_issuers({"https://rot.test": {"jwks_url": url}}), jwks=JwksCache(min_refresh=0))
    now = int(time.time())

    def tok(key: Any) -> str:
        claims = {"iss": "https://rot.test", "aud": "http://x/cds-services", "exp": now + 60, "iat": now}
        return jwt.encode(
            {"alg": "ES384", "kid": key.kid}, {**claims, "jti": str(uuid.uuid4())}, key, algorithms=["ES384"]
        )

    with responses.RequestsMock() as rsps:
        rsps.get(url, json=Keys.public(keys.es384))
        verifier.verify("Bearer " + tok(keys.es384), "http://x/cds-services")
        rsps.replace(responses.GET, url, json=Keys.public(keys.es384, keys.jku))
        verifier.verify("Bearer " + tok(keys.jku), "http://x/cds-services")  # unknown kid → one refetch
        assert len(rsps.calls) == 2


def test_no_issuers_configured_refuses_everything(tmp_path: Path, token: TokenFactory) -> None:
    from webapp import create_app

    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'n.sqlite3'}", "CDS_ISSUERS": {}})
    assert _get(app.test_client(), token()).status_code == 401


def test_dev_mode_accepts_unsigned_calls_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from webapp import create_app

    with caplog.at_level(logging.WARNING, logger="ptguard.cds"):
        app = create_app(
            {"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'd.sqlite3'}", "CDS_ALLOW_UNSIGNED": True}
        )
    assert any("WITHOUT a verified JWT" in r.getMessage() for r in caplog.records)
    assert "Development only" in capsys.readouterr().err
    assert app.test_client().get(DISCOVERY).status_code == 200


def test_nothing_secret_is_logged(
    client: Any, keys: Keys, token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        bad = token(aud="http://localhost/elsewhere")
        _get(client, bad)
        _get(client, _unsigned(_claims()))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert bad not in text and bad.split(".")[1] not in text and EHR_ISS not in text


def test_issuer_file_json_and_yaml(tmp_path: Path, keys: Keys) -> None:
    cfg = issuers_config(keys)
    j = tmp_path / "issuers.json"
    j.write_bytes(orjson.dumps(cfg))
    y = tmp_path / "issuers.yaml"
    y.write_text(yaml.safe_dump(cfg))
    assert set(load_issuers(j)) == set(load_issuers(y)) == set(cfg)
    assert load_issuers(y)[RS_ISS].algorithms == ("RS384",)
    assert load_issuers(j)[EHR_ISS].algorithms == ("ES384", "RS384")


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ({"https://a": {"jwks": {"keys": []}, "algorithms": ["HS256"]}}, "HS256"),
        ({"https://a": {"jwks": {"keys": []}, "algorithms": ["none"]}}, "none"),
        ({"https://a": {}}, "give jwks"),
        ({"https://a": {"jwks_url": "http://keys.example.org/jwks"}}, "https"),
        ({"https://a": {"jwks": "nope"}}, "JWK Set"),
    ],
)
def test_bad_issuer_config_is_refused_at_start(config: dict[str, Any], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_issuers(config)


def test_memory_replay_cache_expires() -> None:
    now = [1000.0]
    cache = MemoryReplayCache(clock=lambda: now[0])
    assert cache.add("a", 10) and not cache.add("a", 10)
    now[0] += 11
    assert cache.add("a", 10)


@pytest.fixture
def redis_url() -> str:
    url = "redis://127.0.0.1:6379/15"
    r = redis.Redis.from_url(url)
    try:
        r.ping()
    except redis.RedisError as exc:
        require_service("Redis at 127.0.0.1:6379", exc)
    finally:
        r.close()
    return url


def test_redis_replay_cache_is_shared_between_workers(redis_url: str, keys: Keys, token: TokenFactory) -> None:
    a, b = RedisReplayCache(redis_url), RedisReplayCache(redis_url)
    try:
        issuers = parse_issuers(issuers_config(keys))
        one, two = Verifier(issuers, replay=a), Verifier(issuers, replay=b)
        t = token()
        one.verify(f"Bearer {t}", "http://localhost/cds-services")
        with pytest.raises(AuthError, match="replayed"):
            two.verify(f"Bearer {t}", "http://localhost/cds-services")  # another worker process saw it first
    finally:
        a.close()
        b.close()


def test_redis_url_setting_is_used_by_the_app(redis_url: str, tmp_path: Path, keys: Keys, token: TokenFactory) -> None:
    from webapp import create_app

    cfg = {
        "TESTING": True,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'r.sqlite3'}",
        "CDS_ISSUERS": issuers_config(keys),
        "REDIS_URL": redis_url,
    }
    c1, c2 = create_app(cfg).test_client(), create_app(cfg).test_client()
    t = token()
    assert _get(c1, t).status_code == 200
    assert _get(c2, t).status_code == 401
    for app_client in (c1, c2):
        app_client.application.extensions["ptguard_cds"].verifier.replay.close()


def test_nbf_now_is_accepted(client: Any, token: TokenFactory) -> None:
    assert _get(client, token(nbf=int(time.time()))).status_code == 200
