"""Break-glass declarations: contract JSON <-> proto round trip, and the detector's table from them."""

from __future__ import annotations

from datetime import UTC, datetime

from ciphercare.analytics.anomaly.explain import break_glass_from_records
from ciphercare.consent.contracts.breakglass import Declaration
from ciphercare.services.consent.breakglass_convert import declaration_from_proto, declaration_to_proto

RECORD = {
    "id": "bg-" + "a" * 32, "version": 2, "pid": "pt-1002", "purpose": "ETREAT", "reason_code": "life-threatening",
    "text_sha256": "b" * 64, "declared_at": "2026-01-01T10:00:00.123Z", "expires_at": "2026-01-01T14:00:00.123Z",
    "declared_by": {"subject": "clin-a", "org": "hospital-a", "roles": ["clinician"]},
    "review_status": "escalated",
    "reviews": [{"outcome": "escalated", "reviewed_by": {"subject": "officer-1", "org": "regulator",
                                                          "roles": ["compliance-officer"]},
                 "reviewed_at": "2026-01-02T09:00:00Z", "note_sha256": "c" * 64}],
}


def test_round_trip_and_active_flag() -> None:
    Declaration.from_dict(RECORD)  # a valid stored declaration
    during = declaration_to_proto(RECORD, datetime(2026, 1, 1, 12, tzinfo=UTC))
    after = declaration_to_proto(RECORD, datetime(2026, 1, 1, 14, 0, 0, 123000, tzinfo=UTC))
    assert during.active and not after.active  # the end is exclusive
    assert declaration_from_proto(during) == RECORD
    no_note = {**RECORD, "reviews": [{**RECORD["reviews"][0], "note_sha256": None}]}
    assert declaration_from_proto(declaration_to_proto(no_note, datetime(2027, 1, 1, tzinfo=UTC))) == no_note


def test_detector_table_from_declarations_read_over_grpc() -> None:
    """What ``ListForReview`` answers, back to contract JSON, is the detector's ``break_glass`` table: the
    declarer (subject and organisation), the patient, and the window with its end exclusive (last ms inclusive)."""
    record = declaration_from_proto(declaration_to_proto(RECORD, datetime(2026, 1, 1, 12, tzinfo=UTC)))
    (row,) = break_glass_from_records([record]).to_dict("records")
    assert row == {"requester": "clin-a", "org": "hospital-a", "pid": "pt-1002", "start": 1767261600123,
                   "end": 1767276000122}
