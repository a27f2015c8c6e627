"""Strict validation of consent/model.py: codes, ids, unknown fields, floats, nesting, round trips."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from testkit.consent import doc_hash, grant_dict, record

from ciphercare.consent import canonical
from ciphercare.consent.errors import ValidationError
from ciphercare.consent.model import (
    MAX_PROVISION_DEPTH,
    AccessEvent,
    AccessEventInput,
    ConsentGrant,
    ConsentRecord,
    Decision,
    format_time,
    loads_object,
    parse_time,
)


def rejects(fn: Any, data: Any, *fragments: str) -> str:
    with pytest.raises(ValidationError) as err:
        fn(data)
    message = str(err.value)
    assert message.startswith("INVALID_ARGUMENT: ")
    for fragment in fragments:
        assert fragment in message, message
    return message


def event_input(**overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "type": "risk-scoring",
        "subtype": "score",
        "action": "E",
        "outcome": "success",
        "outcome_desc": "",
        "purpose_of_use": "TREAT",
        "source": {"observer": "scoring-service"},
        "entity": {
            "pid": "pat-0001",
            "consent_id": "cns-" + "a" * 32,
            "model_sha256": doc_hash("m"),
            "data_classes": ["Observation"],
            "detail_sha256": doc_hash("d"),
        },
    }
    d.update(overrides)
    return d


# --- Grant / record ---


def test_grant_round_trip_normalises_times() -> None:
    g = ConsentGrant.from_dict(grant_dict(period={"start": "2025-01-01T02:00:00+02:00"}))
    assert g.period.start == "2025-01-01T00:00:00Z" and g.period.end is None
    again = ConsentGrant.from_dict(g.to_dict())
    assert again == g
    canonical.dumps(g.to_dict())


def test_record_round_trip() -> None:
    r = record(
        1,
        provisions=[
            {
                "type": "deny",
                "data_classes": ["Condition"],
                "provisions": [{"type": "permit", "actors": ["hospital-a"]}],
            }
        ],
    )
    assert ConsentRecord.from_dict(canonical.loads(canonical.dumps(r.to_dict()))) == r


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("purposes", ["FOO"], "'FOO' is not a v3 ActReason purpose-of-use code; allowed: BTG, CAREMGT, CLINTRCH"),
        ("purposes", [], "at least one"),
        ("purposes", ["TREAT", "TREAT"], "duplicate"),
        ("purposes", "TREAT", "expected a list"),
        ("data_classes", ["Blood"], "is not a FHIR resource-type data class code"),
        ("decision", "maybe", "permit|deny"),
        ("grantee_org", "Hospital A", "organisation id"),
        ("grantee_org", "hospital--a", "organisation id"),
        ("pid", "ab", "patient pseudonym"),
        ("pid", "pat 0001", "patient pseudonym"),
        ("pid", "x" * 65, "patient pseudonym"),
        ("document_sha256", "ABC", "SHA-256"),
        ("document_sha256", doc_hash().upper(), "SHA-256"),
        ("period", {"start": "2025-01-01"}, "ISO-8601"),
        ("period", {"start": None, "end": "2026-01-01T00:00:00Z"}, "needs a start time"),
        ("period", {"start": "2025-01-01T00:00:00"}, "timezone"),
        ("period", {"start": "2025-02-30T00:00:00Z"}, "not a valid date"),
        ("period", {"end": "2026-01-01T00:00:00Z"}, "missing required field(s) start"),
        (
            "period",
            {"start": "2025-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"},
            "end must be after start",
        ),
        ("period", {"start": "2025-01-01T00:00:00Z", "note": "x"}, "unknown field(s) 'note'"),
    ],
)
def test_grant_rejects(field: str, value: Any, fragment: str) -> None:
    rejects(ConsentGrant.from_dict, grant_dict(**{field: value}), f"consent.{field}", fragment)


def test_unknown_and_missing_fields() -> None:
    rejects(ConsentGrant.from_dict, grant_dict(note="patient is pregnant"), "unknown field(s) 'note'")
    d = grant_dict()
    del d["document_sha256"]
    rejects(ConsentGrant.from_dict, d, "missing required field(s) document_sha256")
    # fields the ledger assigns are not accepted as input
    rejects(ConsentGrant.from_dict, grant_dict(id="cns-" + "0" * 32), "unknown field(s) 'id'")
    rejects(
        ConsentGrant.from_dict, grant_dict(recorded_by={"subject": "x"}), "unknown field(s) 'recorded_by'"
    )


def test_free_text_is_rejected_and_not_echoed() -> None:
    msg = rejects(ConsentGrant.from_dict, grant_dict(purposes=["treat my diabetes please"]), "purposes[0]")
    assert "diabetes" not in msg
    msg = rejects(ConsentGrant.from_dict, grant_dict(**{"Jane Doe, DOB 1970": 1}), "<non-code key>")
    assert "Jane" not in msg


def test_floats_rejected() -> None:
    rejects(ConsentGrant.from_dict, grant_dict(purposes=[1.5]), "float")
    rejects(loads_object, '{"a": 1.0}', "floats are not allowed")
    rejects(loads_object, '{"a": NaN}', "NaN")
    d = record(1).to_dict()
    d["version"] = 1.0
    rejects(ConsentRecord.from_dict, d, "consent.version", "expected an integer")
    d["version"] = True
    rejects(ConsentRecord.from_dict, d, "expected an integer")


def test_loads_object_strict() -> None:
    rejects(loads_object, '{"a": 1, "a": 2}', "duplicate key 'a'")
    rejects(loads_object, "[1]", "expected a JSON object")
    rejects(loads_object, "{", "not valid JSON")
    rejects(loads_object, '{"a": "' + "x" * 70000 + '"}', "larger than")
    assert loads_object(b'{"a": [1, "b", null, true]}') == {"a": [1, "b", None, True]}


def _nest(depth: int) -> list[dict[str, Any]]:
    node: list[dict[str, Any]] = []
    for _ in range(depth):
        node = [{"type": "deny", "provisions": node}]
    return node


def test_depth_limit() -> None:
    ConsentGrant.from_dict(grant_dict(provisions=_nest(MAX_PROVISION_DEPTH)))
    rejects(ConsentGrant.from_dict, grant_dict(provisions=_nest(MAX_PROVISION_DEPTH + 1)), "deeper than 8")


def test_provision_list_bounds() -> None:
    rejects(ConsentGrant.from_dict, grant_dict(provisions=[{"type": "deny"}] * 17), "at most 16")
    wide = [{"type": "deny", "provisions": [{"type": "permit"}] * 7} for _ in range(8)]  # 64 nodes
    ConsentGrant.from_dict(grant_dict(provisions=wide))
    wide[0]["provisions"] = [{"type": "permit"}] * 8
    rejects(ConsentGrant.from_dict, grant_dict(provisions=wide), "more than 64 provisions")


def test_provision_rejects() -> None:
    rejects(
        ConsentGrant.from_dict,
        grant_dict(provisions=[{"purposes": ["TREAT"]}]),
        "missing required field(s) type",
    )
    rejects(
        ConsentGrant.from_dict,
        grant_dict(provisions=[{"type": "deny", "actors": ["Bad Org"]}]),
        "provisions[0].actors[0]",
    )
    rejects(
        ConsentGrant.from_dict, grant_dict(provisions=[{"type": "deny", "period": {}}]), "a start or an end"
    )
    rejects(
        ConsentGrant.from_dict,
        grant_dict(provisions=[{"type": "deny", "text": "no HIV data"}]),
        "unknown field(s) 'text'",
    )


def test_record_status_consistency() -> None:
    d = record(1).to_dict()
    d["status"] = "inactive"
    rejects(ConsentRecord.from_dict, d, "inactive consent needs")
    d = record(1).to_dict()
    d["revocation_reason"] = "patient-request"
    rejects(ConsentRecord.from_dict, d, "active consent cannot carry")
    d["revocation_reason"] = "I changed my mind"
    rejects(ConsentRecord.from_dict, d, "revocation reason")
    d = record(1).to_dict()
    d["status"] = "draft"
    rejects(ConsentRecord.from_dict, d, "active|inactive")
    d = record(1).to_dict()
    d["recorded_by"]["subject"] = "alice@example.org"
    rejects(ConsentRecord.from_dict, d, "recorded_by.subject")
    d = record(1).to_dict()
    d["recorded_by"]["roles"] = ["superuser"]
    rejects(ConsentRecord.from_dict, d, "recorded_by.roles[0]")


# --- Access events ---


def test_event_input_and_build() -> None:
    data = AccessEventInput.from_dict(event_input(entity={"pid": "pat-0001"}))
    assert data.entity.consent_id is None and data.entity.data_classes == ()
    from ciphercare.consent.model import AuditAgent

    agent = AuditAgent("user-1", "hospital-a", ("clinician",), "svc")
    ev = AccessEvent.build("ae-" + "0" * 32, datetime(2025, 1, 1, 0, 0, 0, 123000, tzinfo=UTC), agent, data)
    d = ev.to_dict()
    assert d["recorded"] == "2025-01-01T00:00:00.123Z"
    assert d["entity"] == {
        "pid": "pat-0001",
        "consent_id": None,
        "model_sha256": None,
        "data_classes": [],
        "detail_sha256": None,
    }
    assert AccessEvent.from_dict(canonical.loads(canonical.dumps(d))) == ev
    assert ev.fhir_outcome == "0"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            {"agent": {"subject": "x"}},
            "event.agent: must not be supplied; it is taken from the caller's certificate",
        ),
        ({"id": "ae-" + "0" * 32}, "event.id: must not be supplied"),
        ({"recorded": "2025-01-01T00:00:00Z"}, "event.recorded: must not be supplied"),
        ({"type": "110111"}, "AuditEvent type"),
        ({"subtype": "vread"}, "AuditEvent subtype"),
        ({"action": "X"}, "AuditEvent action"),
        ({"outcome": "0"}, "success|denied|error"),
        ({"outcome_desc": "patient has cancer"}, "short code-like reason"),
        ({"purpose_of_use": "treatment"}, "purpose-of-use"),
        ({"source": {"observer": "Scoring Service"}}, "event.source.observer"),
        ({"source": {"observer": "ok/but spaces not"}}, "no spaces"),
        ({"source": {"observer": "s", "host": "h"}}, "unknown field(s) 'host'"),
        ({"entity": {"pid": "pat-0001", "name": "Jane"}}, "unknown field(s) 'name'"),
        ({"entity": {"consent_id": "cns-1"}}, "consent id"),
        ({"entity": {"model_sha256": "00"}}, "SHA-256"),
        ({"entity": {"data_classes": ["Blood"]}}, "data class"),
        ({"note": "x"}, "unknown field(s) 'note'"),
    ],
)
def test_event_input_rejects(overrides: dict[str, Any], fragment: str) -> None:
    rejects(AccessEventInput.from_dict, event_input(**overrides), fragment)


def test_event_optional_fields() -> None:
    d = event_input()
    del d["outcome_desc"]
    d["purpose_of_use"] = None
    data = AccessEventInput.from_dict(d)
    assert data.outcome_desc == "" and data.purpose_of_use is None


def test_stored_event_requires_all_fields() -> None:
    data = AccessEventInput.from_dict(event_input())
    from ciphercare.consent.model import AuditAgent

    ev = AccessEvent.build(
        "ae-" + "1" * 32, datetime(2025, 1, 1, tzinfo=UTC), AuditAgent("u", "hospital-a", (), ""), data
    ).to_dict()
    bad = copy.deepcopy(ev)
    del bad["entity"]["detail_sha256"]
    rejects(AccessEvent.from_dict, bad, "missing required field(s) detail_sha256")


# --- Decision and times ---


def test_decision_round_trip() -> None:
    d = Decision("deny", None, "no active consent covers TREAT", "no-consent")
    assert Decision.from_dict(d.to_dict()) == d
    rejects(Decision.from_dict, {**d.to_dict(), "reason_code": "because"}, "decision reason")


def test_time_formats() -> None:
    assert format_time(datetime(2025, 1, 1, tzinfo=UTC)) == "2025-01-01T00:00:00Z"
    assert format_time(datetime(2025, 1, 1, 0, 0, 0, 5000, tzinfo=UTC)) == "2025-01-01T00:00:00.005Z"
    assert format_time(datetime(2025, 1, 1, 0, 0, 0, 5, tzinfo=UTC)) == "2025-01-01T00:00:00.000005Z"
    tz = timezone(timedelta(hours=-5))
    assert format_time(datetime(2024, 12, 31, 19, tzinfo=tz)) == "2025-01-01T00:00:00Z"
    assert parse_time("2025-01-01T00:00:00.5Z", "t") == datetime(2025, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    for bad in ("2025-01-01 00:00:00Z", "20250101T000000Z", "2025-01-01T00:00:00.1234567Z", "yesterday"):
        rejects(lambda v: parse_time(v, "t"), bad, "t:")
