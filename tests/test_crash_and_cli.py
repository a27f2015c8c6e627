"""The server as a user runs it: `ciphercare up` in its own process, SIGKILL mid-burst, the CLI's exit codes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
from testkit.process import CLI, free_port, start_cli_server

from ciphercare.ledger.transparency.checkpoint import CheckpointSigner
from ciphercare.sdk.client import CiphercareClient
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.services.platform.settings import load_settings
from ciphercare.v1 import access_log_pb2


def start_server(data_dir: Path, issuer_port: int, *,
                 demo_witness: bool = False) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, CIPHERCARE_DATA_DIR=str(data_dir), CIPHERCARE_GRPC_PORT="0",
               CIPHERCARE_DEV_ISSUER_PORT=str(issuer_port), CIPHERCARE_WEB_ENABLED="false",
               CIPHERCARE_DEMO_WITNESS=str(demo_witness).lower())
    return start_cli_server(env, timeout_s=60)


def run_cli(*args: str, data_dir: Path, issuer_port: int = 0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CIPHERCARE_DATA_DIR=str(data_dir))
    if issuer_port:
        env["CIPHERCARE_DEV_ISSUER_PORT"] = str(issuer_port)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_sigkill_during_concurrent_writes_loses_no_acknowledged_transaction(tmp_path: Path) -> None:
    issuer_port = free_port()
    proc, port = start_server(tmp_path, issuer_port)
    settings = load_settings(data_dir=tmp_path, dev_issuer_port=issuer_port)
    token = DevIssuer.from_settings(settings).issue(subject="svc-a", roles=["hospital"], org="hospital-a")
    acked: list[tuple[str, str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        client = CiphercareClient.connect(f"127.0.0.1:{port}", token, deadline_s=10)
        i = 0
        while not stop.is_set():
            try:
                response = client.record(access_log_pb2.RecordRequest(
                    type="110110", subtype="read", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
                    purpose_of_use="TREAT", pid=f"pt-crash-{n}-{i}", data_classes=["Observation"]))
            except grpc.RpcError:
                return
            with lock:
                acked.append((response.event.id, response.receipt.tx_id, response.receipt.sequence))
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) >= 150, "the burst did not get going"

    verified = run_cli("ledger", "verify", data_dir=tmp_path)
    assert verified.returncode == 0, verified.stderr
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        stored = dict(db.execute("SELECT tx_id, seq FROM entries"))
    missing = [(tx, seq) for _, tx, seq in acked if stored.get(tx) != seq]
    assert not missing, f"{len(missing)} acknowledged transactions lost after SIGKILL"

    # A restarted server serves every acknowledged event (the projection catches up from the ledger).
    proc2, port2 = start_server(tmp_path, issuer_port)
    try:
        officer = CiphercareClient.connect(
            f"127.0.0.1:{port2}",
            DevIssuer.from_settings(settings).issue(subject="o", roles=["compliance-officer"], org="regulator"))
        found = {e.id for e in officer.search_all(access_log_pb2.SearchRequest(page_size=1000))}
        assert {event_id for event_id, _, _ in acked} <= found
    finally:
        proc2.terminate()
        proc2.wait(30)


def test_ledger_verify_names_the_first_tampered_entry(tmp_path: Path) -> None:
    issuer_port = free_port()
    proc, port = start_server(tmp_path, issuer_port)
    try:
        settings = load_settings(data_dir=tmp_path, dev_issuer_port=issuer_port)
        token = DevIssuer.from_settings(settings).issue(subject="svc-a", roles=["hospital"], org="hospital-a")
        client = CiphercareClient.connect(f"127.0.0.1:{port}", token)
        for i in range(5):
            client.record(access_log_pb2.RecordRequest(
                type="110110", subtype="read", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
                purpose_of_use="TREAT", pid=f"pt-tamper-{i}", data_classes=["Observation"]))
    finally:
        proc.terminate()
        proc.wait(30)
    good = run_cli("ledger", "verify", data_dir=tmp_path)
    assert good.returncode == 0 and "ledger OK: 5 entries" in good.stdout
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        (leaf, tx_id) = db.execute("SELECT leaf, tx_id FROM entries WHERE seq = 3").fetchone()
        tampered = leaf.replace(b"pt-tamper-3", b"pt-tamper-X")
        assert tampered != leaf
        db.execute("UPDATE entries SET leaf = ? WHERE seq = 3", (tampered,))
    vkey = CheckpointSigner.load(tmp_path / "ledger-ed25519.pem", settings.ledger_origin).vkey
    bad = run_cli("ledger", "verify", "--vkey", vkey, data_dir=tmp_path)
    assert bad.returncode == 3  # tampered (docs/TRANSPARENCY.md, exit codes)
    assert "seq 3" in bad.stderr and tx_id in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_cli_errors_are_one_readable_line(tmp_path: Path) -> None:
    missing = run_cli("ledger", "verify", "--path", str(tmp_path / "nope.db"), data_dir=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("ciphercare: no ledger at")
    assert len(missing.stderr.strip().splitlines()) == 1
    usage = run_cli("dev-token", "--role", "wizard", data_dir=tmp_path)
    assert usage.returncode == 2


def test_dev_token_prints_a_keycloak_shaped_token(tmp_path: Path) -> None:
    import jwt

    result = run_cli("dev-token", "--role", "hospital", "--org", "hospital-a", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), options={"verify_signature": False})
    assert "hospital" in claims["realm_access"]["roles"] and claims["org"] == "hospital-a"
    assert not {"patient", "clinician", "compliance-officer", "admin"} & set(claims["realm_access"]["roles"])
    assert claims["aud"] == "ciphercare-api" or "ciphercare-api" in claims["aud"]


def test_demo_runs_the_whole_scenario_against_a_running_server(tmp_path: Path) -> None:
    issuer_port = free_port()
    proc, port = start_server(tmp_path, issuer_port, demo_witness=True)  # a witness process (issue 11)
    try:
        result = run_cli("demo", "--target", f"127.0.0.1:{port}", data_dir=tmp_path, issuer_port=issuer_port)
    finally:
        proc.terminate()
        proc.wait(30)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "PERMIT" in out and "DENY" in out and "refused: PERMISSION_DENIED" in out
    assert "0 visible" in out and "(unexpected)" not in out
    assert out.count("verified in tree of") == 3 and "consistency proof" in out
    assert "every proof verified" in out
    assert "a witness in its own process cosigned the checkpoint" in out and "demo-witness" in out
    assert "rejects a rolled-back log" in out and "refused: rollback" in out
