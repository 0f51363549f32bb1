"""Verify the CDS client's JWT (CDS Hooks 2.0): allow-listed iss and jku, per-issuer keys and algorithms, jti replay."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
import requests
import yaml
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from ptguard.errors import ConfigError
from ptguard.fhir.client import http_url_problem

log = logging.getLogger("ptguard.cds.auth")

DEFAULT_ALGORITHMS = ("ES384", "RS384")
FORBIDDEN_PREFIXES = ("HS", "NONE")
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "ES256K", "EdDSA", "Ed25519"}
)
REPLAY_SECONDS = 3600
JWKS_CACHE_SECONDS = 300
JWKS_TIMEOUT = 2.0
MAX_TOKEN_BYTES = 16 * 1024


class AuthError(Exception):
    """Any reason to refuse a call; the caller answers a bare 401. The reason is for logs (no token, no PHI)."""


@dataclass(frozen=True)
class Issuer:
    """A trusted CDS client: its keys (inline or by URL), allowed jku URLs and algorithms."""

    iss: str
    jwks: Mapping[str, Any] | None = None
    jwks_url: str | None = None
    jku_allow: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    max_lifetime_seconds: int = 600
    tenant: str | None = None
    fhir_servers: tuple[str, ...] | None = None  # base URL prefixes its fhirServer may name (None: any)


def _issuer(iss: str, raw: Any, where: str) -> Issuer:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"issuer {iss!r}: expected an object", where=where)
    algorithms = tuple(str(a) for a in raw.get("algorithms") or DEFAULT_ALGORITHMS)
    bad = [a for a in algorithms if a.upper().startswith(FORBIDDEN_PREFIXES) or a not in ASYMMETRIC]
    if bad:
        raise ConfigError(
            f"issuer {iss!r}: algorithm(s) {', '.join(bad)} are not allowed (asymmetric only)", where=where
        )
    jwks = raw.get("jwks")
    if jwks is not None:
        if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
            raise ConfigError(f"issuer {iss!r}: jwks must be a JWK Set ({{'keys': [...]}})", where=where)
        try:
            KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError) as exc:
            raise ConfigError(f"issuer {iss!r}: jwks cannot be read ({type(exc).__name__})", where=where) from None
    jwks_url = raw.get("jwks_url")
    jku_allow = tuple(str(u) for u in raw.get("jku_allow") or ())
    if jwks is None and not jwks_url and not jku_allow:
        raise ConfigError(f"issuer {iss!r}: give jwks, jwks_url or jku_allow", where=where)
    for url in [jwks_url, *jku_allow]:
        if url is not None and not str(url).startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ConfigError(f"issuer {iss!r}: key URL {url!r} must be https", where=where)
    fhir_servers: tuple[str, ...] | None = None
    raw_servers = raw.get("fhir_servers")
    if raw_servers is not None:
        if not isinstance(raw_servers, list) or not all(isinstance(u, str) for u in raw_servers):
            raise ConfigError(f"issuer {iss!r}: fhir_servers must be a list of base URLs", where=where)
        for url in raw_servers:
            if http_url_problem(url) is not None or urlsplit(url).query or urlsplit(url).fragment:
                raise ConfigError(f"issuer {iss!r}: fhir_servers entry {url!r} is not an http(s) base URL", where=where)
        fhir_servers = tuple(raw_servers)
    return Issuer(
        iss=iss,
        jwks=dict(jwks) if jwks is not None else None,
        jwks_url=str(jwks_url) if jwks_url else None,
        jku_allow=jku_allow,
        algorithms=algorithms,
        max_lifetime_seconds=int(raw.get("max_lifetime_seconds") or 600),
        tenant=str(raw["tenant"]) if raw.get("tenant") else None,
        fhir_servers=fhir_servers,
    )


def parse_issuers(data: Any, where: str = "issuers") -> dict[str, Issuer]:
    """`{iss: {jwks | jwks_url, jku_allow, algorithms, max_lifetime_seconds, tenant, fhir_servers}}` → Issuer per iss."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mapping of iss → settings", where=where)
    return {str(iss): _issuer(str(iss), raw, where) for iss, raw in data.items()}


def load_issuers(path: str | Path) -> dict[str, Issuer]:
    """Read the trusted-clients file (JSON or YAML) named by PTGUARD_CDS_ISSUERS."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the CDS issuers file ({type(exc).__name__})", where=str(p)) from None
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError:
        raise ConfigError("the CDS issuers file is neither JSON nor YAML", where=str(p)) from None
    return parse_issuers(data, str(p))


# ---------------------------------------------------------------------------------------------- replay caches


class ReplayCache(Protocol):
    """Remembers jti values for a while; `add` is False when the value was already seen."""

    def add(self, key: str, ttl_seconds: int) -> bool: ...


class MemoryReplayCache:
    """In-process jti cache with expiry (one per worker process)."""

    def __init__(self, clock: Callable[[], float] = time.time, max_entries: int = 200_000) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._max = max_entries

    def add(self, key: str, ttl_seconds: int) -> bool:
        now = self._clock()
        with self._lock:
            expiry = self._seen.get(key)
            if expiry is not None and expiry > now:
                return False
            if len(self._seen) >= self._max:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            self._seen[key] = now + ttl_seconds
            return True


class RedisReplayCache:
    """jti cache shared by every worker: SET key NX EX ttl."""

    def __init__(self, url: str, prefix: str = "ptguard:cds:jti:") -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._prefix = prefix

    def add(self, key: str, ttl_seconds: int) -> bool:
        return bool(self._redis.set(self._prefix + key, b"1", nx=True, ex=max(1, ttl_seconds)))

    def close(self) -> None:
        self._redis.close()


# ---------------------------------------------------------------------------------------------- keys


@dataclass
class JwksCache:
    """JWK Sets fetched from allow-listed URLs, cached for a few minutes (refetched once on an unknown kid)."""

    ttl: float = JWKS_CACHE_SECONDS
    timeout: float = JWKS_TIMEOUT
    min_refresh: float = 10.0
    session: requests.Session | None = None
    _cache: dict[str, tuple[float, KeySet]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, url: str, *, refresh: bool = False) -> KeySet:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(url)
        if hit and not refresh and now - hit[0] < self.ttl:
            return hit[1]
        if hit and refresh and now - hit[0] < self.min_refresh:
            return hit[1]  # refetch at most every min_refresh s, so unknown kids cannot hammer the key server
        getter = self.session.get if self.session is not None else requests.get
        try:
            response = getter(url, timeout=self.timeout, allow_redirects=False)
            response.raise_for_status()
            data = orjson.loads(response.content)
            keys = KeySet.import_key_set(data)
        except (requests.RequestException, orjson.JSONDecodeError, JoseError, ValueError, TypeError) as exc:
            raise AuthError(f"JWKS fetch failed ({type(exc).__name__})") from None
        with self._lock:
            self._cache[url] = (now, keys)
        return keys


# ---------------------------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Caller:
    """A verified CDS client."""

    iss: str
    tenant: str | None
    jti: str


class Verifier:
    """Checks `Authorization: Bearer <JWT>` of a CDS call; raises AuthError for any failure."""

    def __init__(
        self,
        issuers: Mapping[str, Issuer],
        *,
        replay: ReplayCache | None = None,
        jwks: JwksCache | None = None,
        leeway: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuers = dict(issuers)
        self.replay = replay or MemoryReplayCache(clock)
        self.jwks = jwks or JwksCache()
        self.leeway = leeway
        self.clock = clock
        self._static: dict[str, KeySet] = {
            iss: KeySet.import_key_set(dict(i.jwks))  # type: ignore[arg-type]
            for iss, i in self.issuers.items()
            if i.jwks is not None
        }

    def verify(self, authorization: str | None, audience: str) -> Caller:
        """The verified caller; AuthError for any failure (including ones this code did not foresee)."""
        try:
            return self._verify(authorization, audience)
        except AuthError:
            raise
        except Exception as exc:
            raise AuthError(f"unexpected {type(exc).__name__}") from None

    def _verify(self, authorization: str | None, audience: str) -> Caller:
        if not authorization:
            raise AuthError("no Authorization header")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise AuthError("not a Bearer JWT")
        try:
            unverified = jws.extract_compact(token.encode("ascii"))
            header = unverified.headers()
            claims = orjson.loads(unverified.payload)
        except (JoseError, ValueError, UnicodeError, orjson.JSONDecodeError):
            raise AuthError("unreadable JWT") from None
        if not isinstance(claims, dict) or not isinstance(header, dict):
            raise AuthError("JWT parts are not objects")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.upper().startswith(FORBIDDEN_PREFIXES) or alg not in ASYMMETRIC:
            raise AuthError("forbidden algorithm")
        if header.get("typ") not in (None, "JWT") or header.get("crit"):
            raise AuthError("unexpected JWT header")
        iss = claims.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError("issuer not trusted")
        if alg not in issuer.algorithms:
            raise AuthError("algorithm not allowed for this issuer")
        keys = self._keys(issuer, header)
        kid = header.get("kid")
        try:
            key = keys.get_by_kid(kid) if isinstance(kid, str) else None
        except (JoseError, ValueError, KeyError):
            key = None
        if key is None and isinstance(kid, str) and self._remote_url(issuer, header):
            keys = self.jwks.get(self._remote_url(issuer, header) or "", refresh=True)
            try:
                key = keys.get_by_kid(kid)
            except (JoseError, ValueError, KeyError):
                key = None
        if key is None:
            if kid is not None or len(keys.keys) != 1:
                raise AuthError("signing key not found")
            key = keys.keys[0]
        try:
            jws.deserialize_compact(
                token, key, algorithms=[alg], registry=JWSRegistry(algorithms=[alg], strict_check_header=False)
            )
        except (JoseError, ValueError, TypeError):
            raise AuthError("bad signature") from None
        return self._claims(issuer, claims, audience)

    def _remote_url(self, issuer: Issuer, header: Mapping[str, Any]) -> str | None:
        jku = header.get("jku")
        if jku is not None:
            return str(jku)
        return issuer.jwks_url

    def _keys(self, issuer: Issuer, header: Mapping[str, Any]) -> KeySet:
        jku = header.get("jku")
        if jku is not None:
            # Never fetch from a URL the token names unless it is on this issuer's allow-list (SSRF, forged keys).
            if not isinstance(jku, str) or jku not in issuer.jku_allow:
                raise AuthError("jku not allow-listed")
            return self.jwks.get(jku)
        if issuer.iss in self._static:
            return self._static[issuer.iss]
        if issuer.jwks_url:
            return self.jwks.get(issuer.jwks_url)
        raise AuthError("no keys for this issuer")

    def _claims(self, issuer: Issuer, claims: Mapping[str, Any], audience: str) -> Caller:
        now = self.clock()
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if audience not in auds:
            raise AuthError("aud is not this URL")
        exp, iat, jti = claims.get("exp"), claims.get("iat"), claims.get("jti")
        if not _number(exp) or not _number(iat):
            raise AuthError("exp or iat missing")
        assert isinstance(exp, int | float) and isinstance(iat, int | float)
        if exp + self.leeway < now:
            raise AuthError("expired")
        if iat - self.leeway > now:
            raise AuthError("issued in the future")
        if exp - iat > issuer.max_lifetime_seconds + self.leeway:
            raise AuthError("token lifetime too long for this issuer")
        nbf = claims.get("nbf")
        if nbf is not None and (not _number(nbf) or nbf - self.leeway > now):
            raise AuthError("not valid yet (nbf)")  # RFC 7519 §4.1.5
        if not isinstance(jti, str) or not jti:
            raise AuthError("jti missing")
        tenant = claims.get("tenant")
        if issuer.tenant is not None and tenant != issuer.tenant:
            raise AuthError("tenant mismatch")
        ttl = int(max(REPLAY_SECONDS, exp - now + self.leeway))
        if not self.replay.add(f"{issuer.iss}|{jti}", ttl):
            raise AuthError("jti replayed")
        return Caller(issuer.iss, tenant if isinstance(tenant, str) else None, jti)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
