"""Proof receipts: a JSON document anyone can verify offline.

A receipt holds the signed checkpoint note, the log's verifier key, the ledger
leaf and its RFC 9162 inclusion proof. :func:`verify_receipt` checks, with no
network: the Ed25519 signature of the note under the verifier key (optionally a
key the holder already trusts), that SHA-256(0x00 || leaf) plus the audit path
leads to the signed root, and that the leaf is the transaction the receipt talks
about (same tx id, and for access events the event id in its committed event).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict

from ciphercare.ledger.transparency.checkpoint import CheckpointError, CheckpointVerifier
from ciphercare.ledger.transparency.merkle import leaf_hash, verify_inclusion
from ciphercare.v1 import access_log_pb2, common_pb2, consent_pb2

RECEIPT_TYPE = "ciphercare.receipt.v1"
HOW_TO_VERIFY = (
    "Offline: `ciphercare receipt verify <file>` (add --vkey to pin the log's key). By hand: verify the "
    "Ed25519 signature of checkpoint.signed_note with log.verifier_key (C2SP signed note), hash the leaf as "
    "SHA-256(0x00 || leaf), fold in inclusion_proof.audit_path per RFC 9162 section 2.1.3.2 and compare with "
    "the note's root hash."
)


class ReceiptError(ValueError):
    """The receipt is malformed."""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def proof_section(proof: access_log_pb2.GetInclusionProofResponse) -> dict[str, Any]:
    """The inclusion-proof part of a receipt."""
    return {
        "leaf_index": proof.leaf_index,
        "tree_size": proof.tree_size,
        "audit_path": [_b64(h) for h in proof.hashes],
        "leaf": _b64(proof.leaf),
        "leaf_hash": leaf_hash(proof.leaf).hex(),
    }


def checkpoint_section(checkpoint: common_pb2.Checkpoint) -> dict[str, Any]:
    return {
        "origin": checkpoint.origin,
        "tree_size": checkpoint.tree_size,
        "root_hash": checkpoint.root_hash.hex(),
        "signed_note": checkpoint.signed_note,
    }


def access_event_receipt(event: access_log_pb2.AccessEvent, proof: access_log_pb2.GetInclusionProofResponse,
                         verifier_key: str) -> dict[str, Any]:
    """A receipt proving that ``event`` is on the ledger."""
    receipt = {
        "type": RECEIPT_TYPE,
        "kind": "access-event",
        "issued_at": _now_iso(),
        "statement": "This access event is recorded on the ciphercare ledger.",
        "event": MessageToDict(event, preserving_proto_field_name=True),
        "transaction": {"tx_id": event.tx_id, "leaf_index": event.sequence},
        "log": {"origin": proof.checkpoint.origin, "verifier_key": verifier_key},
        "checkpoint": checkpoint_section(proof.checkpoint),
        "inclusion_proof": proof_section(proof),
        "how_to_verify": HOW_TO_VERIFY,
    }
    return receipt


def consent_change_receipt(change: str, consent: consent_pb2.Consent, ledger: common_pb2.LedgerReceipt,
                           verifier_key: str, proof: access_log_pb2.GetInclusionProofResponse | None,
                           proof_refusal: str = "") -> dict[str, Any]:
    """A receipt for a grant or revocation; without ``proof`` it says why the service refused one."""
    receipt: dict[str, Any] = {
        "type": RECEIPT_TYPE,
        "kind": f"consent-{change}",
        "issued_at": _now_iso(),
        "statement": f"This consent {change} is recorded on the ciphercare ledger.",
        "consent": MessageToDict(consent, preserving_proto_field_name=True),
        "transaction": {"tx_id": ledger.tx_id, "leaf_index": ledger.sequence},
        "log": {"origin": ledger.checkpoint.origin, "verifier_key": verifier_key},
    }
    if proof is not None:
        receipt["checkpoint"] = checkpoint_section(proof.checkpoint)
        receipt["inclusion_proof"] = proof_section(proof)
    else:
        receipt["checkpoint"] = checkpoint_section(ledger.checkpoint)
        receipt["inclusion_proof"] = None
        receipt["inclusion_proof_unavailable"] = proof_refusal
    receipt["how_to_verify"] = HOW_TO_VERIFY
    return receipt


@dataclass
class ReceiptCheck:
    """What :func:`verify_receipt` established."""

    ok: bool
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    tree_size: int = 0
    root_hash_hex: str = ""


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise ReceiptError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ReceiptError(f"{what} is not valid base64") from None


def verify_receipt(receipt: dict[str, Any], trusted_vkey: str | None = None) -> ReceiptCheck:
    """Verify a receipt offline; ``trusted_vkey`` pins the log key instead of trusting the receipt's own."""
    result = ReceiptCheck(ok=False)
    if receipt.get("type") != RECEIPT_TYPE:
        raise ReceiptError(f"not a {RECEIPT_TYPE} document")
    vkey = receipt.get("log", {}).get("verifier_key")
    if not isinstance(vkey, str) or not vkey:
        raise ReceiptError("log.verifier_key is missing")
    if trusted_vkey is not None and trusted_vkey != vkey:
        result.problems.append("the receipt's verifier key is not the trusted one")
        return result
    try:
        verifier = CheckpointVerifier.from_vkey(trusted_vkey or vkey)
        note = receipt["checkpoint"]["signed_note"]
        checkpoint = verifier.verify(note.encode("utf-8"))
    except (KeyError, TypeError, AttributeError):
        raise ReceiptError("checkpoint.signed_note is missing") from None
    except (CheckpointError, ValueError) as exc:
        result.problems.append(f"checkpoint signature does not verify: {exc}")
        return result
    result.tree_size, result.root_hash_hex = checkpoint.size, checkpoint.root_hash.hex()
    result.checks.append(f"checkpoint signed by {verifier.key_name}: {checkpoint.origin}, tree size {checkpoint.size}")
    proof = receipt.get("inclusion_proof")
    if not isinstance(proof, dict):
        result.problems.append("no inclusion proof in this receipt: "
                               + str(receipt.get("inclusion_proof_unavailable") or "none given"))
        return result
    leaf = _unb64(proof.get("leaf"), "inclusion_proof.leaf")
    path = [_unb64(h, "inclusion_proof.audit_path") for h in proof.get("audit_path", [])]
    index, size = proof.get("leaf_index"), proof.get("tree_size")
    if not isinstance(index, int) or not isinstance(size, int):
        raise ReceiptError("inclusion_proof.leaf_index and tree_size must be integers")
    if size != checkpoint.size:
        result.problems.append(f"the proof is for tree size {size} but the checkpoint covers {checkpoint.size}")
        return result
    if not verify_inclusion(leaf_hash(leaf), index, size, path, checkpoint.root_hash):
        result.problems.append("the inclusion proof does not lead to the signed root")
        return result
    result.checks.append(f"leaf {index} is included in the tree of size {size} (RFC 9162)")
    try:
        entry = json.loads(leaf)
    except ValueError:
        result.problems.append("the leaf is not JSON")
        return result
    tx_id = receipt.get("transaction", {}).get("tx_id")
    if entry.get("tx_id") != tx_id:
        result.problems.append("the leaf is a different transaction than the receipt names")
        return result
    result.checks.append(f"the leaf is transaction {tx_id}")
    if receipt.get("kind") == "access-event":
        event_id = receipt.get("event", {}).get("id")
        payloads = [base64.b64decode(e.get("payload_b64", "")) for e in entry.get("events", [])]
        if not any(json.loads(p).get("id") == event_id for p in payloads if p.startswith(b"{")):
            result.problems.append("the leaf does not record this access event")
            return result
        result.checks.append(f"the transaction records access event {event_id}")
    result.checks.append(f"leaf sha256 {hashlib.sha256(leaf).hexdigest()[:16]}…")
    result.ok = True
    return result
