"""In-memory state of the sandbox SMART authorization server: clients, codes, tokens, keys and switches."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import requests
import yaml
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwe import JWERegistry
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from sandbox.smart_auth.scopes import is_covered_by, split_scopes

LAUNCH_LIFETIME = 3600
CODE_LIFETIME = 600
JTI_MEMORY = 3600
_LAUNCH_REGISTRY = JWERegistry(algorithms=["dir", "A256GCM"])
CONTEXT_KEYS = (
    "patient",
    "encounter",
    "fhirContext",
    "intent",
    "need_patient_banner",
    "smart_style_url",
    "tenant",
    "appContext",
)


@dataclass
class Switches:
    """Real-world EHR behaviours the server can replay; all off by default."""

    omit_patient: bool = False
    narrow_scopes: bool | list[str] = False
    no_refresh_token: bool = False
    omit_offline_access_from_scope: bool = False
    token_lifetime: int = 3600
    smart_config_only_at_root: bool = False
    reject_iat_in_future: bool = False
    require_iat: bool = False
    cap_assertion_exp: int | None = None
    id_token_alg: str = "RS256"  # noqa: S105 - an algorithm name
    forbid_resource_types: list[str] = field(default_factory=list)
    patient_only_on_refresh: bool = False
    auto_select_patient: bool | str = False
    fhir_user_relative: bool = False

    def update(self, values: dict[str, Any]) -> None:
        """Set the named switches; an unknown name or a value of the wrong kind raises ValueError."""
        known = {f.name for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown switch {name!r}; known: {', '.join(sorted(known))}")
            if name == "id_token_alg" and value not in ("RS256", "ES384"):
                raise ValueError("id_token_alg must be RS256 or ES384")
            seconds = name in ("token_lifetime", "cap_assertion_exp") and value is not None
            if seconds and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive number of seconds")
            if name == "forbid_resource_types" and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            ):
                raise ValueError("forbid_resource_types must be a list of resource types")
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        """The switches as JSON-ready data."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Client:
    """A registered SMART client: public (`none`) or confidential asymmetric (`private_key_jwt`)."""

    client_id: str
    redirect_uris: list[str]
    scope: str = ""
    token_endpoint_auth_method: str = "none"  # noqa: S105 - a method name
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    launch_uri: str | None = None
    client_name: str | None = None
    grant_types: list[str] = field(default_factory=lambda: ["authorization_code", "refresh_token"])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Client:
        """Build and check a client from registration JSON; ValueError says what is wrong."""
        client_id = data.get("client_id")
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client_id is required")
        uris = data.get("redirect_uris")
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and u for u in uris):
            raise ValueError("redirect_uris must be a non-empty list of URLs")
        method = data.get("token_endpoint_auth_method", "none")
        if method not in ("none", "private_key_jwt"):
            raise ValueError("token_endpoint_auth_method must be none or private_key_jwt")
        jwks, jwks_uri = data.get("jwks"), data.get("jwks_uri")
        if method == "private_key_jwt":
            if jwks is None and not jwks_uri:
                raise ValueError("a private_key_jwt client needs jwks or jwks_uri")
            if jwks is not None:
                try:
                    KeySet.import_key_set(jwks)
                except (JoseError, ValueError, TypeError, KeyError) as exc:
                    raise ValueError(f"jwks is not a valid JWK set: {exc}") from None
        scope = data.get("scope", "")
        if isinstance(scope, list):
            scope = " ".join(scope)
        grant_types = data.get("grant_types") or ["authorization_code", "refresh_token"]
        return cls(
            client_id=client_id,
            redirect_uris=list(uris),
            scope=str(scope),
            token_endpoint_auth_method=method,
            jwks=jwks,
            jwks_uri=jwks_uri,
            launch_uri=data.get("launch_uri"),
            client_name=data.get("client_name"),
            grant_types=list(grant_types),
        )

    # -- authlib ClientMixin
    def get_client_id(self) -> str:
        """The client id."""
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        """The only redirect URI when exactly one is registered."""
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        """The requested scopes that this client's registration allows (all of them when none registered)."""
        requested = split_scopes(scope)
        if not self.scope:
            return " ".join(requested)
        registered = split_scopes(self.scope)
        return " ".join(s for s in requested if is_covered_by(s, registered))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact match against the registered redirect URIs."""
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        """No shared secrets here."""
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """Only the registered method is accepted at the token endpoint."""
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        """Authorization code only."""
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        """Registered grant types (authorization_code and refresh_token by default)."""
        return grant_type in self.grant_types

    def public_dict(self) -> dict[str, Any]:
        """The registration as JSON (no keys)."""
        return {
            "client_id": self.client_id,
            "redirect_uris": self.redirect_uris,
            "scope": self.scope,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "jwks_uri": self.jwks_uri,
            "launch_uri": self.launch_uri,
            "grant_types": self.grant_types,
        }


@dataclass
class User:
    """The signed-in sandbox user (a Practitioner)."""

    fhir_user: str  # "Practitioner/<id>"

    def get_user_id(self) -> str:
        """The subject identifier."""
        return self.fhir_user


@dataclass
class AuthorizationCode:
    """An issued authorization code with what the token response will need."""

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: User
    code_challenge: str
    code_challenge_method: str
    context: dict[str, Any]
    nonce: str | None
    auth_time: int
    expires_at: float

    def get_redirect_uri(self) -> str:
        """The redirect URI of the authorize request."""
        return self.redirect_uri

    def get_scope(self) -> str:
        """The granted scope."""
        return self.scope


@dataclass
class TokenRecord:
    """One issued access token (and its refresh token), with the launch context it is bound to."""

    access_token: str
    client_id: str
    scope: str
    user: User
    context: dict[str, Any]
    expires_at: float
    refresh_token: str | None = None
    refresh_revoked: bool = False
    nonce: str | None = None
    auth_time: int = 0

    # -- authlib TokenMixin
    def check_client(self, client: Client) -> bool:
        """True when issued to `client`."""
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        """The scope granted."""
        return self.scope

    def get_expires_in(self) -> int:
        """Seconds the access token was valid for at issue."""
        return max(0, int(self.expires_at - time.time()))

    def is_expired(self) -> bool:
        """True once the access token has expired."""
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        """True once the refresh token has been replaced."""
        return self.refresh_revoked

    def get_user(self) -> User:
        """The user the token was issued for."""
        return self.user


class Keys:
    """The server's signing keys (RS256 and ES384 for id_tokens) and the launch-token encryption key."""

    def __init__(self) -> None:
        self.rsa = RSAKey.generate_key(
            2048, parameters={"kid": f"rs256-{secrets.token_hex(4)}", "use": "sig", "alg": "RS256"}
        )
        self.ec = ECKey.generate_key(
            "P-384", parameters={"kid": f"es384-{secrets.token_hex(4)}", "use": "sig", "alg": "ES384"}
        )
        self.launch_key = OctKey.generate_key(256)

    def jwks(self) -> dict[str, Any]:
        """The public JWK set."""
        return {"keys": [self.rsa.as_dict(private=False), self.ec.as_dict(private=False)]}

    def sign(self, claims: dict[str, Any], alg: str) -> str:
        """A JWT signed with the RS256 or ES384 key."""
        key = self.rsa if alg == "RS256" else self.ec
        return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])

    def seal_launch(self, context: dict[str, Any]) -> str:
        """An opaque (encrypted) launch token carrying `context`."""
        now = int(time.time())
        claims = {"ctx": context, "iat": now, "exp": now + LAUNCH_LIFETIME, "jti": secrets.token_urlsafe(16)}
        return jwt.encode({"alg": "dir", "enc": "A256GCM"}, claims, self.launch_key, registry=_LAUNCH_REGISTRY)

    def open_launch(self, launch: str) -> dict[str, Any] | None:
        """The context in a launch token, None when it is not ours or has expired."""
        try:
            claims = jwt.decode(launch, self.launch_key, registry=_LAUNCH_REGISTRY).claims
        except (JoseError, ValueError, TypeError):
            return None
        if not isinstance(claims, dict) or int(claims.get("exp", 0)) < time.time():
            return None
        ctx = claims.get("ctx")
        return ctx if isinstance(ctx, dict) else None


class AuthState:
    """Everything the server remembers; one lock guards the dictionaries."""

    def __init__(
        self,
        *,
        fhir_url: str,
        fhir_base_path: str = "/fhir/R4",
        public_url: str | None = None,
        default_user: str | None = None,
        switches: dict[str, Any] | None = None,
    ) -> None:
        self.fhir_url = fhir_url.rstrip("/")
        self.fhir_base_path = "/" + fhir_base_path.strip("/")
        self.public_url = public_url.rstrip("/") if public_url else None
        self.default_user = default_user
        self.keys = Keys()
        self.switches = Switches()
        if switches:
            self.switches.update(switches)
        self.lock = threading.RLock()
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self.refresh_tokens: dict[str, TokenRecord] = {}
        self.used_jti: dict[tuple[str, str], float] = {}
        self._jwks_cache: dict[str, dict[str, Any]] = {}

    # -- URLs
    def root(self) -> str:
        """The server's absolute root URL: configured, else taken from the current request."""
        if self.public_url:
            return self.public_url
        from flask import request  # only inside a request

        return request.host_url.rstrip("/")

    def issuer(self) -> str:
        """The OpenID issuer (the root URL)."""
        return self.root()

    def fhir_base(self) -> str:
        """The protected FHIR base (the proxy), which is `iss` in a launch and the required `aud`."""
        return self.root() + self.fhir_base_path

    def token_url(self) -> str:
        """The token endpoint."""
        return self.root() + "/token"

    def authorize_url(self) -> str:
        """The authorization endpoint."""
        return self.root() + "/authorize"

    # -- clients
    def register(self, data: dict[str, Any] | Client) -> Client:
        """Add or replace a client."""
        client = data if isinstance(data, Client) else Client.from_dict(data)
        with self.lock:
            self.clients[client.client_id] = client
        return client

    def load_clients_file(self, path: Path | str) -> list[Client]:
        """Register the clients in a JSON or YAML file: a list, or {"clients": [...]}."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))  # JSON is YAML
        items = data.get("clients", []) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a list of clients or {{'clients': [...]}}")
        return [self.register(item) for item in items]

    def query_client(self, client_id: str) -> Client | None:
        """The client with this id, if registered."""
        with self.lock:
            return self.clients.get(client_id)

    def client_jwks(self, client: Client) -> KeySet:
        """The client's public keys: inline, or fetched from its jwks_uri (cached per URL)."""
        if client.jwks is not None:
            return KeySet.import_key_set(client.jwks)
        assert client.jwks_uri is not None
        with self.lock:
            cached = self._jwks_cache.get(client.jwks_uri)
        if cached is None:
            with requests.get(client.jwks_uri, timeout=5) as response:
                response.raise_for_status()
                cached = response.json()
            with self.lock:
                self._jwks_cache[client.jwks_uri] = cached
        return KeySet.import_key_set(cached)

    def use_jti(self, client_id: str, jti: str) -> bool:
        """Record an assertion jti; False when it was seen before (replay)."""
        now = time.time()
        with self.lock:
            for key in [k for k, t in self.used_jti.items() if t < now - JTI_MEMORY]:
                del self.used_jti[key]
            if (client_id, jti) in self.used_jti:
                return False
            self.used_jti[(client_id, jti)] = now
            return True

    # -- tokens
    def token_for(self, access_token: str) -> TokenRecord | None:
        """The live record for a bearer token (None if unknown or expired)."""
        with self.lock:
            record = self.tokens.get(access_token)
        if record is None or record.is_expired():
            return None
        return record

    def expire_tokens(self, *, client_id: str | None = None, access_token: str | None = None) -> int:
        """Expire access tokens now (all, one client's, or one); refresh tokens stay usable. Returns how many."""
        count = 0
        with self.lock:
            for record in self.tokens.values():
                if client_id is not None and record.client_id != client_id:
                    continue
                if access_token is not None and record.access_token != access_token:
                    continue
                record.expires_at = 0.0
                count += 1
        return count

    def reset(self) -> None:
        """Switches back to defaults (clients and tokens stay)."""
        with self.lock:
            self.switches = Switches()
