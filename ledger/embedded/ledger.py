"""The embedded ledger: Fabric-gateway-shaped ``evaluate`` / ``submit`` over the durable log.

``submit`` uses pipelined group commit with two threads:

* the executor (``ledger-writer``) takes proposals from the submission queue
  in order and executes them, each against committed state plus the writes
  of every earlier proposal still in the pipeline (the batch being committed
  and the earlier proposals of its own batch);
* the committer (``ledger-committer``) appends a batch's successful
  transactions with one fsync and only then resolves its futures.

While batch n is being appended and fsynced, batch n+1 accumulates and
executes, so contract execution overlaps the fsync.  A batch is handed over
when the committer is idle (after waiting at most ``max_wait_ms`` for more
proposals, handing it over after a 0.2 ms slice in which none arrived, or at once
when it holds ``max_batch``).  A receipt means the
transaction is durable; an endorsement failure is reported once the state
it was decided against is durable too.  Should batch n fail to commit, a
batch n+1 that read its writes is executed again against committed state
before it is appended.  ``pipeline=False`` gives the serial behaviour (a
batch executes only after the previous one is durable).

``evaluate`` runs on the caller's thread against a read snapshot of
committed state and never writes.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
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
from ciphercare.ledger.embedded.log import EncodedTx, HistoryRecord, PendingTx, StateView, TransactionLog, encode_tx
from ciphercare.ledger.embedded.msp import EmbeddedMSP, Identity
from ciphercare.ledger.embedded.runtime import (
    BatchOverlay,
    ChaincodeRuntime,
    ExecutionResult,
    StateReader,
    endorse_error,
    new_tx_id,
)
from ciphercare.ledger.transparency.checkpoint import CheckpointSigner
from ciphercare.ledger.witness.client import WitnessSubmitter, start_witnessing
from ciphercare.ledger.witness.policy import Policy

log = logging.getLogger(__name__)

_EVENT_CHUNK = 1024
#: While the committer is idle, a batch waits for more proposals in slices of this length (bounded by
#: ``max_wait_ms``) and is handed over after the first slice in which none arrived.
_LINGER_SLICE_S = 0.0002


class TxFuture(Future):  # type: ignore[type-arg]
    """A ``Future[Receipt]`` that knows its transaction id before it resolves."""

    def __init__(self, tx_id: str) -> None:
        super().__init__()
        self.tx_id = tx_id


def _now_ms() -> int:
    """The proposal timestamp (wall clock, milliseconds); a module function so tests can pin it."""
    return time.time_ns() // 1_000_000


class _Request:
    __slots__ = ("future", "identity", "contract", "function", "args", "ts_ms", "prepared")

    def __init__(
        self,
        future: TxFuture,
        identity: Identity,
        contract: str,
        function: str,
        args: tuple[str, ...],
        ts_ms: int,
        prepared: PreparedTransaction | None = None,
    ) -> None:
        self.future = future
        self.identity = identity
        self.contract = contract
        self.function = function
        self.args = args
        self.ts_ms = ts_ms
        # fabricgw: a transaction endorsed by the gateway node (ledger/gateway_server.py). The writer validates
        # its read set against the state it commits on (MVCC) and applies its endorsed writes instead of executing.
        self.prepared = prepared


class PreparedTransaction(Protocol):
    """An endorsed transaction the writer validates (MVCC) and commits without re-executing (fabricgw)."""

    def validate(self, view: StateView, overlay: BatchOverlay) -> ExecutionResult:
        """The endorsed result if its reads still hold; raise :class:`CommitError` (with a code) if not."""
        ...


class _FlatOverlay:
    """The pending writes a gateway-endorsed transaction is validated against: its batch's and, while that
    is not yet visible, those of the batch being committed (``values`` as ``BatchOverlay`` has it)."""

    __slots__ = ("values",)

    def __init__(self, values: Mapping[str, bytes | None]) -> None:
        self.values = values


def _mvcc_overlay(own: BatchOverlay) -> BatchOverlay | _FlatOverlay:
    if own.parent is None:
        return own
    maps: list[Mapping[str, bytes | None]] = []
    layer: BatchOverlay | None = own
    while layer is not None:
        maps.append(layer.values)
        layer = layer.parent
    return _FlatOverlay(collections.ChainMap(*maps))  # type: ignore[arg-type]


class _LazySnapshot:
    """A read snapshot of committed state, opened on the first read (``StateReader``)."""

    __slots__ = ("_log", "_stack", "_view")

    def __init__(self, tlog: TransactionLog, stack: contextlib.ExitStack) -> None:
        self._log = tlog
        self._stack = stack
        self._view: StateView | None = None

    def _open(self) -> StateView:
        if self._view is None:
            self._view = self._stack.enter_context(self._log.snapshot())
        return self._view

    def get(self, key: str) -> bytes | None:
        return self._open().get(key)

    def range(self, start: str, end: str) -> list[tuple[str, bytes]]:
        return self._open().range(start, end)

    def history(self, key: str) -> list[HistoryRecord]:
        return self._open().history(key)

    def version(self, key: str) -> int | None:
        return self._open().version(key)


class _Batch:
    """Proposals executed together and appended with one fsync."""

    __slots__ = (
        "requests", "results", "prepared", "own", "probe_tx", "read_from", "failed", "linger_until", "quiet_slices"
    )  # fmt: skip

    def __init__(self, linger_until: float) -> None:
        self.requests: list[_Request] = []
        self.results: list[ExecutionResult | CommitError] = []
        #: Per request: its leaf encoded ahead (None when the proposal was refused).
        self.prepared: list[PendingTx | EncodedTx | None] = []
        #: This batch's successful writes (its ``parent`` is set per round to the batch being committed).
        self.own = BatchOverlay()
        #: The first successful tx id: present in the store iff the batch committed.
        self.probe_tx: str | None = None
        #: The uncommitted batch some of these proposals read through, if any.
        self.read_from: _Batch | None = None
        self.failed = False
        self.linger_until = linger_until
        self.quiet_slices = 0


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
        pipeline: bool = True,
        direct_dispatch: bool = True,
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
            self.path,
            self._signer,
            channel=channel,
            chaincode=chaincode_name,
            retired_vkeys=retired_vkeys,
            published_path=published_path,
        )
        self._witnessing: WitnessSubmitter | None = None
        self._witness_wait = witness_wait_ms / 1000.0
        try:
            self._msp = EmbeddedMSP(msp_dir if msp_dir is not None else self.path.parent / "msp")
            self._runtime = ChaincodeRuntime(
                chaincode, channel=channel, chaincode_name=chaincode_name, direct=direct_dispatch
            )
            if witness_policy is not None and witness_policy.witnesses:
                self._witnessing = start_witnessing(
                    self._log, witness_policy, Path(cosigned_path) if cosigned_path else None, witness_timeout_s
                )
        except BaseException:
            self._log.close()
            raise
        self.channel = channel
        self.chaincode_name = chaincode_name
        self.pipeline = pipeline
        self.max_queue = max_queue
        # Submission queue and pipeline state, all under one lock.
        self._lock = threading.Lock()
        self._work_cv = threading.Condition(self._lock)  # the executor waits here
        self._space_cv = threading.Condition(self._lock)  # submitters wait here when the queue is full
        self._commit_job_cv = threading.Condition(self._lock)  # the committer waits here
        self._incoming: collections.deque[_Request] = collections.deque()
        self._space_waiters = 0
        self._in_commit: _Batch | None = None
        self._stopping = False
        self._executor_done = False
        self._commit_cond = threading.Condition()
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._state_lock = threading.Lock()
        self._closed = False
        self._batches = 0
        self._committed = 0
        self._writer = threading.Thread(target=self._executor_loop, name="ledger-writer", daemon=True)
        self._committer = threading.Thread(target=self._committer_loop, name="ledger-committer", daemon=True)
        self._committer.start()
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
        ts_ms = _now_ms()
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
        self._enqueue(_Request(fut, identity, contract, function, tuple(args), _now_ms()))
        return fut

    def _enqueue(self, req: _Request) -> None:
        with self._lock:
            while len(self._incoming) >= self.max_queue and not self._stopping:
                self._space_waiters += 1
                try:
                    self._space_cv.wait()
                finally:
                    self._space_waiters -= 1
            if self._stopping:
                raise LedgerError("ledger is closed")
            self._incoming.append(req)
            if len(self._incoming) == 1:
                self._work_cv.notify()

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
        self._enqueue(_Request(fut, identity, contract, function, tuple(args), ts_ms, prepared))
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

    def _executor_loop(self) -> None:
        cur: _Batch | None = None
        lock = self._lock
        while True:
            take: list[_Request] = []
            with lock:
                while True:
                    room = self.max_batch - (len(cur.requests) if cur is not None else 0)
                    idle = self._in_commit is None
                    if self._incoming and room > 0 and (idle or self.pipeline):
                        n = min(room, len(self._incoming))
                        pop = self._incoming.popleft
                        take = [pop() for _ in range(n)]
                        if self._space_waiters:
                            self._space_cv.notify_all()
                        break
                    if cur is not None and idle:
                        now = time.monotonic()
                        if (
                            room <= 0
                            or self._stopping
                            or now >= cur.linger_until
                            or not cur.requests
                            or cur.quiet_slices > 0
                        ):
                            if cur.requests:
                                self._in_commit = cur
                                self._commit_job_cv.notify()
                            cur = None
                            continue
                        # Linger for more proposals in short slices; one slice without any ends it.
                        self._work_cv.wait(min(_LINGER_SLICE_S, cur.linger_until - now))
                        if not self._incoming:
                            cur.quiet_slices += 1
                        continue
                    if cur is None and self._stopping and not self._incoming:
                        self._executor_done = True
                        self._commit_job_cv.notify()
                        return
                    self._work_cv.wait()
            if cur is None:
                cur = _Batch(time.monotonic() + self.max_wait)
            try:
                self._execute_round(cur, take)
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                log.exception("ledger executor failed on %d proposals", len(take))
                executed = set(map(id, cur.requests))
                for req in take:
                    if not req.future.done() and id(req) not in executed:
                        req.future.set_exception(CommitError(req.future.tx_id, f"ledger writer failed: {exc!r}"))
                if not isinstance(exc, Exception):
                    raise

    def _execute_round(self, batch: _Batch, take: list[_Request]) -> None:
        """Execute ``take`` into ``batch``, reading committed state + the batch being committed + earlier writes."""
        with self._lock:
            committing = self._in_commit
        with contextlib.ExitStack() as stack:
            view: StateReader
            parent = None
            if committing is not None and committing.probe_tx is not None:
                snapshot = stack.enter_context(self._log.snapshot())
                view = snapshot
                if not snapshot.has_entry(committing.probe_tx):
                    parent = committing.own
                    batch.read_from = committing
            else:
                # Nothing is being committed: every earlier batch is durable and visible to any snapshot
                # opened from now on, so the snapshot is opened only if a contract reads (each SQLite call
                # releases the GIL and waits to re-take it while the submitters run).
                view = _LazySnapshot(self._log, stack)
            own = batch.own
            own.parent = parent
            try:
                for req in take:
                    if not req.future.set_running_or_notify_cancel():
                        continue  # cancelled by the caller before execution
                    res = self._run_one(req, view, own)
                    batch.requests.append(req)
                    batch.results.append(res)
                    if isinstance(res, ExecutionResult) and res.ok:
                        own.apply(res.tx_id, req.ts_ms, res.writes)
                        if batch.probe_tx is None:
                            batch.probe_tx = res.tx_id
                        batch.prepared.append(self._prepare(req, res))
                    else:
                        batch.prepared.append(None)
            finally:
                own.parent = None

    def _run_one(self, req: _Request, view: StateReader, own: BatchOverlay) -> ExecutionResult | CommitError:
        """Execute one proposal, or MVCC-validate one the gateway node endorsed (fabricgw)."""
        if req.prepared is not None:  # endorsed by the gateway node: validate its reads, no re-execution
            try:
                return req.prepared.validate(view, _mvcc_overlay(own))  # type: ignore[arg-type]
            except CommitError as exc:
                return exc
        return self._runtime.execute(
            view,
            own,
            req.identity,
            req.contract,
            req.function,
            req.args,
            tx_id=req.future.tx_id,
            ts_ms=req.ts_ms,
            read_only=False,
        )

    def _reexecute(self, batch: _Batch) -> None:
        """Execute ``batch`` again against committed state (the batch it read from failed to commit)."""
        own = BatchOverlay()
        view = self._log.writer_view()
        results: list[ExecutionResult | CommitError] = []
        prepared: list[PendingTx | EncodedTx | None] = []
        probe = None
        for req in batch.requests:
            res = self._run_one(req, view, own)
            results.append(res)
            ok = isinstance(res, ExecutionResult) and res.ok
            prepared.append(self._prepare(req, res) if isinstance(res, ExecutionResult) and ok else None)
            if isinstance(res, ExecutionResult) and ok:
                own.apply(res.tx_id, req.ts_ms, res.writes)
                probe = probe or res.tx_id
        batch.results, batch.prepared, batch.own, batch.probe_tx, batch.read_from = results, prepared, own, probe, None

    def _prepare(self, req: _Request, res: ExecutionResult) -> PendingTx | EncodedTx:
        """The transaction to append, its leaf encoded now (off the committer's path) when it encodes."""
        tx = PendingTx(
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
        try:
            return encode_tx(tx)
        except ValueError:
            return tx  # append_batch encodes it again and fails the batch, as it always has

    def _committer_loop(self) -> None:
        lock = self._lock
        while True:
            with lock:
                while self._in_commit is None:
                    if self._executor_done:
                        return
                    self._commit_job_cv.wait()
                batch = self._in_commit
            try:
                self._commit(batch)
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                batch.failed = True
                log.exception("ledger committer failed on a batch of %d", len(batch.requests))
                for req in batch.requests:
                    if not req.future.done():
                        req.future.set_exception(CommitError(req.future.tx_id, f"ledger writer failed: {exc!r}"))
                if not isinstance(exc, Exception):
                    with lock:
                        self._in_commit = None
                        self._work_cv.notify()
                    raise
            with lock:
                self._in_commit = None
                self._work_cv.notify()

    def _commit(self, batch: _Batch) -> None:
        if batch.read_from is not None and batch.read_from.failed:
            self._reexecute(batch)
        accepted = [
            (req, res)
            for req, res in zip(batch.requests, batch.results, strict=True)
            if isinstance(res, ExecutionResult) and res.ok
        ]
        receipts: list[Receipt] = []
        if accepted:
            txs = [p for p in batch.prepared if p is not None]
            try:
                cp = self._log.append_batch(txs)
            except Exception as exc:
                batch.failed = True
                log.exception("ledger append of %d transactions failed", len(txs))
                for req, res in accepted:
                    req.future.set_exception(CommitError(res.tx_id, str(exc)))
                self._fail_endorsements(batch)
                return
            if self._witness_wait and self._witnessing is not None:  # integrity: bounded wait for the witness quorum
                self._witnessing.wait_cosigned(cp.size, self._witness_wait)
            base = cp.size - len(txs)
            self._batches += 1
            self._committed += len(txs)
            with self._commit_cond:
                self._commit_cond.notify_all()
            receipts = [
                Receipt(res.tx_id, base + i, cp, res.payload, res.events) for i, (_, res) in enumerate(accepted)
            ]
        for (req, _), receipt in zip(accepted, receipts, strict=True):
            req.future.set_result(receipt)
        self._fail_endorsements(batch)

    @staticmethod
    def _fail_endorsements(batch: _Batch) -> None:
        for req, res in zip(batch.requests, batch.results, strict=True):
            if isinstance(res, CommitError):  # a gateway-endorsed transaction failed MVCC validation
                req.future.set_exception(res)
            elif not res.ok:
                req.future.set_exception(endorse_error(res.tx_id, res.message))

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
        with self._lock:
            self._stopping = True
            self._work_cv.notify_all()
            self._space_cv.notify_all()
        self._writer.join()
        self._committer.join()
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
