"""Test helpers for the consent package: creator certificates and record factories.

Certificates follow the identity convention (CN=subject, O=org, Fabric CA
attribute extension OID 1.2.3.4.5.6.7.8.1 with ``{"attrs": {...}}``) and are
built here so the caller tests can also build deliberately broken ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ciphercare.consent import canonical
from ciphercare.consent.caller import msp_id_for_org
from ciphercare.consent.model import ConsentRecord

_KEY = ec.generate_private_key(ec.SECP256R1())
_MISSING = object()


def make_cert(
    subject: str = "user-1",
    org: str = "hospital-a",
    roles: str = "clinician",
    client: str = "ciphercare-portal",
    pid: str | None = None,
    *,
    cn: str | None = None,
    o: str | None = None,
    attrs: Any = _MISSING,
    ext_value: bytes | None = None,
    with_extension: bool = True,
) -> bytes:
    """A PEM certificate for a creator; keyword knobs break it in specific ways."""
    if attrs is _MISSING:
        attrs = {
            "hf.EnrollmentID": subject,
            "ciphercare.org": org,
            "ciphercare.roles": roles,
            "ciphercare.client": client,
        }
        if pid is not None:
            attrs["ciphercare.pid"] = pid
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, o if o is not None else org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn if cn is not None else subject),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if with_extension:
        value = ext_value if ext_value is not None else canonical.dumps({"attrs": attrs})
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5.6.7.8.1"), value), critical=False
        )
    return builder.sign(_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def creator(
    subject: str, org: str, roles: str, pid: str | None = None, client: str = "svc"
) -> dict[str, Any]:
    """A ``stub.get_creator()`` value for a well-formed identity."""
    return {"mspid": msp_id_for_org(org), "idBytes": make_cert(subject, org, roles, client, pid)}


def doc_hash(text: str = "fhir-consent-document") -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def grant_dict(**overrides: Any) -> dict[str, Any]:
    """A valid consent:Grant input."""
    d: dict[str, Any] = {
        "pid": "pat-0001",
        "grantee_org": "hospital-a",
        "decision": "permit",
        "purposes": ["TREAT"],
        "data_classes": ["Observation", "Condition"],
        "period": {"start": "2025-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        "provisions": [],
        "document_sha256": doc_hash(),
    }
    d.update(overrides)
    return d


def record(n: int = 1, **overrides: Any) -> ConsentRecord:
    """A stored consent record; ``n`` makes the id and recorded_at distinct."""
    d: dict[str, Any] = {
        "id": f"cns-{n:032x}",
        "version": 1,
        "status": "active",
        "recorded_at": f"2025-01-01T00:00:{n % 60:02d}Z",
        "recorded_by": {"subject": "user-1", "org": "hospital-a", "roles": ["clinician"]},
        "revoked_at": None,
        "revoked_by": None,
        "revocation_reason": None,
    }
    d.update(grant_dict())
    d.update(overrides)
    return ConsentRecord.from_dict(d)


# --- FHIR Consent resources for the interchange tests (issue 15) ------------------------------------------

FHIR_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
FHIR_ORG = "urn:ciphercare:organization"


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
                       "reference": {"identifier": {"system": FHIR_ORG, "value": "hospital-a"}}}],
            "purpose": [{"system": FHIR_ACT, "code": "TREAT"}, {"system": FHIR_ACT, "code": "ETREAT"}],
            "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"},
                      {"system": "http://hl7.org/fhir/resource-types", "code": "Condition"}],
            "provision": [{
                "type": "deny",
                "purpose": [{"system": FHIR_ACT, "code": "ETREAT"}],
                "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Condition"}],
                "period": {"start": "2026-03-01"},
                "provision": [{"type": "permit",
                               "actor": [{"role": {"text": "recipient"},
                                          "reference": {"identifier": {"system": FHIR_ORG, "value": "hospital-a"}}}]}],
            }],
        },
    }
    doc.update(over)
    return doc
