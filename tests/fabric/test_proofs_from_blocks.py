"""Transparency logs built from committed Fabric blocks: two organisations agree; tampering is caught.

The consent table's transactions run through the embedded runtime (the contracts' real outputs),
become endorsed envelopes and chained blocks (testkit.fabric.blocks: the wire shapes a peer delivers),
and two organisations' :class:`BlockLog`s, fed separately serialized copies, must produce the same
leaves and roots; each signs its checkpoint with its own key, and each witnesses the other's (same
root, or a consistency proof). Proofs are checked with the independent RFC 9162 reference
(testkit.rfc9162). Gaps, reordering, omission, replays, rewritten chains and a dissenting validation
flag are refused or show up as a divergent root.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fabric_protos.common import common_pb2
from testkit import rfc9162
from testkit.fabric.blocks import MVCC_READ_CONFLICT, VALID, chain, endorsed_envelope, make_block
from testkit.fabric.chaincode_peer import LedgerState, Signer, build_proposal, issue_signer, tx_id_for
from testkit.fabric.consent_table import PRINCIPALS, Outcome, Step, play

from ciphercare.consent.contracts import new_chaincode
from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.msp import EmbeddedMSP
from ciphercare.ledger.embedded.runtime import ChaincodeRuntime
from ciphercare.ledger.transparency.checkpoint import CheckpointSigner
from ciphercare.ledger.transparency.from_blocks import (
    BlockLog,
    BlockStreamError,
    CheckpointAhead,
    CheckpointDivergence,
    block_header_bytes,
)

PER_BLOCK = 7


@pytest.fixture(scope="module")
def committed() -> list[tuple[bytes, str, Outcome]]:
    """(envelope, tx id, outcome) of every successful submitted transaction of the consent table, in order."""
    msp = EmbeddedMSP()
    signers: dict[Principal, Signer] = {p: issue_signer(msp, p) for p in PRINCIPALS}
    runtime = ChaincodeRuntime(new_chaincode(), channel="ciphercare", chaincode_name="ciphercare")
    state = LedgerState()
    out: list[tuple[bytes, str, Outcome]] = []

    def run(step: Step) -> Outcome:
        signer = signers[step.who]
        tx_id = tx_id_for(step.nonce, signer.identity.serialized)
        r = runtime.execute(state, None, signer.identity, step.contract, step.function, step.args,
                            tx_id=tx_id, ts_ms=step.ts_ms, read_only=not step.submit)
        event = (r.events[0].name, r.events[0].payload) if r.events else None
        outcome = Outcome(tx_id, r.status, r.payload, r.message, r.writes if r.ok else (), event)
        if r.ok and step.submit:
            state.commit(tx_id, step.ts_ms, r.writes)
            proposal = build_proposal(signer, channel="ciphercare", chaincode="ciphercare",
                                      function=f"{step.contract}:{step.function}", args=step.args,
                                      ts_ms=step.ts_ms, nonce=step.nonce)
            assert proposal.tx_id == tx_id
            envelope = endorsed_envelope(signer, proposal, status=r.status, payload=r.payload, writes=r.writes,
                                         event=event)
            out.append((envelope, tx_id, outcome))
        return outcome

    play(run)
    assert len(out) > 30
    return out


def blocks_of(envelopes: list[bytes], flags: list[int] | None = None) -> list[common_pb2.Block]:
    flags = flags if flags is not None else [VALID] * len(envelopes)
    batches = [(envelopes[i : i + PER_BLOCK], flags[i : i + PER_BLOCK]) for i in range(0, len(envelopes), PER_BLOCK)]
    return chain(batches)


def copy(blocks: list[common_pb2.Block]) -> list[common_pb2.Block]:
    """What another organisation's peer delivers: the same bytes, parsed anew."""
    return [common_pb2.Block.FromString(b.SerializeToString()) for b in blocks]


def test_two_organisations_build_the_same_log_and_witness_each_other(
    committed: list[tuple[bytes, str, Outcome]], tmp_path: Path
) -> None:
    envelopes = [e for e, _, _ in committed]
    blocks = blocks_of(envelopes)
    org_a, org_b = BlockLog(channel="ciphercare", chaincode="ciphercare"), BlockLog(channel="ciphercare",
                                                                                   chaincode="ciphercare")
    half = len(blocks) // 2
    org_a.add_blocks(copy(blocks[:half]))
    org_b.add_blocks(copy(blocks))
    assert org_b.size == len(committed)
    assert org_b.leaves[: org_a.size] == org_a.leaves
    assert org_b.root() == rfc9162.mth(org_b.leaves)

    # each signs with its own key; each verifies the other's note and witnesses its (size, root)
    signer_a = CheckpointSigner(tmp_path / "a.key", "ciphercare.hospital-a/ciphercare")
    signer_b = CheckpointSigner(tmp_path / "b.key", "ciphercare.hospital-b/ciphercare")
    cp_a, cp_b = signer_a.sign(org_a.size, org_a.root()), signer_b.sign(org_b.size, org_b.root())
    _, size_a, root_a = rfc9162.verify_note(cp_a.note.decode(), signer_a.vkey)
    _, size_b, root_b = rfc9162.verify_note(cp_b.note.decode(), signer_b.vkey)
    proof = org_b.witness(size_a, root_a)  # B has more: it proves A's tree is a prefix of its own
    assert rfc9162.verify_consistency(size_a, size_b, proof, root_a, root_b)
    with pytest.raises(CheckpointAhead):
        org_a.witness(size_b, root_b)  # A has not read those blocks yet
    org_a.add_blocks(copy(blocks[half:]))
    assert org_a.witness(size_b, root_b) == [] and org_a.root() == org_b.root()

    # a receipt: the AccessRecorded transaction's leaf and inclusion proof verify against B's checkpoint
    envelope, tx_id, outcome = next(c for c in committed if c[2].event and c[2].event[0] == "AccessRecorded")
    index = org_b.positions[tx_id]
    leaf = json.loads(org_b.leaves[index])
    assert (leaf["tx_id"], leaf["event"]["name"], leaf["function"]) == (tx_id, "AccessRecorded", "accesslog:Record")
    assert rfc9162.verify_inclusion(org_b.leaves[index], index, size_b, org_b.tree.inclusion_proof(index, size_b),
                                    root_b)


def test_leaves_say_what_the_transaction_wrote_and_who_sent_it(committed: list[tuple[bytes, str, Outcome]]) -> None:
    log = BlockLog(channel="ciphercare", chaincode="ciphercare")
    log.add_blocks(blocks_of([e for e, _, _ in committed]))

    for (_, tx_id, outcome), raw in zip(committed, log.leaves, strict=True):
        leaf = json.loads(raw)
        assert leaf["tx_id"] == tx_id
        assert [(k, None if v is None else base64.b64decode(v)) for k, v in leaf["writes"]] == list(outcome.writes)
        if outcome.event is None:
            assert leaf["event"] is None
        else:
            assert (leaf["event"]["name"], base64.b64decode(leaf["event"]["payload"])) == outcome.event
        assert leaf["creator"]["msp_id"].endswith("MSP") and len(leaf["creator"]["cert_sha256"]) == 64
    assert len({json.loads(x)["ts_ms"] for x in log.leaves}) == len(log.leaves)


def test_invalid_transactions_have_no_leaf(committed: list[tuple[bytes, str, Outcome]]) -> None:
    envelopes = [e for e, _, _ in committed]
    flags = [VALID] * len(envelopes)
    flags[3] = MVCC_READ_CONFLICT
    log = BlockLog(channel="ciphercare", chaincode="ciphercare")
    log.add_blocks(blocks_of(envelopes, flags))
    assert log.size == len(envelopes) - 1 and committed[3][1] not in log.positions

    honest = BlockLog(channel="ciphercare", chaincode="ciphercare")
    honest.add_blocks(blocks_of(envelopes))
    with pytest.raises(CheckpointDivergence):  # a peer that flagged differently publishes a different root
        honest.witness(log.size, log.root())


def test_gaps_reordering_omission_and_replays_are_refused(committed: list[tuple[bytes, str, Outcome]]) -> None:
    envelopes = [e for e, _, _ in committed]
    blocks = blocks_of(envelopes)

    def fresh() -> BlockLog:
        return BlockLog(channel="ciphercare", chaincode="ciphercare")

    with pytest.raises(BlockStreamError, match="expected block 0, got block 1"):
        fresh().add_blocks(copy(blocks[1:]))  # the first block withheld
    log = fresh()
    log.add_block(copy(blocks)[0])
    with pytest.raises(BlockStreamError, match="expected block 1, got block 2"):
        log.add_block(copy(blocks)[2])  # a block skipped
    assert log.size == PER_BLOCK  # nothing of the refused block was appended

    omitted = copy(blocks)
    del omitted[1].data.data[2]  # a transaction dropped from a block
    del omitted[1].metadata.metadata[2:3]
    omitted[1].metadata.metadata.insert(2, bytes([VALID] * len(omitted[1].data.data)))
    with pytest.raises(BlockStreamError, match="do not match its data hash"):
        fresh().add_blocks(omitted)

    reordered = copy(blocks)
    data = reordered[1].data.data
    data[0], data[1] = data[1], data[0]
    with pytest.raises(BlockStreamError, match="do not match its data hash"):
        fresh().add_blocks(reordered)

    # block 1 rewritten with a fresh data hash: block 2 no longer follows it
    rewritten = copy(blocks)
    rewritten[1] = make_block(1, rewritten[0], list(reversed(rewritten[1].data.data)), [VALID] * PER_BLOCK)
    with pytest.raises(BlockStreamError, match="does not follow block 1"):
        fresh().add_blocks(rewritten)

    # a replayed transaction in a later block is refused
    replay = chain([(envelopes[:3], [VALID] * 3), ([envelopes[1]], [VALID])])
    with pytest.raises(BlockStreamError, match="already committed"):
        fresh().add_blocks(replay)


def test_a_fully_rewritten_chain_is_caught_by_witnessing(committed: list[tuple[bytes, str, Outcome]]) -> None:
    """Whoever controls a peer's delivery can rebuild a self-consistent chain; the other orgs' roots expose it."""
    envelopes = [e for e, _, _ in committed]
    honest, forged = BlockLog(channel="ciphercare", chaincode="ciphercare"), BlockLog(channel="ciphercare",
                                                                                     chaincode="ciphercare")
    honest.add_blocks(blocks_of(envelopes))
    swapped = envelopes[:]
    swapped[5], swapped[6] = swapped[6], swapped[5]
    forged.add_blocks(blocks_of(swapped))  # internally consistent: every hash recomputed
    assert forged.size == honest.size
    with pytest.raises(CheckpointDivergence):
        honest.witness(forged.size, forged.root())
    dropped = BlockLog(channel="ciphercare", chaincode="ciphercare")
    dropped.add_blocks(blocks_of(envelopes[:10] + envelopes[11:]))
    with pytest.raises(CheckpointDivergence):
        honest.witness(dropped.size, dropped.root())


def test_block_header_hash_is_fabrics_asn1() -> None:
    """SEQUENCE { INTEGER, OCTET STRING, OCTET STRING }, minimal INTEGER with a sign byte when needed."""
    header = common_pb2.BlockHeader(number=0, previous_hash=b"", data_hash=b"\xaa" * 32)
    assert block_header_bytes(header) == bytes.fromhex("3027" "020100" "0400" "0420") + b"\xaa" * 32
    header = common_pb2.BlockHeader(number=128, previous_hash=b"\x01", data_hash=b"\x02")
    assert block_header_bytes(header) == bytes.fromhex("300a" "02020080" "040101" "040102")
    header = common_pb2.BlockHeader(number=65535, previous_hash=b"", data_hash=b"")
    assert block_header_bytes(header) == bytes.fromhex("3009" "020300ffff" "0400" "0400")
