"""The decision table of consent/decision.py, as pure unit tests (no ledger)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from testkit.consent import record

from ciphercare.consent.decision import AccessRequest, decide, evaluate_consent
from ciphercare.consent.errors import ValidationError

AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
REVOKED = {
    "status": "inactive",
    "version": 2,
    "revoked_at": "2025-03-01T00:00:00Z",
    "revoked_by": {"subject": "pat-user", "org": "patients", "roles": ["patient"]},
    "revocation_reason": "patient-request",
}


def req(
    purpose: str = "TREAT",
    data_class: str = "Observation",
    org: str = "hospital-a",
    at: datetime = AT,
    pid: str = "pat-0001",
) -> AccessRequest:
    return AccessRequest.validated(pid, org, purpose, data_class, at)


def test_permit() -> None:
    c = record(1)
    d = decide([c], req())
    assert (d.decision, d.consent_id, d.reason_code) == ("permit", c.id, "consent-permit")
    assert "permits TREAT access to Observation" in d.reason


def test_deny_consent() -> None:
    c = record(1, decision="deny")
    d = decide([c], req())
    assert (d.decision, d.consent_id, d.reason_code) == ("deny", c.id, "consent-deny")


def test_deny_overrides_permit_across_consents_regardless_of_order() -> None:
    permit, deny = record(1), record(2, decision="deny")
    for consents in ([permit, deny], [deny, permit]):
        d = decide(consents, req())
        assert (d.decision, d.consent_id) == ("deny", deny.id)


def test_default_deny_without_consents() -> None:
    d = decide([], req())
    assert (d.decision, d.consent_id, d.reason_code) == ("deny", None, "no-consent")
    assert d.reason.startswith("no active consent covers TREAT access to Observation")


def test_other_org_is_not_covered() -> None:
    d = decide([record(1)], req(org="hospital-b"))
    assert (d.decision, d.reason_code) == ("deny", "no-consent")
    assert "hospital-b" in d.reason


def test_data_class_not_covered() -> None:
    d = decide([record(1)], req(data_class="ImagingStudy"))
    assert (d.decision, d.reason_code) == ("deny", "no-consent")


def test_purpose_not_covered() -> None:
    d = decide([record(1)], req(purpose="HRESCH"))
    assert (d.decision, d.reason_code) == ("deny", "no-consent")


def test_other_patient_consent_ignored() -> None:
    d = decide([record(1, pid="pat-0002")], req())
    assert d.reason_code == "no-consent"


def test_expired_says_expired() -> None:
    c = record(1)
    d = decide([c], req(at=datetime(2026, 1, 1, tzinfo=UTC)))  # end is exclusive
    assert (d.decision, d.consent_id, d.reason_code) == ("deny", c.id, "consent-expired")
    assert "expired at 2026-01-01T00:00:00Z" in d.reason


def test_not_yet_valid() -> None:
    c = record(1)
    d = decide([c], req(at=datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)))
    assert (d.decision, d.reason_code) == ("deny", "consent-not-yet-valid")
    assert "not valid before 2025-01-01T00:00:00Z" in d.reason


def test_start_is_inclusive() -> None:
    assert decide([record(1)], req(at=datetime(2025, 1, 1, tzinfo=UTC))).decision == "permit"


def test_open_ended_period() -> None:
    c = record(1, period={"start": "2025-01-01T00:00:00Z", "end": None})
    assert decide([c], req(at=datetime(2099, 1, 1, tzinfo=UTC))).decision == "permit"


def test_revoked_says_revoked() -> None:
    c = record(1, **REVOKED)
    d = decide([c], req())
    assert (d.decision, d.consent_id, d.reason_code) == ("deny", c.id, "consent-revoked")
    assert "was revoked" in d.reason


def test_revoked_old_consent_does_not_hide_a_new_permit() -> None:
    old, new = record(1, **REVOKED), record(2)
    d = decide([old, new], req())
    assert (d.decision, d.consent_id) == ("permit", new.id)


def test_revoked_deny_no_longer_denies() -> None:
    d = decide([record(1), record(2, decision="deny", **REVOKED)], req())
    assert d.decision == "permit"


def test_nested_deny_inside_permit() -> None:
    c = record(1, provisions=[{"type": "deny", "data_classes": ["Condition"]}])
    d = decide([c], req(data_class="Condition"))
    assert (d.decision, d.consent_id, d.reason_code) == ("deny", c.id, "consent-deny")
    assert "nested provision 1" in d.reason
    assert decide([c], req(data_class="Observation")).decision == "permit"


def test_nested_permit_inside_deny() -> None:
    c = record(
        1,
        decision="deny",
        purposes=["TREAT", "HRESCH"],
        provisions=[{"type": "permit", "purposes": ["TREAT"]}],
    )
    assert decide([c], req(purpose="TREAT")).decision == "permit"
    assert decide([c], req(purpose="HRESCH")).decision == "deny"


def test_deepest_applying_provision_decides() -> None:
    c = record(
        1,
        provisions=[
            {
                "type": "deny",
                "data_classes": ["Observation"],
                "provisions": [
                    {
                        "type": "permit",
                        "purposes": ["TREAT"],
                        "provisions": [
                            {
                                "type": "deny",
                                "actors": ["hospital-a"],
                                "period": {"start": "2025-06-01T00:00:00Z"},
                            }
                        ],
                    }
                ],
            }
        ],
    )
    d = decide([c], req(at=datetime(2025, 5, 1, tzinfo=UTC)))
    assert d.decision == "permit" and "nested provision 1.1" in d.reason
    d = decide([c], req(at=AT))
    assert d.decision == "deny" and "nested provision 1.1.1" in d.reason


def test_nested_provision_needs_all_its_constraints() -> None:
    c = record(1, provisions=[{"type": "deny", "purposes": ["TREAT"], "data_classes": ["Condition"]}])
    assert decide([c], req(data_class="Observation")).decision == "permit"
    assert decide([c], req(data_class="Condition")).decision == "deny"


def test_nested_provision_actor_mismatch_does_not_apply() -> None:
    c = record(1, provisions=[{"type": "deny", "actors": ["hospital-b"]}])
    assert decide([c], req()).decision == "permit"


def test_siblings_deny_wins() -> None:
    c = record(
        1,
        decision="deny",
        provisions=[
            {"type": "permit", "purposes": ["TREAT"]},
            {"type": "deny", "data_classes": ["Observation"]},
        ],
    )
    d = decide([c], req())
    assert d.decision == "deny" and "nested provision 2" in d.reason


def test_nested_period_limits_provision() -> None:
    c = record(1, provisions=[{"type": "deny", "period": {"end": "2025-02-01T00:00:00Z"}}])
    assert decide([c], req(at=datetime(2025, 1, 15, tzinfo=UTC))).decision == "deny"
    assert decide([c], req(at=AT)).decision == "permit"


def test_evaluate_consent_single() -> None:
    assert evaluate_consent(record(1), req()) == "permit"
    assert evaluate_consent(record(1), req(org="hospital-b")) is None
    assert evaluate_consent(record(1, **REVOKED), req()) is None


def test_unknown_purpose_rejected() -> None:
    with pytest.raises(ValidationError) as err:
        req(purpose="FOO")
    assert str(err.value).startswith(
        "INVALID_ARGUMENT: purpose: 'FOO' is not a v3 ActReason purpose-of-use code"
    )
    assert "TREAT" in str(err.value)


def test_free_text_purpose_not_echoed() -> None:
    with pytest.raises(ValidationError) as err:
        req(purpose="John Smith has HIV")
    assert "Smith" not in str(err.value)


def test_unknown_data_class_and_bad_ids_rejected() -> None:
    for kwargs in ({"data_class": "Blood"}, {"org": "Hospital A"}, {"pid": "x"}):
        with pytest.raises(ValidationError):
            req(**kwargs)
    with pytest.raises(ValidationError):
        AccessRequest.validated("pat-0001", "hospital-a", "TREAT", "Observation", datetime(2025, 1, 1))


def test_deterministic_naming() -> None:
    """The same set of consents gives the same decision and names the same consent, in any order."""
    permits = [record(n) for n in (3, 1, 2)]
    denies = [record(n, decision="deny") for n in (6, 5)]
    seen = {decide(list(p), req()) for p in itertools.permutations(permits)}
    assert len(seen) == 1 and seen.pop().consent_id == f"cns-{1:032x}"
    seen = {decide(list(p), req()) for p in itertools.permutations(permits + denies)}
    assert len(seen) == 1 and seen.pop().consent_id == f"cns-{5:032x}"
    # equal recorded_at: the id breaks the tie
    twins = [record(n, recorded_at="2025-01-01T00:00:00Z") for n in (9, 8)]
    assert {decide(list(p), req()).consent_id for p in itertools.permutations(twins)} == {f"cns-{8:032x}"}
