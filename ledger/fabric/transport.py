"""The Fabric Gateway client as a :class:`ciphercare.ledger.gateway.Transport`.

``ContractHandles(FabricTransport(ledger), options)`` gives services the same handles as the
embedded transport, carried over ``gateway.proto`` to a Fabric peer or ``ciphercare ledger serve``.
Calls run on the :class:`~ciphercare.ledger.fabric.ledger.FabricLedger`'s own event loop thread and
are awaited from the caller's loop without blocking it. The transparency log is the node's, read
through signed calls and verified (signed checkpoints, inclusion proofs).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence

from ciphercare.ledger.api import EventStream, Principal, Receipt
from ciphercare.ledger.fabric.ledger import FabricLedger
from ciphercare.ledger.gateway import TransparencyLog


class FabricTransport:
    """Carries gateway calls to a remote Fabric Gateway endpoint."""

    def __init__(self, ledger: FabricLedger) -> None:
        self.ledger = ledger

    async def evaluate(
        self, identity: Principal, channel: str, contract: str, function: str, args: Sequence[str]
    ) -> bytes:
        return await self.ledger.evaluate_async(identity, channel, contract, function, args)

    async def submit(
        self, identity: Principal, channel: str, contract: str, function: str, args: Sequence[str]
    ) -> concurrent.futures.Future[Receipt]:
        return await self.ledger.submit_async(identity, channel, contract, function, args)

    def events(self, channel: str, start_seq: int, names: frozenset[str] | None) -> EventStream:
        return self.ledger.events(start_seq, names)

    def transparency(self, channel: str) -> TransparencyLog:
        return self.ledger
