"""The embedded ledger: Fabric-gateway-shaped ``evaluate`` / ``submit`` over the durable log.

``submit`` uses group commit: one writer thread drains the submission queue
(up to ``max_batch`` proposals, waiting at most ``max_wait_ms`` for more once
it holds one), executes them in order against committed state plus the
writes of earlier proposals of the same batch, appends the successful ones
with one fsync, and only then resolves their futures.  A receipt therefore
means the transaction is durable.  ``evaluate`` runs on the caller's thread
against a read snapshot of committed state and never writes.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fabric_chaincode_python.fabric_contract_api.contractapi import ContractChaincode

from ciphercare.ledger.api import (
    Checkpoint,
    CommitError,
    CommittedEvent,
    ConsistencyProof,
    InclusionProof,
    LedgerEntry,
    LedgerError,
    LedgerTimeout,
    Principal,
    Receipt,
)
from ciphercare.ledger.embedded.log import PendingTx, StateView, TransactionLog
from ciphercare.ledger.embedded.msp import EmbeddedMSP, Identity
from ciphercare.ledger.embedded.runtime import BatchOverlay, ChaincodeRuntime, ExecutionResult, endorse_error, new_tx_id
from ciphercare.ledger.transparency.checkpoint import CheckpointSigner
from ciphercare.ledger.witness.client import WitnessSubmitter, start_witnessing
from ciphercare.ledger.witness.policy import Policy

log = logging.getLogger(__name__)

_EVENT_CHUNK = 1024


class TxFuture(Future):  # type: ignore[type-arg]
    """A ``Future[Receipt]`` that knows its transaction id before it resolves."""

    def __init__(self, tx_id: str) -> None:
        super().__init__()
        self.tx_id = tx_id


@dataclass(frozen=True)
class _Request:
    future: TxFuture
    identity: Identity
    contract: str
    function: str
    args: tuple[str, ...]
    ts_ms: int
    # fabricgw: a transaction endorsed by the gateway node (ledger/gateway_server.py). The writer validates
    # its read set against the state it commits on (MVCC) and applies its endorsed writes instead of executing.
    prepared: PreparedTransaction | None = None


class PreparedTransaction(Protocol):
    """An endorsed transaction the writer validates (MVCC) and commits without re-executing (fabricgw)."""

    def validate(self, view: StateView, overlay: BatchOverlay) -> ExecutionResult:
        """The endorsed result if its reads still hold; raise :class:`CommitError` (with a code) if not."""
        ...


_STOP = object()


class EventStream:
    """Committed events in ledger order: replays the store, then follows new commits.

    Iterating blocks until the next event; :meth:`close` (from any thread)
    ends the iteration.  Events are read by seq range up to the published
    size, so none is skipped or repeated.
    """

    def __init__(self, ledger: EmbeddedLedger, start_seq: int, names: frozenset[str] | None) -> None:
        self._ledger = ledger
        self._next_seq = start_seq
        self._names = names
        self._buffer: collections.deque[CommittedEvent] = collections.deque()
        self._closed = False

    def __iter__(self) -> Iterator[CommittedEvent]:
        return self

    def __next__(self) -> CommittedEvent:
        ledger = self._ledger
        while True:
            if self._closed or ledger._closed:
                raise StopIteration
            if self._buffer:
                return self._buffer.popleft()
            size = ledger.size()
            if self._next_seq < size:
                end = min(size, self._next_seq + _EVENT_CHUNK)
                self._buffer.extend(ledger._log.committed_events(self._next_seq, end, self._names))
                self._next_seq = end
                continue
            with ledger._commit_cond:
                while not self._closed and ledger.size() <= self._next_seq:
                    ledger._commit_cond.wait(timeout=1.0)

    def next_batch(self, max_events: int = 1024) -> list[CommittedEvent]:
        """Block for the next event, then return it with every further one already committed.

        Lets a follower apply a burst of commits in one off-chain transaction instead of one
        each. Raises ``StopIteration`` when the stream is closed.
        """
        ledger = self._ledger
        batch = [next(self)]
        while len(batch) < max_events:
            if self._buffer:
                batch.append(self._buffer.popleft())
                continue
            size = ledger.size()
            if self._next_seq >= size or self._closed:
                break
            end = min(size, self._next_seq + _EVENT_CHUNK)
            self._buffer.extend(ledger._log.committed_events(self._next_seq, end, self._names))
            self._next_seq = end
        return batch

    @property
    def next_seq(self) -> int:
        """The first seq whose events have not been read from the store yet."""
        return self._next_seq

    def close(self) -> None:
        """End the stream; a blocked ``next()`` returns promptly."""
        self._closed = True
        with self._ledger._commit_cond:
            self._ledger._commit_cond.notify_all()


ChaincodeFactory = Callable[[], ContractChaincode]


class EmbeddedLedger:
    """An in-process verifiable ledger implementing :class:`ciphercare.ledger.api.Ledger`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        signing_key_path: str | os.PathLike[str],
        origin: str,
        chaincode: ContractChaincode | ChaincodeFactory,
        channel: str = "ciphercare",
        chaincode_name: str = "ciphercare",
        max_batch: int = 256,
        max_wait_ms: float = 2.0,
        *,
        key_name: str | None = None,
        msp_dir: str | os.PathLike[str] | None = None,
        max_queue: int = 65536,
        retired_vkeys: Sequence[str] = (),
        published_path: str | os.PathLike[str] | None = None,
        strict_key_mode: bool = False,
        witness_policy: Policy | None = None,
        witness_timeout_s: float = 5.0,
        witness_wait_ms: float = 0.0,
        cosigned_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if not hasattr(chaincode, "invoke"):
            if not callable(chaincode):
                raise TypeError("chaincode must be a ContractChaincode or a factory returning one")
            chaincode = chaincode()
        self.path = Path(path)
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._signer = CheckpointSigner(signing_key_path, origin, key_name, strict_mode=strict_key_mode)
        # Integrity (issue 11): the start-up check against the published-checkpoint file runs in TransactionLog.
        self._log = TransactionLog(
            self.path, self._signer, channel=channel, chaincode=chaincode_name,
            retired_vkeys=retired_vkeys, published_path=published_path,
        )
        self._witnessing: WitnessSubmitter | None = None
        self._witness_wait = witness_wait_ms / 1000.0
        try:
            self._msp = EmbeddedMSP(msp_dir if msp_dir is not None else self.path.parent / "msp")
            self._runtime = ChaincodeRuntime(chaincode, channel=channel, chaincode_name=chaincode_name)
            if witness_policy is not None and witness_policy.witnesses:
                self._witnessing = start_witnessing(
                    self._log, witness_policy, Path(cosigned_path) if cosigned_path else None, witness_timeout_s)
        except BaseException:
            self._log.close()
            raise
        self.channel = channel
        self.chaincode_name = chaincode_name
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._commit_cond = threading.Condition()
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._state_lock = threading.Lock()
        self._closed = False
        self._batches = 0
        self._committed = 0
        self._writer = threading.Thread(target=self._writer_loop, name="ledger-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ identity

    @property
    def msp(self) -> EmbeddedMSP:
        """The embedded MSP that issues creator certificates."""
        return self._msp

    def public_key_vkey(self) -> str:
        """The checkpoint verifier key (``<name>+<hash>+<key>``) for offline verifiers."""
        return self._signer.vkey

    # ------------------------------------------------------------------ evaluate

    def evaluate(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> bytes:
        """Run a read-only transaction against committed state on the calling thread."""
        self._check_open()
        identity = self._msp.identity(principal)
        tx_id = new_tx_id(identity)
        ts_ms = time.time_ns() // 1_000_000
        with self._log.snapshot() as view:
            res = self._runtime.execute(
                view, None, identity, contract, function, list(args), tx_id=tx_id, ts_ms=ts_ms, read_only=True
            )
        if not res.ok:
            raise endorse_error(tx_id, res.message)
        return res.payload

    # ------------------------------------------------------------------ submit

    def submit_future(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> TxFuture:
        """Queue a transaction; the future resolves to a :class:`Receipt` once durable.

        It fails with :class:`EndorseError` when the contract rejects the
        proposal and :class:`CommitError` when the append fails.
        """
        self._check_open()
        identity = self._msp.identity(principal)
        fut = TxFuture(new_tx_id(identity))
        req = _Request(fut, identity, contract, function, tuple(args), time.time_ns() // 1_000_000)
        self._queue.put(req)
        return fut

    # fabricgw: hooks for the gateway node (ledger/gateway_server.py) ------------------

    @property
    def runtime(self) -> ChaincodeRuntime:
        """The chaincode runtime (the gateway node simulates proposals with it)."""
        return self._runtime

    def snapshot(self) -> contextlib.AbstractContextManager[StateView]:
        """A read snapshot of committed state (``with ledger.snapshot() as view``)."""
        return self._log.snapshot()

    def submit_prepared(
        self,
        identity: Identity,
        tx_id: str,
        ts_ms: int,
        contract: str,
        function: str,
        args: Sequence[str],
        prepared: PreparedTransaction,
    ) -> TxFuture:
        """Queue an endorsed transaction; the writer validates its reads and commits its endorsed writes."""
        self._check_open()
        fut = TxFuture(tx_id)
        self._queue.put(_Request(fut, identity, contract, function, tuple(args), ts_ms, prepared))
        return fut

    def submit(
        self,
        principal: Principal,
        contract: str,
        function: str,
        args: Sequence[str],
        *,
        timeout: float = 10.0,
    ) -> Receipt:
        """Endorse, order and commit a transaction; returns once it is durable."""
        fut = self.submit_future(principal, contract, function, args)
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout as exc:
            raise LedgerTimeout(fut.tx_id, timeout) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError("ledger is closed")

    # ------------------------------------------------------------------ writer

    def _writer_loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Request] = [first]  # type: ignore[list-item]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            try:
                self._process(batch)
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                log.exception("ledger writer failed on a batch of %d", len(batch))
                for req in batch:
                    if not req.future.done():
                        req.future.set_exception(CommitError(req.future.tx_id, f"ledger writer failed: {exc!r}"))
                if not isinstance(exc, Exception):
                    raise
        # Fail anything that raced past close().
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                req = item  # type: ignore[assignment]
                if req.future.set_running_or_notify_cancel():  # type: ignore[attr-defined]
                    req.future.set_exception(LedgerError("ledger is closed"))  # type: ignore[attr-defined]

    def _process(self, batch: list[_Request]) -> None:
        overlay = BatchOverlay()
        view = self._log.writer_view()
        accepted = []
        for req in batch:
            if not req.future.set_running_or_notify_cancel():
                continue  # cancelled by the caller before execution
            if req.prepared is not None:  # fabricgw: endorsed by the gateway node; MVCC-validate, no re-execution
                try:
                    res = req.prepared.validate(view, overlay)
                except CommitError as exc:
                    req.future.set_exception(exc)
                    continue
                overlay.apply(res.tx_id, req.ts_ms, res.writes)
                accepted.append((req, res))
                continue
            res = self._runtime.execute(
                view,
                overlay,
                req.identity,
                req.contract,
                req.function,
                req.args,
                tx_id=req.future.tx_id,
                ts_ms=req.ts_ms,
                read_only=False,
            )
            if not res.ok:
                req.future.set_exception(endorse_error(res.tx_id, res.message))
                continue
            overlay.apply(res.tx_id, req.ts_ms, res.writes)
            accepted.append((req, res))
        if not accepted:
            return
        txs = [
            PendingTx(
                tx_id=res.tx_id,
                ts_ms=req.ts_ms,
                channel=self.channel,
                chaincode=self.chaincode_name,
                contract=req.contract,
                function=req.function,
                args=req.args,
                creator_msp=req.identity.mspid,
                creator_cert_sha256=req.identity.cert_sha256,
                result=res.payload,
                writes=res.writes,
                events=tuple((e.name, e.payload) for e in res.events),
            )
            for req, res in accepted
        ]
        try:
            cp = self._log.append_batch(txs)
        except Exception as exc:
            log.exception("ledger append of %d transactions failed", len(txs))
            for req, res in accepted:
                req.future.set_exception(CommitError(res.tx_id, str(exc)))
            return
        if self._witness_wait and self._witnessing is not None:  # integrity: bounded wait for the witness quorum
            self._witnessing.wait_cosigned(cp.size, self._witness_wait)
        base = cp.size - len(txs)
        self._batches += 1
        self._committed += len(txs)
        with self._commit_cond:
            self._commit_cond.notify_all()
        for i, (req, res) in enumerate(accepted):
            req.future.set_result(Receipt(res.tx_id, base + i, cp, res.payload, res.events))

    # ------------------------------------------------------------------ events

    def events(self, start_seq: int = 0, names: frozenset[str] | None = None) -> EventStream:
        """Committed events with ``seq >= start_seq`` in order, then new ones as they commit."""
        if start_seq < 0:
            raise ValueError(f"start_seq must be >= 0, got {start_seq}")
        self._check_open()
        stream = EventStream(self, start_seq, frozenset(names) if names is not None else None)
        self._streams.add(stream)
        return stream

    def wait_for_size(self, size: int, timeout: float | None = None) -> bool:
        """Block until the ledger has at least ``size`` entries; False on timeout or close."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._commit_cond:
            while self._log.size() < size:
                if self._closed:
                    return False
                remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                self._commit_cond.wait(timeout=remaining)
        return True

    # ------------------------------------------------------------------ reads and proofs

    def size(self) -> int:
        """Number of committed entries."""
        return self._log.size()

    def checkpoint(self) -> Checkpoint:
        """The latest signed checkpoint."""
        return self._log.latest_checkpoint()

    def checkpoint_at(self, size: int) -> Checkpoint | None:
        """The stored checkpoint for exactly ``size`` entries, or None if no batch ended there."""
        return self._log.checkpoint_at(size)

    def cosigned_checkpoint(self) -> tuple[Checkpoint, bytes] | None:
        """The newest checkpoint cosigned by the witness quorum and its note with the cosignature lines."""
        return None if self._witnessing is None else self._witnessing.latest_cosigned()

    @property
    def witnessing(self) -> WitnessSubmitter | None:
        """The background witness submitter (None without a witness policy)."""
        return self._witnessing

    def entry(self, seq: int) -> LedgerEntry:
        """Committed entry ``seq``."""
        return self._log.entry(seq)

    def entries(self, start: int, end: int) -> list[LedgerEntry]:
        """Committed entries ``start <= seq < end``."""
        return self._log.entries(start, end)

    def entry_by_tx_id(self, tx_id: str) -> LedgerEntry | None:
        """The committed entry with this transaction id, if any."""
        return self._log.entry_by_tx_id(tx_id)

    def leaf_hash(self, seq: int) -> bytes:
        """The Merkle leaf hash of entry ``seq``."""
        return self._log.leaf_hash(seq)

    def root(self, size: int | None = None) -> bytes:
        """The Merkle root at ``size`` (default current)."""
        return self._log.root(size)

    def inclusion_proof(self, seq: int, tree_size: int) -> InclusionProof:
        """RFC 9162 inclusion proof; needs ``0 <= seq < tree_size <= size()``."""
        return self._log.inclusion_proof(seq, tree_size)

    def consistency_proof(self, first_size: int, second_size: int) -> ConsistencyProof:
        """RFC 9162 consistency proof; needs ``1 <= first_size <= second_size <= size()``."""
        return self._log.consistency_proof(first_size, second_size)

    def get_state(self, key: str) -> bytes | None:
        """Committed world-state value (for operators and tests; contracts use the stub)."""
        return self._log.get_state(key)

    def stats(self) -> dict[str, int]:
        """Counters: committed batches and transactions since open, current size."""
        return {"batches": self._batches, "committed": self._committed, "size": self._log.size()}

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """Commit everything already queued, stop the writer, end event streams and close the store."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        for stream in list(self._streams):
            stream.close()
        with self._commit_cond:
            self._commit_cond.notify_all()
        if self._witnessing is not None:
            self._witnessing.close()
        self._log.close()

    def __enter__(self) -> EmbeddedLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
