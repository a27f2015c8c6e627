"""ComplianceService.ListFlags over real gRPC: a bulk pull recorded through the real server is flagged, with
a plain-language reason, by the detector trained on the consortium's history in the server's own store.

The history (two weeks of a simulated consortium, ``analytics/anomaly/simulate.py``) is put into the
server's access-event projection through the store, ending an hour before now: a ledger cannot be back-dated,
and the detector needs days of history. The misuse is recorded through ``AccessLogService.Record`` with a
canary patient name in the off-chain detail, which must never reach a flag.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest
from testkit.server import Env, ServerThread, make_settings

from ciphercare.analytics.anomaly.simulate import CANARY_NAME
from ciphercare.sdk.audit import AuditClient
from ciphercare.services.bench.audit import insert_events, simulated_history
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.v1 import access_log_pb2, compliance_pb2

PULLED = 60
HOUR_MS = 3_600_000


def seed_history(env: Env, end_ms: int) -> int:
    """Two weeks of simulated consortium access, ending at ``end_ms``, into the server's projection."""
    rows = simulated_history(end_ms)
    insert_events(env.app.store, rows)
    return len(rows)


@pytest.fixture(scope="module")
def flagged(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[tuple[Env, int, int]]:
    settings = make_settings(tmp_path_factory.mktemp("flags"), database_url=database_url,
                             compliance_flag_history_days=20)
    server = ServerThread(settings).start()
    env = Env(server=server, issuer=DevIssuer.from_settings(settings))
    try:
        now = int(time.time() * 1000)
        seeded = seed_history(env, now - HOUR_MS)
        clinician = env.client(env.token("clinician", org="hospital-b", subject="clin-bulk-1"))
        detail = json.dumps({"patient_name": CANARY_NAME, "screen": "patient list export"})
        for i in range(PULLED):
            clinician.record(access_log_pb2.RecordRequest(
                type="110106", subtype="search-type", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
                purpose_of_use="TREAT", pid=f"pid-pull-{i:03d}", data_classes=["Observation"],
                source_observer="hospital-b/ehr/cardiology", detail_json=detail))
        yield env, seeded, now
    finally:
        server.stop()


def window(now: int) -> compliance_pb2.ListFlagsRequest:
    request = compliance_pb2.ListFlagsRequest()
    request.window_start.FromMilliseconds(now - HOUR_MS // 2)
    request.window_end.FromMilliseconds(now + HOUR_MS)
    return request


def test_a_bulk_pull_is_flagged_with_a_plain_reason(flagged: tuple[Env, int, int]) -> None:
    env, seeded, now = flagged
    officer = AuditClient(env.officer())
    pages = list(officer.flags(window(now)))
    first = pages[0]
    assert first.notice == "" and first.history_events == seeded and first.events_examined == PULLED
    flags = [flag for page in pages for flag in page.flags]
    assert len(flags) == first.total_flags == 1
    flag = flags[0]
    assert (flag.requester_subject, flag.organization, flag.kind) == ("clin-bulk-1", "hospital-b", "bulk_export")
    assert "rule:bulk_export" in flag.detectors and flag.score == 1.0
    expected = (f"opened {PULLED} patients' records within one hour", f"exported {PULLED} patients' records")
    assert any(reason.startswith(expected) for reason in flag.reasons), flag.reasons
    assert len(flag.patients) == 20 and all(p.startswith("pid-pull-") for p in flag.patients)
    assert CANARY_NAME not in str(first) and flag.id

    # The history window is the setting's 20 days before the window.
    assert first.history_end.ToMilliseconds() == now - HOUR_MS // 2
    assert first.history_end.ToMilliseconds() - first.history_start.ToMilliseconds() == 20 * 24 * HOUR_MS


def test_flags_are_scoped_filtered_and_paged(flagged: tuple[Env, int, int]) -> None:
    env, _, now = flagged
    own = AuditClient(env.hospital("hospital-b"))
    assert [f.requester_subject for page in own.flags(window(now)) for f in page.flags] == ["clin-bulk-1"]
    other = AuditClient(env.hospital("hospital-a"))
    pages = list(other.flags(window(now)))
    assert [f for page in pages for f in page.flags] == [] and pages[0].events_examined == 0
    officer = AuditClient(env.officer())
    request = window(now)
    request.requester_subject = "someone-else"
    assert next(officer.flags(request)).total_flags == 0
    request = window(now)
    request.page_size = 1
    response = next(officer.flags(request))
    assert len(response.flags) == 1 and response.next_page_token == ""
    bad = window(now)
    bad.page_token = "garbage"
    with pytest.raises(grpc.RpcError) as info:
        next(officer.flags(bad))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_window_with_no_events_has_no_flags(flagged: tuple[Env, int, int]) -> None:
    env, _, now = flagged
    request = compliance_pb2.ListFlagsRequest()
    # A window long before the seeded history: nothing to examine, nothing to learn from.
    request.window_start.FromMilliseconds(now - 300 * 24 * HOUR_MS)
    request.window_end.FromMilliseconds(now - 299 * 24 * HOUR_MS)
    response = next(AuditClient(env.officer()).flags(request))
    assert (response.total_flags, response.events_examined, response.history_events) == (0, 0, 0)
