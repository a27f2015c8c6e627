"""Transaction proposals built exactly as Fabric defines them (``protoutil`` / the official clients).

::

    SignedProposal{proposal_bytes, signature = sign(proposal_bytes)}
    Proposal{header: Header, payload: ChaincodeProposalPayload}
    Header{channel_header: ChannelHeader{type ENDORSER_TRANSACTION, channel_id, tx_id, timestamp, epoch 0,
                                         extension: ChaincodeHeaderExtension{chaincode_id{name}}},
           signature_header: SignatureHeader{creator: SerializedIdentity, nonce: 24 random bytes}}
    ChaincodeProposalPayload{input: ChaincodeInvocationSpec{chaincode_spec{type NODE, chaincode_id{name},
                             input: ChaincodeInput{args: ["Contract:Function", arg...]}}}, TransientMap}
    tx_id = hex(SHA-256(nonce || creator))
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2, proposal_response_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from ciphercare.ledger.fabric.errors import EndorseError, wrap

if TYPE_CHECKING:
    from ciphercare.ledger.fabric.commit import SubmittedTransaction

NONCE_LENGTH = 24


def new_nonce() -> bytes:
    """24 random bytes, as the official clients use."""
    return os.urandom(NONCE_LENGTH)


def transaction_id(nonce: bytes, creator: bytes) -> str:
    """Fabric's transaction id: ``hex(SHA-256(nonce || creator))`` (``protoutil.ComputeTxID``)."""
    return hashlib.sha256(nonce + creator).hexdigest()


def transaction_name(contract_name: str, name: str) -> str:
    """``Contract:Function`` when the chaincode holds several contracts, as the official clients qualify it."""
    return f"{contract_name}:{name}" if contract_name else name


def _to_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _now() -> Timestamp:
    ns = time.time_ns()
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def build_proposal(
    *,
    channel: str,
    chaincode: str,
    transaction: str,
    args: Sequence[str | bytes],
    creator: bytes,
    transient: Mapping[str, bytes] | None = None,
    nonce: bytes | None = None,
    timestamp: Timestamp | None = None,
) -> tuple[proposal_pb2.Proposal, str]:
    """The unsigned ``Proposal`` and its transaction id."""
    nonce = new_nonce() if nonce is None else nonce
    tx_id = transaction_id(nonce, creator)
    cc_id = chaincode_pb2.ChaincodeID(name=chaincode)
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.HeaderType.ENDORSER_TRANSACTION,
        channel_id=channel,
        tx_id=tx_id,
        timestamp=timestamp if timestamp is not None else _now(),
        epoch=0,
        extension=proposal_pb2.ChaincodeHeaderExtension(chaincode_id=cc_id).SerializeToString(),
    )
    signature_header = common_pb2.SignatureHeader(creator=creator, nonce=nonce)
    header = common_pb2.Header(
        channel_header=channel_header.SerializeToString(), signature_header=signature_header.SerializeToString()
    )
    spec = chaincode_pb2.ChaincodeSpec(
        type=chaincode_pb2.ChaincodeSpec.Type.NODE,  # what the official Node and Go clients put here
        chaincode_id=cc_id,
        input=chaincode_pb2.ChaincodeInput(args=[_to_bytes(transaction)] + [_to_bytes(a) for a in args]),
    )
    payload = proposal_pb2.ChaincodeProposalPayload(
        input=chaincode_pb2.ChaincodeInvocationSpec(chaincode_spec=spec).SerializeToString(),
        TransientMap=dict(transient or {}),
    )
    proposal = proposal_pb2.Proposal(header=header.SerializeToString(), payload=payload.SerializeToString())
    return proposal, tx_id


@dataclass
class Proposal:
    """A signed proposal ready to evaluate or endorse (``client.Proposal`` in the official clients)."""

    client: object  # the Gateway (kept untyped here to avoid an import cycle)
    channel: str
    transaction_id: str
    signed: proposal_pb2.SignedProposal
    endorsing_organizations: tuple[str, ...] = field(default=())

    @property
    def serialized(self) -> bytes:
        """The serialized ``SignedProposal`` (for offline signing and capture)."""
        return self.signed.SerializeToString()

    async def evaluate(self, *, timeout: float | None = None) -> bytes:
        """Run the transaction on one peer without ordering it; the contract's result bytes."""
        from ciphercare.ledger.fabric.gateway import Gateway

        gw = self.client
        assert isinstance(gw, Gateway)
        request = gateway_pb2.EvaluateRequest(
            transaction_id=self.transaction_id, channel_id=self.channel, proposed_transaction=self.signed
        )
        try:
            response = await gw.stub.Evaluate(request, timeout=gw.options.deadline("evaluate", timeout))
        except grpc.RpcError as err:
            raise wrap(EndorseError, err, self.transaction_id) from err
        return bytes(response.result.payload)

    async def endorse(self, *, timeout: float | None = None) -> Transaction:
        """Collect endorsements; the prepared (unsigned) transaction envelope, signed here."""
        from ciphercare.ledger.fabric.gateway import Gateway

        gw = self.client
        assert isinstance(gw, Gateway)
        request = gateway_pb2.EndorseRequest(
            transaction_id=self.transaction_id,
            channel_id=self.channel,
            proposed_transaction=self.signed,
            endorsing_organizations=list(self.endorsing_organizations),
        )
        try:
            response = await gw.stub.Endorse(request, timeout=gw.options.deadline("endorse", timeout))
        except grpc.RpcError as err:
            raise wrap(EndorseError, err, self.transaction_id) from err
        envelope = response.prepared_transaction
        envelope.signature = gw.signer(envelope.payload)
        return Transaction(gw, self.channel, self.transaction_id, envelope)


@dataclass
class Transaction:
    """An endorsed, signed transaction: its result is known, it is not yet ordered."""

    client: object
    channel: str
    transaction_id: str
    envelope: common_pb2.Envelope

    @property
    def result(self) -> bytes:
        """The contract's return value from the endorsement (``parseTransactionEnvelope`` in the Node client)."""
        return envelope_result(self.envelope)

    async def submit(self, *, timeout: float | None = None) -> SubmittedTransaction:
        """Send to ordering; the result now, and the commit to await (``Transaction.submit`` in Node)."""
        from ciphercare.ledger.fabric.commit import Commit, SubmittedTransaction
        from ciphercare.ledger.fabric.errors import SubmitError
        from ciphercare.ledger.fabric.gateway import Gateway

        gw = self.client
        assert isinstance(gw, Gateway)
        request = gateway_pb2.SubmitRequest(
            transaction_id=self.transaction_id, channel_id=self.channel, prepared_transaction=self.envelope
        )
        try:
            await gw.stub.Submit(request, timeout=gw.options.deadline("submit", timeout))
        except grpc.RpcError as err:
            raise wrap(SubmitError, err, self.transaction_id) from err
        return SubmittedTransaction(self.transaction_id, self.result, Commit(gw, self.channel, self.transaction_id))


def envelope_result(envelope: common_pb2.Envelope) -> bytes:
    """Payload -> Transaction -> first action -> ChaincodeActionPayload -> ProposalResponsePayload -> response."""
    from fabric_protos.peer import transaction_pb2

    payload = common_pb2.Payload.FromString(envelope.payload)
    tx = transaction_pb2.Transaction.FromString(payload.data)
    if not tx.actions:
        raise ValueError("prepared transaction has no actions")
    action_payload = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
    prp = proposal_response_pb2.ProposalResponsePayload.FromString(action_payload.action.proposal_response_payload)
    cc_action = proposal_pb2.ChaincodeAction.FromString(prp.extension)
    return bytes(cc_action.response.payload)
