"""Consent and access-log records: plain dataclasses with strict validation.

Everything that reaches the ledger passes through a ``from_dict`` here. Only
codes, pseudonyms, org ids, hashes and times are accepted (no PHI on chain):
every string field is matched against a code table or a narrow pattern, unknown
fields are refused, floats are refused, lists and nesting are bounded. ``to_dict``
gives the canonical dict (all keys present, ``None`` for absent values) that
:mod:`ciphercare.consent.canonical` serialises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from . import codes
from .errors import ValidationError

# --- Limits and patterns ----------------------------------------------------------

MAX_JSON_BYTES = 64 * 1024
MAX_PROVISION_DEPTH = 8
MAX_PROVISIONS_PER_LEVEL = 16
MAX_PROVISIONS_TOTAL = 64
MAX_ACTORS = 16
MAX_ROLES = 8

PID_RE = re.compile(r"^[A-Za-z0-9._-]{3,64}$")
#: Lower-case org id, parts joined by '-' or '_' (maps to an MSP id, see caller.msp_id_for_org).
ORG_RE = re.compile(r"^(?=.{1,63}$)[a-z0-9]+(?:[-_][a-z0-9]+)*$")
#: An IdP subject (Keycloak ``sub`` is a UUID); no '@' so e-mail addresses never land on chain.
SUBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{0,128}$")
#: A service / reporting-system name, e.g. "scoring-service", "hospital-a/ehr", "ciphercare/ConsentService".
OBSERVER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$")
#: A short code-like reason ("consent-deny", "no-consent", "context-invalid") -- never prose.
OUTCOME_DESC_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._:-]{0,63})?$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CONSENT_ID_RE = re.compile(r"^cns-[0-9a-f]{32}$")
EVENT_ID_RE = re.compile(r"^ae-[0-9a-f]{32}$")
BREAKGLASS_ID_RE = re.compile(r"^bg-[0-9a-f]{32}$")
TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:\d{2})$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._:/~-]{1,40}$")


# --- Low-level validators --------------------------------------------------------------


def shown(value: Any) -> str:
    """Describe a rejected value without echoing anything that might be free text."""
    if isinstance(value, str):
        if _TOKEN_RE.match(value):
            return repr(value)
        return f"a {len(value)}-character string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float (floats are not allowed)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _fields(data: Any, path: str, required: Iterable[str], optional: Iterable[str] = ()) -> dict[str, Any]:
    """Check ``data`` is an object with exactly the allowed keys; return it."""
    if not isinstance(data, dict):
        raise ValidationError(f"{path}: expected an object, got {shown(data)}")
    req = set(required)
    allowed_keys = req | set(optional)
    unknown = sorted(k for k in data if k not in allowed_keys)
    if unknown:
        names = ", ".join(repr(k) if _TOKEN_RE.match(k) else "<non-code key>" for k in unknown[:5])
        raise ValidationError(f"{path}: unknown field(s) {names}; allowed: {', '.join(sorted(allowed_keys))}")
    missing = sorted(req - set(data))
    if missing:
        raise ValidationError(f"{path}: missing required field(s) {', '.join(missing)}")
    return data


def _string(value: Any, path: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{path}: expected {what}, got {shown(value)}")
    if not pattern.match(value):
        raise ValidationError(f"{path}: {shown(value)} is not {what}")
    return value


def _optional(value: Any, path: str, pattern: re.Pattern[str], what: str) -> str | None:
    if value is None:
        return None
    return _string(value, path, pattern, what)


def _integer(value: Any, path: str, minimum: int) -> int:
    if type(value) is not int:
        raise ValidationError(f"{path}: expected an integer, got {shown(value)}")
    if value < minimum:
        raise ValidationError(f"{path}: must be >= {minimum}")
    return value


def code(value: Any, path: str, table: Mapping[str, Any] | frozenset[str], what: str) -> str:
    """Validate one code against a code table."""
    if not isinstance(value, str):
        raise ValidationError(f"{path}: expected {what} code, got {shown(value)}")
    if value not in table:
        raise ValidationError(f"{path}: {shown(value)} is not {what} code; allowed: {codes.allowed(table)}")
    return value


def _code_list(
    value: Any,
    path: str,
    table: Mapping[str, Any] | frozenset[str],
    what: str,
    *,
    non_empty: bool,
) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValidationError(f"{path}: expected a list of {what} codes, got {shown(value)}")
    if non_empty and not value:
        raise ValidationError(f"{path}: at least one {what} code is required")
    if len(value) > len(table):
        raise ValidationError(f"{path}: at most {len(table)} codes")
    out = tuple(code(item, f"{path}[{i}]", table, what) for i, item in enumerate(value))
    if len(set(out)) != len(out):
        raise ValidationError(f"{path}: duplicate codes")
    return out


def _string_list(
    value: Any, path: str, pattern: re.Pattern[str], what: str, max_items: int
) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValidationError(f"{path}: expected a list, got {shown(value)}")
    if len(value) > max_items:
        raise ValidationError(f"{path}: at most {max_items} items")
    out = tuple(_string(item, f"{path}[{i}]", pattern, what) for i, item in enumerate(value))
    if len(set(out)) != len(out):
        raise ValidationError(f"{path}: duplicate items")
    return out


def pid(value: Any, path: str = "pid") -> str:
    """Validate a patient pseudonym."""
    return _string(value, path, PID_RE, "a patient pseudonym (3-64 of A-Z a-z 0-9 . _ -)")


def org(value: Any, path: str = "org") -> str:
    """Validate an organisation id."""
    return _string(value, path, ORG_RE, "an organisation id (lower-case a-z 0-9 parts joined by - or _)")


def sha256_hex(value: Any, path: str) -> str:
    """Validate a lower-case hex SHA-256 digest."""
    return _string(value, path, SHA256_RE, "a lower-case hex SHA-256 digest (64 characters)")


def consent_id(value: Any, path: str = "consent_id") -> str:
    """Validate a consent id (``cns-`` + 32 hex)."""
    return _string(value, path, CONSENT_ID_RE, "a consent id (cns- followed by 32 lower-case hex)")


def event_id(value: Any, path: str = "event_id") -> str:
    """Validate an access-event id (``ae-`` + 32 hex)."""
    return _string(value, path, EVENT_ID_RE, "an access event id (ae- followed by 32 lower-case hex)")


def parse_time(value: Any, path: str) -> datetime:
    """Parse a strict ISO-8601 timestamp with a timezone; return it in UTC."""
    if not isinstance(value, str):
        raise ValidationError(f"{path}: expected an ISO-8601 timestamp, got {shown(value)}")
    if not TIME_RE.match(value):
        raise ValidationError(
            f"{path}: {shown(value)} is not an ISO-8601 timestamp with timezone "
            "(YYYY-MM-DDTHH:MM:SS[.ffffff]Z)"
        )
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{path}: {shown(value)} is not a valid date and time") from None
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """The one text form of a time on chain: UTC, ``Z``, fraction only when non-zero."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    value = value.astimezone(UTC)
    # Not strftime: its %Y drops the zero padding of years below 1000 (RFC 3339 needs 4 digits).
    text = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    micros = value.microsecond
    if micros == 0:
        return text + "Z"
    if micros % 1000 == 0:
        return f"{text}.{micros // 1000:03d}Z"
    return f"{text}.{micros:06d}Z"


def _norm_time(value: Any, path: str) -> str:
    return format_time(parse_time(value, path))


def _optional_time(value: Any, path: str) -> str | None:
    return None if value is None else _norm_time(value, path)


def loads_object(text: str | bytes, what: str = "argument") -> dict[str, Any]:
    """Parse a JSON argument strictly: an object, no duplicate keys, no floats/NaN, bounded size."""
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if len(raw) > MAX_JSON_BYTES:
        raise ValidationError(f"{what}: larger than {MAX_JSON_BYTES} bytes")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, val in pairs:
            if key in out:
                raise ValidationError(f"{what}: duplicate key {shown(key)}")
            out[key] = val
        return out

    def no_float(_: str) -> Any:
        raise ValidationError(f"{what}: floats are not allowed in canonical JSON")

    def no_constant(_: str) -> Any:
        raise ValidationError(f"{what}: NaN and Infinity are not JSON")

    try:
        value = json.loads(
            raw, object_pairs_hook=no_duplicates, parse_float=no_float, parse_constant=no_constant
        )
    except ValidationError:
        raise
    except (ValueError, RecursionError):
        raise ValidationError(f"{what}: not valid JSON") from None
    if not isinstance(value, dict):
        raise ValidationError(f"{what}: expected a JSON object, got {shown(value)}")
    return value


# --- Shared parts -----------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A FHIR Period on chain: ``start`` inclusive, ``end`` exclusive, both UTC text or None."""

    start: str | None
    end: str | None

    @classmethod
    def from_dict(cls, data: Any, path: str, *, require_start: bool) -> Period:
        if require_start:  # a consent's root period: start required, end optional (open-ended)
            d = _fields(data, path, ("start",), ("end",))
        else:  # a nested provision's period: either bound may be missing
            d = _fields(data, path, (), ("start", "end"))
        start = _optional_time(d.get("start"), f"{path}.start")
        end = _optional_time(d.get("end"), f"{path}.end")
        if require_start and start is None:
            raise ValidationError(f"{path}.start: a consent period needs a start time")
        if start is None and end is None:
            raise ValidationError(f"{path}: a period needs a start or an end")
        if start is not None and end is not None and parse_time(end, "end") <= parse_time(start, "start"):
            raise ValidationError(f"{path}: end must be after start")
        return cls(start=start, end=end)

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end}

    @cached_property
    def _bounds(self) -> tuple[datetime | None, datetime | None]:
        start = None if self.start is None else parse_time(self.start, "start")
        end = None if self.end is None else parse_time(self.end, "end")
        return start, end

    def relation(self, at: datetime) -> str:
        """``"before"`` (not yet valid), ``"within"`` or ``"after"`` (expired) for instant ``at``."""
        start, end = self._bounds
        if start is not None and at < start:
            return "before"
        if end is not None and at >= end:
            return "after"
        return "within"


@dataclass(frozen=True)
class ActorRef:
    """Who recorded or revoked a consent, from the caller's certificate."""

    subject: str
    org: str
    roles: tuple[str, ...]

    @classmethod
    def from_dict(cls, data: Any, path: str) -> ActorRef:
        d = _fields(data, path, ("subject", "org", "roles"))
        roles = _code_list(d["roles"], f"{path}.roles", codes.ROLES, "a role", non_empty=False)
        return cls(
            subject=_string(d["subject"], f"{path}.subject", SUBJECT_RE, "a subject id"),
            org=org(d["org"], f"{path}.org"),
            roles=tuple(sorted(roles)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "org": self.org, "roles": list(self.roles)}


# --- Consent ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentProvision:
    """A nested FHIR Consent.provision: refines its parent where all its constraints match.

    Empty lists and a missing period inherit from the parent (no further constraint).
    """

    type: str
    purposes: tuple[str, ...] = ()
    data_classes: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()
    period: Period | None = None
    provisions: tuple[ConsentProvision, ...] = ()

    @classmethod
    def from_dict(
        cls, data: Any, path: str = "provision", *, depth: int = 1, budget: list[int] | None = None
    ) -> ConsentProvision:
        if depth > MAX_PROVISION_DEPTH:
            raise ValidationError(f"{path}: provisions nest deeper than {MAX_PROVISION_DEPTH} levels")
        budget = budget if budget is not None else [MAX_PROVISIONS_TOTAL]
        budget[0] -= 1
        if budget[0] < 0:
            raise ValidationError(f"{path}: more than {MAX_PROVISIONS_TOTAL} provisions in one consent")
        d = _fields(data, path, ("type",), ("purposes", "data_classes", "actors", "period", "provisions"))
        period = d.get("period")
        return cls(
            type=code(d["type"], f"{path}.type", codes.DECISIONS, "a provision type (permit|deny)"),
            purposes=_code_list(
                d.get("purposes", []),
                f"{path}.purposes",
                codes.PURPOSES_OF_USE,
                "a v3 ActReason purpose-of-use",
                non_empty=False,
            ),
            data_classes=_code_list(
                d.get("data_classes", []),
                f"{path}.data_classes",
                codes.DATA_CLASSES,
                "a FHIR resource-type data class",
                non_empty=False,
            ),
            actors=_string_list(
                d.get("actors", []), f"{path}.actors", ORG_RE, "an organisation id", MAX_ACTORS
            ),
            period=None
            if period is None
            else Period.from_dict(period, f"{path}.period", require_start=False),
            provisions=parse_provisions(d.get("provisions", []), f"{path}.provisions", depth + 1, budget),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "purposes": list(self.purposes),
            "data_classes": list(self.data_classes),
            "actors": list(self.actors),
            "period": None if self.period is None else self.period.to_dict(),
            "provisions": [p.to_dict() for p in self.provisions],
        }


def parse_provisions(
    value: Any, path: str, depth: int = 1, budget: list[int] | None = None
) -> tuple[ConsentProvision, ...]:
    """Parse a bounded list of nested provisions (``depth`` of its members, 1 = directly under the root)."""
    if not isinstance(value, list):
        raise ValidationError(f"{path}: expected a list of provisions, got {shown(value)}")
    if len(value) > MAX_PROVISIONS_PER_LEVEL:
        raise ValidationError(f"{path}: at most {MAX_PROVISIONS_PER_LEVEL} provisions per level")
    if value and depth > MAX_PROVISION_DEPTH:
        raise ValidationError(f"{path}: provisions nest deeper than {MAX_PROVISION_DEPTH} levels")
    budget = budget if budget is not None else [MAX_PROVISIONS_TOTAL]
    return tuple(
        ConsentProvision.from_dict(item, f"{path}[{i}]", depth=depth, budget=budget)
        for i, item in enumerate(value)
    )


_PURPOSE_WHAT = "a v3 ActReason purpose-of-use"
_DATA_CLASS_WHAT = "a FHIR resource-type data class"


@dataclass(frozen=True)
class ConsentGrant:
    """The input of ``consent:Grant``: the consent's scope, without anything the ledger assigns."""

    pid: str
    grantee_org: str
    decision: str
    purposes: tuple[str, ...]
    data_classes: tuple[str, ...]
    period: Period
    provisions: tuple[ConsentProvision, ...]
    document_sha256: str
    #: SHA-256 of the evidence of the patient's agreement (the off-chain FHIR Consent.source[x]);
    #: required when staff record a consent on a patient's behalf.
    evidence_sha256: str | None = None

    FIELDS = ("pid", "grantee_org", "decision", "purposes", "data_classes", "period", "document_sha256")

    @classmethod
    def from_dict(cls, data: Any, path: str = "consent") -> ConsentGrant:
        d = _fields(data, path, cls.FIELDS, ("provisions", "evidence_sha256"))
        evidence = d.get("evidence_sha256")
        return cls(
            pid=pid(d["pid"], f"{path}.pid"),
            grantee_org=org(d["grantee_org"], f"{path}.grantee_org"),
            decision=code(
                d["decision"], f"{path}.decision", codes.DECISIONS, "a consent decision (permit|deny)"
            ),
            purposes=_code_list(
                d["purposes"], f"{path}.purposes", codes.PURPOSES_OF_USE, _PURPOSE_WHAT, non_empty=True
            ),
            data_classes=_code_list(
                d["data_classes"],
                f"{path}.data_classes",
                codes.DATA_CLASSES,
                _DATA_CLASS_WHAT,
                non_empty=True,
            ),
            period=Period.from_dict(d["period"], f"{path}.period", require_start=True),
            provisions=parse_provisions(d.get("provisions", []), f"{path}.provisions"),
            document_sha256=sha256_hex(d["document_sha256"], f"{path}.document_sha256"),
            evidence_sha256=None if evidence is None else sha256_hex(evidence, f"{path}.evidence_sha256"),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "pid": self.pid,
            "grantee_org": self.grantee_org,
            "decision": self.decision,
            "purposes": list(self.purposes),
            "data_classes": list(self.data_classes),
            "period": self.period.to_dict(),
            "provisions": [p.to_dict() for p in self.provisions],
            "document_sha256": self.document_sha256,
        }
        if self.evidence_sha256 is not None:
            out["evidence_sha256"] = self.evidence_sha256
        return out


@dataclass(frozen=True)
class ConsentRecord:
    """One version of a consent as stored in world state (FHIR Consent, codes and hashes only)."""

    id: str
    version: int
    pid: str
    grantee_org: str
    decision: str
    purposes: tuple[str, ...]
    data_classes: tuple[str, ...]
    period: Period
    provisions: tuple[ConsentProvision, ...]
    status: str
    document_sha256: str
    recorded_at: str
    recorded_by: ActorRef
    revoked_at: str | None = None
    revoked_by: ActorRef | None = None
    revocation_reason: str | None = None
    evidence_sha256: str | None = None
    #: Who the consent speaks for (codes.AUTHORITIES). Records written before this field existed derive it
    #: from ``recorded_by`` (see :func:`derived_authority`).
    authority: str | None = None
    #: When and by whom the patient (or proxy) confirmed a staff-proposed consent.
    confirmed_at: str | None = None
    confirmed_by: ActorRef | None = None

    FIELDS = (
        "id",
        "version",
        "pid",
        "grantee_org",
        "decision",
        "purposes",
        "data_classes",
        "period",
        "provisions",
        "status",
        "document_sha256",
        "recorded_at",
        "recorded_by",
        "revoked_at",
        "revoked_by",
        "revocation_reason",
    )

    @classmethod
    def from_dict(cls, data: Any, path: str = "consent") -> ConsentRecord:
        d = _fields(data, path, cls.FIELDS, ("evidence_sha256", "authority", "confirmed_at", "confirmed_by"))
        grant_fields = {k: d[k] for k in ConsentGrant.FIELDS + ("provisions",)}
        if d.get("evidence_sha256") is not None:
            grant_fields["evidence_sha256"] = d["evidence_sha256"]
        grant = ConsentGrant.from_dict(grant_fields, path)
        status = code(
            d["status"], f"{path}.status", codes.CONSENT_STATUSES, "a consent status (active|inactive|proposed)"
        )
        authority = d.get("authority")
        if authority is not None:
            authority = code(authority, f"{path}.authority", codes.AUTHORITIES, "a consent authority")
        confirmed_by = (
            None
            if d.get("confirmed_by") is None
            else ActorRef.from_dict(d["confirmed_by"], f"{path}.confirmed_by")
        )
        revoked_by = (
            None if d["revoked_by"] is None else ActorRef.from_dict(d["revoked_by"], f"{path}.revoked_by")
        )
        reason = d["revocation_reason"]
        if reason is not None:
            reason = code(
                reason, f"{path}.revocation_reason", codes.REVOCATION_REASONS, "a revocation reason"
            )
        record = cls(
            id=consent_id(d["id"], f"{path}.id"),
            version=_integer(d["version"], f"{path}.version", 1),
            pid=grant.pid,
            grantee_org=grant.grantee_org,
            decision=grant.decision,
            purposes=grant.purposes,
            data_classes=grant.data_classes,
            period=grant.period,
            provisions=grant.provisions,
            status=status,
            document_sha256=grant.document_sha256,
            recorded_at=_norm_time(d["recorded_at"], f"{path}.recorded_at"),
            recorded_by=ActorRef.from_dict(d["recorded_by"], f"{path}.recorded_by"),
            revoked_at=_optional_time(d["revoked_at"], f"{path}.revoked_at"),
            revoked_by=revoked_by,
            revocation_reason=reason,
            evidence_sha256=grant.evidence_sha256,
            authority=authority,
            confirmed_at=_optional_time(d.get("confirmed_at"), f"{path}.confirmed_at"),
            confirmed_by=confirmed_by,
        )
        if (record.confirmed_at is None) != (record.confirmed_by is None):
            raise ValidationError(f"{path}: confirmed_at and confirmed_by go together")
        if record.authority == codes.AUTHORITY_STAFF and record.evidence_sha256 is None:
            raise ValidationError(f"{path}: a staff-recorded consent carries evidence_sha256")
        revoked_parts = (record.revoked_at, record.revoked_by, record.revocation_reason)
        if status == codes.CONSENT_STATUS_INACTIVE and any(p is None for p in revoked_parts):
            raise ValidationError(
                f"{path}: an inactive consent needs revoked_at, revoked_by and revocation_reason"
            )
        if status != codes.CONSENT_STATUS_INACTIVE and any(p is not None for p in revoked_parts):
            raise ValidationError(f"{path}: an {status} consent cannot carry revocation fields")
        return record

    @property
    def effective_authority(self) -> str:
        """:attr:`authority`, or for older records the one :func:`derived_authority` gives."""
        return self.authority or derived_authority(self.recorded_by, self.pid)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "pid": self.pid,
            "grantee_org": self.grantee_org,
            "decision": self.decision,
            "purposes": list(self.purposes),
            "data_classes": list(self.data_classes),
            "period": self.period.to_dict(),
            "provisions": [p.to_dict() for p in self.provisions],
            "status": self.status,
            "document_sha256": self.document_sha256,
            "recorded_at": self.recorded_at,
            "recorded_by": self.recorded_by.to_dict(),
            "revoked_at": self.revoked_at,
            "revoked_by": None if self.revoked_by is None else self.revoked_by.to_dict(),
            "revocation_reason": self.revocation_reason,
            "evidence_sha256": self.evidence_sha256,
            "authority": self.authority,
            "confirmed_at": self.confirmed_at,
            "confirmed_by": None if self.confirmed_by is None else self.confirmed_by.to_dict(),
        }


def derived_authority(recorded_by: ActorRef, pid_: str) -> str:
    """The authority of a record written before ``authority`` was stored: staff unless the recorder had
    only patient-side roles (the contract then required them to be the patient)."""
    roles = set(recorded_by.roles)
    if codes.ROLE_PATIENT in roles and not roles & codes.PROVIDER_ROLES:
        return codes.AUTHORITY_PATIENT
    return codes.AUTHORITY_STAFF


# --- Access events (IHE BALP shaped) ----------------------------------------------------


@dataclass(frozen=True)
class AuditAgent:
    """AuditEvent.agent: always taken from the caller's certificate, never from input."""

    subject: str
    org: str
    roles: tuple[str, ...]
    client: str

    @classmethod
    def from_dict(cls, data: Any, path: str) -> AuditAgent:
        d = _fields(data, path, ("subject", "org", "roles", "client"))
        roles = _code_list(d["roles"], f"{path}.roles", codes.ROLES, "a role", non_empty=False)
        return cls(
            subject=_string(d["subject"], f"{path}.subject", SUBJECT_RE, "a subject id"),
            org=org(d["org"], f"{path}.org"),
            roles=tuple(sorted(roles)),
            client=_string(d["client"], f"{path}.client", CLIENT_ID_RE, "a client id"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "org": self.org, "roles": list(self.roles), "client": self.client}


@dataclass(frozen=True)
class AuditSource:
    """AuditEvent.source: the service that observed the access."""

    observer: str

    @classmethod
    def from_dict(cls, data: Any, path: str) -> AuditSource:
        d = _fields(data, path, ("observer",))
        return cls(
            observer=_string(
                d["observer"],
                f"{path}.observer",
                OBSERVER_RE,
                "a service name (letters, digits, . _ / : -; no spaces)",
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {"observer": self.observer}


@dataclass(frozen=True)
class AuditEntity:
    """AuditEvent.entity: what was touched, as pseudonym, references and hashes only."""

    pid: str | None = None
    consent_id: str | None = None
    model_sha256: str | None = None
    data_classes: tuple[str, ...] = ()
    detail_sha256: str | None = None

    FIELDS = ("pid", "consent_id", "model_sha256", "data_classes", "detail_sha256")

    @classmethod
    def from_dict(cls, data: Any, path: str, *, strict: bool) -> AuditEntity:
        d = _fields(data, path, cls.FIELDS if strict else (), () if strict else cls.FIELDS)
        cid = d.get("consent_id")
        return cls(
            pid=None if d.get("pid") is None else pid(d["pid"], f"{path}.pid"),
            consent_id=None if cid is None else consent_id(cid, f"{path}.consent_id"),
            model_sha256=None
            if d.get("model_sha256") is None
            else sha256_hex(d["model_sha256"], f"{path}.model_sha256"),
            data_classes=_code_list(
                d.get("data_classes", []),
                f"{path}.data_classes",
                codes.DATA_CLASSES,
                _DATA_CLASS_WHAT,
                non_empty=False,
            ),
            detail_sha256=None
            if d.get("detail_sha256") is None
            else sha256_hex(d["detail_sha256"], f"{path}.detail_sha256"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "consent_id": self.consent_id,
            "model_sha256": self.model_sha256,
            "data_classes": list(self.data_classes),
            "detail_sha256": self.detail_sha256,
        }


MAX_REPEAT_COUNT = 1_000_000_000
#: AccessEvent.consent_basis: the contract checked the cited consent, or the event cites none.
CONSENT_BASIS_VERIFIED = "verified-consent"
CONSENT_BASIS_NONE = "no-consent-cited"
CONSENT_BASES = frozenset({CONSENT_BASIS_VERIFIED, CONSENT_BASIS_NONE})


def _repeat_count(value: Any, path: str, outcome: Any) -> int | None:
    if value is None:
        return None
    count = _integer(value, path, 2)
    if count > MAX_REPEAT_COUNT:
        raise ValidationError(f"{path}: at most {MAX_REPEAT_COUNT}")
    if outcome != codes.OUTCOME_DENIED:
        raise ValidationError(f"{path}: only a denied event aggregates repeated refusals")
    return count


@dataclass(frozen=True)
class AccessEventInput:
    """The input of ``accesslog:Record``: everything except id, recorded time and agent."""

    type: str
    subtype: str
    action: str
    outcome: str
    outcome_desc: str
    purpose_of_use: str | None
    source: AuditSource
    entity: AuditEntity
    #: How many identical refusals this one entry stands for (refusal aggregation; None = one).
    repeat_count: int | None = None

    FIELDS = ("type", "subtype", "action", "outcome", "source", "entity")
    OPTIONAL = ("outcome_desc", "purpose_of_use", "repeat_count")

    @classmethod
    def from_dict(cls, data: Any, path: str = "event") -> AccessEventInput:
        if isinstance(data, dict):
            for assigned in ("agent", "id", "recorded"):
                if assigned in data:
                    origin = "the caller's certificate" if assigned == "agent" else "the transaction"
                    raise ValidationError(
                        f"{path}.{assigned}: must not be supplied; it is taken from {origin}"
                    )
        d = _fields(data, path, cls.FIELDS, cls.OPTIONAL)
        return cls._build(d, path, strict_entity=False)

    @classmethod
    def _build(cls, d: dict[str, Any], path: str, *, strict_entity: bool) -> AccessEventInput:
        purpose = d.get("purpose_of_use")
        return cls(
            type=code(
                d["type"], f"{path}.type", codes.AUDIT_EVENT_TYPES, "an AuditEvent type (DICOM/ciphercare)"
            ),
            subtype=code(
                d["subtype"], f"{path}.subtype", codes.AUDIT_EVENT_SUBTYPES, "an AuditEvent subtype"
            ),
            action=code(d["action"], f"{path}.action", codes.AUDIT_ACTIONS, "an AuditEvent action"),
            outcome=code(
                d["outcome"], f"{path}.outcome", codes.AUDIT_OUTCOMES, "an outcome (success|denied|error)"
            ),
            outcome_desc=_string(
                d.get("outcome_desc", ""),
                f"{path}.outcome_desc",
                OUTCOME_DESC_RE,
                "a short code-like reason (letters, digits, . _ : -; no spaces)",
            ),
            purpose_of_use=None
            if purpose is None
            else code(purpose, f"{path}.purpose_of_use", codes.PURPOSES_OF_USE, _PURPOSE_WHAT),
            source=AuditSource.from_dict(d["source"], f"{path}.source"),
            entity=AuditEntity.from_dict(d["entity"], f"{path}.entity", strict=strict_entity),
            repeat_count=_repeat_count(d.get("repeat_count"), f"{path}.repeat_count", d["outcome"]),
        )


@dataclass(frozen=True)
class AccessEvent:
    """One access event as stored (IHE BALP shaped FHIR AuditEvent, no PHI)."""

    id: str
    type: str
    subtype: str
    action: str
    recorded: str
    outcome: str
    outcome_desc: str
    purpose_of_use: str | None
    agent: AuditAgent
    source: AuditSource
    entity: AuditEntity
    repeat_count: int | None = None
    #: CONSENT_BASES; None on events recorded before the contract checked cited consents.
    consent_basis: str | None = None

    FIELDS = (
        "id",
        "type",
        "subtype",
        "action",
        "recorded",
        "outcome",
        "outcome_desc",
        "purpose_of_use",
        "agent",
        "source",
        "entity",
    )

    @classmethod
    def build(
        cls,
        event_id_: str,
        recorded: datetime,
        agent: AuditAgent,
        data: AccessEventInput,
        consent_basis: str | None = None,
    ) -> AccessEvent:
        return cls(
            repeat_count=data.repeat_count,
            consent_basis=consent_basis,
            id=event_id(event_id_, "id"),
            type=data.type,
            subtype=data.subtype,
            action=data.action,
            recorded=format_time(recorded),
            outcome=data.outcome,
            outcome_desc=data.outcome_desc,
            purpose_of_use=data.purpose_of_use,
            agent=agent,
            source=data.source,
            entity=data.entity,
        )

    @classmethod
    def from_dict(cls, data: Any, path: str = "event") -> AccessEvent:
        d = _fields(data, path, cls.FIELDS, ("repeat_count", "consent_basis"))
        body = AccessEventInput._build(d, path, strict_entity=True)
        basis = d.get("consent_basis")
        return cls(
            repeat_count=body.repeat_count,
            consent_basis=None if basis is None else code(basis, f"{path}.consent_basis", CONSENT_BASES,
                                                          "a consent basis"),
            id=event_id(d["id"], f"{path}.id"),
            type=body.type,
            subtype=body.subtype,
            action=body.action,
            recorded=_norm_time(d["recorded"], f"{path}.recorded"),
            outcome=body.outcome,
            outcome_desc=body.outcome_desc,
            purpose_of_use=body.purpose_of_use,
            agent=AuditAgent.from_dict(d["agent"], f"{path}.agent"),
            source=body.source,
            entity=body.entity,
        )

    @property
    def fhir_outcome(self) -> str:
        """FHIR R4 AuditEvent.outcome code (0 / 4 / 8)."""
        return codes.AUDIT_OUTCOMES[self.outcome]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "subtype": self.subtype,
            "action": self.action,
            "recorded": self.recorded,
            "outcome": self.outcome,
            "outcome_desc": self.outcome_desc,
            "purpose_of_use": self.purpose_of_use,
            "agent": self.agent.to_dict(),
            "source": self.source.to_dict(),
            "entity": self.entity.to_dict(),
        }
        if self.repeat_count is not None:
            out["repeat_count"] = self.repeat_count
        if self.consent_basis is not None:
            out["consent_basis"] = self.consent_basis
        return out


# --- Decision ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """The result of a consent check: ``permit``/``deny``, the deciding consent, and why.

    ``reason`` is a generated English sentence (codes and ids only); ``reason_code``
    is its code (codes.DECISION_REASONS), suitable for an access event's ``outcome_desc``.
    """

    decision: str
    consent_id: str | None
    reason: str
    reason_code: str
    #: The break-glass declaration that permitted the access (reason_code "break-glass"), else None.
    breakglass_id: str | None = None

    @property
    def permitted(self) -> bool:
        return self.decision == codes.PERMIT

    @classmethod
    def from_dict(cls, data: Any, path: str = "decision") -> Decision:
        d = _fields(data, path, ("decision", "consent_id", "reason", "reason_code"), ("breakglass_id",))
        if not isinstance(d["reason"], str) or len(d["reason"]) > 512:
            raise ValidationError(f"{path}.reason: expected a string of at most 512 characters")
        cid = d["consent_id"]
        return cls(
            decision=code(d["decision"], f"{path}.decision", codes.DECISIONS, "a decision (permit|deny)"),
            consent_id=None if cid is None else consent_id(cid, f"{path}.consent_id"),
            reason=d["reason"],
            reason_code=code(
                d["reason_code"], f"{path}.reason_code", codes.DECISION_REASONS, "a decision reason"
            ),
            breakglass_id=_optional(d.get("breakglass_id"), f"{path}.breakglass_id", BREAKGLASS_ID_RE,
                                    "a break-glass declaration id"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "decision": self.decision,
            "consent_id": self.consent_id,
            "reason": self.reason,
            "reason_code": self.reason_code,
        }
        if self.breakglass_id is not None:  # only break-glass decisions carry it (other decisions unchanged)
            out["breakglass_id"] = self.breakglass_id
        return out
