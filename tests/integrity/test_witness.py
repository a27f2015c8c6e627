"""Witnesses as real processes on loopback (C2SP tlog-witness): cosign, refuse, remember; the node follows."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.integrity import (
    WitnessProcess,
    copy_ledger,
    leaf_hashes,
    open_ledger,
    policy_text,
    rewrite_entry,
)
from testkit.ledger import ALICE, ORIGIN

from ciphercare.ledger.embedded.checkpoint_log import LogRefusedError, read_records
from ciphercare.ledger.embedded.verify import KIND_WITNESS, verify_ledger
from ciphercare.ledger.transparency.checkpoint import CheckpointSigner
from ciphercare.ledger.transparency.merkle import MerkleTree
from ciphercare.ledger.witness.client import post_add_checkpoint
from ciphercare.ledger.witness.cosignature import CosignatureVerifier, parse_witness_vkey, split_note
from ciphercare.ledger.witness.policy import Policy
from ciphercare.ledger.witness.server import request_body


@pytest.fixture
def node_key(tmp_path: Path) -> CheckpointSigner:
    (tmp_path / "node").mkdir()
    return CheckpointSigner(tmp_path / "node" / "checkpoint.key", ORIGIN)


@pytest.fixture
def witnesses(tmp_path: Path, node_key: CheckpointSigner) -> Iterator[list[WitnessProcess]]:
    """Two witness processes: one Ed25519 (cosignature/v1), one ML-DSA-44 (post-quantum)."""
    procs = [WitnessProcess(tmp_path / f"w{i}", f"witness{i}.test", [node_key.vkey], alg)
             for i, alg in ((1, "ed25519"), (2, "ml-dsa-44"))]
    yield procs
    for p in procs:
        p.stop()


def _policy(tmp_path: Path, node_key: CheckpointSigner, witnesses: list[WitnessProcess], quorum: int) -> Policy:
    path = tmp_path / "policy.txt"
    path.write_text(policy_text([node_key.vkey], witnesses, quorum))
    return Policy.load(path)


def _fill(led, n: int, prefix: str = "k") -> None:  # type: ignore[no-untyped-def]
    futs = [led.submit_future(ALICE, "kv", "Put", [f"{prefix}{i}", f"v{i}"]) for i in range(n)]
    for f in futs:
        f.result(30)


def test_node_checkpoints_are_cosigned_by_a_quorum(tmp_path: Path, node_key: CheckpointSigner,
                                                  witnesses: list[WitnessProcess]) -> None:
    policy = _policy(tmp_path, node_key, witnesses, 2)
    led = open_ledger(tmp_path / "node", witness_policy=policy, witness_wait_ms=5000)
    try:
        _fill(led, 60)
        cp = led.checkpoint()
        assert led.witnessing is not None and led.witnessing.wait_cosigned(cp.size, 10)
        cosigned = led.cosigned_checkpoint()
        assert cosigned is not None and cosigned[0].size == 60
        checked, cosigs = policy.verify(cosigned[1], origin=ORIGIN)
        assert checked.root_hash == cp.root_hash
        assert sorted(c.name for c in cosigs) == ["witness1.test", "witness2.test"]
        assert [parse_witness_vkey(w.vkey)[2] for w in witnesses] == [0x04, 0x06]  # Ed25519, ML-DSA-44
        assert all(c.timestamp > 1_700_000_000 for c in cosigs)
    finally:
        led.close()
    # The witnesses keep their state durably: the size they cosigned is on their disk.
    for w in witnesses:
        state = json.loads((w.state_dir / "state.json").read_text())
        assert state[ORIGIN]["size"] == 60
    report = verify_ledger(tmp_path / "node" / "ledger.db", node_key.vkey, policy=policy)
    assert report.ok and report.witnessed_size == 60, report.first_error
    # One unwitnessed append later, a strict verify says so (exit 6), a tolerant one accepts it.
    led = open_ledger(tmp_path / "node")
    led.submit(ALICE, "kv", "Put", ["late", "x"])
    led.close()
    strict = verify_ledger(tmp_path / "node" / "ledger.db", node_key.vkey, policy=policy).first_error
    assert strict is not None and strict.kind == KIND_WITNESS and strict.exit_code == 6
    assert verify_ledger(tmp_path / "node" / "ledger.db", node_key.vkey, policy=policy, max_unwitnessed=1).ok


def test_witness_protocol_answers(tmp_path: Path, node_key: CheckpointSigner,
                                  witnesses: list[WitnessProcess]) -> None:
    w = witnesses[0]
    tree = MerkleTree.from_leaves([f"leaf-{i}".encode() for i in range(20)])
    cp10 = node_key.sign(10, tree.root(10))
    cp20 = node_key.sign(20, tree.root(20))
    first = post_add_checkpoint(w.url, request_body(0, [], cp10.note), 5)
    assert first.status == 200
    body, _ = split_note(cp10.note)
    CosignatureVerifier.from_vkey(w.vkey).verify_line(body, first.body.decode().strip())
    # Wrong old size: 409 with the stored size, as text/x.tlog.size.
    stale = post_add_checkpoint(w.url, request_body(0, [], cp20.note), 5)
    assert (stale.status, stale.content_type, stale.body) == (409, "text/x.tlog.size", b"10\n")
    # A bad proof: 422, nothing recorded.
    bogus = [bytes(32)] * len(tree.consistency_proof(10, 20))
    assert post_add_checkpoint(w.url, request_body(10, bogus, cp20.note), 5).status == 422
    good = post_add_checkpoint(w.url, request_body(10, tree.consistency_proof(10, 20), cp20.note), 5)
    assert good.status == 200
    # A rollback to 10 and a fork at 20 are refused with the stored size.
    assert post_add_checkpoint(w.url, request_body(10, [], cp10.note), 5).body == b"20\n"
    fork = MerkleTree.from_leaves([f"other-{i}".encode() for i in range(20)])
    forked = node_key.sign(20, fork.root(20))
    answer = post_add_checkpoint(w.url, request_body(20, [], forked.note), 5)
    assert (answer.status, answer.body) == (409, b"20\n")
    # Unknown origin 404, unsigned 403, malformed 400, old > size 400.
    stranger = CheckpointSigner(tmp_path / "stranger.key", "stranger.test/log").sign(1, tree.root(1))
    assert post_add_checkpoint(w.url, request_body(0, [], stranger.note), 5).status == 404
    impostor = CheckpointSigner(tmp_path / "impostor.key", ORIGIN).sign(30, tree.root(20))
    assert post_add_checkpoint(w.url, request_body(20, [], impostor.note), 5).status == 403
    assert post_add_checkpoint(w.url, b"old x\n\n" + cp20.note, 5).status == 400
    assert post_add_checkpoint(w.url, request_body(30, [], cp20.note), 5).status == 400
    evidence = [json.loads(line) for line in (w.state_dir / "evidence.log").read_text().splitlines()]
    assert {e["status"] for e in evidence} == {409, 422}
    assert any("fork" in e["reason"] for e in evidence)


def test_witness_refuses_a_rewrite_signed_with_the_stolen_key(tmp_path: Path, node_key: CheckpointSigner,
                                                              witnesses: list[WitnessProcess]) -> None:
    """The operator has the disk AND the key: rewrites entry 185, re-signs, deletes every local trace."""
    policy = _policy(tmp_path, node_key, witnesses, 1)
    led = open_ledger(tmp_path / "node", witness_policy=policy, witness_wait_ms=5000)
    try:
        _fill(led, 300)
        assert led.witnessing is not None and led.witnessing.wait_cosigned(300, 10)
    finally:
        led.close()
    data = copy_ledger(tmp_path / "node", tmp_path / "rewritten")
    db = data / "ledger.db"
    rewrite_entry(db, 185, "rewritten")
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM checkpoints WHERE size > 185")
        conn.execute("DELETE FROM meta WHERE key = 'published_file'")
    conn.close()
    for name in ("ledger.db.checkpoints", "ledger.db.cosigned"):
        (data / name).unlink()
    # Locally nothing is left to object: the node would re-sign the rewritten tree...
    led2 = open_ledger(data)
    forged = led2.checkpoint()
    led2.close()
    assert forged.size == 300
    # ... but the witness cosigned the original 300 and refuses (409 with its size); the node will not start.
    w = witnesses[0]
    answer = post_add_checkpoint(w.url, request_body(300, [], forged.note), 5)
    assert (answer.status, answer.body) == (409, b"300\n")
    tree = MerkleTree.from_leaf_hashes(b"".join(leaf_hashes(db)))
    proof = tree.consistency_proof(100, 300)
    assert post_add_checkpoint(w.url, request_body(100, proof, forged.note), 5).body == b"300\n"
    with pytest.raises(LogRefusedError, match="rolled back or forked"):
        open_ledger(data, witness_policy=policy)
    # A witness that had cosigned 200-odd entries (covering seq 185) refuses the rewritten extension with 422.
    # (One that had seen only the first 185 entries could not tell: the rewrite is after what it saw.)
    fresh = WitnessProcess(tmp_path / "w3", "witness3.test", [node_key.vkey])
    try:
        original = read_records(tmp_path / "node" / "ledger.db.checkpoints")[0]
        seen = next(r for r in original if 200 <= r.size < 300)
        assert post_add_checkpoint(fresh.url, request_body(0, [], seen.note), 5).status == 200
        proof = tree.consistency_proof(seen.size, 300)
        refused = post_add_checkpoint(fresh.url, request_body(seen.size, proof, forged.note), 5)
        assert refused.status == 422
    finally:
        fresh.stop()
    cosigned = read_records(tmp_path / "node" / "ledger.db.cosigned")[0]
    assert cosigned and base64.b64encode(cosigned[-1].note)
