"""Consent authority, played by the parties who would break it, against the contracts themselves.

The rules (docs/THREATS.md, "Consent authority") are enforced by the consent contract, so they hold on a
Fabric peer as on the embedded ledger. Every refused step here also leaves the ledger size unchanged.
The stateful test drives random grant / revoke / confirm / check sequences by patients, a proxy and staff
of several organisations through the contracts on the embedded ledger (in-process), and asserts the
invariants after every step.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ciphercare.consent import canonical
from ciphercare.consent.contracts import new_chaincode
from ciphercare.ledger.api import EndorseError, Principal
from ciphercare.ledger.embedded.ledger import EmbeddedLedger

PID = "pt-77005"
OTHER_PID = "pt-77006"
PATIENT = Principal("u-77005", "patients", frozenset({"patient"}), "portal", PID)
OTHER_PATIENT = Principal("u-77006", "patients", frozenset({"patient"}), "portal", OTHER_PID)
PROXY = Principal("u-guardian", "patients", frozenset({"patient"}), "portal", None, frozenset({PID}))
HOSP_A = Principal("svc-a", "hospital-a", frozenset({"hospital"}), "sdk-a")
HOSP_B = Principal("svc-b", "hospital-b", frozenset({"hospital"}), "sdk-b")
CLIN_B = Principal("u-clin-b", "hospital-b", frozenset({"clinician"}), "ehr-b")
ADMIN = Principal("u-admin", "ciphercare", frozenset({"admin"}), "console")
OFFICER = Principal("u-officer", "regulator", frozenset({"compliance-officer"}), "console")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def grant_input(pid: str = PID, org: str = "hospital-b", decision: str = "permit", evidence: bool = False,
                purposes: tuple[str, ...] = ("TREAT", "HRESCH")) -> str:
    d: dict[str, Any] = {
        "pid": pid, "grantee_org": org, "decision": decision, "purposes": list(purposes),
        "data_classes": ["Observation"], "period": {"start": "2020-01-01T00:00:00Z"}, "provisions": [],
        "document_sha256": sha("doc"),
    }
    if evidence:
        d["evidence_sha256"] = sha("signed form")
    return canonical.dumps(d).decode()


@pytest.fixture
def led(tmp_path: Path):  # type: ignore[no-untyped-def]
    ledger = EmbeddedLedger(tmp_path / "ledger.db", tmp_path / "cp.key", "ciphercare.test/ledger", new_chaincode,
                            msp_dir=tmp_path / "msp")
    try:
        yield ledger
    finally:
        ledger.close()


def submit(led: EmbeddedLedger, who: Principal, fn: str, *args: str, contract: str = "consent") -> dict[str, Any]:
    return json.loads(led.submit(who, contract, fn, list(args)).result)


def check(led: EmbeddedLedger, who: Principal, org: str = "hospital-b", purpose: str = "TREAT",
          pid: str = PID) -> dict[str, Any]:
    return json.loads(led.evaluate(who, "consent", "Check", [pid, org, purpose, "Observation", ""]))


def refused(led: EmbeddedLedger, code: str, fragment: str, who: Principal, fn: str, *args: str,
            contract: str = "consent") -> None:
    before = led.size()
    with pytest.raises(EndorseError) as err:
        led.submit(who, contract, fn, list(args))
    assert err.value.code == code, str(err.value)
    assert fragment in err.value.message, err.value.message
    assert led.size() == before


# --- Finding 1: a hospital overrode a patient's refusal ------------------------------------------------


def test_hospital_cannot_revoke_a_patients_deny_nor_override_it(led: EmbeddedLedger) -> None:
    deny = submit(led, PATIENT, "Grant", grant_input(decision="deny"))
    assert check(led, HOSP_B)["decision"] == "deny"
    # hospital-b records a PERMIT for itself: with only a reference it is refused (no evidence hash) ...
    refused(led, "INVALID_ARGUMENT", "evidence", HOSP_B, "Grant", grant_input())
    # ... with an evidence hash it is only proposed, not in force ...
    permit = submit(led, HOSP_B, "Grant", grant_input(evidence=True))
    assert (permit["status"], permit["authority"]) == ("proposed", "staff")
    # ... and it cannot withdraw the patient's DENY, whatever reason it gives.
    for reason in ("withdrawn-by-organization", "superseded", "entered-in-error", "patient-request"):
        refused(led, "PERMISSION_DENIED", "patient's own directive", HOSP_B, "Revoke", deny["id"], reason)
    assert check(led, HOSP_B)["decision"] == "deny"
    # Even if the patient confirms the staff PERMIT, their own DENY still decides.
    submit(led, PATIENT, "Confirm", permit["id"])
    result = check(led, HOSP_B)
    assert (result["decision"], result["consent_id"]) == ("deny", deny["id"])


def test_hospital_cannot_record_a_consent_for_another_org(led: EmbeddedLedger) -> None:
    revoked = submit(led, PATIENT, "Grant", grant_input(org="hospital-a"))
    submit(led, PATIENT, "Revoke", revoked["id"], "patient-request")
    refused(led, "PERMISSION_DENIED", "only with hospital-b as recipient", HOSP_B, "Grant",
            grant_input(org="hospital-a", evidence=True))
    assert check(led, HOSP_A, org="hospital-a")["decision"] == "deny"


def test_staff_revoke_only_their_own_orgs_records(led: EmbeddedLedger) -> None:
    mine = submit(led, CLIN_B, "Grant", grant_input(evidence=True, decision="deny"))
    assert mine["status"] == "active"  # a staff DENY only restricts: in force at once
    # hospital-a cannot even see hospital-b's record about this patient
    before = led.size()
    with pytest.raises(EndorseError) as err:
        led.submit(HOSP_A, "consent", "Revoke", [mine["id"], "care-ended"])
    assert err.value.code == "NOT_FOUND" and led.size() == before
    refused(led, "PERMISSION_DENIED", "only the patient or their proxy may revoke with reason", HOSP_B,
            "Revoke", mine["id"], "patient-request")
    assert submit(led, HOSP_B, "Revoke", mine["id"], "care-ended")["status"] == "inactive"


def test_proxy_acts_for_the_patient_only(led: EmbeddedLedger) -> None:
    deny = submit(led, PROXY, "Grant", grant_input(decision="deny"))
    assert deny["authority"] == "proxy"
    refused(led, "PERMISSION_DENIED", "own pseudonym", PROXY, "Grant", grant_input(pid=OTHER_PID))
    refused(led, "PERMISSION_DENIED", "patient's own directive", HOSP_B, "Revoke", deny["id"], "superseded")
    proposed = submit(led, HOSP_B, "Grant", grant_input(evidence=True, decision="permit"))
    refused(led, "PERMISSION_DENIED", "only the patient or their proxy may confirm", HOSP_B, "Confirm",
            proposed["id"])
    assert submit(led, PROXY, "Confirm", proposed["id"])["confirmed_by"]["subject"] == "u-guardian"
    assert submit(led, PATIENT, "Revoke", deny["id"], "patient-request")["status"] == "inactive"
    assert check(led, HOSP_B)["decision"] == "permit"


def test_policy_immediate_is_an_admins_ledger_write(led: EmbeddedLedger) -> None:
    assert json.loads(led.evaluate(HOSP_B, "consent", "GetPolicy", [])) == {"staff_permit": "confirm"}
    refused(led, "PERMISSION_DENIED", "only an admin", HOSP_B, "SetPolicy", '{"staff_permit":"immediate"}')
    refused(led, "INVALID_ARGUMENT", "staff_permit", ADMIN, "SetPolicy", '{"staff_permit":"always"}')
    submit(led, ADMIN, "SetPolicy", '{"staff_permit":"immediate"}')
    assert submit(led, HOSP_B, "Grant", grant_input(evidence=True))["status"] == "active"
    assert check(led, HOSP_B)["decision"] == "permit"
    submit(led, PATIENT, "Grant", grant_input(decision="deny"))
    assert check(led, HOSP_B)["decision"] == "deny"


# --- Finding 4: Record trusts what the client says --------------------------------------------------------


def event(pid: str = PID, consent_id: str | None = None, observer: str = "hospital-b/ehr",
          outcome: str = "success", purpose: str | None = "TREAT") -> str:
    return canonical.dumps({
        "type": "110110", "subtype": "read", "action": "R", "outcome": outcome, "purpose_of_use": purpose,
        "source": {"observer": observer},
        "entity": {"pid": pid, "consent_id": consent_id, "data_classes": ["Observation"]},
    }).decode()


def test_record_checks_the_cited_consent(led: EmbeddedLedger) -> None:
    mine = submit(led, PATIENT, "Grant", grant_input(purposes=("TREAT",)))
    for_a = submit(led, PATIENT, "Grant", grant_input(org="hospital-a"))
    theirs = submit(led, OTHER_PATIENT, "Grant", grant_input(pid=OTHER_PID))
    revoked = submit(led, PATIENT, "Grant", grant_input())
    submit(led, PATIENT, "Revoke", revoked["id"], "patient-request")
    rec = ("Record",)
    refused(led, "FAILED_PRECONDITION", "does not exist", HOSP_B, *rec, event(consent_id="cns-" + "ab" * 16),
            contract="accesslog")
    refused(led, "FAILED_PRECONDITION", "another patient", HOSP_B, *rec, event(consent_id=theirs["id"]),
            contract="accesslog")
    refused(led, "FAILED_PRECONDITION", "names hospital-a, not hospital-b", HOSP_B, *rec,
            event(consent_id=for_a["id"]), contract="accesslog")
    refused(led, "FAILED_PRECONDITION", "(inactive) does not permit", HOSP_B, *rec,
            event(consent_id=revoked["id"]), contract="accesslog")
    refused(led, "FAILED_PRECONDITION", "does not permit HRESCH", HOSP_B, *rec,
            event(consent_id=mine["id"], purpose="HRESCH"), contract="accesslog")
    ok = submit(led, HOSP_B, "Record", event(consent_id=mine["id"]), contract="accesslog")
    assert ok["consent_basis"] == "verified-consent"
    bare = submit(led, HOSP_B, "Record", event(), contract="accesslog")
    assert (bare["consent_basis"], bare["entity"]["consent_id"]) == ("no-consent-cited", None)


def test_record_observer_must_be_the_callers_own_system(led: EmbeddedLedger) -> None:
    refused(led, "PERMISSION_DENIED", "is not a system of hospital-b", HOSP_B, "Record",
            event(observer="hospital-a/ehr"), contract="accesslog")
    refused(led, "PERMISSION_DENIED", "is not a system of hospital-b", HOSP_B, "Record",
            event(observer="hospital-b"), contract="accesslog")


# --- Stateful: random sequences by every party ------------------------------------------------------------

ACTORS = {
    "patient": PATIENT, "proxy": PROXY, "other-patient": OTHER_PATIENT,
    "hospital-a": HOSP_A, "hospital-b": HOSP_B, "clinician-b": CLIN_B, "officer": OFFICER,
}
PATIENT_SIDE = {"patient", "proxy"}
ORGS = ("hospital-a", "hospital-b")


class ConsentAuthorityMachine(RuleBasedStateMachine):
    """Random grant / revoke / confirm by every party; the item-1 invariants must hold after every step."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self._dir = tempfile.TemporaryDirectory()
        root = Path(self._dir.name)
        self.led = EmbeddedLedger(root / "l.db", root / "k.pem", "ciphercare.test/ledger", new_chaincode,
                                  msp_dir=root / "msp")
        self.ids: list[str] = []

    def teardown(self) -> None:
        self.led.close()
        self._dir.cleanup()

    @initialize()
    def start(self) -> None:
        self.size = self.led.size()

    def _try(self, who: str, fn: str, *args: str) -> dict[str, Any] | None:
        before = self.led.size()
        try:
            out = json.loads(self.led.submit(ACTORS[who], "consent", fn, list(args)).result)
        except EndorseError:
            assert self.led.size() == before, "a refused transaction wrote to the ledger"
            return None
        assert self.led.size() == before + 1
        return out

    @rule(who=st.sampled_from(sorted(ACTORS)), org=st.sampled_from(ORGS), decision=st.sampled_from(["permit", "deny"]),
          evidence=st.booleans(), purpose=st.sampled_from(["TREAT", "HRESCH"]))
    def grant(self, who: str, org: str, decision: str, evidence: bool, purpose: str) -> None:
        pid = OTHER_PID if who == "other-patient" else PID
        out = self._try(who, "Grant", grant_input(pid, org, decision, evidence, (purpose,)))
        if out is None:
            return
        self.ids.append(out["id"])
        actor = ACTORS[who]
        if who in PATIENT_SIDE or who == "other-patient":
            assert out["authority"] in ("patient", "proxy") and out["status"] == "active"
        else:
            assert out["authority"] == "staff" and out["grantee_org"] == actor.org and out["evidence_sha256"]
            assert out["status"] == ("proposed" if decision == "permit" else "active")
        assert out["recorded_by"]["org"] == actor.org

    @rule(who=st.sampled_from(sorted(ACTORS)), index=st.integers(0, 40),
          reason=st.sampled_from(["patient-request", "withdrawn-by-organization", "superseded", "care-ended"]))
    def revoke(self, who: str, index: int, reason: str) -> None:
        if not self.ids:
            return
        cid = self.ids[index % len(self.ids)]
        before = json.loads(self.led.evaluate(OFFICER, "consent", "Get", [cid]))
        out = self._try(who, "Revoke", cid, reason)
        if out is None:
            return
        actor = ACTORS[who]
        if before["authority"] in ("patient", "proxy"):
            assert who in PATIENT_SIDE and before["pid"] == PID or who == "other-patient" and before["pid"] == OTHER_PID
        else:
            assert who in PATIENT_SIDE or who == "other-patient" or actor.org == before["recorded_by"]["org"]

    @rule(who=st.sampled_from(sorted(ACTORS)), index=st.integers(0, 40))
    def confirm(self, who: str, index: int) -> None:
        if not self.ids:
            return
        cid = self.ids[index % len(self.ids)]
        out = self._try(who, "Confirm", cid)
        if out is not None:
            assert who in PATIENT_SIDE or who == "other-patient"

    @invariant()
    def an_active_patient_deny_decides(self) -> None:
        if not self.ids:
            return
        records = json.loads(self.led.evaluate(OFFICER, "consent", "ListForPatient", [PID]))
        for org in ORGS:
            for purpose in ("TREAT", "HRESCH"):
                decision = check(self.led, OFFICER, org=org, purpose=purpose)
                patient_denies = [
                    r for r in records
                    if r["status"] == "active" and r["authority"] in ("patient", "proxy") and r["decision"] == "deny"
                    and r["grantee_org"] == org and purpose in r["purposes"]
                ]
                if patient_denies:
                    assert decision["decision"] == "deny", (org, purpose, decision)
                if decision["decision"] == "permit":
                    # a PERMIT in force is the patient's own, or staff's after the patient confirmed (or immediate)
                    permit = next(r for r in records if r["id"] == decision["consent_id"])
                    assert permit["authority"] != "staff" or permit["confirmed_by"] is not None

    @invariant()
    def staff_consents_name_their_own_org_with_evidence(self) -> None:
        if not self.ids:
            return
        for r in json.loads(self.led.evaluate(OFFICER, "consent", "ListForPatient", [PID])):
            if r["authority"] == "staff":
                assert r["grantee_org"] == r["recorded_by"]["org"] and r["evidence_sha256"]
            if r["status"] == "inactive" and r["authority"] in ("patient", "proxy"):
                assert "patient" in r["revoked_by"]["roles"]


ConsentAuthorityMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_consent_authority_state_machine = ConsentAuthorityMachine.TestCase
