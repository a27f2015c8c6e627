"""A minimal world state (dict + per-key history) with a settable clock, driving the real chaincode.

The contracts run through the ledger's own ``WorldStateStub`` and the library's ``ContractChaincode``
dispatcher with real creator certificates from ``EmbeddedMSP``; only the storage is a dict, so tests can
move the transaction clock (expiry) and inspect the write set a refused transaction attempted.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ciphercare.consent.contracts import new_chaincode
from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.log import HistoryRecord
from ciphercare.ledger.embedded.msp import EmbeddedMSP
from ciphercare.ledger.embedded.runtime import WorldStateStub, endorse_error, new_tx_id, run_without_loop

BASE_MS = 1_750_000_000_000  # 2025-06-15T15:06:40Z


@dataclass(frozen=True)
class Receipt:
    tx_id: str
    result: bytes
    events: tuple[Any, ...]


class ClockedWorldState:
    """Each transaction advances the clock by ``step_ms``; ``advance(ms)`` jumps it."""

    def __init__(self, step_ms: int = 1000) -> None:
        self.state: dict[str, bytes] = {}
        self._history: dict[str, list[HistoryRecord]] = {}
        self._seq = itertools.count()
        self.now_ms = BASE_MS
        self.step_ms = step_ms
        self.msp = EmbeddedMSP()
        self.chaincode = new_chaincode()
        self.committed_events: list[tuple[str, bytes]] = []
        self.attempted_writes: tuple[tuple[str, bytes | None], ...] = ()

    def advance(self, ms: int) -> None:
        self.now_ms += ms

    def get(self, key: str) -> bytes | None:
        return self.state.get(key)

    def range(self, start: str, end: str) -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self.state.items() if k >= start and (not end or k < end))

    def history(self, key: str) -> list[HistoryRecord]:
        return list(reversed(self._history.get(key, [])))

    def _run(self, principal: Principal, contract: str, function: str, args: Sequence[str], read_only: bool) -> Receipt:
        identity = self.msp.identity(principal)
        tx_id = new_tx_id(identity)
        self.now_ms += self.step_ms
        stub = WorldStateStub(
            self, None, tx_id=tx_id, channel_id="ciphercare", chaincode_name="ciphercare",
            function=f"{contract}:{function}", params=list(args), identity=identity, ts_ms=self.now_ms,
            read_only=read_only,
        )
        response = run_without_loop(self.chaincode.invoke(stub))
        self.attempted_writes = stub.write_set()
        if response.status >= 400:
            raise endorse_error(tx_id, response.message)
        events = tuple(stub.get_events())
        if not read_only:
            seq = next(self._seq)
            for key, value in stub.write_set():
                if value is None:
                    self.state.pop(key, None)
                else:
                    self.state[key] = value
                self._history.setdefault(key, []).append(
                    HistoryRecord(seq=seq, tx_id=tx_id, ts_ms=self.now_ms, value=value, is_delete=value is None)
                )
            self.committed_events.extend((e.event_name, e.payload) for e in events)
        return Receipt(tx_id, bytes(response.payload), events)

    def evaluate(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> bytes:
        return self._run(principal, contract, function, args, True).result

    def submit(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> Receipt:
        return self._run(principal, contract, function, args, False)
