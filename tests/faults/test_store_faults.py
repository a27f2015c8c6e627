"""The off-chain store's PostgreSQL stopped, slowed and made flaky under a running server (issue 14, item 3).

A private PostgreSQL cluster (Debian's binaries, ``pg_ctl``) sits behind a :class:`FaultProxy` on loopback;
the server reaches it only through the proxy. Asserted for every fault:

* fail closed: a Grant or a Record with a detail document whose off-chain write fails writes nothing to the
  ledger and returns UNAVAILABLE with a readable message (never INTERNAL or UNKNOWN);
* Check keeps answering: a consent decision is a ledger read and needs no off-chain document, also while
  another call waits on a slow database (store calls run on the store's threads, never on the event loop);
* recovery without a restart: the next call after the database returns succeeds, and the access-event
  index catches up with what the ledger committed meanwhile;
* no leak over 100 stop/heal cycles: threads, open fds, pool connections checked out, resident memory.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from testkit.faults import FaultProxy, PrivateCluster, ResourceCounts, wait_until
from testkit.server import Env, ServerThread, make_settings

from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.v1 import access_log_pb2, common_pb2, consent_pb2

PERMIT = consent_pb2.CONSENT_DECISION_PERMIT
_ids = itertools.count()
STORE_DOWN = "the off-chain store is unavailable"


def new_pid() -> str:
    return f"pf-{next(_ids):05d}-{datetime.now(UTC).strftime('%H%M%S%f')}"


def grant_request(pid: str) -> consent_pb2.GrantRequest:
    start = Timestamp()
    start.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    return consent_pb2.GrantRequest(pid=pid, grantee_organization="hospital-a", decision=PERMIT,
                                    purposes=["TREAT"], data_classes=["Observation"],
                                    period=common_pb2.Period(start=start))


def record_request(pid: str, detail: str = "") -> access_log_pb2.RecordRequest:
    return access_log_pb2.RecordRequest(type="110110", subtype="read", action="R", purpose_of_use="TREAT", pid=pid,
                                        outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS, data_classes=["Observation"],
                                        source_observer="hospital-a/ehr", detail_json=detail)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with PrivateCluster.running() as running:
        running.create_database("ciphercare")
        yield running


@pytest.fixture(scope="module")
def proxy(cluster: PrivateCluster) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", cluster.port) as running:
        yield running


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, cluster: PrivateCluster, proxy: FaultProxy) -> Iterator[Env]:
    # Short store timeouts so a dead database is noticed in about a second, not the production default.
    settings = make_settings(tmp_path_factory.mktemp("ciphercare"), database_url=cluster.url("ciphercare", proxy.port),
                             database_connect_timeout_s=1.0, database_pool_timeout_s=1.0, database_pool_size=2)
    server = ServerThread(settings).start()
    try:
        yield Env(server=server, issuer=DevIssuer.from_settings(settings))
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def healed(proxy: FaultProxy, cluster: PrivateCluster) -> Iterator[None]:
    proxy.pass_through()
    if not cluster.is_running:
        cluster.start()
    yield
    proxy.pass_through()
    if not cluster.is_running:
        cluster.start()


def ledger_size(env: Env) -> int:
    return env.app.ledger.size()


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def assert_store_unavailable(error: grpc.RpcError) -> None:
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
    assert STORE_DOWN in (error.details() or "")


def projection_level(env: Env) -> bool:
    size = ledger_size(env)
    return all(p.cursor() >= size for p in env.app.projections.projections)


def test_store_down_fails_closed_and_recovers(env: Env, proxy: FaultProxy, caplog: pytest.LogCaptureFixture) -> None:
    patient_pid = new_pid()
    patient = env.patient(patient_pid)
    hospital = env.hospital()
    patient.grant(grant_request(patient_pid))  # warm: the pool holds connections through the proxy

    proxy.refuse()  # PostgreSQL unreachable: open connections reset, new ones refused
    before = ledger_size(env)
    with caplog.at_level(logging.WARNING, logger="ciphercare.errors"):
        assert_store_unavailable(refused(lambda: patient.grant(grant_request(patient_pid))))
    # The operator's log names the failed dependency and the driver's error, never the request's pid.
    warnings = [vars(r) for r in caplog.records
                if r.name == "ciphercare.errors" and r.getMessage() == "dependency unavailable"]
    assert warnings, "a store outage left no warning in the server log"
    assert warnings[-1]["error"] in {"OperationalError", "InterfaceError", "TimeoutError", "DBAPIError"}
    assert warnings[-1]["detail"] and patient_pid not in warnings[-1]["detail"]
    assert_store_unavailable(refused(lambda: hospital.record(record_request(patient_pid, '{"note": "x"}'))))
    assert ledger_size(env) == before, "a refused write reached the ledger"

    # Reads that need the store say so; the ones that read the ledger only keep answering.
    granted = patient.list_for_patient(patient_pid)
    assert granted and all(c.status == consent_pb2.CONSENT_STATUS_ACTIVE for c in granted)
    assert_store_unavailable(refused(lambda: patient.call(
        patient.consent.Get, consent_pb2.GetConsentRequest(consent_id=granted[0].id))))
    assert_store_unavailable(refused(lambda: list(hospital.search_all(access_log_pb2.SearchRequest(pid=patient_pid)))))
    # The consent decision is on the ledger: Check answers during a store outage.
    decision = hospital.check(patient_pid, "hospital-a", "TREAT", "Observation")
    assert decision.decision == PERMIT

    # An access event without a detail document needs no off-chain write: it is committed (the ledger is the
    # source of truth); its search index row follows when the store returns.
    recorded = hospital.record(record_request(patient_pid))
    assert ledger_size(env) == before + 1

    proxy.pass_through()  # PostgreSQL is back: no restart
    patient.grant(grant_request(patient_pid))
    assert wait_until(lambda: projection_level(env)), "the projections did not catch up after the outage"
    seen = {e.id for e in hospital.search_all(access_log_pb2.SearchRequest(pid=patient_pid))}
    assert recorded.event.id in seen


def test_postgres_restart_is_survived(env: Env, cluster: PrivateCluster) -> None:
    pid = new_pid()
    patient = env.patient(pid)
    patient.grant(grant_request(pid))
    cluster.stop("immediate")  # the real server goes away (a crash, as clients see it)
    before = ledger_size(env)
    assert_store_unavailable(refused(lambda: patient.grant(grant_request(pid))))
    assert ledger_size(env) == before
    cluster.start()
    response = patient.grant(grant_request(pid))  # stale pooled connections are replaced, not reported
    assert response.receipt.tx_id


def test_slow_store_still_answers_correctly(env: Env, proxy: FaultProxy) -> None:
    pid = new_pid()
    patient = env.patient(pid)
    proxy.slow(0.02)  # every packet to and from PostgreSQL waits 20 ms
    proxy.cut()  # and new connections go through the slow path
    before = ledger_size(env)
    response = patient.grant(grant_request(pid))
    assert ledger_size(env) == before + 1
    got = patient.call(patient.consent.Get, consent_pb2.GetConsentRequest(consent_id=response.consent.id))
    assert pid in got.fhir_consent_json


def test_check_answers_while_a_store_call_waits_on_a_slow_database(env: Env, proxy: FaultProxy) -> None:
    # Check needs no store; a Grant stores its FHIR document before it writes the ledger. With the database's
    # packets held in the proxy, the Grant waits on PostgreSQL: a Check made meanwhile must answer, i.e. the
    # Grant's store call is not holding the server's event loop.
    pid = new_pid()
    patient = env.patient(pid)
    hospital = env.hospital()
    patient.grant(grant_request(pid))  # the PERMIT Check will find; the pool holds connections
    assert wait_until(lambda: projection_level(env)), "the projections did not catch up"  # no store traffic left
    before = ledger_size(env)
    proxy.hold()  # latency until released: every packet to and from PostgreSQL waits
    with ThreadPoolExecutor(max_workers=2) as calls:
        try:
            slow_grant = calls.submit(patient.grant, grant_request(pid))
            assert wait_until(lambda: proxy.held > 0), "the Grant never reached the database"
            check = calls.submit(hospital.check, pid, "hospital-a", "TREAT", "Observation")
            # Liveness bound only (a blocked loop would never answer): the ordering below is the assertion.
            assert check.result(timeout=60).decision == PERMIT
            assert not slow_grant.done(), "the Grant finished first: nothing was shown"
            assert ledger_size(env) == before, "the Grant wrote the ledger before its off-chain document"
        finally:
            proxy.release()
        granted = slow_grant.result(timeout=60)  # and the slowed call completes once the database answers
    assert granted.receipt.tx_id and ledger_size(env) == before + 1
    got = patient.call(patient.consent.Get, consent_pb2.GetConsentRequest(consent_id=granted.consent.id))
    assert pid in got.fhir_consent_json


def test_hung_store_times_out_as_unavailable(env: Env, proxy: FaultProxy) -> None:
    pid = new_pid()
    patient = env.patient(pid)
    proxy.blackhole()  # connections are accepted and never answered: only the connect timeout ends them
    proxy.cut()
    before = ledger_size(env)
    assert_store_unavailable(refused(lambda: patient.grant(grant_request(pid))))
    assert ledger_size(env) == before
    proxy.pass_through()
    assert patient.grant(grant_request(pid)).receipt.tx_id


def test_flaky_store_never_leaks_an_internal_error(env: Env, proxy: FaultProxy) -> None:
    pid = new_pid()
    patient = env.patient(pid)
    proxy.flaky(0.5)  # half the new connections are reset at once
    outcomes: list[grpc.StatusCode] = []
    consent_ids: list[str] = []
    before = ledger_size(env)
    for _ in range(12):
        proxy.cut()  # every call needs a new connection
        try:
            consent_ids.append(patient.grant(grant_request(pid)).consent.id)
            outcomes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            assert_store_unavailable(exc)
            outcomes.append(exc.code())
    assert set(outcomes) == {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, outcomes
    # Exactly the successful calls reached the ledger, and each one's document is in the store.
    assert ledger_size(env) == before + len(consent_ids)
    proxy.pass_through()
    for consent_id in consent_ids:
        got = patient.call(patient.consent.Get, consent_pb2.GetConsentRequest(consent_id=consent_id))
        assert pid in got.fhir_consent_json


def test_no_leak_over_100_outages(env: Env, proxy: FaultProxy) -> None:
    pid = new_pid()
    patient = env.patient(pid)
    engine = env.app.store.engine
    patient.grant(grant_request(pid))
    for _ in range(5):  # warm-up: pools, caches and gRPC threads reach their steady state
        proxy.refuse()
        refused(lambda: patient.grant(grant_request(pid)))
        proxy.pass_through()
        patient.grant(grant_request(pid))
    start = ResourceCounts.now(engine)
    for _ in range(100):
        proxy.refuse()
        assert_store_unavailable(refused(lambda: patient.grant(grant_request(pid))))
        proxy.pass_through()
        patient.grant(grant_request(pid))
    # A connection in use at this instant is not a leak: the projection follower indexes the last grant on
    # its own thread (seen once in CI: checked_out=1 at the last cycle). A leaked one is never checked in.
    wait_until(lambda: engine.pool.checkedout() == 0, timeout_s=10.0)
    end = ResourceCounts.now(engine)
    print(f"100 cycles: {start} -> {end}")  # shown with -s
    assert end.checked_out == 0, end
    assert end.threads <= start.threads + 2, (start, end)
    assert end.fds <= start.fds + 8, (start, end)
    assert end.rss_kib <= start.rss_kib + 48 * 1024, (start, end)
    assert proxy.open_connections <= 2 * 2 * env.settings.database_pool_size  # pool + overflow, both sides
