"""Access-log protobuf <-> domain conversion, in symmetric pairs (``*_to_proto`` / ``*_from_proto``).

The domain side is the accesslog contract's canonical JSON (dicts); every access event input is built by
:func:`ciphercare.services.audit.events.access_event`. Round-trip tests in tests/platform/test_convert.py.
"""

from __future__ import annotations

from typing import Any

from ciphercare.services.audit.events import access_event
from ciphercare.services.platform.convert import (
    ConversionError,
    actor_from_proto,
    actor_to_proto,
    iso_from_timestamp,
    timestamp_from_iso,
)
from ciphercare.v1 import access_log_pb2

OUTCOME_TO_PROTO = {
    "success": access_log_pb2.ACCESS_OUTCOME_SUCCESS,
    "denied": access_log_pb2.ACCESS_OUTCOME_DENIED,
    "error": access_log_pb2.ACCESS_OUTCOME_ERROR,
}
OUTCOME_FROM_PROTO = {v: k for k, v in OUTCOME_TO_PROTO.items()}


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
        purpose_of_use=event.get("purpose_of_use") or "",
        agent=actor_to_proto(event.get("agent")),
        source_observer=event.get("source", {}).get("observer", ""),
        pid=entity.get("pid", ""),
        consent_id=entity.get("consent_id") or "",
        model_sha256=entity.get("model_sha256") or "",
        data_classes=entity.get("data_classes", []),
        detail_sha256=entity.get("detail_sha256") or "",
        tx_id=tx_id,
        repeat_count=event.get("repeat_count") or 0,
        consent_basis=event.get("consent_basis") or "",
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
    if message.repeat_count:
        event["repeat_count"] = message.repeat_count
    if message.consent_basis:
        event["consent_basis"] = message.consent_basis
    return event


def record_input_from_proto(request: access_log_pb2.RecordRequest, detail_sha256: str | None) -> dict[str, Any]:
    """The contract's Record input (no agent: the contract takes it from the caller)."""
    if request.outcome not in OUTCOME_FROM_PROTO:
        raise ConversionError("outcome must be ACCESS_OUTCOME_SUCCESS, _DENIED or _ERROR")
    return access_event(
        type=request.type, subtype=request.subtype, action=request.action,
        outcome=OUTCOME_FROM_PROTO[request.outcome], observer=request.source_observer, pid=request.pid,
        purpose_of_use=request.purpose_of_use, data_classes=request.data_classes,
        outcome_desc=request.outcome_description, consent_id=request.consent_id or None,
        detail_sha256=detail_sha256,
    )
