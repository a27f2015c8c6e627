"""The access table: which roles may call which gRPC method.

This is the ONE place method-level authorisation is decided. The interceptor
looks the full method name (``/package.Service/Method``) up here; a method that
is not in the table is denied (fail closed), and only the health and reflection
services are public.

The table answers "may a caller with these roles invoke this method at all".
It deliberately does NOT decide *which* records a caller may touch:
organisation scoping (a hospital only sees its own organisation's data) and
patient scoping (a patient only sees and changes their own consents and access
events) are enforced by the servicers and, authoritatively, by the ledger
contracts, which read the actor from the verified :class:`~ciphercare.ledger.api.Principal`
(never from a request field).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

PATIENT = "patient"
CLINICIAN = "clinician"
HOSPITAL = "hospital"
COMPLIANCE_OFFICER = "compliance-officer"
ADMIN = "admin"

#: Every role ciphercare understands; any other role in a token is ignored.
KNOWN_ROLES: frozenset[str] = frozenset({PATIENT, CLINICIAN, HOSPITAL, COMPLIANCE_OFFICER, ADMIN})


@dataclass(frozen=True)
class AccessRule:
    """Who may call one method: any holder of one of ``roles``, or anyone when ``public``."""

    roles: frozenset[str] = frozenset()
    public: bool = False

    def __post_init__(self) -> None:
        unknown = self.roles - KNOWN_ROLES
        if unknown:
            raise ValueError(f"unknown role(s) in access rule: {sorted(unknown)}")
        if self.public and self.roles:
            raise ValueError("a public rule must not list roles")
        if not self.public and not self.roles:
            raise ValueError("a non-public rule must allow at least one role")

    def allows(self, roles: Iterable[str]) -> bool:
        """True if the rule is public or ``roles`` shares a role with the rule."""
        return self.public or not self.roles.isdisjoint(roles)


def _roles(*names: str) -> AccessRule:
    return AccessRule(roles=frozenset(names))


PUBLIC = AccessRule(public=True)

_ALL = (PATIENT, CLINICIAN, HOSPITAL, COMPLIANCE_OFFICER, ADMIN)
_CONSENT = "/ciphercare.v1.ConsentService/"
_ACCESS_LOG = "/ciphercare.v1.AccessLogService/"
_SCORING = "/ciphercare.v1.ScoringService/"
_COMPLIANCE = "/ciphercare.v1.ComplianceService/"
_BREAKGLASS = "/ciphercare.v1.BreakGlassService/"
_FHIR = "/ciphercare.v1.FhirService/"

_TABLE: dict[str, AccessRule] = {
    # Consent
    _CONSENT + "Grant": _roles(PATIENT, CLINICIAN, HOSPITAL),
    _CONSENT + "Revoke": _roles(PATIENT, CLINICIAN, HOSPITAL),
    _CONSENT + "Confirm": _roles(PATIENT),
    _CONSENT + "Get": _roles(*_ALL),
    _CONSENT + "ListForPatient": _roles(*_ALL),
    _CONSENT + "GetHistory": _roles(*_ALL),
    _CONSENT + "Check": _roles(PATIENT, CLINICIAN, HOSPITAL, COMPLIANCE_OFFICER),
    # Access log
    _ACCESS_LOG + "Record": _roles(CLINICIAN, HOSPITAL),
    _ACCESS_LOG + "Get": _roles(*_ALL),
    _ACCESS_LOG + "Search": _roles(*_ALL),
    _ACCESS_LOG + "GetCheckpoint": _roles(*_ALL),
    _ACCESS_LOG + "GetInclusionProof": _roles(*_ALL),
    _ACCESS_LOG + "GetConsistencyProof": _roles(*_ALL),
    _ACCESS_LOG + "Watch": _roles(HOSPITAL, COMPLIANCE_OFFICER, ADMIN),
    # Scoring (next milestone)
    _SCORING + "RegisterContext": _roles(HOSPITAL),
    _SCORING + "GetModelInfo": _roles(HOSPITAL, CLINICIAN),
    _SCORING + "Score": _roles(HOSPITAL),
    # Compliance (issue 15). Officers and admins read every organisation; providers their own organisation's
    # events (scoped by the servicer). Flags name colleagues: hospitals' service accounts (the organisation's
    # compliance function) may read their own organisation's flags, clinicians may not. Patients read their
    # own access trail through AccessLogService.
    _COMPLIANCE + "ListFlags": _roles(HOSPITAL, COMPLIANCE_OFFICER, ADMIN),
    _COMPLIANCE + "Search": _roles(CLINICIAN, HOSPITAL, COMPLIANCE_OFFICER, ADMIN),
    _COMPLIANCE + "Aggregate": _roles(CLINICIAN, HOSPITAL, COMPLIANCE_OFFICER, ADMIN),
    _COMPLIANCE + "Export": _roles(CLINICIAN, HOSPITAL, COMPLIANCE_OFFICER, ADMIN),
    # Break-glass (issue 15): clinicians declare and record, compliance officers review; the contract scopes reads.
    _BREAKGLASS + "Declare": _roles(CLINICIAN),
    _BREAKGLASS + "RecordAccess": _roles(CLINICIAN),
    _BREAKGLASS + "Get": _roles(*_ALL),
    _BREAKGLASS + "ListForPatient": _roles(*_ALL),
    _BREAKGLASS + "ListActive": _roles(CLINICIAN, HOSPITAL, COMPLIANCE_OFFICER, ADMIN),
    _BREAKGLASS + "ListForReview": _roles(COMPLIANCE_OFFICER, ADMIN),
    _BREAKGLASS + "Review": _roles(COMPLIANCE_OFFICER),
    # FHIR interchange (issue 15): imports are consent grants; exports are reads, scoped by the contracts.
    _FHIR + "ImportConsent": _roles(PATIENT, CLINICIAN, HOSPITAL),
    _FHIR + "ExportConsent": _roles(*_ALL),
    _FHIR + "ExportAuditEvents": _roles(*_ALL),
    # Infrastructure: public
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": PUBLIC,
}

#: Full gRPC method name -> rule. Read-only; methods absent from it are denied.
RULES: Mapping[str, AccessRule] = MappingProxyType(_TABLE)
ACCESS_RULES = RULES  # alias


def rule_for(method: str, rules: Mapping[str, AccessRule] = RULES) -> AccessRule | None:
    """The rule for ``method`` or ``None`` (which callers must treat as deny)."""
    return rules.get(method)
