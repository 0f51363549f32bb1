"""SMART App Launch 2.x client: discovery, allow-listed issuers, PKCE, private_key_jwt, tokens, id_token, scopes."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import yaml
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.errors import OAuth2Error
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from ptguard.appeals.scopes import Scopes
from ptguard.errors import ConfigError, PtguardError

log = logging.getLogger("ptguard.smart")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("ES384", "RS384")
ID_TOKEN_ALGS = ["RS256", "RS384", "ES256", "ES384", "PS256"]
ASSERTION_LIFETIME = 290  # seconds; SMART allows at most 300 and some servers cap exp at now + 300
CLOCK_BACKDATE = 5  # iat a few seconds in the past: one server rejects an iat even milliseconds ahead of its clock
REFRESH_MARGIN = 60  # refresh this many seconds before the access token expires
HTTP_TIMEOUT = 10
FHIR_USER_TYPES = ("Practitioner", "Patient", "RelatedPerson", "Person", "PractitionerRole")

# What the app asks for. v2 letters; the v1 equivalents are used when the server does not advertise v2.
READ_TYPES = (
    "Patient",
    "Encounter",
    "Procedure",
    "DocumentReference",
    "Composition",
    "Observation",
    "Goal",
    "CarePlan",
    "ServiceRequest",
    "Coverage",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Claim",
    "ClaimResponse",
    "ExplanationOfBenefit",
    "Condition",
)
WRITE_TYPES = ("DocumentReference", "Task")


class SmartError(PtguardError):
    """A SMART launch or token step failed; the message says what happened and what to do."""

    exit_code = 6

    def __init__(self, message: str, *, title: str = "The app could not start", action: str | None = None) -> None:
        super().__init__(message)
        self.title = title
        self.action = action


def normalise_base(url: str) -> str:
    """A FHIR base compared loosely: scheme and host lower-cased, default port and trailing slashes removed."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = parts.port
    scheme = parts.scheme.lower()
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def issuer_key(url: str) -> str:
    """The allow-list key of a FHIR base: normalised, and the path case-folded (EHRs vary the case of `iss`)."""
    base = normalise_base(url)
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.lower(), "", ""))


@dataclass
class IssuerConfig:
    """One allow-listed EHR: its FHIR base (sent as `aud`, exactly), the client registration and the keys."""

    fhir_base: str
    client_id: str
    auth_method: str = "none"
    private_key_path: str | None = None
    private_key: dict[str, Any] | None = None
    alg: str | None = None
    scopes: str | None = None
    scope_version: str = "auto"  # auto | v2 | v1
    scope_context: str = "user"  # user (a biller works across patients) | patient
    aliases: list[str] = field(default_factory=list)
    name: str | None = None

    def key(self) -> RSAKey | ECKey:
        """The private JWK used to sign client assertions."""
        data = self.private_key
        if data is None and self.private_key_path:
            try:
                data = json.loads(Path(self.private_key_path).read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"private key for {self.client_id} cannot be read ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"issuer {self.fhir_base}: private_key_jwt needs a private key (JWK) file")
        key = KeySet.import_key_set({"keys": [data]}).keys[0]
        if not isinstance(key, RSAKey | ECKey):
            raise ConfigError("the private key must be an RSA or EC (P-384) JWK")
        return key

    def algorithm(self) -> str:
        if self.alg:
            if self.alg not in ASSERTION_ALGS:
                raise ConfigError(f"assertion algorithm must be ES384 or RS384, not {self.alg}")
            return self.alg
        return "ES384" if isinstance(self.key(), ECKey) else "RS384"


def load_issuers(source: str | None) -> dict[str, IssuerConfig]:
    """The allow-list: a YAML/JSON file path or inline JSON, `{issuers: [{fhir_base, client_id, ...}]}` or a list."""
    if not source:
        return {}
    text = source
    if not source.lstrip().startswith(("{", "[")):
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"PTGUARD_SMART_ISSUERS cannot be read ({type(exc).__name__})", where=source) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError("PTGUARD_SMART_ISSUERS is not valid YAML/JSON") from None
    items = data.get("issuers", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigError("PTGUARD_SMART_ISSUERS must list issuers")
    out: dict[str, IssuerConfig] = {}
    for raw in items:
        if not isinstance(raw, dict) or not raw.get("fhir_base") or not raw.get("client_id"):
            raise ConfigError("each issuer needs fhir_base and client_id")
        known = {f for f in IssuerConfig.__dataclass_fields__}
        cfg = IssuerConfig(**{k: v for k, v in raw.items() if k in known})
        if cfg.auth_method not in ("none", "private_key_jwt"):
            raise ConfigError(f"issuer {cfg.fhir_base}: auth_method must be none or private_key_jwt")
        for url in [cfg.fhir_base, *cfg.aliases]:
            try:
                out[issuer_key(url)] = cfg
            except ValueError:
                raise ConfigError(f"issuer {url!r} is not a valid URL (port out of range?)") from None
    return out


def find_issuer(issuers: dict[str, IssuerConfig], iss: str) -> IssuerConfig:
    try:
        cfg = issuers.get(issuer_key(iss))
    except ValueError:  # e.g. a port out of range: urlsplit's .port raises
        cfg = None
    if cfg is None:
        raise SmartError(
            "The EHR that launched the app is not on ptguard's list of known EHRs, so the app did not send it any "
            "credentials.",
            title="Unknown EHR",
            action="Ask your administrator to add this FHIR server to PTGUARD_SMART_ISSUERS, then launch again.",
        )
    return cfg


# ------------------------------------------------------------------ discovery


@dataclass
class SmartConfiguration:
    """The endpoints and capabilities the app needs from the EHR's authorization server."""

    authorization_endpoint: str
    token_endpoint: str
    issuer: str | None = None
    jwks_uri: str | None = None
    capabilities: list[str] = field(default_factory=list)
    scopes_supported: list[str] = field(default_factory=list)
    code_challenge_methods_supported: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def supports_v2(self) -> bool:
        if "permission-v2" in self.capabilities:
            return True
        return any(s.endswith((".rs", ".cruds", ".r", ".c")) for s in self.scopes_supported)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SmartConfiguration:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _get_json(http: requests.Session, url: str) -> dict[str, Any] | None:
    try:
        with http.get(url, headers={"Accept": "application/json"}, timeout=HTTP_TIMEOUT) as response:
            if response.status_code != 200:
                return None
            data = response.json()
    except (requests.RequestException, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _from_metadata(data: dict[str, Any]) -> dict[str, str]:
    """authorize/token URLs from the CapabilityStatement's oauth-uris security extension."""
    out: dict[str, str] = {}
    for rest in data.get("rest") or []:
        for ext in ((rest.get("security") or {}).get("extension") or []) if isinstance(rest, dict) else []:
            if isinstance(ext, dict) and str(ext.get("url", "")).endswith("oauth-uris"):
                for sub in ext.get("extension") or []:
                    if isinstance(sub, dict) and sub.get("url") in ("authorize", "token") and sub.get("valueUri"):
                        out[str(sub["url"])] = str(sub["valueUri"])
    return out


def discover(fhir_base: str, *, http: requests.Session | None = None) -> SmartConfiguration:
    """`{base}/.well-known/smart-configuration`, then the server root's, then `{base}/metadata` (oauth-uris)."""
    http = http or requests.Session()
    base = fhir_base.rstrip("/")
    parts = urlsplit(base)
    root = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    tried = []
    for url in (f"{base}/.well-known/smart-configuration", f"{root}/.well-known/smart-configuration"):
        tried.append(url)
        data = _get_json(http, url)
        if data and data.get("token_endpoint"):
            return SmartConfiguration(
                authorization_endpoint=str(data.get("authorization_endpoint") or ""),
                token_endpoint=str(data["token_endpoint"]),
                issuer=data.get("issuer"),
                jwks_uri=data.get("jwks_uri"),
                capabilities=list(data.get("capabilities") or []),
                scopes_supported=list(data.get("scopes_supported") or []),
                code_challenge_methods_supported=list(data.get("code_challenge_methods_supported") or []),
                source=url,
            )
    data = _get_json(http, f"{base}/metadata")
    uris = _from_metadata(data) if data else {}
    if uris.get("token") and uris.get("authorize"):
        return SmartConfiguration(uris["authorize"], uris["token"], source=f"{base}/metadata")
    raise SmartError(
        "The EHR's SMART configuration was not found at the FHIR base, at the server root, or in its "
        "CapabilityStatement.",
        title="EHR configuration not found",
        action="Check the FHIR base URL registered for this EHR.",
    )


def requested_scopes(cfg: IssuerConfig, smart: SmartConfiguration, *, ehr_launch: bool) -> list[str]:
    """Scopes to ask for: v2 when the server advertises it (or config says so), v1 otherwise."""
    if cfg.scopes:
        base = cfg.scopes.split()
    else:
        v2 = cfg.scope_version == "v2" or (cfg.scope_version == "auto" and smart.supports_v2)
        base = ["openid", "fhirUser"]
        ctx = "patient" if cfg.scope_context == "patient" else "user"
        for t in READ_TYPES:
            base.append(f"{ctx}/{t}.rs" if v2 else f"{ctx}/{t}.read")
        for t in WRITE_TYPES:
            base.append(f"{ctx}/{t}.c" if v2 else f"{ctx}/{t}.write")
    context = ["launch"] if ehr_launch else ["launch/patient"]
    refresh = ["online_access"] if ehr_launch else ["offline_access"]
    return list(dict.fromkeys([*context, *base, *refresh]))


# ------------------------------------------------------------------ client assertion and tokens


def client_assertion(cfg: IssuerConfig, token_url: str, *, now: float | None = None) -> str:
    """A private_key_jwt assertion: iss = sub = client_id, aud = token URL, fresh jti, iat in the past, exp ≤ 300 s."""
    key = cfg.key()
    alg = cfg.algorithm()
    issued = int(now if now is not None else time.time()) - CLOCK_BACKDATE
    claims = {
        "iss": cfg.client_id,
        "sub": cfg.client_id,
        "aud": token_url,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
        "jti": secrets.token_urlsafe(24),
    }
    header = {"alg": alg, "typ": "JWT", "kid": key.kid or key.thumbprint()}
    return jwt.encode(header, claims, key, algorithms=[alg])


def _session(cfg: IssuerConfig, redirect_uri: str | None = None, scope: str | None = None) -> OAuth2Session:
    return OAuth2Session(
        client_id=cfg.client_id,
        redirect_uri=redirect_uri,
        scope=scope,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",  # noqa: S106 - an auth method name
        default_timeout=HTTP_TIMEOUT,
    )


def authorize_url(
    cfg: IssuerConfig,
    smart: SmartConfiguration,
    *,
    redirect_uri: str,
    scopes: list[str],
    state: str,
    verifier: str,
    launch: str | None,
) -> str:
    """The authorize URL: response_type=code, PKCE S256, state, aud = the configured FHIR base (always sent)."""
    if not smart.authorization_endpoint:
        raise SmartError("The EHR does not publish an authorization endpoint.", title="EHR configuration incomplete")
    if smart.code_challenge_methods_supported and "S256" not in smart.code_challenge_methods_supported:
        raise SmartError("The EHR does not support PKCE with S256, which this app requires.", title="PKCE unsupported")
    extra: dict[str, str] = {"aud": cfg.fhir_base}
    if launch:
        extra["launch"] = launch
    url, _ = _session(cfg, redirect_uri, " ".join(scopes)).create_authorization_url(
        smart.authorization_endpoint, state=state, code_verifier=verifier, **extra
    )
    return str(url)


def _auth_params(cfg: IssuerConfig, token_url: str) -> dict[str, str]:
    if cfg.auth_method == "private_key_jwt":
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": client_assertion(cfg, token_url)}
    return {}


# authlib's requests client raises OAuthError (base_client) for an error answer of the token endpoint, and
# OAuth2Error (rfc6749) for some client-side checks: both are the EHR saying no.
TOKEN_ERRORS = (OAuthError, OAuth2Error, AuthlibBaseError, requests.RequestException, ValueError, KeyError, TypeError)


def _error_code(exc: Exception) -> str:
    code = getattr(exc, "error", None)
    return str(code) if code else "error"


def _token_error(exc: Exception, *, refreshing: bool = False) -> SmartError:
    if isinstance(exc, AuthlibBaseError):
        what = "".join(c for c in _error_code(exc) if c.isalnum() or c in "_-.")[:60] or "error"
        if refreshing:
            return SmartError(
                f"The EHR no longer accepts this session's refresh token ({what}).",
                title="Session expired, launch again",
                action="Launch the app again from the EHR to continue; your appeal drafts are saved.",
            )
        return SmartError(
            f"The EHR refused the token request ({what}).",
            title="Sign-in not completed",
            action="Launch the app again from the EHR.",
        )
    return SmartError(
        f"The EHR's token endpoint could not be reached ({type(exc).__name__}).",
        title="Sign-in not completed",
        action="Try again in a moment.",
    )


def exchange_code(
    cfg: IssuerConfig, smart: SmartConfiguration, *, code: str, verifier: str, redirect_uri: str
) -> dict[str, Any]:
    """The token response for an authorization code (PKCE verifier; client assertion when confidential)."""
    try:
        token = _session(cfg, redirect_uri).fetch_token(
            smart.token_endpoint,
            grant_type="authorization_code",
            code=code,
            code_verifier=verifier,
            **_auth_params(cfg, smart.token_endpoint),
        )
    except TOKEN_ERRORS as exc:
        raise _token_error(exc) from None
    return dict(token)


def refresh(cfg: IssuerConfig, smart: SmartConfiguration, refresh_token: str) -> dict[str, Any]:
    """A refreshed token response (a new refresh token replaces the old one when the EHR sends one)."""
    try:
        token = _session(cfg).refresh_token(
            smart.token_endpoint, refresh_token=refresh_token, **_auth_params(cfg, smart.token_endpoint)
        )
    except TOKEN_ERRORS as exc:
        raise _token_error(exc, refreshing=True) from None
    return dict(token)


# ------------------------------------------------------------------ id_token


@dataclass
class IdentityCheck:
    """What the id_token said and whether it was verified."""

    verified: bool
    fhir_user: str | None
    subject: str | None
    note: str


def check_id_token(
    id_token: str | None, cfg: IssuerConfig, smart: SmartConfiguration, *, http: requests.Session | None = None
) -> IdentityCheck:
    """Verify the id_token against the issuer's JWKS (when published) and check iss, aud, exp and fhirUser."""
    if not id_token:
        return IdentityCheck(False, None, None, "no id_token in the token response")
    http = http or requests.Session()
    jwks_uri = smart.jwks_uri
    issuer = smart.issuer
    if not jwks_uri and issuer:
        oidc = _get_json(http, issuer.rstrip("/") + "/.well-known/openid-configuration")
        jwks_uri = (oidc or {}).get("jwks_uri")
    if not jwks_uri:
        return IdentityCheck(False, None, None, "the EHR publishes no jwks_uri; the id_token was not used")
    keys = _get_json(http, jwks_uri)
    if not keys:
        raise SmartError(
            "The EHR's signing keys could not be read to check who signed in.", title="Sign-in not verified"
        )
    try:
        token = jwt.decode(id_token, KeySet.import_key_set(keys), algorithms=ID_TOKEN_ALGS)
        claims = dict(token.claims)
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": issuer} if issuer else {"essential": True},
            aud={"essential": True, "value": cfg.client_id},
            exp={"essential": True},
            leeway=60,
        ).validate(claims)
    except (JoseError, ValueError, TypeError, KeyError):
        raise SmartError(
            "The identity token from the EHR did not verify (signature, issuer, audience or expiry).",
            title="Sign-in not verified",
            action="Launch the app again from the EHR.",
        ) from None
    fhir_user = claims.get("fhirUser")
    if fhir_user is not None:
        path = urlsplit(str(fhir_user)).path.rstrip("/").split("/")
        if len(path) < 2 or path[-2] not in FHIR_USER_TYPES:
            raise SmartError(
                "The identity token names a user that is not a FHIR Practitioner, Patient or Person.",
                title="Sign-in not verified",
            )
        fhir_user = f"{path[-2]}/{path[-1]}"
    return IdentityCheck(True, fhir_user, str(claims.get("sub")) if claims.get("sub") else None, "verified")


# ------------------------------------------------------------------ the token set and what it allows


@dataclass
class LaunchContext:
    """Launch context from the token response."""

    patient: str | None = None
    encounter: str | None = None
    fhir_context: list[dict[str, Any]] = field(default_factory=list)
    app_context: dict[str, Any] | None = None
    need_patient_banner: bool = False
    smart_style_url: str | None = None
    intent: str | None = None
    tenant: str | None = None

    @classmethod
    def from_token(cls, token: dict[str, Any]) -> LaunchContext:
        app_context = token.get("appContext")
        if isinstance(app_context, str):
            try:
                app_context = json.loads(app_context)
            except ValueError:
                app_context = None
        fc = token.get("fhirContext")
        return cls(
            patient=str(token["patient"]) if token.get("patient") else None,
            encounter=str(token["encounter"]) if token.get("encounter") else None,
            fhir_context=[c for c in fc if isinstance(c, dict)] if isinstance(fc, list) else [],
            app_context=app_context if isinstance(app_context, dict) else None,
            need_patient_banner=bool(token.get("need_patient_banner")),
            smart_style_url=token.get("smart_style_url"),
            intent=token.get("intent"),
            tenant=token.get("tenant"),
        )

    def reference(self, resource_type: str) -> str | None:
        """The id of the first fhirContext (or appContext) reference of a type."""
        for item in self.fhir_context:
            ref = str(item.get("reference") or "")
            if ref.split("/")[-2:-1] == [resource_type] or (item.get("type") == resource_type and ref):
                return ref.split("/")[-1]
        app = self.app_context or {}
        for key, value in app.items():
            if isinstance(value, str) and value.startswith(f"{resource_type}/") and key != "view":
                return value.split("/")[-1]
        return None


@dataclass
class TokenSet:
    """Everything the app keeps server-side about one signed-in session (never logged)."""

    issuer: str
    fhir_base: str
    access_token: str
    expires_at: float
    scope: str
    requested: list[str]
    refresh_token: str | None
    context: LaunchContext
    fhir_user: str | None
    identity_note: str
    smart: dict[str, Any]

    @property
    def scopes(self) -> Scopes:
        return Scopes.of(self.scope)

    def expires_in(self, now: float | None = None) -> float:
        return self.expires_at - (now if now is not None else time.time())

    def needs_refresh(self, now: float | None = None) -> bool:
        return self.expires_in(now) < REFRESH_MARGIN

    def can_refresh(self) -> bool:
        return bool(self.refresh_token)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (stored encrypted server-side; never logged)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenSet:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        ctx = fields.get("context") or {}
        fields["context"] = LaunchContext(**{k: v for k, v in ctx.items() if k in LaunchContext.__dataclass_fields__})
        return cls(**fields)

    def update(self, token: dict[str, Any]) -> None:
        """Apply a refreshed token response (keeps the old refresh token when none comes back)."""
        self.access_token = str(token["access_token"])
        self.expires_at = time.time() + float(token.get("expires_in") or 300)
        if token.get("scope"):
            self.scope = str(token["scope"])
        if token.get("refresh_token"):
            self.refresh_token = str(token["refresh_token"])
        if token.get("patient") and not self.context.patient:
            self.context.patient = str(token["patient"])


def token_set(
    token: dict[str, Any], cfg: IssuerConfig, smart: SmartConfiguration, requested: list[str], identity: IdentityCheck
) -> TokenSet:
    if not token.get("access_token"):
        raise SmartError("The EHR's token response had no access token.", title="Sign-in not completed")
    granted = str(token.get("scope") or " ".join(requested))
    context = LaunchContext.from_token(token)
    if not context.patient and identity.verified and (identity.fhir_user or "").startswith("Patient/"):
        # Identity only via fhirUser (a patient signed in, no `patient` in the token): that patient is the context.
        context.patient = str(identity.fhir_user).split("/", 1)[1]
    return TokenSet(
        issuer=issuer_key(cfg.fhir_base),
        fhir_base=cfg.fhir_base.rstrip("/"),
        access_token=str(token["access_token"]),
        expires_at=time.time() + float(token.get("expires_in") or 300),
        scope=granted,
        requested=requested,
        refresh_token=str(token["refresh_token"]) if token.get("refresh_token") else None,
        context=context,
        fhir_user=identity.fhir_user,
        identity_note=identity.note,
        smart=smart.to_dict(),
    )


@dataclass
class Feature:
    """One thing the app can do, whether the granted scopes allow it, and why not."""

    name: str
    enabled: bool
    why: str = ""


def features(ts: TokenSet) -> list[Feature]:
    """The app's features degraded per missing scope (compared as sets; v1 and v2 both understood)."""
    s = ts.scopes
    out = []

    def need(name: str, ok: bool, why: str) -> None:
        out.append(Feature(name, ok, "" if ok else why))

    need("read the denial", s.can_read("ClaimResponse"), "no read scope for ClaimResponse (patient/ClaimResponse.rs)")
    need(
        "read the claim",
        s.can_read("Claim"),
        "no read scope for Claim (patient/Claim.rs); lines cannot be tied to visits",
    )
    need(
        "read the chart",
        all(s.can_read(t) for t in ("Encounter", "Procedure", "DocumentReference", "Observation")),
        "no read scope for part of the chart (Encounter, Procedure, DocumentReference, Observation); "
        "the letter will show more gaps",
    )
    need(
        "save the packet to the chart",
        s.can_create("DocumentReference"),
        "no DocumentReference.c scope: the PDF can be downloaded but not written back",
    )
    need("create the appeal task", s.can_create("Task"), "no Task.c scope: the due date stays in ptguard's worklist")
    refresh_ok = ts.can_refresh()
    out.append(
        Feature(
            "stay signed in",
            refresh_ok,
            ""
            if refresh_ok
            else (
                "no refresh token"
                + ("" if {"offline_access", "online_access"} & set(s.items) else " (offline_access not granted)")
                + f": the session ends when the access token expires (in about {max(0, int(ts.expires_in()) // 60)} min); "
                "you will be asked to launch again"
            ),
        )
    )
    from ptguard.appeals.scopes import parse

    asked_reads = [x for x in ts.requested if (g := parse(x)) is not None and "r" in g.ops]
    granted_reads = [x for x in s.items if (g := parse(x)) is not None and "r" in g.ops]
    if asked_reads and not granted_reads:
        out.append(
            Feature(
                "resource access",
                False,
                "the EHR granted none of the read scopes asked for (some EHRs silently drop v1 '.read' scopes "
                "for apps registered with v2 scopes); ask the administrator to check the app's registration",
            )
        )
    return out


def env_issuers() -> str | None:
    return os.environ.get("PTGUARD_SMART_ISSUERS")
