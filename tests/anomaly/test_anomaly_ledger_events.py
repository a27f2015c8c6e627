"""The detector reads ciphercare's own access log: events recorded over real gRPC, searched back, flagged.

A clinician records a bulk pull through ``AccessLogService.Record`` with a canary name in the off-chain
detail; an officer searches the log; the events go through the detector's input conversion, and the
flag names the pull without ever seeing the detail.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pandas as pd
import pytest
from testkit.server import Env, ServerThread, make_settings

from ciphercare.analytics.anomaly import AccessAnomalyDetector, events_from_records
from ciphercare.analytics.anomaly.explain import BY_CONSENT, UNEXPLAINED, AuditContext, consents_from_records, explain
from ciphercare.analytics.anomaly.simulate import CANARY_NAME, SimConfig, simulate
from ciphercare.services.audit.convert import access_event_from_proto
from ciphercare.services.consent.convert import consent_from_proto
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.v1 import access_log_pb2, consent_pb2

PULLED = 50
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = make_settings(tmp_path_factory.mktemp("anomaly"))
    server = ServerThread(settings).start()
    try:
        yield Env(server=server, issuer=DevIssuer.from_settings(settings))
    finally:
        server.stop()


def test_a_bulk_pull_recorded_on_the_ledger_is_flagged(env: Env) -> None:
    clinician = env.client(env.token("clinician", org="hospital-b", subject="clin-real-1"))
    detail = json.dumps({"patient_name": CANARY_NAME, "screen": "patient list export"})
    for i in range(PULLED):
        clinician.record(access_log_pb2.RecordRequest(
            type="110106", subtype="search-type", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
            purpose_of_use="TREAT", pid=f"pid-real-{i:03d}", data_classes=["Observation"],
            source_observer="hospital-b/ehr/cardiology", detail_json=detail))
    officer = env.officer()
    found = list(officer.search_all(access_log_pb2.SearchRequest(requester_subject="clin-real-1", page_size=1000)))
    events = events_from_records(access_event_from_proto(message) for message in found)
    assert len(events) == PULLED
    assert set(events["requester"]) == {"clin-real-1"} and set(events["org"]) == {"hospital-b"}
    assert events["pid"].nunique() == PULLED and set(events["type"]) == {"110106"}
    assert CANARY_NAME not in events.to_csv()  # the detail stays off-chain: only its hash is on the ledger

    # The consortium's history comes from the simulator; the pulling clinician has none of it.
    sim = simulate(SimConfig(seed=5, orgs=2, teams_per_org=3, clinicians_per_team=4, patients=600, history_days=14,
                             days=1, cases_per_kind=0))
    detector = AccessAnomalyDetector().fit(sim.history(), sim.context)
    flags = detector.detect(events, sim.context)
    assert len(flags) == 1
    flag = flags[0]
    assert (flag.requester, flag.organization, flag.kind) == ("clin-real-1", "hospital-b", "bulk_export")
    assert "rule:bulk_export" in flag.detectors
    # Within one clock hour, or (when the pull straddles the hour) as an export of that size.
    expected = (f"opened {PULLED} patients' records within one hour", f"exported {PULLED} patients' records")
    assert any(reason.startswith(expected) for reason in flag.reasons), flag.reasons
    assert CANARY_NAME not in json.dumps(flag.to_dict())


def test_consents_on_the_ledger_explain_research_access(env: Env) -> None:
    """A patient's research consent (granted over gRPC) explains a research export; a deny consent does not."""
    granted, refused = "pid-research-1", "pid-research-2"
    for pid, decision in ((granted, consent_pb2.CONSENT_DECISION_PERMIT), (refused, consent_pb2.CONSENT_DECISION_DENY)):
        env.patient(pid).grant(consent_pb2.GrantRequest(pid=pid, grantee_organization="hospital-b", decision=decision,
                                                        purposes=["HRESCH"], data_classes=["Observation"]))
    research = env.client(env.token("hospital", org="hospital-b", subject="svc-hospital-b-research"))
    for pid in (granted, refused):
        research.record(access_log_pb2.RecordRequest(
            type="110106", subtype="read", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
            purpose_of_use="HRESCH", pid=pid, data_classes=["Observation"], source_observer="hospital-b/research"))
    officer = env.officer()
    found = officer.search_all(access_log_pb2.SearchRequest(requester_subject="svc-hospital-b-research"))
    events = events_from_records(access_event_from_proto(message) for message in found)
    consents = consents_from_records(consent_from_proto(c) for pid in (granted, refused)
                                     for c in officer.list_for_patient(pid))
    assert consents[["pid", "org", "purpose"]].values.tolist() == [[granted, "hospital-b", "HRESCH"]]
    roster = pd.DataFrame({"requester": ["svc-hospital-b-research"], "org": ["hospital-b"], "team": [""],
                           "kind": ["service"]})
    explanation = explain(events, AuditContext.build(roster=roster, consents=consents))
    basis = dict(zip(events["pid"], explanation.basis.tolist(), strict=True))
    assert basis == {granted: BY_CONSENT, refused: UNEXPLAINED}


def test_break_glass_on_the_ledger_explains_access_and_repeats_are_flagged(env: Env) -> None:
    """Declarations made over gRPC reach the flags: a clinician's access under their own active declaration is
    explained; one clinician declaring for several patients is flagged as repeated break-glass; a colleague
    opening the same patients without declaring is not explained by someone else's declarations."""
    from ciphercare.sdk.audit import AuditClient
    from ciphercare.services.bench.audit import insert_events, simulated_history
    from ciphercare.v1 import breakglass_pb2, breakglass_pb2_grpc, compliance_pb2

    now = int(time.time() * 1000)
    insert_events(env.app.store, simulated_history(now - HOUR_MS))  # days of history: a ledger is not back-dated

    def declare_and_open(subject: str, pids: list[str]) -> list[str]:
        client = env.client(env.token("clinician", org="hospital-a", subject=subject))
        stub = breakglass_pb2_grpc.BreakGlassServiceStub(client.channel)
        ids = []
        for pid in pids:
            ids.append(client.call(stub.Declare, breakglass_pb2.DeclareBreakGlassRequest(
                pid=pid, reason_code="unconscious-patient", justification="arrived unconscious")).declaration.id)
            client.call(stub.RecordAccess, breakglass_pb2.RecordBreakGlassAccessRequest(
                pid=pid, data_classes=["Observation", "AllergyIntolerance"]))
        return ids

    many = [f"pid-bg-many-{i}" for i in range(4)]
    declare_and_open("clin-bg-once", ["pid-bg-once-1"])
    declared = declare_and_open("clin-bg-many", many)
    colleague = env.client(env.token("clinician", org="hospital-a", subject="clin-bg-none"))
    for pid in many:  # the same patients, ETREAT, no declaration of their own
        colleague.record(access_log_pb2.RecordRequest(
            type="110110", subtype="read", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
            purpose_of_use="ETREAT", pid=pid, data_classes=["Observation"], source_observer="hospital-a/ehr"))

    request = compliance_pb2.ListFlagsRequest()
    request.window_start.FromMilliseconds(now - HOUR_MS // 2)
    request.window_end.FromMilliseconds(now + HOUR_MS)
    pages = list(AuditClient(env.officer()).flags(request))
    assert pages[0].notice == ""
    flags = {flag.requester_subject: flag for page in pages for flag in page.flags}
    flag = flags["clin-bg-many"]
    assert (flag.organization, flag.kind) == ("hospital-a", "break_glass") and "rule:break_glass" in flag.detectors
    expected = f"reached {len(many)} patient(s) on break-glass alone"
    assert any(r.startswith(expected) and f"{len(many)} declaration(s) in this window" in r for r in flag.reasons), \
        list(flag.reasons)
    assert list(flag.patients) == []  # every access of theirs is explained (by their declarations), none unexplained
    assert len(set(declared)) == len(many)
    # One declaration, one patient, opened under it: explained, nothing unusual.
    assert "clin-bg-once" not in flags
    # The colleague's accesses are not explained by clin-bg-many's declarations: whatever is said of them,
    # it is not break-glass, and the patients behind it are the unexplained ones.
    if "clin-bg-none" in flags:
        other = flags["clin-bg-none"]
        assert other.kind != "break_glass" and not any("break-glass" in r for r in other.reasons)
        assert set(other.patients) == set(many)
