"""PHI canaries: plant unique tokens in every PHI-bearing field, run the scenario, find them nowhere they must not be.

Accepted PHI (names, MRNs, free text in the FHIR Consent and in access details) may
live only sealed in the off-chain documents table; refused PHI (a pid shaped like a
name or an MRN, free text in code fields, PHI in malformed documents) must not be
echoed by any error message and must be nowhere at all. Both backends.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
from pathlib import Path

import grpc
import pytest
from testkit.privacy import Canaries, Errors, Scanner, access_detail, consent_document, json_logs, log_lines
from testkit.scoring import default_training, deploy_default, key_owner

from ciphercare.sdk.client import CiphercareClient
from ciphercare.sdk.scoring import ScoringClient, ScoringError
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.services.privacy.operations import open_offchain_store
from ciphercare.services.store.models import Document
from ciphercare.v1 import access_log_pb2, consent_pb2

INVALID = grpc.StatusCode.INVALID_ARGUMENT



def test_phi_canaries_appear_nowhere_they_must_not(tmp_path: Path, store_url: str, server_kit) -> None:
    c = Canaries()
    settings = server_kit.make_settings(tmp_path / "data", database_url=store_url, orphan_grace_s=0)
    errors = Errors()
    pid = "pt-cnry-" + c.mrn("pseudonym-suffix")[:6]  # a pseudonym: allowed everywhere
    del c.tokens["pseudonym-suffix"]
    feature_value = 61.0 + secrets.randbelow(10**9) / 10**10  # an age no one has: 61.0xxxxxxxxx

    deploy_default(settings)  # what `ciphercare up` does: the scoring service itself never trains
    with json_logs(settings) as logs:
        server = server_kit.ServerThread(settings).start()
        try:
            env = server_kit.Env(server=server, issuer=DevIssuer.from_settings(settings))
            patient, hospital, officer = env.patient(pid), env.hospital(), env.officer()

            # --- accepted PHI-bearing input: consent with a FHIR document, access with details
            granted = patient.grant(consent_pb2.GrantRequest(
                pid=pid, grantee_organization="hospital-a", decision=consent_pb2.CONSENT_DECISION_PERMIT,
                purposes=["TREAT"], data_classes=["Observation"], fhir_consent_json=consent_document(pid, c)))
            recorded = hospital.record(access_log_pb2.RecordRequest(
                type="110110", subtype="read", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
                purpose_of_use="TREAT", pid=pid, consent_id=granted.consent.id, data_classes=["Observation"],
                detail_json=access_detail(c)))
            assert hospital.check(pid, "hospital-a", "TREAT", "Observation").decision == \
                consent_pb2.CONSENT_DECISION_PERMIT
            fetched = patient.call(patient.consent.Get, consent_pb2.GetConsentRequest(consent_id=granted.consent.id))
            # The authorised reader gets the document back: the PHI was accepted and kept (non-vacuity).
            assert c.tokens["consent.patient.family"] in fetched.fhir_consent_json
            found = list(officer.search_all(access_log_pb2.SearchRequest(pid=pid)))
            assert recorded.event.id in {e.id for e in found}
            verifier, _ = officer.verifier()
            officer.verify_event_inclusion(recorded.event.id, verifier)
            # Encrypted scoring: distinctive feature values never leave the hospital in the clear.
            scorer = ScoringClient.connect(server.target, env.token("hospital", org="hospital-a",
                                                                   subject="svc-hospital-a"), deadline_s=120)
            rows = default_training().test.x[:1].astype(float).copy()
            rows[0, 0] = feature_value
            scored = scorer.score(key_owner(), [pid], rows, purpose="TREAT", data_class="Observation")
            assert [r.status for r in scored.results] == ["scored"]
            patient.revoke(granted.consent.id, "patient-request")
            size_accepted = env.app.ledger.size()

            # --- PHI where it must be refused, and never echoed
            refused = {
                "refused.pid.name": f"{c.name('refused.pid.name')}.Doe",
                "refused.pid.mrn": f"MRN-{c.mrn('refused.pid.mrn')}",
                "refused.pid.digits": c.mrn("refused.pid.digits"),
                "refused.pid.capitalised": f"{c.name('refused.pid.capitalised')}-1984",
            }
            errors.expect(INVALID, patient.grant, consent_pb2.GrantRequest(
                pid=refused["refused.pid.name"], grantee_organization="hospital-a",
                decision=consent_pb2.CONSENT_DECISION_PERMIT, purposes=["TREAT"], data_classes=["Observation"]))
            errors.expect(INVALID, hospital.check, refused["refused.pid.mrn"], "hospital-a", "TREAT", "Observation")
            errors.expect(INVALID, hospital.record, access_log_pb2.RecordRequest(
                type="110110", subtype="read", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
                purpose_of_use="TREAT", pid=refused["refused.pid.capitalised"]))
            errors.expect(INVALID, lambda: list(officer.search_all(
                access_log_pb2.SearchRequest(pid=refused["refused.pid.digits"]))))
            # Unauthenticated and name-shaped: refused before authentication could log it on the ledger.
            anonymous = CiphercareClient.connect(server.target, "not-a-token")
            errors.expect(INVALID, anonymous.check, refused["refused.pid.name"], "hospital-a", "TREAT", "Observation")
            base = {"type": "110110", "subtype": "read", "action": "R", "pid": pid,
                    "outcome": access_log_pb2.ACCESS_OUTCOME_DENIED, "purpose_of_use": "TREAT"}
            errors.expect(INVALID, hospital.record, access_log_pb2.RecordRequest(
                **base, outcome_description=f"patient {c.words('refused.outcome_description')} said no"))
            errors.expect(INVALID, hospital.record, access_log_pb2.RecordRequest(
                **{**base, "purpose_of_use": f"care of {c.words('refused.purpose')}"}))
            errors.expect(INVALID, hospital.record, access_log_pb2.RecordRequest(
                **base, detail_json='{"note": "' + c.words("refused.detail.truncated")))
            errors.expect(INVALID, hospital.record, access_log_pb2.RecordRequest(
                **base, detail_json=json.dumps(f"{c.name('refused.detail.string')} {c.mrn('refused.detail.mrn')}")))
            errors.expect(INVALID, patient.grant, consent_pb2.GrantRequest(
                pid=pid, grantee_organization="hospital-a", decision=consent_pb2.CONSENT_DECISION_PERMIT,
                purposes=["TREAT"], data_classes=["Observation"],
                fhir_consent_json=json.dumps({"resourceType": "Patient", "name": c.name("refused.fhir.patient")})))
            errors.expect(INVALID, patient.grant, consent_pb2.GrantRequest(
                pid=pid, grantee_organization="hospital-a", decision=consent_pb2.CONSENT_DECISION_PERMIT,
                purposes=["TREAT"], data_classes=["Observation"],
                fhir_consent_json='{"resourceType": "Consent", "note": "' + c.words("refused.fhir.truncated")))
            # A refused role on a good pseudonym is refused and logged on the ledger as denied (pseudonym only).
            errors.expect(grpc.StatusCode.PERMISSION_DENIED, patient.record, access_log_pb2.RecordRequest(
                type="110110", subtype="read", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
                purpose_of_use="TREAT", pid=pid, detail_json=json.dumps({"x": c.name("refused.role.detail")})))
            # A name-shaped pid inside a streamed ScoreHeader is refused too, before any event is recorded.
            scorer_size = env.app.ledger.size()
            try:
                scorer.score(key_owner(), [f"{c.name('refused.score.pid')}.Roe"], rows)
                raise AssertionError("scoring a name-shaped pid succeeded")
            except (grpc.RpcError, ScoringError) as exc:
                message = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
                errors.messages.append(f"score: {message}")
                assert "pseudonym, not an identifier" in message, message
            assert env.app.ledger.size() == scorer_size
            scorer.close()
            # Nothing refused was written, except the one denied event for the refused role.
            assert env.app.ledger.size() == size_accepted + 1
        finally:
            server.stop()
        lines = log_lines(logs)

    accepted = {label: token for label, token in c.tokens.items() if not label.startswith("refused.")}
    assert len(accepted) == 8 and len(c.tokens) - len(accepted) == 13

    scanner = Scanner(c.tokens)
    scanner.patterns["features.value.float64"] = {struct.pack("<d", feature_value), struct.pack(">d", feature_value)}
    scanner.patterns["features.value.text"] = {repr(feature_value).encode(), f"{feature_value:.6f}".encode()}
    scanner.scan_tree(settings.data_dir)  # ledger (+ WAL, checkpoints, MSP), keys, and the SQLite store if any
    scanner.scan_database(store_url)  # every row, every column, documents.body included (ciphertext)
    where_pg = scanner.scan_postgres_files(store_url) if store_url.startswith("postgresql") else "n/a"
    scanner.scan_lines("log line", lines)
    scanner.scan_lines("error message", errors.messages)
    assert not scanner.findings, f"PHI canaries leaked ({where_pg}):\n{scanner.report()}"
    if store_url.startswith("postgresql") and os.geteuid() == 0:
        assert where_pg.startswith("PostgreSQL files under"), where_pg

    assert any(json.loads(line)["msg"] == "store check" for line in lines)
    assert len(errors.messages) == 13 and scanner.scanned["files"] >= 3 and scanner.scanned["rows"] >= 4
    assert all("pseudonym, not an identifier" in m for m in errors.messages[:5])

    # The PHI is in the store -- sealed: with the key-encryption key every accepted canary decrypts back.
    store = open_offchain_store(settings, migrate=False)
    try:
        with store.session() as session:
            rows = [(row.sha256, row.pid) for row in session.query(Document)]
        plaintext = b"".join(store.get_document(sha, pid=owner) or b"" for sha, owner in rows)
    finally:
        store.close()
    readable = Scanner(accepted)
    readable.scan_bytes("decrypted documents", plaintext)
    assert {f.canary for f in readable.findings} == set(accepted)


def test_the_scanner_finds_a_planted_canary(tmp_path: Path) -> None:
    """The scan can fail: raw, base64-encoded and lower-cased copies are all found."""
    import base64

    c = Canaries()
    token = c.name("probe")
    (tmp_path / "raw.bin").write_bytes(b"\x00prefix" + token.encode() + b"suffix")
    (tmp_path / "b64.txt").write_bytes(base64.b64encode(b"xy" + token.encode() + b"z"))
    (tmp_path / "lower.txt").write_text(token.lower())
    scanner = Scanner(c.tokens)
    scanner.scan_tree(tmp_path)
    assert len(scanner.findings) == 3


@pytest.mark.parametrize("pid", ["pt-00001", "P-001", "pat-0002", "pt-demo-1a2b3c4d", "pt-crash-1-2"])
def test_pseudonyms_in_use_pass_the_guard(pid: str) -> None:
    from ciphercare.services.privacy.operations import identifying_pid_reason

    assert identifying_pid_reason(pid) is None


@pytest.mark.parametrize("pid", ["John.Smith", "jane_doe", "MRN-0012345", "0012345678", "Smith-1984", "mrn00123"])
def test_name_and_mrn_shaped_pids_are_refused(pid: str) -> None:
    from ciphercare.services.privacy.operations import identifying_pid_reason, pid_refusal

    assert identifying_pid_reason(pid) is not None
    assert pid not in (pid_refusal(pid) or "")
