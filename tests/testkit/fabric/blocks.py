"""Committed Fabric blocks, assembled the way a peer's endorsement, the client and the orderer shape them.

Only the wire shapes matter here (``fabric-protos``): an endorsed transaction is an ``Envelope`` whose
``Payload`` carries the proposal's header and a ``Transaction`` with one ``ChaincodeActionPayload``:
the proposal payload without its transient map, and the endorsed ``ProposalResponsePayload`` whose
``ChaincodeAction`` holds the read-write set, the chaincode event and the response. A block chains to
its predecessor by the ASN.1 header hash, commits to its envelopes by the data hash, and carries the
committing peer's validation flags in its ``TRANSACTIONS_FILTER`` metadata. No orderer or committer
runs here: these are the bytes one would deliver.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from fabric_protos.common import common_pb2
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.peer import chaincode_event_pb2, chaincode_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2

from ciphercare.ledger.transparency.from_blocks import block_data_hash, block_header_hash
from testkit.fabric.chaincode_peer import Proposal, Signer

VALID = transaction_pb2.VALID
MVCC_READ_CONFLICT = transaction_pb2.MVCC_READ_CONFLICT


def endorsed_envelope(
    signer: Signer,
    proposal: Proposal,
    *,
    status: int,
    payload: bytes,
    writes: Sequence[tuple[str, bytes | None]],
    event: tuple[str, bytes] | None,
    namespace: str = "ciphercare",
) -> bytes:
    """The client's transaction envelope for an endorsed proposal (signed by the proposal's creator)."""
    prop = proposal_pb2.Proposal.FromString(proposal.signed.proposal_bytes)
    header = common_pb2.Header.FromString(prop.header)
    sent = proposal_pb2.ChaincodeProposalPayload.FromString(prop.payload)
    committed_ccpp = proposal_pb2.ChaincodeProposalPayload(input=sent.input)  # transient data never committed
    kv = kv_rwset_pb2.KVRWSet(
        writes=[kv_rwset_pb2.KVWrite(key=k, is_delete=v is None, value=v or b"") for k, v in writes]
    )
    rwset = rwset_pb2.TxReadWriteSet(
        data_model=rwset_pb2.TxReadWriteSet.KV,
        ns_rwset=[rwset_pb2.NsReadWriteSet(namespace=namespace, rwset=kv.SerializeToString())],
    )
    events = b""
    if event is not None:
        events = chaincode_event_pb2.ChaincodeEvent(
            chaincode_id=namespace, tx_id=proposal.tx_id, event_name=event[0], payload=event[1]
        ).SerializeToString()
    action = proposal_pb2.ChaincodeAction(
        results=rwset.SerializeToString(),
        events=events,
        response=proposal_response_pb2.Response(status=status, payload=payload),
        chaincode_id=chaincode_pb2.ChaincodeID(name=namespace, version="1.0"),
    )
    prp = proposal_response_pb2.ProposalResponsePayload(
        proposal_hash=hashlib.sha256(prop.header + committed_ccpp.SerializeToString()).digest(),
        extension=action.SerializeToString(),
    )
    cap = transaction_pb2.ChaincodeActionPayload(
        chaincode_proposal_payload=committed_ccpp.SerializeToString(),
        action=transaction_pb2.ChaincodeEndorsedAction(proposal_response_payload=prp.SerializeToString()),
    )
    tx = transaction_pb2.Transaction(
        actions=[transaction_pb2.TransactionAction(header=header.signature_header, payload=cap.SerializeToString())]
    )
    body = common_pb2.Payload(header=header, data=tx.SerializeToString()).SerializeToString()
    return common_pb2.Envelope(payload=body, signature=signer.sign(body)).SerializeToString()


def make_block(number: int, previous: common_pb2.Block | None, envelopes: Sequence[bytes], flags: Sequence[int]) -> (
    common_pb2.Block
):
    """A committed block: header chained to ``previous``, data hash over ``envelopes``, validation flags."""
    if len(flags) != len(envelopes):
        raise ValueError("one validation flag per envelope")
    data = common_pb2.BlockData(data=list(envelopes))
    header = common_pb2.BlockHeader(
        number=number,
        previous_hash=b"" if previous is None else block_header_hash(previous.header),
        data_hash=block_data_hash(data),
    )
    metadata = common_pb2.BlockMetadata(metadata=[b"", b"", bytes(flags), b"", b""])
    return common_pb2.Block(header=header, data=data, metadata=metadata)


def chain(batches: Sequence[tuple[Sequence[bytes], Sequence[int]]]) -> list[common_pb2.Block]:
    """Blocks 0..n-1 from (envelopes, flags) batches, each chained to the one before."""
    blocks: list[common_pb2.Block] = []
    for envelopes, flags in batches:
        blocks.append(make_block(len(blocks), blocks[-1] if blocks else None, envelopes, flags))
    return blocks
