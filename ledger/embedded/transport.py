"""The embedded ledger as a :class:`~ciphercare.ledger.gateway.Transport`: proposals carried in process.

One embedded ledger serves one channel (``DEFAULT_CHANNEL``); a proposal for another channel is refused
the way a peer refuses a channel it has not joined. Evaluation runs inline on the caller's thread: it is a
read of committed state through a SQLite snapshot, bounded by the database's busy timeout, with no network.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence

from ciphercare.ledger.api import (
    Checkpoint,
    ConsistencyProof,
    EndorseError,
    EventStream,
    InclusionProof,
    LedgerEntry,
    Principal,
    Receipt,
)
from ciphercare.ledger.embedded.ledger import EmbeddedLedger
from ciphercare.ledger.gateway import DEFAULT_CHANNEL, TransparencyLog


class EmbeddedTransparencyLog:
    """The embedded ledger's RFC 9162 log, seen through the :class:`TransparencyLog` interface."""

    def __init__(self, ledger: EmbeddedLedger) -> None:
        self._ledger = ledger

    def size(self) -> int:
        return self._ledger.size()

    def checkpoint(self) -> Checkpoint:
        return self._ledger.checkpoint()

    def checkpoint_at(self, size: int) -> Checkpoint | None:
        return self._ledger.checkpoint_at(size)

    def inclusion_proof(self, seq: int, tree_size: int) -> InclusionProof:
        return self._ledger.inclusion_proof(seq, tree_size)

    def consistency_proof(self, first_size: int, second_size: int) -> ConsistencyProof:
        return self._ledger.consistency_proof(first_size, second_size)

    def entry(self, seq: int) -> LedgerEntry:
        return self._ledger.entry(seq)

    def entries(self, start: int, end: int) -> list[LedgerEntry]:
        return self._ledger.entries(start, end)

    def verifier_key(self) -> str:
        return self._ledger.public_key_vkey()

    def cosigned_checkpoint(self) -> tuple[Checkpoint, bytes] | None:
        """Ledger integrity (issue 11): the newest witness-quorum-cosigned checkpoint and its note with the
        cosignature lines, or None (no witnesses, or none cosigned yet)."""
        return self._ledger.cosigned_checkpoint()


class EmbeddedTransport:
    """Carries gateway calls to an :class:`EmbeddedLedger` in the same process."""

    def __init__(self, ledger: EmbeddedLedger, channel: str = DEFAULT_CHANNEL) -> None:
        self.ledger = ledger
        self.channel = channel
        self._transparency = EmbeddedTransparencyLog(ledger)

    def _check_channel(self, channel: str) -> None:
        if channel != self.channel:
            raise EndorseError("", "NOT_FOUND", f"channel {channel[:64]!r} is not served by this ledger")

    async def evaluate(self, identity: Principal, channel: str, contract: str, function: str,
                       args: Sequence[str]) -> bytes:
        self._check_channel(channel)
        return self.ledger.evaluate(identity, contract, function, list(args))

    async def submit(self, identity: Principal, channel: str, contract: str, function: str,
                     args: Sequence[str]) -> concurrent.futures.Future[Receipt]:
        self._check_channel(channel)
        return self.ledger.submit_future(identity, contract, function, list(args))

    def events(self, channel: str, start_seq: int, names: frozenset[str] | None) -> EventStream:
        self._check_channel(channel)
        return self.ledger.events(start_seq, names)

    def transparency(self, channel: str) -> TransparencyLog:
        self._check_channel(channel)
        return self._transparency
