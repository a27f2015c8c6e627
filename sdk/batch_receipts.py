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

from google.protobuf.json_format import MessageToDict, ParseDict, ParseError

from ciphercare.ledger.transparency.merkle import leaf_hash, verify_inclusion
from ciphercare.sdk.leaf import access_event_message, differences
from ciphercare.sdk.receipts import (
    BATCH_KIND,
    HOW_TO_VERIFY,
    RECEIPT_FIELDS,
    RECEIPT_TYPE,
    ReceiptCheck,
    ReceiptError,
    _now_iso,
    checkpoint_section,
    proof_section,
    verify_ledger_part,
)
from ciphercare.v1 import access_log_pb2

BATCH_EVENT_NAME = "AccessBatchRecorded"
SALT_BYTES = 32
ACCESSBATCH = "accessbatch"
BATCH_STATEMENT = "This access event is recorded on the ciphercare ledger, as one member of a batch."
BATCH_RECEIPT_FIELDS = RECEIPT_FIELDS | {"batch"}
_BATCH_SECTION = frozenset({"batch_id", "root", "batch_size", "position", "salt_b64", "member_json", "audit_path"})
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
        "statement": BATCH_STATEMENT,
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
    result, entry, index = verify_ledger_part(receipt, trusted_vkey, BATCH_RECEIPT_FIELDS,
                                              {BATCH_KIND: BATCH_STATEMENT})
    if entry is None:
        return result
    batch = receipt.get("batch")
    if not isinstance(batch, dict):
        raise ReceiptError("batch is missing")
    unknown = sorted(str(k)[:40] for k in batch if k not in _BATCH_SECTION)
    if unknown:
        result.problems.append(f"batch field(s) {', '.join(unknown)} are not part of a batch receipt")
        return result
    try:
        salt = base64.b64decode(batch["salt_b64"], validate=True)
        member_bytes = str(batch["member_json"]).encode("utf-8")
        path = [bytes.fromhex(h) for h in batch["audit_path"]]
        position, size = batch["position"], batch["batch_size"]
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ReceiptError(f"batch section is malformed: {exc}") from None
    if type(position) is not int or type(size) is not int or len(salt) != SALT_BYTES:
        raise ReceiptError("batch.position and batch_size must be integers and the salt 32 bytes")
    records = [json.loads(base64.b64decode(e.get("payload_b64", ""))) for e in entry.get("events", [])
               if isinstance(e, dict) and e.get("name") == BATCH_EVENT_NAME]
    if entry.get("contract") != ACCESSBATCH or len(records) != 1 or not isinstance(records[0], dict):
        result.problems.append("the transaction does not record exactly one access batch")
        return result
    record = records[0]
    if record.get("count") != size:
        result.problems.append(f"the receipt says the batch has {size} members, the ledger says {record.get('count')}")
        return result
    shown_section = {"batch_id": record.get("id"), "root": record.get("root")}
    wrong = [f"batch.{k}" for k, v in shown_section.items() if batch.get(k, v) != v]
    if wrong:
        result.problems.append(f"{', '.join(wrong)} differ(s) from the ledger's batch record")
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
    try:
        expected = access_event_message(_member_event(member, record), index, entry["tx_id"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        result.problems.append(f"the member cannot be read as an access event: {str(exc)[:200]}")
        return result
    shown = receipt.get("event")
    if not isinstance(shown, dict):
        raise ReceiptError("event is missing or not an object")
    try:
        shown_event = ParseDict(shown, access_log_pb2.AccessEvent())
    except (ParseError, ValueError, TypeError) as exc:
        raise ReceiptError(f"event is malformed: {str(exc)[:200]}") from None
    wrong = [f"event.{name}" for name in differences(expected, shown_event)]
    if wrong:
        result.problems.append(f"{', '.join(wrong)} differ(s) from this member with the batch's agent and time")
        return result
    result.checks.append("every field of the event shown equals the member with the batch's agent and time")
    pid = (member.get("entity") or {}).get("pid")
    if expected_pid is not None and pid != expected_pid:
        result.problems.append("the event is about another patient")
        return result
    result.checks.append(f"access event {member['id']} (agent {record['agent'].get('org')}, {record['recorded']})")
    result.ok = True
    return result


def _member_event(member: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """A member's full access event: its own fields, the batch's agent and recorded time (as the services
    project it, ``services/audit/batches.py``)."""
    entity = member.get("entity") or {}
    return {**member, "recorded": record["recorded"], "agent": record["agent"], "entity": entity}


__all__ = ["BATCH_KIND", "batch_event_receipt", "membership_from_proto", "verify_batch_receipt"]
