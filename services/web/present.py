"""Plain-language presentation of consents and access events (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from ciphercare.consent import codes
from ciphercare.v1 import access_log_pb2, consent_pb2

#: What each FHIR resource type means to a patient.
DATA_CLASS_WORDS: dict[str, str] = {
    "Patient": "your contact and demographic details",
    "Condition": "your diagnoses and health problems",
    "Observation": "your test results and measurements (lab, vital signs)",
    "MedicationRequest": "your prescriptions",
    "MedicationStatement": "the medicines you take",
    "Procedure": "operations and procedures you had",
    "Encounter": "your visits and hospital stays",
    "DiagnosticReport": "diagnostic reports (lab, imaging)",
    "AllergyIntolerance": "your allergies and intolerances",
    "Immunization": "your vaccinations",
    "DocumentReference": "clinical documents and letters",
    "ImagingStudy": "medical images (X-ray, MRI, CT)",
    "RiskAssessment": "risk scores computed about you",
    "CarePlan": "your care plans",
}

OUTCOME_WORDS = {
    access_log_pb2.ACCESS_OUTCOME_SUCCESS: "allowed",
    access_log_pb2.ACCESS_OUTCOME_DENIED: "denied",
    access_log_pb2.ACCESS_OUTCOME_ERROR: "error",
}
OUTCOME_CODES = {"success": access_log_pb2.ACCESS_OUTCOME_SUCCESS, "denied": access_log_pb2.ACCESS_OUTCOME_DENIED,
                 "error": access_log_pb2.ACCESS_OUTCOME_ERROR}
ACTION_WORDS = {"C": "created", "R": "read", "U": "updated", "D": "deleted", "E": "used"}

#: Purposes offered first in the grant form (the rest follow).
COMMON_PURPOSES = ("TREAT", "ETREAT", "CAREMGT", "HRESCH", "CLINTRCH", "PUBHLTH")


def purpose_words(code: str) -> str:
    return codes.PURPOSES_OF_USE.get(code, code).lower() if code else "an unstated purpose"


def data_class_words(code: str) -> str:
    return DATA_CLASS_WORDS.get(code, code)


def org_name(org: str) -> str:
    """A readable organisation label from its id (``hospital-a`` -> ``Hospital A``)."""
    if not org:
        return "an unknown organisation"
    return " ".join(part.capitalize() if len(part) > 1 else part.upper() for part in org.split("-"))


def ts_datetime(ts: Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def when(dt: datetime | None, *, with_time: bool = True) -> str:
    if dt is None:
        return ""
    return dt.strftime("%d %b %Y, %H:%M UTC") if with_time else dt.strftime("%d %B %Y")


def human_list(items: list[str]) -> str:
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


@dataclass(frozen=True)
class ConsentView:
    """One consent as a patient reads it."""

    id: str
    status: str  # active | expired | revoked | scheduled | proposed
    sentence: str
    who: str
    what: list[str]
    why: list[str]
    until: str
    recorded: str
    revoked: str
    revocation_reason: str
    permit: bool
    #: Who recorded it, as the patient reads it: "you", "your representative" or the organisation (staff).
    recorded_by: str = ""
    #: Recorded by staff and awaiting the patient's (or proxy's) confirmation: not in force yet.
    proposed: bool = False


def recorded_by_words(consent: consent_pb2.Consent) -> str:
    """Who recorded a consent: the patient is always told when an organisation recorded it for them."""
    org = consent.recorded_by_organization or consent.recorded_by.organization
    if consent.authority == "patient":
        return "you (the patient)"
    if consent.authority == "proxy":
        return "your representative (proxy)"
    evidence = ", with your signed consent form on file" if consent.evidence_sha256 else ""
    return f"{org_name(org)} (staff of {org}){evidence}"


def consent_view(consent: consent_pb2.Consent, now: datetime | None = None) -> ConsentView:
    now = now or datetime.now(UTC)
    start = ts_datetime(consent.period.start)
    end = ts_datetime(consent.period.end)
    if consent.status == consent_pb2.CONSENT_STATUS_INACTIVE:
        status = "revoked"
    elif consent.status == consent_pb2.CONSENT_STATUS_PROPOSED:
        status = "proposed"
    elif end is not None and end <= now:
        status = "expired"
    elif start is not None and start > now:
        status = "scheduled"
    else:
        status = "active"
    who = org_name(consent.grantee_organization)
    what = [data_class_words(c) for c in consent.data_classes] or ["all of your data"]
    why = [purpose_words(p) for p in consent.purposes] or ["any purpose"]
    permit = consent.decision != consent_pb2.CONSENT_DECISION_DENY
    # The period's end is exclusive: a consent "until 19 February" ends at 20 February 00:00 UTC.
    until = f"until {when(end - timedelta(seconds=1), with_time=False)}" if end else "until you revoke it"
    verb = "may use" if permit else "may not use"
    sentence = f"{who} {verb} {human_list(what)} for {human_list(why)}, {until}."
    return ConsentView(
        id=consent.id, status=status, sentence=sentence, who=who, what=what, why=why, until=until,
        recorded=when(ts_datetime(consent.recorded_at)), revoked=when(ts_datetime(consent.revoked_at)),
        revocation_reason=codes.REVOCATION_REASONS.get(consent.revocation_reason, consent.revocation_reason),
        permit=permit, recorded_by=recorded_by_words(consent),
        proposed=consent.status == consent_pb2.CONSENT_STATUS_PROPOSED,
    )


@dataclass(frozen=True)
class AccessView:
    """One access event in words."""

    id: str
    sequence: int
    recorded: str
    recorded_iso: str
    outcome: str
    who: str
    agent_subject: str
    agent_org: str
    roles: str
    why: str
    purpose: str
    what: str
    action: str
    reason: str
    pid: str
    observer: str
    consent_id: str


def access_view(event: access_log_pb2.AccessEvent) -> AccessView:
    recorded = ts_datetime(event.recorded)
    roles = ", ".join(r for r in event.agent.roles if r in codes.ROLES)
    who = org_name(event.agent.organization)
    if roles:
        who = f"{who} ({roles})"
    return AccessView(
        id=event.id, sequence=event.sequence, recorded=when(recorded),
        recorded_iso=recorded.isoformat().replace("+00:00", "Z") if recorded else "",
        outcome=OUTCOME_WORDS.get(event.outcome, "unknown"), who=who, agent_subject=event.agent.subject,
        agent_org=event.agent.organization, roles=roles, why=purpose_words(event.purpose_of_use),
        purpose=event.purpose_of_use,
        what=human_list([data_class_words(c) for c in event.data_classes]) or "your record",
        action=ACTION_WORDS.get(event.action, event.action), reason=event.outcome_description,
        pid=event.pid, observer=event.source_observer, consent_id=event.consent_id,
    )
