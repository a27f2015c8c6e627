"""The actor comes from the creator certificate; malformed or mismatched identities are refused."""

from __future__ import annotations

from typing import Any

import pytest
from testkit.consent import make_cert

from ciphercare.consent import caller as caller_mod
from ciphercare.consent.cache import LRU
from ciphercare.consent.caller import Caller, caller_from_ctx, caller_from_identity, msp_id_for_org
from ciphercare.consent.errors import ContractError


class _Identity:
    def __init__(self, mspid: str, cert: bytes | None) -> None:
        self._mspid, self._cert = mspid, cert

    def get_mspid(self) -> str:
        return self._mspid

    def get_x509(self) -> bytes:
        if not self._cert:
            raise Exception("Client identity does not have a certificate")
        return self._cert


class _Ctx:
    def __init__(self, mspid: str, cert: bytes | None) -> None:
        self._identity = _Identity(mspid, cert)

    def get_client_identity(self) -> _Identity:
        return self._identity


def denied(mspid: str, cert: bytes | None, fragment: str) -> None:
    with pytest.raises(ContractError) as err:
        caller_from_ctx(_Ctx(mspid, cert))
    assert err.value.code == "PERMISSION_DENIED"
    assert str(err.value).startswith("PERMISSION_DENIED: ")
    assert fragment in str(err.value), str(err.value)


def test_msp_id_for_org() -> None:
    assert msp_id_for_org("hospital-a") == "HospitalAMSP"
    assert msp_id_for_org("st_marys-clinic") == "StMarysClinicMSP"
    assert msp_id_for_org("patients") == "PatientsMSP"


def test_msp_id_matches_ledger_copy() -> None:
    from ciphercare.ledger.embedded import msp as ledger_msp
    for org in ("hospital-a", "st_marys-clinic", "x1", "ciphercare"):
        assert ledger_msp.msp_id_for_org(org) == msp_id_for_org(org)
        assert ledger_msp.ATTR_OID == caller_mod.ATTRIBUTE_EXTENSION_OID.dotted_string


def test_parses_identity() -> None:
    cert = make_cert("0b6f-user", "hospital-a", "clinician,offline_access,patient", "portal", "pat-0001")
    c = caller_from_ctx(_Ctx("HospitalAMSP", cert))
    assert c == Caller(
        subject="0b6f-user",
        org="hospital-a",
        roles=frozenset({"clinician", "patient"}),
        client_id="portal",
        pid="pat-0001",
        msp_id="HospitalAMSP",
    )
    assert c.is_provider and c.is_patient and not c.is_oversight
    assert c.actor_ref().roles == ("clinician", "patient")


def test_no_pid_and_no_roles() -> None:
    c = caller_from_identity("HospitalAMSP", make_cert(roles=""))
    assert c.pid is None and c.roles == frozenset() and not c.is_patient


def test_real_msp_certificate() -> None:
    from ciphercare.ledger.api import Principal
    from ciphercare.ledger.embedded import msp as ledger_msp

    ident = ledger_msp.EmbeddedMSP().identity(
        Principal(subject="u-1", org="hospital-b", roles=frozenset({"hospital"}), client_id="ehr", pid=None)
    )
    c = caller_from_ctx(_Ctx(ident.mspid, ident.cert_pem))
    assert (c.subject, c.org, c.roles, c.client_id, c.pid) == (
        "u-1",
        "hospital-b",
        frozenset({"hospital"}),
        "ehr",
        None,
    )


def test_org_must_map_to_creator_msp() -> None:
    denied("HospitalBMSP", make_cert(org="hospital-a"), "does not belong to the creator's MSP HospitalBMSP")


def test_missing_extension() -> None:
    denied("HospitalAMSP", make_cert(with_extension=False), "no ciphercare attribute extension")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ext_value": b"not json"}, "not JSON"),
        ({"attrs": ["x"]}, "no string 'attrs' object"),
        (
            {"attrs": {"hf.EnrollmentID": "u", "ciphercare.org": "hospital-a", "ciphercare.roles": 3}},
            "string",
        ),
        ({"attrs": {"ciphercare.org": "hospital-a"}}, "hf.EnrollmentID is missing"),
        ({"attrs": {"hf.EnrollmentID": "user-1"}}, "ciphercare.org is missing"),
        ({"subject": "alice@example.org"}, "hf.EnrollmentID is missing or malformed"),
        ({"cn": "someone-else"}, "CN does not match"),
        ({"o": "hospital-b"}, "O does not match"),
        ({"pid": "p"}, "ciphercare.pid is malformed"),
        ({"client": "bad client"}, "ciphercare.client is malformed"),
    ],
)
def test_malformed_certificates(kwargs: dict[str, Any], fragment: str) -> None:
    denied("HospitalAMSP", make_cert(**kwargs), fragment)


def test_not_a_certificate() -> None:
    denied("HospitalAMSP", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not an X.509")
    denied("HospitalAMSP", None, "has no certificate")
    denied("", make_cert(), "no MSP id")


def test_cache_is_bounded_and_keeps_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caller_mod, "_cache", LRU(2))
    certs = [make_cert(subject=f"user-{i}") for i in range(3)]
    for cert in certs:
        caller_from_identity("HospitalAMSP", cert)
    assert len(caller_mod._cache) == 2
    bad = make_cert(with_extension=False)
    for _ in range(2):
        with pytest.raises(ContractError):
            caller_from_identity("HospitalAMSP", bad)
    # a cached identity is still checked against the MSP of each transaction
    with pytest.raises(ContractError):
        caller_from_identity("HospitalBMSP", certs[2])
