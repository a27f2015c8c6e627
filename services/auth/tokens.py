"""Bearer-token (OIDC access token) verification -> :class:`Principal`.

The verifier is strict about the things that matter for JWT security:

* the header ``alg`` is read *before* a key is chosen and must be one of the
  configured asymmetric algorithms (``none`` and every ``HS*`` are refused, so
  the "HS256 with the RSA public key as secret" confusion attack cannot work);
* the key comes only from the IdP's JWKS by ``kid`` (``jku``/``x5u``/``jwk``
  headers are ignored) and its ``kty``/curve (and ``alg``, when the JWK states
  one) must match the header ``alg``;
* signature first, then ``exp`` (required), ``nbf``/``iat``, ``iss``, ``aud``
  (string or list) with ``leeway_s`` clock skew; ``sub`` is required.

Claims follow Keycloak's access-token shape: roles from ``realm_access.roles``
(only ciphercare's known roles are kept), the organisation and patient id from
configurable claims, the client from ``azp``. A ``typ`` claim, when present,
must be ``Bearer`` so Keycloak ID and refresh tokens are not accepted as access
tokens. Error messages never echo token contents.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import jwt
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
    PyJWTError,
)

from ciphercare.ledger.api import Principal
from ciphercare.services.auth.jwks import CachedKey, JwksCache
from ciphercare.services.auth.rules import KNOWN_ROLES

if TYPE_CHECKING:
    from ciphercare.services.settings import Settings

UNAUTHENTICATED = "UNAUTHENTICATED"
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
        self._jwt = jwt.PyJWT(
            options={
                "require": ["exp", "sub", "iss", "aud"],
                "verify_signature": True,
                "enforce_minimum_key_length": True,
            }
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, jwks: JwksCache | None = None) -> TokenVerifier:
        """Build a verifier (and its JWKS cache) from the typed settings."""
        if jwks is None:
            jwks = JwksCache(settings.resolved_jwks_url, settings.oidc_jwks_cache_s)
        return cls(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks=jwks,
            algorithms=settings.oidc_algorithms,
            leeway_s=settings.oidc_leeway_s,
            org_claim=settings.oidc_org_claim,
            pid_claim=settings.oidc_pid_claim,
        )

    # ------------------------------------------------------------------ public

    def verify(self, token: str) -> Principal:
        """Verify ``token`` and return its :class:`Principal`; raises :class:`AuthError`.

        May block on one rate-limited JWKS fetch if the ``kid`` is unknown; use
        :meth:`averify` on an event loop.
        """
        alg, kid = self._check_header(token)
        key = self.jwks.get(kid)
        return self._verify_with(token, alg, key)

    async def averify(self, token: str) -> Principal:
        """Like :meth:`verify` but never blocks the event loop.

        A cached ``kid`` is verified inline (pure CPU, no I/O); only an unknown
        ``kid`` that is allowed to trigger a JWKS refetch goes to a worker thread.
        """
        alg, kid = self._check_header(token)
        key = self.jwks.get_cached(kid)
        if key is None and self.jwks.refetch_allowed():
            key = await asyncio.to_thread(self.jwks.get, kid)
        return self._verify_with(token, alg, key)

    # --------------------------------------------------------------- internals

    def _check_header(self, token: str) -> tuple[str, str]:
        """Validate the unverified header; returns ``(alg, kid)``."""
        if not isinstance(token, str) or not token:
            raise _fail("malformed token: empty")
        if len(token) > MAX_TOKEN_BYTES:
            raise _fail(f"malformed token: longer than {MAX_TOKEN_BYTES} bytes")
        dots = token.count(".")
        if dots == 4:
            raise _fail("malformed token: encrypted tokens (JWE) are not accepted")
        if dots != 2:
            raise _fail("malformed token: a JWS must have three dot-separated parts")
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError as exc:
            raise _fail(f"malformed token: {exc}") from None
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
        return alg, kid

    def _verify_with(self, token: str, alg: str, cached: CachedKey | None) -> Principal:
        if cached is None:
            raise _fail("unknown signing key (kid not in the issuer's JWKS)")
        want_kty, want_crv = _ALG_KEY_TYPE[alg]
        if cached.kty != want_kty or (want_crv is not None and cached.crv != want_crv):
            kind = f"{cached.kty} {cached.crv}" if cached.crv else cached.kty
            raise _fail(f"key type mismatch: alg {alg} cannot be verified with a {kind} key")
        if cached.alg is not None and cached.alg != alg:
            raise _fail(f"key type mismatch: the signing key is for {_alg_label(cached.alg)}, token says {alg}")
        try:
            claims = self._jwt.decode(
                token,
                key=cached.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
            )
        except InvalidSignatureError:
            raise _fail("bad signature") from None
        except ExpiredSignatureError:
            raise _fail("token expired") from None
        except ImmatureSignatureError as exc:
            which = "iat" if "(iat)" in str(exc) else "nbf"
            raise _fail(f"token not yet valid ({which} is in the future)") from None
        except InvalidIssuerError:
            raise _fail(f"wrong issuer: expected {self.issuer!r}") from None
        except InvalidAudienceError:
            raise _fail(f"wrong audience: token is not for {self.audience!r}") from None
        except MissingRequiredClaimError as exc:
            raise _fail(f"missing required claim {exc.claim!r}") from None
        except InvalidIssuedAtError:
            raise _fail("malformed token: iat is not a number") from None
        except (InvalidAlgorithmError, InvalidKeyError):
            raise _fail(f"unsupported alg {alg} for this key") from None
        except DecodeError as exc:
            raise _fail(f"malformed token: {exc}") from None
        except InvalidTokenError as exc:
            raise _fail(f"invalid token: {exc}") from None
        return self._principal(claims)

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise _fail("malformed token: exp is not a number")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise _fail("missing required claim 'sub'")
        typ = claims.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() != "bearer"):
            raise _fail("not an access token (typ claim is not 'Bearer')")
        return Principal(
            subject=sub,
            org=_single_string(claims.get(self.org_claim), self.org_claim) or "",
            roles=_realm_roles(claims.get("realm_access")),
            client_id=_str_or_empty(claims.get("azp")) or _str_or_empty(claims.get("client_id")),
            pid=_single_string(claims.get(self.pid_claim), self.pid_claim),
        )


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
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        raise _fail(f"malformed token: claim {claim!r} must be a string")
    return value or None


def _str_or_empty(value: object) -> str:
    return value if isinstance(value, str) else ""
