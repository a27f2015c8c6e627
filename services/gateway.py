"""Async access to the ledger for servicers: deadlines on every call, typed results."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ciphercare.consent import canonical
from ciphercare.ledger.api import Ledger, Principal, Receipt


class LedgerGateway:
    """Wraps a :class:`Ledger` for asyncio servicers.

    ``evaluate`` runs on the calling thread (the embedded ledger evaluates
    without an event loop and without blocking I/O beyond a SQLite read);
    ``submit`` waits for the group commit without blocking the event loop.
    """

    def __init__(self, ledger: Ledger, *, submit_timeout_s: float) -> None:
        self.ledger = ledger
        self.submit_timeout_s = submit_timeout_s

    def evaluate(self, principal: Principal, contract: str, function: str, *args: str) -> Any:
        return json.loads(self.ledger.evaluate(principal, contract, function, list(args)))

    async def submit(self, principal: Principal, contract: str, function: str, *args: str) -> Receipt:
        submit_future = getattr(self.ledger, "submit_future", None)
        if submit_future is not None:
            future = submit_future(principal, contract, function, list(args), timeout=self.submit_timeout_s)
            return await asyncio.wrap_future(future)
        return await asyncio.to_thread(
            self.ledger.submit, principal, contract, function, list(args), timeout=self.submit_timeout_s
        )

    @staticmethod
    def arg(value: Any) -> str:
        """A JSON argument in canonical form."""
        return canonical.dumps(value).decode("utf-8")

    @staticmethod
    def result(receipt: Receipt) -> Any:
        return json.loads(receipt.result)
