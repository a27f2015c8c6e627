"""Embedded MSP: Fabric-CA-shaped creator certificates for verified principals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from fabric_protos.msp import identities_pb2

from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.msp import ATTR_OID, EmbeddedMSP, msp_id_for_org


def test_msp_id_for_org() -> None:
    assert msp_id_for_org("hospital-a") == "HospitalAMSP"
    assert msp_id_for_org("clinic_b") == "ClinicBMSP"
    assert msp_id_for_org("regulator") == "RegulatorMSP"
    assert msp_id_for_org("big-health_network") == "BigHealthNetworkMSP"
    with pytest.raises(ValueError):
        msp_id_for_org("--")


def test_certificate_fields_and_attribute_extension(tmp_path: Path) -> None:
    msp = EmbeddedMSP(tmp_path)
    p = Principal("u-1", "hospital-a", frozenset({"clinician", "admin"}), "ehr", None)
    ident = msp.identity(p)
    assert ident.mspid == "HospitalAMSP"
    cert = x509.load_pem_x509_certificate(ident.cert_pem)
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "u-1"
    assert cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "hospital-a"
    ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(ATTR_OID))
    assert not ext.critical
    assert json.loads(ext.value.value) == {
        "attrs": {
            "hf.EnrollmentID": "u-1",
            "ciphercare.org": "hospital-a",
            "ciphercare.roles": "admin,clinician",
            "ciphercare.client": "ehr",
        }
    }
    # Signed by the org CA.
    ca = x509.load_pem_x509_certificate(msp.ca_certificate("hospital-a"))
    assert cert.issuer == ca.subject
    pub = ca.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    # The serialized creator is a Fabric SerializedIdentity.
    sid = identities_pb2.SerializedIdentity.FromString(ident.serialized)
    assert (sid.mspid, sid.id_bytes) == ("HospitalAMSP", ident.cert_pem)
    assert ident.creator() == {"mspid": "HospitalAMSP", "idBytes": ident.cert_pem}


def test_cache_pid_and_persisted_ca(tmp_path: Path) -> None:
    msp = EmbeddedMSP(tmp_path)
    p = Principal("pat", "patients", frozenset({"patient"}), "portal", "pid-7")
    assert msp.identity(p) is msp.identity(p)
    cert = x509.load_pem_x509_certificate(msp.identity(p).cert_pem)
    attrs = json.loads(cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(ATTR_OID)).value.value)["attrs"]
    assert attrs["ciphercare.pid"] == "pid-7"
    again = EmbeddedMSP(tmp_path)
    assert again.ca_certificate("patients") == msp.ca_certificate("patients")
    assert (tmp_path / "PatientsMSP" / "ca-key.pem").stat().st_mode & 0o077 == 0
    with pytest.raises(ValueError, match="comma"):
        msp.identity(Principal("x", "patients", frozenset({"a,b"})))
    with pytest.raises(ValueError, match="subject"):
        msp.identity(Principal("", "patients", frozenset()))
