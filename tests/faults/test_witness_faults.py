"""A witness (``ciphercare witness serve``, its own process) stopped, slowed and made flaky while the node
submits checkpoints to it through a :class:`FaultProxy`.

A witness is a check on the operator, not a gate on writes (docs/TRANSPARENCY.md): while it is away,
writes keep their receipts and the newest cosigned checkpoint falls behind; once it answers again, the
next checkpoint (with a consistency proof from the size it last cosigned) brings it level, without a
restart. ``ciphercare_witness_lag_entries`` on ``/metrics`` shows how far behind it is, set by the
submitter as checkpoints are published and cosigned. No thread, fd or memory leak over 100 outage cycles.
"""

from __future__ import annotations

import itertools
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from testkit.faults import FaultProxy, ResourceCounts, wait_until
from testkit.integrity import WitnessProcess
from testkit.server import Env, ServerThread, make_settings

from ciphercare.ledger.transparency.checkpoint import CheckpointSigner
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.v1 import common_pb2, consent_pb2

_ids = itertools.count()


def grant_request(pid: str) -> consent_pb2.GrantRequest:
    start = Timestamp()
    start.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    return consent_pb2.GrantRequest(pid=pid, grantee_organization="hospital-a",
                                    decision=consent_pb2.CONSENT_DECISION_PERMIT, purposes=["TREAT"],
                                    data_classes=["Observation"], period=common_pb2.Period(start=start))


class Witness:
    """A witness process behind a proxy; stop() and start() keep its state directory and its key."""

    def __init__(self, state_dir: Path, log_vkey: str) -> None:
        self.state_dir, self.log_vkey = state_dir, log_vkey
        self.process: WitnessProcess | None = None
        self.proxy: FaultProxy | None = None
        self.vkey = ""

    def start(self) -> None:
        self.process = WitnessProcess(self.state_dir, "witness1.test", [self.log_vkey])
        self.vkey = self.process.vkey
        host_port = self.process.url.split("//", 1)[1].rstrip("/")
        host, port = host_port.rsplit(":", 1)
        if self.proxy is None:
            self.proxy = FaultProxy(host, int(port)).start()
        else:
            self.proxy.upstream = (host, int(port))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self.proxy is not None:
            self.proxy.cut()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("witness-faults")


@pytest.fixture(scope="module")
def witness(data: Path) -> Iterator[Witness]:
    keys = data / "keys"
    keys.mkdir(mode=0o700)
    signer = CheckpointSigner(keys / "checkpoint.pem", "ciphercare.local/ledger")
    running = Witness(data / "witness", signer.vkey)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        if running.proxy is not None:
            running.proxy.stop()


@pytest.fixture(scope="module")
def env(data: Path, witness: Witness) -> Iterator[Env]:
    assert witness.proxy is not None
    policy = data / "witness-policy.txt"
    signer = CheckpointSigner(data / "keys" / "checkpoint.pem", "ciphercare.local/ledger")
    policy.write_text(f"log {signer.vkey}\nwitness {witness.vkey} http://{witness.proxy.address}\nquorum 1\n")
    settings = make_settings(data / "svc", checkpoint_key_path=data / "keys" / "checkpoint.pem",
                             witness_policy=policy, witness_timeout_s=0.5, witness_wait_ms=50)
    server = ServerThread(settings).start()
    try:
        yield Env(server=server, issuer=DevIssuer.from_settings(settings))
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def healed(witness: Witness) -> Iterator[None]:
    assert witness.proxy is not None
    witness.proxy.pass_through()
    if witness.process is None:
        witness.start()
    yield
    witness.proxy.pass_through()
    if witness.process is None:
        witness.start()


def cosigned_size(env: Env) -> int:
    submitter = env.app.ledger.witnessing
    assert submitter is not None, "the node runs no witness submitter"
    latest = submitter.latest_cosigned()
    return 0 if latest is None else latest[0].size


def write(env: Env) -> int:
    """One Grant; returns the ledger size after it (the receipt came back)."""
    pid = f"pw-{next(_ids):05d}-{datetime.now(UTC).strftime('%H%M%S%f')}"
    response = env.patient(pid).grant(grant_request(pid))
    assert response.receipt.tx_id
    return env.app.ledger.size()


def level(env: Env, size: int, timeout_s: float = 20.0) -> bool:
    return wait_until(lambda: cosigned_size(env) >= size, timeout_s=timeout_s)


@pytest.mark.parametrize("fault", ["stopped", "refused", "slow", "flaky"])
def test_writes_go_on_and_witnessing_catches_up(env: Env, witness: Witness, fault: str) -> None:
    assert witness.proxy is not None
    assert level(env, write(env)), "the witness did not cosign while healthy"
    behind = cosigned_size(env)
    if fault == "stopped":
        witness.stop()
    elif fault == "refused":
        witness.proxy.refuse()
    elif fault == "slow":
        witness.proxy.slow(1.0)  # longer than witness_timeout_s: every submission times out
        witness.proxy.cut()
    else:
        witness.proxy.flaky(1.0)  # every new connection reset
        witness.proxy.cut()
    sizes = [write(env) for _ in range(3)]  # receipts come back during the outage
    assert sizes == sorted(sizes) and sizes[-1] >= behind + 3
    assert cosigned_size(env) == behind, "a checkpoint was cosigned while the witness was away"
    if fault == "stopped":
        witness.start()  # same state and key, new port behind the same address
    witness.proxy.pass_through()
    final = write(env)
    assert level(env, final), f"witnessing did not catch up after the witness came back ({fault})"


def witness_lag(env: Env) -> float:
    """``ciphercare_witness_lag_entries`` as ``/metrics`` shows it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{env.app.metrics_port}/metrics", timeout=20) as page:
        text = page.read().decode()
    for line in text.splitlines():
        if line.startswith("ciphercare_witness_lag_entries "):
            return float(line.split()[1])
    raise AssertionError("no ciphercare_witness_lag_entries on /metrics")


def test_witness_lag_on_metrics_follows_the_witness(env: Env, witness: Witness) -> None:
    assert witness.proxy is not None
    assert level(env, write(env)), "the witness did not cosign while healthy"
    assert wait_until(lambda: witness_lag(env) == 0), witness_lag(env)
    witness.proxy.refuse()
    size = [write(env) for _ in range(3)][-1]  # three checkpoints the witness never sees
    behind = cosigned_size(env)
    assert size - behind >= 3
    assert wait_until(lambda: witness_lag(env) == size - behind), (witness_lag(env), size, behind)
    witness.proxy.pass_through()
    assert level(env, write(env)), "witnessing did not catch up"
    assert wait_until(lambda: witness_lag(env) == 0), witness_lag(env)


def test_no_leak_over_100_witness_outages(env: Env, witness: Witness) -> None:
    assert witness.proxy is not None
    proxy = witness.proxy
    for _ in range(3):
        proxy.refuse()
        write(env)
        proxy.pass_through()
        assert level(env, write(env))
    start = ResourceCounts.now()
    for _ in range(100):
        proxy.refuse()
        write(env)
        proxy.pass_through()
        assert level(env, write(env))
    end = ResourceCounts.now()
    print(f"100 cycles: {start} -> {end}")  # shown with -s
    assert end.threads <= start.threads + 2, (start, end)
    assert end.fds <= start.fds + 8, (start, end)
    assert end.rss_kib <= start.rss_kib + 48 * 1024, (start, end)
