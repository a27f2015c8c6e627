"""The pipelined writer: batch n+1 executes while batch n is appended and fsynced.

What must hold (and is checked here with the real SQLite log, real MSP certificates and the real
contracts): a read after a receipt sees the write; a batch executing during the previous batch's
commit sees that batch's writes (values, ranges, history: each write exactly once); a failed
endorsement in a pipelined batch touches nothing else; if the previous batch fails to commit, a
batch that read its writes is executed again against committed state; and the leaves are byte for
byte those of the serial writer with the library's own dispatcher on a fixed sequence.

To make batch n+1 execute during batch n's commit deterministically, the tests hold batch n's
``append_batch`` until a proposal of the next batch is running (a real append follows, or, for the
failure test, a disk error is raised before anything is written).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from testkit.ledger import ALICE, BOB, ORIGIN, kv_chaincode

from ciphercare.consent import canonical
from ciphercare.consent.contracts import new_chaincode
from ciphercare.ledger.api import CommitError, EndorseError, Principal, Receipt
from ciphercare.ledger.embedded import ledger as embedded
from ciphercare.ledger.embedded.ledger import EmbeddedLedger, TxFuture
from ciphercare.ledger.embedded.log import PendingTx

MakeLedger = Callable[..., EmbeddedLedger]


def _hold_first_append_until(led: EmbeddedLedger, running: Callable[[], bool], *, fail: bool = False) -> list[int]:
    """Make the ledger's first append wait until ``running()`` (a proposal of the next batch executes).

    Returns the list of appended batch sizes. With ``fail`` the held append raises a disk error
    instead of writing.
    """
    real = led._log.append_batch
    sizes: list[int] = []
    first = [True]

    def append_batch(txs: Sequence[PendingTx]) -> Any:
        if first[0]:
            first[0] = False
            deadline = time.monotonic() + 10
            while not running():
                if time.monotonic() > deadline:
                    raise AssertionError("the next batch did not execute while this one was committing")
                time.sleep(0.001)
            if fail:
                raise sqlite3.OperationalError("disk I/O error")
        sizes.append(len(txs))
        return real(txs)

    led._log.append_batch = append_batch  # type: ignore[method-assign]
    return sizes


def test_read_after_receipt_sees_the_write(make_ledger: MakeLedger) -> None:
    led = make_ledger(max_batch=16, max_wait_ms=0.5)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(40):
                r = led.submit(ALICE, "kv", "Put", [f"k{t}", str(i)])
                assert led.evaluate(BOB, "kv", "Get", [f"k{t}"]) == str(i).encode()
                assert led.get_state(f"k{t}") == str(i).encode()
                assert led.size() >= r.seq + 1 and led.entry(r.seq).tx_id == r.tx_id
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[0]
    assert led.stats()["committed"] == 240


def test_pipelined_batch_sees_the_committing_batch_exactly_once(make_ledger: MakeLedger) -> None:
    led = make_ledger(max_batch=64, max_wait_ms=0.0)
    later: list[TxFuture] = []
    sizes = _hold_first_append_until(led, lambda: bool(later) and later[0].running())
    f1 = led.submit_future(ALICE, "kv", "Append", ["s", "a"])
    while not f1.running():  # batch 1 is executing or committing
        time.sleep(0.001)
    time.sleep(0.02)  # batch 1 handed over: the next proposals form batch 2
    later.append(led.submit_future(ALICE, "kv", "Append", ["s", "b"]))
    later.append(led.submit_future(ALICE, "kv", "Scan", ["", ""]))
    later.append(led.submit_future(ALICE, "kv", "History", ["s"]))
    r1 = f1.result(10)
    r2, scan, hist = (f.result(10) for f in later)
    assert sizes == [1, 3], sizes  # two batches: batch 2 executed while batch 1 was held in its append
    assert r2.result == b"ab"  # saw batch 1's uncommitted write
    assert json.loads(scan.result) == [["s", "ab"]]  # batch 1 + the earlier Append of its own batch
    history = json.loads(hist.result)
    assert [h[1] for h in history] == ["ab", "a"] and [h[0] for h in history] == [r2.tx_id, r1.tx_id]
    assert led.get_state("s") == b"ab"
    assert (r1.seq, r2.seq, scan.seq, hist.seq) == (0, 1, 2, 3)


def test_failed_endorsement_in_a_pipelined_batch_affects_nothing_else(make_ledger: MakeLedger) -> None:
    led = make_ledger(max_batch=64, max_wait_ms=0.0)
    later: list[TxFuture] = []
    _hold_first_append_until(led, lambda: len(later) == 3 and later[2].running())
    f1 = led.submit_future(ALICE, "kv", "Put", ["x", "1"])
    while not f1.running():
        time.sleep(0.001)
    time.sleep(0.02)
    later.append(led.submit_future(ALICE, "kv", "Append", ["x", "2"]))
    later.append(led.submit_future(ALICE, "kv", "Fail", ["FAILED_PRECONDITION", "no"]))
    later.append(led.submit_future(ALICE, "kv", "Append", ["x", "3"]))
    assert f1.result(10).seq == 0
    a = later[0].result(10)
    with pytest.raises(EndorseError) as err:
        later[1].result(10)
    c = later[2].result(10)
    assert (err.value.code, err.value.message) == ("FAILED_PRECONDITION", "no")
    assert (a.result, c.result, a.seq, c.seq) == (b"12", b"123", 1, 2)
    assert led.size() == 3 and led.get_state("never") is None and led.get_state("x") == b"123"
    assert led.entry_by_tx_id(err.value.tx_id) is None


def test_a_batch_that_read_a_batch_which_failed_to_commit_is_executed_again(make_ledger: MakeLedger) -> None:
    led = make_ledger(max_batch=64, max_wait_ms=0.0)
    led.submit(ALICE, "kv", "Put", ["s", "0"])
    later: list[TxFuture] = []
    real = led._log.append_batch
    calls = [0]

    def append_batch(txs: Sequence[PendingTx]) -> Any:
        calls[0] += 1
        if calls[0] == 1:  # batch 1: wait until batch 2 runs on top of it, then fail like a disk would
            deadline = time.monotonic() + 10
            while not (later and later[0].running()):
                assert time.monotonic() < deadline, "batch 2 did not execute during batch 1's commit"
                time.sleep(0.001)
            raise sqlite3.OperationalError("disk I/O error")
        return real(txs)

    led._log.append_batch = append_batch  # type: ignore[method-assign]
    f1 = led.submit_future(ALICE, "kv", "Append", ["s", "a"])
    while not f1.running():
        time.sleep(0.001)
    time.sleep(0.02)
    later.append(led.submit_future(ALICE, "kv", "Append", ["s", "b"]))
    with pytest.raises(CommitError):
        f1.result(10)
    r2 = later[0].result(10)
    assert r2.result == b"0b"  # executed again against committed state, not on top of the lost "0a"
    assert led.get_state("s") == b"0b" and led.size() == 2 and r2.seq == 1
    assert led.entry(1).tx_id == r2.tx_id


# --- byte-identical leaves: pipelined + direct dispatch vs serial + the library's dispatcher -------------------

PATIENT = Principal("u-pat-1", "patients", frozenset({"patient"}), "portal", "pat-0001")
CLINICIAN = Principal("u-clin-a", "hospital-a", frozenset({"clinician"}), "ehr-a")
ADMIN = Principal("u-admin", "ciphercare", frozenset({"admin"}), "console")


@pytest.fixture
def deterministic_ids(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """Transaction ids sha256("tx-<n>") and timestamps 1.75e12 + n seconds; call the result to restart both."""
    counter = [itertools.count()]
    clock = [itertools.count()]

    def tx_id(identity: Any) -> str:
        return hashlib.sha256(f"tx-{next(counter[0])}".encode()).hexdigest()

    def now_ms() -> int:
        return 1_750_000_000_000 + 1000 * next(clock[0])

    def restart() -> None:
        counter[0] = itertools.count()
        clock[0] = itertools.count()

    monkeypatch.setattr(embedded, "new_tx_id", tx_id)
    monkeypatch.setattr(embedded, "_now_ms", now_ms)
    yield restart


def _grant(pid: str, org: str) -> str:
    return canonical.dumps(
        {
            "pid": pid,
            "grantee_org": org,
            "decision": "permit",
            "purposes": ["TREAT"],
            "data_classes": ["Observation"],
            "period": {"start": "2025-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"},
            "provisions": [],
            "document_sha256": hashlib.sha256(b"doc").hexdigest(),
            "evidence_sha256": hashlib.sha256(b"form").hexdigest(),
        }
    ).decode()


def _event(pid: str, outcome: str = "success") -> str:
    return canonical.dumps(
        {
            "type": "risk-scoring",
            "subtype": "score",
            "action": "E",
            "outcome": outcome,
            "outcome_desc": "",
            "purpose_of_use": "TREAT",
            "source": {"observer": "hospital-a/scoring-service"},  # a system of the clinician's own org
            "entity": {
                "pid": pid,
                "consent_id": None,
                "model_sha256": hashlib.sha256(b"model").hexdigest(),
                "data_classes": ["Observation"],
                "detail_sha256": None,
            },
        }
    ).decode()


def _fixed_sequence() -> list[tuple[Principal, str, str, list[str]]]:
    """Grants, a revoke of the first grant (tx 0), access events, refusals of several kinds."""
    first_consent = "cns-" + hashlib.sha256(b"tx-0").hexdigest()[:32]
    seq: list[tuple[Principal, str, str, list[str]]] = [
        (PATIENT, "consent", "Grant", [_grant("pat-0001", "hospital-a")]),
        (CLINICIAN, "consent", "Grant", [_grant("pat-0002", "hospital-a")]),
        (PATIENT, "consent", "Grant", [_grant("pat-0002", "hospital-a")]),  # PERMISSION_DENIED: not theirs
        (PATIENT, "consent", "Revoke", [first_consent, "patient-request"]),
        (PATIENT, "consent", "Revoke", [first_consent, "patient-request"]),  # FAILED_PRECONDITION: done already
        (PATIENT, "consent", "Grant", ["{not json"]),  # INVALID_ARGUMENT
        (PATIENT, "consent", "Grant", []),  # the dispatcher's "incorrect number of params"
        (PATIENT, "consent", "Nope", []),  # unknown function
    ]
    for i in range(40):
        seq.append((CLINICIAN, "accesslog", "Record", [_event(f"pat-{i % 5:04d}")]))
        if i % 7 == 3:
            seq.append((PATIENT, "accesslog", "Record", [_event("pat-0001")]))  # PERMISSION_DENIED
        if i % 9 == 4:
            seq.append((ADMIN, "consent", "Grant", [_grant(f"pat-{i:04d}", "hospital-b")]))
    return seq


def _run(led: EmbeddedLedger, sequence: Sequence[tuple[Principal, str, str, list[str]]]) -> list[tuple[str, Any]]:
    futures = [led.submit_future(p, c, f, a) for p, c, f, a in sequence]
    outcomes: list[tuple[str, Any]] = []
    for fut in futures:
        try:
            r: Receipt = fut.result(30)
            outcomes.append(("ok", (r.tx_id, r.seq, r.result, r.events)))
        except EndorseError as exc:
            outcomes.append(("refused", (exc.tx_id, exc.code, exc.message)))
    return outcomes


def test_leaves_are_byte_identical_to_the_serial_dispatcher_path(
    tmp_path: Path, deterministic_ids: Callable[[], None]
) -> None:
    sequence = _fixed_sequence()
    serial = EmbeddedLedger(
        tmp_path / "a" / "l.db", tmp_path / "a.key", ORIGIN, new_chaincode, max_batch=8,
        pipeline=False, direct_dispatch=False, msp_dir=tmp_path / "msp",
    )  # fmt: skip
    try:
        expected = _run(serial, sequence)
        leaves = [e.leaf for e in serial.entries(0, serial.size())]
        root = serial.root()
        fast = EmbeddedLedger(
            tmp_path / "b" / "l.db", tmp_path / "b.key", ORIGIN, new_chaincode, max_batch=8, max_wait_ms=0.0,
            msp_dir=tmp_path / "msp",
        )  # fmt: skip
        try:
            assert fast.pipeline and fast._runtime.direct is not None and len(fast._runtime.direct) > 0
            fast._msp = serial._msp  # the same creator certificates (they carry a random serial number)
            deterministic_ids()
            got = _run(fast, sequence)
            assert fast.stats()["batches"] > 1
            assert got == expected
            assert [e.leaf for e in fast.entries(0, fast.size())] == leaves
            assert fast.root() == root
        finally:
            fast.close()
    finally:
        serial.close()
    kinds = {o[1][1] for o in expected if o[0] == "refused"}
    assert {"PERMISSION_DENIED", "FAILED_PRECONDITION", "INVALID_ARGUMENT"} <= kinds, kinds
    assert sum(o[0] == "ok" for o in expected) > 40


def test_close_commits_everything_queued(tmp_path: Path) -> None:
    led = EmbeddedLedger(tmp_path / "l.db", tmp_path / "k.pem", ORIGIN, kv_chaincode, max_batch=4)
    futures = [led.submit_future(ALICE, "kv", "Put", [f"k{i}", "v"]) for i in range(50)]
    led.close()
    assert [f.result(0).seq for f in futures] == list(range(50))
    with pytest.raises(Exception, match="closed"):
        led.submit_future(ALICE, "kv", "Put", ["late", "v"])


def test_leaves_encoded_ahead_are_the_leaves_append_would_encode(tmp_path: Path) -> None:
    from ciphercare.ledger.embedded.log import EncodedTx, TransactionLog, encode_leaf, encode_tx
    from ciphercare.ledger.transparency.checkpoint import CheckpointSigner

    def tx(i: int) -> PendingTx:
        return PendingTx(f"{i:064x}", 1, "ch", "cc", "kv", "Put", (f"k{i}", "é\x00"), "M", "c" * 64, b"r",
                         ((f"k{i}", b"v"),), (("e", b"p"),))  # fmt: skip

    encoded = encode_tx(tx(1))
    assert encoded.leaf == encode_leaf(tx(1))
    with pytest.raises(TypeError):
        EncodedTx(tx(1), b"{}", b"\x00" * 32, object())  # only encode_tx makes them: leaf and fields always match
    with pytest.raises(AttributeError):
        encoded.leaf = b"{}"  # type: ignore[misc]
    logs = []
    for name, items in (("plain", [tx(1), tx(2)]), ("encoded", [encode_tx(tx(1)), tx(2)])):
        tlog = TransactionLog(tmp_path / f"{name}.db", CheckpointSigner(tmp_path / "k.pem", ORIGIN))
        tlog.append_batch(items)
        logs.append(([e.leaf for e in tlog.entries(0, 2)], tlog.root(), tlog.get_state("k1")))
        tlog.close()
    assert logs[0] == logs[1]


def test_gateway_endorsed_read_of_a_key_the_committing_batch_wrote_is_an_mvcc_conflict(
    make_ledger: MakeLedger,
) -> None:
    """A transaction endorsed by the gateway node (MVCC-validated, not executed) is checked against the
    writes of the batch still being committed, not only against committed state and its own batch."""
    from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
    from fabric_protos.peer import transaction_pb2

    from ciphercare.ledger.embedded.gateway_server import EndorsedTransaction, TransactionInvalid

    led = make_ledger(max_batch=64, max_wait_ms=0.0)
    first = led.submit(ALICE, "kv", "Put", ["s", "0"])  # s at version (seq) 0
    identity = led.msp.identity(ALICE)

    def endorsed(tx_id: str, read_version: int) -> EndorsedTransaction:
        kv = kv_rwset_pb2.KVRWSet(
            reads=[kv_rwset_pb2.KVRead(key="s", version=kv_rwset_pb2.Version(block_num=read_version))],
            writes=[kv_rwset_pb2.KVWrite(key="s", value=b"endorsed")],
        )
        return EndorsedTransaction(tx_id, b"", kv, ())

    later: list[TxFuture] = []
    _hold_first_append_until(led, lambda: bool(later) and later[0].running())
    f1 = led.submit_future(ALICE, "kv", "Append", ["s", "a"])  # batch 1 writes s; held in its append
    while not f1.running():
        time.sleep(0.001)
    time.sleep(0.02)
    stale = hashlib.sha256(b"stale").hexdigest()
    later.append(led.submit_prepared(identity, stale, 1, "kv", "Put", ["s", "x"], endorsed(stale, first.seq)))
    assert f1.result(10).result == b"0a"
    with pytest.raises(TransactionInvalid) as err:
        later[0].result(10)
    assert err.value.code == transaction_pb2.MVCC_READ_CONFLICT  # type: ignore[attr-defined]
    assert led.get_state("s") == b"0a" and led.entry_by_tx_id(stale) is None
    fresh = hashlib.sha256(b"fresh").hexdigest()
    r = led.submit_prepared(identity, fresh, 2, "kv", "Put", ["s", "y"], endorsed(fresh, f1.result(0).seq)).result(10)
    assert led.get_state("s") == b"endorsed" and r.seq == 2
