"""The ``breakglass`` contract and its one effect on ``consent:Check``, with real creator certificates.

Backends: a clocked in-test world state (expiry needs a movable transaction clock) and the embedded ledger.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit.ledger import ClockedWorldState

from ciphercare.consent import canonical
from ciphercare.consent.contracts import new_chaincode
from ciphercare.ledger.api import EndorseError, Principal

CLIN_A = Principal("u-clin-a", "hospital-a", frozenset({"clinician"}), "ehr-a")
CLIN_A2 = Principal("u-clin-a2", "hospital-a", frozenset({"clinician"}), "ehr-a")
CLIN_B = Principal("u-clin-b", "hospital-b", frozenset({"clinician"}), "ehr-b")
HOSP_A = Principal("svc-hosp-a", "hospital-a", frozenset({"hospital"}), "sdk-a")
PATIENT_1 = Principal("u-pat-1", "patients", frozenset({"patient"}), "portal", "pat-0001")
PATIENT_2 = Principal("u-pat-2", "patients", frozenset({"patient"}), "portal", "pat-0002")
OFFICER = Principal("u-officer", "regulator", frozenset({"compliance-officer"}), "console")
OFFICER_CLIN = Principal("u-clin-a", "hospital-a", frozenset({"clinician", "compliance-officer"}), "ehr-a")
ADMIN = Principal("u-admin", "ciphercare", frozenset({"admin"}), "console")
TEXT_SHA = hashlib.sha256(b"sealed justification document").hexdigest()


@pytest.fixture(params=["clocked", "embedded"])
def led(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "clocked":
        yield ClockedWorldState()
        return
    from ciphercare.ledger.embedded.ledger import EmbeddedLedger

    ledger = EmbeddedLedger(tmp_path / "ledger.db", tmp_path / "checkpoint.key", "ciphercare.test/ledger",
                            new_chaincode, msp_dir=tmp_path / "msp")
    try:
        yield ledger
    finally:
        ledger.close()


def declare(led: Any, who: Principal = CLIN_A, **overrides: Any) -> dict[str, Any]:
    body = {"pid": "pat-0001", "purpose": "ETREAT", "reason_code": "unconscious-patient",
            "text_sha256": TEXT_SHA, "duration_s": 4 * 3600}
    body.update(overrides)
    receipt = led.submit(who, "breakglass", "Declare", [canonical.dumps(body).decode()])
    return dict(json.loads(receipt.result))


def check(led: Any, who: Principal, pid: str = "pat-0001", purpose: str = "ETREAT", org: str = "hospital-a",
          at: str = "") -> dict[str, Any]:
    return dict(json.loads(led.evaluate(who, "consent", "Check", [pid, org, purpose, "Observation", at])))


def refused(code: str, fn: Any, *args: Any, fragment: str = "", **kwargs: Any) -> EndorseError:
    with pytest.raises(EndorseError) as err:
        fn(*args, **kwargs)
    assert err.value.code == code, str(err.value)
    assert fragment in err.value.message, err.value.message
    return err.value


def test_declaration_is_recorded_with_hash_only_and_expiry(led: Any) -> None:
    d = declare(led)
    assert d["id"].startswith("bg-") and d["version"] == 1
    assert d["declared_by"] == {"subject": "u-clin-a", "org": "hospital-a", "roles": ["clinician"]}
    assert d["text_sha256"] == TEXT_SHA and d["review_status"] == "pending" and d["reviews"] == []
    from datetime import datetime
    start = datetime.fromisoformat(d["declared_at"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(d["expires_at"].replace("Z", "+00:00"))
    assert (end - start).total_seconds() == 4 * 3600
    got = json.loads(led.evaluate(OFFICER, "breakglass", "Get", [d["id"]]))
    assert got == d


def test_check_permits_only_the_declaring_clinician_for_that_patient(led: Any) -> None:
    before = check(led, CLIN_A)
    assert before["decision"] == "deny" and before["reason_code"] == "no-consent"
    d = declare(led)
    during = check(led, CLIN_A)
    assert during["decision"] == "permit" and during["reason_code"] == "break-glass"
    assert during["breakglass_id"] == d["id"] and during["consent_id"] is None
    assert check(led, CLIN_A, purpose="BTG")["reason_code"] == "break-glass"
    # other purpose, other patient, other clinician of the same org, other org, a hospital account: no
    assert check(led, CLIN_A, purpose="TREAT")["decision"] == "deny"
    assert check(led, CLIN_A, pid="pat-0002")["decision"] == "deny"
    assert check(led, CLIN_A2)["decision"] == "deny"
    assert check(led, CLIN_B, org="hospital-b")["decision"] == "deny"
    assert check(led, HOSP_A)["decision"] == "deny"
    # CheckMany carries the same rule per pid
    many = json.loads(led.evaluate(CLIN_A, "consent", "CheckMany",
                                   ['["pat-0001","pat-0002"]', "hospital-a", "ETREAT", "Observation", ""]))
    assert [m["reason_code"] for m in many] == ["break-glass", "no-consent"]
    assert "breakglass_id" not in many[1]


def test_check_before_the_declaration_time_is_not_covered(led: Any) -> None:
    declare(led)
    assert check(led, CLIN_A, at="2020-01-01T00:00:00Z")["decision"] == "deny"


def test_declaration_expires() -> None:
    led = ClockedWorldState()
    declare(led, duration_s=600)
    assert check(led, CLIN_A)["reason_code"] == "break-glass"
    led.advance(600 * 1000)
    after = check(led, CLIN_A)
    assert after["decision"] == "deny" and after["reason_code"] == "no-consent"
    assert json.loads(led.evaluate(OFFICER, "breakglass", "ListActive", [])) == []
    assert len(json.loads(led.evaluate(OFFICER, "breakglass", "ListForReview", []))) == 1


def test_only_clinicians_declare_and_input_is_validated(led: Any) -> None:
    for who in (HOSP_A, PATIENT_1, OFFICER, ADMIN):
        refused("PERMISSION_DENIED", declare, led, who, fragment="only a clinician")
    refused("INVALID_ARGUMENT", declare, led, CLIN_A, reason_code="", fragment="reason_code")
    refused("INVALID_ARGUMENT", declare, led, CLIN_A, reason_code="bored", fragment="reason_code")
    refused("INVALID_ARGUMENT", declare, led, CLIN_A, purpose="TREAT", fragment="purpose")
    refused("INVALID_ARGUMENT", declare, led, CLIN_A, duration_s=10, fragment="duration_s")
    refused("INVALID_ARGUMENT", declare, led, CLIN_A, duration_s=25 * 3600, fragment="duration_s")
    refused("INVALID_ARGUMENT", declare, led, CLIN_A, text_sha256="patient fell down the stairs",
            fragment="text_sha256")
    refused("INVALID_ARGUMENT", declare, led, CLIN_A, note="free text", fragment="unknown field")
    assert json.loads(led.evaluate(OFFICER, "breakglass", "ListForReview", [])) == []


def test_review_is_recorded_and_follows_the_workflow(led: Any) -> None:
    d = declare(led)
    note = hashlib.sha256(b"note").hexdigest()
    for who in (CLIN_A, CLIN_B, HOSP_A, PATIENT_1, ADMIN):
        refused("PERMISSION_DENIED", led.submit, who, "breakglass", "Review", [d["id"], "acknowledged", ""])
    refused("PERMISSION_DENIED", led.submit, OFFICER_CLIN, "breakglass", "Review", [d["id"], "acknowledged", ""],
            fragment="own declarer")
    refused("INVALID_ARGUMENT", led.submit, OFFICER, "breakglass", "Review", [d["id"], "ok", ""])
    refused("NOT_FOUND", led.submit, OFFICER, "breakglass", "Review", ["bg-" + "0" * 32, "escalated", ""])
    escalated = json.loads(led.submit(OFFICER, "breakglass", "Review", [d["id"], "escalated", note]).result)
    assert escalated["review_status"] == "escalated" and escalated["version"] == 2
    assert escalated["reviews"][0]["reviewed_by"]["subject"] == "u-officer"
    assert escalated["reviews"][0]["note_sha256"] == note
    refused("FAILED_PRECONDITION", led.submit, OFFICER, "breakglass", "Review", [d["id"], "escalated", ""])
    done = json.loads(led.submit(OFFICER, "breakglass", "Review", [d["id"], "acknowledged", ""]).result)
    assert done["review_status"] == "acknowledged" and len(done["reviews"]) == 2
    refused("FAILED_PRECONDITION", led.submit, OFFICER, "breakglass", "Review", [d["id"], "escalated", ""],
            fragment="already acknowledged")
    # The review does not change the access window.
    assert check(led, CLIN_A)["reason_code"] == "break-glass"


def test_visibility_of_declarations(led: Any) -> None:
    d = declare(led)
    declare(led, CLIN_B, pid="pat-0002")
    assert [x["id"] for x in json.loads(led.evaluate(PATIENT_1, "breakglass", "ListForPatient", ["pat-0001"]))] \
        == [d["id"]]
    refused("PERMISSION_DENIED", led.evaluate, PATIENT_2, "breakglass", "ListForPatient", ["pat-0001"])
    refused("NOT_FOUND", led.evaluate, PATIENT_2, "breakglass", "Get", [d["id"]])
    refused("NOT_FOUND", led.evaluate, CLIN_B, "breakglass", "Get", [d["id"]])
    assert len(json.loads(led.evaluate(CLIN_A, "breakglass", "ListActive", []))) == 1
    assert len(json.loads(led.evaluate(OFFICER, "breakglass", "ListActive", []))) == 2
    refused("PERMISSION_DENIED", led.evaluate, CLIN_A, "breakglass", "ListForReview", [])
    refused("PERMISSION_DENIED", led.evaluate, PATIENT_1, "breakglass", "ListActive", [])


def test_events_on_every_write_carry_no_free_text() -> None:
    led = ClockedWorldState()
    d = declare(led)
    led.submit(OFFICER, "breakglass", "Review", [d["id"], "acknowledged", ""])
    names = [n for n, _ in led.committed_events]
    assert names == ["BreakGlassDeclared", "BreakGlassReviewed"]
    declared = json.loads(led.committed_events[0][1])
    assert declared["declaration_id"] == d["id"] and declared["text_sha256"] == TEXT_SHA
    assert json.loads(led.committed_events[1][1])["review_status"] == "acknowledged"


def test_refused_declaration_writes_nothing() -> None:
    led = ClockedWorldState()
    with pytest.raises(EndorseError):
        declare(led, reason_code="nope")
    assert led.attempted_writes == () and led.state == {}
