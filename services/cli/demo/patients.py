"""Living portal for the demo patients pt-1001 and pt-1002: consents, history and an emergency access.

Run by ``ciphercare demo`` before its scripted story (once: skipped when pt-1001 already has consents), so a
newcomer who signs in as ``patient-1001`` or ``patient-1002`` sees active, expired and revoked consents, a
history of allowed and denied accesses and a break-glass declaration awaiting review.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from ciphercare.sdk.client import CiphercareClient
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.v1 import access_log_pb2, breakglass_pb2, breakglass_pb2_grpc, common_pb2, consent_pb2

PATIENTS = ("pt-1001", "pt-1002")
PERMIT = consent_pb2.CONSENT_DECISION_PERMIT
SUCCESS, DENIED = access_log_pb2.ACCESS_OUTCOME_SUCCESS, access_log_pb2.ACCESS_OUTCOME_DENIED


def _ts(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def _period(start: datetime, end: datetime | None) -> common_pb2.Period:
    period = common_pb2.Period(start=_ts(start))
    if end is not None:
        period.end.CopyFrom(_ts(end))
    return period


def seed_demo_patients(target: str, issuer: DevIssuer, deadline_s: float,
                       step: Callable[[str, str], None]) -> bool:
    """Fill pt-1001/pt-1002 once; returns False when they already had consents (nothing written)."""
    now = datetime.now(UTC)

    def client(subject: str, roles: list[str], org: str = "", pid: str | None = None) -> CiphercareClient:
        return CiphercareClient.connect(target, issuer.issue(subject=subject, roles=roles, org=org, pid=pid,
                                                             client_id="ciphercare-demo"), deadline_s=deadline_s)

    p1 = client("patient-pt-1001", ["patient"], pid="pt-1001")
    p2 = client("patient-pt-1002", ["patient"], pid="pt-1002")
    hosp_a = client("svc-hospital-a-ehr", ["hospital"], "hospital-a")
    hosp_b = client("svc-hospital-b-ehr", ["hospital"], "hospital-b")
    clin_a = client("clinician-a", ["clinician"], "hospital-a")
    try:
        if p1.list_for_patient("pt-1001", include_inactive=True):
            step("demo patients pt-1001 / pt-1002", "already filled")
            return False

        def grant(who: CiphercareClient, pid: str, org: str, purposes: list[str], classes: list[str],
                  start: datetime, end: datetime | None) -> str:
            return str(who.grant(consent_pb2.GrantRequest(
                pid=pid, grantee_organization=org, decision=PERMIT, purposes=purposes, data_classes=classes,
                period=_period(start, end))).consent.id)

        care = grant(p1, "pt-1001", "hospital-a", ["TREAT", "CAREMGT"],
                     ["Observation", "Condition", "MedicationStatement", "AllergyIntolerance"],
                     now - timedelta(days=30), now + timedelta(days=335))
        grant(p1, "pt-1001", "research-e", ["HRESCH"], ["Observation"], now - timedelta(days=10), None)
        vaccines = grant(p1, "pt-1001", "hospital-b", ["TREAT"], ["Immunization"], now - timedelta(days=60), None)
        p1.revoke(vaccines, "patient-request")
        grant(p1, "pt-1001", "clinic-c", ["TREAT"], ["Encounter"], now - timedelta(days=400),
              now - timedelta(days=35))
        grant(p2, "pt-1002", "hospital-b", ["TREAT", "ETREAT"], ["Observation", "Condition"],
              now - timedelta(days=5), None)
        step("demo patients: consents granted, one revoked, one expired", "pt-1001 x4, pt-1002 x1")

        systems = {hosp_a: "hospital-a", hosp_b: "hospital-b"}  # an observer is the hospital's own system

        def record(who: CiphercareClient, pid: str, purpose: str, classes: list[str], outcome: Any,
                   consent_id: str = "", reason: str = "", subtype: str = "read") -> None:
            who.record(access_log_pb2.RecordRequest(
                type="110110", subtype=subtype, action="R", outcome=outcome, outcome_description=reason,
                purpose_of_use=purpose, pid=pid, consent_id=consent_id, data_classes=classes,
                source_observer=f"{systems[who]}/ehr", detail_json=json.dumps({"view": "chart"})))

        record(hosp_a, "pt-1001", "TREAT", ["Observation"], SUCCESS, care)
        record(hosp_a, "pt-1001", "TREAT", ["MedicationStatement"], SUCCESS, care, subtype="search-type")
        record(hosp_b, "pt-1001", "TREAT", ["Immunization"], DENIED, vaccines, "consent-revoked")
        record(hosp_b, "pt-1002", "TREAT", ["Observation"], SUCCESS)
        stub = breakglass_pb2_grpc.BreakGlassServiceStub(clin_a.channel)
        declared = clin_a.call(stub.Declare, breakglass_pb2.DeclareBreakGlassRequest(
            pid="pt-1002", reason_code="unconscious-patient",
            justification="Brought in unconscious by ambulance; checking allergies and recent results."))
        clin_a.call(stub.RecordAccess, breakglass_pb2.RecordBreakGlassAccessRequest(
            pid="pt-1002", data_classes=["AllergyIntolerance", "Observation"]))
        step("demo patients: accesses logged, one emergency access (break-glass)", declared.declaration.id)
        return True
    finally:
        for c in (p1, p2, hosp_a, hosp_b, clin_a):
            c.close()
