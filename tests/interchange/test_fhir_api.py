"""FhirService over real gRPC and the `ciphercare fhir` CLI against a real server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from fhir.resources.consent import Consent as ConsentR5
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent as ConsentR4B
from testkit.consent import r4b_consent

from ciphercare.services.audit.exports import balp_problems
from ciphercare.services.cli.main import main
from ciphercare.v1 import access_log_pb2, consent_pb2, fhir_pb2, fhir_pb2_grpc


def _pid(tag: str) -> str:
    return f"pt-fh{tag}-{datetime.now(UTC).strftime('%H%M%S%f')}"


def stub(env, token: str):  # type: ignore[no-untyped-def]
    client = env.client(token)
    s = fhir_pb2_grpc.FhirServiceStub(client.channel)
    meta = (("authorization", f"Bearer {token}"),)
    return lambda name, req: getattr(s, name)(req, metadata=meta, timeout=15)


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()  # type: ignore[no-any-return]


def doc_for(pid: str) -> dict:
    doc = r4b_consent()
    doc["patient"]["identifier"]["value"] = pid
    doc["provision"]["period"] = {"start": "2025-01-01T00:00:00Z", "end": "2035-01-01T00:00:00Z"}
    return doc


#: Consent.status of a consent staff proposed that awaits the patient (R5 has no "proposed").
PROPOSED = {"R4B": "proposed", "R5": "draft"}
FIELDS = ("pid", "grantee_organization", "decision", "purposes", "data_classes", "period", "provisions")


def ledger_and_offchain(env) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from ciphercare.services.store.models import Document

    with env.app.store.session() as session:
        documents = int(session.scalar(select(func.count()).select_from(Document)) or 0)
    return env.app.ledger.size(), documents, env.app.store.data_key_count()


def consent_of(env, consent_id: str) -> consent_pb2.Consent:  # type: ignore[no-untyped-def]
    officer = env.officer()
    return officer.consent.Get(consent_pb2.GetConsentRequest(consent_id=consent_id), metadata=officer._meta(),
                               timeout=15).consent


@pytest.mark.parametrize("version", ["R4B", "R5"])
def test_import_check_export_import_round_trip(env, version: str) -> None:
    pid = _pid(version.lower())
    hospital_token = env.token("hospital", org="hospital-a", subject="svc-hospital-a")
    call = stub(env, hospital_token)
    first = call("ImportConsent", fhir_pb2.ImportConsentRequest(resource_json=json.dumps(doc_for(pid))))
    assert first.consent_id.startswith("cns-") and first.receipt.tx_id
    # Staff imported a PERMIT: proposed until the patient confirms it, whatever the document's status said.
    assert first.status == "proposed"
    assert env.hospital().check(pid, "hospital-a", "TREAT", "Observation").decision == consent_pb2.CONSENT_DECISION_DENY
    # A proposed consent exports as proposed (R4B) / draft (R5) and re-imports as proposed.
    proposed = call("ExportConsent", fhir_pb2.ExportConsentRequest(consent_id=first.consent_id, fhir_version=version))
    resource = json.loads(proposed.resource_json)
    (ConsentR4B if version == "R4B" else ConsentR5).model_validate(resource)
    assert resource["status"] == PROPOSED[version]
    again = call("ImportConsent", fhir_pb2.ImportConsentRequest(resource_json=proposed.resource_json,
                                                                fhir_version=version))
    assert again.status == "proposed"
    env.patient(pid).confirm(first.consent_id)
    decision = env.hospital().check(pid, "hospital-a", "TREAT", "Observation")
    assert decision.decision == consent_pb2.CONSENT_DECISION_PERMIT
    assert decision.consent_id == first.consent_id
    exported = call("ExportConsent", fhir_pb2.ExportConsentRequest(consent_id=first.consent_id, fhir_version=version))
    resource = json.loads(exported.resource_json)
    (ConsentR4B if version == "R4B" else ConsentR5).model_validate(resource)
    assert resource["status"] == "active"
    second = call("ImportConsent", fhir_pb2.ImportConsentRequest(resource_json=exported.resource_json,
                                                                 fhir_version=version))
    assert second.status == "proposed"  # staff again: the patient confirms this one too, import cannot skip it
    a, b, c = (consent_of(env, cid) for cid in (first.consent_id, second.consent_id, again.consent_id))
    for field in FIELDS:
        assert getattr(a, field) == getattr(b, field) == getattr(c, field), field
    assert (a.status, b.status, c.status) == (consent_pb2.CONSENT_STATUS_ACTIVE, consent_pb2.CONSENT_STATUS_PROPOSED,
                                              consent_pb2.CONSENT_STATUS_PROPOSED)


@pytest.mark.parametrize("version", ["R4B", "R5"])
def test_a_proposed_document_is_never_put_in_force_by_import(env, version: str) -> None:
    """A document proposed to the patient is imported only as proposed: the patient's own import of it, and a
    staff DENY, would be in force at once, so they are refused; nothing is written."""
    pid = _pid("pr" + version.lower())
    proposed = doc_for(pid)
    proposed["status"] = "proposed"
    hospital = stub(env, env.token("hospital", org="hospital-a", subject="svc-hospital-a"))
    staff_proposed = hospital("ImportConsent", fhir_pb2.ImportConsentRequest(resource_json=json.dumps(proposed)))
    assert staff_proposed.status == "proposed"
    document = json.loads(hospital("ExportConsent", fhir_pb2.ExportConsentRequest(
        consent_id=staff_proposed.consent_id, fhir_version=version)).resource_json)
    assert document["status"] == PROPOSED[version]
    deny = json.loads(json.dumps(document))
    if version == "R4B":
        deny["provision"]["type"] = "deny"
    else:
        deny["decision"] = "deny"
    patient = stub(env, env.token("patient", pid=pid, subject=f"patient-{pid}"))
    before = ledger_and_offchain(env)
    for caller, bad, fragment in ((patient, document, "the patient (or proxy) records a consent in force at once"),
                                  (hospital, deny, "a deny staff record is in force at once")):
        with pytest.raises(grpc.RpcError) as err:
            caller("ImportConsent", fhir_pb2.ImportConsentRequest(resource_json=json.dumps(bad), fhir_version=version))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"Consent.status: '{PROPOSED[version]}'" in err.value.details() and fragment in err.value.details()
    # A status of the other version is not a proposal: R5 has no "proposed", R4B's "draft" is not presented yet.
    other = dict(document, status="proposed" if version == "R5" else "draft")
    with pytest.raises(grpc.RpcError) as err:
        hospital("ImportConsent", fhir_pb2.ImportConsentRequest(resource_json=json.dumps(other), fhir_version=version))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "Consent.status" in err.value.details()
    assert ledger_and_offchain(env) == before
    assert [c.id for c in env.officer().list_for_patient(pid, include_inactive=True)] == [staff_proposed.consent_id]
    # The patient puts it in force by confirming it, not by importing it.
    env.patient(pid).confirm(staff_proposed.consent_id)
    assert env.hospital().check(pid, "hospital-a", "TREAT", "Observation").decision == \
        consent_pb2.CONSENT_DECISION_PERMIT


def test_under_the_immediate_policy_a_proposed_document_is_refused(server_kit, tmp_path: Path) -> None:
    """Policy `immediate`: staff permits are in force at once, so a document proposed to the patient would be
    put in force by its import: FAILED_PRECONDITION, nothing written; the same document as `active` goes in."""
    from ciphercare.services.identity.devissuer import DevIssuer

    settings = server_kit.make_settings(tmp_path, consent_staff_permit="immediate")
    server = server_kit.ServerThread(settings).start()
    try:
        env = server_kit.Env(server=server, issuer=DevIssuer.from_settings(settings))
        pid = _pid("imm")
        proposed = doc_for(pid)
        proposed["status"] = "proposed"
        call = stub(env, env.token("hospital", org="hospital-a", subject="svc-hospital-a"))
        before = ledger_and_offchain(env)
        with pytest.raises(grpc.RpcError) as err:
            call("ImportConsent", fhir_pb2.ImportConsentRequest(resource_json=json.dumps(proposed)))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "consent_staff_permit immediate" in err.value.details()
        assert ledger_and_offchain(env) == before
        active = call("ImportConsent", fhir_pb2.ImportConsentRequest(resource_json=json.dumps(doc_for(pid))))
        assert active.status == "active"
    finally:
        server.stop()


def test_import_refusals_have_precise_statuses_and_write_nothing(env) -> None:
    pid = _pid("bad")
    call = stub(env, env.token("hospital", org="hospital-a", subject="svc-hospital-a"))
    typo = doc_for(pid)
    typo["provision"]["actor"][0]["reference"]["identifier"]["value"] = "hospital-zzz"
    no_evidence = doc_for(pid)
    no_evidence.pop("sourceReference")
    before = ledger_and_offchain(env)
    for bad in (typo, no_evidence, {"resourceType": "Patient"}):
        assert code_of(lambda bad=bad: call("ImportConsent", fhir_pb2.ImportConsentRequest(
            resource_json=json.dumps(bad)))) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: call("ImportConsent", fhir_pb2.ImportConsentRequest(
        resource_json="{", fhir_version="R4B"))) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: call("ImportConsent", fhir_pb2.ImportConsentRequest(
        resource_json=json.dumps(doc_for(pid)), fhir_version="R3"))) == grpc.StatusCode.INVALID_ARGUMENT
    assert ledger_and_offchain(env) == before  # INVALID_ARGUMENT: nothing on the ledger, nothing off-chain
    other_patient = stub(env, env.token("patient", pid="pt-someone", subject="patient-pt-someone"))
    assert code_of(lambda: other_patient("ImportConsent", fhir_pb2.ImportConsentRequest(
        resource_json=json.dumps(doc_for(pid))))) == grpc.StatusCode.PERMISSION_DENIED
    officer = stub(env, env.token("compliance-officer", org="regulator", subject="officer-1"))
    assert code_of(lambda: officer("ImportConsent", fhir_pb2.ImportConsentRequest(
        resource_json=json.dumps(doc_for(pid))))) == grpc.StatusCode.PERMISSION_DENIED
    # Staff of hospital-a recording a consent for hospital-b: refused before the document is stored.
    for_other_org = doc_for(pid)
    for_other_org["provision"]["actor"][0]["reference"]["identifier"]["value"] = "hospital-b"
    assert code_of(lambda: call("ImportConsent", fhir_pb2.ImportConsentRequest(
        resource_json=json.dumps(for_other_org)))) == grpc.StatusCode.PERMISSION_DENIED
    # PERMISSION_DENIED leaves its denied access events on the ledger (refusals); no consent, no document.
    assert ledger_and_offchain(env)[1:] == before[1:]
    assert env.officer().list_for_patient(pid, include_inactive=True) == []
    assert code_of(lambda: call("ExportConsent", fhir_pb2.ExportConsentRequest(
        consent_id="cns-" + "0" * 32))) == grpc.StatusCode.NOT_FOUND


def test_audit_event_bundle_follows_balp(env) -> None:
    pid = _pid("ae")
    hospital = env.hospital()
    hospital.record(access_log_pb2.RecordRequest(
        type="110110", subtype="read", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
        purpose_of_use="TREAT", pid=pid, data_classes=["Observation"], source_observer="hospital-a/ehr"))
    call = stub(env, env.token("compliance-officer", org="regulator", subject="officer-1"))
    response = call("ExportAuditEvents", fhir_pb2.ExportAuditEventsRequest(pid=pid))
    bundle = json.loads(response.bundle_json)
    Bundle.model_validate(bundle)
    assert response.count == 1 and len(bundle["entry"]) == 1
    assert balp_problems(bundle["entry"][0]["resource"]) == []
    assert code_of(lambda: call("ExportAuditEvents", fhir_pb2.ExportAuditEventsRequest(
        pid=pid, fhir_version="R5"))) == grpc.StatusCode.INVALID_ARGUMENT
    # a patient sees only their own events: another patient's export is empty
    stranger = stub(env, env.token("patient", pid="pt-stranger", subject="patient-pt-stranger"))
    assert stranger("ExportAuditEvents", fhir_pb2.ExportAuditEventsRequest(pid=pid)).count == 0


def test_cli_import_and_export(env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pid = _pid("cli")
    source = tmp_path / "consent.json"
    source.write_text(json.dumps(doc_for(pid)))
    token = env.token("hospital", org="hospital-a", subject="svc-hospital-a")
    base = ["--target", env.server.target, "--token", token, "--data-dir", str(tmp_path)]
    assert main(["fhir", "import", str(source), *base]) == 0
    out = capsys.readouterr().out
    consent_id = out.split()[1]
    assert consent_id.startswith("cns-")
    assert "(proposed: in force once the patient confirms it;" in out  # a staff import, said in the one line
    out = tmp_path / "out.json"
    assert main(["fhir", "export", consent_id, "--fhir-version", "R5", "-o", str(out), *base]) == 0
    ConsentR5.model_validate(json.loads(out.read_text()))
    source.write_text("{not json")
    assert main(["fhir", "import", str(source), *base]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ciphercare: fhir: INVALID_ARGUMENT:") and "\n" not in err
