"""A read replica of the embedded ledger: ``evaluate`` only, over the writer's SQLite file (issue 16 item 2).

The writer process owns the ledger (its owner lock, the group-commit writer, the Merkle tree, the
checkpoint signer). Other server processes open the same SQLite file read-only and run the contracts'
evaluate transactions against its world state, exactly as the writer's own ``evaluate`` does: a fresh
read transaction per call, through the same chaincode runtime.

Never stale: the writer returns a receipt only after its batch's SQLite ``COMMIT`` has returned (WAL,
``synchronous=FULL``). A SQLite read transaction that begins after that sees the commit, so an evaluate
that starts after a revoke's receipt was returned reads the revoked record, in any process.

A replica cannot write: ``submit`` is refused with :class:`~ciphercare.ledger.api.LedgerError` (the
server's replicas forward every write RPC to the writer instead, see ``services/platform/replicas.py``).
"""

from __future__ import annotations

import concurrent.futures
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from fabric_chaincode_python.fabric_contract_api.contractapi import ContractChaincode

from ciphercare.ledger.api import EndorseError, EventStream, LedgerError, Principal, Receipt
from ciphercare.ledger.embedded.log import StateView
from ciphercare.ledger.embedded.msp import EmbeddedMSP
from ciphercare.ledger.embedded.runtime import ChaincodeRuntime, endorse_error, new_tx_id
from ciphercare.ledger.gateway import DEFAULT_CHANNEL, TransparencyLog


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


class ReplicaLedger:
    """Evaluate-only access to an embedded ledger another process writes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        chaincode: ContractChaincode | Callable[[], ContractChaincode],
        channel: str = DEFAULT_CHANNEL,
        chaincode_name: str = "ciphercare",
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise LedgerError(f"no ledger at {self.path}: start the writer process first")
        if not hasattr(chaincode, "invoke"):
            chaincode = chaincode()
        self._runtime = ChaincodeRuntime(chaincode, channel=channel, chaincode_name=chaincode_name, direct=True)
        # Evaluate identities are never recorded: the replica issues them from in-memory CAs and never touches
        # the writer's MSP directory (two processes creating one org's CA would race).
        self._msp = EmbeddedMSP(None)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise LedgerError("replica is closed")
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA query_only = ON")  # this process never writes the ledger
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def snapshot(self) -> Iterator[StateView]:
        """A read transaction on committed state (begun now: it sees every commit whose receipt went out)."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield StateView(conn)
        finally:
            conn.execute("COMMIT")

    def evaluate(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> bytes:
        """Run a read-only transaction against committed state (what ``EmbeddedLedger.evaluate`` does)."""
        identity = self._msp.identity(principal)
        tx_id = new_tx_id(identity)
        with self.snapshot() as view:
            res = self._runtime.execute(
                view, None, identity, contract, function, list(args), tx_id=tx_id, ts_ms=_now_ms(), read_only=True
            )
        if not res.ok:
            raise endorse_error(tx_id, res.message)
        return res.payload

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


class ReplicaTransport:
    """A :class:`~ciphercare.ledger.gateway.Transport` over a :class:`ReplicaLedger`: evaluate only."""

    def __init__(self, ledger: ReplicaLedger, channel: str = DEFAULT_CHANNEL) -> None:
        self.ledger = ledger
        self.channel = channel

    def _check_channel(self, channel: str) -> None:
        if channel != self.channel:
            raise EndorseError("", "NOT_FOUND", f"channel {channel[:64]!r} is not served by this ledger")

    async def evaluate(self, identity: Principal, channel: str, contract: str, function: str,
                       args: Sequence[str]) -> bytes:
        self._check_channel(channel)
        return self.ledger.evaluate(identity, contract, function, list(args))

    async def submit(self, identity: Principal, channel: str, contract: str, function: str,
                     args: Sequence[str]) -> concurrent.futures.Future[Receipt]:
        raise LedgerError("a read replica does not write the ledger; writes go to the writer process")

    def events(self, channel: str, start_seq: int, names: frozenset[str] | None) -> EventStream:
        raise LedgerError("a read replica does not serve ledger events")

    def transparency(self, channel: str) -> TransparencyLog:
        raise LedgerError("a read replica does not serve the transparency log")
