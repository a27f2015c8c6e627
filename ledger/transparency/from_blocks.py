"""The RFC 9162 transparency log of a Fabric channel, derived from its committed blocks.

On Fabric the channel's blockchain is the ledger; ciphercare's transparency log (leaves, tree, signed
checkpoints, proofs) is a deterministic function of it. Every organisation's ciphercare node reads the
committed blocks from its own peer (the deliver service), feeds them here in order, and so builds the
same leaves and the same tree as every other organisation; each signs checkpoints with its own key,
and each witnesses the others' (same size, same root, or a consistency proof from its own tree).

Rules, all deterministic from block contents and the peer's own validation:

* blocks are taken in order: block ``n`` must follow block ``n-1`` (number, and ``previous_hash`` =
  SHA-256 of the previous header's ASN.1 DER, Fabric's ``BlockHeaderHash``) and its ``data_hash`` must be
  SHA-256 of the concatenated envelopes (``ComputeBlockDataHash``), so a missing, extra, reordered or
  altered transaction or block is refused, never silently absorbed;
* one leaf per transaction that is an endorser transaction, flagged VALID in the block's
  ``TRANSACTIONS_FILTER`` metadata and invoking the ciphercare chaincode; invalid ones (MVCC conflicts,
  endorsement policy failures) changed nothing and have no leaf;
* the leaf is canonical JSON (sorted keys, no spaces, UTF-8) of the block number and index, tx id,
  channel header timestamp, chaincode, function and arguments, creator (MSP id and SHA-256 of the
  certificate), the write set of the chaincode's namespace (base64 values, ``null`` for deletes) and
  the chaincode event, so a receipt's leaf shows exactly what the transaction wrote and emitted.

The validation flags are computed by each organisation's own peer (block metadata is not covered by
the header hash), so two honest organisations agree on them; an organisation whose peer disagreed would
publish a different root, which is exactly what witnessing catches.

This module parses Fabric's protos (``hyperledger-fabric-protos``, the server extra): the ledger node
imports it; clients verify the resulting proofs and checkpoints with ``merkle`` and ``checkpoint`` alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from fabric_protos.common import common_pb2
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import chaincode_event_pb2, chaincode_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2

from ciphercare.ledger.transparency.merkle import MerkleTree

LEAF_VERSION = 1
_VALID = 0  # TxValidationCode.VALID


class BlockStreamError(ValueError):
    """A block does not continue the chain this builder has seen (gap, reorder, alteration)."""


class CheckpointDivergence(ValueError):
    """Another organisation's checkpoint disagrees with the tree built here from the same blocks."""


class CheckpointAhead(LookupError):
    """Another organisation's checkpoint covers blocks not read here yet: witness it again later."""


@dataclass(frozen=True)
class CommittedTransaction:
    """One valid ciphercare transaction as committed on the channel."""

    block_number: int
    tx_index: int
    tx_id: str
    channel: str
    timestamp_ms: int
    chaincode: str
    args: tuple[bytes, ...]
    creator_msp_id: str
    creator_cert_sha256: str
    writes: tuple[tuple[str, bytes | None], ...]
    event: tuple[str, bytes] | None

    def leaf(self) -> bytes:
        """The canonical leaf bytes (what the tree hashes with the RFC 9162 0x00 prefix)."""
        doc = {
            "v": LEAF_VERSION,
            "block": self.block_number,
            "tx_index": self.tx_index,
            "tx_id": self.tx_id,
            "channel": self.channel,
            "ts_ms": self.timestamp_ms,
            "chaincode": self.chaincode,
            "function": self.args[0].decode("utf-8", "replace") if self.args else "",
            "args": [base64.b64encode(a).decode("ascii") for a in self.args[1:]],
            "creator": {"msp_id": self.creator_msp_id, "cert_sha256": self.creator_cert_sha256},
            "writes": [[k, None if v is None else base64.b64encode(v).decode("ascii")] for k, v in self.writes],
            "event": None
            if self.event is None
            else {"name": self.event[0], "payload": base64.b64encode(self.event[1]).decode("ascii")},
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --- Fabric block hashing -------------------------------------------------------------------------


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def block_header_bytes(header: common_pb2.BlockHeader) -> bytes:
    """ASN.1 DER of ``SEQUENCE { INTEGER number, OCTET STRING previous_hash, OCTET STRING data_hash }``."""
    number = int(header.number)
    number_bytes = number.to_bytes(max(1, (number.bit_length() + 8) // 8), "big")  # room for the sign bit
    body = _der(0x02, number_bytes) + _der(0x04, bytes(header.previous_hash)) + _der(0x04, bytes(header.data_hash))
    return _der(0x30, body)


def block_header_hash(header: common_pb2.BlockHeader) -> bytes:
    """Fabric's ``BlockHeaderHash``: SHA-256 of the header's DER; the next block's ``previous_hash``."""
    return hashlib.sha256(block_header_bytes(header)).digest()


def block_data_hash(data: common_pb2.BlockData) -> bytes:
    """Fabric's ``ComputeBlockDataHash``: SHA-256 of the envelopes' bytes, concatenated."""
    return hashlib.sha256(b"".join(bytes(d) for d in data.data)).digest()


# --- parsing committed transactions ------------------------------------------------------------------


def _validation_flags(block: common_pb2.Block) -> bytes:
    metadata = block.metadata.metadata
    if len(metadata) <= common_pb2.TRANSACTIONS_FILTER:
        raise BlockStreamError(f"block {block.header.number} has no transaction validation flags")
    flags = bytes(metadata[common_pb2.TRANSACTIONS_FILTER])
    if len(flags) != len(block.data.data):
        raise BlockStreamError(
            f"block {block.header.number} has {len(block.data.data)} transactions but {len(flags)} validation flags"
        )
    return flags


def _writes(results: bytes, namespace: str) -> tuple[tuple[str, bytes | None], ...]:
    rwset = rwset_pb2.TxReadWriteSet.FromString(results)
    out: dict[str, bytes | None] = {}
    for ns in rwset.ns_rwset:
        if ns.namespace != namespace:
            continue
        for write in kv_rwset_pb2.KVRWSet.FromString(ns.rwset).writes:
            out[write.key] = None if write.is_delete or not write.value else bytes(write.value)
    return tuple(sorted(out.items()))


def transactions_in_block(block: common_pb2.Block, *, channel: str, chaincode: str) -> list[CommittedTransaction]:
    """The valid ``chaincode`` transactions of one committed block, in block order."""
    flags = _validation_flags(block)
    number = int(block.header.number)
    found: list[CommittedTransaction] = []
    for index, raw in enumerate(block.data.data):
        if flags[index] != _VALID:
            continue
        envelope = common_pb2.Envelope.FromString(raw)
        payload = common_pb2.Payload.FromString(envelope.payload)
        ch = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
        if ch.type != common_pb2.ENDORSER_TRANSACTION:
            continue  # configuration updates have no leaf
        if ch.channel_id != channel:
            raise BlockStreamError(f"block {number} tx {index} is for channel {ch.channel_id!r}, not {channel!r}")
        sh = common_pb2.SignatureHeader.FromString(payload.header.signature_header)
        creator = identities_pb2.SerializedIdentity.FromString(sh.creator)
        tx = transaction_pb2.Transaction.FromString(payload.data)
        for action in tx.actions:
            cap = transaction_pb2.ChaincodeActionPayload.FromString(action.payload)
            prp = proposal_response_pb2.ProposalResponsePayload.FromString(cap.action.proposal_response_payload)
            cca = proposal_pb2.ChaincodeAction.FromString(prp.extension)
            if cca.chaincode_id.name != chaincode:
                continue
            ccpp = proposal_pb2.ChaincodeProposalPayload.FromString(cap.chaincode_proposal_payload)
            spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(ccpp.input) if ccpp.input else None
            args = tuple(bytes(a) for a in spec.chaincode_spec.input.args) if spec is not None else ()
            event = None
            if cca.events:
                ev = chaincode_event_pb2.ChaincodeEvent.FromString(cca.events)
                if ev.event_name:
                    event = (ev.event_name, bytes(ev.payload))
            cert = bytes(creator.id_bytes)
            found.append(
                CommittedTransaction(
                    block_number=number,
                    tx_index=index,
                    tx_id=ch.tx_id,
                    channel=ch.channel_id,
                    timestamp_ms=ch.timestamp.seconds * 1000 + ch.timestamp.nanos // 1_000_000,
                    chaincode=chaincode,
                    args=args,
                    creator_msp_id=creator.mspid,
                    creator_cert_sha256=hashlib.sha256(_certificate_der(cert)).hexdigest(),
                    writes=_writes(bytes(cca.results), chaincode),
                    event=event,
                )
            )
    return found


def _certificate_der(cert: bytes) -> bytes:
    """DER of a PEM (or DER) certificate: the hash is of the certificate, not of its text encoding."""
    text = cert.strip()
    if text.startswith(b"-----BEGIN"):
        lines = [line for line in text.splitlines() if line and not line.startswith(b"-----")]
        return base64.b64decode(b"".join(lines))
    return cert


# --- the log -------------------------------------------------------------------------------------------


class BlockLog:
    """An organisation's transparency log of one channel's ciphercare chaincode, built from its blocks."""

    def __init__(self, *, channel: str, chaincode: str) -> None:
        self.channel = channel
        self.chaincode = chaincode
        self.tree = MerkleTree()
        self.leaves: list[bytes] = []
        self.positions: dict[str, int] = {}  # tx id -> leaf index
        self.next_block = 0
        self._previous_hash = b""

    def add_block(self, block: common_pb2.Block) -> list[CommittedTransaction]:
        """Verify that ``block`` continues the chain and append its valid transactions' leaves."""
        header = block.header
        if int(header.number) != self.next_block:
            raise BlockStreamError(f"expected block {self.next_block}, got block {header.number}")
        if bytes(header.previous_hash) != self._previous_hash:
            raise BlockStreamError(f"block {header.number} does not follow block {self.next_block - 1} (previous hash)")
        if bytes(header.data_hash) != block_data_hash(block.data):
            raise BlockStreamError(f"block {header.number}'s transactions do not match its data hash")
        transactions = transactions_in_block(block, channel=self.channel, chaincode=self.chaincode)
        for tx in transactions:
            if tx.tx_id in self.positions:
                raise BlockStreamError(f"tx {tx.tx_id} was already committed (leaf {self.positions[tx.tx_id]})")
        for tx in transactions:
            leaf = tx.leaf()
            self.positions[tx.tx_id] = self.tree.append_leaf(leaf)
            self.leaves.append(leaf)
        self._previous_hash = block_header_hash(header)
        self.next_block += 1
        return transactions

    def add_blocks(self, blocks: Iterable[common_pb2.Block]) -> None:
        for block in blocks:
            self.add_block(block)

    @property
    def size(self) -> int:
        return self.tree.size

    def root(self, size: int | None = None) -> bytes:
        return self.tree.root(size)

    def witness(self, size: int, root_hash: bytes) -> list[bytes]:
        """Check another organisation's (size, root) against this tree.

        Returns the consistency proof from ``size`` to this tree's size (empty when equal), which the
        other organisation can check against its own root; raises :class:`CheckpointDivergence` when the
        same blocks give a different root, and :class:`CheckpointAhead` when the other claims more leaves
        than the blocks read here hold (this peer is behind, or the other invents leaves: ask again later).
        """
        if size > self.tree.size:
            raise CheckpointAhead(
                f"checkpoint claims {size} leaves; the blocks read here (up to block {self.next_block - 1}) give "
                f"{self.tree.size}"
            )
        if self.tree.root(size) != bytes(root_hash):
            raise CheckpointDivergence(f"checkpoint root at size {size} differs from the root of the same blocks")
        return [] if size == self.tree.size else self.tree.consistency_proof(size)
