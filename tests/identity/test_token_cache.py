"""The verified-token cache in front of the real TokenVerifier and a real development issuer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ciphercare.ledger.api import Principal
from ciphercare.services.identity.devissuer import DevIssuer, DevIssuerServer
from ciphercare.services.identity.jwks import JwksCache
from ciphercare.services.identity.token_cache import CachingVerifier
from ciphercare.services.identity.tokens import AuthError, TokenVerifier

AUDIENCE = "ciphercare-api"


class CountingTokenVerifier(TokenVerifier):
    """The real verifier, counting how often a signature check actually runs."""

    calls = 0

    def verify(self, token: str) -> Principal:
        self.calls += 1
        return super().verify(token)

    async def averify(self, token: str) -> Principal:
        self.calls += 1
        return await super().averify(token)


@pytest.fixture(scope="module")
def issuer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIssuerServer]:
    key = tmp_path_factory.mktemp("issuer") / "key.pem"
    server = DevIssuerServer(DevIssuer(key, "http://127.0.0.1:0/realms/ciphercare", AUDIENCE), "127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


def make(server: DevIssuerServer, now: list[float], **kwargs: float) -> tuple[CountingTokenVerifier, CachingVerifier]:
    inner = CountingTokenVerifier(server.issuer_url, AUDIENCE, JwksCache(server.jwks_url, 300.0))
    return inner, CachingVerifier(inner, clock=lambda: now[0], **kwargs)  # type: ignore[arg-type]


def test_hit_skips_the_signature_check_until_max_age(issuer_server: DevIssuerServer) -> None:
    import time

    now = [time.time()]
    inner, cache = make(issuer_server, now, max_age_s=60)
    token = issuer_server.issuer.issue(subject="svc", roles=["hospital"], org="hospital-a", ttl_s=3600)
    assert cache.verify(token).subject == "svc"
    assert asyncio.run(cache.averify(token)).org == "hospital-a"
    assert inner.calls == 1 and cache.hits == 1
    now[0] += 61
    cache.verify(token)
    assert inner.calls == 2


def test_token_expiry_bounds_the_cache(issuer_server: DevIssuerServer) -> None:
    import time

    now = [time.time()]
    inner, cache = make(issuer_server, now, max_age_s=3600)
    token = issuer_server.issuer.issue(subject="svc", roles=["hospital"], org="hospital-a", ttl_s=120)
    cache.verify(token)
    now[0] += 121
    cache.verify(token)  # past exp: the cache does not answer; the real check (with leeway) runs again
    assert inner.calls == 2


def test_failures_are_never_cached_and_size_is_bounded(issuer_server: DevIssuerServer, tmp_path: Path) -> None:
    import time

    now = [time.time()]
    inner, cache = make(issuer_server, now, max_entries=2)
    token = issuer_server.issuer.issue(subject="svc", roles=["hospital"], org="hospital-a")
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(AuthError):
            cache.verify(tampered)
    assert inner.calls == 2
    tokens = [issuer_server.issuer.issue(subject=s, roles=["hospital"], org="hospital-a") for s in "xyz"]
    for t in tokens:
        cache.verify(t)
    cache.verify(tokens[0])  # evicted by the bound, so checked again
    assert inner.calls == 2 + 3 + 1
