"""The web app's pure parts: sessions, plain language, exports, chart."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from ciphercare.services.audit import exports
from ciphercare.services.web import chart, present
from ciphercare.services.web.sessions import SessionStore, WebUser
from ciphercare.v1 import access_log_pb2, common_pb2, consent_pb2

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


def _event(minutes: int, outcome: int, event_id: str = "ae-" + "0" * 32) -> access_log_pb2.AccessEvent:
    return access_log_pb2.AccessEvent(
        id=event_id, sequence=minutes, type="110110", subtype="read", action="R", outcome=outcome,
        purpose_of_use="TREAT", pid="pt-1", recorded=_ts(NOW + timedelta(minutes=minutes)),
        agent=common_pb2.Actor(subject="=cmd|' /C calc'!A0", organization="hospital-a", roles=["hospital"]),
        data_classes=["Observation"], tx_id="ab" * 32)


def test_sessions_expire_rotate_and_evict_anonymous_first() -> None:
    store = SessionStore(idle_s=60, max_age_s=600, max_sessions=3)
    signed_in = store.new()
    signed_in.user = WebUser("sub", "patient-1", "Alex", frozenset({"patient"}), "", "pt-1")
    for _ in range(5):
        store.new()
    assert store.get(signed_in.id) is signed_in and len(store) == 3
    old_id, old_csrf = signed_in.id, signed_in.csrf_token
    store.rotate(signed_in)
    assert store.get(old_id) is None and signed_in.id != old_id and signed_in.csrf_token != old_csrf
    signed_in.last_seen -= 61
    assert store.get(signed_in.id) is None  # idle too long


def test_consent_in_plain_language() -> None:
    consent = consent_pb2.Consent(
        id="cns-" + "1" * 32, status=consent_pb2.CONSENT_STATUS_ACTIVE, grantee_organization="hospital-b",
        decision=consent_pb2.CONSENT_DECISION_PERMIT, purposes=["TREAT", "HRESCH"],
        data_classes=["Observation", "Immunization"],
        period=common_pb2.Period(start=_ts(NOW - timedelta(days=1)), end=_ts(datetime(2027, 2, 20, tzinfo=UTC))))
    view = present.consent_view(consent, NOW)
    assert view.status == "active"
    assert view.sentence == ("Hospital B may use your test results and measurements (lab, vital signs) and your "
                             "vaccinations for treatment and healthcare research, until 19 February 2027.")
    assert present.consent_view(consent, datetime(2027, 2, 20, tzinfo=UTC)).status == "expired"
    consent.status = consent_pb2.CONSENT_STATUS_INACTIVE
    assert present.consent_view(consent, NOW).status == "revoked"


def test_csv_neutralises_formulas_and_fhir_is_balp_shaped() -> None:
    events = [_event(0, access_log_pb2.ACCESS_OUTCOME_SUCCESS),
              _event(5, access_log_pb2.ACCESS_OUTCOME_DENIED, "ae-" + "1" * 32)]
    rows = list(csv.DictReader(io.StringIO(exports.to_csv(events))))
    assert rows[0]["agent_subject"].startswith("'=")  # no spreadsheet formula
    assert [r["outcome"] for r in rows] == ["success", "denied"]
    bundle = exports.audit_bundle(events, "http://x/export", "collection")
    assert bundle["type"] == "collection" and "total" not in bundle
    resource = bundle["entry"][1]["resource"]
    assert resource["outcome"] == "4" and resource["subtype"][0]["code"] == "read"
    assert resource["source"]["type"][0]["code"] == "4"
    assert any(e.get("role", {}).get("code") == "1" for e in resource["entity"])  # the patient


def test_chart_counts_by_outcome_per_hour() -> None:
    events = [_event(m, o) for m, o in ((0, 1), (10, 2), (70, 1), (75, 1), (130, 3))]
    data, unit = chart.buckets(events)
    assert unit == "hour" and [b.counts for b in data] == [
        {"allowed": 1, "denied": 1}, {"allowed": 2}, {"error": 1}]
    svg = chart.svg(data, unit)
    assert svg.count('class="bar-allowed"') == 2 and 'role="img"' in svg
    assert "5 accesses over 3 hours: 3 allowed, 1 denied, 1 error" in svg


def test_day_buckets_from_aggregates_fill_gaps_and_group_long_spans() -> None:
    data, unit = chart.day_buckets([("2026-03-01", 10, 2, 1), ("2026-03-04", 5, 0, 0)])
    assert unit == "day" and [b.label for b in data] == ["01 Mar 2026", "02 Mar 2026", "03 Mar 2026", "04 Mar 2026"]
    assert [b.counts for b in data] == [{"allowed": 7, "denied": 2, "error": 1}, {}, {}, {"allowed": 5}]
    days = [(f"2026-{m:02d}-{d:02d}", 1, 0, 0) for m in range(1, 7) for d in range(1, 29)]  # 168 days
    grouped, unit = chart.day_buckets(days)
    assert len(grouped) <= chart.MAX_BUCKETS and unit.endswith("days")
    assert sum(b.total for b in grouped) == 6 * 28
    assert "periods of" in chart.svg(grouped, unit)


def test_tick_labels_are_thinned_so_they_cannot_overlap() -> None:
    for days in (3, 12, 30, 48):
        data, unit = chart.day_buckets([(f"2026-01-{d:02d}", 1, 0, 0) for d in range(1, min(days, 31) + 1)]
                                       + [(f"2026-02-{d:02d}", 1, 0, 0) for d in range(1, days - 31 + 1)])
        svg = chart.svg(data, unit)
        xs = [float(x) for x in re.findall(r'class="tick tick-x" x="([\d.]+)"', svg)]
        labels = re.findall(r'class="tick tick-x"[^>]*>([^<]+)<', svg)
        pairs = zip(zip(xs, labels, strict=True), zip(xs[1:], labels[1:], strict=True), strict=False)
        assert len(xs) >= 2 and all(
            xb - xa >= (len(la) + len(lb)) / 2 * chart.TICK_CHAR_W for (xa, la), (xb, lb) in pairs), (days, xs)
