"""The consent and accesslog contracts end to end, with real creator certificates.

Backends (the same tests run on each):

* ``in-test-runtime`` -- a minimal in-test world state (``InTestWorldState``,
  a dict with history, defined below) driven through the ledger engineer's
  ``ciphercare.ledger.embedded.runtime.WorldStateStub`` and the library's own
  ``ContractChaincode`` dispatcher. It also exposes the write set a REFUSED
  transaction attempted, so we can check the contracts validate before writing.
* ``embedded`` -- ``ciphercare.ledger.embedded.ledger.EmbeddedLedger`` (tmp_path),
  used when that module is importable.

Principals are real: ``ciphercare.ledger.embedded.msp.EmbeddedMSP`` issues the X.509
creator certificates the contracts parse.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from ciphercare.consent import canonical
from ciphercare.consent.contracts import new_chaincode
from ciphercare.ledger.api import EndorseError, Principal
from ciphercare.ledger.embedded.log import HistoryRecord
from ciphercare.ledger.embedded.msp import EmbeddedMSP
from ciphercare.ledger.embedded.runtime import WorldStateStub, endorse_error, new_tx_id, run_without_loop

BASE_MS = 1_750_000_000_000  # 2025-06-15T15:06:40Z

CLINICIAN_A = Principal("u-clin-a", "hospital-a", frozenset({"clinician"}), "ehr-a")
HOSPITAL_A = Principal("svc-hosp-a", "hospital-a", frozenset({"hospital"}), "sdk-a")
CLINICIAN_B = Principal("u-clin-b", "hospital-b", frozenset({"clinician"}), "ehr-b")
PATIENT_1 = Principal("u-pat-1", "patients", frozenset({"patient"}), "portal", "pat-0001")
PATIENT_2 = Principal("u-pat-2", "patients", frozenset({"patient"}), "portal", "pat-0002")
OFFICER = Principal("u-officer", "regulator", frozenset({"compliance-officer"}), "console")
ADMIN = Principal("u-admin", "ciphercare", frozenset({"admin"}), "console")
NOBODY = Principal("service:ciphercare-gateway", "ciphercare", frozenset(), "ciphercare-server")


class Backend(Protocol):
    def evaluate(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> bytes: ...
    def submit(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> Any: ...


# --- in-test world state -------------------------------------------------------------


@dataclass(frozen=True)
class _Receipt:
    tx_id: str
    result: bytes
    events: tuple[Any, ...]


class InTestWorldState:
    """Minimal in-test world state (dict + per-key history), standing in for EmbeddedLedger's SQLite view."""

    def __init__(self) -> None:
        self.state: dict[str, bytes] = {}
        self._history: dict[str, list[HistoryRecord]] = {}
        self._seq = itertools.count()
        self.now_ms = BASE_MS
        self.msp = EmbeddedMSP()
        self.chaincode = new_chaincode()
        self.committed_events: list[tuple[str, bytes]] = []
        self.attempted_writes: tuple[tuple[str, bytes | None], ...] = ()

    # StateView surface used by WorldStateStub
    def get(self, key: str) -> bytes | None:
        return self.state.get(key)

    def range(self, start: str, end: str) -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self.state.items() if k >= start and (not end or k < end))

    def history(self, key: str) -> list[HistoryRecord]:
        return list(reversed(self._history.get(key, [])))

    def _run(
        self, principal: Principal, contract: str, function: str, args: Sequence[str], read_only: bool
    ) -> Any:
        identity = self.msp.identity(principal)
        tx_id = new_tx_id(identity)
        self.now_ms += 1000
        stub = WorldStateStub(
            self,
            None,
            tx_id=tx_id,
            channel_id="ciphercare",
            chaincode_name="ciphercare",
            function=f"{contract}:{function}",
            params=list(args),
            identity=identity,
            ts_ms=self.now_ms,
            read_only=read_only,
        )
        response = run_without_loop(self.chaincode.invoke(stub))
        self.attempted_writes = stub.write_set()
        if response.status >= 400:
            raise endorse_error(tx_id, response.message)
        events = tuple(stub.get_events())
        if not read_only:
            seq = next(self._seq)
            for key, value in stub.write_set():
                if value is None:
                    self.state.pop(key, None)
                else:
                    self.state[key] = value
                self._history.setdefault(key, []).append(
                    HistoryRecord(
                        seq=seq, tx_id=tx_id, ts_ms=self.now_ms, value=value, is_delete=value is None
                    )
                )
            self.committed_events.extend((e.event_name, e.payload) for e in events)
        return _Receipt(tx_id, bytes(response.payload), tuple(events))

    def evaluate(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> bytes:
        return self._run(principal, contract, function, args, True).result

    def submit(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> _Receipt:
        return self._run(principal, contract, function, args, False)


@pytest.fixture(params=["in-test-runtime", "embedded"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "in-test-runtime":
        yield InTestWorldState()
        return
    from ciphercare.ledger.embedded import ledger as embedded
    led = embedded.EmbeddedLedger(
        tmp_path / "ledger.db",
        tmp_path / "checkpoint.key",
        "ciphercare.test/ledger",
        new_chaincode,
        msp_dir=tmp_path / "msp",
    )
    try:
        yield led
    finally:
        led.close()


# --- helpers ---------------------------------------------------------------------------


def doc_sha(text: str = "doc") -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def grant_input(**overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "pid": "pat-0001",
        "grantee_org": "hospital-a",
        "decision": "permit",
        "purposes": ["TREAT"],
        "data_classes": ["Observation", "RiskAssessment"],
        "period": {"start": "2025-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"},
        "provisions": [],
        "document_sha256": doc_sha(),
        "evidence_sha256": doc_sha("signed consent form"),
    }
    d.update(overrides)
    return d


def submit(led: Backend, who: Principal, contract: str, fn: str, *args: str) -> Any:
    return led.submit(who, contract, fn, list(args))


def evaluate(led: Backend, who: Principal, contract: str, fn: str, *args: str) -> Any:
    return json.loads(led.evaluate(who, contract, fn, list(args)))


def grant(led: Backend, who: Principal = CLINICIAN_A, **overrides: Any) -> dict[str, Any]:
    receipt = submit(led, who, "consent", "Grant", canonical.dumps(grant_input(**overrides)).decode())
    return json.loads(receipt.result)


def refused(code: str, fn: Any, *args: Any, fragment: str = "", **kwargs: Any) -> EndorseError:
    with pytest.raises(EndorseError) as err:
        fn(*args, **kwargs)
    assert err.value.code == code, str(err.value)
    assert fragment in err.value.message, err.value.message
    return err.value


def check(
    led: Backend,
    who: Principal,
    purpose: str = "TREAT",
    data_class: str = "Observation",
    org: str = "hospital-a",
    at: str = "",
    pid: str = "pat-0001",
) -> dict[str, Any]:
    return evaluate(led, who, "consent", "Check", pid, org, purpose, data_class, at)


def no_writes_attempted(led: Backend) -> None:
    if isinstance(led, InTestWorldState):
        assert led.attempted_writes == ()


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
            "consent_id": None,
            "model_sha256": doc_sha("model"),
            "data_classes": ["Observation"],
            "detail_sha256": None,
        },
    }
    d.update(overrides)
    return d


def record_event(led: Backend, who: Principal, **overrides: Any) -> Any:
    return submit(led, who, "accesslog", "Record", canonical.dumps(event_input(**overrides)).decode())


# --- consent ---------------------------------------------------------------------------


def test_grant_check_revoke_check(ledger: Backend) -> None:
    receipt = submit(ledger, PATIENT_1, "consent", "Grant", canonical.dumps(grant_input()).decode())
    record = json.loads(receipt.result)
    assert receipt.result == canonical.dumps(record)  # canonical bytes
    assert record["id"] == "cns-" + receipt.tx_id[:32]
    assert (record["version"], record["status"], record["pid"]) == (1, "active", "pat-0001")
    assert record["recorded_by"] == {"subject": "u-pat-1", "org": "patients", "roles": ["patient"]}
    assert record["recorded_at"].endswith("Z") and record["revoked_at"] is None
    [event] = [e for e in receipt.events if (getattr(e, "name", None) or e.event_name) == "ConsentGranted"]
    payload = json.loads(event.payload)
    assert payload == {
        "consent_id": record["id"],
        "pid": "pat-0001",
        "grantee_org": "hospital-a",
        "version": 1,
        "status": "active",
        "document_sha256": record["document_sha256"],  # projections take it from the event (a hash, no PHI)
    }

    decision = check(ledger, CLINICIAN_A)
    assert decision == {
        "decision": "permit",
        "consent_id": record["id"],
        "reason_code": "consent-permit",
        "reason": f"consent {record['id']} permits TREAT access to Observation of pat-0001 by hospital-a",
    }
    assert check(ledger, CLINICIAN_A, purpose="HRESCH")["decision"] == "deny"

    receipt = submit(ledger, PATIENT_1, "consent", "Revoke", record["id"], "patient-request")
    revoked = json.loads(receipt.result)
    assert (revoked["version"], revoked["status"], revoked["revocation_reason"]) == (
        2,
        "inactive",
        "patient-request",
    )
    assert revoked["revoked_by"]["subject"] == "u-pat-1" and revoked["revoked_at"] >= record["recorded_at"]
    [event] = [e for e in receipt.events if (getattr(e, "name", None) or e.event_name) == "ConsentRevoked"]
    assert json.loads(event.payload)["status"] == "inactive"

    decision = check(ledger, CLINICIAN_A)
    assert (decision["decision"], decision["reason_code"]) == ("deny", "consent-revoked")
    assert "was revoked" in decision["reason"]

    history = evaluate(ledger, OFFICER, "consent", "History", record["id"])
    assert [v["version"] for v in history] == [1, 2]
    assert history[0] == record and history[1] == revoked
    assert evaluate(ledger, PATIENT_1, "consent", "Get", record["id"]) == revoked


def test_revoke_twice_is_failed_precondition(ledger: Backend) -> None:
    cid = grant(ledger)["id"]
    submit(ledger, CLINICIAN_A, "consent", "Revoke", cid, "entered-in-error")
    refused(
        "FAILED_PRECONDITION",
        submit,
        ledger,
        CLINICIAN_A,
        "consent",
        "Revoke",
        cid,
        "superseded",
        fragment="already inactive",
    )
    no_writes_attempted(ledger)


def test_check_at_time_and_tx_time(ledger: Backend) -> None:
    grant(ledger, period={"start": "2025-01-01T00:00:00Z", "end": "2025-02-01T00:00:00Z"})
    assert check(ledger, CLINICIAN_A, at="2025-01-15T00:00:00Z")["decision"] == "permit"
    expired = check(ledger, CLINICIAN_A)  # tx time (2025-06 or later) is past the end
    assert (expired["decision"], expired["reason_code"]) == ("deny", "consent-expired")
    assert check(ledger, CLINICIAN_A, at="2024-12-31T23:59:59Z")["reason_code"] == "consent-not-yet-valid"


def test_deny_wins_across_consents(ledger: Backend) -> None:
    grant(ledger)
    deny = grant(ledger, PATIENT_1, decision="deny", purposes=["TREAT"], data_classes=["Observation"])
    decision = check(ledger, CLINICIAN_A)
    assert (decision["decision"], decision["consent_id"]) == ("deny", deny["id"])
    assert check(ledger, CLINICIAN_A, data_class="RiskAssessment")["decision"] == "permit"


def test_nested_provision_through_contract(ledger: Backend) -> None:
    grant(ledger, provisions=[{"type": "deny", "data_classes": ["RiskAssessment"]}])
    assert check(ledger, CLINICIAN_A)["decision"] == "permit"
    decision = check(ledger, CLINICIAN_A, data_class="RiskAssessment")
    assert decision["decision"] == "deny" and "nested provision 1" in decision["reason"]


def test_grant_authorization(ledger: Backend) -> None:
    refused("PERMISSION_DENIED", grant, ledger, PATIENT_2, fragment="only for their own pseudonym")
    no_writes_attempted(ledger)
    refused("PERMISSION_DENIED", grant, ledger, OFFICER, fragment="may grant")
    refused("PERMISSION_DENIED", grant, ledger, ADMIN)
    refused("PERMISSION_DENIED", grant, ledger, NOBODY)
    # a hospital may record a consent for any patient, captured at point of care
    rec = grant(ledger, HOSPITAL_A, pid="pat-0002", grantee_org="hospital-b")
    assert rec["recorded_by"] == {"subject": "svc-hosp-a", "org": "hospital-a", "roles": ["hospital"]}


def test_invalid_input_writes_nothing(ledger: Backend) -> None:
    err = refused("INVALID_ARGUMENT", grant, ledger, CLINICIAN_A, purposes=["FOO"])
    assert "'FOO' is not a v3 ActReason purpose-of-use code; allowed:" in err.message
    no_writes_attempted(ledger)
    refused("INVALID_ARGUMENT", grant, ledger, CLINICIAN_A, note="free text")
    refused("INVALID_ARGUMENT", submit, ledger, CLINICIAN_A, "consent", "Grant", "not json")
    refused(
        "INVALID_ARGUMENT",
        submit,
        ledger,
        CLINICIAN_A,
        "consent",
        "Grant",
        '{"pid": "pat-0001", "pid": "pat-0002"}',
        fragment="duplicate key",
    )
    assert evaluate(ledger, OFFICER, "consent", "ListForPatient", "pat-0001") == []
    if isinstance(ledger, InTestWorldState):
        assert ledger.state == {} and ledger.committed_events == []
    else:
        assert ledger.size() == 0  # type: ignore[attr-defined]  # no refused tx reached the log


def test_check_validation_and_authorization(ledger: Backend) -> None:
    grant(ledger)
    refused("INVALID_ARGUMENT", check, ledger, CLINICIAN_A, "FOO", fragment="purpose: 'FOO'")
    refused("INVALID_ARGUMENT", check, ledger, CLINICIAN_A, "TREAT", "Blood")
    refused("INVALID_ARGUMENT", check, ledger, CLINICIAN_A, "TREAT", "Observation", "hospital-a", "yesterday")
    refused("PERMISSION_DENIED", check, ledger, CLINICIAN_B, fragment="its own org")
    assert check(ledger, CLINICIAN_B, org="hospital-b")["reason_code"] == "no-consent"
    assert check(ledger, PATIENT_1)["decision"] == "permit"
    refused("PERMISSION_DENIED", check, ledger, PATIENT_2)
    assert check(ledger, OFFICER)["decision"] == "permit"
    refused("PERMISSION_DENIED", check, ledger, NOBODY)


def test_read_scoping(ledger: Backend) -> None:
    mine = grant(ledger)  # clinician A, grantee hospital-a
    other = grant(ledger, HOSPITAL_A, grantee_org="hospital-c", pid="pat-0001")
    for_b = grant(ledger, PATIENT_1, grantee_org="hospital-b")
    get = lambda who, cid: evaluate(ledger, who, "consent", "Get", cid)  # noqa: E731

    assert get(PATIENT_1, mine["id"]) == mine
    assert get(OFFICER, other["id"]) == other
    assert get(ADMIN, for_b["id"]) == for_b
    assert get(CLINICIAN_B, for_b["id"]) == for_b
    refused("NOT_FOUND", get, CLINICIAN_B, mine["id"])
    refused("NOT_FOUND", get, PATIENT_2, mine["id"])
    refused("NOT_FOUND", get, OFFICER, "cns-" + "0" * 32)
    refused("INVALID_ARGUMENT", get, OFFICER, "nope")
    refused("NOT_FOUND", evaluate, ledger, CLINICIAN_B, "consent", "History", mine["id"])

    def listing(who: Principal, pid: str = "pat-0001") -> list[str]:
        return [r["id"] for r in evaluate(ledger, who, "consent", "ListForPatient", pid)]

    assert listing(PATIENT_1) == [mine["id"], other["id"], for_b["id"]]
    assert listing(OFFICER) == listing(PATIENT_1)
    assert listing(CLINICIAN_A) == [mine["id"], other["id"]]  # recorded by or granted to hospital-a
    assert listing(CLINICIAN_B) == [for_b["id"]]
    refused("PERMISSION_DENIED", listing, PATIENT_2)
    refused("PERMISSION_DENIED", listing, NOBODY)
    assert listing(PATIENT_2, "pat-0002") == []


def test_revoke_authorization(ledger: Backend) -> None:
    rec = grant(ledger, PATIENT_1, grantee_org="hospital-b")
    refused("NOT_FOUND", submit, ledger, PATIENT_2, "consent", "Revoke", rec["id"], "patient-request")
    refused("NOT_FOUND", submit, ledger, CLINICIAN_A, "consent", "Revoke", rec["id"], "care-ended")
    refused("PERMISSION_DENIED", submit, ledger, OFFICER, "consent", "Revoke", rec["id"], "legal")
    refused(
        "INVALID_ARGUMENT", submit, ledger, PATIENT_1, "consent", "Revoke", rec["id"], "I changed my mind"
    )
    no_writes_attempted(ledger)
    assert evaluate(ledger, PATIENT_1, "consent", "Get", rec["id"])["status"] == "active"
    revoked = json.loads(
        submit(ledger, CLINICIAN_B, "consent", "Revoke", rec["id"], "withdrawn-by-organization").result
    )
    assert revoked["revoked_by"]["org"] == "hospital-b"


def check_many(
    led: Backend,
    who: Principal,
    pids: Sequence[str] | str,
    purpose: str = "TREAT",
    data_class: str = "Observation",
    org: str = "hospital-a",
    at: str = "",
) -> list[dict[str, Any]]:
    arg = pids if isinstance(pids, str) else canonical.dumps(list(pids)).decode()
    raw = led.evaluate(who, "consent", "CheckMany", [arg, org, purpose, data_class, at])
    decisions = json.loads(raw)
    assert bytes(raw) == canonical.dumps(decisions)  # canonical bytes
    return decisions


def mixed_patients(led: Backend) -> list[str]:
    """Patients whose Check for hospital-a/TREAT/Observation is permit, deny, expired, revoked, other-org, none."""
    grant(led, pid="pat-0001")
    grant(led, pid="pat-0002", decision="deny")
    grant(led, pid="pat-0003", period={"start": "2025-01-01T00:00:00Z", "end": "2025-02-01T00:00:00Z"})
    revoked = grant(led, pid="pat-0004")
    submit(led, CLINICIAN_A, "consent", "Revoke", revoked["id"], "patient-request")
    grant(led, CLINICIAN_B, pid="pat-0005", grantee_org="hospital-b")
    grant(led, pid="pat-0007", provisions=[{"type": "deny", "data_classes": ["Observation"]}])
    return ["pat-0001", "pat-0002", "pat-0003", "pat-0004", "pat-0005", "pat-0006", "pat-0007"]


def test_check_many_equals_check(ledger: Backend) -> None:
    pids = mixed_patients(ledger)
    singles = {p: check(ledger, CLINICIAN_A, pid=p) for p in pids}
    assert [singles[p]["reason_code"] for p in pids] == [
        "consent-permit",
        "consent-deny",
        "consent-expired",
        "consent-revoked",
        "no-consent",
        "no-consent",
        "consent-deny",
    ]
    for order in (pids, list(reversed(pids)), pids[3:] + pids[:3], ["pat-0004"]):
        assert check_many(ledger, CLINICIAN_A, order) == [singles[p] for p in order]
    for who, kwargs in (
        (OFFICER, {"at": "2025-01-15T00:00:00Z"}),
        (OFFICER, {"purpose": "HRESCH"}),
        (HOSPITAL_A, {"data_class": "RiskAssessment"}),
        (CLINICIAN_B, {"org": "hospital-b"}),
    ):
        many = check_many(ledger, who, pids, **kwargs)
        assert many == [check(ledger, who, pid=p, **kwargs) for p in pids], (who, kwargs)
    assert check_many(ledger, OFFICER, pids, at="2025-01-15T00:00:00Z")[2]["decision"] == "permit"
    assert check_many(ledger, PATIENT_1, ["pat-0001"]) == [check(ledger, PATIENT_1)]
    no_writes_attempted(ledger)


def test_check_many_bound(ledger: Backend) -> None:
    from ciphercare.consent.contracts import MAX_CHECK_MANY

    grant(ledger, pid="p-0")
    pids = [f"p-{i}" for i in range(MAX_CHECK_MANY)]
    decisions = check_many(ledger, CLINICIAN_A, pids)
    assert len(decisions) == MAX_CHECK_MANY
    assert decisions[0]["decision"] == "permit"
    assert {d["reason_code"] for d in decisions[1:]} == {"no-consent"}
    refused(
        "INVALID_ARGUMENT",
        check_many,
        ledger,
        CLINICIAN_A,
        pids + ["p-x"],
        fragment=f"at most {MAX_CHECK_MANY} pids per call, got {MAX_CHECK_MANY + 1}",
    )
    longest = [f"{i:04d}".rjust(64, "x") for i in range(MAX_CHECK_MANY)]
    assert len(check_many(ledger, OFFICER, longest)) == MAX_CHECK_MANY  # the byte bound admits the longest pids
    refused("INVALID_ARGUMENT", check_many, ledger, OFFICER, canonical.dumps(longest).decode() + " " * 3,
            fragment="larger than")


def test_check_many_validation_and_authorization(ledger: Backend) -> None:
    grant(ledger)
    bad = lambda fragment, pids, who=CLINICIAN_A, **kw: refused(  # noqa: E731
        "INVALID_ARGUMENT", check_many, ledger, who, pids, fragment=fragment, **kw
    )
    bad("not valid JSON", "not json")
    bad("not valid JSON", '["pat-0001"')
    bad("expected a JSON array of pids, got", '{"pid": "pat-0001"}')
    bad("expected a JSON array of pids, got", '"pat-0001"')
    bad("name at least one pid", "[]")
    bad("pids_json[1]", ["pat-0001", "x"])
    bad("pids_json[1]", '["pat-0001", 7]')
    bad("pids_json[0]", '[null]')
    bad("pids_json[0]", '[["pat-0001"]]')
    bad("pids_json[2]: 'pat-0001' appears twice", ["pat-0001", "pat-0002", "pat-0001"])
    bad("purpose: 'FOO'", ["pat-0001"], purpose="FOO")
    bad("data_class", ["pat-0001"], data_class="Blood")
    bad("recipient_org", ["pat-0001"], org="Hospital A")
    bad("at_iso", ["pat-0001"], at="yesterday")
    # Check's authorization, for every pid: one pid the caller may not ask about refuses the whole call
    refused("PERMISSION_DENIED", check_many, ledger, CLINICIAN_B, ["pat-0001"], fragment="its own org")
    refused("PERMISSION_DENIED", check_many, ledger, PATIENT_2, ["pat-0002", "pat-0001"])
    refused("PERMISSION_DENIED", check_many, ledger, PATIENT_1, ["pat-0001", "pat-0002"])
    refused("PERMISSION_DENIED", check_many, ledger, NOBODY, ["pat-0001"])
    assert check_many(ledger, ADMIN, ["pat-0001"]) == [check(ledger, ADMIN)]  # oversight, as for Check
    assert check_many(ledger, PATIENT_2, ["pat-0002"])[0]["reason_code"] == "no-consent"
    assert [d["decision"] for d in check_many(ledger, OFFICER, ["pat-0002", "pat-0001"])] == ["deny", "permit"]
    no_writes_attempted(ledger)


# --- access log ---------------------------------------------------------------------------


def test_record_and_get_access_event(ledger: Backend) -> None:
    receipt = record_event(ledger, HOSPITAL_A)
    stored = json.loads(receipt.result)
    assert stored["id"] == "ae-" + receipt.tx_id[:32]
    assert stored["agent"] == {
        "subject": "svc-hosp-a",
        "org": "hospital-a",
        "roles": ["hospital"],
        "client": "sdk-a",
    }
    assert stored["recorded"].endswith("Z")
    [event] = [e for e in receipt.events if (getattr(e, "name", None) or e.event_name) == "AccessRecorded"]
    assert event.payload == receipt.result == canonical.dumps(stored)

    get = lambda who: evaluate(ledger, who, "accesslog", "Get", stored["id"])  # noqa: E731
    assert get(PATIENT_1) == stored
    assert get(CLINICIAN_A) == stored  # same org as the agent
    assert get(OFFICER) == stored
    refused("NOT_FOUND", get, PATIENT_2)
    refused("NOT_FOUND", get, CLINICIAN_B)
    assert [e["id"] for e in evaluate(ledger, PATIENT_1, "accesslog", "ListForPatient", "pat-0001")] == [
        stored["id"]
    ]
    assert evaluate(ledger, CLINICIAN_B, "accesslog", "ListForPatient", "pat-0001") == []
    refused("PERMISSION_DENIED", evaluate, ledger, PATIENT_2, "accesslog", "ListForPatient", "pat-0001")


def test_record_rules(ledger: Backend) -> None:
    refused("PERMISSION_DENIED", record_event, ledger, PATIENT_1, fragment="outcome 'success'")
    no_writes_attempted(ledger)
    refused("PERMISSION_DENIED", record_event, ledger, OFFICER)
    # anyone authenticated may log a refusal or error about themselves (the agent is always the caller)
    denied = json.loads(
        record_event(ledger, PATIENT_2, outcome="denied", outcome_desc="permission-denied").result
    )
    assert denied["agent"]["subject"] == "u-pat-2" and denied["outcome"] == "denied"
    err = json.loads(record_event(ledger, NOBODY, outcome="error", outcome_desc="internal").result)
    assert err["agent"] == {
        "subject": "service:ciphercare-gateway",
        "org": "ciphercare",
        "roles": [],
        "client": "ciphercare-server",
    }


def test_record_rejects_agent_and_free_text(ledger: Backend) -> None:
    refused(
        "INVALID_ARGUMENT",
        record_event,
        ledger,
        HOSPITAL_A,
        agent={"subject": "someone-else", "org": "hospital-b", "roles": [], "client": ""},
        fragment="taken from the caller's certificate",
    )
    no_writes_attempted(ledger)
    refused(
        "INVALID_ARGUMENT",
        record_event,
        ledger,
        HOSPITAL_A,
        outcome_desc="patient refused, has HIV",
        fragment="outcome_desc",
    )
    refused("INVALID_ARGUMENT", record_event, ledger, HOSPITAL_A, purpose_of_use="FOO")
    if isinstance(ledger, InTestWorldState):
        assert ledger.state == {}


def test_contract_metadata() -> None:
    """Read-only functions are tagged evaluate; every other public method is a submit transaction."""
    cc = new_chaincode()
    kinds = {
        ns: {name: fn.call_type for name, fn in c.functions.items()}
        for ns, c in cc._contracts.items()
        if ns in ("consent", "accesslog")
    }
    assert kinds == {
        "consent": {
            "Grant": 1,
            "Revoke": 1,
            "Get": 2,
            "ListForPatient": 2,
            "History": 2,
            "Check": 2,
            "CheckMany": 2,
        },
        "accesslog": {"Record": 1, "Get": 2, "ListForPatient": 2},
    }


def test_corrupt_state_is_internal_not_client_error() -> None:
    led = InTestWorldState()
    cid = grant(led)["id"]
    key = next(k for k in led.state if k.startswith("\x00consent\x00"))
    led.state[key] = led.state[key].replace(b'"TREAT"', b'"FOO"')
    err = refused("INTERNAL", evaluate, led, OFFICER, "consent", "Get", cid)
    assert err.message.startswith("stored consent is malformed")


def test_staff_grants_need_evidence_patients_do_not(ledger: Backend) -> None:
    without = grant_input()
    del without["evidence_sha256"]
    for staff in (CLINICIAN_A, HOSPITAL_A):
        refused("INVALID_ARGUMENT", submit, ledger, staff, "consent", "Grant", canonical.dumps(without).decode(),
                fragment="evidence")
    mine = json.loads(submit(ledger, PATIENT_1, "consent", "Grant", canonical.dumps(without).decode()).result)
    assert mine["evidence_sha256"] is None
    recorded = grant(ledger, HOSPITAL_A)
    assert recorded["evidence_sha256"] == doc_sha("signed consent form")
