"""FHIR R4 documents kept off-chain: the Consent resource behind each ledger record.

R4 because that is what hospital EHRs exchange today; its Consent.provision
has the explicit ``type`` (permit/deny) and ``class`` our provisions carry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from fhir.resources.R4B.consent import Consent as ConsentR4B

from ciphercare.consent import canonical

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
ORG_SYSTEM = "urn:ciphercare:organization"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
MAX_DOCUMENT_BYTES = 256 * 1024
#: The signed consent form staff attach (decoded bytes); its base64 must also fit in the document.
MAX_EVIDENCE_BYTES = 192 * 1024
EVIDENCE_URL_PREFIX = "urn:ciphercare:evidence:sha256:"


class FhirDocumentError(ValueError):
    """The supplied FHIR document is not an acceptable Consent resource."""


def _provision(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": p["type"]}
    if p.get("period"):
        out["period"] = dict(p["period"])
    if p.get("actors"):
        out["actor"] = [
            {
                "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                     "code": "IRCP"}]},
                "reference": {"identifier": {"system": ORG_SYSTEM, "value": org}},
            }
            for org in p["actors"]
        ]
    if p.get("purposes"):
        out["purpose"] = [{"system": ACT_REASON, "code": code} for code in p["purposes"]]
    if p.get("data_classes"):
        out["class"] = [{"system": RESOURCE_TYPES, "code": code} for code in p["data_classes"]]
    if p.get("provisions"):
        out["provision"] = [_provision(child) for child in p["provisions"]]
    return out


def consent_document(grant: dict[str, Any], recorded_on: str) -> dict[str, Any]:
    """An R4 Consent resource equivalent to a Grant input (used when the caller sends none).

    Validated with the ``fhir.resources`` R4B Consent model (R4B did not change Consent). The model's
    dump would normalise instants (``.000Z`` -> ``Z``) and so change the canonical bytes whose hash the
    ledger records for every new default document; the document is therefore kept as built and only
    validated (old and new documents hash the same way).
    """
    document = _consent_document(grant, recorded_on)
    ConsentR4B.model_validate(document)  # raises pydantic.ValidationError on a structural mistake
    return document


def _consent_document(grant: dict[str, Any], recorded_on: str) -> dict[str, Any]:
    root = {
        "type": grant["decision"],
        "period": grant.get("period") or {},
        "actors": [grant["grantee_org"]],
        "purposes": grant["purposes"],
        "data_classes": grant["data_classes"],
        "provisions": grant.get("provisions", []),
    }
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": {"identifier": {"system": "urn:ciphercare:pid", "value": grant["pid"]}},
        "dateTime": recorded_on,
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": _provision(root),
    }


def document_pid(document: dict[str, Any]) -> str | None:
    """The pseudonym a Consent names as its patient (``patient.identifier`` in our system), if any."""
    patient = document.get("patient")
    identifier = patient.get("identifier") if isinstance(patient, dict) else None
    if isinstance(identifier, dict) and identifier.get("system") == "urn:ciphercare:pid":
        value = identifier.get("value")
        return value if isinstance(value, str) else ""
    return None


def evidence_sha256(document: dict[str, Any]) -> str | None:
    """SHA-256 of the Consent's evidence (``sourceAttachment`` / ``sourceReference``), canonical JSON."""
    if not has_source(document):
        return None
    evidence = {k: document[k] for k in ("sourceAttachment", "sourceReference") if k in document}
    return hashlib.sha256(canonical.dumps(evidence)).hexdigest()


def evidence_attachment(document: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The signed form a staff-recorded Consent carries (``sourceAttachment.data``, base64), and the document
    to keep with it: the same Consent with the attachment's data replaced by a reference to its hash.

    Only an attachment whose bytes are here is evidence: a ``sourceReference`` or an attachment ``url``
    names something the service cannot keep or check, so it is refused.
    """
    attachment = document.get("sourceAttachment")
    if not isinstance(attachment, dict) or not attachment.get("data"):
        raise FhirDocumentError(
            "a consent recorded on a patient's behalf must carry the evidence of their agreement: "
            "fhir_consent_json.sourceAttachment with contentType and data (the signed form, base64); "
            "a sourceReference or url alone is not evidence"
        )
    content_type = attachment.get("contentType")
    if not isinstance(content_type, str) or not content_type or len(content_type) > 100:
        raise FhirDocumentError("fhir_consent_json.sourceAttachment.contentType is required (e.g. application/pdf)")
    data = attachment["data"]
    if not isinstance(data, str):
        raise FhirDocumentError("fhir_consent_json.sourceAttachment.data must be a base64 string")
    if len(data) > (MAX_EVIDENCE_BYTES * 4) // 3 + 4:
        raise FhirDocumentError(f"fhir_consent_json.sourceAttachment is larger than {MAX_EVIDENCE_BYTES} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise FhirDocumentError("fhir_consent_json.sourceAttachment.data is not valid base64") from None
    if not raw:
        raise FhirDocumentError("fhir_consent_json.sourceAttachment.data is empty")
    digest = hashlib.sha256(raw).hexdigest()
    kept = dict(document)
    kept_attachment = {k: v for k, v in attachment.items() if k not in ("data", "url", "size", "hash")}
    kept_attachment["url"] = EVIDENCE_URL_PREFIX + digest
    kept_attachment["size"] = len(raw)
    kept["sourceAttachment"] = kept_attachment
    kept.pop("sourceReference", None)
    return raw, kept


def has_source(document: dict[str, Any]) -> bool:
    """Does the Consent carry the evidence of the patient's agreement (R4 ``source[x]``)?"""
    attachment = document.get("sourceAttachment")
    reference = document.get("sourceReference")
    attached = isinstance(attachment, dict) and bool(attachment.get("data") or attachment.get("url"))
    referenced = isinstance(reference, dict) and bool(reference.get("reference") or reference.get("identifier"))
    return attached or referenced


def parse_consent_document(text: str) -> dict[str, Any]:
    """Validate a caller-supplied Consent resource enough to keep it; the ledger record is authoritative."""
    if len(text.encode("utf-8")) > MAX_DOCUMENT_BYTES:
        raise FhirDocumentError(f"fhir_consent_json is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FhirDocumentError(f"fhir_consent_json is not JSON: {exc.msg} at position {exc.pos}") from exc
    if not isinstance(document, dict) or document.get("resourceType") != "Consent":
        raise FhirDocumentError("fhir_consent_json must be a FHIR resource with resourceType 'Consent'")
    try:
        canonical.dumps(document)
    except canonical.CanonicalJSONError as exc:
        raise FhirDocumentError(f"fhir_consent_json cannot be stored canonically: {exc}") from exc
    return document
