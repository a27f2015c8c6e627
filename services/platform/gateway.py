"""Async access to the ledger for servicers: deadlines on every call, typed results."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import grpc

from ciphercare.consent import canonical
from ciphercare.ledger.api import Ledger, LedgerTimeout, Principal, Receipt
from ciphercare.services.platform.errors import ServiceError

PATIENTS_ORG = "patients"


def ledger_principal(principal: Principal) -> Principal:
    """The identity a caller transacts under on the ledger.

    Every Fabric identity belongs to an organisation's MSP. Patients carry no
    organisation claim; they transact through the consortium's patient-portal
    organisation. Any other role without an organisation is refused.
    """
    if principal.org:
        return principal
    if principal.roles and principal.roles <= {"patient"}:
        return replace(principal, org=PATIENTS_ORG)
    raise ServiceError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"a token with role(s) {sorted(principal.roles)} must carry an organisation claim",
    )


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
        principal = ledger_principal(principal)
        return json.loads(self.ledger.evaluate(principal, contract, function, list(args)))

    async def submit(self, principal: Principal, contract: str, function: str, *args: str) -> Receipt:
        principal = ledger_principal(principal)
        submit_future = getattr(self.ledger, "submit_future", None)
        if submit_future is not None:
            future = submit_future(principal, contract, function, list(args))
            try:
                return await asyncio.wait_for(asyncio.wrap_future(future), self.submit_timeout_s)
            except TimeoutError as exc:
                raise LedgerTimeout(getattr(future, "tx_id", ""), self.submit_timeout_s) from exc
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
