"""ComplianceService over real gRPC on loopback (SQLite and PostgreSQL): newest-first search with paging
both ways, aggregates equal to counting the rows, complete streamed exports, scope and bad input.

Events are recorded through the real server where the test is about order and paging; for the volume tests
(aggregates, exports past the old 10,000-row cap) synthetic rows are inserted into the server's own
projection through the store, with ledger sequences far above the ledger's, and read back over gRPC.
"""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
from collections import Counter
from datetime import UTC, datetime

import grpc
import pytest

from ciphercare.sdk.audit import AuditClient
from ciphercare.services.bench.audit import insert_events, synthetic_event
from ciphercare.v1 import access_log_pb2, compliance_pb2

SUCCESS = access_log_pb2.ACCESS_OUTCOME_SUCCESS
DENIED = access_log_pb2.ACCESS_OUTCOME_DENIED
OUTCOME_NAME = {access_log_pb2.ACCESS_OUTCOME_SUCCESS: "success", access_log_pb2.ACCESS_OUTCOME_DENIED: "denied",
                access_log_pb2.ACCESS_OUTCOME_ERROR: "error"}


def record(client, pid: str, outcome: int = SUCCESS) -> access_log_pb2.AccessEvent:
    return client.record(access_log_pb2.RecordRequest(
        type="110110", subtype="read", action="R", outcome=outcome, purpose_of_use="TREAT", pid=pid,
        data_classes=["Observation"], source_observer="",  # the default: "<org>/<client>"
        outcome_description="" if outcome == SUCCESS else "no-consent")).event


def officer(env) -> AuditClient:
    return AuditClient(env.officer())


def seed_rows(env, org: str, n: int, first_seq: int, seed: int) -> list:
    """``n`` synthetic events of organisation ``org`` in the server's projection (3 days, mixed outcomes)."""
    rng = random.Random(seed)
    start = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
    rows = [synthetic_event(first_seq + i, start + i * (3 * 86_400_000 // n), rng, org=org,
                            outcome=rng.choice(["success", "success", "denied", "error"])) for i in range(n)]
    insert_events(env.app.store, rows)
    return rows


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_search_is_newest_first_and_pages_both_ways(env) -> None:
    pid = f"pc-{uuid.uuid4().hex[:10]}"
    hospital = env.hospital("hospital-a")
    recorded = [record(hospital, pid, DENIED if i % 3 == 0 else SUCCESS) for i in range(11)]
    newest_first = [e.id for e in sorted(recorded, key=lambda e: -e.sequence)]
    audit = officer(env)
    request = compliance_pb2.ComplianceSearchRequest(filter=compliance_pb2.AccessFilter(pid=pid), page_size=4)

    pages: list[list[str]] = []
    responses = []
    response = audit.search(request)
    assert response.previous_page_token == ""  # the first page has nothing before it
    while True:
        responses.append(response)
        pages.append([e.id for e in response.events])
        if not response.next_page_token:
            break
        response = audit.search(compliance_pb2.ComplianceSearchRequest(
            filter=request.filter, page_size=4, page_token=response.next_page_token))
    assert pages == [newest_first[0:4], newest_first[4:8], newest_first[8:11]]

    # Back from the last page, one page at a time, to the first (which has no previous page).
    back = responses[-1]
    seen_back = []
    while back.previous_page_token:
        back = audit.search(compliance_pb2.ComplianceSearchRequest(
            filter=request.filter, page_size=4, page_token=back.previous_page_token))
        seen_back.append([e.id for e in back.events])
    assert seen_back == [newest_first[4:8], newest_first[0:4]]
    assert back.next_page_token  # and forward again from there
    again = audit.search(compliance_pb2.ComplianceSearchRequest(
        filter=request.filter, page_size=4, page_token=back.next_page_token))
    assert [e.id for e in again.events] == newest_first[4:8]

    oldest = audit.search(compliance_pb2.ComplianceSearchRequest(
        filter=request.filter, page_size=20, order=compliance_pb2.SEARCH_ORDER_OLDEST_FIRST))
    assert [e.id for e in oldest.events] == newest_first[::-1] and not oldest.next_page_token

    denied = list(audit.search_all(compliance_pb2.ComplianceSearchRequest(
        filter=compliance_pb2.AccessFilter(pid=pid, outcome=DENIED), page_size=2)))
    assert [e.id for e in denied] == [i for i in newest_first if i in {e.id for e in recorded[::3]}]


def test_a_cursor_cannot_be_reused_with_other_filters_or_forged(env) -> None:
    audit = officer(env)
    pid = f"pc-{uuid.uuid4().hex[:10]}"
    hospital = env.hospital("hospital-a")
    for _ in range(3):
        record(hospital, pid)
    first = audit.search(compliance_pb2.ComplianceSearchRequest(filter=compliance_pb2.AccessFilter(pid=pid),
                                                                page_size=1))
    assert first.next_page_token
    other = compliance_pb2.ComplianceSearchRequest(filter=compliance_pb2.AccessFilter(pid=pid, outcome=DENIED),
                                                   page_token=first.next_page_token)
    assert code_of(lambda: audit.search(other)) == grpc.StatusCode.INVALID_ARGUMENT
    reordered = compliance_pb2.ComplianceSearchRequest(filter=compliance_pb2.AccessFilter(pid=pid),
                                                       order=compliance_pb2.SEARCH_ORDER_OLDEST_FIRST,
                                                       page_token=first.next_page_token)
    assert code_of(lambda: audit.search(reordered)) == grpc.StatusCode.INVALID_ARGUMENT
    for token in ("not a token", "eyJkIjoibmV4dCJ9", first.next_page_token[:-3]):
        bad = compliance_pb2.ComplianceSearchRequest(filter=compliance_pb2.AccessFilter(pid=pid), page_token=token)
        assert code_of(lambda b=bad: audit.search(b)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: audit.search(compliance_pb2.ComplianceSearchRequest(page_size=1001))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    backwards = compliance_pb2.AccessFilter()
    backwards.recorded_from.FromSeconds(2_000_000_000)
    backwards.recorded_to.FromSeconds(1_000_000_000)
    assert code_of(lambda: audit.aggregate(backwards)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: list(audit.compliance.Export(compliance_pb2.ExportRequest(format=99),
                                                        metadata=audit.client._meta(), timeout=15))) == \
        grpc.StatusCode.INVALID_ARGUMENT


def test_aggregates_equal_counting_the_rows(env) -> None:
    org = f"org-agg-{uuid.uuid4().hex[:6]}"
    rows = seed_rows(env, org, 3000, first_seq=10**9, seed=11)
    audit = officer(env)
    agg = audit.aggregate(compliance_pb2.AccessFilter(organization=org))
    assert agg.total == 3000
    assert {OUTCOME_NAME[c.outcome]: c.count for c in agg.by_outcome} == dict(Counter(r.outcome for r in rows))
    by_day = Counter(datetime.fromtimestamp(r.recorded_ms / 1000, tz=UTC).date().isoformat() for r in rows)
    denied_by_day = Counter(datetime.fromtimestamp(r.recorded_ms / 1000, tz=UTC).date().isoformat()
                            for r in rows if r.outcome == "denied")
    errors_by_day = Counter(datetime.fromtimestamp(r.recorded_ms / 1000, tz=UTC).date().isoformat()
                            for r in rows if r.outcome == "error")
    assert [(d.day, d.count, d.denied, d.errors) for d in agg.by_day] == \
        [(day, by_day[day], denied_by_day[day], errors_by_day[day]) for day in sorted(by_day)]
    assert [(o.organization, o.count, o.denied, o.errors) for o in agg.by_organization] == \
        [(org, 3000, sum(r.outcome == "denied" for r in rows), sum(r.outcome == "error" for r in rows))]

    # The same numbers as counting what Search returns, filter by filter.
    denied = compliance_pb2.AccessFilter(organization=org, outcome=DENIED)
    searched = list(audit.search_all(compliance_pb2.ComplianceSearchRequest(filter=denied, page_size=1000)))
    assert audit.aggregate(denied).total == len(searched) == sum(r.outcome == "denied" for r in rows)
    window = compliance_pb2.AccessFilter(organization=org)
    window.recorded_from.FromMilliseconds(rows[1000].recorded_ms)
    window.recorded_to.FromMilliseconds(rows[2000].recorded_ms)
    assert audit.aggregate(window).total == 1000

    # A provider's scope leaves the other organisation's events out: counted as nothing, not refused.
    assert AuditClient(env.hospital("hospital-a")).aggregate(compliance_pb2.AccessFilter(organization=org)).total == 0


def _export(audit: AuditClient, flt: compliance_pb2.AccessFilter, fmt: str) -> tuple[bytes, list]:
    chunks = list(audit.export(flt, fmt, timeout_s=120))
    return b"".join(c.data for c in chunks), chunks


def test_exports_are_complete_and_streamed(env) -> None:
    org = f"org-exp-{uuid.uuid4().hex[:6]}"
    n = 12_000  # more than the 10,000 rows the old console export stopped at
    rows = seed_rows(env, org, n, first_seq=2 * 10**9, seed=12)
    expected = [r.event_id for r in sorted(rows, key=lambda r: -r.seq)]
    audit = officer(env)
    flt = compliance_pb2.AccessFilter(organization=org)

    data, chunks = _export(audit, flt, "jsonl")
    assert len(chunks) > 1, "a 12,000-row export arrives in several chunks"
    assert [c.rows for c in chunks] == sorted(c.rows for c in chunks) and chunks[-1].rows == n
    assert {c.total_rows for c in chunks} == {n}
    lines = data.decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == expected  # every row, newest first, once

    data, _ = _export(audit, flt, "csv")
    table = list(csv.reader(io.StringIO(data.decode())))
    assert table[0][:3] == ["recorded", "event_id", "ledger_sequence"]
    assert [row[1] for row in table[1:]] == expected

    data, _ = _export(audit, flt, "fhir")
    bundle = json.loads(data)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    assert [entry["resource"]["id"] for entry in bundle["entry"]] == expected
    assert {entry["resource"]["resourceType"] for entry in bundle["entry"]} == {"AuditEvent"}

    # Scope: a provider exports its own organisation's events only (here: none of these).
    data, chunks = _export(AuditClient(env.hospital("hospital-a")), flt, "jsonl")
    assert data == b"" and chunks[-1].total_rows == 0


def test_roles_and_scope(env) -> None:
    pid = f"pc-{uuid.uuid4().hex[:10]}"
    own = record(env.hospital("hospital-a"), pid)
    other = record(env.hospital("hospital-b"), pid)
    by_pid = compliance_pb2.ComplianceSearchRequest(filter=compliance_pb2.AccessFilter(pid=pid))
    clinician = AuditClient(env.client(env.token("clinician", org="hospital-a", subject="clin-scope")))
    assert [e.id for e in clinician.search(by_pid).events] == [own.id]
    assert {e.id for e in officer(env).search(by_pid).events} == {own.id, other.id}
    patient = AuditClient(env.patient(pid))
    assert code_of(lambda: patient.search(by_pid)) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: list(clinician.flags(compliance_pb2.ListFlagsRequest()))) == \
        grpc.StatusCode.PERMISSION_DENIED
    too_long = compliance_pb2.ListFlagsRequest()
    too_long.window_start.FromSeconds(1_700_000_000)
    too_long.window_end.FromSeconds(1_700_000_000 + 40 * 86_400)
    assert code_of(lambda: list(officer(env).flags(too_long))) == grpc.StatusCode.INVALID_ARGUMENT
