"""Bearer-token (OIDC access token) verification -> :class:`Principal`.

The verifier is strict about the things that matter for JWT security:

* the header ``alg`` is read *before* a key is chosen and must be one of the
  configured asymmetric algorithms (``none`` and every ``HS*`` are refused, so
  the "HS256 with the RSA public key as secret" confusion attack cannot work);
* the key comes only from the IdP's JWKS by ``kid`` (``jku``/``x5u``/``jwk``
  headers are ignored) and its ``kty``/curve (and ``alg``, when the JWK states
  one) must match the header ``alg``;
* the compact JWS is parsed strictly (canonical unpadded base64url, JSON
  objects without duplicate members); the signature is checked with PyJWT's
  algorithm implementations, then ``exp``, ``sub``, ``iss`` and ``aud`` are
  required and ``exp``/``nbf``/``iat`` (with ``leeway_s`` clock skew), ``iss``
  and ``aud`` (a string or a list) are checked.

Claims follow Keycloak's access-token shape: roles from ``realm_access.roles``
(only ciphercare's known roles are kept), the organisation and patient id from
configurable claims, the client from ``azp``. A ``typ`` claim, when present,
must be ``Bearer`` so Keycloak ID and refresh tokens are not accepted as access
tokens. Error messages never echo token contents.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.exceptions import PyJWTError

from ciphercare.ledger.api import Principal
from ciphercare.services.identity.jwks import CachedKey, JwksCache
from ciphercare.services.identity.rules import KNOWN_ROLES

if TYPE_CHECKING:
    from ciphercare.services.platform.settings import Settings

UNAUTHENTICATED = "UNAUTHENTICATED"
# The identity provider's keys could not be fetched at all: not the caller's fault (issue 14, faults).
UNAVAILABLE = "UNAVAILABLE"
MAX_TOKEN_BYTES = 16 * 1024

#: Asymmetric algorithms this verifier can accept, with the JWK (kty, crv) each needs.
_ALG_KEY_TYPE: Mapping[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
}
_SAFE_ALG = re.compile(r"^[A-Za-z0-9+_-]{1,16}$")
# Compact JWS: three unpadded base64url segments (RFC 7515 section 7.1).
# (The signature may be empty here so that 'alg: none' gets its precise message.)
_COMPACT_JWS = re.compile(r"^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)$")


class AuthError(Exception):
    """Authentication failed; ``code`` is the gRPC status name, ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"AuthError({self.code!r}, {self.message!r})"


def _fail(message: str) -> AuthError:
    return AuthError(UNAUTHENTICATED, message)


def _alg_label(alg: object) -> str:
    return repr(alg) if isinstance(alg, str) and _SAFE_ALG.match(alg) else "<invalid>"


def _b64url_decode(segment: str, what: str) -> bytes:
    """Strict, canonical base64url (no padding, no stray bits) so encodings are not malleable."""
    if len(segment) % 4 == 1:
        raise _fail(f"malformed token: {what} is not valid base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise _fail(f"malformed token: {what} is not valid base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode("ascii"):
        raise _fail(f"malformed token: {what} is not canonical base64url")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member name")
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN / Infinity: Python accepts them, RFC 8259 does not


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(
            _b64url_decode(segment, what), object_pairs_hook=_no_duplicates, parse_constant=_no_constants
        )
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _fail(f"malformed token: {what} is not a valid JSON object") from None
    if not isinstance(obj, dict):
        raise _fail(f"malformed token: {what} is not a JSON object")
    return obj


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(f"malformed token: {name} is not a number")
    return float(value)


class TokenVerifier:
    """Verifies OIDC access tokens against one issuer/audience using a :class:`JwksCache`."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks: JwksCache,
        algorithms: Iterable[str] = ("RS256", "ES256"),
        leeway_s: float = 30.0,
        org_claim: str = "org",
        pid_claim: str = "pid",
        *,
        clock: Callable[[], float] = time.time,
        max_lifetime_s: float = 24 * 3600,
    ) -> None:
        algs = tuple(algorithms)
        unsupported = [a for a in algs if a not in _ALG_KEY_TYPE]
        if not algs or unsupported:
            raise ValueError(
                f"algorithms must be a non-empty subset of {sorted(_ALG_KEY_TYPE)}; got {list(algs)}"
            )
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        if leeway_s < 0:
            raise ValueError("leeway_s must be >= 0")
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self.algorithms: frozenset[str] = frozenset(algs)
        self.leeway_s = float(leeway_s)
        self.org_claim = org_claim
        self.pid_claim = pid_claim
        self.max_lifetime_s = float(max_lifetime_s)
        self._clock = clock
        defaults = get_default_algorithms()
        self._alg_impl: dict[str, Algorithm] = {a: defaults[a] for a in algs}

    @classmethod
    def from_settings(cls, settings: Settings, *, jwks: JwksCache | None = None) -> TokenVerifier:
        """Build a verifier (and its JWKS cache) from the typed settings."""
        if jwks is None:
            jwks = JwksCache(settings.resolved_jwks_url, settings.oidc_jwks_cache_s, settings.oidc_jwks_timeout_s,
                             min_refetch_interval_s=settings.oidc_jwks_min_refetch_s)
        return cls(
            issuer=settings.resolved_oidc_issuer,
            audience=settings.oidc_audience,
            jwks=jwks,
            algorithms=settings.oidc_algorithms,
            leeway_s=settings.oidc_leeway_s,
            org_claim=settings.oidc_org_claim,
            pid_claim=settings.oidc_pid_claim,
            max_lifetime_s=settings.oidc_max_token_lifetime_s,
        )

    # ------------------------------------------------------------------ public

    def verify(self, token: str) -> Principal:
        """Verify ``token`` and return its :class:`Principal`; raises :class:`AuthError`.

        May block on one rate-limited JWKS fetch if the ``kid`` is unknown; use
        :meth:`averify` on an event loop.
        """
        parts, alg, kid = self._check_header(token)
        return self._verify_with(parts, alg, self.jwks.get(kid))

    async def averify(self, token: str) -> Principal:
        """Like :meth:`verify` but never blocks the event loop.

        A cached ``kid`` is verified inline (pure CPU, no I/O); only an unknown
        ``kid`` that is allowed to trigger a JWKS refetch goes to a worker thread.
        """
        parts, alg, kid = self._check_header(token)
        key = self.jwks.get_cached(kid)
        if key is None and self.jwks.refetch_allowed():
            key = await asyncio.to_thread(self.jwks.get, kid)
        return self._verify_with(parts, alg, key)

    # --------------------------------------------------------------- internals

    def _check_header(self, token: str) -> tuple[tuple[str, str, str], str, str]:
        """Split the token and validate its (unverified) header; returns ``(parts, alg, kid)``."""
        if not isinstance(token, str) or not token:
            raise _fail("malformed token: empty")
        if len(token) > MAX_TOKEN_BYTES:
            raise _fail(f"malformed token: longer than {MAX_TOKEN_BYTES} bytes")
        match = _COMPACT_JWS.match(token)
        if match is None:
            if token.count(".") == 4:
                raise _fail("malformed token: encrypted tokens (JWE) are not accepted")
            raise _fail("malformed token: expected three base64url parts separated by dots")
        parts: tuple[str, str, str] = (match.group(1), match.group(2), match.group(3))
        header = _json_object(parts[0], "header")
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise _fail("malformed token: header has no alg")
        if alg.lower() == "none":
            raise _fail("unsupported alg 'none': unsigned tokens are not accepted")
        if alg.upper().startswith("HS"):
            raise _fail(f"unsupported alg {_alg_label(alg)}: symmetric (HMAC) algorithms are not accepted")
        if alg not in self.algorithms:
            raise _fail(f"unsupported alg {_alg_label(alg)}; accepted: {sorted(self.algorithms)}")
        if "crit" in header or "b64" in header:
            raise _fail("malformed token: critical header extensions are not supported")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _fail("malformed token: header has no kid")
        if not parts[2]:
            raise _fail("malformed token: empty signature")
        return parts, alg, kid

    def _verify_with(self, parts: tuple[str, str, str], alg: str, cached: CachedKey | None) -> Principal:
        if cached is None:
            if not self.jwks.kids():
                raise AuthError(UNAVAILABLE, "cannot verify tokens now: the identity provider's signing keys "
                                             "(JWKS) could not be fetched; retry later")
            raise _fail("unknown signing key (kid not in the issuer's JWKS)")
        want_kty, want_crv = _ALG_KEY_TYPE[alg]
        if cached.kty != want_kty or (want_crv is not None and cached.crv != want_crv):
            kind = f"{cached.kty} {cached.crv}" if cached.crv else cached.kty
            raise _fail(f"key type mismatch: alg {alg} cannot be verified with a {kind} key")
        if cached.alg is not None and cached.alg != alg:
            raise _fail(
                f"key type mismatch: the signing key is for {_alg_label(cached.alg)}, token says {alg}"
            )
        signature = _b64url_decode(parts[2], "signature")
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
        impl = self._alg_impl[alg]
        try:
            valid = impl.verify(signing_input, impl.prepare_key(cached.key), signature)
        except (ValueError, TypeError, PyJWTError):
            valid = False
        if not valid:
            raise _fail("bad signature")
        claims = _json_object(parts[1], "payload")
        self._check_claims(claims)
        return self._principal(claims)

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        """Registered-claim checks, after the signature has been verified."""
        for name in ("exp", "sub", "iss", "aud"):
            if claims.get(name) is None:
                if name == "aud":  # Keycloak omits aud when no audience mapper applies to the client
                    raise _fail(f"wrong audience: token has no aud claim (the IdP must add {self.audience!r})")
                raise _fail(f"missing required claim {name!r}")
        now = self._clock()
        leeway = self.leeway_s
        if _number(claims, "exp") <= now - leeway:
            raise _fail("token expired")
        if "nbf" in claims and _number(claims, "nbf") > now + leeway:
            raise _fail("token not yet valid (nbf is in the future)")
        if "iat" in claims and _number(claims, "iat") > now + leeway:
            raise _fail("token not yet valid (iat is in the future)")
        issued = _number(claims, "iat") if "iat" in claims else now
        if _number(claims, "exp") - issued > self.max_lifetime_s + leeway:
            raise _fail(
                f"token lifetime exceeds the maximum of {int(self.max_lifetime_s)} s "
                "(setting oidc_max_token_lifetime_s)"
            )
        if claims["iss"] != self.issuer:
            raise _fail(f"wrong issuer: expected {self.issuer!r}")
        aud = claims["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise _fail("malformed token: aud must be a string or a list of strings")
        if self.audience not in audiences:
            raise _fail(f"wrong audience: token is not for {self.audience!r}")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise _fail("malformed token: sub must be a non-empty string")
        typ = claims.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() != "bearer"):
            raise _fail("not an access token (typ claim is not 'Bearer')")

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        return Principal(
            subject=claims["sub"],
            org=_single_string(claims.get(self.org_claim), self.org_claim) or "",
            roles=_realm_roles(claims.get("realm_access")),
            client_id=_str_or_empty(claims.get("azp")) or _str_or_empty(claims.get("client_id")),
            pid=_single_string(claims.get(self.pid_claim), self.pid_claim),
            proxy_for=_proxy_for(claims.get("proxy_for")),
        )


def _proxy_for(value: object) -> frozenset[str]:
    """The ``proxy_for`` claim: pseudonyms the IdP says this person represents (list or comma string)."""
    if value is None:
        return frozenset()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items) or len(items) > 32:
        raise AuthError("UNAUTHENTICATED", "malformed token: proxy_for must be a list of at most 32 pseudonyms")
    return frozenset(i.strip() for i in items if i.strip())


def _realm_roles(realm_access: object) -> frozenset[str]:
    """Known roles from Keycloak's ``realm_access.roles``; anything else is ignored."""
    if not isinstance(realm_access, Mapping):
        return frozenset()
    roles = realm_access.get("roles")
    if not isinstance(roles, list):
        return frozenset()
    return frozenset(r for r in roles if isinstance(r, str) and r in KNOWN_ROLES)


def _single_string(value: object, claim: str) -> str | None:
    """A string claim; a one-element list (Keycloak multivalued mapper) is accepted too."""
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) != 1:
            # Never pick one of several organisations or pseudonyms: the token names no single actor.
            raise _fail(f"malformed token: claim {claim!r} must have exactly one value")
        value = value[0]
    if not isinstance(value, str):
        raise _fail(f"malformed token: claim {claim!r} must be a string")
    return value or None


def _str_or_empty(value: object) -> str:
    return value if isinstance(value, str) else ""
