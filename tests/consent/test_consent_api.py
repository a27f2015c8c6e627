"""ConsentService over real gRPC on loopback: the decision table, authorization, bad input."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ciphercare.v1 import common_pb2, consent_pb2

PERMIT = consent_pb2.CONSENT_DECISION_PERMIT
DENY = consent_pb2.CONSENT_DECISION_DENY
_ids = itertools.count()


def ts(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


def new_pid() -> str:
    return f"pt-{next(_ids):05d}-{datetime.now(UTC).strftime('%H%M%S%f')}"


def grant(env, pid: str, *, org: str = "hospital-a", decision: int = PERMIT, purposes=("TREAT",),
          classes=("Observation",), start: datetime | None = None, end: datetime | None = None,
          provisions=()) -> consent_pb2.GrantResponse:
    now = datetime.now(UTC)
    period = common_pb2.Period(start=ts(start or now - timedelta(hours=1)))
    if end is not None:
        period.end.CopyFrom(ts(end))
    return env.patient(pid).grant(consent_pb2.GrantRequest(
        pid=pid, grantee_organization=org, decision=decision, purposes=list(purposes),
        data_classes=list(classes), period=period, provisions=list(provisions)))


def check(env, pid: str, *, org: str = "hospital-a", purpose: str = "TREAT", data_class: str = "Observation"):
    return env.hospital(org).check(pid, org, purpose, data_class)


def test_permit_names_the_consent_and_returns_a_receipt(env):
    pid = new_pid()
    granted = grant(env, pid)
    assert granted.consent.status == consent_pb2.CONSENT_STATUS_ACTIVE
    assert granted.consent.pid == pid and granted.consent.version == 1
    assert granted.receipt.tx_id and granted.receipt.checkpoint.tree_size > granted.receipt.sequence
    assert granted.consent.recorded_by.subject == f"patient-{pid}"
    result = check(env, pid)
    assert result.decision == PERMIT
    assert result.consent_id == granted.consent.id
    assert result.reason


def test_default_deny_without_consent(env):
    result = check(env, new_pid())
    assert result.decision == DENY and result.consent_id == ""
    assert "no" in result.reason.lower()


def test_explicit_deny_consent(env):
    pid = new_pid()
    denied = grant(env, pid, decision=DENY)
    result = check(env, pid)
    assert result.decision == DENY and result.consent_id == denied.consent.id


def test_deny_overrides_permit_across_consents(env):
    pid = new_pid()
    grant(env, pid, purposes=("TREAT", "HRESCH"))
    deny = grant(env, pid, decision=DENY, purposes=("HRESCH",))
    assert check(env, pid, purpose="TREAT").decision == PERMIT
    result = check(env, pid, purpose="HRESCH")
    assert result.decision == DENY and result.consent_id == deny.consent.id


def test_nested_provision_deny_inside_permit(env):
    pid = new_pid()
    nested = consent_pb2.ConsentProvision(type=DENY, data_classes=["Condition"])
    granted = grant(env, pid, classes=("Observation", "Condition"), provisions=[nested])
    assert check(env, pid, data_class="Observation").decision == PERMIT
    result = check(env, pid, data_class="Condition")
    assert result.decision == DENY and result.consent_id == granted.consent.id


def test_nested_permit_inside_deny(env):
    pid = new_pid()
    nested = consent_pb2.ConsentProvision(type=PERMIT, purposes=["ETREAT"])
    grant(env, pid, decision=DENY, purposes=("TREAT", "ETREAT"), provisions=[nested])
    assert check(env, pid, purpose="ETREAT").decision == PERMIT
    assert check(env, pid, purpose="TREAT").decision == DENY


def test_expired_and_not_yet_valid(env):
    now = datetime.now(UTC)
    expired = new_pid()
    grant(env, expired, start=now - timedelta(days=10), end=now - timedelta(days=1))
    result = check(env, expired)
    assert result.decision == DENY and "expired" in result.reason.lower()
    future = new_pid()
    grant(env, future, start=now + timedelta(days=1))
    assert check(env, future).decision == DENY


def test_check_at_a_point_in_time(env):
    now = datetime.now(UTC)
    pid = new_pid()
    grant(env, pid, start=now - timedelta(days=10), end=now - timedelta(days=1))
    past = env.hospital().call(env.hospital().consent.Check, consent_pb2.CheckRequest(
        pid=pid, recipient_organization="hospital-a", purpose="TREAT", data_class="Observation",
        at=ts(now - timedelta(days=5))))
    assert past.decision == PERMIT


def test_revoked_consent_denies_and_keeps_history(env):
    pid = new_pid()
    granted = grant(env, pid)
    revoked = env.patient(pid).revoke(granted.consent.id, "patient-request")
    assert revoked.consent.status == consent_pb2.CONSENT_STATUS_INACTIVE
    assert revoked.consent.version == 2
    assert revoked.receipt.sequence > granted.receipt.sequence
    result = check(env, pid)
    assert result.decision == DENY and "revoked" in result.reason.lower()
    client = env.patient(pid)
    history = client.call(client.consent.GetHistory, consent_pb2.GetConsentHistoryRequest(
        consent_id=granted.consent.id))
    assert [v.version for v in history.versions] == [1, 2]
    assert [v.status for v in history.versions] == [consent_pb2.CONSENT_STATUS_ACTIVE,
                                                   consent_pb2.CONSENT_STATUS_INACTIVE]
    with pytest.raises(grpc.RpcError) as again:
        client.revoke(granted.consent.id, "patient-request")
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_other_org_and_other_data_class_are_denied(env):
    pid = new_pid()
    grant(env, pid)
    assert check(env, pid, org="hospital-b").decision == DENY
    assert check(env, pid, data_class="Condition").decision == DENY


def test_unknown_purpose_is_invalid_argument(env):
    pid = new_pid()
    with pytest.raises(grpc.RpcError) as err:
        check(env, pid, purpose="SNOOPING")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SNOOPING" in err.value.details()


def test_hospital_cannot_check_for_another_org(env):
    with pytest.raises(grpc.RpcError) as err:
        env.hospital("hospital-b").check(new_pid(), "hospital-a", "TREAT", "Observation")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_get_returns_the_offchain_document_matching_the_onchain_hash(env):
    import hashlib

    pid = new_pid()
    granted = grant(env, pid)
    client = env.patient(pid)
    got = client.call(client.consent.Get, consent_pb2.GetConsentRequest(consent_id=granted.consent.id))
    assert got.consent.id == granted.consent.id
    assert hashlib.sha256(got.fhir_consent_json.encode()).hexdigest() == got.consent.document_sha256
    assert '"resourceType":"Consent"' in got.fhir_consent_json


def test_patient_sees_only_their_own_consents(env):
    mine, theirs = new_pid(), new_pid()
    grant(env, theirs)
    with pytest.raises(grpc.RpcError) as err:
        env.patient(mine).list_for_patient(theirs)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(env.patient(theirs).list_for_patient(theirs)) == 1


def _ledger_size(env) -> int:
    return env.app.ledger.size()


@pytest.mark.parametrize(
    ("mutate", "code", "fragment"),
    [
        (lambda r: r.ClearField("pid"), grpc.StatusCode.INVALID_ARGUMENT, "pid"),
        (lambda r: setattr(r, "grantee_organization", ""), grpc.StatusCode.INVALID_ARGUMENT, "grantee_organization"),
        (lambda r: r.purposes.append("NOTACODE"), grpc.StatusCode.INVALID_ARGUMENT, "NOTACODE"),
        (lambda r: r.data_classes.append("Spaceship"), grpc.StatusCode.INVALID_ARGUMENT, "Spaceship"),
        (lambda r: setattr(r, "decision", 0), grpc.StatusCode.INVALID_ARGUMENT, "decision"),
        (lambda r: setattr(r, "fhir_consent_json", "{not json"), grpc.StatusCode.INVALID_ARGUMENT, "JSON"),
        (lambda r: setattr(r, "fhir_consent_json", '{"resourceType": "Patient"}'),
         grpc.StatusCode.INVALID_ARGUMENT, "Consent"),
    ],
)
def test_bad_grant_input_is_refused_and_nothing_written(env, mutate, code, fragment):
    pid = new_pid()
    request = consent_pb2.GrantRequest(pid=pid, grantee_organization="hospital-a", decision=PERMIT,
                                       purposes=["TREAT"], data_classes=["Observation"])
    mutate(request)
    before = _ledger_size(env)
    with pytest.raises(grpc.RpcError) as err:
        env.patient(pid).grant(request)
    assert err.value.code() == code
    assert fragment in err.value.details()
    assert _ledger_size(env) == before


def _offchain_rows(env) -> tuple[int, int]:
    from sqlalchemy import func, select

    from ciphercare.services.store.models import Document

    with env.app.store.session() as session:
        documents = int(session.scalar(select(func.count()).select_from(Document)) or 0)
    return documents, env.app.store.data_key_count()


def test_grant_to_an_organisation_outside_the_registry_is_refused_and_nothing_written(env):
    """A typo'd recipient (the portal once showed a consent to `hospital-zzz` as active) is INVALID_ARGUMENT with
    the registry named; nothing reaches the ledger or the off-chain store, whoever asks."""
    pid = new_pid()
    typo_actor = consent_pb2.ConsentProvision(type=DENY, actors=["hospital-a"], provisions=[
        consent_pb2.ConsentProvision(type=PERMIT, actors=["clinic-zz"])])
    requests = [
        (env.patient(pid), dict(grantee_organization="hospital-zzz"), "grantee_organization: 'hospital-zzz'"),
        (env.patient(pid), dict(grantee_organization="hospital-a", provisions=[typo_actor]),
         "provisions[0].provisions[0].actors[0]: 'clinic-zz'"),
        (env.hospital("hospital-a"), dict(grantee_organization="Hospital-A"), "'Hospital-A'"),
    ]
    before = (_ledger_size(env), *_offchain_rows(env))
    for client, fields, fragment in requests:
        request = consent_pb2.GrantRequest(pid=pid, decision=PERMIT, purposes=["TREAT"],
                                           data_classes=["Observation"], **fields)
        with pytest.raises(grpc.RpcError) as err:
            client.grant(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = err.value.details()
        assert fragment in details and "is not an organisation ciphercare knows" in details, details
        assert "hospital-b" in details and "\n" not in details  # the registry is named, in one line
    assert (_ledger_size(env), *_offchain_rows(env)) == before
    assert env.patient(pid).list_for_patient(pid, include_inactive=True) == []
    # The same request with a known recipient goes through: the refusal was about the organisation only.
    assert grant(env, pid, org="hospital-b").consent.grantee_organization == "hospital-b"


def test_patient_cannot_grant_for_someone_else(env):
    import json

    before = _ledger_size(env)
    victim = new_pid()
    with pytest.raises(grpc.RpcError) as err:
        env.patient(new_pid()).grant(consent_pb2.GrantRequest(
            pid=victim, grantee_organization="hospital-a", decision=PERMIT, purposes=["TREAT"],
            data_classes=["Observation"]))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # No consent is written; the attempt is, in the victim's history, with what was asked for.
    assert _ledger_size(env) == before + 1
    entry = env.app.ledger.entry(before)
    assert (entry.contract, entry.function) == ("accesslog", "Record")
    (event,) = [json.loads(e.payload) for e in entry.events if e.name == "AccessRecorded"]
    assert (event["outcome"], event["entity"]["pid"], event["purpose_of_use"]) == ("denied", victim, "TREAT")


def test_oversized_message_is_refused(env):
    pid = new_pid()
    request = consent_pb2.GrantRequest(pid=pid, grantee_organization="hospital-a", decision=PERMIT,
                                       purposes=["TREAT"], data_classes=["Observation"],
                                       fhir_consent_json="x" * (env.settings.grpc_max_message_bytes + 10))
    before = _ledger_size(env)
    with pytest.raises(grpc.RpcError) as err:
        env.patient(pid).grant(request)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _ledger_size(env) == before


@pytest.mark.parametrize("kind", ["missing", "malformed", "expired", "wrong-audience", "wrong-issuer", "tampered"])
def test_bad_tokens_are_unauthenticated(env, kind):
    import base64
    import json

    from ciphercare.sdk.client import CiphercareClient
    from ciphercare.services.identity.devissuer import DevIssuer

    pid = new_pid()
    good = env.token("patient", pid=pid)
    if kind == "missing":
        token = ""
    elif kind == "malformed":
        token = "not.a.jwt"
    elif kind == "expired":
        token = env.issuer.issue(subject="p", roles=["patient"], org="", pid=pid, ttl_s=-120)
    elif kind == "wrong-audience":
        other = DevIssuer(env.settings.resolved_dev_issuer_key_path, env.settings.resolved_oidc_issuer,
                          "some-other-api")
        token = other.issue(subject="p", roles=["patient"], org="", pid=pid)
    elif kind == "wrong-issuer":
        other = DevIssuer(env.settings.resolved_dev_issuer_key_path, "http://127.0.0.1:1/realms/evil",
                          env.settings.oidc_audience)
        token = other.issue(subject="p", roles=["patient"], org="", pid=pid)
    else:
        header, payload, sig = good.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "==="))
        claims["realm_access"] = {"roles": ["admin"]}
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        token = f"{header}.{forged}.{sig}"
    client = CiphercareClient.connect(env.server.target, token)
    before = _ledger_size(env)
    with pytest.raises(grpc.RpcError) as err:
        client.grant(consent_pb2.GrantRequest(pid=pid, grantee_organization="hospital-a", decision=PERMIT,
                                              purposes=["TREAT"], data_classes=["Observation"]))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details()
    # An unauthenticated caller writes nothing to the ledger (its refusal goes to the security log).
    assert _ledger_size(env) == before


def test_wrong_role_is_permission_denied(env):
    pid = new_pid()
    officer = env.officer()
    with pytest.raises(grpc.RpcError) as err:
        officer.grant(consent_pb2.GrantRequest(pid=pid, grantee_organization="hospital-a", decision=PERMIT,
                                               purposes=["TREAT"], data_classes=["Observation"]))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "compliance-officer" in err.value.details()


def test_staff_record_a_consent_only_with_evidence_of_the_patients_agreement(env):
    import base64
    import hashlib
    import json

    pid = new_pid()
    hospital = env.hospital("hospital-b")
    request = consent_pb2.GrantRequest(pid=pid, grantee_organization="hospital-b", decision=PERMIT,
                                       purposes=["TREAT"], data_classes=["Observation"])
    before = _ledger_size(env)
    with pytest.raises(grpc.RpcError) as err:
        hospital.grant(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "evidence" in err.value.details()
    # A bare reference is not evidence.
    request.fhir_consent_json = json.dumps({
        "resourceType": "Consent", "status": "active",
        "patient": {"identifier": {"system": "urn:ciphercare:pid", "value": pid}},
        "sourceReference": {"reference": "DocumentReference/anything"},
    })
    with pytest.raises(grpc.RpcError) as err:
        hospital.grant(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not evidence" in err.value.details()
    assert _ledger_size(env) == before
    form = b"%PDF-1.4 signed consent form of the patient"
    request.fhir_consent_json = json.dumps({
        "resourceType": "Consent", "status": "active",
        "patient": {"identifier": {"system": "urn:ciphercare:pid", "value": pid}},
        "sourceAttachment": {"contentType": "application/pdf", "data": base64.b64encode(form).decode()},
    })
    recorded = hospital.grant(request)
    assert recorded.consent.recorded_by.organization == "hospital-b"
    assert recorded.consent.recorded_by_organization == "hospital-b"
    assert recorded.consent.authority == "staff"
    assert recorded.consent.evidence_sha256 == hashlib.sha256(form).hexdigest()
    # The form itself is stored off-chain under its hash (sealed under the patient's key).
    assert env.app.store.get_document(recorded.consent.evidence_sha256, pid=pid) == form
    # A staff PERMIT is proposed until the patient confirms it (default policy).
    assert recorded.consent.status == consent_pb2.CONSENT_STATUS_PROPOSED
    assert check(env, pid, org="hospital-b").decision == DENY
    patient = env.patient(pid)
    confirmed = patient.call(patient.consent.Confirm, consent_pb2.ConfirmRequest(consent_id=recorded.consent.id))
    assert confirmed.consent.status == consent_pb2.CONSENT_STATUS_ACTIVE
    assert confirmed.consent.confirmed_by.subject == f"patient-{pid}"
    assert check(env, pid, org="hospital-b").decision == PERMIT
