"""authlib wiring: authorization code + PKCE S256, refresh tokens, `none` and `private_key_jwt` clients."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from sandbox.smart_auth.scopes import split_scopes
from sandbox.smart_auth.state import CODE_LIFETIME, CONTEXT_KEYS, AuthorizationCode, AuthState, TokenRecord, User

ASSERTION_ALGORITHMS = ["ES384", "RS384"]
# authlib logs whole token responses at DEBUG ("Issue token {...}"): those records are dropped here.
TOKEN_LOGGERS = (
    "authlib.oauth2.rfc6749.grants.authorization_code",
    "authlib.oauth2.rfc6749.grants.refresh_token",
    "authlib.oauth2.rfc6749.grants.base",
    "authlib.oauth2.rfc6749.authorization_server",
)


class DropTokenRecords(logging.Filter):
    """Drops authlib log records that carry issued tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for 'Issue token …' records."""
        return not str(record.msg).startswith("Issue token")


def install_log_filters() -> None:
    """Attach DropTokenRecords once to the authlib loggers that log tokens."""
    for name in TOKEN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropTokenRecords) for f in logger.filters):
            logger.addFilter(DropTokenRecords())


MAX_ASSERTION_LIFETIME = 300
REFRESH_SCOPES = {"offline_access", "online_access"}
AUTH_METHODS = ["private_key_jwt", "none"]


class SmartAuthorizationServer(AuthorizationServer):
    """authlib's Flask AuthorizationServer with a handle on our in-memory state."""

    def __init__(self, state: AuthState) -> None:
        super().__init__()
        self.state = state
        self._query_client = state.query_client
        self._save_token = self._store_token
        self.register_token_generator("default", self._generate_token)

    def load_config(self, config: Any) -> None:
        """Keep our own token generator (the base class would install its own)."""
        self.scopes_supported = None
        self._error_uris = None

    def _generate_token(
        self,
        grant_type: str,
        client: Any,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        switches = self.state.switches
        token: dict[str, Any] = {
            "access_token": secrets.token_urlsafe(32),
            "token_type": "Bearer",
            "expires_in": expires_in or switches.token_lifetime,
            "scope": scope or "",
        }
        wants_refresh = bool(REFRESH_SCOPES & set(split_scopes(scope)))
        if include_refresh_token and wants_refresh and not switches.no_refresh_token:
            token["refresh_token"] = secrets.token_urlsafe(48)
        return token

    def _store_token(self, token: dict[str, Any], request: Any) -> None:
        source = getattr(request, "authorization_code", None) or getattr(request, "refresh_token", None)
        assert source is not None
        record = TokenRecord(
            access_token=token["access_token"],
            client_id=request.client.client_id,
            scope=token["scope"],
            user=source.user,
            context=dict(source.context),
            expires_at=time.time() + int(token["expires_in"]),
            refresh_token=token.get("refresh_token"),
            nonce=source.nonce,
            auth_time=source.auth_time,
        )
        with self.state.lock:
            self.state.tokens[record.access_token] = record
            if record.refresh_token:
                self.state.refresh_tokens[record.refresh_token] = record

    def decorate(self, token: dict[str, Any], record_source: AuthorizationCode | TokenRecord, *, refresh: bool) -> None:
        """Add SMART launch context and the id_token to a token response, then apply the switches."""
        switches = self.state.switches
        granted = split_scopes(token.get("scope"))
        for key in CONTEXT_KEYS:
            value = record_source.context.get(key)
            if value is not None:
                token[key] = value
        if switches.omit_patient or (switches.patient_only_on_refresh and not refresh):
            token.pop("patient", None)
        if switches.omit_offline_access_from_scope:
            token["scope"] = " ".join(s for s in granted if s not in REFRESH_SCOPES)
        if "openid" in granted:
            token["id_token"] = self._id_token(token, record_source, granted)

    def _id_token(self, token: dict[str, Any], source: AuthorizationCode | TokenRecord, granted: list[str]) -> str:
        state, switches = self.state, self.state.switches
        now = int(time.time())
        client_id = source.client_id
        claims: dict[str, Any] = {
            "iss": state.issuer(),
            "sub": source.user.fhir_user.replace("/", "-"),
            "aud": client_id,
            "iat": now,
            "exp": now + 3600,
            "auth_time": source.auth_time or now,
        }
        if source.nonce:
            claims["nonce"] = source.nonce
        if "fhirUser" in granted or "profile" in granted:
            rel = source.user.fhir_user
            claims["fhirUser"] = rel if switches.fhir_user_relative else f"{state.fhir_base()}/{rel}"
        return state.keys.sign(claims, switches.id_token_alg)


class SmartCodeGrant(grants.AuthorizationCodeGrant):
    """Authorization code grant that stores the SMART launch context with the code."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def save_authorization_code(self, code: str, request: Any) -> None:
        """Store the code with the PKCE challenge, nonce, user and launch context."""
        state: AuthState = self.server.state
        payload = request.payload.data
        item = AuthorizationCode(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=payload.get("redirect_uri") or request.client.get_default_redirect_uri() or "",
            scope=request.smart_granted_scope,
            user=request.user,
            code_challenge=payload.get("code_challenge", ""),
            code_challenge_method=payload.get("code_challenge_method", ""),
            context=request.smart_context,
            nonce=payload.get("nonce"),
            auth_time=int(time.time()),
            expires_at=time.time() + CODE_LIFETIME,
        )
        with state.lock:
            state.codes[code] = item

    def query_authorization_code(self, code: str, client: Any) -> AuthorizationCode | None:
        """A live code issued to this client."""
        state: AuthState = self.server.state
        with state.lock:
            item = state.codes.get(code)
        if item is None or item.client_id != client.client_id or item.expires_at < time.time():
            return None
        return item

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Codes are single-use."""
        state: AuthState = self.server.state
        with state.lock:
            state.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User:
        """The user who approved the code."""
        return authorization_code.user

    def create_token_response(self) -> tuple[int, Any, Any]:
        """authlib's response plus SMART context and id_token."""
        code = self.request.authorization_code
        status, token, headers = super().create_token_response()
        self.server.decorate(token, code, refresh=False)
        return status, token, headers


class SmartRefreshGrant(grants.RefreshTokenGrant):
    """Refresh grant: a new refresh token replaces the old one, which stops working."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> TokenRecord | None:
        """The record behind a refresh token that has not been replaced."""
        state: AuthState = self.server.state
        with state.lock:
            record = state.refresh_tokens.get(refresh_token)
        if record is None or record.refresh_revoked:
            return None
        return record

    def authenticate_user(self, refresh_token: TokenRecord) -> User:
        """The user of the original grant."""
        return refresh_token.user

    def revoke_old_credential(self, refresh_token: TokenRecord) -> None:
        """The old refresh token is refused from now on."""
        state: AuthState = self.server.state
        with state.lock:
            refresh_token.refresh_revoked = True

    def create_token_response(self) -> tuple[int, Any, Any]:
        """authlib's response plus SMART context (and the patient, for `patient_only_on_refresh`)."""
        old = self.request.refresh_token
        status, token, headers = super().create_token_response()
        self.server.decorate(token, old, refresh=True)
        return status, token, headers


class S256Only(CodeChallenge):
    """PKCE with S256 required of every client at the authorize endpoint and the token endpoint."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 - authlib class attribute

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        """Refuse a missing challenge, a missing method and `plain`."""
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge' (S256)")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE code_challenge_method must be S256 ('plain' is not accepted)")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        """A code_verifier is required of every client."""
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)


class SmartClientAssertion(JWTBearerClientAssertion):
    """private_key_jwt per SMART: ES384 or RS384, exp ≤ 300 s after iat, single-use jti, plus the switches."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, state: AuthState) -> None:
        super().__init__(validate_jti=True, leeway=60)
        self.state = state

    def get_audiences(self) -> list[str]:
        """The token endpoint URL."""
        return [self.state.token_url()]

    def resolve_client_public_key(self, client: Any) -> KeySet:
        """The client's registered JWKS."""
        try:
            return self.state.client_jwks(client)
        except Exception as exc:  # jwks_uri unreachable or not a JWK set
            raise InvalidClientError(description="The client's JWKS could not be loaded.") from exc

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        """Verify signature (ES384/RS384 only), then lifetimes, then the standard claims and jti."""
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except JoseError as exc:
            raise InvalidClientError(
                description="Client assertion signature or algorithm not accepted (ES384 or RS384)."
            ) from exc
        claims = dict(token.claims)
        self._check_times(claims)
        self.verify_claims(claims)
        return claims

    def _check_times(self, claims: dict[str, Any]) -> None:
        switches = self.state.switches
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(exp, int | float):
            raise InvalidClientError(description="Client assertion has no numeric 'exp'.")
        if iat is None:
            if switches.require_iat:
                raise InvalidClientError(description="Client assertion has no 'iat'.")
            if exp - now > MAX_ASSERTION_LIFETIME + self.leeway:
                raise InvalidClientError(description="Client assertion 'exp' is more than 300 s ahead.")
        else:
            if not isinstance(iat, int | float):
                raise InvalidClientError(description="Client assertion 'iat' is not a number.")
            if iat > now + (0 if switches.reject_iat_in_future else self.leeway):
                raise InvalidClientError(description="Client assertion 'iat' is in the future.")
            if exp - iat > MAX_ASSERTION_LIFETIME:
                raise InvalidClientError(description="Client assertion 'exp' is more than 300 s after 'iat'.")
        cap = switches.cap_assertion_exp
        if cap is not None and exp - now > cap:
            raise InvalidClientError(description=f"Client assertion 'exp' is more than {cap} s ahead.")

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        """Each jti once per client."""
        return self.state.use_jti(str(claims.get("sub")), str(jti))


def create_authorization_server(state: AuthState) -> SmartAuthorizationServer:
    """The configured authlib server over `state`."""
    install_log_filters()
    server = SmartAuthorizationServer(state)
    server.register_grant(SmartCodeGrant, [S256Only(required=True)])
    server.register_grant(SmartRefreshGrant)
    server.register_client_auth_method("private_key_jwt", SmartClientAssertion(state))
    return server
