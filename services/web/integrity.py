"""The web session remembers the last checkpoint it verified (ledger integrity, issue 11).

Portal and console pages that talk to the ledger pass the served latest checkpoint through
:func:`remember_latest`: it must be signed by the trusted key (and cosigned by the witness
quorum when ``CIPHERCARE_WITNESS_POLICY`` is set), and it must extend the checkpoint this
session verified before, by a consistency proof. A rollback or fork comes back as a problem
text plus the two signed notes; the session keeps the older, verified checkpoint.
"""

from __future__ import annotations

import time
from typing import Any

from ciphercare.ledger.transparency.checkpoint import CheckpointKeyring
from ciphercare.sdk.checkpoints import CheckpointCheckError, CheckpointMemory, Remembered, RollbackError, served_note
from ciphercare.sdk.client import CiphercareClient
from ciphercare.services.web.sessions import Session, VerifiedCheckpoint
from ciphercare.v1 import access_log_pb2


def witness_policy(settings: Any) -> Any:
    """The deployment's witness policy, or None."""
    path = getattr(settings, "witness_policy", None)
    if not path:
        return None
    from ciphercare.ledger.witness.policy import Policy

    return Policy.load(path)


def remember_latest(settings: Any, session: Session, client: CiphercareClient, vkey: str,
                    latest: access_log_pb2.GetCheckpointResponse) -> tuple[str | None, dict[str, str] | None]:
    """Check ``latest`` against the session's memory; returns ``(problem, evidence)`` (both None when fine)."""
    policy = witness_policy(settings)
    memory = CheckpointMemory(CheckpointKeyring.from_vkeys(vkey), policy=policy)
    if policy is not None and policy.quorum:
        latest = client.call(client.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest(cosigned=True))
    previous = session.last_checkpoint
    if previous is not None:
        memory.seed(Remembered(previous.origin, previous.tree_size, bytes.fromhex(previous.root_hash_hex),
                               previous.signed_note.encode("utf-8"), previous.verified_at))

    def prove(first: int, second: int) -> list[bytes]:
        proof = client.call(client.access_log.GetConsistencyProof, access_log_pb2.GetConsistencyProofRequest(
            first_tree_size=first, second_tree_size=second))
        return list(proof.hashes)

    try:
        result = memory.check_note(served_note(latest), prove)
    except RollbackError as exc:
        return f"The ledger does not extend the checkpoint this session verified before: {exc}", exc.evidence()
    except CheckpointCheckError as exc:
        return f"The ledger's latest checkpoint does not verify: {exc}", None
    cp = result.checkpoint
    session.previous_checkpoint = previous
    session.last_checkpoint = VerifiedCheckpoint(
        origin=cp.origin, tree_size=cp.size, root_hash_hex=cp.root_hash.hex(), timestamp_ms=cp.timestamp_ms,
        signed_note=latest.checkpoint.signed_note, verified_at=time.time())
    return None, None
