"""Batched access events: one ledger transaction per batch, one private receipt and one search row per patient.

Write path (:func:`record_batch`): each event becomes a *member* ``{"id", ...the accesslog:Record input}``
with a fresh 32-byte salt; its leaf is ``salt || canonical member JSON``; the batch root is the RFC 9162
Merkle root of the leaves (``SHA-256(0x00 || leaf)`` per leaf). The leaves are written off-chain first
(``OffchainStore.stage_access_batch``), then ``accessbatch:RecordBatch`` commits the root, the count and
the counts per outcome (no pseudonym on the ledger). A refused or failed submit deletes the staged leaves:
nothing is written for it. The agent and the recorded time of every member are the batch's (from the
caller's certificate and the transaction), so a member's full access event is
:func:`member_event` (member + batch record).

Projection (:func:`rows_from_batch`): when an ``AccessBatchRecorded`` event is applied, the staged
leaves of its root are read back, their Merkle root and count are checked against the ledger record,
and one :class:`AccessEventIndex` row is written per member. Missing or altered leaves project
nothing for the batch and are logged (the count on the ledger says what is missing).

Receipts (:func:`membership`): a member's salt, member JSON, position and audit path to the root; with
the ledger inclusion proof of the batch transaction, ``ciphercare.sdk.batch_receipts`` verifies it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ciphercare.consent import canonical
from ciphercare.consent.cache import LRU
from ciphercare.consent.contracts import ERASURE_OUTCOME_DESC
from ciphercare.consent.contracts.accessbatch import ACCESSBATCH_CONTRACT, EVENT_ACCESS_BATCH_RECORDED
from ciphercare.consent.errors import ValidationError
from ciphercare.consent.model import AccessEventInput, AuditAgent, AuditEntity, consent_id, pid
from ciphercare.ledger.api import CommittedEvent, Principal, Receipt
from ciphercare.ledger.gateway import TransparencyLog
from ciphercare.ledger.transparency.merkle import MerkleTree
from ciphercare.services.platform.gateway import ContractHandles
from ciphercare.services.store import AccessEventIndex, OffchainStore

log = logging.getLogger("ciphercare.accesslog.batches")

SALT_BYTES = 32
_ID_DOMAIN = b"ciphercare/access-batch-member/v1\x00"
BATCH_EVENT_NAME = EVENT_ACCESS_BATCH_RECORDED


class BatchError(ValueError):
    """A member leaf or a batch does not have the shape this module writes."""


def member_id(salt: bytes) -> str:
    """A member's access-event id, derived from its salt (unique per member, reveals nothing)."""
    return "ae-" + hashlib.sha256(_ID_DOMAIN + salt).hexdigest()[:32]


#: Validated event shapes (an event with its pid and consent id blanked): a batch repeats one shape.
_SHAPES: LRU[bytes, bool] = LRU(256)
_ENTITY_KEYS = frozenset(AuditEntity.FIELDS)


def _dumps(value: Any) -> bytes:
    """Canonical JSON (the bytes ``consent.canonical.dumps`` gives) of an already validated value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def check_event_input(event: Any, path: str = "event") -> None:
    """Validate an ``accesslog:Record`` input (erasures refused), once per shape: pid and consent id apart."""
    if not isinstance(event, dict) or not isinstance(event.get("entity"), dict):
        AccessEventInput.from_dict(event, path)  # raises the precise error
        raise ValidationError(f"{path}: expected an object with an entity")
    entity = event["entity"]
    shape = _dumps({**event, "entity": {**entity, "pid": "pid-shape", "consent_id": None}}) + b"|" + \
        _dumps(sorted(entity))
    if _SHAPES.get(shape) is None:
        canonical.dumps(event)  # only JSON values this project's canonical form allows
        data = AccessEventInput.from_dict({**event, "entity": {**entity, "pid": "pid-shape", "consent_id": None}},
                                          path)
        if data.outcome_desc == ERASURE_OUTCOME_DESC:
            raise ValidationError(f"{path}: an erasure event is never batched (it has its own transaction)")
        if entity.get("detail_sha256") is not None:  # the privacy projection reads document refs from Record
            raise ValidationError(f"{path}.entity.detail_sha256: an event with a detail document is never batched")
        if not set(entity) <= _ENTITY_KEYS:
            raise ValidationError(f"{path}.entity: unknown field(s) {sorted(set(entity) - _ENTITY_KEYS)}")
        _SHAPES.put(shape, True)
    pid(entity.get("pid"), f"{path}.entity.pid")
    if entity.get("consent_id") is not None:
        consent_id(entity["consent_id"], f"{path}.entity.consent_id")


def make_leaf(event_input: dict[str, Any], salt: bytes | None = None) -> bytes:
    """The salted leaf of one access event (``accesslog:Record`` input shape, with a pid; erasures refused)."""
    check_event_input(event_input)
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    if len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes")
    return salt + _dumps({"id": member_id(salt), **event_input})


def parse_leaf(leaf: bytes) -> tuple[bytes, dict[str, Any]]:
    """(salt, member) of a leaf, checked: canonical JSON, the id its salt gives, a valid Record input."""
    if len(leaf) <= SALT_BYTES:
        raise BatchError("leaf is too short")
    salt, body = leaf[:SALT_BYTES], leaf[SALT_BYTES:]
    try:
        member = json.loads(body)
    except ValueError as exc:
        raise BatchError(f"member is not JSON: {exc}") from None
    if not isinstance(member, dict) or _dumps(member) != body:
        raise BatchError("member is not a canonical JSON object")
    if member.get("id") != member_id(salt):
        raise BatchError("member id does not match its salt")
    try:
        check_event_input({k: v for k, v in member.items() if k != "id"}, "member")
    except ValidationError as exc:
        raise BatchError(str(exc)) from None
    return salt, member


def member_event(member: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """A member's full access event (``AccessEvent.to_dict`` shape): the member's fields (validated by
    :func:`parse_leaf` or :func:`make_leaf`), the batch's agent and recorded time (validated by the contract)."""
    entity = member["entity"]
    return {
        "id": member["id"], "type": member["type"], "subtype": member["subtype"], "action": member["action"],
        "recorded": record["recorded"], "outcome": member["outcome"], "outcome_desc": member.get("outcome_desc", ""),
        "purpose_of_use": member.get("purpose_of_use"), "agent": record["agent"], "source": member["source"],
        "entity": {"pid": entity.get("pid"), "consent_id": entity.get("consent_id"),
                   "model_sha256": entity.get("model_sha256"), "data_classes": list(entity.get("data_classes", [])),
                   "detail_sha256": entity.get("detail_sha256")},
    }


def batch_root(leaves: Sequence[bytes]) -> MerkleTree:
    return MerkleTree.from_leaves(leaves)


@dataclass
class RecordedBatch:
    """A committed batch: its ledger record and receipt, its leaves and tree (for each member's receipt)."""

    record: dict[str, Any]
    receipt: Receipt
    leaves: list[bytes]
    tree: MerkleTree

    def event_id(self, position: int) -> str:
        return member_id(self.leaves[position][:SALT_BYTES])

    def membership(self, position: int) -> dict[str, Any]:
        return membership(self.leaves, position, self.record["id"], self.tree)


def membership(leaves: Sequence[bytes], position: int, batch_id: str, tree: MerkleTree | None = None
               ) -> dict[str, Any]:
    """What a member's receipt carries besides the ledger proof: salt, member JSON, position, path, root."""
    tree = tree or batch_root(leaves)
    leaf = leaves[position]
    return {
        "batch_id": batch_id,
        "root": tree.root().hex(),
        "batch_size": len(leaves),
        "position": position,
        "salt_b64": base64.b64encode(leaf[:SALT_BYTES]).decode("ascii"),
        "member_json": leaf[SALT_BYTES:].decode("utf-8"),
        "audit_path": [h.hex() for h in tree.inclusion_proof(position)],
    }


def membership_to_proto(m: dict[str, Any]) -> Any:
    """A membership as the ``AccessBatchMembership`` message (Score outcomes, inclusion proofs)."""
    from ciphercare.v1 import common_pb2

    return common_pb2.AccessBatchMembership(
        batch_id=m["batch_id"], root=m["root"], batch_size=m["batch_size"], position=m["position"],
        salt=base64.b64decode(m["salt_b64"]), member_json=m["member_json"],
        audit_path=[bytes.fromhex(h) for h in m["audit_path"]])


def _outcome_counts(leaves: Sequence[bytes]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for leaf in leaves:
        outcome = json.loads(leaf[SALT_BYTES:])["outcome"]
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


async def record_batch(handles: ContractHandles, store: OffchainStore, principal: Principal,
                       events: Sequence[dict[str, Any]], observer: str) -> RecordedBatch:
    """Stage the members off-chain, commit their root in one transaction, project one row per member.

    A refused or failed submit deletes the staged members and re-raises: nothing is written for it.
    """
    import asyncio

    if not events:
        raise ValueError("a batch needs at least one event")
    leaves = [make_leaf(e) for e in events]
    tree = batch_root(leaves)
    root = tree.root().hex()
    await store.run(store.stage_access_batch, root, leaves)
    try:
        receipt = await handles.contract(principal, ACCESSBATCH_CONTRACT).submit("RecordBatch", handles.arg(
            {"root": root, "count": len(leaves), "outcomes": _outcome_counts(leaves), "observer": observer}))
    except BaseException:
        await asyncio.shield(store.run(store.drop_access_batch, root))
        raise
    record = json.loads(receipt.result)
    batch = RecordedBatch(record, receipt, leaves, tree)
    # No inline projection: the projection runner applies the batch off the event loop, and readers that must
    # see it (Search, Get, proofs by event id) bring the projection up to the ledger first (read_committed).
    return batch


def rows_from_batch(event: CommittedEvent, leaves: Sequence[bytes], *, checked: bool = False
                    ) -> list[AccessEventIndex]:
    """One search row per member of a committed batch, or none if the staged members do not match its root.

    ``checked``: the leaves are the ones this process just made (the inline projection), not re-parsed.
    """
    record = json.loads(event.payload)
    if len(leaves) != record["count"]:
        log.error("access batch %s (seq %d): %d members kept off-chain, the ledger records %d",
                  record.get("id"), event.seq, len(leaves), record["count"])
        return []
    if batch_root(leaves).root().hex() != record["root"]:
        log.error("access batch %s (seq %d): the members kept off-chain do not hash to the root on the ledger",
                  record.get("id"), event.seq)
        return []
    AuditAgent.from_dict(record["agent"], "batch.agent")
    rows: list[AccessEventIndex] = []
    recorded_ms = int(datetime.fromisoformat(record["recorded"].replace("Z", "+00:00")).timestamp() * 1000)
    agent = record["agent"]
    for position, leaf in enumerate(leaves):
        try:
            member = json.loads(leaf[SALT_BYTES:]) if checked else parse_leaf(leaf)[1]
        except BatchError as exc:
            log.error("access batch %s (seq %d): member %d is malformed: %s", record.get("id"), event.seq,
                      position, exc)
            return []
        full = member_event(member, record)
        rows.append(AccessEventIndex(
            seq=event.seq, event_id=full["id"], tx_id=event.tx_id, recorded_ms=recorded_ms,
            pid=full["entity"]["pid"] or "", agent_subject=agent["subject"], agent_org=agent["org"],
            purpose=full.get("purpose_of_use") or "", outcome=full["outcome"], event_json=_dumps(full),
            member=position))
    return rows


def project_batches(store: OffchainStore, events: Sequence[CommittedEvent], again: bool = False
                    ) -> list[AccessEventIndex]:
    """The rows of every ``AccessBatchRecorded`` event in ``events`` (their members read from the store).

    Batches already projected are skipped unless ``again`` (Watch streams them whether projected or not).
    """
    rows: list[AccessEventIndex] = []
    for event in events:
        if event.name == BATCH_EVENT_NAME and (again or not store.has_access_rows(event.seq)):
            rows.extend(rows_from_batch(event, store.access_batch_leaves(json.loads(event.payload)["root"])))
    return rows


def membership_for_row(store: OffchainStore, log_: TransparencyLog, row: AccessEventIndex) -> dict[str, Any] | None:
    """A projected batch member's membership (for portal and console receipts); None for a Record event."""
    if row.member < 0:
        return None
    records = [json.loads(e.payload) for e in log_.entry(row.seq).events if e.name == BATCH_EVENT_NAME]
    if len(records) != 1:
        return None
    leaves = store.access_batch_leaves(records[0]["root"])
    if row.member >= len(leaves) or member_id(leaves[row.member][:SALT_BYTES]) != row.event_id:
        return None
    return membership(leaves, row.member, records[0]["id"])


__all__ = [
    "BATCH_EVENT_NAME", "BatchError", "RecordedBatch", "make_leaf", "member_event", "member_id", "membership",
    "membership_for_row", "membership_to_proto", "parse_leaf", "project_batches", "record_batch", "rows_from_batch",
]
