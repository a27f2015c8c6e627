"""Proof receipts: a JSON document anyone can verify offline.

A receipt holds the signed checkpoint note, the log's verifier key, the ledger
leaf and its RFC 9162 inclusion proof. :func:`verify_receipt` checks, with no
network: the Ed25519 signature of the note under the verifier key (a key the
holder pinned; without one it warns, with the fix), that SHA-256(0x00 || leaf)
plus the audit path leads to the signed root, that the leaf is the transaction
the receipt talks about, and that EVERY field a person reads on the receipt
(the event or consent, the transaction, the checkpoint summary, the statement)
equals what the leaf says: a mismatch is refused naming the field. A receipt
carries no verification claims of its own (such a field is refused).

:func:`verify_write_receipt` does the same for the ``LedgerReceipt`` every
write returns, against the record the write returned (the SDK calls it on
receipt).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from google.protobuf.message import Message

from ciphercare.ledger.transparency.checkpoint import CheckpointError, CheckpointVerifier
from ciphercare.ledger.transparency.merkle import leaf_hash, verify_inclusion
from ciphercare.sdk.leaf import (
    LeafError,
    access_event_message,
    consent_message,
    differences,
    parse_leaf,
    recorded_events,
    written_consent,
)
from ciphercare.v1 import access_log_pb2, common_pb2, consent_pb2

RECEIPT_TYPE = "ciphercare.receipt.v1"
HOW_TO_VERIFY = (
    "Offline: `ciphercare receipt verify <file> --vkey <the log's verifier key>` (get the key from the operator "
    "and pin it; never trust the one inside the receipt alone). By hand: verify the Ed25519 signature of "
    "checkpoint.signed_note with the verifier key (C2SP signed note), hash the leaf as SHA-256(0x00 || leaf), fold "
    "in inclusion_proof.audit_path per RFC 9162 section 2.1.3.2, compare with the note's root hash, then compare "
    "the event or consent shown with the record inside the leaf (proto/ciphercare/v1/common.proto, leaf format)."
)
#: What each kind of receipt says; the statement is checked like every other field.
STATEMENTS = {
    "access-event": "This access event is recorded on the ciphercare ledger.",
    "consent-grant": "This consent grant is recorded on the ciphercare ledger.",
    "consent-revocation": "This consent revocation is recorded on the ciphercare ledger.",
    "consent-confirmation": "This consent confirmation is recorded on the ciphercare ledger.",
}
#: The ledger function behind each kind of consent receipt.
CONSENT_FUNCTIONS = {"consent-grant": "Grant", "consent-revocation": "Revoke", "consent-confirmation": "Confirm"}
RECEIPT_FIELDS = frozenset({
    "type", "kind", "issued_at", "statement", "event", "consent", "transaction", "log", "checkpoint",
    "inclusion_proof", "inclusion_proof_unavailable", "how_to_verify",
})
NO_PINNED_KEY_WARNING = (
    "no verifier key was pinned: the receipt was checked against the key it carries itself, which shows only "
    "that it is self-consistent, not that it comes from your ledger. Fix: ask the operator for the log's "
    "verifier key (ciphercare receipt vkey on the ledger host) and pass it with --vkey (SDK: vkey=...)."
)


class ReceiptError(ValueError):
    """The receipt is malformed."""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def proof_section(proof: access_log_pb2.GetInclusionProofResponse | common_pb2.LedgerReceipt) -> dict[str, Any]:
    """The inclusion-proof part of a receipt (from GetInclusionProof, or from a write's LedgerReceipt)."""
    if isinstance(proof, common_pb2.LedgerReceipt):
        index, size, hashes = proof.sequence, proof.checkpoint.tree_size, list(proof.inclusion_proof)
    else:
        index, size, hashes = proof.leaf_index, proof.tree_size, list(proof.hashes)
    return {
        "leaf_index": index,
        "tree_size": size,
        "audit_path": [_b64(h) for h in hashes],
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
    return {
        "type": RECEIPT_TYPE,
        "kind": "access-event",
        "issued_at": _now_iso(),
        "statement": STATEMENTS["access-event"],
        "event": MessageToDict(event, preserving_proto_field_name=True),
        "transaction": {"tx_id": event.tx_id, "leaf_index": event.sequence},
        "log": {"origin": proof.checkpoint.origin, "verifier_key": verifier_key},
        "checkpoint": checkpoint_section(proof.checkpoint),
        "inclusion_proof": proof_section(proof),
        "how_to_verify": HOW_TO_VERIFY,
    }


def consent_change_receipt(change: str, consent: consent_pb2.Consent, ledger: common_pb2.LedgerReceipt,
                           verifier_key: str, proof: access_log_pb2.GetInclusionProofResponse | None = None,
                           proof_refusal: str = "") -> dict[str, Any]:
    """A receipt for a grant, revocation or confirmation: the write's own receipt carries the proof.

    ``proof`` (a separately fetched inclusion proof) is used only when the write receipt has no leaf.
    """
    kind = f"consent-{change}"
    receipt: dict[str, Any] = {
        "type": RECEIPT_TYPE,
        "kind": kind,
        "issued_at": _now_iso(),
        "statement": STATEMENTS.get(kind, f"This consent {change} is recorded on the ciphercare ledger."),
        "consent": MessageToDict(consent, preserving_proto_field_name=True),
        "transaction": {"tx_id": ledger.tx_id, "leaf_index": ledger.sequence},
        "log": {"origin": ledger.checkpoint.origin, "verifier_key": verifier_key},
    }
    if ledger.leaf:
        receipt["checkpoint"] = checkpoint_section(ledger.checkpoint)
        receipt["inclusion_proof"] = proof_section(ledger)
    elif proof is not None:
        receipt["checkpoint"] = checkpoint_section(proof.checkpoint)
        receipt["inclusion_proof"] = proof_section(proof)
    else:
        receipt["checkpoint"] = checkpoint_section(ledger.checkpoint)
        receipt["inclusion_proof"] = None
        receipt["inclusion_proof_unavailable"] = proof_refusal or "the service returned no proof"
    receipt["how_to_verify"] = HOW_TO_VERIFY
    return receipt


@dataclass
class ReceiptCheck:
    """What :func:`verify_receipt` established."""

    ok: bool
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tree_size: int = 0
    root_hash_hex: str = ""


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise ReceiptError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ReceiptError(f"{what} is not valid base64") from None


def _section(receipt: dict[str, Any], name: str) -> dict[str, Any]:
    value = receipt.get(name)
    if not isinstance(value, dict):
        raise ReceiptError(f"{name} is missing or not an object")
    return value


def _parse(shown: Any, message: Message, what: str) -> Message:
    if not isinstance(shown, dict):
        raise ReceiptError(f"{what} is missing or not an object")
    try:
        return ParseDict(shown, message)
    except (ParseError, ValueError, TypeError) as exc:
        raise ReceiptError(f"{what} is malformed: {str(exc)[:200]}") from None


#: The kind of a receipt for one member of an access batch (``ciphercare.sdk.batch_receipts``).
BATCH_KIND = "access-event-batched"


def verify_receipt(receipt: dict[str, Any], trusted_vkey: str | None = None) -> ReceiptCheck:
    """Verify a receipt offline (see the module docstring); ``trusted_vkey`` is the key you pinned.

    A batched access-event receipt is verified by :func:`ciphercare.sdk.batch_receipts.verify_batch_receipt`.
    """
    if receipt.get("type") != RECEIPT_TYPE:
        raise ReceiptError(f"not a {RECEIPT_TYPE} document")
    if receipt.get("kind") == BATCH_KIND:
        from ciphercare.sdk.batch_receipts import verify_batch_receipt

        return verify_batch_receipt(receipt, trusted_vkey)
    result, entry, index = verify_ledger_part(receipt, trusted_vkey, RECEIPT_FIELDS, STATEMENTS)
    if entry is None:
        return result
    kind = str(receipt["kind"])
    try:
        problems = _record_problems(receipt, kind, entry, index)
    except ReceiptError:
        raise
    except (LeafError, KeyError, ValueError, TypeError) as exc:
        problems = [f"the leaf's record cannot be read: {str(exc)[:200]}"]
    if problems:
        result.problems.extend(problems)
        return result
    result.checks.append("every field shown on the receipt equals the ledger's record")
    result.ok = True
    return result


def verify_ledger_part(receipt: dict[str, Any], trusted_vkey: str | None, fields: frozenset[str],
                       statements: dict[str, str]) -> tuple[ReceiptCheck, dict[str, Any] | None, int]:
    """The checks every receipt kind shares: only ``fields``, the kind's statement, the signed checkpoint,
    the RFC 9162 inclusion of the leaf and the transaction it names.

    Returns the check so far (never ``ok``), the parsed leaf (None when a check failed: the problem is in the
    check) and the leaf's index; the caller compares the record the receipt shows with the leaf.
    """
    result = ReceiptCheck(ok=False)
    if receipt.get("type") != RECEIPT_TYPE:
        raise ReceiptError(f"not a {RECEIPT_TYPE} document")
    unknown = sorted(str(k)[:40] for k in receipt if k not in fields)
    if unknown:
        result.problems.append(
            f"field(s) {', '.join(unknown)} are not part of a receipt (a receipt carries no verification claims; "
            "verify it yourself)"
        )
        return result, None, -1
    kind = receipt.get("kind")
    if kind not in statements:
        raise ReceiptError(f"kind {str(kind)[:40]!r} is not a receipt kind ({', '.join(sorted(statements))})")
    if receipt.get("statement") != statements[kind]:
        result.problems.append(f"statement differs from what a {kind} receipt says")
        return result, None, -1
    log = _section(receipt, "log")
    vkey = log.get("verifier_key")
    if trusted_vkey is None:
        result.warnings.append(NO_PINNED_KEY_WARNING)
        if not isinstance(vkey, str) or not vkey:
            raise ReceiptError("log.verifier_key is missing (and no key was pinned)")
    elif isinstance(vkey, str) and vkey and vkey != trusted_vkey:
        result.problems.append("log.verifier_key is not the key you pinned")
        return result, None, -1
    section = _section(receipt, "checkpoint")
    key = trusted_vkey or vkey
    if not isinstance(key, str):
        raise ReceiptError("log.verifier_key must be a string")
    try:
        verifier = CheckpointVerifier.from_vkey(key)
        note = section["signed_note"]
        checkpoint = verifier.verify(note.encode("utf-8"))
    except (KeyError, TypeError, AttributeError):
        raise ReceiptError("checkpoint.signed_note is missing") from None
    except (CheckpointError, ValueError) as exc:
        result.problems.append(f"checkpoint.signed_note: signature does not verify: {exc}")
        return result, None, -1
    result.tree_size, result.root_hash_hex = checkpoint.size, checkpoint.root_hash.hex()
    shown_checkpoint = {"origin": checkpoint.origin, "tree_size": checkpoint.size,
                        "root_hash": checkpoint.root_hash.hex()}
    wrong = [f"checkpoint.{k}" for k, v in shown_checkpoint.items() if section.get(k) != v]
    if log.get("origin") != checkpoint.origin:
        wrong.append("log.origin")
    if wrong:
        result.problems.append(f"{', '.join(wrong)} differ(s) from the signed checkpoint")
        return result, None, -1
    result.checks.append(f"checkpoint signed by {verifier.key_name}: {checkpoint.origin}, tree size {checkpoint.size}")
    proof = receipt.get("inclusion_proof")
    if not isinstance(proof, dict):
        result.problems.append("no inclusion proof in this receipt: "
                               + str(receipt.get("inclusion_proof_unavailable") or "none given")[:200])
        return result, None, -1
    leaf = _unb64(proof.get("leaf"), "inclusion_proof.leaf")
    path = [_unb64(h, "inclusion_proof.audit_path") for h in proof.get("audit_path", [])]
    index, size = proof.get("leaf_index"), proof.get("tree_size")
    if type(index) is not int or type(size) is not int:
        raise ReceiptError("inclusion_proof.leaf_index and tree_size must be integers")
    if size != checkpoint.size:
        result.problems.append(f"inclusion_proof.tree_size is {size} but the checkpoint covers {checkpoint.size}")
        return result, None, -1
    if proof.get("leaf_hash") not in (None, leaf_hash(leaf).hex()):
        result.problems.append("inclusion_proof.leaf_hash is not the hash of the leaf")
        return result, None, -1
    if not verify_inclusion(leaf_hash(leaf), index, size, path, checkpoint.root_hash):
        result.problems.append("inclusion_proof: the audit path does not lead to the signed root")
        return result, None, -1
    result.checks.append(f"leaf {index} is included in the tree of size {size} (RFC 9162)")
    try:
        entry = parse_leaf(leaf)
    except LeafError as exc:
        result.problems.append(f"inclusion_proof.leaf: {exc}")
        return result, None, -1
    transaction = _section(receipt, "transaction")
    wrong = []
    if transaction.get("tx_id") != entry["tx_id"]:
        wrong.append("transaction.tx_id")
    if transaction.get("leaf_index") != index:
        wrong.append("transaction.leaf_index")
    if wrong:
        result.problems.append(f"{', '.join(wrong)} differ(s) from the leaf")
        return result, None, -1
    digest = hashlib.sha256(leaf).hexdigest()[:16]
    result.checks.append(f"the leaf is transaction {entry['tx_id']} (leaf sha256 {digest}…)")
    return result, entry, index


def _record_problems(receipt: dict[str, Any], kind: str, entry: dict[str, Any], index: int) -> list[str]:
    """The fields of the event or consent shown on the receipt that differ from the leaf."""
    if kind == "access-event":
        shown_event = _parse(receipt.get("event"), access_log_pb2.AccessEvent(), "event")
        matches = [e for e in recorded_events(entry) if e.get("id") == shown_event.id]  # type: ignore[attr-defined]
        if not matches:
            return ["event.id: the leaf records no access event with this id"]
        expected: Message = access_event_message(matches[0], index, entry["tx_id"])
        return [f"event.{name} differs from the ledger" for name in differences(expected, shown_event)]
    shown_consent = _parse(receipt.get("consent"), consent_pb2.Consent(), "consent")
    if entry["contract"] != "consent" or entry["function"] != CONSENT_FUNCTIONS[kind]:
        return [f"kind: the leaf is {entry['contract']}:{entry['function']}, not a {kind}"]
    record = written_consent(entry)
    if record is None:
        return ["consent: the leaf writes no consent"]
    expected = consent_message(record)
    return [f"consent.{name} differs from the ledger" for name in differences(expected, shown_consent)]


def verify_write_receipt(receipt: common_pb2.LedgerReceipt, verifier: CheckpointVerifier,
                         written: Message | None = None) -> str:
    """Verify a write's LedgerReceipt: signed checkpoint, inclusion of the leaf, its tx id, and (``written``:
    the Consent or AccessEvent the write returned) that the record equals what the leaf wrote.

    Returns the tx id; raises :class:`ReceiptError` naming what does not hold.
    """
    try:
        checkpoint = verifier.verify(receipt.checkpoint.signed_note.encode("utf-8"))
    except (CheckpointError, ValueError) as exc:
        raise ReceiptError(f"receipt.checkpoint: signature does not verify: {exc}") from None
    if checkpoint.size != receipt.checkpoint.tree_size or checkpoint.root_hash != receipt.checkpoint.root_hash:
        raise ReceiptError("receipt.checkpoint: tree_size/root_hash differ from the signed note")
    if not receipt.leaf:
        raise ReceiptError("receipt.leaf is missing: the service returned no proof of this write")
    if not verify_inclusion(leaf_hash(receipt.leaf), receipt.sequence, checkpoint.size,
                            list(receipt.inclusion_proof), checkpoint.root_hash):
        raise ReceiptError(f"receipt.inclusion_proof: leaf {receipt.sequence} is not in the signed tree")
    try:
        entry = parse_leaf(receipt.leaf)
    except LeafError as exc:
        raise ReceiptError(f"receipt.leaf: {exc}") from None
    if entry["tx_id"] != receipt.tx_id:
        raise ReceiptError("receipt.tx_id differs from the leaf")
    if isinstance(written, consent_pb2.Consent):
        record = written_consent(entry)
        if record is None:
            raise ReceiptError("receipt.leaf writes no consent")
        wrong = differences(consent_message(record), written)
        if wrong:
            raise ReceiptError(f"consent.{wrong[0]} differs from what the ledger recorded")
    elif isinstance(written, access_log_pb2.AccessEvent):
        matches = [e for e in recorded_events(entry) if e.get("id") == written.id]
        if not matches:
            raise ReceiptError("receipt.leaf records no such access event")
        wrong = differences(access_event_message(matches[0], receipt.sequence, receipt.tx_id), written)
        if wrong:
            raise ReceiptError(f"event.{wrong[0]} differs from what the ledger recorded")
    return receipt.tx_id
