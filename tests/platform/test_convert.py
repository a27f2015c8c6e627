"""Every to_proto/from_proto pair round-trips."""

from __future__ import annotations

from ciphercare.ledger.api import Checkpoint
from ciphercare.services.platform import convert

CONSENT = {
    "id": "cns-0123456789abcdef0123456789abcdef",
    "version": 2,
    "status": "inactive",
    "pid": "pt-42",
    "grantee_org": "hospital-a",
    "decision": "permit",
    "purposes": ["TREAT", "ETREAT"],
    "data_classes": ["Observation"],
    "period": {"start": "2026-01-01T00:00:00.000Z", "end": "2027-01-01T00:00:00.000Z"},
    "provisions": [
        {"type": "deny", "purposes": [], "data_classes": ["Condition"], "actors": ["hospital-b"],
         "provisions": [{"type": "permit", "purposes": ["ETREAT"], "data_classes": [], "actors": [],
                         "provisions": [], "period": {"start": "2026-02-01T00:00:00.000Z"}}]}
    ],
    "document_sha256": "ab" * 32,
    "recorded_at": "2026-01-01T10:00:00.123Z",
    "recorded_by": {"subject": "u1", "org": "", "roles": ["patient"]},
    "revoked_at": "2026-03-01T10:00:00.000Z",
    "revoked_by": {"subject": "u1", "org": "", "roles": ["patient"], "client": "portal"},
    "revocation_reason": "patient-request",
    "evidence_sha256": "ef" * 32,
}

EVENT = {
    "id": "ae-0123456789abcdef0123456789abcdef",
    "type": "110110",
    "subtype": "read",
    "action": "R",
    "recorded": "2026-05-01T12:00:00.500Z",
    "outcome": "denied",
    "outcome_desc": "no-consent",
    "purpose_of_use": "TREAT",
    "agent": {"subject": "svc", "org": "hospital-a", "roles": ["hospital"], "client": "hospital-a"},
    "source": {"observer": "hospital-a/ehr"},
    "entity": {"pid": "pt-42", "data_classes": ["Observation"], "consent_id": "cns-1", "detail_sha256": "cd" * 32},
}


def test_consent_round_trip() -> None:
    assert convert.consent_from_proto(convert.consent_to_proto(CONSENT)) == CONSENT


def test_access_event_round_trip() -> None:
    message = convert.access_event_to_proto(EVENT, 17, "ff" * 32)
    assert message.sequence == 17 and message.tx_id == "ff" * 32
    assert convert.access_event_from_proto(message) == EVENT


def test_decision_round_trip() -> None:
    decision = {"decision": "deny", "consent_id": "cns-1", "reason": "deny wins"}
    assert convert.decision_from_proto(convert.decision_to_proto(decision, "2026-01-01T00:00:00.000Z")) == decision


def test_checkpoint_round_trip() -> None:
    checkpoint = Checkpoint(origin="o", size=5, root_hash=b"\x01" * 32, timestamp_ms=1_700_000_000_123,
                            note="o\n5\nAQ==\n\n\u2014 k abc\n".encode(), key_name="k", key_id=b"\0\0\0\1")
    assert convert.checkpoint_from_proto(convert.checkpoint_to_proto(checkpoint), key_id=b"\0\0\0\1") == checkpoint


def test_period_and_time_round_trip() -> None:
    period = {"start": "2026-01-01T00:00:00.000Z", "end": "2026-06-30T23:59:59.999Z"}
    assert convert.period_from_proto(convert.period_to_proto(period)) == period
