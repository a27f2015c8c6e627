"""A JWKS cache for verifying bearer tokens without network I/O on the hot path.

Keys are fetched from the identity provider's JWKS endpoint (Keycloak:
``<issuer>/protocol/openid-connect/certs``) with :mod:`urllib` and cached by
``kid``. Lookups of a cached ``kid`` never touch the network: once the set is
older than ``ttl_s`` the cached key is still returned and a single background
thread refreshes the set (stale-while-revalidate). An unknown ``kid`` triggers
at most one synchronous refetch (key rotation), rate-limited to one fetch per
``min_refetch_interval_s`` so a flood of made-up ``kid`` values cannot hammer
the IdP; after that the ``kid`` is rejected.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError, PyJWTError

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1024 * 1024
MIN_RSA_BITS = 2048
#: Key types/curves accepted from a JWKS; anything else (oct, OKP, other curves) is skipped.
_SUPPORTED = {("RSA", None), ("EC", "P-256"), ("EC", "P-384")}


class JwksError(Exception):
    """The JWKS could not be fetched or parsed."""


@dataclass(frozen=True)
class CachedKey:
    """One signing key from the JWKS: the PyJWT key plus the JWK fields verification checks.

    ``alg`` is the JWK's own ``alg`` member (``None`` when the JWK does not pin one);
    ``crv`` is set for EC keys only.
    """

    kid: str
    kty: str
    crv: str | None
    alg: str | None
    jwk: PyJWK

    @property
    def key(self) -> Any:
        """The ``cryptography`` public key object."""
        return self.jwk.key


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class JwksCache:
    """Thread-safe cache of an IdP's signing keys, keyed by ``kid``.

    ``get_cached`` never does network I/O; ``get`` may do one rate-limited
    synchronous fetch for an unknown ``kid`` (and the very first fetch).
    """

    def __init__(
        self,
        url: str,
        ttl_s: float,
        http_timeout_s: float = 3.0,
        *,
        min_refetch_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("JWKS url must be an absolute http(s) URL")
        if ttl_s <= 0 or http_timeout_s <= 0 or min_refetch_interval_s < 0:
            raise ValueError("ttl_s and http_timeout_s must be > 0, min_refetch_interval_s >= 0")
        self.url = url
        self.ttl_s = float(ttl_s)
        self.http_timeout_s = float(http_timeout_s)
        self.min_refetch_interval_s = float(min_refetch_interval_s)
        self._clock = clock
        # Loopback IdPs (the dev issuer) must not be sent through an HTTP proxy from the environment.
        handlers: list[urllib.request.BaseHandler] = []
        if _is_loopback(parsed.hostname):
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

        self._keys: Mapping[str, CachedKey] = {}  # replaced wholesale, never mutated: lock-free reads
        self._fetched_at: float | None = None  # clock() of the last successful fetch
        self._last_attempt: float | None = None  # clock() of the last fetch attempt (success or not)
        self._fetch_lock = threading.Lock()  # serialises fetches
        self._state_lock = threading.Lock()  # guards _bg_thread
        self._bg_thread: threading.Thread | None = None
        self.fetch_count = 0  # fetch attempts (for metrics and tests)

    # ------------------------------------------------------------------ lookups

    def get_cached(self, kid: str) -> CachedKey | None:
        """The key for ``kid`` from memory only; never blocks on the network.

        If the set is stale a background refresh is started and the cached key
        is still returned.
        """
        key = self._keys.get(kid)
        if key is not None and self._is_stale():
            self._start_background_refresh()
        return key

    def get(self, kid: str) -> CachedKey | None:
        """The key for ``kid``; an unknown ``kid`` causes at most one rate-limited refetch."""
        key = self.get_cached(kid)
        if key is not None:
            return key
        with self._fetch_lock:
            key = self._keys.get(kid)  # another thread may have fetched it meanwhile
            if key is not None:
                return key
            if not self._refetch_allowed():
                return None
            self._fetch_logged()
            return self._keys.get(kid)

    def refetch_allowed(self) -> bool:
        """True if a lookup of an unknown ``kid`` would fetch the JWKS now."""
        return self._refetch_allowed()

    def kids(self) -> frozenset[str]:
        """The ``kid`` values currently cached."""
        return frozenset(self._keys)

    # ----------------------------------------------------------------- fetching

    def refresh(self) -> None:
        """Fetch the JWKS now (ignores the rate limit); raises :class:`JwksError` on failure.

        Use at start-up to warm the cache; on failure the previous keys are kept.
        """
        with self._fetch_lock:
            self._fetch()

    def join_refresh(self, timeout: float | None = None) -> None:
        """Wait for a running background refresh (tests, orderly shutdown)."""
        with self._state_lock:
            thread = self._bg_thread
        if thread is not None:
            thread.join(timeout)

    def _is_stale(self) -> bool:
        fetched = self._fetched_at
        return fetched is None or self._clock() - fetched >= self.ttl_s

    def _refetch_allowed(self) -> bool:
        last = self._last_attempt
        return last is None or self._clock() - last >= self.min_refetch_interval_s

    def _start_background_refresh(self) -> None:
        with self._state_lock:
            if self._bg_thread is not None and self._bg_thread.is_alive():
                return
            if not self._refetch_allowed():
                return
            thread = threading.Thread(target=self._background_refresh, name="jwks-refresh", daemon=True)
            self._bg_thread = thread
        thread.start()

    def _background_refresh(self) -> None:
        with self._fetch_lock:
            if not self._is_stale() or not self._refetch_allowed():
                return
            self._fetch_logged()

    def _fetch_logged(self) -> None:
        try:
            self._fetch()
        except JwksError as exc:
            log.warning(
                "JWKS fetch from %s failed (keeping %d cached keys): %s", self.url, len(self._keys), exc
            )

    def _fetch(self) -> None:
        """Download and parse the JWKS, then swap the key map. Caller holds ``_fetch_lock``."""
        self._last_attempt = self._clock()
        self.fetch_count += 1
        request = urllib.request.Request(
            self.url, headers={"Accept": "application/json", "User-Agent": "ciphercare-auth"}
        )
        try:
            with self._opener.open(request, timeout=self.http_timeout_s) as response:
                status = response.status
                body = response.read(MAX_JWKS_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise JwksError(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise JwksError(f"request failed: {exc}") from None
        if status != 200:
            raise JwksError(f"HTTP {status}")
        if len(body) > MAX_JWKS_BYTES:
            raise JwksError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
        keys = parse_jwks(body)
        if not keys:
            raise JwksError("JWKS contains no usable signing keys")
        self._keys = keys
        self._fetched_at = self._clock()
        log.debug("JWKS from %s: %d signing keys", self.url, len(keys))


def parse_jwks(body: bytes | str | Mapping[str, Any]) -> dict[str, CachedKey]:
    """Parse a JWKS document into ``{kid: CachedKey}``, keeping only usable signature keys.

    Skipped (not errors): keys without ``kid``, ``use`` other than ``sig``
    (Keycloak also publishes an ``RSA-OAEP`` encryption key), unsupported key
    types or curves, RSA keys under 2048 bits, and keys PyJWT cannot load.
    """
    if isinstance(body, Mapping):
        doc: Any = body
    else:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise JwksError(f"JWKS is not valid JSON: {exc}") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise JwksError("JWKS has no 'keys' array")
    keys: dict[str, CachedKey] = {}
    for entry in doc["keys"]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if entry.get("use", "sig") != "sig":
            continue
        kty = entry.get("kty")
        crv = entry.get("crv") if kty == "EC" else None
        if (kty, crv) not in _SUPPORTED:
            continue
        try:
            jwk = PyJWK(entry)
        except (PyJWKError, PyJWTError, ValueError, TypeError) as exc:
            log.info("skipping JWKS key %r: %s", kid, exc)
            continue
        if kty == "RSA" and getattr(jwk.key, "key_size", 0) < MIN_RSA_BITS:
            log.info("skipping JWKS key %r: RSA key shorter than %d bits", kid, MIN_RSA_BITS)
            continue
        if kid in keys:
            log.info("duplicate kid %r in JWKS; keeping the first", kid)
            continue
        alg = entry.get("alg")
        keys[kid] = CachedKey(kid=kid, kty=str(kty), crv=crv, alg=alg if isinstance(alg, str) else None, jwk=jwk)
    return keys
