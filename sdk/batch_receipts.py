"""Receipts for batched access events: one patient's event, proven on the ledger without anyone else's.

A batched access event is one member of an ``accessbatch:RecordBatch`` transaction. The transaction's
ledger leaf holds only the batch record (root, count, counts per outcome, agent, time); the receipt adds
the member itself, its 32-byte salt and the audit path from ``SHA-256(0x00 || salt || member)`` to the
root. :func:`verify_batch_receipt` checks, offline:

1. the ledger part exactly as :func:`ciphercare.sdk.receipts.verify_receipt` does (signed checkpoint,
   RFC 9162 inclusion of the leaf, the leaf is the named transaction);
2. the leaf records one ``AccessBatchRecorded`` event, whose root and count the receipt's path leads to;
3. the member is canonical JSON whose id is the one its salt gives, and the event the receipt states is
   exactly that member with the batch's agent and recorded time.

No receipt carries another member's data: sibling hashes are hashes of salted leaves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from google.protobuf.json_format import MessageToDict

from ciphercare.ledger.transparency.merkle import leaf_hash, verify_inclusion
from ciphercare.sdk.receipts import (
    HOW_TO_VERIFY,
    RECEIPT_TYPE,
    ReceiptCheck,
    ReceiptError,
    _now_iso,
    checkpoint_section,
    proof_section,
    verify_receipt,
)
from ciphercare.v1 import access_log_pb2

BATCH_KIND = "access-event-batched"
BATCH_EVENT_NAME = "AccessBatchRecorded"
SALT_BYTES = 32
_ID_DOMAIN = b"ciphercare/access-batch-member/v1\x00"
HOW_TO_VERIFY_BATCH = (
    HOW_TO_VERIFY + " Then: hash SHA-256(0x00 || salt || member_json), fold in batch.audit_path (RFC 9162, "
    "leaf batch.position of batch.batch_size) and compare with the root of the AccessBatchRecorded event in "
    "the leaf; the member's id is 'ae-' + the first 32 hex of SHA-256('ciphercare/access-batch-member/v1' "
    "|| 0x00 || salt)."
)


def batch_event_receipt(event: dict[str, Any] | access_log_pb2.AccessEvent, membership: dict[str, Any],
                        proof: access_log_pb2.GetInclusionProofResponse, verifier_key: str, tx_id: str,
                        sequence: int) -> dict[str, Any]:
    """A receipt proving that one batched access event is on the ledger (membership from the service)."""
    if isinstance(event, access_log_pb2.AccessEvent):
        event = MessageToDict(event, preserving_proto_field_name=True)
    return {
        "type": RECEIPT_TYPE,
        "kind": BATCH_KIND,
        "issued_at": _now_iso(),
        "statement": "This access event is recorded on the ciphercare ledger, as one member of a batch.",
        "event": event,
        "batch": dict(membership),
        "transaction": {"tx_id": tx_id, "leaf_index": sequence},
        "log": {"origin": proof.checkpoint.origin, "verifier_key": verifier_key},
        "checkpoint": checkpoint_section(proof.checkpoint),
        "inclusion_proof": proof_section(proof),
        "how_to_verify": HOW_TO_VERIFY_BATCH,
    }


def membership_from_proto(message: Any) -> dict[str, Any]:
    """The receipt's ``batch`` section from a ScoringService ``AccessBatchMembership``."""
    return {
        "batch_id": message.batch_id,
        "root": message.root,
        "batch_size": message.batch_size,
        "position": message.position,
        "salt_b64": base64.b64encode(message.salt).decode("ascii"),
        "member_json": message.member_json,
        "audit_path": [h.hex() for h in message.audit_path],
    }


def _member_id(salt: bytes) -> str:
    return "ae-" + hashlib.sha256(_ID_DOMAIN + salt).hexdigest()[:32]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def verify_batch_receipt(receipt: dict[str, Any], trusted_vkey: str | None = None,
                         expected_pid: str | None = None) -> ReceiptCheck:
    """Verify a batched access-event receipt offline (``expected_pid``: also demand it is about this patient)."""
    if receipt.get("kind") != BATCH_KIND:
        raise ReceiptError(f"not a {BATCH_KIND} receipt")
    result = verify_receipt(receipt, trusted_vkey)
    if not result.ok:
        return result
    result.ok = False
    batch = receipt.get("batch")
    if not isinstance(batch, dict):
        raise ReceiptError("batch is missing")
    try:
        salt = base64.b64decode(batch["salt_b64"], validate=True)
        member_bytes = str(batch["member_json"]).encode("utf-8")
        path = [bytes.fromhex(h) for h in batch["audit_path"]]
        position, size = batch["position"], batch["batch_size"]
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ReceiptError(f"batch section is malformed: {exc}") from None
    if not isinstance(position, int) or not isinstance(size, int) or len(salt) != SALT_BYTES:
        raise ReceiptError("batch.position and batch_size must be integers and the salt 32 bytes")
    leaf = base64.b64decode(receipt["inclusion_proof"]["leaf"])
    entry = json.loads(leaf)
    records = [json.loads(base64.b64decode(e.get("payload_b64", ""))) for e in entry.get("events", [])
               if e.get("name") == BATCH_EVENT_NAME]
    if len(records) != 1:
        result.problems.append("the transaction does not record exactly one access batch")
        return result
    record = records[0]
    if record.get("count") != size:
        result.problems.append(f"the receipt says the batch has {size} members, the ledger says {record.get('count')}")
        return result
    if not verify_inclusion(leaf_hash(salt + member_bytes), position, size, path, bytes.fromhex(record["root"])):
        result.problems.append("the member's salted hash does not lead to the batch root on the ledger")
        return result
    result.checks.append(f"member {position} of {size} hashes to batch {record.get('id')}'s root "
                         f"{record['root'][:16]}…")
    try:
        member = json.loads(member_bytes)
    except ValueError:
        result.problems.append("the member is not JSON")
        return result
    if not isinstance(member, dict) or _canonical(member) != member_bytes:
        result.problems.append("the member is not canonical JSON")
        return result
    if member.get("id") != _member_id(salt):
        result.problems.append("the member's id is not the one its salt gives")
        return result
    event = receipt.get("event")
    if not isinstance(event, dict) or not _event_matches(event, member, record):
        result.problems.append("the event in the receipt is not this member with the batch's agent and time")
        return result
    pid = (member.get("entity") or {}).get("pid")
    if expected_pid is not None and pid != expected_pid:
        result.problems.append("the event is about another patient")
        return result
    result.checks.append(f"access event {member['id']} (agent {record['agent'].get('org')}, {record['recorded']})")
    result.ok = True
    return result


def _event_matches(event: dict[str, Any], member: dict[str, Any], record: dict[str, Any]) -> bool:
    """The receipt's event (proto JSON or contract JSON) says what the member and batch record say."""
    entity = member.get("entity") or {}
    got_entity = event.get("entity") or {}
    agent = event.get("agent") or {}
    pairs = [
        (event.get("id"), member.get("id")),
        (event.get("pid") or got_entity.get("pid"), entity.get("pid")),
        (event.get("purpose_of_use") or None, member.get("purpose_of_use") or None),
        ((agent.get("org") or agent.get("organization")), record["agent"].get("org")),
        (agent.get("subject"), record["agent"].get("subject")),
    ]
    if event.get("recorded") and isinstance(event.get("recorded"), str):
        pairs.append((_instant(event["recorded"]), _instant(record["recorded"])))
    return all(a == b for a, b in pairs)


def _instant(text: str) -> str:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat(timespec="milliseconds")


__all__ = ["BATCH_KIND", "batch_event_receipt", "membership_from_proto", "verify_batch_receipt"]
