"""The ledger node (``ciphercare ledger serve``, its own process) stopped, slowed and made flaky.

The services run with ``ledger_backend=fabric`` and reach the node only through a :class:`FaultProxy`, so
the node can be killed and started again (on a new port, behind the same address) while they run.
Asserted:

* fail closed: during an outage a write (Grant, Record) and a read (Check) return UNAVAILABLE with a
  readable message, never INTERNAL or UNKNOWN; the node's log holds exactly the writes that succeeded;
* scoring returns no result without its consent check (UNAVAILABLE before any ciphertext is asked for);
* recovery without a restart of the services: calls succeed again once the node is back, and the
  access-event projection catches up with what the node committed;
* slow (latency on every packet) and flaky (connections reset) nodes give answers or UNAVAILABLE;
* no thread, fd or memory leak over 100 outage cycles.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from testkit.fabric.gateway import serve_process
from testkit.faults import FaultProxy, ResourceCounts, wait_until
from testkit.server import Env, ServerThread, make_settings

from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.v1 import access_log_pb2, common_pb2, consent_pb2

PERMIT = consent_pb2.CONSENT_DECISION_PERMIT
_ids = itertools.count()


def new_pid() -> str:
    return f"pl-{next(_ids):05d}-{datetime.now(UTC).strftime('%H%M%S%f')}"


def grant_request(pid: str) -> consent_pb2.GrantRequest:
    start = Timestamp()
    start.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    return consent_pb2.GrantRequest(pid=pid, grantee_organization="hospital-a", decision=PERMIT,
                                    purposes=["TREAT"], data_classes=["Observation"],
                                    period=common_pb2.Period(start=start))


def record_request(pid: str) -> access_log_pb2.RecordRequest:
    return access_log_pb2.RecordRequest(type="110110", subtype="read", action="R", purpose_of_use="TREAT", pid=pid,
                                        outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS, data_classes=["Observation"],
                                        source_observer="hospital-a/ehr")


class Node:
    """``ciphercare ledger serve`` on a data directory, behind a proxy; stop() and start() at will."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._stack: contextlib.ExitStack | None = None
        self.target = ""
        self.proxy: FaultProxy | None = None

    def start(self) -> None:
        stack = contextlib.ExitStack()
        self.target = stack.enter_context(serve_process(self.data_dir))
        self._stack = stack
        host, port = self.target.rsplit(":", 1)
        if self.proxy is None:
            self.proxy = FaultProxy(host, int(port)).start()
        else:
            self.proxy.upstream = (host, int(port))

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        if self.proxy is not None:
            self.proxy.cut()  # the node's connections die with it

    @property
    def running(self) -> bool:
        return self._stack is not None

    def entries(self) -> int:
        """Entries in the node's own log file (read directly: the node may be down)."""
        with contextlib.closing(sqlite3.connect(f"file:{self.data_dir / 'ledger.db'}?mode=ro", uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    running = Node(tmp_path_factory.mktemp("node"))
    running.start()
    try:
        yield running
    finally:
        running.stop()
        if running.proxy is not None:
            running.proxy.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, node: Node) -> Iterator[Env]:
    assert node.proxy is not None
    settings = make_settings(tmp_path_factory.mktemp("svc"), ledger_backend="fabric",
                             ledger_endpoint=node.proxy.address, ledger_msp_dir=node.data_dir / "msp",
                             ledger_submit_timeout_s=5.0, ledger_evaluate_timeout_s=5.0)
    server = ServerThread(settings).start()
    try:
        yield Env(server=server, issuer=DevIssuer.from_settings(settings))
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def healed(node: Node) -> Iterator[None]:
    assert node.proxy is not None
    node.proxy.pass_through()
    if not node.running:
        node.start()
    yield
    node.proxy.pass_through()
    if not node.running:
        node.start()


def unavailable(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    error = info.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
    assert "ledger" in (error.details() or ""), error.details()
    return error


def scrape(env: Env) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{env.app.metrics_port}/metrics", timeout=20) as page:
        return bytes(page.read())


def recovered(call: object, timeout_s: float = 30.0) -> bool:
    """The call succeeds again within ``timeout_s``; every failure meanwhile is UNAVAILABLE."""

    def once() -> bool:
        try:
            call()  # type: ignore[operator]
            return True
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, (exc.code(), exc.details())
            return False

    return wait_until(once, timeout_s=timeout_s, interval_s=0.05)


def test_node_stopped_fails_closed_and_recovers(env: Env, node: Node) -> None:
    pid = new_pid()
    patient, hospital = env.patient(pid), env.hospital()
    patient.grant(grant_request(pid))
    node.stop()
    before = node.entries()
    unavailable(lambda: patient.grant(grant_request(pid)))
    unavailable(lambda: hospital.record(record_request(pid)))
    unavailable(lambda: hospital.check(pid, "hospital-a", "TREAT", "Observation"))
    assert node.entries() == before, "a write reached the node's log during the outage"
    assert b"ciphercare_ledger_up 0.0" in scrape(env), "/metrics must answer during the outage, and say so"

    node.start()  # same data, new port, same address behind the proxy; the services are not restarted
    assert recovered(lambda: hospital.check(pid, "hospital-a", "TREAT", "Observation"))
    recorded = hospital.record(record_request(pid))
    assert node.entries() == before + 1
    assert b"ciphercare_ledger_up 1.0" in scrape(env)
    seen = {e.id for e in hospital.search_all(access_log_pb2.SearchRequest(pid=pid))}
    assert recorded.event.id in seen


def test_projection_follows_again_after_the_node_returns(env: Env, node: Node) -> None:
    pid = new_pid()
    hospital = env.hospital()
    hospital.record(record_request(pid))
    node.stop()
    node.start()
    assert recovered(lambda: hospital.check(pid, "hospital-a", "TREAT", "Observation"))
    # Record indexes its own row, but only the follower (the node's event stream, reopened after the node
    # came back) moves the projections' cursors past it.
    size = node.entries()
    hospital.record(record_request(pid))
    assert wait_until(lambda: all(p.cursor() >= size + 1 for p in env.app.projections.projections), timeout_s=30)


def test_slow_node_still_answers(env: Env, node: Node) -> None:
    assert node.proxy is not None
    pid = new_pid()
    patient, hospital = env.patient(pid), env.hospital()
    node.proxy.slow(0.02)
    node.proxy.cut()
    before = node.entries()
    assert recovered(lambda: patient.grant(grant_request(pid)))
    assert hospital.check(pid, "hospital-a", "TREAT", "Observation").decision == PERMIT
    assert node.entries() == before + 1


def test_flaky_node_answers_or_is_unavailable(env: Env, node: Node) -> None:
    assert node.proxy is not None
    pid = new_pid()
    hospital = env.hospital()
    node.proxy.flaky(0.5)
    codes: list[grpc.StatusCode] = []
    written = 0
    before = node.entries()
    for _ in range(10):
        node.proxy.cut()
        try:
            hospital.record(record_request(pid))
            codes.append(grpc.StatusCode.OK)
            written += 1
        except grpc.RpcError as exc:
            codes.append(exc.code())
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert grpc.StatusCode.UNAVAILABLE in codes
    node.proxy.pass_through()
    assert recovered(lambda: hospital.check(pid, "hospital-a", "TREAT", "Observation"))
    # Every acknowledged write is on the node; a refused one may have committed (its answer was lost).
    assert node.entries() >= before + written


def test_no_leak_over_100_node_outages(env: Env, node: Node) -> None:
    assert node.proxy is not None
    proxy = node.proxy
    pid = new_pid()
    hospital = env.hospital()
    check = lambda: hospital.check(pid, "hospital-a", "TREAT", "Observation")  # noqa: E731
    for _ in range(3):
        proxy.refuse()
        unavailable(check)
        proxy.pass_through()
        assert recovered(check)
    start = ResourceCounts.now()
    for _ in range(100):
        proxy.refuse()
        unavailable(check)
        proxy.pass_through()
        assert recovered(check)
    end = ResourceCounts.now()
    print(f"100 cycles: {start} -> {end}")  # shown with -s
    assert end.threads <= start.threads + 2, (start, end)
    assert end.fds <= start.fds + 8, (start, end)
    assert end.rss_kib <= start.rss_kib + 48 * 1024, (start, end)


def test_scoring_during_a_node_outage_returns_no_result(env: Env, node: Node) -> None:
    from testkit.scoring import default_training, deploy_default, key_owner

    from ciphercare.sdk.scoring import ScoringClient, ScoringError

    deploy_default(env.settings)
    pid = new_pid()
    env.patient(pid).grant(grant_request(pid))
    client = ScoringClient.connect(env.server.target, env.token("hospital", org="hospital-a", subject="svc-faults"),
                                   deadline_s=60)
    try:
        info = client.model_info()
        client.ensure_registered(key_owner())
        rows = default_training().test.x[:1]
        node.stop()
        before = node.entries()
        with pytest.raises(ScoringError) as info_error:
            client.score(key_owner(), [pid], rows, info=info)
        assert "UNAVAILABLE" in str(info_error.value) and "ledger" in str(info_error.value), str(info_error.value)
        assert node.entries() == before  # no consent check, so no access event and no result
        node.start()

        def scored() -> bool:
            try:
                run = client.score(key_owner(), [pid], rows, info=info)
            except ScoringError as exc:
                assert "UNAVAILABLE" in str(exc), str(exc)
                return False
            assert [r.status for r in run.results] == ["scored"]
            return True

        assert wait_until(scored, timeout_s=30, interval_s=0.1)
        assert node.entries() == before + 1  # the access event of the scored patient
    finally:
        client.close()
