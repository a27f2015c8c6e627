"""The identity provider's JWKS unreachable, hung or flaky, with a warm key cache and at a cold start.

The server fetches the development issuer's JWKS through a :class:`FaultProxy` (``oidc_jwks_url``); the
issuer itself keeps running, so tokens can still be minted. Asserted:

* warm cache: tokens signed by a known key keep verifying while the IdP is down, also past the cache's
  time to live (the stale keys are kept; a background refresh retries);
* cold start: the server starts without the keys; calls are refused with UNAVAILABLE and a readable
  message (not UNAUTHENTICATED: the caller's token is not at fault), nothing is read and nothing is written
  (fail closed; a caller the server could not authenticate writes nothing to the ledger, each refusal is a
  line of the rate-limited security log instead, services/audit/refusals.py); once the IdP answers, the
  next call after the refetch interval succeeds without a restart;
* no leak over 100 outage cycles (refresh threads, sockets, memory).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from testkit.faults import FaultProxy, ResourceCounts, wait_until
from testkit.process import free_port
from testkit.server import Env, ServerThread, make_settings

from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.v1 import consent_pb2

_subjects = itertools.count()
IDP_DOWN = "identity provider's signing keys (JWKS) could not be fetched"


def start_env(data_dir: Path, proxy_port: int, issuer_port: int, **overrides: object) -> Env:
    jwks_url = f"http://127.0.0.1:{proxy_port}/realms/ciphercare/protocol/openid-connect/certs"
    options: dict[str, object] = {"oidc_jwks_timeout_s": 0.5, "oidc_jwks_min_refetch_s": 0.2, **overrides}
    settings = make_settings(data_dir, dev_issuer_port=issuer_port, oidc_jwks_url=jwks_url, **options)
    server = ServerThread(settings).start()
    return Env(server=server, issuer=DevIssuer.from_settings(settings))


def check(env: Env) -> consent_pb2.CheckResponse:
    """A Check with a token never seen before (so the server's verified-token cache cannot answer)."""
    client = env.client(env.token("hospital", org="hospital-a", subject=f"svc-{next(_subjects)}"))
    try:
        return client.check("pt-idp-0001", "hospital-a", "TREAT", "Observation")
    finally:
        client.close()


def refused(env: Env) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        check(env)
    return info.value


@pytest.fixture
def issuer_port() -> int:
    return free_port()


@pytest.fixture
def proxy(issuer_port: int) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", issuer_port) as running:
        yield running


def test_warm_cache_survives_the_idp_going_away(tmp_path: Path, proxy: FaultProxy, issuer_port: int) -> None:
    env = start_env(tmp_path, proxy.port, issuer_port, oidc_jwks_cache_s=0.2)
    try:
        assert check(env).decision == consent_pb2.CONSENT_DECISION_DENY  # keys fetched at start-up
        fetches = env.app.verifier.inner.jwks.fetch_count
        proxy.refuse()
        for _ in range(5):
            time.sleep(0.1)  # past the cache's time to live: stale keys are kept, a refresh is retried
            assert check(env).decision == consent_pb2.CONSENT_DECISION_DENY
        assert env.app.verifier.inner.jwks.fetch_count > fetches, "no refresh was attempted"
        proxy.blackhole()  # hung rather than down: the same, refreshes time out in the background
        assert check(env).decision == consent_pb2.CONSENT_DECISION_DENY
    finally:
        env.server.stop()


def test_cold_start_is_unavailable_then_recovers(tmp_path: Path, proxy: FaultProxy, issuer_port: int) -> None:
    proxy.refuse()
    env = start_env(tmp_path, proxy.port, issuer_port)
    try:
        before = env.app.ledger.size()
        security_lines = env.app.refusals.security.written
        error = refused(env)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
        assert IDP_DOWN in (error.details() or "")
        proxy.blackhole()  # hung: the fetch gives up after oidc_jwks_timeout_s, same answer
        time.sleep(0.25)
        error = refused(env)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
        proxy.pass_through()
        refused_before_recovery = env.app.metrics.auth_refusals.labels("UNAVAILABLE")._value.get()
        assert wait_until(lambda: _succeeds(env), timeout_s=10), "no recovery after the IdP came back"
        refusals = int(env.app.metrics.auth_refusals.labels("UNAVAILABLE")._value.get())
        assert refusals >= refused_before_recovery >= 2
        # Fail closed: the callers could not be authenticated, so nothing reached the ledger (no read, no write,
        # no denied event an anonymous caller could flood a history with); each refusal is a security-log line.
        assert env.app.ledger.size() == before
        assert env.app.refusals.security.written - security_lines == refusals
    finally:
        env.server.stop()


def _succeeds(env: Env) -> bool:
    try:
        check(env)
        return True
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, (exc.code(), exc.details())
        return False


def test_flaky_idp_gives_unavailable_or_an_answer(tmp_path: Path, proxy: FaultProxy, issuer_port: int) -> None:
    proxy.refuse()
    env = start_env(tmp_path, proxy.port, issuer_port)
    try:
        proxy.pass_through()
        proxy.flaky(0.6)
        codes = set()
        for _ in range(30):
            try:
                check(env)
                codes.add(grpc.StatusCode.OK)
                break
            except grpc.RpcError as exc:
                codes.add(exc.code())
                time.sleep(0.2)
        assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
        assert grpc.StatusCode.OK in codes
    finally:
        env.server.stop()


def test_no_leak_over_100_idp_outages(tmp_path: Path, proxy: FaultProxy, issuer_port: int) -> None:
    # Keys go stale at once and may be refetched at once: every call starts a background refresh.
    env = start_env(tmp_path, proxy.port, issuer_port, oidc_jwks_cache_s=0.001, oidc_jwks_min_refetch_s=0.0)
    jwks = env.app.verifier.inner.jwks
    try:
        for _ in range(5):
            check(env)
        jwks.join_refresh(5)
        start = ResourceCounts.now()
        fetches = jwks.fetch_count
        for _ in range(100):
            proxy.refuse(cut_open=False)
            check(env)
            jwks.join_refresh(5)
            proxy.pass_through()
            check(env)
            jwks.join_refresh(5)
        end = ResourceCounts.now()
        print(f"100 cycles: {start} -> {end}")  # shown with -s
        assert jwks.fetch_count >= fetches + 100  # the refreshes did run (and failed half the time)
        assert end.threads <= start.threads + 2, (start, end)
        assert end.fds <= start.fds + 8, (start, end)
        assert end.rss_kib <= start.rss_kib + 32 * 1024, (start, end)
    finally:
        env.server.stop()
