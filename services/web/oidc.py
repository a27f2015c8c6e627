"""OpenID Connect relying party: authorization code with PKCE (S256), for a public client.

The provider is found by discovery (``<issuer>/.well-known/openid-configuration``,
whose ``issuer`` must equal the configured one). Tokens are verified with the
services' own :class:`~ciphercare.services.identity.tokens.TokenVerifier` (signature
from the JWKS, issuer, audience, expiry); the ID token with a subclass that
expects ``typ: ID`` and the client as audience, then ``nonce``, ``azp`` and
``at_hash`` are checked here. Token endpoint errors are reported without echoing
any token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ciphercare.ledger.api import Principal
from ciphercare.services.identity.tokens import AuthError, TokenVerifier

MAX_RESPONSE_BYTES = 256 * 1024


class OidcError(Exception):
    """The login could not be completed; the message is safe to show."""


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    end_session_endpoint: str | None


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    expires_at: float
    refresh_token: str
    id_token: str


@dataclass(frozen=True)
class LoginRequest:
    """The secrets of one authorization request (kept in the server-side session)."""

    state: str
    nonce: str
    code_verifier: str

    @property
    def code_challenge(self) -> str:
        return _b64url(hashlib.sha256(self.code_verifier.encode("ascii")).digest())

    @classmethod
    def new(cls) -> LoginRequest:
        return cls(state=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32),
                   code_verifier=secrets.token_urlsafe(64))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(segment: str) -> dict[str, Any]:
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise OidcError("the ID token payload is not a JSON object")
    return value


class IdTokenVerifier(TokenVerifier):
    """A :class:`TokenVerifier` for ID tokens: ``aud`` is the client, ``typ`` (if present) is ``ID``."""

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        typ = claims.get("typ")
        if typ is not None and typ != "ID":
            raise AuthError("UNAUTHENTICATED", "not an ID token (typ claim is not 'ID')")
        super()._check_claims({k: v for k, v in claims.items() if k != "typ"})


class OidcClient:
    """One public OIDC client: builds authorization URLs, redeems codes, refreshes, logs out."""

    def __init__(self, issuer: str, client_id: str, redirect_uri: str, access_verifier: TokenVerifier,
                 *, timeout_s: float = 10.0) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.access_verifier = access_verifier
        self.id_verifier = IdTokenVerifier(
            issuer=access_verifier.issuer, audience=client_id, jwks=access_verifier.jwks,
            algorithms=sorted(access_verifier.algorithms), leeway_s=access_verifier.leeway_s,
        )
        self.timeout_s = timeout_s
        self._metadata: ProviderMetadata | None = None

    # ------------------------------------------------------------ discovery

    async def metadata(self) -> ProviderMetadata:
        """The provider's endpoints (discovered once; retried while unreachable)."""
        if self._metadata is None:
            doc = await asyncio.to_thread(self._get_json, f"{self.issuer}/.well-known/openid-configuration")
            if doc.get("issuer", "").rstrip("/") != self.issuer:
                raise OidcError("the identity provider's discovery document names a different issuer")
            try:
                self._metadata = ProviderMetadata(
                    issuer=self.issuer,
                    authorization_endpoint=str(doc["authorization_endpoint"]),
                    token_endpoint=str(doc["token_endpoint"]),
                    end_session_endpoint=doc.get("end_session_endpoint"),
                )
            except KeyError as exc:
                raise OidcError(f"the identity provider does not offer {exc.args[0]}; browser login is "
                                "not available") from None
        return self._metadata

    async def authorization_url(self, login: LoginRequest) -> str:
        meta = await self.metadata()
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid profile",
            "state": login.state,
            "nonce": login.nonce,
            "code_challenge": login.code_challenge,
            "code_challenge_method": "S256",
        }
        sep = "&" if urllib.parse.urlsplit(meta.authorization_endpoint).query else "?"
        return meta.authorization_endpoint + sep + urllib.parse.urlencode(params)

    async def end_session_url(self, id_token: str, post_logout_redirect_uri: str) -> str | None:
        """RP-initiated logout URL, or ``None`` when the provider has no end-session endpoint."""
        try:
            meta = await self.metadata()
        except OidcError:
            return None
        if not meta.end_session_endpoint:
            return None
        params = {"client_id": self.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token:
            params["id_token_hint"] = id_token
        return meta.end_session_endpoint + "?" + urllib.parse.urlencode(params)

    # --------------------------------------------------------------- tokens

    async def redeem(self, code: str, login: LoginRequest) -> tuple[TokenSet, Principal, dict[str, Any]]:
        """Exchange ``code`` (with the PKCE verifier) and verify both tokens; returns (tokens, principal, id claims)."""
        tokens = await self._token_request({
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": login.code_verifier,
        })
        if not tokens.id_token:
            raise OidcError("the identity provider returned no ID token")
        claims = await self.verify_id_token(tokens.id_token, login.nonce, tokens.access_token)
        principal = await self.verify_access_token(tokens.access_token)
        if principal.subject != claims.get("sub"):
            raise OidcError("the ID token and the access token name different users")
        return tokens, principal, claims

    async def refresh(self, refresh_token: str) -> tuple[TokenSet, Principal]:
        tokens = await self._token_request({
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.client_id,
        })
        return tokens, await self.verify_access_token(tokens.access_token)

    async def verify_access_token(self, token: str) -> Principal:
        try:
            return await asyncio.to_thread(self.access_verifier.verify, token)
        except AuthError as exc:
            raise OidcError(f"the access token was not accepted: {exc.message}") from None

    async def verify_id_token(self, id_token: str, nonce: str, access_token: str) -> dict[str, Any]:
        try:
            await asyncio.to_thread(self.id_verifier.verify, id_token)
        except AuthError as exc:
            raise OidcError(f"the ID token was not accepted: {exc.message}") from None
        claims = _b64url_json(id_token.split(".")[1])  # signature verified above
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise OidcError("the ID token's nonce does not match this login")
        azp = claims.get("azp")
        if azp is not None and azp != self.client_id:
            raise OidcError("the ID token was issued to another client")
        at_hash = claims.get("at_hash")
        if at_hash is not None:
            digest = hashlib.sha256(access_token.encode("ascii")).digest()
            if not secrets.compare_digest(str(at_hash), _b64url(digest[: len(digest) // 2])):
                raise OidcError("the ID token does not belong to the access token (at_hash)")
        return claims

    async def _token_request(self, form: Mapping[str, str]) -> TokenSet:
        meta = await self.metadata()
        body = await asyncio.to_thread(self._post_form, meta.token_endpoint, form)
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise OidcError("the identity provider returned no access token")
        expires_in = body.get("expires_in")
        ttl = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 60.0
        return TokenSet(access_token=access, expires_at=time.time() + ttl,
                        refresh_token=str(body.get("refresh_token") or ""), id_token=str(body.get("id_token") or ""))

    # ----------------------------------------------------------------- HTTP

    def _get_json(self, url: str) -> dict[str, Any]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        return self._send(request, "discovery")

    def _post_form(self, url: str, form: Mapping[str, str]) -> dict[str, Any]:
        data = urllib.parse.urlencode(form).encode("ascii")
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
        return self._send(request, "token")

    def _send(self, request: urllib.request.Request, what: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 (configured URL)
                raw = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            detail = ""
            try:
                error = json.loads(exc.read(MAX_RESPONSE_BYTES))
                detail = f": {error.get('error', '')} {error.get('error_description', '')}".rstrip()
            except (ValueError, AttributeError):
                pass
            raise OidcError(f"the identity provider refused the {what} request (HTTP {exc.code}){detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OidcError(f"the identity provider is unreachable ({what}): {reason}") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise OidcError(f"the identity provider's {what} response is too large")
        try:
            doc = json.loads(raw)
        except ValueError:
            raise OidcError(f"the identity provider's {what} response is not JSON") from None
        if not isinstance(doc, dict):
            raise OidcError(f"the identity provider's {what} response is not a JSON object")
        return doc
