"""Contract handles for the services, made once by the wiring from the configured ledger transport.

A servicer asks for the contract it needs *as the caller*: ``handles.consent(principal)`` connects the
caller's ledger identity (:func:`ledger_principal`) through the transport and returns a
:class:`~ciphercare.ledger.gateway.Contract`, whose ``evaluate`` / ``submit`` / ``submit_async`` carry a
deadline each. Servicers never see the backend behind the handles: the embedded ledger in process today,
a ledger node or Fabric peers over the gateway protocol by configuration.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import grpc

from ciphercare.consent import canonical
from ciphercare.consent.contracts import ACCESSLOG_CONTRACT, CONSENT_CONTRACT
from ciphercare.consent.contracts.model_registry import MODEL_CONTRACT
from ciphercare.ledger.api import EventStream, Principal, Receipt
from ciphercare.ledger.gateway import (
    DEFAULT_CHANNEL,
    Contract,
    GatewayOptions,
    SubmittedTransaction,
    TransparencyLog,
    Transport,
    connect,
)
from ciphercare.services.platform import convert
from ciphercare.services.platform.errors import ServiceError
from ciphercare.v1 import common_pb2

if TYPE_CHECKING:
    from ciphercare.ledger.embedded.ledger import EmbeddedLedger
    from ciphercare.services.platform.telemetry import Tracing

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


class TracedContract(Contract):
    """A contract whose ``evaluate`` / ``submit`` / ``submit_async`` each make a span (tracing on).

    Attributes: the contract, the function and the transaction id; never the arguments (they carry pids).
    """

    def __init__(self, contract: Contract, tracing: Tracing) -> None:
        super().__init__(contract.network, contract.name)
        self._tracing = tracing

    def _attributes(self, function: str) -> dict[str, str]:
        return {"ledger.channel": self.network.name, "ledger.contract": self.name, "ledger.function": function}

    async def evaluate(self, function: str, *args: str, timeout: float | None = None) -> bytes:
        with self._tracing.span(f"ledger evaluate {self.name}.{function}", self._attributes(function), "CLIENT"):
            return await super().evaluate(function, *args, timeout=timeout)

    async def submit_async(self, function: str, *args: str) -> SubmittedTransaction:
        with self._tracing.span(f"ledger endorse {self.name}.{function}", self._attributes(function),
                                "CLIENT") as span:
            submitted = await super().submit_async(function, *args)
            span.set_attribute("ledger.tx_id", submitted.tx_id)
            return submitted

    async def submit(self, function: str, *args: str, timeout: float | None = None) -> Receipt:
        with self._tracing.span(f"ledger submit {self.name}.{function}", self._attributes(function),
                                "CLIENT") as span:
            receipt = await super().submit(function, *args, timeout=timeout)
            span.set_attribute("ledger.tx_id", receipt.tx_id)
            span.set_attribute("ledger.seq", receipt.seq)
            return receipt


class ContractHandles:
    """Makes contract handles for callers; the one door from the services to the ledger."""

    def __init__(self, transport: Transport, options: GatewayOptions, channel: str = DEFAULT_CHANNEL,
                 tracing: Tracing | None = None) -> None:
        self.transport = transport
        self.options = options
        self.channel = channel
        self.tracing = tracing

    def contract(self, principal: Principal, name: str) -> Contract:
        gateway = connect(ledger_principal(principal), self.transport, options=self.options)
        contract = gateway.network(self.channel).contract(name)
        return contract if self.tracing is None else TracedContract(contract, self.tracing)

    def consent(self, principal: Principal) -> Contract:
        return self.contract(principal, CONSENT_CONTRACT)

    def accesslog(self, principal: Principal) -> Contract:
        return self.contract(principal, ACCESSLOG_CONTRACT)

    def model(self, principal: Principal) -> Contract:
        return self.contract(principal, MODEL_CONTRACT)

    @property
    def transparency(self) -> TransparencyLog:
        return self.transport.transparency(self.channel)

    def events(self, start_seq: int, names: frozenset[str] | None = None) -> EventStream:
        return self.transport.events(self.channel, start_seq, names)

    def write_receipt(self, receipt: Receipt) -> common_pb2.LedgerReceipt:
        """The verifiable receipt of a write: tx id, leaf index, leaf bytes, the inclusion proof of the leaf
        and the signed checkpoint (of the commit) it leads to."""
        log = self.transparency
        checkpoint = receipt.checkpoint
        if checkpoint.size <= receipt.seq:  # the commit's checkpoint always covers it; never trust that blindly
            checkpoint = log.checkpoint()
        proof = log.inclusion_proof(receipt.seq, checkpoint.size)
        message = convert.receipt_to_proto(replace(receipt, checkpoint=checkpoint))
        message.leaf = log.entry(receipt.seq).leaf
        message.inclusion_proof.extend(proof.hashes)
        return message

    @staticmethod
    def arg(value: Any) -> str:
        """A JSON argument in canonical form."""
        return canonical.dumps(value).decode("utf-8")

    @staticmethod
    def result(receipt: Receipt) -> Any:
        return json.loads(receipt.result)


async def evaluate_json(contract: Contract, function: str, *args: str) -> Any:
    """``contract.evaluate`` decoded from the contracts' JSON."""
    return json.loads(await contract.evaluate(function, *args))


def embedded_handles(ledger: EmbeddedLedger, options: GatewayOptions | None = None) -> ContractHandles:
    """Handles over an embedded ledger opened in this process (the server's wiring and operator commands)."""
    from ciphercare.ledger.embedded.transport import EmbeddedTransport

    return ContractHandles(EmbeddedTransport(ledger), options or GatewayOptions())
