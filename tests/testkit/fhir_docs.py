"""FHIR resources for the interchange tests."""

from __future__ import annotations

from typing import Any

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ORG = "urn:ciphercare:organization"


def r4b_consent(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": "urn:ciphercare:pid", "value": "pt-1001"}},
        "dateTime": "2025-12-01T10:00:00Z",
        "sourceReference": {"reference": "DocumentReference/signed-form-1"},
        "provision": {
            "type": "permit",
            "period": {"start": "2025-12-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                            "code": "IRCP"}]},
                       "reference": {"identifier": {"system": ORG, "value": "hospital-a"}}}],
            "purpose": [{"system": ACT, "code": "TREAT"}, {"system": ACT, "code": "ETREAT"}],
            "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"},
                      {"system": "http://hl7.org/fhir/resource-types", "code": "Condition"}],
            "provision": [{
                "type": "deny",
                "purpose": [{"system": ACT, "code": "ETREAT"}],
                "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Condition"}],
                "period": {"start": "2026-03-01"},
                "provision": [{"type": "permit",
                               "actor": [{"role": {"text": "recipient"},
                                          "reference": {"identifier": {"system": ORG, "value": "hospital-a"}}}]}],
            }],
        },
    }
    doc.update(over)
    return doc
