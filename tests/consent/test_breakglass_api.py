"""BreakGlassService over real gRPC on loopback: declare, check, record access, review, report, bad input."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from ciphercare.v1 import access_log_pb2, breakglass_pb2, breakglass_pb2_grpc, consent_pb2

_ids = itertools.count()
CANARY = "Canary-BG-7f3e: patient found unconscious at 14 Elm Street"


def new_pid() -> str:
    return f"pt-bg{next(_ids):03d}-{datetime.now(UTC).strftime('%H%M%S%f')}"


class BG:
    """A BreakGlassService stub calling as one token."""

    def __init__(self, env, token: str) -> None:
        self.client = env.client(token)
        self.stub = breakglass_pb2_grpc.BreakGlassServiceStub(self.client.channel)
        self.meta = (("authorization", f"Bearer {token}"),)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        method = getattr(self.stub, name)
        return lambda request: method(request, metadata=self.meta, timeout=15)


def clinician(env, subject: str = "clin-a-1", org: str = "hospital-a") -> BG:
    return BG(env, env.token("clinician", org=org, subject=subject))


def officer(env, subject: str = "officer-1") -> BG:
    return BG(env, env.token("compliance-officer", org="regulator", subject=subject))


def declare(bg: BG, pid: str, reason: str = "unconscious-patient", text: str = CANARY):
    return bg.Declare(breakglass_pb2.DeclareBreakGlassRequest(pid=pid, reason_code=reason, justification=text))


def status_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()  # type: ignore[no-any-return]


def test_declare_then_check_permits_with_break_glass_and_access_is_logged(env):
    pid = new_pid()
    clin = clinician(env)
    before = clin.client.check(pid, "hospital-a", "ETREAT", "Observation")
    assert before.decision == consent_pb2.CONSENT_DECISION_DENY
    declared = declare(clin, pid)
    d = declared.declaration
    assert d.id.startswith("bg-") and d.active and d.review_status == "pending" and d.purpose == "ETREAT"
    assert d.expires_at.seconds - d.declared_at.seconds == env.settings.breakglass_duration_s == 4 * 3600
    assert declared.receipt.tx_id
    during = clin.client.check(pid, "hospital-a", "ETREAT", "Observation")
    assert during.decision == consent_pb2.CONSENT_DECISION_PERMIT and d.id in during.reason
    # CheckResponse names the declaration that permits (and no consent) when the reason is break-glass
    assert during.breakglass_id == d.id and during.consent_id == ""
    assert before.breakglass_id == ""
    # an active declaration covers both break-glass purposes (ETREAT, BTG), and names itself for each
    btg = clin.client.check(pid, "hospital-a", "BTG", "Observation")
    assert btg.decision == consent_pb2.CONSENT_DECISION_PERMIT and btg.breakglass_id == d.id
    # another clinician of the same hospital is not covered
    other = clinician(env, subject="clin-a-2")
    not_covered = other.client.check(pid, "hospital-a", "ETREAT", "Observation")
    assert not_covered.decision == consent_pb2.CONSENT_DECISION_DENY and not_covered.breakglass_id == ""
    # a consent-based decision carries no declaration id, even for the declarer
    assert clin.client.check(pid, "hospital-a", "TREAT", "Observation").breakglass_id == ""
    assert status_of(lambda: other.RecordAccess(breakglass_pb2.RecordBreakGlassAccessRequest(
        pid=pid, data_classes=["Observation"]))) == grpc.StatusCode.FAILED_PRECONDITION
    # the refused attempt is on the record as a denied access by that clinician
    attempts = [e for e in env.officer().search_all(access_log_pb2.SearchRequest(pid=pid))
                if e.agent.subject == "clin-a-2"]
    assert [(e.outcome, e.outcome_description) for e in attempts] == [
        (access_log_pb2.ACCESS_OUTCOME_DENIED, "no-breakglass-declaration")]

    access = clin.RecordAccess(breakglass_pb2.RecordBreakGlassAccessRequest(
        pid=pid, data_classes=["Observation", "AllergyIntolerance"]))
    assert access.declaration_id == d.id and access.event_id.startswith("ae-")
    found = list(env.officer().search_all(access_log_pb2.SearchRequest(pid=pid)))
    logged = [e for e in found if e.id == access.event_id]
    assert len(logged) == 1
    assert logged[0].purpose_of_use == "ETREAT" and logged[0].outcome_description == f"break-glass:{d.id}"
    assert logged[0].agent.subject == "clin-a-1"


def test_bad_input_and_wrong_roles_get_precise_statuses(env):
    pid = new_pid()
    clin = clinician(env)
    assert status_of(lambda: declare(clin, pid, reason="")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(lambda: declare(clin, pid, reason="bored")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(lambda: declare(clin, pid, text="   ")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(lambda: declare(clin, pid, text="x" * 2001)) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(lambda: declare(clin, "")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(lambda: clin.Declare(breakglass_pb2.DeclareBreakGlassRequest(
        pid=pid, reason_code="life-threatening", justification="x", purpose="TREAT"))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    hospital = BG(env, env.token("hospital", org="hospital-a", subject="svc-hospital-a"))
    patient = BG(env, env.token("patient", pid=pid, subject=f"patient-{pid}"))
    for who in (hospital, patient, officer(env)):
        assert status_of(lambda who=who: declare(who, pid)) == grpc.StatusCode.PERMISSION_DENIED
    assert status_of(lambda: clin.Review(breakglass_pb2.ReviewBreakGlassRequest(
        declaration_id="bg-" + "0" * 32, outcome="acknowledged"))) == grpc.StatusCode.PERMISSION_DENIED
    off = officer(env)
    assert status_of(lambda: off.Review(breakglass_pb2.ReviewBreakGlassRequest(
        declaration_id="bg-" + "0" * 32, outcome="acknowledged"))) == grpc.StatusCode.NOT_FOUND
    assert status_of(lambda: off.Review(breakglass_pb2.ReviewBreakGlassRequest(
        declaration_id="nope", outcome="acknowledged"))) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(lambda: off.ListForReview(breakglass_pb2.ListBreakGlassForReviewRequest(
        review_status="done"))) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(lambda: clin.ListForReview(breakglass_pb2.ListBreakGlassForReviewRequest())) == \
        grpc.StatusCode.PERMISSION_DENIED
    # nothing was declared for this patient by any of the refused calls
    assert list(off.ListForPatient(breakglass_pb2.ListBreakGlassForPatientRequest(pid=pid)).declarations) == []


def test_review_workflow_report_and_patient_view(env):
    pid = new_pid()
    clin = clinician(env, subject="clin-a-3")
    d = declare(clin, pid, reason="life-threatening").declaration
    off = officer(env)
    report = off.ListForReview(breakglass_pb2.ListBreakGlassForReviewRequest(review_status="pending"))
    assert d.id in {x.id for x in report.declarations}
    assert report.counts.pending >= 1 and report.counts.by_reason["life-threatening"] >= 1
    before = report.counts
    got = off.Get(breakglass_pb2.GetBreakGlassRequest(declaration_id=d.id))
    assert got.justification == CANARY
    escalated = off.Review(breakglass_pb2.ReviewBreakGlassRequest(
        declaration_id=d.id, outcome="escalated", note="asked the ward for the admission record"))
    assert escalated.declaration.review_status == "escalated" and escalated.receipt.tx_id
    assert escalated.declaration.reviews[0].reviewed_by.subject == "officer-1"
    assert status_of(lambda: off.Review(breakglass_pb2.ReviewBreakGlassRequest(
        declaration_id=d.id, outcome="escalated"))) == grpc.StatusCode.FAILED_PRECONDITION
    after = off.ListForReview(breakglass_pb2.ListBreakGlassForReviewRequest()).counts
    assert after.escalated == before.escalated + 1 and after.pending == before.pending - 1
    notes = off.Get(breakglass_pb2.GetBreakGlassRequest(declaration_id=d.id)).review_notes
    assert list(notes) == ["asked the ward for the admission record"]
    # the patient sees their own declaration, another patient does not
    patient = BG(env, env.token("patient", pid=pid, subject=f"patient-{pid}"))
    mine = patient.ListForPatient(breakglass_pb2.ListBreakGlassForPatientRequest(pid=pid)).declarations
    assert [x.id for x in mine] == [d.id] and mine[0].review_status == "escalated"
    stranger = BG(env, env.token("patient", pid="pt-stranger", subject="patient-pt-stranger"))
    assert status_of(lambda: stranger.Get(breakglass_pb2.GetBreakGlassRequest(declaration_id=d.id))) == \
        grpc.StatusCode.NOT_FOUND
    # another hospital's clinician cannot read it either
    other_org = clinician(env, subject="clin-b-1", org="hospital-b")
    assert status_of(lambda: other_org.Get(breakglass_pb2.GetBreakGlassRequest(declaration_id=d.id))) == \
        grpc.StatusCode.NOT_FOUND


def test_free_text_never_reaches_the_ledger_files(env):
    pid = new_pid()
    text = f"Canary-BG-{pid}: neighbour says the patient takes warfarin"
    d = declare(clinician(env, subject="clin-a-4"), pid, text=text).declaration
    officer(env).Review(breakglass_pb2.ReviewBreakGlassRequest(declaration_id=d.id, outcome="acknowledged",
                                                               note=f"Canary-NOTE-{pid}"))
    data_dir = Path(env.settings.data_dir)
    ledger_files = [p for p in data_dir.rglob("*") if p.is_file() and "ledger" in p.name]
    assert ledger_files, "no ledger files found"
    for path in ledger_files:
        raw = path.read_bytes()
        assert f"Canary-BG-{pid}".encode() not in raw, path
        assert f"Canary-NOTE-{pid}".encode() not in raw, path
    # the off-chain store holds it sealed (not in plaintext either)
    for path in data_dir.rglob("offchain.db*"):
        assert f"Canary-BG-{pid}".encode() not in path.read_bytes()
