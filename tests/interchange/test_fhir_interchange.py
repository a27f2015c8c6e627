"""FHIR Consent import/export (R4B, R5) with the fhir.resources models, our code bindings and BALP checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fhir.resources.consent import Consent as ConsentR5
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.consent import Consent as ConsentR4B
from testkit.consent import FHIR_ACT as ACT
from testkit.consent import FHIR_ORG as ORG
from testkit.consent import r4b_consent

from ciphercare.consent import canonical
from ciphercare.services.audit.exports import audit_bundle, audit_event, balp_problems
from ciphercare.services.consent.fhir import consent_document
from ciphercare.services.consent.fhir_interchange import (
    FhirImportError,
    consent_from_fhir,
    consent_to_fhir,
    evidence_of,
)
from ciphercare.services.platform.settings import Settings
from ciphercare.v1 import access_log_pb2, common_pb2

ORGS = Settings().organizations
NOW = "2026-01-01T00:00:00Z"
def imported(doc: dict[str, Any], version: str = "R4B") -> dict[str, Any]:
    return consent_from_fhir(json.dumps(doc), version, ORGS, NOW)[0]


def as_record(grant: dict[str, Any], cid: str = "cns-" + "a" * 32) -> dict[str, Any]:
    from ciphercare.consent.model import ConsentRecord

    return ConsentRecord.from_dict({**grant, "id": cid, "version": 1, "status": "active",
                                    "document_sha256": "0" * 64, "recorded_at": "2025-12-01T10:00:00Z",
                                    "recorded_by": {"subject": "u", "org": "hospital-a", "roles": ["hospital"]},
                                    "revoked_at": None, "revoked_by": None, "revocation_reason": None}).to_dict()


def test_r4b_import_maps_provisions_actors_purposes_periods_classes_evidence() -> None:
    grant = imported(r4b_consent())
    assert grant["pid"] == "pt-1001" and grant["grantee_org"] == "hospital-a" and grant["decision"] == "permit"
    assert grant["purposes"] == ["TREAT", "ETREAT"] and grant["data_classes"] == ["Observation", "Condition"]
    assert grant["period"] == {"start": "2025-12-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
    deny = grant["provisions"][0]
    assert deny["type"] == "deny" and deny["purposes"] == ["ETREAT"] and deny["data_classes"] == ["Condition"]
    assert deny["period"] == {"start": "2026-03-01T00:00:00Z"}
    assert deny["provisions"][0] == {"type": "permit", "purposes": [], "data_classes": [], "actors": ["hospital-a"],
                                     "provisions": []}
    assert len(grant["evidence_sha256"]) == 64


@pytest.mark.parametrize("version", ["R4B", "R5"])
def test_round_trip_import_export_import_is_equal(version: str) -> None:
    first = imported(r4b_consent())
    record = as_record(first)
    evidence = {"sourceReference": {"reference": "DocumentReference/signed-form-1"}}
    exported = consent_to_fhir(record, evidence, version, ORGS)
    # the library's models accept what we export
    (ConsentR4B if version == "R4B" else ConsentR5).model_validate(exported)
    again = imported(exported, version)
    if version == "R4B":
        assert again == first
    else:  # R5 evidence is a list: the same reference in another canonical form, so another digest
        assert again["evidence_sha256"] != first["evidence_sha256"]
        assert {**again, "evidence_sha256": ""} == {**first, "evidence_sha256": ""}
    # and once more from the R5/R4B export of the re-import: a fixed point
    assert imported(consent_to_fhir(as_record(again), evidence_of(exported), version, ORGS), version) == again


def test_r5_without_type_extension_alternates_as_exceptions() -> None:
    doc = {
        "resourceType": "Consent", "status": "active", "decision": "permit",
        "subject": {"identifier": {"system": "urn:ciphercare:pid", "value": "pt-1002"}},
        "grantee": [{"identifier": {"system": ORG, "value": "hospital-b"}}],
        "period": {"start": "2026-01-01T00:00:00Z"},
        "provision": [{"purpose": [{"system": ACT, "code": "TREAT"}],
                       "resourceType": [{"system": "http://hl7.org/fhir/fhir-types", "code": "Observation"}],
                       "provision": [{"purpose": [{"system": ACT, "code": "TREAT"}],
                                      "period": {"end": "2026-02-01T00:00:00Z"}}]}],
    }
    grant = imported(doc, "R5")
    assert grant["grantee_org"] == "hospital-b" and grant["decision"] == "permit"
    assert grant["provisions"][0]["type"] == "deny"  # an exception to a permit
    assert "evidence_sha256" not in grant


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d["provision"]["purpose"].append({"system": ACT, "code": "NOTACODE"}), "purpose[2].code"),
    (lambda d: d["provision"]["purpose"].append({"system": "http://example.org/x", "code": "TREAT"}),
     "purpose[2].system"),
    (lambda d: d["provision"]["class"].append({"system": "http://hl7.org/fhir/resource-types", "code": "Pizza"}),
     "class[2].code"),
    (lambda d: d["provision"]["actor"][0]["reference"]["identifier"].update(value="hospital-zzz"),
     "not an organisation ciphercare knows"),
    (lambda d: d.update(status="inactive"), "only an active consent"),
    (lambda d: d.update(patient={"reference": "Patient/123"}), "Consent.patient"),
    (lambda d: d.pop("scope"), "scope"),
    (lambda d: d["provision"].update(type="maybe"), "type"),
    (lambda d: d["provision"]["period"].update(start="yesterday"), "Consent"),
    (lambda d: d["provision"].pop("actor"), "exactly one recipient"),
])
def test_import_refuses_bad_resources_and_code_bindings(mutate: Any, fragment: str) -> None:
    doc = r4b_consent()
    mutate(doc)
    with pytest.raises(FhirImportError) as err:
        imported(doc)
    assert fragment in str(err.value), str(err.value)


def test_default_document_is_unchanged_and_valid_r4b() -> None:
    """consent_document keeps its bytes (their hash is on the ledger) and passes the R4B model."""
    grant = {"pid": "pt-1", "grantee_org": "hospital-a", "decision": "permit", "purposes": ["TREAT"],
             "data_classes": ["Observation"], "period": {"start": "2025-01-01T00:00:00.000Z"}, "provisions": []}
    doc = consent_document(grant, "2025-01-01T00:00:00.000Z")
    assert canonical.dumps(doc) == (
        b'{"category":[{"coding":[{"code":"59284-0","display":"Patient Consent","system":"http://loinc.org"}]}],'
        b'"dateTime":"2025-01-01T00:00:00.000Z","patient":{"identifier":{"system":"urn:ciphercare:pid",'
        b'"value":"pt-1"}},"policyRule":{"coding":[{"code":"OPTIN","system":'
        b'"http://terminology.hl7.org/CodeSystem/v3-ActCode"}]},"provision":{"actor":[{"reference":{"identifier":'
        b'{"system":"urn:ciphercare:organization","value":"hospital-a"}},"role":{"coding":[{"code":"IRCP",'
        b'"system":"http://terminology.hl7.org/CodeSystem/v3-ParticipationType"}]}}],"class":[{"code":'
        b'"Observation","system":"http://hl7.org/fhir/resource-types"}],"period":{"start":'
        b'"2025-01-01T00:00:00.000Z"},"purpose":[{"code":"TREAT","system":'
        b'"http://terminology.hl7.org/CodeSystem/v3-ActReason"}],"type":"permit"},"resourceType":"Consent",'
        b'"scope":{"coding":[{"code":"patient-privacy","system":'
        b'"http://terminology.hl7.org/CodeSystem/consentscope"}]},"status":"active"}'
    )
    ConsentR4B.model_validate(doc)


def _event(**over: Any) -> access_log_pb2.AccessEvent:
    e = access_log_pb2.AccessEvent(
        id="ae-" + "1" * 32, sequence=7, tx_id="ab" * 32, type="110110", subtype="read", action="R",
        outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS, purpose_of_use="ETREAT", pid="pt-1001",
        data_classes=["Observation"], source_observer="ciphercare/BreakGlassService",
        outcome_description="break-glass:bg-" + "2" * 32,
        agent=common_pb2.Actor(subject="clin-1", organization="hospital-a", roles=["clinician"], client_id="ehr"),
    )
    e.recorded.FromJsonString("2026-01-01T10:00:00.123Z")
    for k, v in over.items():
        setattr(e, k, v)
    return e


def test_audit_events_follow_balp_and_validate_with_the_library() -> None:
    resource = audit_event(_event())
    AuditEvent.model_validate(resource)
    assert balp_problems(resource) == []
    assert resource["meta"]["profile"] == ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"]
    declared = [e for e in resource["entity"] if e.get("description") == "break-glass declaration"]
    assert declared[0]["what"]["identifier"]["value"] == "bg-" + "2" * 32
    query = audit_event(_event(subtype="search-type", outcome_description=""))
    assert query["meta"]["profile"][0].endswith("IHE.BasicAudit.PatientQuery") and balp_problems(query) == []
    bundle = audit_bundle([_event(), _event(id="ae-" + "3" * 32)], "urn:x", "searchset")
    assert bundle["total"] == 2 and [e["search"]["mode"] for e in bundle["entry"]] == ["match", "match"]


def test_balp_checks_catch_wrong_bindings() -> None:
    resource = audit_event(_event())
    broken = json.loads(json.dumps(resource))
    broken["type"]["code"] = "999999"
    broken["purposeOfEvent"][0]["coding"][0]["code"] = "SHOPPING"
    broken["entity"] = [e for e in broken["entity"] if e.get("role", {}).get("code") != "1"]
    problems = balp_problems(broken)
    assert any("type" in p for p in problems) and any("SHOPPING" in p for p in problems)
    assert any("patient entity" in p for p in problems)
