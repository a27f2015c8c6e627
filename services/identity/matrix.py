"""The authorization matrix: every RPC x every persona x own/other target -> the expected outcome.

This is the ONE table of expected allow/deny outcomes. ``tests/keycloak`` runs
it twice against a real server, once with the development issuer's tokens and
once with a real Keycloak's, and both runs must agree with it; a unit test
checks that it is consistent with the method-level role table
(:data:`~ciphercare.services.identity.rules.RULES`). ``docs/IDENTITY.md`` shows the
same table in prose.

Three layers decide an outcome, and the table records their combined effect:

1. the role table (:mod:`.rules`, enforced by the interceptor) -> ``DENIED``;
2. the contracts (consent/contracts/__init__.py: patients only for their own ``pid``,
   providers only for their own organisation) -> ``DENIED`` or ``NOT_FOUND``;
3. :class:`~ciphercare.services.audit.servicer.AccessScope` for the
   access-log projection -> ``NOT_FOUND`` or ``FILTERED``.

Personas (one per realm role, plus a signed-in user with no ciphercare role):
``hospital`` is hospital-a's service account, ``clinician`` works at
hospital-a, ``patient`` is pseudonym ``pt-1001``; ``compliance-officer`` and
``admin`` have their own organisations. The *own* target is hospital-a's data
about ``pt-1001`` (a consent granted to and recorded by hospital-a, an access
event recorded by hospital-a); the *other* target is hospital-b's data about
``pt-1002``. For writes, *own*/*other* is the patient the write names (a
hospital or clinician always writes as itself: the agent and ``recorded_by``
come from the token, never from the request).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from ciphercare.services.identity.rules import ADMIN, CLINICIAN, COMPLIANCE_OFFICER, HOSPITAL, PATIENT, RULES


class Outcome(StrEnum):
    """What a call returns for a persona and a target."""

    ALLOWED = "allowed"  # OK, and the target's data is in the answer (or the write happened)
    FILTERED = "filtered"  # OK, but scoping left the target's data out of the answer
    NOT_FOUND = "not-found"  # NOT_FOUND: scoping hides that the target exists
    DENIED = "denied"  # PERMISSION_DENIED


NO_ROLE = "no-role"
#: Personas in table order; each is named after the one realm role it holds.
PERSONAS: tuple[str, ...] = (HOSPITAL, CLINICIAN, PATIENT, COMPLIANCE_OFFICER, ADMIN, NO_ROLE)
TARGETS: tuple[str, ...] = ("own", "other")

CONSENT_SERVICE = "ciphercare.v1.ConsentService"
ACCESS_LOG_SERVICE = "ciphercare.v1.AccessLogService"
CONSENT_METHODS: tuple[str, ...] = (
    "Grant", "Revoke", "Confirm", "Get", "ListForPatient", "GetHistory", "Check",
)
ACCESS_LOG_METHODS: tuple[str, ...] = (
    "Record", "Get", "Search", "GetCheckpoint", "GetInclusionProof", "GetConsistencyProof", "Watch",
)
COMPLIANCE_SERVICE = "ciphercare.v1.ComplianceService"
COMPLIANCE_METHODS: tuple[str, ...] = ("ListFlags", "Search", "Aggregate", "Export")
BREAKGLASS_SERVICE = "ciphercare.v1.BreakGlassService"
FHIR_SERVICE = "ciphercare.v1.FhirService"
BREAKGLASS_METHODS: tuple[str, ...] = (
    "Declare", "RecordAccess", "Get", "ListForPatient", "ListActive", "ListForReview", "Review",
)
FHIR_METHODS: tuple[str, ...] = ("ImportConsent", "ExportConsent", "ExportAuditEvents")
#: Every RPC the matrix covers, as full gRPC method names.
METHODS: tuple[str, ...] = (
    tuple(f"/{CONSENT_SERVICE}/{m}" for m in CONSENT_METHODS)
    + tuple(f"/{ACCESS_LOG_SERVICE}/{m}" for m in ACCESS_LOG_METHODS)
    + tuple(f"/{COMPLIANCE_SERVICE}/{m}" for m in COMPLIANCE_METHODS)
    + tuple(f"/{BREAKGLASS_SERVICE}/{m}" for m in BREAKGLASS_METHODS)
    + tuple(f"/{FHIR_SERVICE}/{m}" for m in FHIR_METHODS)
)

A, F, N, D = Outcome.ALLOWED, Outcome.FILTERED, Outcome.NOT_FOUND, Outcome.DENIED

# method -> persona -> (own, other). Columns: hospital, clinician, patient, officer, admin, no-role.
_ROWS: dict[str, tuple[tuple[Outcome, Outcome], ...]] = {
    # A provider records consents for any patient (consent collected at the point of care), always as
    # itself and only with its own organisation as recipient; a patient only for their own pid.
    "ConsentService/Grant": ((A, D), (A, D), (A, D), (D, D), (D, D), (D, D)),
    "ConsentService/Revoke": ((A, N), (A, N), (A, N), (D, D), (D, D), (D, D)),
    # Only the patient (or their proxy) confirms a consent staff proposed for them.
    "ConsentService/Confirm": ((D, D), (D, D), (A, N), (D, D), (D, D), (D, D)),
    "ConsentService/Get": ((A, N), (A, N), (A, N), (A, A), (A, A), (D, D)),
    "ConsentService/ListForPatient": ((A, F), (A, F), (A, D), (A, A), (A, A), (D, D)),
    "ConsentService/GetHistory": ((A, N), (A, N), (A, N), (A, A), (A, A), (D, D)),
    "ConsentService/Check": ((A, D), (A, D), (A, D), (A, A), (D, D), (D, D)),
    # Only providers record accesses; the agent is the caller whatever the request says.
    "AccessLogService/Record": ((A, A), (A, A), (D, D), (D, D), (D, D), (D, D)),
    "AccessLogService/Get": ((A, N), (A, N), (A, N), (A, A), (A, A), (D, D)),
    "AccessLogService/Search": ((A, F), (A, F), (A, F), (A, A), (A, A), (D, D)),
    # Checkpoints and consistency proofs are about the whole log, not a target: own == other.
    "AccessLogService/GetCheckpoint": ((A, A), (A, A), (A, A), (A, A), (A, A), (D, D)),
    "AccessLogService/GetInclusionProof": ((A, N), (A, N), (A, N), (A, A), (A, A), (D, D)),
    "AccessLogService/GetConsistencyProof": ((A, A), (A, A), (A, A), (A, A), (A, A), (D, D)),
    "AccessLogService/Watch": ((A, F), (D, D), (D, D), (A, A), (A, A), (D, D)),
    # Compliance: officers and admins see every organisation, providers their own (the other organisation's
    # events are left out, never refused); patients use AccessLogService. ListFlags: *own*/*other* is whether
    # the organisation's events were examined for the caller (clinicians may not read flags about colleagues).
    "ComplianceService/ListFlags": ((A, F), (D, D), (D, D), (A, A), (A, A), (D, D)),
    "ComplianceService/Search": ((A, F), (A, F), (D, D), (A, A), (A, A), (D, D)),
    "ComplianceService/Aggregate": ((A, F), (A, F), (D, D), (A, A), (A, A), (D, D)),
    "ComplianceService/Export": ((A, F), (A, F), (D, D), (A, A), (A, A), (D, D)),
    # Break-glass (issue 15). Own: hospital-a's clinician's declaration for pt-1001; other: hospital-b's for
    # pt-1002. Only clinicians declare (for any patient: it is an emergency) and record access under their own
    # declaration; only compliance officers review; the contract scopes reads like consents.
    "BreakGlassService/Declare": ((D, D), (A, A), (D, D), (D, D), (D, D), (D, D)),
    "BreakGlassService/RecordAccess": ((D, D), (A, A), (D, D), (D, D), (D, D), (D, D)),
    "BreakGlassService/Get": ((A, N), (A, N), (A, N), (A, A), (A, A), (D, D)),
    "BreakGlassService/ListForPatient": ((A, F), (A, F), (A, D), (A, A), (A, A), (D, D)),
    "BreakGlassService/ListActive": ((A, F), (A, F), (D, D), (A, A), (A, A), (D, D)),
    "BreakGlassService/ListForReview": ((D, D), (D, D), (D, D), (A, A), (A, A), (D, D)),
    "BreakGlassService/Review": ((D, D), (D, D), (D, D), (A, A), (D, D), (D, D)),
    # FHIR interchange (issue 15): an import is a Grant (staff name only their own organisation as recipient),
    # exports read like Get and Search.
    "FhirService/ImportConsent": ((A, D), (A, D), (A, D), (D, D), (D, D), (D, D)),
    "FhirService/ExportConsent": ((A, N), (A, N), (A, N), (A, A), (A, A), (D, D)),
    "FhirService/ExportAuditEvents": ((A, F), (A, F), (A, F), (A, A), (A, A), (D, D)),
}


def _build() -> dict[tuple[str, str, str], Outcome]:
    table: dict[tuple[str, str, str], Outcome] = {}
    for short, row in _ROWS.items():
        if len(row) != len(PERSONAS):
            raise ValueError(f"matrix row {short} has {len(row)} columns; expected {len(PERSONAS)}")
        method = f"/ciphercare.v1.{short}"
        for persona, outcomes in zip(PERSONAS, row, strict=True):
            for target, outcome in zip(TARGETS, outcomes, strict=True):
                table[(method, persona, target)] = outcome
    missing = set(METHODS) - {m for m, _, _ in table}
    if missing:
        raise ValueError(f"matrix has no row for {sorted(missing)}")
    return table


#: (full method name, persona, target) -> expected :class:`Outcome`. Read-only.
EXPECTED: Mapping[tuple[str, str, str], Outcome] = MappingProxyType(_build())


def expected(method: str, persona: str, target: str) -> Outcome:
    """The expected outcome; raises :class:`KeyError` for a combination the matrix does not cover."""
    return EXPECTED[(method, persona, target)]


def persona_roles(persona: str) -> frozenset[str]:
    """The ciphercare roles a persona's token carries (none for :data:`NO_ROLE`)."""
    if persona not in PERSONAS:
        raise KeyError(persona)
    return frozenset() if persona == NO_ROLE else frozenset({persona})


def inconsistencies_with_rules() -> list[str]:
    """Where the matrix and the role table disagree (empty when they are consistent).

    A persona whose roles the role table refuses for a method must be ``DENIED``
    for both targets; a persona it admits must not be ``DENIED`` for its own
    target (a role admitted to a method can use it on its own data).
    """
    problems: list[str] = []
    for method in METHODS:
        rule = RULES.get(method)
        if rule is None:
            problems.append(f"{method} is in the matrix but not in the role table")
            continue
        for persona in PERSONAS:
            own, other = EXPECTED[(method, persona, "own")], EXPECTED[(method, persona, "other")]
            if not rule.allows(persona_roles(persona)):
                if (own, other) != (D, D):
                    problems.append(f"{method} {persona}: role table denies, matrix says {own}/{other}")
            elif own is D:
                problems.append(f"{method} {persona}: role table allows, matrix denies the own target")
    return problems


def markdown_table() -> str:
    """The matrix as a Markdown table (``own / other`` per cell), for docs/IDENTITY.md."""
    head = "| RPC | " + " | ".join(PERSONAS) + " |"
    rule = "|---|" + "---|" * len(PERSONAS)
    lines = [head, rule]
    for method in METHODS:
        cells = [f"{EXPECTED[(method, p, 'own')]} / {EXPECTED[(method, p, 'other')]}" for p in PERSONAS]
        lines.append(f"| {method.rsplit('.', 1)[-1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
