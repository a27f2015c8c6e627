"""Gateway-shaped handles over any ledger backend, after hyperledger/fabric-gateway.

``connect(identity, transport)`` -> :class:`Gateway` -> ``network(channel)`` -> :class:`Network` ->
``contract(name)`` -> :class:`Contract`, whose verbs are

* ``evaluate(function, *args)`` -- a read against committed state; never writes;
* ``submit(function, *args)`` -- endorse, order and commit; returns a :class:`~ciphercare.ledger.api.Receipt`
  once the transaction is durable;
* ``submit_async(function, *args)`` -- returns a :class:`SubmittedTransaction` once the transaction is
  endorsed and handed to ordering; its ``status()`` waits for the commit.

Every call has a deadline (:class:`GatewayOptions`, fabric-gateway's defaults) and every failure has a
type per stage carrying the transaction id: :class:`~ciphercare.ledger.api.EndorseError`,
:class:`SubmitError`, :class:`CommitStatusError` (``LedgerTimeout`` when the deadline passed) and
:class:`~ciphercare.ledger.api.CommitError`.

A :class:`Transport` carries proposals to a backend: the embedded ledger in process
(:mod:`ciphercare.ledger.embedded.transport`) or a Fabric Gateway endpoint. The transparency log
(checkpoints, proofs, entries) is an interface of its own (:class:`TransparencyLog`), served by the
network. Services hold contract handles made by the wiring and never reach past them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ciphercare.ledger.api import (
    Checkpoint,
    CommitError,
    ConsistencyProof,
    EventStream,
    InclusionProof,
    LedgerEntry,
    LedgerError,
    LedgerTimeout,
    Principal,
    Receipt,
)

#: The channel every ciphercare contract lives on (fabric-network/ defines it).
DEFAULT_CHANNEL = "ciphercare"


@dataclass(frozen=True)
class GatewayOptions:
    """Deadlines for each stage, in seconds; the defaults are fabric-gateway's."""

    evaluate_timeout_s: float = 5.0
    endorse_timeout_s: float = 15.0
    submit_timeout_s: float = 5.0
    commit_status_timeout_s: float = 60.0


@dataclass
class SubmitError(LedgerError):
    """The endorsed transaction could not be handed to ordering; it is not on the ledger."""

    tx_id: str
    message: str

    def __str__(self) -> str:
        return f"submit of {self.tx_id} failed: {self.message}"


# LedgerTimeout (the commit status was not known before the deadline) is the commit-status stage's error.
CommitStatusError = LedgerTimeout


@runtime_checkable
class TransparencyLog(Protocol):
    """The append-only log behind the ledger: RFC 9162 tree, signed checkpoints, proofs, entries."""

    def size(self) -> int: ...

    def checkpoint(self) -> Checkpoint:
        """The latest signed checkpoint."""
        ...

    def checkpoint_at(self, size: int) -> Checkpoint | None:
        """The signed checkpoint published for exactly ``size`` entries, if one was."""
        ...

    def inclusion_proof(self, seq: int, tree_size: int) -> InclusionProof: ...

    def consistency_proof(self, first_size: int, second_size: int) -> ConsistencyProof: ...

    def entry(self, seq: int) -> LedgerEntry: ...

    def entries(self, start: int, end: int) -> list[LedgerEntry]:
        """Entries ``start <= seq < end`` in order."""
        ...

    def verifier_key(self) -> str:
        """The checkpoint verifier key in signed-note format (``name+keyhash+key``)."""
        ...


class PendingCommit(Protocol):
    """A transaction handed to ordering: its id now, its receipt once committed."""

    tx_id: str

    def result(self, timeout: float | None = None) -> Receipt: ...


@runtime_checkable
class Transport(Protocol):
    """What carries proposals to a ledger backend (in process, or the Fabric Gateway protocol)."""

    async def evaluate(self, identity: Principal, channel: str, contract: str, function: str,
                       args: Sequence[str]) -> bytes:
        """Run a read-only transaction against committed state."""
        ...

    async def submit(self, identity: Principal, channel: str, contract: str, function: str,
                     args: Sequence[str]) -> concurrent.futures.Future[Receipt]:
        """Endorse and hand to ordering; the returned future resolves once the transaction is durable.

        The future carries the transaction id as ``tx_id``.
        """
        ...

    def events(self, channel: str, start_seq: int, names: frozenset[str] | None) -> EventStream:
        """Committed chaincode events with ``seq >= start_seq``, in order, then new ones as they commit."""
        ...

    def transparency(self, channel: str) -> TransparencyLog: ...


@dataclass(frozen=True)
class CommitStatus:
    """The outcome of a committed transaction."""

    tx_id: str
    receipt: Receipt

    @property
    def successful(self) -> bool:
        return True


class SubmittedTransaction:
    """A transaction handed to ordering by ``submit_async``; ``status()`` waits for its commit."""

    def __init__(self, future: concurrent.futures.Future[Receipt], tx_id: str, timeout_s: float) -> None:
        self._future = future
        self.tx_id = tx_id
        self._timeout_s = timeout_s

    async def status(self, timeout: float | None = None) -> CommitStatus:
        """Wait for the commit; raises CommitStatusError (LedgerTimeout) or CommitError with the tx id."""
        seconds = self._timeout_s if timeout is None else timeout
        try:
            receipt = await asyncio.wait_for(asyncio.wrap_future(self._future), seconds)
        except TimeoutError as exc:
            raise LedgerTimeout(self.tx_id, seconds) from exc
        return CommitStatus(self.tx_id, receipt)

    async def receipt(self, timeout: float | None = None) -> Receipt:
        return (await self.status(timeout)).receipt


class Contract:
    """One contract on one network, as one identity."""

    def __init__(self, network: Network, name: str) -> None:
        self.network = network
        self.name = name

    @property
    def _gateway(self) -> Gateway:
        return self.network.gateway

    async def evaluate(self, function: str, *args: str, timeout: float | None = None) -> bytes:
        """A read against committed state; never writes."""
        gateway = self._gateway
        seconds = gateway.options.evaluate_timeout_s if timeout is None else timeout
        call = gateway.transport.evaluate(gateway.identity, self.network.name, self.name, function, args)
        try:
            return await asyncio.wait_for(call, seconds)
        except TimeoutError as exc:
            raise LedgerTimeout("", seconds) from exc

    async def submit_async(self, function: str, *args: str) -> SubmittedTransaction:
        """Endorse and hand to ordering; raises EndorseError / SubmitError with the tx id."""
        gateway = self._gateway
        options = gateway.options
        call = gateway.transport.submit(gateway.identity, self.network.name, self.name, function, args)
        try:
            future = await asyncio.wait_for(call, options.endorse_timeout_s + options.submit_timeout_s)
        except TimeoutError as exc:
            raise LedgerTimeout("", options.endorse_timeout_s + options.submit_timeout_s) from exc
        return SubmittedTransaction(future, getattr(future, "tx_id", ""), options.commit_status_timeout_s)

    async def submit(self, function: str, *args: str, timeout: float | None = None) -> Receipt:
        """Endorse, order and commit; returns the receipt once the transaction is durable."""
        submitted = await self.submit_async(function, *args)
        return await submitted.receipt(timeout)


class Network:
    """One channel: its contracts, its committed events and its transparency log."""

    def __init__(self, gateway: Gateway, name: str) -> None:
        self.gateway = gateway
        self.name = name

    def contract(self, name: str) -> Contract:
        return Contract(self, name)

    def chaincode_events(self, start_seq: int = 0, names: frozenset[str] | None = None) -> EventStream:
        """Committed events from ``start_seq`` (a checkpoint kept by the caller) on, in order, without gaps."""
        return self.gateway.transport.events(self.name, start_seq, names)

    @property
    def transparency(self) -> TransparencyLog:
        return self.gateway.transport.transparency(self.name)


class Gateway:
    """A connection to a ledger as one identity."""

    def __init__(self, identity: Principal, transport: Transport, options: GatewayOptions) -> None:
        self.identity = identity
        self.transport = transport
        self.options = options

    def network(self, name: str = DEFAULT_CHANNEL) -> Network:
        return Network(self, name)


def connect(identity: Principal, transport: Transport, *, options: GatewayOptions | None = None) -> Gateway:
    """A gateway for ``identity`` over ``transport``; cheap (no I/O), so one per caller is fine."""
    return Gateway(identity, transport, options or GatewayOptions())


__all__ = [
    "DEFAULT_CHANNEL",
    "CommitError",
    "CommitStatus",
    "CommitStatusError",
    "Contract",
    "Gateway",
    "GatewayOptions",
    "Network",
    "SubmitError",
    "SubmittedTransaction",
    "TransparencyLog",
    "Transport",
    "connect",
]
