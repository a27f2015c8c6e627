"""Read replicas (issue 16 item 2): a writer process (`ciphercare up`) and a replica (`ciphercare replica`) on
real gRPC over loopback, each on its own port here so a test can address either; `up` with
CIPHERCARE_GRPC_PROCESSES puts them on one port (last test)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from testkit.process import CLI, free_port, start_cli_server

from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.services.platform.replicas import READY_LINE
from ciphercare.services.platform.settings import load_settings
from ciphercare.v1 import common_pb2, consent_pb2, consent_pb2_grpc

PERMIT = consent_pb2.CONSENT_DECISION_PERMIT
DENY = consent_pb2.CONSENT_DECISION_DENY


def _ts(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


def start_replica(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*CLI, "replica", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(READY_LINE):
            return proc
        if not line and proc.poll() is not None:
            raise RuntimeError(f"replica exited with {proc.returncode}")
    proc.kill()
    raise RuntimeError("replica did not start")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Node:
    """One server process as seen by clients."""

    def __init__(self, port: int, issuer: DevIssuer) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = consent_pb2_grpc.ConsentServiceStub(self.channel)
        self.issuer = issuer

    def token(self, role: str, org: str = "", pid: str | None = None) -> list[tuple[str, str]]:
        subject = f"{role}-{org or pid}"
        return [("authorization", "Bearer " + self.issuer.issue(subject=subject, roles=[role], org=org, pid=pid))]

    def call(self, method: str, request: Any, metadata: list[tuple[str, str]]) -> tuple[str, Any]:
        """(status name, response or details) of one call."""
        try:
            return "OK", getattr(self.stub, method)(request, metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details()

    def grant(self, pid: str, **kw: Any) -> consent_pb2.GrantResponse:
        now = datetime.now(UTC)
        period = common_pb2.Period(start=_ts(kw.pop("start", now - timedelta(hours=1))))
        if "end" in kw:
            period.end.CopyFrom(_ts(kw.pop("end")))
        request = consent_pb2.GrantRequest(
            pid=pid, grantee_organization=kw.pop("org", "hospital-a"), decision=kw.pop("decision", PERMIT),
            purposes=list(kw.pop("purposes", ("TREAT",))), data_classes=list(kw.pop("classes", ("Observation",))),
            period=period, provisions=list(kw.pop("provisions", ())))
        status, response = self.call("Grant", request, self.token("patient", pid=pid))
        assert status == "OK", response
        return response

    def revoke(self, pid: str, consent_id: str) -> consent_pb2.RevokeResponse:
        request = consent_pb2.RevokeRequest(consent_id=consent_id, reason="patient-request")
        status, response = self.call("Revoke", request, self.token("patient", pid=pid))
        assert status == "OK", response
        return response

    def check(self, pid: str, *, org: str = "hospital-a", purpose: str = "TREAT", data_class: str = "Observation",
              caller_org: str | None = None, at: datetime | None = None) -> consent_pb2.CheckResponse:
        request = consent_pb2.CheckRequest(pid=pid, recipient_organization=org, purpose=purpose,
                                           data_class=data_class)
        if at is not None:
            request.at.CopyFrom(_ts(at))
        status, response = self.call("Check", request, self.token("hospital", org=caller_org or org))
        assert status == "OK", response
        return response


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("replicas") / "data"
    issuer_port = free_port()
    env = dict(os.environ, CIPHERCARE_DATA_DIR=str(data), CIPHERCARE_GRPC_PORT="0",
               CIPHERCARE_DEV_ISSUER_PORT=str(issuer_port), CIPHERCARE_WEB_ENABLED="false")
    writer, port = start_cli_server(env)
    replica_port = free_port()
    replica = start_replica(dict(env, CIPHERCARE_METRICS_ENABLED="false"), replica_port)
    issuer = DevIssuer.from_settings(load_settings(data_dir=data, dev_issuer_port=issuer_port))
    try:
        yield {"writer": Node(port, issuer), "replica": Node(replica_port, issuer), "writer_proc": writer,
               "replica_proc": replica, "env": env, "data": data}
    finally:
        _stop(replica)
        _stop(writer)


_n = iter(range(10**6))


def new_pid() -> str:
    return f"pt-rep-{next(_n):04d}-{datetime.now(UTC).strftime('%H%M%S%f')}"


def test_replica_answers_check_exactly_as_the_writer_over_the_decision_table(cluster: dict[str, Any]) -> None:
    writer, replica = cluster["writer"], cluster["replica"]
    now = datetime.now(UTC)
    at = now.replace(microsecond=0)
    pids = {name: new_pid() for name in ("permit", "deny", "nested", "expired", "future", "revoked", "none")}
    writer.grant(pids["permit"], purposes=("TREAT", "HRESCH"))
    writer.grant(pids["permit"], decision=DENY, purposes=("HRESCH",))
    writer.grant(pids["deny"], decision=DENY)
    writer.grant(pids["nested"], classes=("Observation", "Condition"),
                 provisions=[consent_pb2.ConsentProvision(type=DENY, data_classes=["Condition"])])
    writer.grant(pids["expired"], start=now - timedelta(days=10), end=now - timedelta(days=1))
    writer.grant(pids["future"], start=now + timedelta(days=1))
    revoked = writer.grant(pids["revoked"])
    writer.revoke(pids["revoked"], revoked.consent.id)
    token = writer.token("hospital", org="hospital-a")
    requests: list[tuple[consent_pb2.CheckRequest, list[tuple[str, str]]]] = []
    for pid in pids.values():
        for purpose in ("TREAT", "HRESCH"):
            for data_class in ("Observation", "Condition"):
                request = consent_pb2.CheckRequest(pid=pid, recipient_organization="hospital-a", purpose=purpose,
                                                   data_class=data_class, at=_ts(at))
                requests.append((request, token))
    past = consent_pb2.CheckRequest(pid=pids["expired"], recipient_organization="hospital-a", purpose="TREAT",
                                    data_class="Observation", at=_ts(now - timedelta(days=5)))
    requests.append((past, token))
    # Refusals: another org's decision, missing fields, a name-shaped pid, no token, a patient's token.
    other = consent_pb2.CheckRequest(pid=pids["permit"], recipient_organization="hospital-b", purpose="TREAT",
                                     data_class="Observation", at=_ts(at))
    requests.append((other, token))
    requests.append((consent_pb2.CheckRequest(pid=pids["permit"], recipient_organization="hospital-a"), token))
    requests.append((consent_pb2.CheckRequest(pid="John Smith", recipient_organization="hospital-a",
                                              purpose="TREAT", data_class="Observation"), token))
    requests.append((past, []))
    requests.append((past, [("authorization", "Bearer not-a-jwt")]))
    requests.append((past, writer.token("patient", pid="pt-somebody-else")))
    outcomes = []
    for request, metadata in requests:
        mine = writer.call("Check", request, metadata)
        theirs = replica.call("Check", request, metadata)
        assert theirs == mine, request
        outcomes.append(mine[0] if mine[0] != "OK" else mine[1].decision)
    # The table covers both decisions and the refusals (the comparison above is not vacuous).
    assert {PERMIT, DENY, "PERMISSION_DENIED", "INVALID_ARGUMENT", "UNAUTHENTICATED"} <= set(outcomes)


def test_a_check_through_a_replica_after_a_revoke_receipt_never_sees_the_consent_active(
        cluster: dict[str, Any]) -> None:
    writer, replica = cluster["writer"], cluster["replica"]
    for i in range(30):
        pid = new_pid()
        via = writer if i % 2 == 0 else replica  # revoked through the writer, or forwarded by the replica
        granted = via.grant(pid)
        assert replica.check(pid).decision == PERMIT
        revoked = via.revoke(pid, granted.consent.id)
        assert revoked.receipt.tx_id  # the receipt is back: every check from now on must deny
        result = replica.check(pid)
        assert result.decision == DENY, (i, result)


def test_writes_through_a_replica_are_forwarded_to_the_writer(cluster: dict[str, Any]) -> None:
    writer, replica = cluster["writer"], cluster["replica"]
    pid = new_pid()
    granted = replica.grant(pid)
    assert granted.receipt.tx_id and granted.consent.pid == pid
    status, got = writer.call("Get", consent_pb2.GetConsentRequest(consent_id=granted.consent.id),
                              writer.token("patient", pid=pid))
    assert status == "OK" and got.consent.id == granted.consent.id
    # A read that needs the off-chain store is forwarded too and answered identically.
    assert replica.call("Get", consent_pb2.GetConsentRequest(consent_id=granted.consent.id),
                        writer.token("patient", pid=pid)) == (status, got)


def test_with_the_writer_gone_a_replica_refuses_writes_with_unavailable_and_keeps_answering_checks(
        cluster: dict[str, Any]) -> None:
    writer, replica = cluster["writer"], cluster["replica"]
    pid = new_pid()
    writer.grant(pid)
    cluster["writer_proc"].send_signal(signal.SIGKILL)
    cluster["writer_proc"].wait(30)
    status, details = replica.call("Grant", consent_pb2.GrantRequest(
        pid=new_pid(), grantee_organization="hospital-a", decision=PERMIT, purposes=["TREAT"],
        data_classes=["Observation"], period=common_pb2.Period()), replica.token("patient", pid=pid))
    assert status == "UNAVAILABLE" and "writer" in details
    assert replica.check(pid).decision == PERMIT


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:  # a thread may exit between the listing and the read
            out += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return out


def _live_replicas(up_pid: int) -> list[int]:
    """`up`'s replica processes that are running (not zombies, not gone between the listing and the read)."""
    out = []
    for child in _children(up_pid):
        try:
            if ("replica" in Path(f"/proc/{child}/cmdline").read_text()
                    and "zombie" not in Path(f"/proc/{child}/status").read_text()):
                out.append(child)
        except FileNotFoundError:
            continue
    return out


def test_up_with_three_processes_shares_the_port_and_survives_a_replica_dying(tmp_path: Path) -> None:
    data = tmp_path / "data"
    issuer_port = free_port()
    env = dict(os.environ, CIPHERCARE_DATA_DIR=str(data), CIPHERCARE_GRPC_PORT="0", CIPHERCARE_GRPC_PROCESSES="3",
               CIPHERCARE_DEV_ISSUER_PORT=str(issuer_port), CIPHERCARE_WEB_ENABLED="false")
    up, port = start_cli_server(env)
    try:
        replicas = _live_replicas(up.pid)
        assert len(replicas) == 2
        issuer = DevIssuer.from_settings(load_settings(data_dir=data, dev_issuer_port=issuer_port))
        pid = new_pid()
        Node(port, issuer).grant(pid)
        os.kill(replicas[0], signal.SIGKILL)
        # Once it is gone (its listening socket closed with it; a connection racing the kill itself may be
        # reset, as on any server: its caller gets UNAVAILABLE for a call never served, and may retry) ...
        # "Gone" is reaped by `up`, not merely a zombie: the thread-group leader turns zombie while the
        # process's other threads (gRPC's pollers) are still exiting and holding its descriptors, the listening
        # socket among them, and a connection the kernel hands that socket meanwhile is reset (seen once in
        # CI). The leader is reaped only after them.
        deadline = time.monotonic() + 10
        while Path(f"/proc/{replicas[0]}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(20):  # ... new connections: the kernel hands them to the processes still listening
            node = Node(port, issuer)
            assert node.check(pid).decision == PERMIT
            node.channel.close()
        deadline = time.monotonic() + 90  # and `up` starts another replica in its place
        while time.monotonic() < deadline:
            now = _live_replicas(up.pid)
            if len(now) == 2 and replicas[0] not in now:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the killed replica was not replaced: {now}")
        replicas = now + [replicas[0]]
    finally:
        _stop(up)
    for p in replicas:  # `up` stopped its replicas with itself
        assert not Path(f"/proc/{p}").exists() or "zombie" in Path(f"/proc/{p}/status").read_text()
