"""Clients that remember, against real servers on loopback: a fork and a rollback are reported with evidence.

The operator keeps the signing key and restores an old backup (DB, published-checkpoint file, off-chain
store: the node itself cannot tell), then grows it differently to the same size (a fork).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from testkit.process import CLI
from testkit.server import ServerThread, make_settings

from ciphercare.ledger.transparency.checkpoint import CheckpointKeyring, CheckpointSigner
from ciphercare.sdk.checkpoints import CheckpointMemory, CheckpointStore, RollbackError
from ciphercare.sdk.client import CiphercareClient
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.v1 import access_log_pb2


def _record(client: CiphercareClient, pid: str) -> None:
    client.record(access_log_pb2.RecordRequest(
        type="110110", subtype="read", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
        purpose_of_use="TREAT", pid=pid, data_classes=["Observation"]))


class Node:
    def __init__(self, data_dir: Path) -> None:
        self.settings = make_settings(data_dir, web_enabled=False)
        self.server = ServerThread(self.settings).start()
        issuer = DevIssuer.from_settings(self.settings)
        self.hospital = CiphercareClient.connect(self.server.target, issuer.issue(
            subject="svc-a", roles=["hospital"], org="hospital-a"), deadline_s=15)
        self.officer = CiphercareClient.connect(self.server.target, issuer.issue(
            subject="officer", roles=["compliance-officer"], org="regulator"), deadline_s=15)

    def size(self) -> int:
        return self.officer.call(self.officer.access_log.GetCheckpoint,
                                 access_log_pb2.GetCheckpointRequest()).checkpoint.tree_size

    def stop(self) -> None:
        self.hospital.close()
        self.officer.close()
        self.server.stop()


def test_sdk_reports_fork_and_rollback_with_both_checkpoints(tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    node = Node(node_dir)
    vkey = CheckpointSigner.load(node.settings.resolved_ledger_key_path, node.settings.ledger_origin).vkey
    store = CheckpointStore(tmp_path / "client-state")
    try:
        for i in range(3):
            _record(node.hospital, f"pt-orig-{i}")
        first = CheckpointMemory(CheckpointKeyring.from_vkeys(vkey), store=store).check(node.officer)
        assert first.status == "first"
    finally:
        node.stop()
    backup = tmp_path / "backup"
    shutil.copytree(node_dir, backup)
    node = Node(node_dir)
    try:
        for i in range(3, 6):
            _record(node.hospital, f"pt-orig-{i}")
        # A NEW memory object over the same store: the client remembers between runs.
        grown = CheckpointMemory(CheckpointKeyring.from_vkeys(vkey), store=store).check(node.officer)
        assert grown.status == "extended" and grown.previous is not None
        assert grown.previous.size == first.checkpoint.size < grown.checkpoint.size
        size_after = grown.checkpoint.size
    finally:
        node.stop()

    # Fork: the operator restores the backup and writes other entries up to the same size, same key.
    forked_dir = tmp_path / "forked"
    shutil.copytree(backup, forked_dir)
    forked = Node(forked_dir)
    try:
        i = 0
        while forked.size() < size_after:
            _record(forked.hospital, f"pt-fork-{i}")
            i += 1
        assert forked.size() == size_after
        with pytest.raises(RollbackError, match="fork") as fork:
            CheckpointMemory(CheckpointKeyring.from_vkeys(vkey), store=store).check(forked.officer)
        evidence = fork.value.evidence()
        remembered = CheckpointKeyring.from_vkeys(vkey).verify(evidence["remembered_checkpoint"])
        served = CheckpointKeyring.from_vkeys(vkey).verify(evidence["served_checkpoint"])
        assert remembered.size == served.size == size_after and remembered.root_hash != served.root_hash
        # The memory was not overwritten by the forked checkpoint.
        stored = store.load(remembered.origin)
        assert stored is not None and stored.root_hash == remembered.root_hash
    finally:
        forked.stop()

    # Rollback: the backup served as is. The SDK and the CLI (`ciphercare ledger check`) both refuse.
    rolled_dir = tmp_path / "rolled"
    shutil.copytree(backup, rolled_dir)
    rolled = Node(rolled_dir)
    try:
        with pytest.raises(RollbackError, match="rollback") as rollback:
            CheckpointMemory(CheckpointKeyring.from_vkeys(vkey), store=store).check(rolled.officer)
        assert rollback.value.remembered != rollback.value.served
        env = {**os.environ, "CIPHERCARE_DATA_DIR": str(rolled_dir),
               "CIPHERCARE_DEV_ISSUER_PORT": str(rolled.settings.dev_issuer_port)}
        cli = subprocess.run([*CLI, "ledger", "check", "--target", rolled.server.target, "--vkey", vkey,
                              "--state-dir", str(store.dir)], env=env, capture_output=True, text=True, timeout=120)
        assert cli.returncode == 4, cli.stderr
        assert "ROLLED BACK OR FORKED" in cli.stderr and len(cli.stderr.strip().splitlines()) == 1
        cli_evidence = json.loads(cli.stdout)
        assert cli_evidence["remembered_checkpoint"].split("\n")[1] == str(size_after)
        assert int(cli_evidence["served_checkpoint"].split("\n")[1]) < size_after
    finally:
        rolled.stop()


def test_sdk_and_verify_require_the_witness_quorum(tmp_path: Path) -> None:
    """A node with a witness policy serves cosigned checkpoints; clients and verify check the quorum."""
    from testkit.integrity import WitnessProcess, policy_text

    from ciphercare.ledger.witness.policy import Policy
    from ciphercare.sdk.checkpoints import CheckpointCheckError

    node_dir = tmp_path / "node"
    node_dir.mkdir()
    key_path = node_dir / "ledger-ed25519.pem"
    vkey = CheckpointSigner(key_path, "ciphercare.local/ledger").vkey
    witness = WitnessProcess(tmp_path / "w1", "witness1.test", [vkey])
    absent = WitnessProcess(tmp_path / "w2", "witness2.test", [vkey])
    absent.stop()  # listed in the strict policy, but never cosigns
    try:
        (tmp_path / "policy.txt").write_text(policy_text([vkey], [witness], 1))
        (tmp_path / "strict.txt").write_text(policy_text([vkey], [witness, absent], 2))
        settings = make_settings(node_dir, web_enabled=False, witness_policy=tmp_path / "policy.txt",
                                 witness_wait_ms=5000)
        server = ServerThread(settings).start()
        issuer = DevIssuer.from_settings(settings)
        hospital = CiphercareClient.connect(server.target, issuer.issue(
            subject="svc-a", roles=["hospital"], org="hospital-a"), deadline_s=15)
        officer = CiphercareClient.connect(server.target, issuer.issue(
            subject="officer", roles=["compliance-officer"], org="regulator"), deadline_s=15)
        try:
            for i in range(4):
                _record(hospital, f"pt-w-{i}")
            served = officer.call(officer.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest(cosigned=True))
            assert served.checkpoint.tree_size >= 4 and len(served.cosignatures) == 1
            assert served.cosignatures[0].startswith("\u2014 witness1.test ")
            policy = Policy.load(tmp_path / "policy.txt")
            result = CheckpointMemory(policy.log_keys, policy=policy,
                                      store=CheckpointStore(tmp_path / "state")).check(officer)
            assert result.witnesses == ("witness1.test",)
            strict = Policy.load(tmp_path / "strict.txt")
            with pytest.raises(CheckpointCheckError, match="requires 2"):
                CheckpointMemory(strict.log_keys, policy=strict).check(officer)
        finally:
            hospital.close()
            officer.close()
            server.stop()
        env = {**os.environ, "CIPHERCARE_DATA_DIR": str(node_dir)}
        ok = subprocess.run([*CLI, "ledger", "verify", "--policy", str(tmp_path / "policy.txt")], env=env,
                            capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0, ok.stderr
        assert "witnessed up to" in ok.stdout and "WARNING" not in ok.stderr  # the key came from the policy
        bad = subprocess.run([*CLI, "ledger", "verify", "--policy", str(tmp_path / "strict.txt")], env=env,
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 6, bad.stderr
    finally:
        witness.stop()


def test_console_session_reports_a_rollback_with_both_checkpoints(tmp_path: Path) -> None:
    """The compliance console's integrity check keeps the verified checkpoint in the session."""
    from types import SimpleNamespace

    from ciphercare.services.web.console import check_integrity
    from ciphercare.services.web.sessions import Session

    session = Session(id="s", csrf_token="c", created=0.0, last_seen=0.0)
    node_dir = tmp_path / "node"
    node = Node(node_dir)
    try:
        _record(node.hospital, "pt-c-0")
    finally:
        node.stop()
    backup = tmp_path / "backup"
    shutil.copytree(node_dir, backup)
    node = Node(node_dir)
    try:
        _record(node.hospital, "pt-c-1")
        web = SimpleNamespace(settings=node.settings)
        first = check_integrity(web, session, node.officer, [])  # type: ignore[arg-type]
        assert first["ok"] and first["consistency"] == "first"
        _record(node.hospital, "pt-c-2")
        second = check_integrity(web, session, node.officer, [])  # type: ignore[arg-type]
        assert second["ok"] and second["consistency"] == "consistent"
    finally:
        node.stop()
    rolled = Node(backup)
    try:
        report = check_integrity(SimpleNamespace(settings=rolled.settings), session, rolled.officer, [])  # type: ignore[arg-type]
        assert not report["ok"] and report["consistency"] == "inconsistent"
        assert "rollback" in report["problems"][0]
        assert report["evidence"]["remembered_checkpoint"] != report["evidence"]["served_checkpoint"]
        assert session.last_checkpoint is not None and session.last_checkpoint.tree_size > rolled.size()
        # The patient portal's receipts go through the same session memory: no receipt from a rolled-back log.
        from ciphercare.services.web.integrity import remember_latest

        latest = rolled.officer.call(rolled.officer.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest())
        problem, evidence = remember_latest(rolled.settings, session, rolled.officer, latest.verifier_key, latest)
        assert problem is not None and "rollback" in problem and evidence is not None
    finally:
        rolled.stop()
