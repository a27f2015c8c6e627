"""Receipts, forged field by field: `receipt verify` (and the portal's check) refuse every change a person could
read, naming the field; the SDK's leaf reading agrees with the services' conversion."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit.server import Env, ServerThread, make_settings

from ciphercare.sdk.leaf import access_event_message, consent_message, parse_leaf, recorded_events, written_consent
from ciphercare.sdk.receipts import (
    NO_PINNED_KEY_WARNING,
    ReceiptError,
    access_event_receipt,
    consent_change_receipt,
    verify_receipt,
)
from ciphercare.services.audit import convert as audit_convert
from ciphercare.services.consent import convert as consent_convert
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.v1 import access_log_pb2, consent_pb2


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = make_settings(tmp_path_factory.mktemp("receipts"))
    server = ServerThread(settings).start()
    try:
        yield Env(server=server, issuer=DevIssuer.from_settings(settings))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def vkey(env: Env) -> str:
    return env.app.ledger.public_key_vkey()  # the key the operator hands out (ciphercare receipt vkey)


@pytest.fixture(scope="module")
def event_receipt(env: Env, vkey: str) -> dict[str, Any]:
    hospital = env.hospital("hospital-b")
    event = hospital.record(access_log_pb2.RecordRequest(
        type="110110", subtype="read", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_DENIED,
        outcome_description="no-consent", purpose_of_use="HRESCH", pid="pt-0077-rc", data_classes=["Observation"],
        source_observer="hospital-b/ehr")).event
    officer = env.officer()
    proof = officer.call(officer.access_log.GetInclusionProof,
                         access_log_pb2.GetInclusionProofRequest(event_id=event.id))
    return access_event_receipt(event, proof, vkey)


@pytest.fixture(scope="module")
def grant_receipt(env: Env, vkey: str) -> dict[str, Any]:
    patient = env.patient("pt-0078-rc")
    response = patient.grant(consent_pb2.GrantRequest(
        pid="pt-0078-rc", grantee_organization="hospital-b", decision=consent_pb2.CONSENT_DECISION_DENY,
        purposes=["HRESCH"], data_classes=["Observation"]))
    return consent_change_receipt("grant", response.consent, response.receipt, vkey)


def test_genuine_receipts_verify_and_warn_without_a_pinned_key(event_receipt, grant_receipt, vkey) -> None:
    for receipt in (event_receipt, grant_receipt):
        pinned = verify_receipt(receipt, vkey)
        assert pinned.ok and not pinned.warnings, pinned.problems
        unpinned = verify_receipt(receipt)
        assert unpinned.ok and unpinned.warnings == [NO_PINNED_KEY_WARNING]


def _set(receipt: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    forged = copy.deepcopy(receipt)
    node = forged
    *parents, last = path.split(".")
    for name in parents:
        node = node[name]
    node[last] = value
    return forged


EVENT_FORGERIES = [
    ("event.outcome", "ACCESS_OUTCOME_SUCCESS", "event.outcome"),
    ("event.agent.organization", "hospital-a", "event.agent.organization"),
    ("event.agent.subject", "someone-else", "event.agent.subject"),
    ("event.purpose_of_use", "TREAT", "event.purpose_of_use"),
    ("event.pid", "pt-0001-xx", "event.pid"),
    ("event.recorded", "2020-01-01T00:00:00Z", "event.recorded"),
    ("event.data_classes", ["Condition"], "event.data_classes"),
    ("event.source_observer", "hospital-a/ehr", "event.source_observer"),
    ("event.outcome_description", "consent-permit", "event.outcome_description"),
    ("event.consent_basis", "verified-consent", "event.consent_basis"),
    ("event.consent_id", "cns-" + "0" * 32, "event.consent_id"),
    ("event.id", "ae-" + "0" * 32, "event.id"),
    ("transaction.tx_id", "0" * 64, "transaction.tx_id"),
    ("transaction.leaf_index", 5, "transaction.leaf_index"),
    ("checkpoint.tree_size", 999, "checkpoint.tree_size"),
    ("checkpoint.root_hash", "00" * 32, "checkpoint.root_hash"),
    ("log.origin", "evil.example/ledger", "log.origin"),
    ("statement", "This access was allowed.", "statement"),
    ("verified_by_portal", {"ok": True}, "verified_by_portal"),
]


@pytest.mark.parametrize(("path", "value", "named"), EVENT_FORGERIES, ids=[f[0] for f in EVENT_FORGERIES])
def test_a_forged_access_receipt_is_refused_naming_the_field(event_receipt, vkey, path, value, named) -> None:
    forged = _set(event_receipt, path, value)
    for key in (vkey, None):
        check = verify_receipt(forged, key)
        assert not check.ok
        assert any(named in p for p in check.problems), check.problems


CONSENT_FORGERIES = [
    ("consent.decision", "CONSENT_DECISION_PERMIT", "consent.decision"),
    ("consent.grantee_organization", "hospital-a", "consent.grantee_organization"),
    ("consent.status", "CONSENT_STATUS_INACTIVE", "consent.status"),
    ("consent.recorded_by_organization", "hospital-b", "consent.recorded_by_organization"),
    ("consent.authority", "staff", "consent.authority"),
    ("consent.purposes", ["TREAT"], "consent.purposes"),
    ("kind", "consent-revocation", "statement"),
]


@pytest.mark.parametrize(("path", "value", "named"), CONSENT_FORGERIES, ids=[f[0] for f in CONSENT_FORGERIES])
def test_a_forged_consent_receipt_is_refused_naming_the_field(grant_receipt, vkey, path, value, named) -> None:
    check = verify_receipt(_set(grant_receipt, path, value), vkey)
    assert not check.ok and any(named in p for p in check.problems), check.problems


def test_a_re_signed_receipt_under_another_key_is_refused_when_a_key_is_pinned(event_receipt, vkey) -> None:
    forged = copy.deepcopy(event_receipt)
    forged["log"]["verifier_key"] = "attacker+00000000+AQ" + "A" * 42 + "="
    check = verify_receipt(forged, vkey)
    assert not check.ok and "log.verifier_key is not the key you pinned" in check.problems


def test_receipt_verify_cli_names_the_field_and_warns(event_receipt, vkey, tmp_path: Path, capsys) -> None:
    from ciphercare.services.cli.main import main

    good = tmp_path / "good.json"
    good.write_text(json.dumps(event_receipt))
    assert main(["receipt", "verify", str(good)]) == 0
    assert "no verifier key was pinned" in capsys.readouterr().err
    assert main(["receipt", "verify", str(good), "--vkey", vkey]) == 0
    assert "WARNING" not in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_set(event_receipt, "event.outcome", "ACCESS_OUTCOME_SUCCESS")))
    assert main(["receipt", "verify", str(bad), "--vkey", vkey]) == 1
    assert "event.outcome differs from the ledger" in capsys.readouterr().err


def test_receipt_vkey_prints_the_key_clients_pin(env: Env, vkey: str, capsys) -> None:
    from ciphercare.services.cli.main import main

    assert main(["receipt", "vkey", "--data-dir", str(env.settings.data_dir)]) == 0
    assert capsys.readouterr().out.strip() == vkey


def test_a_malformed_receipt_is_an_error_not_a_pass(event_receipt) -> None:
    with pytest.raises(ReceiptError):
        verify_receipt(_set(event_receipt, "kind", "something-else"))
    broken = _set(event_receipt, "event", {"outcome": "NOT_AN_ENUM"})
    with pytest.raises(ReceiptError):
        verify_receipt(broken)


def test_the_sdk_reads_leaves_as_the_services_convert_them(env: Env, event_receipt, grant_receipt) -> None:
    for receipt in (event_receipt, grant_receipt):
        leaf = parse_leaf(base64.b64decode(receipt["inclusion_proof"]["leaf"]))
        index = receipt["inclusion_proof"]["leaf_index"]
        for event in recorded_events(leaf):
            assert access_event_message(event, index, leaf["tx_id"]) == audit_convert.access_event_to_proto(
                event, index, leaf["tx_id"])
        record = written_consent(leaf)
        if record is not None:
            assert consent_message(record) == consent_convert.consent_to_proto(record)
    # Every optional field set (a revoked, confirmed staff consent; an aggregated refusal citing a consent).
    actor = {"subject": "u1", "org": "hospital-b", "roles": ["hospital"], "client": "sdk"}
    record = {
        "id": "cns-" + "1" * 32, "version": 3, "status": "inactive", "pid": "pt-42", "grantee_org": "hospital-b",
        "decision": "permit", "purposes": ["TREAT"], "data_classes": ["Observation"],
        "period": {"start": "2026-01-01T00:00:00.000Z", "end": "2027-01-01T00:00:00.000Z"},
        "provisions": [{"type": "deny", "purposes": [], "data_classes": ["Condition"], "actors": [],
                        "provisions": [], "period": {"start": "2026-02-01T00:00:00.000Z"}}],
        "document_sha256": "ab" * 32, "recorded_at": "2026-01-01T10:00:00.123Z", "recorded_by": actor,
        "revoked_at": "2026-03-01T10:00:00Z", "revoked_by": actor, "revocation_reason": "care-ended",
        "evidence_sha256": "ef" * 32, "authority": "staff", "confirmed_at": "2026-01-02T10:00:00Z",
        "confirmed_by": {"subject": "p1", "org": "patients", "roles": ["patient"], "client": "portal"},
    }
    assert consent_message(record) == consent_convert.consent_to_proto(record)
    event = {
        "id": "ae-" + "2" * 32, "type": "110110", "subtype": "read", "action": "R",
        "recorded": "2026-05-01T12:00:00.500Z", "outcome": "denied", "outcome_desc": "permission-denied",
        "purpose_of_use": None, "agent": actor, "source": {"observer": "ciphercare/ConsentService"},
        "entity": {"pid": "pt-42", "consent_id": "cns-" + "1" * 32, "model_sha256": "cd" * 32,
                   "data_classes": ["Observation"], "detail_sha256": "ef" * 32},
        "repeat_count": 7, "consent_basis": "verified-consent",
    }
    assert access_event_message(event, 9, "ab" * 32) == audit_convert.access_event_to_proto(event, 9, "ab" * 32)
