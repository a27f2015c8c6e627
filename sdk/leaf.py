"""Read what a ledger leaf says, on the client: the records a transaction wrote and the events it emitted.

A leaf (leaf version 1, see proto/ciphercare/v1/common.proto ``LedgerReceipt``) is canonical JSON; the
consent record a Grant / Revoke / Confirm wrote is the value of its ``consent`` key, the access event a
Record wrote is the payload of its ``AccessRecorded`` event. This module turns those into the protobuf
messages the services return, so a receipt or a response can be compared field by field with the leaf
(:func:`differences`). It repeats the services' conversion on purpose: the SDK trusts no server code;
tests/audit/test_receipts.py checks both conversions agree.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from ciphercare.v1 import access_log_pb2, common_pb2, consent_pb2

CONSENT_KEY_PREFIX = "\x00consent\x00"
ACCESS_RECORDED = "AccessRecorded"
LEAF_VERSION = 1

_DECISIONS = {"permit": consent_pb2.CONSENT_DECISION_PERMIT, "deny": consent_pb2.CONSENT_DECISION_DENY}
_STATUSES = {
    "active": consent_pb2.CONSENT_STATUS_ACTIVE,
    "inactive": consent_pb2.CONSENT_STATUS_INACTIVE,
    "proposed": consent_pb2.CONSENT_STATUS_PROPOSED,
}
_OUTCOMES = {
    "success": access_log_pb2.ACCESS_OUTCOME_SUCCESS,
    "denied": access_log_pb2.ACCESS_OUTCOME_DENIED,
    "error": access_log_pb2.ACCESS_OUTCOME_ERROR,
}


class LeafError(ValueError):
    """The leaf is not what a ciphercare transaction leaf looks like."""


def parse_leaf(leaf: bytes) -> dict[str, Any]:
    """The leaf's JSON object (its tx_id, contract, function, writes and events are checked for shape)."""
    try:
        obj = json.loads(leaf)
    except (ValueError, RecursionError):
        raise LeafError("the leaf is not JSON") from None
    if not isinstance(obj, dict) or obj.get("v") != LEAF_VERSION:
        raise LeafError(f"the leaf is not a version-{LEAF_VERSION} ciphercare leaf")
    for name, kind in (("tx_id", str), ("contract", str), ("function", str), ("writes", list), ("events", list)):
        if not isinstance(obj.get(name), kind):
            raise LeafError(f"the leaf has no valid {name!r}")
    return obj


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise LeafError("a leaf value is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise LeafError("a leaf value is not valid base64") from None


def written_consent(leaf: dict[str, Any]) -> dict[str, Any] | None:
    """The consent record the transaction wrote (None when it wrote none)."""
    for write in leaf["writes"]:
        if isinstance(write, dict) and str(write.get("key", "")).startswith(CONSENT_KEY_PREFIX):
            value = write.get("value_b64")
            if value is None:
                return None
            record = json.loads(_unb64(value))
            if not isinstance(record, dict):
                raise LeafError("the consent the leaf wrote is not a JSON object")
            return record
    return None


def recorded_events(leaf: dict[str, Any]) -> list[dict[str, Any]]:
    """The access events the transaction recorded (AccessRecorded payloads)."""
    out = []
    for event in leaf["events"]:
        if isinstance(event, dict) and event.get("name") == ACCESS_RECORDED:
            payload = json.loads(_unb64(event.get("payload_b64")))
            if isinstance(payload, dict):
                out.append(payload)
    return out


def _timestamp(text: str | None) -> Timestamp | None:
    if not text:
        return None
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC))
    return ts


def _actor(actor: dict[str, Any] | None) -> common_pb2.Actor:
    if not actor:
        return common_pb2.Actor()
    return common_pb2.Actor(subject=actor.get("subject", ""), organization=actor.get("org", ""),
                            roles=list(actor.get("roles", [])), client_id=actor.get("client", ""))


def _period(period: dict[str, Any] | None) -> common_pb2.Period:
    message = common_pb2.Period()
    for name in ("start", "end"):
        ts = _timestamp((period or {}).get(name))
        if ts is not None:
            getattr(message, name).CopyFrom(ts)
    return message


def _provision(p: dict[str, Any]) -> consent_pb2.ConsentProvision:
    return consent_pb2.ConsentProvision(
        type=_DECISIONS[p["type"]], purposes=p.get("purposes", []), data_classes=p.get("data_classes", []),
        actors=p.get("actors", []), period=_period(p.get("period")),
        provisions=[_provision(c) for c in p.get("provisions", [])],
    )


def consent_message(record: dict[str, Any]) -> consent_pb2.Consent:
    """The Consent message the services return for a stored consent record."""
    recorded_by = record.get("recorded_by") or {}
    authority = record.get("authority")
    if not authority:
        roles = set(recorded_by.get("roles", []))
        authority = "patient" if "patient" in roles and not roles & {"hospital", "clinician"} else "staff"
    message = consent_pb2.Consent(
        id=record["id"], version=record["version"], status=_STATUSES[record["status"]], pid=record["pid"],
        grantee_organization=record["grantee_org"], decision=_DECISIONS[record["decision"]],
        purposes=record.get("purposes", []), data_classes=record.get("data_classes", []),
        period=_period(record.get("period")), provisions=[_provision(p) for p in record.get("provisions", [])],
        document_sha256=record.get("document_sha256", ""), recorded_by=_actor(recorded_by),
        revocation_reason=record.get("revocation_reason") or "", evidence_sha256=record.get("evidence_sha256") or "",
        authority=authority, recorded_by_organization=recorded_by.get("org", ""),
    )
    for name in ("recorded_at", "revoked_at", "confirmed_at"):
        ts = _timestamp(record.get(name))
        if ts is not None:
            getattr(message, name).CopyFrom(ts)
    for name in ("revoked_by", "confirmed_by"):
        if record.get(name):
            getattr(message, name).CopyFrom(_actor(record[name]))
    return message


def access_event_message(event: dict[str, Any], seq: int, tx_id: str) -> access_log_pb2.AccessEvent:
    """The AccessEvent message the services return for a recorded event (leaf ``seq``, transaction ``tx_id``)."""
    entity = event.get("entity") or {}
    message = access_log_pb2.AccessEvent(
        id=event["id"], sequence=seq, type=event["type"], subtype=event.get("subtype", ""), action=event["action"],
        outcome=_OUTCOMES[event["outcome"]], outcome_description=event.get("outcome_desc") or "",
        purpose_of_use=event.get("purpose_of_use") or "", agent=_actor(event.get("agent")),
        source_observer=(event.get("source") or {}).get("observer", ""), pid=entity.get("pid") or "",
        consent_id=entity.get("consent_id") or "", model_sha256=entity.get("model_sha256") or "",
        data_classes=entity.get("data_classes", []), detail_sha256=entity.get("detail_sha256") or "", tx_id=tx_id,
        repeat_count=event.get("repeat_count") or 0, consent_basis=event.get("consent_basis") or "",
    )
    ts = _timestamp(event.get("recorded"))
    if ts is not None:
        message.recorded.CopyFrom(ts)
    return message


def differences(expected: Message, got: Message, prefix: str = "") -> list[str]:
    """The names of the fields (dotted paths) where ``got`` differs from ``expected``."""
    out: list[str] = []
    for field in expected.DESCRIPTOR.fields:
        name = f"{prefix}{field.name}"
        a, b = getattr(expected, field.name), getattr(got, field.name)
        if field.message_type is not None and not _is_repeated(field):
            if expected.HasField(field.name) != got.HasField(field.name):
                out.append(name)
            elif expected.HasField(field.name):
                out.extend(differences(a, b, name + "."))
        elif list(a) != list(b) if _is_repeated(field) else a != b:
            out.append(name)
    return out


def _is_repeated(field: Any) -> bool:
    label = getattr(field, "label", None)
    if label is not None:
        return bool(label == field.LABEL_REPEATED)
    return bool(field.is_repeated)  # pragma: no cover - newer protobuf
