"""The consent decision rule (FHIR Consent semantics), as a pure function.

A consent *applies* to a request (pid, recipient org, purpose, data class, instant)
when it is active, the instant lies in its period (start inclusive, end
exclusive), its grantee is the recipient org, and the purpose and data class are
in its root scope. Its result is its root decision refined by nested provisions:
a provision applies when all of its own constraints match (an empty list or a
missing period inherits), the deepest applying provisions decide, and among
applying siblings deny wins. Across all of the patient's consents deny wins,
then permit, else the default is deny. A consent staff proposed (status
``proposed``) is not in force until the patient or their proxy confirms it. The outcome never depends on the order
of the input: consents are ranked by (recorded_at, id) and the first is named.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from . import codes, model
from .errors import ValidationError
from .model import ConsentProvision, ConsentRecord, Decision


@dataclass(frozen=True)
class AccessRequest:
    """What is being asked: may ``recipient_org`` use ``data_class`` of ``pid`` for ``purpose`` at ``at``."""

    pid: str
    recipient_org: str
    purpose: str
    data_class: str
    at: datetime

    @classmethod
    def validated(
        cls, pid: str, recipient_org: str, purpose: str, data_class: str, at: datetime
    ) -> AccessRequest:
        """Build a request, refusing unknown codes and malformed ids (INVALID_ARGUMENT)."""
        if at.tzinfo is None:
            raise ValidationError("at: must carry a timezone")
        return cls(
            pid=model.pid(pid, "pid"),
            recipient_org=model.org(recipient_org, "recipient_org"),
            purpose=model.code(purpose, "purpose", codes.PURPOSES_OF_USE, "a v3 ActReason purpose-of-use"),
            data_class=model.code(
                data_class, "data_class", codes.DATA_CLASSES, "a FHIR resource-type data class"
            ),
            at=at,
        )

    def describe(self) -> str:
        return f"{self.purpose} access to {self.data_class} of {self.pid} by {self.recipient_org}"


@dataclass(frozen=True)
class _Outcome:
    decision: str
    path: str  # "" = the consent's root decision, else e.g. "provision 1.2" (1-based)


def _provision_matches(p: ConsentProvision, req: AccessRequest) -> bool:
    if p.purposes and req.purpose not in p.purposes:
        return False
    if p.data_classes and req.data_class not in p.data_classes:
        return False
    if p.actors and req.recipient_org not in p.actors:
        return False
    if p.period is not None and p.period.relation(req.at) != "within":
        return False
    return True


def _refine(
    decision: str, path: str, provisions: tuple[ConsentProvision, ...], req: AccessRequest
) -> _Outcome:
    """The outcome of a node: its own decision unless applying children override it (deny wins among them)."""
    outcomes = [
        _refine(p.type, f"{path}.{i + 1}" if path else str(i + 1), p.provisions, req)
        for i, p in enumerate(provisions)
        if _provision_matches(p, req)
    ]
    if not outcomes:
        return _Outcome(decision, path)
    for outcome in outcomes:
        if outcome.decision == codes.DENY:
            return outcome
    return outcomes[0]


def _in_root_scope(c: ConsentRecord, req: AccessRequest) -> bool:
    return (
        c.pid == req.pid
        and c.grantee_org == req.recipient_org
        and req.purpose in c.purposes
        and req.data_class in c.data_classes
    )


def evaluate_consent(c: ConsentRecord, req: AccessRequest) -> str | None:
    """The decision of one consent for ``req``, or None when it does not apply."""
    if c.status != codes.CONSENT_STATUS_ACTIVE or not _in_root_scope(c, req):
        return None
    if c.period.relation(req.at) != "within":
        return None
    return _refine(c.decision, "", c.provisions, req).decision


def _rank(c: ConsentRecord) -> tuple[datetime, str]:
    return (model.parse_time(c.recorded_at, "recorded_at"), c.id)


def _by(path: str) -> str:
    return f" (nested provision {path})" if path else ""


def decide(consents: Iterable[ConsentRecord], req: AccessRequest) -> Decision:
    """Apply the rule to all of the patient's consents; see the module docstring."""
    ranked = sorted(consents, key=_rank)
    first_permit: tuple[ConsentRecord, _Outcome] | None = None
    revoked: ConsentRecord | None = None
    expired: ConsentRecord | None = None
    pending: ConsentRecord | None = None
    unconfirmed: ConsentRecord | None = None

    for c in ranked:
        if not _in_root_scope(c, req):
            continue
        if c.status == codes.CONSENT_STATUS_PROPOSED:
            unconfirmed = unconfirmed or c
            continue
        if c.status != codes.CONSENT_STATUS_ACTIVE:
            revoked = revoked or c
            continue
        relation = c.period.relation(req.at)
        if relation == "after":
            expired = expired or c
            continue
        if relation == "before":
            pending = pending or c
            continue
        outcome = _refine(c.decision, "", c.provisions, req)
        if outcome.decision == codes.DENY:
            return Decision(
                decision=codes.DENY,
                consent_id=c.id,
                reason=f"consent {c.id} denies {req.describe()}{_by(outcome.path)}",
                reason_code="consent-deny",
            )
        if first_permit is None:
            first_permit = (c, outcome)

    if first_permit is not None:
        c, outcome = first_permit
        return Decision(
            decision=codes.PERMIT,
            consent_id=c.id,
            reason=f"consent {c.id} permits {req.describe()}{_by(outcome.path)}",
            reason_code="consent-permit",
        )

    base = f"no active consent covers {req.describe()}"
    if revoked is not None:
        return Decision(
            decision=codes.DENY,
            consent_id=revoked.id,
            reason=f"{base}: consent {revoked.id} was revoked at {revoked.revoked_at}",
            reason_code="consent-revoked",
        )
    if expired is not None:
        return Decision(
            decision=codes.DENY,
            consent_id=expired.id,
            reason=f"{base}: consent {expired.id} expired at {expired.period.end}",
            reason_code="consent-expired",
        )
    if pending is not None:
        return Decision(
            decision=codes.DENY,
            consent_id=pending.id,
            reason=f"{base}: consent {pending.id} is not valid before {pending.period.start}",
            reason_code="consent-not-yet-valid",
        )
    if unconfirmed is not None:
        return Decision(
            decision=codes.DENY,
            consent_id=unconfirmed.id,
            reason=f"{base}: consent {unconfirmed.id} recorded by {unconfirmed.recorded_by.org} awaits the "
            "patient's confirmation",
            reason_code="consent-unconfirmed",
        )
    return Decision(decision=codes.DENY, consent_id=None, reason=base, reason_code="no-consent")
