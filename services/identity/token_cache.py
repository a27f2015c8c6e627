"""A bounded cache of verified bearer tokens, in front of the signature check.

Service accounts send the same access token with every request until it
expires; re-verifying its RSA signature each time is the largest single cost of
a cheap RPC. A verified token is remembered until the earlier of its own
``exp`` and ``max_age_s`` after verification, so a key withdrawn from the
identity provider's JWKS stops being honoured within ``max_age_s``. Only
successes are cached: every rejection goes through the full check again.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from ciphercare.ledger.api import Principal


class Verifier(Protocol):
    def verify(self, token: str) -> Principal: ...

    async def averify(self, token: str) -> Principal: ...


def _expiry(token: str) -> float:
    """The token's ``exp`` claim (the signature has been verified before this is called)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["exp"])


class CachingVerifier:
    """Wraps a token verifier with a bounded cache of recent successes."""

    def __init__(self, inner: Verifier, *, max_entries: int = 10_000, max_age_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1 or max_age_s <= 0:
            raise ValueError("max_entries must be >= 1 and max_age_s > 0")
        self.inner = inner
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _lookup(self, token: str) -> Principal | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                self.misses += 1
                return None
            valid_until, principal = entry
            if now >= valid_until:
                del self._entries[token]
                self.misses += 1
                return None
            self.hits += 1
            return principal

    def _remember(self, token: str, principal: Principal) -> None:
        now = self._clock()
        valid_until = min(_expiry(token), now + self.max_age_s)
        with self._lock:
            self._entries[token] = (valid_until, principal)
            self._entries.move_to_end(token)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def verify(self, token: str) -> Principal:
        cached = self._lookup(token)
        if cached is not None:
            return cached
        principal = self.inner.verify(token)
        self._remember(token, principal)
        return principal

    async def averify(self, token: str) -> Principal:
        cached = self._lookup(token)
        if cached is not None:
            return cached
        principal = await self.inner.averify(token)
        self._remember(token, principal)
        return principal
