"""The detector reads ciphercare's own access log: events recorded over real gRPC, searched back, flagged.

A clinician records a bulk pull through ``AccessLogService.Record`` with a canary name in the off-chain
detail; an officer searches the log; the events go through the detector's input conversion, and the
flag names the pull without ever seeing the detail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
import pytest
from testkit.server import Env, ServerThread, make_settings

from ciphercare.analytics.anomaly import AccessAnomalyDetector, events_from_records
from ciphercare.analytics.anomaly.explain import BY_CONSENT, UNEXPLAINED, AuditContext, consents_from_records, explain
from ciphercare.analytics.anomaly.simulate import CANARY_NAME, SimConfig, simulate
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.services.platform.convert import access_event_from_proto, consent_from_proto
from ciphercare.v1 import access_log_pb2, consent_pb2

PULLED = 50


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
