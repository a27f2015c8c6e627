"""Protobuf <-> domain conversion, in symmetric pairs (``*_to_proto`` / ``*_from_proto``).

The domain side is the contracts' canonical JSON (dicts); the proto side is
``ciphercare.v1``. Each pair has a round-trip test in tests/services/test_convert.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from ciphercare.ledger.api import Checkpoint, Receipt
from ciphercare.v1 import access_log_pb2, common_pb2, consent_pb2

DECISION_TO_PROTO = {
    "permit": consent_pb2.CONSENT_DECISION_PERMIT,
    "deny": consent_pb2.CONSENT_DECISION_DENY,
}
DECISION_FROM_PROTO = {v: k for k, v in DECISION_TO_PROTO.items()}
STATUS_TO_PROTO = {
    "active": consent_pb2.CONSENT_STATUS_ACTIVE,
    "inactive": consent_pb2.CONSENT_STATUS_INACTIVE,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}
OUTCOME_TO_PROTO = {
    "success": access_log_pb2.ACCESS_OUTCOME_SUCCESS,
    "denied": access_log_pb2.ACCESS_OUTCOME_DENIED,
    "error": access_log_pb2.ACCESS_OUTCOME_ERROR,
}
OUTCOME_FROM_PROTO = {v: k for k, v in OUTCOME_TO_PROTO.items()}


class ConversionError(ValueError):
    """A request field cannot be turned into a domain value (maps to INVALID_ARGUMENT)."""


# Time -------------------------------------------------------------------


def iso_from_timestamp(ts: Timestamp) -> str:
    """RFC 3339 UTC with milliseconds, the contracts' time format."""
    moment = datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def timestamp_from_iso(text: str) -> Timestamp:
    ts = Timestamp()
    if not text:
        return ts
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConversionError(f"'{text}' is not an ISO-8601 time") from exc
    if moment.tzinfo is None:
        raise ConversionError(f"time '{text}' has no time zone")
    ts.FromDatetime(moment.astimezone(UTC))
    return ts


def timestamp_from_ms(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def ms_from_timestamp(ts: Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


# Common -----------------------------------------------------------------


def period_to_proto(period: dict[str, Any] | None) -> common_pb2.Period:
    message = common_pb2.Period()
    if period:
        if period.get("start"):
            message.start.CopyFrom(timestamp_from_iso(period["start"]))
        if period.get("end"):
            message.end.CopyFrom(timestamp_from_iso(period["end"]))
    return message


def period_from_proto(message: common_pb2.Period) -> dict[str, Any]:
    period: dict[str, Any] = {}
    if message.HasField("start"):
        period["start"] = iso_from_timestamp(message.start)
    if message.HasField("end"):
        period["end"] = iso_from_timestamp(message.end)
    return period


def actor_to_proto(actor: dict[str, Any] | None) -> common_pb2.Actor:
    if not actor:
        return common_pb2.Actor()
    return common_pb2.Actor(
        subject=actor.get("subject", ""),
        organization=actor.get("org", ""),
        roles=list(actor.get("roles", [])),
        client_id=actor.get("client", ""),
    )


def actor_from_proto(message: common_pb2.Actor) -> dict[str, Any]:
    actor: dict[str, Any] = {"subject": message.subject, "org": message.organization, "roles": list(message.roles)}
    if message.client_id:
        actor["client"] = message.client_id
    return actor


def checkpoint_to_proto(checkpoint: Checkpoint) -> common_pb2.Checkpoint:
    return common_pb2.Checkpoint(
        origin=checkpoint.origin,
        tree_size=checkpoint.size,
        root_hash=checkpoint.root_hash,
        timestamp=timestamp_from_ms(checkpoint.timestamp_ms),
        signed_note=checkpoint.note.decode("utf-8"),
        key_name=checkpoint.key_name,
    )


def checkpoint_from_proto(message: common_pb2.Checkpoint, key_id: bytes = b"") -> Checkpoint:
    """Rebuild the checkpoint fields; the note must still be verified by the caller."""
    return Checkpoint(
        origin=message.origin,
        size=message.tree_size,
        root_hash=message.root_hash,
        timestamp_ms=ms_from_timestamp(message.timestamp),
        note=message.signed_note.encode("utf-8"),
        key_name=message.key_name,
        key_id=key_id,
    )


def receipt_to_proto(receipt: Receipt) -> common_pb2.LedgerReceipt:
    return common_pb2.LedgerReceipt(
        tx_id=receipt.tx_id, sequence=receipt.seq, checkpoint=checkpoint_to_proto(receipt.checkpoint)
    )


# Consent ----------------------------------------------------------------


def _decision_from_proto(value: int, what: str) -> str:
    if value not in DECISION_FROM_PROTO:
        raise ConversionError(f"{what} must be CONSENT_DECISION_PERMIT or CONSENT_DECISION_DENY")
    return DECISION_FROM_PROTO[value]


def provision_to_proto(provision: dict[str, Any]) -> consent_pb2.ConsentProvision:
    return consent_pb2.ConsentProvision(
        type=DECISION_TO_PROTO[provision["type"]],
        purposes=provision.get("purposes", []),
        data_classes=provision.get("data_classes", []),
        actors=provision.get("actors", []),
        period=period_to_proto(provision.get("period")),
        provisions=[provision_to_proto(p) for p in provision.get("provisions", [])],
    )


def provision_from_proto(message: consent_pb2.ConsentProvision) -> dict[str, Any]:
    provision: dict[str, Any] = {
        "type": _decision_from_proto(message.type, "provision.type"),
        "purposes": list(message.purposes),
        "data_classes": list(message.data_classes),
        "actors": list(message.actors),
        "provisions": [provision_from_proto(p) for p in message.provisions],
    }
    period = period_from_proto(message.period)
    if period:
        provision["period"] = period
    return provision


def consent_to_proto(record: dict[str, Any]) -> consent_pb2.Consent:
    message = consent_pb2.Consent(
        id=record["id"],
        version=record["version"],
        status=STATUS_TO_PROTO[record["status"]],
        pid=record["pid"],
        grantee_organization=record["grantee_org"],
        decision=DECISION_TO_PROTO[record["decision"]],
        purposes=record.get("purposes", []),
        data_classes=record.get("data_classes", []),
        period=period_to_proto(record.get("period")),
        provisions=[provision_to_proto(p) for p in record.get("provisions", [])],
        document_sha256=record.get("document_sha256", ""),
        recorded_by=actor_to_proto(record.get("recorded_by")),
        revocation_reason=record.get("revocation_reason") or "",
        evidence_sha256=record.get("evidence_sha256") or "",
    )
    if record.get("recorded_at"):
        message.recorded_at.CopyFrom(timestamp_from_iso(record["recorded_at"]))
    if record.get("revoked_at"):
        message.revoked_at.CopyFrom(timestamp_from_iso(record["revoked_at"]))
    if record.get("revoked_by"):
        message.revoked_by.CopyFrom(actor_to_proto(record["revoked_by"]))
    return message


def consent_from_proto(message: consent_pb2.Consent) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": message.id,
        "version": message.version,
        "status": STATUS_FROM_PROTO[message.status],
        "pid": message.pid,
        "grantee_org": message.grantee_organization,
        "decision": _decision_from_proto(message.decision, "decision"),
        "purposes": list(message.purposes),
        "data_classes": list(message.data_classes),
        "period": period_from_proto(message.period),
        "provisions": [provision_from_proto(p) for p in message.provisions],
        "document_sha256": message.document_sha256,
        "recorded_at": iso_from_timestamp(message.recorded_at) if message.HasField("recorded_at") else None,
        "recorded_by": actor_from_proto(message.recorded_by),
        "revoked_at": iso_from_timestamp(message.revoked_at) if message.HasField("revoked_at") else None,
        "revoked_by": actor_from_proto(message.revoked_by) if message.HasField("revoked_by") else None,
        "revocation_reason": message.revocation_reason or None,
        "evidence_sha256": message.evidence_sha256 or None,
    }
    return record


def grant_input_from_proto(request: consent_pb2.GrantRequest, document_sha256: str) -> dict[str, Any]:
    """The contract's Grant input from a request (the contract validates codes and identity)."""
    return {
        "pid": request.pid,
        "grantee_org": request.grantee_organization,
        "decision": _decision_from_proto(request.decision, "decision"),
        "purposes": list(request.purposes),
        "data_classes": list(request.data_classes),
        "period": period_from_proto(request.period),
        "provisions": [provision_from_proto(p) for p in request.provisions],
        "document_sha256": document_sha256,
    }


def decision_to_proto(decision: dict[str, Any], evaluated_at: str) -> consent_pb2.CheckResponse:
    response = consent_pb2.CheckResponse(
        decision=DECISION_TO_PROTO[decision["decision"]],
        consent_id=decision.get("consent_id") or "",
        reason=decision.get("reason", ""),
    )
    if evaluated_at:
        response.evaluated_at.CopyFrom(timestamp_from_iso(evaluated_at))
    return response


def decision_from_proto(message: consent_pb2.CheckResponse) -> dict[str, Any]:
    return {
        "decision": _decision_from_proto(message.decision, "decision"),
        "consent_id": message.consent_id or None,
        "reason": message.reason,
    }


# Access events ----------------------------------------------------------


def access_event_to_proto(event: dict[str, Any], seq: int, tx_id: str) -> access_log_pb2.AccessEvent:
    entity = event.get("entity", {})
    message = access_log_pb2.AccessEvent(
        id=event["id"],
        sequence=seq,
        type=event["type"],
        subtype=event.get("subtype", ""),
        action=event["action"],
        outcome=OUTCOME_TO_PROTO[event["outcome"]],
        outcome_description=event.get("outcome_desc") or "",
        purpose_of_use=event.get("purpose_of_use", ""),
        agent=actor_to_proto(event.get("agent")),
        source_observer=event.get("source", {}).get("observer", ""),
        pid=entity.get("pid", ""),
        consent_id=entity.get("consent_id") or "",
        model_sha256=entity.get("model_sha256") or "",
        data_classes=entity.get("data_classes", []),
        detail_sha256=entity.get("detail_sha256") or "",
        tx_id=tx_id,
    )
    if event.get("recorded"):
        message.recorded.CopyFrom(timestamp_from_iso(event["recorded"]))
    return message


def access_event_from_proto(message: access_log_pb2.AccessEvent) -> dict[str, Any]:
    if message.outcome not in OUTCOME_FROM_PROTO:
        raise ConversionError("outcome must be SUCCESS, DENIED or ERROR")
    entity: dict[str, Any] = {"pid": message.pid, "data_classes": list(message.data_classes)}
    for key, value in (
        ("consent_id", message.consent_id),
        ("model_sha256", message.model_sha256),
        ("detail_sha256", message.detail_sha256),
    ):
        if value:
            entity[key] = value
    event: dict[str, Any] = {
        "id": message.id,
        "type": message.type,
        "subtype": message.subtype,
        "action": message.action,
        "recorded": iso_from_timestamp(message.recorded) if message.HasField("recorded") else None,
        "outcome": OUTCOME_FROM_PROTO[message.outcome],
        "outcome_desc": message.outcome_description or None,
        "purpose_of_use": message.purpose_of_use,
        "agent": actor_from_proto(message.agent),
        "source": {"observer": message.source_observer},
        "entity": entity,
    }
    return event


def record_input_from_proto(request: access_log_pb2.RecordRequest, detail_sha256: str | None) -> dict[str, Any]:
    """The contract's Record input (no agent: the contract takes it from the caller)."""
    if request.outcome not in OUTCOME_FROM_PROTO:
        raise ConversionError("outcome must be ACCESS_OUTCOME_SUCCESS, _DENIED or _ERROR")
    entity: dict[str, Any] = {"pid": request.pid, "data_classes": list(request.data_classes)}
    if request.consent_id:
        entity["consent_id"] = request.consent_id
    if detail_sha256:
        entity["detail_sha256"] = detail_sha256
    event: dict[str, Any] = {
        "type": request.type,
        "subtype": request.subtype,
        "action": request.action,
        "outcome": OUTCOME_FROM_PROTO[request.outcome],
        "purpose_of_use": request.purpose_of_use,
        "source": {"observer": request.source_observer},
        "entity": entity,
    }
    if request.outcome_description:
        event["outcome_desc"] = request.outcome_description
    return event
