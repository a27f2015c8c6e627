"""EmbeddedLedger / TransactionLog: group commit, Fabric stub semantics, events, reopen, proofs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit.ledger import ALICE, BOB, ORIGIN

from ciphercare.consent import canonical
from ciphercare.ledger.api import CommittedEvent, EndorseError, Ledger, LedgerError
from ciphercare.ledger.embedded.ledger import EmbeddedLedger
from ciphercare.ledger.embedded.log import PendingTx, TransactionLog, decode_leaf
from ciphercare.ledger.embedded.msp import msp_id_for_org
from ciphercare.ledger.transparency.checkpoint import CheckpointSigner, CheckpointVerifier
from ciphercare.ledger.transparency.merkle import leaf_hash, verify_consistency, verify_inclusion

MakeLedger = Callable[..., EmbeddedLedger]


def test_implements_the_ledger_protocol(make_ledger: MakeLedger) -> None:
    assert isinstance(make_ledger(), Ledger)


def test_submit_evaluate_and_leaf_contents(make_ledger: MakeLedger) -> None:
    led = make_ledger()
    r1 = led.submit(ALICE, "kv", "Put", ["k", "v1"])
    r2 = led.submit(ALICE, "kv", "Put", ["k", "v2"])
    assert (r1.seq, r2.seq) == (0, 1)
    assert r1.result == b"" and r2.result == b"v1"
    assert led.evaluate(BOB, "kv", "Get", ["k"]) == b"v2"
    assert r2.checkpoint.size == 2 and led.checkpoint() == r2.checkpoint
    assert r1.events[0].name == "put"

    entry = led.entry(1)
    assert entry.tx_id == r2.tx_id and entry.contract == "kv" and entry.function == "Put"
    assert entry.creator_msp == "HospitalAMSP"
    leaf = canonical.loads(entry.leaf)
    assert canonical.dumps(leaf) == entry.leaf
    assert leaf["v"] == 1 and leaf["args"] == ["k", "v2"] and leaf["channel"] == "ciphercare"
    assert leaf["writes"] == [{"key": "k", "value_b64": "djI="}]
    assert [e["name"] for e in leaf["events"]] == ["put"]
    d = decode_leaf(entry.leaf)
    assert d.events == (("put", entry.events[0].payload),)
    assert d.result_sha256 == hashlib.sha256(b"v1").hexdigest()
    assert len(d.creator_cert_sha256) == 64 and len(entry.tx_id) == 64


def test_error_mapping(make_ledger: MakeLedger) -> None:
    led = make_ledger()
    cases = [
        (["PERMISSION_DENIED", "not yours"], "PERMISSION_DENIED", "not yours"),
        (["NOT_FOUND", "gone"], "NOT_FOUND", "gone"),
        (["ALREADY_EXISTS", "dup"], "ALREADY_EXISTS", "dup"),
        (["FAILED_PRECONDITION", "revoked"], "FAILED_PRECONDITION", "revoked"),
        (["INVALID_ARGUMENT", "bad"], "INVALID_ARGUMENT", "bad"),
        (["WEIRD", "thing"], "INTERNAL", "WEIRD: thing"),
    ]
    for args, code, message in cases:
        with pytest.raises(EndorseError) as ei:
            led.submit(ALICE, "kv", "Fail", args)
        assert (ei.value.code, ei.value.message) == (code, message)
        assert len(ei.value.tx_id) == 64
    for contract, fn, args in (
        ("kv", "Put", ["only-one"]),
        ("kv", "Nope", []),
        ("nope", "Put", ["a", "b"]),
        ("kv", "Events", ["not-an-int"]),
    ):
        with pytest.raises(EndorseError) as ei:
            led.evaluate(ALICE, contract, fn, args)
        assert ei.value.code == "INVALID_ARGUMENT", ei.value
    with pytest.raises(EndorseError) as ei:
        led.submit(ALICE, "kv", "Suspend", [])
    assert ei.value.code == "INTERNAL" and "suspends" in ei.value.message
    assert led.size() == 0  # nothing rejected was written
    assert led.get_state("never") is None


def test_evaluate_never_writes_and_runs_inside_an_event_loop(make_ledger: MakeLedger) -> None:
    led = make_ledger()

    async def main() -> bytes:
        return led.evaluate(ALICE, "kv", "PutThenGet", ["x", "1"])

    assert asyncio.run(main()) == b""
    assert led.size() == 0 and led.get_state("x") is None


def test_no_read_your_writes_within_a_transaction(make_ledger: MakeLedger) -> None:
    led = make_ledger()
    led.submit(ALICE, "kv", "Put", ["x", "old"])
    assert led.submit(ALICE, "kv", "PutThenGet", ["x", "new"]).result == b"old"
    assert led.get_state("x") == b"new"


def test_batch_overlay_and_failed_tx_in_the_middle(make_ledger: MakeLedger) -> None:
    led = make_ledger(max_batch=3, max_wait_ms=500.0)
    f1 = led.submit_future(ALICE, "kv", "Append", ["s", "a"])
    f2 = led.submit_future(ALICE, "kv", "Fail", ["NOT_FOUND", "x"])
    f3 = led.submit_future(ALICE, "kv", "Append", ["s", "b"])
    r1, r3 = f1.result(5), f3.result(5)
    with pytest.raises(EndorseError):
        f2.result(5)
    assert r1.checkpoint == r3.checkpoint, "expected one batch"
    assert (r1.seq, r3.seq) == (0, 1)
    assert r3.result == b"ab"  # saw the earlier tx's write in the same batch
    assert led.get_state("s") == b"ab" and led.get_state("never") is None
    hist = json.loads(led.evaluate(ALICE, "kv", "History", ["s"]))
    assert [h[1] for h in hist] == ["ab", "a"]  # newest first
    assert [h[0] for h in hist] == [r3.tx_id, r1.tx_id]


def test_range_composite_delete_and_history(make_ledger: MakeLedger) -> None:
    led = make_ledger()
    for k in ("a", "b", "c", "d"):
        led.submit(ALICE, "kv", "Put", [k, k.upper()])
    led.submit(ALICE, "kv", "PutComposite", ["consent", "p1", "g1", "x"])
    led.submit(ALICE, "kv", "PutComposite", ["consent", "p1", "g2", "y"])
    led.submit(ALICE, "kv", "PutComposite", ["consent", "p2", "g1", "z"])
    led.submit(ALICE, "kv", "Del", ["c"])
    assert json.loads(led.evaluate(ALICE, "kv", "Scan", ["b", "d"])) == [["b", "B"]]
    assert json.loads(led.evaluate(ALICE, "kv", "Scan", ["b", ""])) == [["b", "B"], ["d", "D"]]
    # An empty start key excludes composite keys (the shim's "\x01" substitute).
    assert [kv[0] for kv in json.loads(led.evaluate(ALICE, "kv", "Scan", ["", ""]))] == ["a", "b", "d"]
    assert json.loads(led.evaluate(ALICE, "kv", "ScanComposite", ["consent", "p1"])) == [
        [["p1", "g1"], "x"],
        [["p1", "g2"], "y"],
    ]
    assert len(json.loads(led.evaluate(ALICE, "kv", "ScanComposite", ["consent", ""]))) == 3
    hist = json.loads(led.evaluate(ALICE, "kv", "History", ["c"]))
    assert [(h[1], h[2]) for h in hist] == [("", True), ("C", False)]
    with pytest.raises(EndorseError):
        led.evaluate(ALICE, "kv", "Scan", ["\x00consent", ""])  # composite keys are not simple range keys


def test_paginated_range_in_evaluate_only(make_ledger: MakeLedger) -> None:
    led = make_ledger()
    for k in "abcde":
        led.submit(ALICE, "kv", "Put", [k, k])
    page1 = json.loads(led.evaluate(ALICE, "kv", "Page", ["a", "", "2", ""]))
    assert page1 == {"keys": ["a", "b"], "bookmark": "c", "count": 2}
    page3 = json.loads(led.evaluate(ALICE, "kv", "Page", ["a", "", "2", "e"]))
    assert page3 == {"keys": ["e"], "bookmark": "", "count": 1}
    with pytest.raises(EndorseError, match="read-only"):
        led.submit(ALICE, "kv", "Page", ["a", "", "2", ""])


def test_creator_identity_and_tx_metadata(make_ledger: MakeLedger) -> None:
    led = make_ledger()
    before = time.time_ns() // 1_000_000
    r = led.submit(BOB, "kv", "WhoAmI", [])
    me = json.loads(r.result)
    assert me["mspid"] == msp_id_for_org("clinic_b") == "ClinicBMSP"
    assert me["cn"] == "bob" and me["tx_id"] == r.tx_id and me["channel"] == "ciphercare"
    assert me["attrs"] == {
        "hf.EnrollmentID": "bob",
        "ciphercare.org": "clinic_b",
        "ciphercare.roles": "patient",
        "ciphercare.client": "app",
        "ciphercare.pid": "pid-42",
    }
    assert before <= me["ts"] <= time.time_ns() // 1_000_000
    assert led.entry(r.seq).timestamp_ms == me["ts"]
    alice = json.loads(led.evaluate(ALICE, "kv", "WhoAmI", []))
    assert alice["attrs"]["ciphercare.roles"] == "admin,doctor" and "ciphercare.pid" not in alice["attrs"]


def test_group_commit_from_concurrent_submitters(make_ledger: MakeLedger) -> None:
    led = make_ledger(max_batch=32, max_wait_ms=3.0)
    threads, per_thread = 6, 40
    receipts: list = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        try:
            futs = [led.submit_future(ALICE, "kv", "Put", [f"t{t}-{i}", str(i)]) for i in range(per_thread)]
            got = [f.result(30) for f in futs]
            with lock:
                receipts.extend(got)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    ths = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not errors
    n = threads * per_thread
    assert sorted(r.seq for r in receipts) == list(range(n))
    assert len({r.tx_id for r in receipts}) == n
    stats = led.stats()
    assert stats["committed"] == n and stats["batches"] < n, stats  # some batches held several txs
    cps = {r.checkpoint.size: r.checkpoint for r in receipts}
    verifier = CheckpointVerifier.from_vkey(led.public_key_vkey())
    for r in receipts[:50]:
        cp = r.checkpoint
        assert r.seq < cp.size and verifier.verify(cp.note, origin=ORIGIN) == cp
        proof = led.inclusion_proof(r.seq, cp.size)
        assert verify_inclusion(leaf_hash(led.entry(r.seq).leaf), r.seq, cp.size, list(proof.hashes), cp.root_hash)
    sizes = sorted(cps)
    for a, b in zip(sizes, sizes[1:], strict=False):
        proof = led.consistency_proof(a, b)
        assert verify_consistency(a, b, list(proof.hashes), cps[a].root_hash, cps[b].root_hash)
        assert led.checkpoint_at(a) == cps[a]


def test_event_stream_replays_then_follows(make_ledger: MakeLedger) -> None:
    led = make_ledger(max_batch=8, max_wait_ms=1.0)
    for i in range(30):
        led.submit(ALICE, "kv", "Put", [f"pre{i}", "x"])
    led.submit(ALICE, "kv", "Events", ["3"])  # seq 30: three events e0..e2
    got: list[CommittedEvent] = []
    stream = led.events(5)
    done = threading.Event()

    def consume() -> None:
        for ev in stream:
            got.append(ev)
        done.set()

    th = threading.Thread(target=consume)
    th.start()
    futs = []
    for t in range(3):
        futs += [led.submit_future(ALICE, "kv", "Put", [f"live{t}-{i}", "y"]) for i in range(40)]
    for f in futs:
        f.result(30)
    total = 25 + 3 + 120
    deadline = time.monotonic() + 20
    while len(got) < total and time.monotonic() < deadline:
        time.sleep(0.01)
    stream.close()
    assert done.wait(5), "close() did not end the blocked iterator"
    th.join()
    assert len(got) == total
    keys = [(e.seq, e.name) for e in got]
    assert len(set(keys)) == total
    assert [e.seq for e in got] == sorted(e.seq for e in got)
    assert {e.seq for e in got} == set(range(5, 151))
    assert [e.name for e in got if e.seq == 30] == ["e0", "e1", "e2"]
    assert all(e.tx_id == led.entry(e.seq).tx_id for e in got[:10])

    filtered = led.events(0, frozenset({"e1"}))
    first = next(iter(filtered))
    filtered.close()
    assert (first.seq, first.name, first.payload) == (30, "e1", b"1")


def test_reopen_keeps_everything(make_ledger: MakeLedger, tmp_path: Path) -> None:
    led = make_ledger()
    for i in range(25):
        led.submit(ALICE, "kv", "Put", [f"k{i}", str(i)])
    root, size, cp = led.root(), led.size(), led.checkpoint()
    vkey = led.public_key_vkey()
    led.close()
    with pytest.raises(LedgerError):
        led.submit(ALICE, "kv", "Put", ["late", "x"])
    again = make_ledger()
    assert again.size() == size and again.root() == root and again.checkpoint() == cp
    assert again.public_key_vkey() == vkey
    assert again.evaluate(ALICE, "kv", "Get", ["k7"]) == b"7"
    r = again.submit(ALICE, "kv", "Put", ["k-new", "z"])
    assert r.seq == size
    proof = again.consistency_proof(size, size + 1)
    assert verify_consistency(size, size + 1, list(proof.hashes), root, r.checkpoint.root_hash)


def test_reopen_with_another_key_or_origin_is_refused(make_ledger: MakeLedger, tmp_path: Path) -> None:
    make_ledger().close()
    with pytest.raises(LedgerError, match="vkey"):
        TransactionLog(tmp_path / "ledger.db", CheckpointSigner(tmp_path / "other.key", ORIGIN))
    with pytest.raises(LedgerError, match="origin"):
        TransactionLog(tmp_path / "ledger.db", CheckpointSigner(tmp_path / "checkpoint.key", "elsewhere/log"))


def test_proof_argument_validation(make_ledger: MakeLedger) -> None:
    led = make_ledger()
    for i in range(5):
        led.submit(ALICE, "kv", "Put", [f"k{i}", "v"])
    with pytest.raises(ValueError, match="seq 5 must be >= 0 and < tree_size 5"):
        led.inclusion_proof(5, 5)
    with pytest.raises(ValueError, match="tree_size 6 must be between 1 and the ledger size 5"):
        led.inclusion_proof(0, 6)
    with pytest.raises(ValueError, match="seq -1"):
        led.inclusion_proof(-1, 3)
    with pytest.raises(ValueError, match="second_size 6 exceeds the ledger size 5"):
        led.consistency_proof(2, 6)
    with pytest.raises(ValueError, match="first_size 4 must be between 1 and second_size 3"):
        led.consistency_proof(4, 3)
    with pytest.raises(ValueError, match="first_size 0"):
        led.consistency_proof(0, 3)
    with pytest.raises(ValueError, match="seq 9 out of range"):
        led.entry(9)


def _tx(tx_id: str, key: str) -> PendingTx:
    return PendingTx(
        tx_id=tx_id,
        ts_ms=1,
        channel="ciphercare",
        chaincode="ciphercare",
        contract="kv",
        function="Put",
        args=(key, "v"),
        creator_msp="HospitalAMSP",
        creator_cert_sha256="00" * 32,
        result=b"",
        writes=((key, b"v"),),
        events=(("put", b"p"),),
    )


def test_failed_append_leaves_nothing_half_applied(tmp_path: Path) -> None:
    tlog = TransactionLog(tmp_path / "l.db", CheckpointSigner(tmp_path / "k.pem", ORIGIN))
    try:
        cp = tlog.append_batch([_tx("a" * 64, "x"), _tx("b" * 64, "y")])
        root = tlog.root()
        # The second tx reuses an existing id: the UNIQUE constraint fails mid-transaction.
        with pytest.raises(sqlite3.IntegrityError):
            tlog.append_batch([_tx("c" * 64, "z"), _tx("a" * 64, "w")])
        assert tlog.size() == 2 and tlog.root() == root and tlog.latest_checkpoint() == cp
        assert tlog.get_state("z") is None and tlog.history("z") == []
        assert tlog.committed_events(0, 10) and len(tlog.committed_events(0, 10)) == 2
        cp3 = tlog.append_batch([_tx("c" * 64, "z")])
        assert cp3.size == 3 and tlog.entry(2).tx_id == "c" * 64
        with pytest.raises(ValueError):
            tlog.append_batch([])
        assert tlog.checkpoint_sizes() == [0, 2, 3]
    finally:
        tlog.close()


def test_next_batch_returns_every_committed_event_at_once_then_blocks(make_ledger: MakeLedger) -> None:
    led = make_ledger(max_batch=64, max_wait_ms=1.0)
    for i in range(40):
        led.submit(ALICE, "kv", "Put", [f"k{i}", "v"])
    stream = led.events(3)
    batch = stream.next_batch(max_events=1000)
    assert [e.seq for e in batch] == list(range(3, 40))
    results: list[list[CommittedEvent]] = []
    reader = threading.Thread(target=lambda: results.append(stream.next_batch()))
    reader.start()
    time.sleep(0.2)
    assert reader.is_alive(), "next_batch returned without a new commit"
    led.submit(ALICE, "kv", "Put", ["late", "v"])
    reader.join(10)
    assert [e.seq for e in results[0]] == [40]
    stream.close()
    with pytest.raises(StopIteration):
        stream.next_batch()
