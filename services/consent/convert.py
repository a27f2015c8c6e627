"""Consent protobuf <-> domain conversion, in symmetric pairs (``*_to_proto`` / ``*_from_proto``).

The domain side is the consent contract's canonical JSON (dicts); round-trip tests in
tests/platform/test_convert.py.
"""

from __future__ import annotations

from typing import Any

from ciphercare.services.platform.convert import (
    ConversionError,
    actor_from_proto,
    actor_to_proto,
    iso_from_timestamp,
    period_from_proto,
    period_to_proto,
    timestamp_from_iso,
)
from ciphercare.v1 import consent_pb2

DECISION_TO_PROTO = {
    "permit": consent_pb2.CONSENT_DECISION_PERMIT,
    "deny": consent_pb2.CONSENT_DECISION_DENY,
}
DECISION_FROM_PROTO: dict[int, str] = {int(v): k for k, v in DECISION_TO_PROTO.items()}
STATUS_TO_PROTO = {
    "active": consent_pb2.CONSENT_STATUS_ACTIVE,
    "inactive": consent_pb2.CONSENT_STATUS_INACTIVE,
    "proposed": consent_pb2.CONSENT_STATUS_PROPOSED,
}
STATUS_FROM_PROTO: dict[int, str] = {int(v): k for k, v in STATUS_TO_PROTO.items()}


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
        authority=_authority(record),
        recorded_by_organization=(record.get("recorded_by") or {}).get("org", ""),
    )
    if record.get("confirmed_at"):
        message.confirmed_at.CopyFrom(timestamp_from_iso(record["confirmed_at"]))
    if record.get("confirmed_by"):
        message.confirmed_by.CopyFrom(actor_to_proto(record["confirmed_by"]))
    if record.get("recorded_at"):
        message.recorded_at.CopyFrom(timestamp_from_iso(record["recorded_at"]))
    if record.get("revoked_at"):
        message.revoked_at.CopyFrom(timestamp_from_iso(record["revoked_at"]))
    if record.get("revoked_by"):
        message.revoked_by.CopyFrom(actor_to_proto(record["revoked_by"]))
    return message


def _authority(record: dict[str, Any]) -> str:
    if record.get("authority"):
        return str(record["authority"])
    roles = set((record.get("recorded_by") or {}).get("roles", []))
    return "patient" if "patient" in roles and not roles & {"hospital", "clinician"} else "staff"


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
        "authority": message.authority or None,
        "confirmed_at": iso_from_timestamp(message.confirmed_at) if message.HasField("confirmed_at") else None,
        "confirmed_by": actor_from_proto(message.confirmed_by) if message.HasField("confirmed_by") else None,
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
        breakglass_id=decision.get("breakglass_id") or "",
    )
    if evaluated_at:
        response.evaluated_at.CopyFrom(timestamp_from_iso(evaluated_at))
    return response


def decision_from_proto(message: consent_pb2.CheckResponse) -> dict[str, Any]:
    out = {
        "decision": _decision_from_proto(message.decision, "decision"),
        "consent_id": message.consent_id or None,
        "reason": message.reason,
    }
    if message.breakglass_id:  # only break-glass decisions carry it
        out["breakglass_id"] = message.breakglass_id
    return out
