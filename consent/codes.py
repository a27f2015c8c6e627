"""Code systems used on the ledger: only codes from these tables are accepted on chain.

Purpose of use is HL7 v3 ActReason (the PurposeOfUse subset FHIR Consent and
AuditEvent use), data classes are FHIR resource types (Consent.provision.class),
access events follow IHE Basic Audit Log Patterns (BALP) on FHIR R4 AuditEvent.
Each table maps code -> display; the ``*_SYSTEM`` constants are the FHIR
``Coding.system`` URIs, so a FHIR export can rebuild full Codings.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# --- Purpose of use ---------------------------------------------------------

PURPOSE_OF_USE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"

PURPOSES_OF_USE: Mapping[str, str] = MappingProxyType(
    {
        "TREAT": "treatment",
        "ETREAT": "Emergency Treatment",
        "HPAYMT": "healthcare payment",
        "HOPERAT": "healthcare operations",
        "HRESCH": "healthcare research",
        "PUBHLTH": "public health",
        "CAREMGT": "care management",
        "CLINTRCH": "clinical trial research",
        "PATRQT": "patient requested",
        "HMARKT": "healthcare marketing",
        "HSYSADMIN": "health system administration",
        "PATADMIN": "patient administration",
        "COVERAGE": "coverage under policy or program",
        "HDIRECT": "directory",
        "HLEGAL": "legal",
        "HTEST": "test health data",
        "BTG": "break the glass",
    }
)

# --- Data classes -----------------------------------------------------------

DATA_CLASS_SYSTEM = "http://hl7.org/fhir/resource-types"

DATA_CLASSES: Mapping[str, str] = MappingProxyType(
    {
        "Patient": "Patient",
        "Condition": "Condition",
        "Observation": "Observation",
        "MedicationRequest": "MedicationRequest",
        "MedicationStatement": "MedicationStatement",
        "Procedure": "Procedure",
        "Encounter": "Encounter",
        "DiagnosticReport": "DiagnosticReport",
        "AllergyIntolerance": "AllergyIntolerance",
        "Immunization": "Immunization",
        "DocumentReference": "DocumentReference",
        "ImagingStudy": "ImagingStudy",
        "RiskAssessment": "RiskAssessment",
        "CarePlan": "CarePlan",
    }
)

# --- Roles (Keycloak realm roles, carried in the creator certificate) ---------

ROLE_PATIENT = "patient"
ROLE_CLINICIAN = "clinician"
ROLE_HOSPITAL = "hospital"
ROLE_COMPLIANCE_OFFICER = "compliance-officer"
ROLE_ADMIN = "admin"

ROLES: frozenset[str] = frozenset(
    {ROLE_PATIENT, ROLE_CLINICIAN, ROLE_HOSPITAL, ROLE_COMPLIANCE_OFFICER, ROLE_ADMIN}
)
#: Roles acting for a care provider organisation.
PROVIDER_ROLES: frozenset[str] = frozenset({ROLE_HOSPITAL, ROLE_CLINICIAN})
#: Roles that may read everything (but write nothing in the consent contract).
OVERSIGHT_ROLES: frozenset[str] = frozenset({ROLE_COMPLIANCE_OFFICER, ROLE_ADMIN})

# --- Consent (FHIR Consent.status, provision.type) ----------------------------

CONSENT_STATUS_ACTIVE = "active"
CONSENT_STATUS_INACTIVE = "inactive"
#: FHIR Consent.status ``proposed``: recorded by staff, in force only once the patient (or proxy) confirms.
CONSENT_STATUS_PROPOSED = "proposed"
CONSENT_STATUSES: frozenset[str] = frozenset(
    {CONSENT_STATUS_ACTIVE, CONSENT_STATUS_INACTIVE, CONSENT_STATUS_PROPOSED}
)

#: Who a consent speaks for: the patient themselves, their proxy, or staff of the recording org.
AUTHORITY_PATIENT = "patient"
AUTHORITY_PROXY = "proxy"
AUTHORITY_STAFF = "staff"
AUTHORITIES: frozenset[str] = frozenset({AUTHORITY_PATIENT, AUTHORITY_PROXY, AUTHORITY_STAFF})

#: Consent policy (world state key ``policy~consent``; admin-set by ``consent:SetPolicy``): when a
#: staff-recorded PERMIT takes effect. ``confirm`` (default): once the patient or proxy confirms;
#: ``immediate``: at once. Staff-recorded DENYs always take effect at once.
STAFF_PERMIT_CONFIRM = "confirm"
STAFF_PERMIT_IMMEDIATE = "immediate"
STAFF_PERMIT_MODES: frozenset[str] = frozenset({STAFF_PERMIT_CONFIRM, STAFF_PERMIT_IMMEDIATE})

PERMIT = "permit"
DENY = "deny"
DECISIONS: frozenset[str] = frozenset({PERMIT, DENY})

#: Why a consent was revoked (ciphercare code system; never free text on chain).
REVOCATION_REASON_SYSTEM = "https://ciphercare.dev/fhir/CodeSystem/consent-revocation-reason"
REVOCATION_REASONS: Mapping[str, str] = MappingProxyType(
    {
        "patient-request": "Revoked at the patient's request",
        "declined-by-patient": "The patient (or proxy) declined a consent staff proposed",
        "withdrawn-by-organization": "Withdrawn by the recording or grantee organisation",
        "superseded": "Replaced by a newer consent",
        "entered-in-error": "Recorded in error",
        "care-ended": "Care relationship ended",
        "legal": "Legal or regulatory requirement",
    }
)

#: Codes a Decision's ``reason_code`` takes (ciphercare code system).
DECISION_REASON_SYSTEM = "https://ciphercare.dev/fhir/CodeSystem/consent-decision-reason"
DECISION_REASONS: Mapping[str, str] = MappingProxyType(
    {
        "consent-permit": "An active consent permits the access",
        "consent-deny": "An active consent denies the access",
        "no-consent": "No active consent covers the access (default deny)",
        "consent-expired": "The consent covering the access has expired",
        "consent-not-yet-valid": "The consent covering the access is not yet in force",
        "consent-revoked": "The consent covering the access was revoked",
        "consent-unconfirmed": "The consent covering the access awaits the patient's confirmation",
        "break-glass": "No consent permits it; the clinician's active break-glass declaration does",
    }
)

# --- Break-glass (consent/contracts/breakglass.py) ----------------------------------------

#: Purposes a break-glass declaration (and the access it permits) may carry.
BREAKGLASS_PURPOSES: frozenset[str] = frozenset({"ETREAT", "BTG"})

#: Why a clinician broke the glass (ciphercare code system; the free text stays off-chain).
BREAKGLASS_REASON_SYSTEM = "https://ciphercare.dev/fhir/CodeSystem/breakglass-reason"
BREAKGLASS_REASONS: Mapping[str, str] = MappingProxyType(
    {
        "unconscious-patient": "The patient is unconscious or cannot communicate",
        "life-threatening": "A life-threatening emergency",
        "urgent-treatment": "Urgent treatment that cannot wait for consent",
        "patient-incapacitated": "The patient lacks capacity and no representative is reachable",
        "consent-service-unavailable": "Consent cannot be obtained or checked in time",
        "other-emergency": "Another emergency, explained in the free text",
    }
)

BREAKGLASS_PENDING = "pending"
BREAKGLASS_ACKNOWLEDGED = "acknowledged"
BREAKGLASS_ESCALATED = "escalated"
#: A compliance officer's review outcomes, and the review states a declaration can be in.
BREAKGLASS_REVIEW_OUTCOMES: frozenset[str] = frozenset({BREAKGLASS_ACKNOWLEDGED, BREAKGLASS_ESCALATED})
BREAKGLASS_REVIEW_STATUSES: frozenset[str] = BREAKGLASS_REVIEW_OUTCOMES | {BREAKGLASS_PENDING}

# --- AuditEvent (IHE BALP on FHIR R4) ------------------------------------------

DICOM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
CIPHERCARE_AUDIT_TYPE_SYSTEM = "https://ciphercare.dev/fhir/CodeSystem/audit-event-type"
RESTFUL_INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
CIPHERCARE_AUDIT_SUBTYPE_SYSTEM = "https://ciphercare.dev/fhir/CodeSystem/audit-event-subtype"
AUDIT_ACTION_SYSTEM = "http://hl7.org/fhir/audit-event-action"
AUDIT_OUTCOME_SYSTEM = "http://hl7.org/fhir/audit-event-outcome"

#: AuditEvent.type code -> (system, display).
AUDIT_EVENT_TYPES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "110110": (DICOM_SYSTEM, "Patient Record"),
        "110112": (DICOM_SYSTEM, "Query"),
        "110106": (DICOM_SYSTEM, "Export"),
        "110107": (DICOM_SYSTEM, "Import"),
        "risk-scoring": (CIPHERCARE_AUDIT_TYPE_SYSTEM, "Encrypted risk scoring"),
    }
)

#: AuditEvent.subtype code -> (system, display).
AUDIT_EVENT_SUBTYPES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "read": (RESTFUL_INTERACTION_SYSTEM, "read"),
        "search-type": (RESTFUL_INTERACTION_SYSTEM, "search type"),
        "create": (RESTFUL_INTERACTION_SYSTEM, "create"),
        "update": (RESTFUL_INTERACTION_SYSTEM, "update"),
        "delete": (RESTFUL_INTERACTION_SYSTEM, "delete"),
        "score": (CIPHERCARE_AUDIT_SUBTYPE_SYSTEM, "score"),
    }
)

#: AuditEvent.action (FHIR R4 audit-event-action).
AUDIT_ACTIONS: Mapping[str, str] = MappingProxyType(
    {"C": "Create", "R": "Read/View/Print", "U": "Update", "D": "Delete", "E": "Execute"}
)

OUTCOME_SUCCESS = "success"
OUTCOME_DENIED = "denied"
OUTCOME_ERROR = "error"
#: ciphercare outcome -> FHIR R4 AuditEvent.outcome code (0 success, 4 minor failure, 8 serious failure).
AUDIT_OUTCOMES: Mapping[str, str] = MappingProxyType(
    {OUTCOME_SUCCESS: "0", OUTCOME_DENIED: "4", OUTCOME_ERROR: "8"}
)


def allowed(table: Mapping[str, object] | frozenset[str]) -> str:
    """The sorted, comma-joined codes of a table, for error messages."""
    return ", ".join(sorted(table))
