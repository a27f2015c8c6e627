"""Plain-language presentation of consents and access events (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

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

#: The same kinds of data, spoken about a patient to someone else (an officer, a clinician).
DATA_CLASS_WORDS_THIRD: dict[str, str] = {
    "Patient": "the patient's contact and demographic details",
    "Condition": "the patient's diagnoses and health problems",
    "Observation": "the patient's test results and measurements (lab, vital signs)",
    "MedicationRequest": "the patient's prescriptions",
    "MedicationStatement": "the medicines the patient takes",
    "Procedure": "operations and procedures the patient had",
    "Encounter": "the patient's visits and hospital stays",
    "DiagnosticReport": "diagnostic reports (lab, imaging)",
    "AllergyIntolerance": "the patient's allergies and intolerances",
    "Immunization": "the patient's vaccinations",
    "DocumentReference": "clinical documents and letters",
    "ImagingStudy": "medical images (X-ray, MRI, CT)",
    "RiskAssessment": "risk scores computed about the patient",
    "CarePlan": "the patient's care plans",
}


@dataclass(frozen=True)
class PurposeGroup:
    """Purposes of use grouped for people: a heading, why it matters, and (code, label, explanation)."""

    key: str
    title: str
    explanation: str
    purposes: tuple[tuple[str, str, str], ...]
    collapsed: bool = False


#: The grant form's purposes, grouped and explained. Marketing-type and other rare uses sit under
#: "Other uses", collapsed, with a warning; BTG (break the glass) is never granted by consent.
PURPOSE_GROUPS: tuple[PurposeGroup, ...] = (
    PurposeGroup("care", "Your care", "People and services looking after your health.", (
        ("TREAT", "Treatment", "Doctors, nurses and pharmacists treating you."),
        ("ETREAT", "Emergency treatment", "Treating you in an emergency, for example in A&E."),
        ("CAREMGT", "Care coordination", "Organising your care between teams, referrals and follow-up."),
        ("PATRQT", "When you ask for it", "Sharing that you request yourself, for example a copy of a letter."),
    )),
    PurposeGroup("payment", "Paying for care", "Billing and insurance for the care you receive.", (
        ("HPAYMT", "Billing and payment", "Sending and settling the bills for your care."),
        ("COVERAGE", "Insurance coverage checks", "Checking what your insurance or health plan covers."),
    )),
    PurposeGroup("operations", "Running health services", "Keeping services safe, working and organised.", (
        ("HOPERAT", "Quality and operations", "Audits, quality checks, staff training and planning."),
        ("PATADMIN", "Patient administration", "Appointments, admissions and records management."),
        ("HSYSADMIN", "System administration", "Keeping the computer systems that hold your data running."),
    )),
    PurposeGroup("research", "Research", "Studies that help future patients.", (
        ("HRESCH", "Health research", "Approved research studies using health data."),
        ("CLINTRCH", "Clinical trials", "A clinical trial you take part in."),
    )),
    PurposeGroup("public-health", "Public health", "Protecting everyone's health.", (
        ("PUBHLTH", "Public health", "Reporting to public health authorities, for example about outbreaks."),
    )),
    PurposeGroup("other", "Other uses", "Rarely needed and not about your care. Choose these only if you "
                 "have a specific reason: marketing means being contacted about products or services.", (
        ("HMARKT", "Marketing", "Being contacted about health products, services or fundraising."),
        ("HDIRECT", "Directory listings", "Being listed in a directory of patients or members."),
        ("HLEGAL", "Legal matters", "Use in legal proceedings or by lawyers."),
        ("HTEST", "Testing systems", "Testing computer systems with real data."),
    ), collapsed=True),
)
#: Purposes a patient may choose in the grant form (every grouped one).
GRANTABLE_PURPOSES: frozenset[str] = frozenset(c for g in PURPOSE_GROUPS for c, _, _ in g.purposes)
#: Purposes offered first in the grant form (the rest follow).
COMMON_PURPOSES = ("TREAT", "ETREAT", "CAREMGT", "HRESCH", "CLINTRCH", "PUBHLTH")


def purpose_words(code: str) -> str:
    return codes.PURPOSES_OF_USE.get(code, code).lower() if code else "an unstated purpose"


def data_class_words(code: str, own: bool = True) -> str:
    return (DATA_CLASS_WORDS if own else DATA_CLASS_WORDS_THIRD).get(code, code)


def org_name(org: str, names: dict[str, str] | None = None) -> str:
    """A readable organisation label: its registry name, else from its id (``hospital-a`` -> ``Hospital A``)."""
    if not org:
        return "an unknown organisation"
    if names and org in names:
        return names[org]
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
    recorded_iso: str = ""
    revoked_iso: str = ""


def recorded_by_words(consent: consent_pb2.Consent) -> str:
    """Who recorded a consent: the patient is always told when an organisation recorded it for them."""
    org = consent.recorded_by_organization or consent.recorded_by.organization
    if consent.authority == "patient":
        return "you (the patient)"
    if consent.authority == "proxy":
        return "your representative (proxy)"
    evidence = ", with your signed consent form on file" if consent.evidence_sha256 else ""
    return f"{org_name(org)} (staff of {org}){evidence}"


def consent_view(consent: consent_pb2.Consent, now: datetime | None = None, *, own: bool = True,
                 names: dict[str, str] | None = None) -> ConsentView:
    """The consent in words, addressed to the patient (``own``) or about them to someone else."""
    now = now or datetime.now(UTC)
    start = ts_datetime(consent.period.start)
    end = ts_datetime(consent.period.end)
    revoked_at = ts_datetime(consent.revoked_at)
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
    who = org_name(consent.grantee_organization, names)
    whole = "all of your data" if own else "all of the patient's data"
    what = [data_class_words(c, own) for c in consent.data_classes] or [whole]
    why = [purpose_words(p) for p in consent.purposes] or ["any purpose"]
    permit = consent.decision != consent_pb2.CONSENT_DECISION_DENY
    # The period's end is exclusive: a consent "until 19 February" ends at 20 February 00:00 UTC.
    last_day = when(end - timedelta(seconds=1), with_time=False) if end else ""
    scope = f"{human_list(what)} for {human_list(why)}"
    if status == "revoked":
        on = f" on {when(revoked_at, with_time=False)}" if revoked_at else ""
        until = f"revoked{on}"
        verb = "was allowed to use" if permit else "was refused"
        sentence = f"{who} {verb} {scope} until this consent was revoked{on}. It no longer applies."
    elif status == "expired":
        until = f"expired on {last_day}"
        verb = "was allowed to use" if permit else "was refused"
        sentence = f"{who} {verb} {scope} until {last_day}. This consent has expired and no longer applies."
    else:
        until = f"until {last_day}" if end else ("until you revoke it" if own else "until it is revoked")
        verb = "may use" if permit else "may not use"
        sentence = f"{who} {verb} {scope}, {until}."
        if status == "scheduled" and start is not None:
            sentence = f"From {when(start, with_time=False)}, {sentence[0].lower()}{sentence[1:]}"
    return ConsentView(
        id=consent.id, status=status, sentence=sentence, who=who, what=what, why=why, until=until,
        recorded=when(ts_datetime(consent.recorded_at)), revoked=when(revoked_at),
        revocation_reason=codes.REVOCATION_REASONS.get(consent.revocation_reason, consent.revocation_reason),
        permit=permit, recorded_by=recorded_by_words(consent),
        proposed=consent.status == consent_pb2.CONSENT_STATUS_PROPOSED,
        recorded_iso=iso(ts_datetime(consent.recorded_at)), revoked_iso=iso(revoked_at),
    )


def iso(dt: datetime | None) -> str:
    """The UTC instant for a ``<time datetime>`` attribute (the browser shows it in local time)."""
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if dt else ""


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
    breakglass: bool = False


def access_view(event: access_log_pb2.AccessEvent, *, own: bool = True,
                names: dict[str, str] | None = None) -> AccessView:
    recorded = ts_datetime(event.recorded)
    roles = ", ".join(r for r in event.agent.roles if r in codes.ROLES)
    who = org_name(event.agent.organization, names)
    if roles:
        who = f"{who} ({roles})"
    return AccessView(
        id=event.id, sequence=event.sequence, recorded=when(recorded),
        recorded_iso=recorded.isoformat().replace("+00:00", "Z") if recorded else "",
        outcome=OUTCOME_WORDS.get(event.outcome, "unknown"), who=who, agent_subject=event.agent.subject,
        agent_org=event.agent.organization, roles=roles, why=purpose_words(event.purpose_of_use),
        purpose=event.purpose_of_use,
        what=human_list([data_class_words(c, own) for c in event.data_classes])
        or ("your record" if own else "the patient's record"),
        breakglass=event.outcome_description.startswith("break-glass:"),
        action=ACTION_WORDS.get(event.action, event.action), reason=event.outcome_description,
        pid=event.pid, observer=event.source_observer, consent_id=event.consent_id,
    )


REVIEW_WORDS = {
    "pending": "not reviewed yet: a compliance officer will check that it was justified",
    "acknowledged": "reviewed: a compliance officer found it justified",
    "escalated": "escalated: a compliance officer referred it for investigation",
}


@dataclass(frozen=True)
class BreakGlassView:
    """One break-glass declaration in words, for the patient (or about them)."""

    id: str
    active: bool
    sentence: str
    reason: str
    declared: str
    declared_iso: str
    expires: str
    expires_iso: str
    review_status: str
    review: str
    accesses: int


def breakglass_view(d: Any, events: list[access_log_pb2.AccessEvent], *, own: bool = True,
                    names: dict[str, str] | None = None) -> BreakGlassView:
    """A declaration (BreakGlassDeclaration proto) and how many logged accesses it covered."""
    declared = ts_datetime(d.declared_at)
    expires = ts_datetime(d.expires_at)
    org = org_name(d.declared_by.organization, names)
    whose = "your" if own else "the patient's"
    sentence = (f"A clinician at {org} used emergency access (\u201cbreak the glass\u201d) to open {whose} record "
                "without a consent.")
    accesses = sum(1 for e in events if e.outcome_description == f"break-glass:{d.id}")
    return BreakGlassView(
        id=d.id, active=d.active, sentence=sentence,
        reason=codes.BREAKGLASS_REASONS.get(d.reason_code, d.reason_code),
        declared=when(declared), declared_iso=iso(declared), expires=when(expires), expires_iso=iso(expires),
        review_status=d.review_status, review=REVIEW_WORDS.get(d.review_status, d.review_status),
        accesses=accesses,
    )
