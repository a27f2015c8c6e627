"""Exports of access events: CSV and a FHIR R4 Bundle of IHE BALP-shaped AuditEvents."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from ciphercare.consent import codes
from ciphercare.v1 import access_log_pb2

CSV_COLUMNS = (
    "recorded", "event_id", "ledger_sequence", "outcome", "outcome_description", "purpose_of_use", "patient_pid",
    "agent_subject", "agent_organization", "agent_roles", "agent_client", "source_observer", "type", "subtype",
    "action", "data_classes", "consent_id", "model_sha256", "detail_sha256", "tx_id",
)
_OUTCOME = {access_log_pb2.ACCESS_OUTCOME_SUCCESS: ("success", "0"),
            access_log_pb2.ACCESS_OUTCOME_DENIED: ("denied", "4"),
            access_log_pb2.ACCESS_OUTCOME_ERROR: ("error", "8")}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ACTION_SYSTEM = "http://hl7.org/fhir/audit-event-action"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SECURITY_SOURCE = "http://terminology.hl7.org/CodeSystem/security-source-type"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"
PSEUDONYM_SYSTEM = "urn:ciphercare:pid"
SUBJECT_SYSTEM = "urn:ciphercare:subject"
ORG_SYSTEM = "urn:ciphercare:org"
LEDGER_SYSTEM = "urn:ciphercare:ledger"
BREAKGLASS_SYSTEM = "urn:ciphercare:breakglass"
_TYPE_DISPLAY = {"110110": "Patient Record", "110112": "Query", "110106": "Export", "110100": "Application Activity"}
_SUBTYPE_RESTFUL = {"read", "vread", "update", "patch", "delete", "history", "create", "search", "search-type",
                    "search-system", "capabilities", "transaction", "batch", "operation"}


def _iso(event: access_log_pb2.AccessEvent) -> str:
    if not event.HasField("recorded"):
        return ""
    return event.recorded.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cell(value: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def to_csv(events: Iterable[access_log_pb2.AccessEvent]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for e in events:
        row = [
            _iso(e), e.id, str(e.sequence), _OUTCOME.get(e.outcome, ("unknown", ""))[0], e.outcome_description,
            e.purpose_of_use, e.pid, e.agent.subject, e.agent.organization, " ".join(e.agent.roles),
            e.agent.client_id, e.source_observer, e.type, e.subtype, e.action, " ".join(e.data_classes),
            e.consent_id, e.model_sha256, e.detail_sha256, e.tx_id,
        ]
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()


def _profile(event: access_log_pb2.AccessEvent) -> str:
    """The BALP profile the event follows (query, or create/read/update/delete of patient data)."""
    if event.subtype in ("search", "search-type", "search-system"):
        return BALP + "IHE.BasicAudit.PatientQuery"
    name = {"C": "PatientCreate", "U": "PatientUpdate", "D": "PatientDelete"}.get(event.action, "PatientRead")
    return f"{BALP}IHE.BasicAudit.{name}"


def audit_event(event: access_log_pb2.AccessEvent) -> dict[str, Any]:
    """One access event as a FHIR R4 AuditEvent following IHE BALP's patient-access patterns.

    Built as the ``fhir.resources`` R4B AuditEvent model (R4B's AuditEvent is R4's, which BALP profiles),
    so a structural mistake fails here, and dumped from it.
    """
    return AuditEvent.model_validate(_audit_event(event)).model_dump(mode="json", exclude_none=True)


def _audit_event(event: access_log_pb2.AccessEvent) -> dict[str, Any]:
    outcome_code = _OUTCOME.get(event.outcome, ("unknown", "8"))[1]
    purpose = [{"coding": [{"system": codes.PURPOSE_OF_USE_SYSTEM, "code": event.purpose_of_use,
                            "display": codes.PURPOSES_OF_USE.get(event.purpose_of_use, event.purpose_of_use)}]}] \
        if event.purpose_of_use else []
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event.id,
        "meta": {"profile": [_profile(event)]},
        "type": {"system": DCM, "code": event.type, "display": _TYPE_DISPLAY.get(event.type, event.type)},
        "action": event.action,
        "recorded": _iso(event),
        "outcome": outcome_code,
        "purposeOfEvent": purpose,
        "agent": [{
            "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}]},
            "who": {"identifier": {"system": SUBJECT_SYSTEM, "value": event.agent.subject}},
            "requestor": True,
            "role": [{"text": role} for role in event.agent.roles],
            "purposeOfUse": purpose,
            **({"altId": event.agent.client_id} if event.agent.client_id else {}),
        }],
        "source": {
            "observer": {"display": event.source_observer or "ciphercare"},
            "type": [{"system": SECURITY_SOURCE, "code": "4", "display": "Application Server"}],
        },
        "entity": [{
            "what": {"identifier": {"system": PSEUDONYM_SYSTEM, "value": event.pid}},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        }],
    }
    if event.agent.organization:
        resource["agent"].append({
            "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110153",
                                 "display": "Source Role ID"}]},
            "who": {"identifier": {"system": ORG_SYSTEM, "value": event.agent.organization}},
            "requestor": False,
        })
    if event.subtype:
        system = RESTFUL if event.subtype in _SUBTYPE_RESTFUL else "urn:ciphercare:subtype"
        resource["subtype"] = [{"system": system, "code": event.subtype}]
    if event.outcome_description:
        resource["outcomeDesc"] = event.outcome_description
    if event.data_classes:
        resource["entity"].append({
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            "detail": [{"type": "dataClass", "valueString": c} for c in event.data_classes],
        })
    if event.outcome_description.startswith("break-glass:"):
        # Access under a break-glass declaration (issue 15): purpose ETREAT/BTG and the declaration.
        resource["entity"].append({
            "what": {"identifier": {"system": BREAKGLASS_SYSTEM, "value": event.outcome_description.split(":", 1)[1]}},
            "type": {"system": ENTITY_TYPE, "code": "4", "display": "Other"},
            "description": "break-glass declaration",
        })
    if event.consent_id:
        resource["entity"].append({
            "what": {"reference": f"Consent/{event.consent_id}"},
            "type": {"system": "http://hl7.org/fhir/resource-types", "code": "Consent"},
        })
    resource["entity"].append({
        "what": {"identifier": {"system": LEDGER_SYSTEM, "value": event.tx_id}},
        "type": {"system": ENTITY_TYPE, "code": "4", "display": "Other"},
        "description": "ledger transaction",
        "detail": [{"type": "sequence", "valueString": str(event.sequence)}],
    })
    return resource


def audit_bundle(events: Iterable[access_log_pb2.AccessEvent], self_url: str,
                 bundle_type: str = "searchset") -> dict[str, Any]:
    """A FHIR R4 Bundle (``searchset`` or ``collection``) of AuditEvents."""
    if bundle_type not in ("searchset", "collection"):
        raise ValueError("bundle_type must be searchset or collection")
    entries = [{"fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'ciphercare:' + e.id)}",
                "resource": audit_event(e)} for e in events]
    if bundle_type == "searchset":
        for entry in entries:
            entry["search"] = {"mode": "match"}
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")},
        "type": bundle_type,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if bundle_type == "searchset":
        bundle["total"] = len(entries)
        bundle["link"] = [{"relation": "self", "url": self_url}]
    bundle["entry"] = entries
    return Bundle.model_validate(bundle).model_dump(mode="json", exclude_none=True)


#: IHE BALP: the AuditEvent.type codes its patient-access profiles use (DICOM), the agent and entity codes.
BALP_TYPES = frozenset({"110110", "110112", "110106", "110107", "110100"})
BALP_PROFILES = frozenset(f"{BALP}IHE.BasicAudit.{n}" for n in (
    "PatientRead", "PatientCreate", "PatientUpdate", "PatientDelete", "PatientQuery"))


def balp_problems(resource: dict[str, Any]) -> list[str]:
    """Our own checks of an exported AuditEvent's code bindings (empty when it follows BALP as we use it)."""
    problems: list[str] = []
    profiles = (resource.get("meta") or {}).get("profile") or []
    if not set(profiles) & BALP_PROFILES:
        problems.append(f"meta.profile names no BALP patient profile: {profiles}")
    t = resource.get("type") or {}
    if t.get("system") != DCM or t.get("code") not in BALP_TYPES:
        problems.append(f"type {t.get('system')}|{t.get('code')} is not a DICOM audit event type BALP uses")
    if resource.get("action") not in codes.AUDIT_ACTIONS:
        problems.append(f"action {resource.get('action')!r} is not an audit-event-action code")
    if resource.get("outcome") not in {"0", "4", "8", "12"}:
        problems.append(f"outcome {resource.get('outcome')!r} is not an audit-event-outcome code")
    for i, purpose in enumerate(resource.get("purposeOfEvent") or []):
        for coding in purpose.get("coding") or []:
            if coding.get("system") != codes.PURPOSE_OF_USE_SYSTEM or coding.get("code") not in codes.PURPOSES_OF_USE:
                problems.append(f"purposeOfEvent[{i}] {coding.get('code')!r} is not a v3-ActReason code we know")
    patients = [e for e in resource.get("entity") or []
                if (e.get("role") or {}).get("system") == OBJECT_ROLE and (e.get("role") or {}).get("code") == "1"]
    if len(patients) != 1:
        problems.append(f"BALP requires exactly one patient entity (object-role 1), found {len(patients)}")
    requestors = [a for a in resource.get("agent") or [] if a.get("requestor")]
    if len(requestors) != 1:
        problems.append(f"expected exactly one requesting agent, found {len(requestors)}")
    source_types = [c.get("system") for c in (resource.get("source") or {}).get("type") or []]
    if SECURITY_SOURCE not in source_types:
        problems.append("source.type carries no security-source-type coding")
    return problems
