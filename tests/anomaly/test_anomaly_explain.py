"""Explanation-based auditing on a hand-made context: what clears an access, and what does not."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from ciphercare.analytics.anomaly.events import DAY_MS, HOUR_MS, check_events
from ciphercare.analytics.anomaly.explain import (
    BY_BREAK_GLASS,
    BY_CARE,
    BY_CONSENT,
    UNEXPLAINED,
    AuditContext,
    break_glass_from_records,
    consents_from_records,
    explain,
)

DAY1 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)
OPEN = np.iinfo(np.int64).max


def at(day: int, hour: float) -> int:
    return DAY1 + day * DAY_MS + int(hour * HOUR_MS)


def ev(time: int, requester: str, pid: str, purpose: str = "TREAT", consent_id: str = "") -> dict[str, object]:
    return {"time": time, "requester": requester, "org": "h-a", "client": "c", "source": "s", "pid": pid,
            "purpose": purpose, "data_class": "Observation", "outcome": "success", "consent_id": consent_id,
            "type": "110110", "subtype": "read", "action": "R"}


@pytest.fixture(scope="module")
def context() -> AuditContext:
    return AuditContext.build(
        roster=pd.DataFrame({"requester": ["u1", "u2", "svc"], "org": ["h-a", "h-a", "h-a"],
                             "team": ["cardiology", "oncology", ""], "kind": ["clinician", "clinician", "service"]}),
        care=pd.DataFrame({"pid": ["p1"], "org": ["h-a"], "team": ["cardiology"], "start": [at(0, 0)],
                           "end": [at(0, 6)]}),
        consents=pd.DataFrame({
            "consent_id": ["c-p2", "c-p3", "c-p6"], "pid": ["p2", "p3", "p6"], "org": ["h-a"] * 3,
            "purpose": ["TREAT", "HRESCH", "CAREMGT"], "start": [at(-30, 0)] * 3, "end": [OPEN] * 3,
            "revoked": [OPEN, OPEN, at(0, 12)],
        }),
        break_glass=pd.DataFrame({"requester": ["u1"], "pid": ["p4"], "start": [at(0, 10)], "end": [at(0, 14)]}),
        care_grace_ms=3 * DAY_MS,
    )


CASES = [
    # (event, expected basis, expected no_basis, why)
    (ev(at(0, 8), "u1", "p1"), BY_CARE, False, "the requester's team has the patient's episode (in its grace)"),
    (ev(at(3, 5), "u1", "p1"), BY_CARE, False, "three days' grace after the episode ended"),
    (ev(at(3, 7), "u1", "p1"), UNEXPLAINED, True, "beyond the grace: no care, no consent"),
    (ev(at(0, 8), "u2", "p1"), UNEXPLAINED, False, "another team: the episode is at the org, but not theirs"),
    (ev(at(0, 8), "u1", "p2"), UNEXPLAINED, False, "an org-level treatment consent does not explain one clinician"),
    (ev(at(0, 8), "svc", "p2"), BY_CONSENT, False, "a service account under the org's consent"),
    (ev(at(0, 8), "u1", "p3", "HRESCH"), BY_CONSENT, False, "a non-treatment purpose the consent grants"),
    (ev(at(0, 8), "u1", "p3", "HMARKT"), UNEXPLAINED, False, "a purpose the consent does not grant"),
    (ev(at(0, 11), "u1", "p4", "ETREAT"), BY_BREAK_GLASS, False, "inside the requester's break-glass declaration"),
    (ev(at(0, 15), "u1", "p4", "ETREAT"), UNEXPLAINED, True, "after the declaration expired"),
    (ev(at(0, 11), "u2", "p4", "ETREAT"), UNEXPLAINED, True, "someone else's declaration explains nothing"),
    (ev(at(0, 11), "svc", "p6", "CAREMGT"), BY_CONSENT, False, "before the revocation"),
    (ev(at(0, 13), "svc", "p6", "CAREMGT"), UNEXPLAINED, True, "after the revocation"),
    (ev(at(0, 8), "svc", "p5", "CAREMGT", consent_id="c-p2"), UNEXPLAINED, True,
     "a consent id written on the event by the hospital is not taken on trust"),
    (ev(at(0, 8), "stranger", "p2", "HRESCH"), UNEXPLAINED, False, "not on any roster, no consent for the purpose"),
]


@pytest.mark.parametrize(("record", "basis", "no_basis", "why"), CASES, ids=[c[3] for c in CASES])
def test_each_access_alone(context: AuditContext, record: dict[str, object], basis: int, no_basis: bool,
                           why: str) -> None:
    explanation = explain(check_events(pd.DataFrame([record])), context)
    assert (int(explanation.basis[0]), bool(explanation.no_basis[0])) == (basis, no_basis), why


def test_all_at_once_matches_one_by_one(context: AuditContext) -> None:
    """The vectorised joins give each row its own answer in a mixed, unsorted batch."""
    frame = pd.DataFrame([c[0] for c in CASES])
    shuffled = frame.sample(frac=1.0, random_state=3).sort_values("time", kind="stable")
    events = check_events(shuffled)
    explanation = explain(events, context)
    expected = {(r["time"], r["requester"], r["pid"], r["purpose"], r["consent_id"]): (b, n)
                for r, b, n, _ in CASES}
    for i, row in enumerate(events.itertuples(index=False)):
        key = (row.time, row.requester, row.pid, row.purpose, row.consent_id)
        assert (int(explanation.basis[i]), bool(explanation.no_basis[i])) == expected[key]
    assert explanation.explained.sum() == sum(1 for c in CASES if c[1] != UNEXPLAINED)


def test_empty_context_explains_nothing() -> None:
    events = check_events(pd.DataFrame([c[0] for c in CASES]))
    explanation = explain(events, AuditContext.build())
    assert not explanation.explained.any()
    assert explanation.no_basis.all()


def test_context_tables_are_checked() -> None:
    with pytest.raises(ValueError, match="care lacks column"):
        AuditContext.build(care=pd.DataFrame({"pid": ["p1"]}))
    with pytest.raises(ValueError, match="care_grace_ms"):
        AuditContext.build(care_grace_ms=-1)


def test_consents_from_ledger_records() -> None:
    """Permit consents only, one row per purpose; provisions make a consent explain nothing (never broader)."""
    base = {"pid": "p9", "grantee_org": "h-a", "decision": "permit", "purposes": ["TREAT", "HRESCH"],
            "period": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-03T00:00:00Z"}, "provisions": [],
            "revoked_at": None}
    records = [
        {**base, "id": "c-1"},
        {**base, "id": "c-2", "decision": "deny"},
        {**base, "id": "c-3", "provisions": [{"type": "deny", "purposes": ["HRESCH"]}]},
        {**base, "id": "c-4", "purposes": ["CAREMGT"], "period": {"start": "2026-11-01T00:00:00Z"},
         "revoked_at": "2026-11-02T12:00:00Z"},
    ]
    table = consents_from_records(records)
    assert table[["consent_id", "purpose"]].values.tolist() == [["c-1", "TREAT"], ["c-1", "HRESCH"],
                                                                ["c-4", "CAREMGT"]]
    svc = pd.DataFrame({"requester": ["svc"], "org": ["h-a"], "team": [""], "kind": ["service"]})
    context = AuditContext.build(roster=svc, consents=table)
    end = int(datetime(2026, 11, 3, tzinfo=UTC).timestamp() * 1000)
    revoked = int(datetime(2026, 11, 2, 12, tzinfo=UTC).timestamp() * 1000)
    events = check_events(pd.DataFrame([
        {**ev(end - 1, "svc", "p9", "HRESCH")}, {**ev(end, "svc", "p9", "HRESCH")},  # the end is exclusive
        {**ev(revoked - 1, "svc", "p9", "CAREMGT")}, {**ev(revoked, "svc", "p9", "CAREMGT")},
    ]))
    # In time order: just before / at the revocation, just before / at the period's end.
    assert explain(events, context).basis.tolist() == [BY_CONSENT, UNEXPLAINED, BY_CONSENT, UNEXPLAINED]
    with pytest.raises(ValueError, match="consent record 0 lacks 'decision'"):
        consents_from_records([{"id": "x"}])


def test_break_glass_from_ledger_declarations_is_scoped_to_the_declarer_and_its_window() -> None:
    """The breakglass contract's declarations as the detector's table: the declarer (subject *and* organisation,
    as ``consent:Check`` requires), the patient, declared_at until expires_at (exclusive); a review changes
    nothing (an escalated declaration still says why the record was opened)."""
    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    declarer = {"subject": "u1", "org": "h-a", "roles": ["clinician"]}
    records = [{"id": "bg-" + "a" * 32, "pid": "p4", "declared_by": declarer, "declared_at": iso(at(0, 10)),
                "expires_at": iso(at(0, 14)), "review_status": "escalated"}]
    table = break_glass_from_records(records)
    assert table.to_dict("records") == [{"requester": "u1", "pid": "p4", "start": at(0, 10), "end": at(0, 14) - 1,
                                         "org": "h-a"}]
    context = AuditContext.build(break_glass=table)
    elsewhere = dict(ev(at(0, 11), "u1", "p4", "ETREAT"), org="h-b")
    events = check_events(pd.DataFrame([ev(at(0, 10), "u1", "p4", "ETREAT"), ev(at(0, 14) - 1, "u1", "p4", "ETREAT"),
                                        ev(at(0, 14), "u1", "p4", "ETREAT"), ev(at(0, 11), "u2", "p4", "ETREAT"),
                                        ev(at(0, 11), "u1", "p5", "ETREAT"), elsewhere]))
    basis = explain(events, context).basis.tolist()
    explained = {(row.time, row.requester, row.pid, row.org) for row, b in zip(events.itertuples(), basis, strict=True)
                 if b == BY_BREAK_GLASS}
    # the first and last millisecond of the window; not after it, not another clinician, patient or organisation
    assert explained == {(at(0, 10), "u1", "p4", "h-a"), (at(0, 14) - 1, "u1", "p4", "h-a")}
    assert basis.count(UNEXPLAINED) == 4
    with pytest.raises(ValueError, match="declaration 0 lacks 'declared_by'"):
        break_glass_from_records([{"pid": "p4"}])
