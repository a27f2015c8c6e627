"""Runs one cell of the authorization matrix (services/identity/matrix.py) against a live server.

The same runner serves both issuers: a :class:`TokenSource` turns a persona into a
bearer token (the development issuer's or a real Keycloak's), and every call
goes over real gRPC through the real interceptor, servicers, contracts and
ledger. The observed outcome is returned as a :class:`~ciphercare.services.identity.matrix.Outcome`
so the test compares it with the one table.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.services.identity.matrix import NO_ROLE, Outcome
from ciphercare.services.identity.rules import ADMIN, CLINICIAN, COMPLIANCE_OFFICER, HOSPITAL, PATIENT
from ciphercare.v1 import (
    access_log_pb2,
    access_log_pb2_grpc,
    breakglass_pb2,
    breakglass_pb2_grpc,
    compliance_pb2,
    compliance_pb2_grpc,
    consent_pb2,
    consent_pb2_grpc,
    fhir_pb2,
    fhir_pb2_grpc,
)

PID_OWN, PID_OTHER = "pt-1001", "pt-1002"
ORG_OWN, ORG_OTHER = "hospital-a", "hospital-b"
HOSPITAL_B = "hospital-b"  # not a persona: writes the "other" fixtures
CLINICIAN_B = "clinician-b"  # not a persona: declares the "other" break-glass fixture
SUCCESS = access_log_pb2.ACCESS_OUTCOME_SUCCESS


class TokenSource(Protocol):
    def token(self, persona: str) -> str:
        """A bearer token for a persona of services/identity/matrix.py (or ``"hospital-b"``)."""
        ...


def claims_roles(claims: dict[str, Any]) -> set[str]:
    """The realm roles a token's claims carry."""
    return set((claims.get("realm_access") or {}).get("roles") or [])


def claims_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


# --------------------------------------------------------------- dev personas


#: The development issuer's personas mirror the demo users of deploy/keycloak/realm-ciphercare.json.
DEV_USERS: dict[str, tuple[str, str, frozenset[str], str | None, str | None]] = {
    # persona: (username, client, roles, org, pid)
    CLINICIAN: ("clinician-a", "ciphercare-console", frozenset({CLINICIAN}), ORG_OWN, None),
    CLINICIAN_B: ("clinician-b", "ciphercare-console", frozenset({CLINICIAN}), ORG_OTHER, None),
    PATIENT: ("patient-1001", "ciphercare-portal", frozenset({PATIENT}), None, PID_OWN),
    COMPLIANCE_OFFICER: ("officer", "ciphercare-console", frozenset({COMPLIANCE_OFFICER}), "regulator", None),
    ADMIN: ("admin", "ciphercare-console", frozenset({ADMIN}), "ciphercare-ops", None),
    NO_ROLE: ("visitor", "ciphercare-portal", frozenset(), ORG_OWN, None),
}


@dataclass
class DevTokens:
    """Personas' tokens from the development issuer: client credentials over HTTP for hospitals."""

    issuer: DevIssuer
    fetch_client_token: Callable[[str], str]
    _cache: dict[str, str] = field(default_factory=dict)

    def token(self, persona: str) -> str:
        if persona not in self._cache:
            if persona in (HOSPITAL, HOSPITAL_B):
                self._cache[persona] = self.fetch_client_token(ORG_OWN if persona == HOSPITAL else ORG_OTHER)
            else:
                username, client, roles, org, pid = DEV_USERS[persona]
                subject = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.issuer.issuer}/users/{username}"))
                self._cache[persona] = self.issuer.issue(
                    subject, roles, org, pid=pid, client_id=client, ttl_s=600, username=username
                )
        return self._cache[persona]


# --------------------------------------------------------------------- world


@dataclass
class World:
    """A server plus the fixtures the matrix reads: hospital-a's data on pt-1001, hospital-b's on pt-1002."""

    target: str
    tokens: TokenSource
    channel: grpc.Channel
    consents: dict[str, str] = field(default_factory=dict)  # own/other -> consent id
    events: dict[str, access_log_pb2.AccessEvent] = field(default_factory=dict)  # own/other -> event
    declarations: dict[str, str] = field(default_factory=dict)  # own/other -> break-glass declaration id

    @property
    def consent_stub(self) -> consent_pb2_grpc.ConsentServiceStub:
        return consent_pb2_grpc.ConsentServiceStub(self.channel)

    @property
    def log_stub(self) -> access_log_pb2_grpc.AccessLogServiceStub:
        return access_log_pb2_grpc.AccessLogServiceStub(self.channel)

    @property
    def bg_stub(self) -> breakglass_pb2_grpc.BreakGlassServiceStub:
        return breakglass_pb2_grpc.BreakGlassServiceStub(self.channel)

    @property
    def fhir_stub(self) -> fhir_pb2_grpc.FhirServiceStub:
        return fhir_pb2_grpc.FhirServiceStub(self.channel)

    def declare(self, writer: str, target: str) -> str:
        pid = PID_OWN if target == "own" else PID_OTHER
        request = breakglass_pb2.DeclareBreakGlassRequest(pid=pid, reason_code="life-threatening",
                                                          justification="matrix fixture")
        return str(self.bg_stub.Declare(request, metadata=self.meta(writer), timeout=15).declaration.id)

    def meta(self, persona: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens.token(persona)}"),)

    def grant(self, writer: str, target: str) -> consent_pb2.Consent:
        pid, org = (PID_OWN, ORG_OWN) if target == "own" else (PID_OTHER, ORG_OTHER)
        # Staff record consents with the evidence of the patient's agreement: the signed form itself
        # (Consent.sourceAttachment), which the service stores off-chain.
        form = base64.b64encode(f"signed consent form of {pid}".encode()).decode()
        evidence = json.dumps({"resourceType": "Consent", "status": "active",
                               "sourceAttachment": {"contentType": "application/pdf", "data": form}})
        request = consent_pb2.GrantRequest(pid=pid, grantee_organization=org, purposes=["TREAT"],
                                           decision=consent_pb2.CONSENT_DECISION_PERMIT,
                                           data_classes=["Observation"], fhir_consent_json=evidence)
        return self.consent_stub.Grant(request, metadata=self.meta(writer), timeout=15).consent

    def record(self, writer: str, target: str) -> access_log_pb2.AccessEvent:
        pid = PID_OWN if target == "own" else PID_OTHER
        request = access_log_pb2.RecordRequest(
            type="110110", subtype="read", action="R", outcome=SUCCESS, purpose_of_use="TREAT", pid=pid,
            data_classes=["Observation"], source_observer="",  # the default: "<org>/<client>"
        )
        return self.log_stub.Record(request, metadata=self.meta(writer), timeout=15).event

    def seed(self) -> World:
        """hospital-a grants and records for pt-1001 (own); hospital-b for pt-1002 (other)."""
        for target, writer in (("own", HOSPITAL), ("other", HOSPITAL_B)):
            self.consents[target] = self.grant(writer, target).id
            self.events[target] = self.record(writer, target)
        for target, clinician in (("own", CLINICIAN), ("other", CLINICIAN_B)):
            self.declarations[target] = self.declare(clinician, target)
        return self


def _observe(call: Callable[[], Outcome]) -> Outcome:
    try:
        return call()
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return Outcome.DENIED
        if code == grpc.StatusCode.NOT_FOUND:
            return Outcome.NOT_FOUND
        raise AssertionError(f"unexpected status {code.name}: {exc.details()}") from None  # type: ignore[attr-defined]


def run_case(world: World, method: str, persona: str, target: str) -> Outcome:
    """Call ``method`` as ``persona`` on the ``target`` fixtures; returns what happened."""
    service, name = method.strip("/").split("/")
    meta = world.meta(persona)
    pid = PID_OWN if target == "own" else PID_OTHER
    org = ORG_OWN if target == "own" else ORG_OTHER
    consent_id = world.consents[target]
    event = world.events[target]
    cs, ls = world.consent_stub, world.log_stub
    caller = claims_of(world.tokens.token(persona))

    def grant() -> Outcome:
        consent = world.grant(persona, target)
        # Nobody writes as someone else: recorded_by is the caller, whatever the request said.
        assert consent.recorded_by.subject == caller["sub"] and consent.pid == pid
        return Outcome.ALLOWED

    def revoke() -> Outcome:
        fresh = world.grant(HOSPITAL if target == "own" else HOSPITAL_B, target)
        # Staff may not use the patient's own reasons (the contract refuses them).
        reason = "patient-request" if persona == "patient" else "withdrawn-by-organization"
        response = cs.Revoke(consent_pb2.RevokeRequest(consent_id=fresh.id, reason=reason),
                             metadata=meta, timeout=15)
        assert response.consent.status == consent_pb2.CONSENT_STATUS_INACTIVE
        return Outcome.ALLOWED

    def confirm() -> Outcome:
        proposed = world.grant(HOSPITAL if target == "own" else HOSPITAL_B, target)  # a staff PERMIT: proposed
        assert proposed.status == consent_pb2.CONSENT_STATUS_PROPOSED
        response = cs.Confirm(consent_pb2.ConfirmRequest(consent_id=proposed.id), metadata=meta, timeout=15)
        assert response.consent.status == consent_pb2.CONSENT_STATUS_ACTIVE
        return Outcome.ALLOWED

    def get_consent() -> Outcome:
        response = cs.Get(consent_pb2.GetConsentRequest(consent_id=consent_id), metadata=meta, timeout=15)
        assert response.consent.id == consent_id and response.fhir_consent_json
        return Outcome.ALLOWED

    def list_for_patient() -> Outcome:
        response = cs.ListForPatient(consent_pb2.ListForPatientRequest(pid=pid, include_inactive=True),
                                     metadata=meta, timeout=15)
        return Outcome.ALLOWED if consent_id in {c.id for c in response.consents} else Outcome.FILTERED

    def history() -> Outcome:
        response = cs.GetHistory(consent_pb2.GetConsentHistoryRequest(consent_id=consent_id), metadata=meta,
                                 timeout=15)
        assert response.versions and response.versions[0].id == consent_id
        return Outcome.ALLOWED

    def check() -> Outcome:
        response = cs.Check(consent_pb2.CheckRequest(pid=pid, recipient_organization=org, purpose="TREAT",
                                                     data_class="Observation"), metadata=meta, timeout=15)
        # Authorization is what the matrix is about; the decision depends on the seeded consents (a staff
        # PERMIT stays proposed until the patient confirms it, docs/THREATS.md).
        assert response.decision in (consent_pb2.CONSENT_DECISION_PERMIT, consent_pb2.CONSENT_DECISION_DENY)
        assert response.reason
        return Outcome.ALLOWED

    def record() -> Outcome:
        recorded = world.record(persona, target)
        # The agent is the caller (subject, organisation, client), never taken from the request.
        assert recorded.agent.subject == caller["sub"] and recorded.agent.organization == caller["org"]
        return Outcome.ALLOWED

    def get_event() -> Outcome:
        response = ls.Get(access_log_pb2.GetAccessEventRequest(event_id=event.id), metadata=meta, timeout=15)
        assert response.event.id == event.id
        return Outcome.ALLOWED

    def search() -> Outcome:
        response = ls.Search(access_log_pb2.SearchRequest(pid=pid, page_size=1000), metadata=meta, timeout=15)
        return Outcome.ALLOWED if event.id in {e.id for e in response.events} else Outcome.FILTERED

    def checkpoint() -> Outcome:
        response = ls.GetCheckpoint(access_log_pb2.GetCheckpointRequest(), metadata=meta, timeout=15)
        assert response.checkpoint.tree_size > event.sequence and response.verifier_key
        return Outcome.ALLOWED

    def inclusion() -> Outcome:
        response = ls.GetInclusionProof(access_log_pb2.GetInclusionProofRequest(event_id=event.id),
                                        metadata=meta, timeout=15)
        assert response.leaf_index == event.sequence
        return Outcome.ALLOWED

    def consistency() -> Outcome:
        response = ls.GetConsistencyProof(access_log_pb2.GetConsistencyProofRequest(first_tree_size=1),
                                          metadata=meta, timeout=15)
        assert response.first_tree_size == 1 and response.second_tree_size >= 1
        return Outcome.ALLOWED

    def watch() -> Outcome:
        stream = ls.Watch(access_log_pb2.WatchRequest(start_sequence=event.sequence), metadata=meta, timeout=2.0)
        try:
            for item in stream:
                if item.id == event.id:
                    return Outcome.ALLOWED
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # type: ignore[attr-defined]
                raise
        finally:
            stream.cancel()
        return Outcome.FILTERED

    comp = compliance_pb2_grpc.ComplianceServiceStub(world.channel)
    by_pid = compliance_pb2.AccessFilter(pid=pid)

    def list_flags() -> Outcome:
        # Flags need a history; what the matrix observes is whether the target organisation's events were
        # examined for the caller (a provider's scope leaves the other organisation out).
        response = comp.ListFlags(compliance_pb2.ListFlagsRequest(organization=org), metadata=meta, timeout=60)
        return Outcome.ALLOWED if response.events_examined > 0 else Outcome.FILTERED

    def compliance_search() -> Outcome:
        response = comp.Search(compliance_pb2.ComplianceSearchRequest(filter=by_pid, page_size=1000),
                               metadata=meta, timeout=15)
        return Outcome.ALLOWED if event.id in {e.id for e in response.events} else Outcome.FILTERED

    def aggregate() -> Outcome:
        # The target organisation's events about the target patient (a provider may also have written about
        # the other patient: its own events stay in its scope).
        flt = compliance_pb2.AccessFilter(pid=pid, organization=org)
        response = comp.Aggregate(compliance_pb2.AggregateRequest(filter=flt), metadata=meta, timeout=15)
        return Outcome.ALLOWED if response.total > 0 else Outcome.FILTERED

    def export() -> Outcome:
        chunks = comp.Export(compliance_pb2.ExportRequest(
            filter=by_pid, format=compliance_pb2.EXPORT_FORMAT_JSON_LINES), metadata=meta, timeout=15)
        data = b"".join(chunk.data for chunk in chunks)
        return Outcome.ALLOWED if event.id.encode() in data else Outcome.FILTERED
    bg, fs = world.bg_stub, world.fhir_stub
    declaration = world.declarations[target]

    def bg_declare() -> Outcome:
        fresh = world.declare(persona, target)
        got = bg.Get(breakglass_pb2.GetBreakGlassRequest(declaration_id=fresh), metadata=meta, timeout=15)
        assert got.declaration.declared_by.subject == caller["sub"] and got.declaration.pid == pid
        return Outcome.ALLOWED

    def bg_record() -> Outcome:
        # declared first (by the caller, for the target patient): the access is logged under it
        if CLINICIAN in claims_roles(caller):
            world.declare(persona, target)
        response = bg.RecordAccess(breakglass_pb2.RecordBreakGlassAccessRequest(pid=pid, data_classes=["Observation"]),
                                   metadata=meta, timeout=15)
        assert response.event_id.startswith("ae-") and response.declaration_id.startswith("bg-")
        return Outcome.ALLOWED

    def bg_get() -> Outcome:
        got = bg.Get(breakglass_pb2.GetBreakGlassRequest(declaration_id=declaration), metadata=meta, timeout=15)
        assert got.declaration.id == declaration
        return Outcome.ALLOWED

    def bg_list_for_patient() -> Outcome:
        found = bg.ListForPatient(breakglass_pb2.ListBreakGlassForPatientRequest(pid=pid), metadata=meta, timeout=15)
        return Outcome.ALLOWED if declaration in {d.id for d in found.declarations} else Outcome.FILTERED

    def bg_list_active() -> Outcome:
        found = bg.ListActive(breakglass_pb2.ListActiveBreakGlassRequest(), metadata=meta, timeout=15)
        return Outcome.ALLOWED if declaration in {d.id for d in found.declarations} else Outcome.FILTERED

    def bg_list_for_review() -> Outcome:
        found = bg.ListForReview(breakglass_pb2.ListBreakGlassForReviewRequest(), metadata=meta, timeout=15)
        assert found.counts.total >= 2
        return Outcome.ALLOWED if declaration in {d.id for d in found.declarations} else Outcome.FILTERED

    def bg_review() -> Outcome:
        fresh = world.declare(CLINICIAN if target == "own" else CLINICIAN_B, target)
        done = bg.Review(breakglass_pb2.ReviewBreakGlassRequest(declaration_id=fresh, outcome="acknowledged"),
                         metadata=meta, timeout=15)
        assert done.declaration.reviews[-1].reviewed_by.subject == caller["sub"]
        return Outcome.ALLOWED

    def fhir_import() -> Outcome:
        resource = {
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"identifier": {"system": "urn:ciphercare:pid", "value": pid}},
            "sourceReference": {"reference": f"DocumentReference/signed-form-{pid}"},
            "provision": {"type": "permit", "actor": [{"role": {"text": "recipient"}, "reference": {
                "identifier": {"system": "urn:ciphercare:organization", "value": org}}}],
                "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
                "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]},
        }
        done = fs.ImportConsent(fhir_pb2.ImportConsentRequest(resource_json=json.dumps(resource)), metadata=meta,
                                timeout=15)
        assert done.consent_id.startswith("cns-")
        return Outcome.ALLOWED

    def fhir_export() -> Outcome:
        done = fs.ExportConsent(fhir_pb2.ExportConsentRequest(consent_id=consent_id), metadata=meta, timeout=15)
        assert json.loads(done.resource_json)["id"] == consent_id
        return Outcome.ALLOWED

    def fhir_audit() -> Outcome:
        done = fs.ExportAuditEvents(fhir_pb2.ExportAuditEventsRequest(pid=pid), metadata=meta, timeout=15)
        ids = {e["resource"]["id"] for e in json.loads(done.bundle_json).get("entry", [])}
        return Outcome.ALLOWED if event.id in ids else Outcome.FILTERED

    calls: dict[str, Callable[[], Outcome]] = {
        "BreakGlassService/Declare": bg_declare,
        "BreakGlassService/RecordAccess": bg_record,
        "BreakGlassService/Get": bg_get,
        "BreakGlassService/ListForPatient": bg_list_for_patient,
        "BreakGlassService/ListActive": bg_list_active,
        "BreakGlassService/ListForReview": bg_list_for_review,
        "BreakGlassService/Review": bg_review,
        "FhirService/ImportConsent": fhir_import,
        "FhirService/ExportConsent": fhir_export,
        "FhirService/ExportAuditEvents": fhir_audit,
        "ConsentService/Grant": grant,
        "ConsentService/Revoke": revoke,
        "ConsentService/Confirm": confirm,
        "ConsentService/Get": get_consent,
        "ConsentService/ListForPatient": list_for_patient,
        "ConsentService/GetHistory": history,
        "ConsentService/Check": check,
        "AccessLogService/Record": record,
        "AccessLogService/Get": get_event,
        "AccessLogService/Search": search,
        "AccessLogService/GetCheckpoint": checkpoint,
        "AccessLogService/GetInclusionProof": inclusion,
        "AccessLogService/GetConsistencyProof": consistency,
        "AccessLogService/Watch": watch,
        "ComplianceService/ListFlags": list_flags,
        "ComplianceService/Search": compliance_search,
        "ComplianceService/Aggregate": aggregate,
        "ComplianceService/Export": export,
    }
    return _observe(calls[f"{service.rsplit('.', 1)[-1]}/{name}"])
