"""The ``breakglass`` contract: emergency access without consent, declared, time-limited and reviewed.

A clinician declares break-glass for one patient with a reason code (:data:`codes.BREAKGLASS_REASONS`),
a purpose (ETREAT or BTG) and the SHA-256 of the free-text justification, which lives off-chain (sealed
under the patient's key); the ledger never sees the text. The declaration is active from the transaction
time for ``duration_s`` seconds (the service passes its ``breakglass_duration_s`` setting; the contract
bounds it). While it is active, ``consent:Check`` permits that clinician (the certificate's subject, at
their own organisation) ETREAT/BTG access to that patient with reason code ``break-glass``
(:func:`active_declaration`). A compliance officer reviews every declaration: ``acknowledged`` (justified)
or ``escalated`` (referred for investigation); an escalated declaration may later be acknowledged, an
acknowledged one is final. Every write emits an event and keeps the previous version in the key history.

Written against the Fabric contract API like the consent contract: string arguments, canonical JSON,
the actor from the creator certificate, validation before the first ``put_state``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from fabric_chaincode_python.fabric_contract_api.contractapi import Contract, TransactionContext

from .. import canonical, codes, model
from ..caller import Caller, caller_from_ctx
from ..errors import ValidationError, already_exists, failed_precondition, not_found, permission_denied

BREAKGLASS_CONTRACT = "breakglass"
BREAKGLASS_KEY = "breakglass"
BREAKGLASS_BY_PID_KEY = "breakglass~pid"
EVENT_BREAKGLASS_DECLARED = "BreakGlassDeclared"
EVENT_BREAKGLASS_REVIEWED = "BreakGlassReviewed"

#: Bounds of a declaration's duration (seconds); the service's setting must lie within them.
MIN_DURATION_S = 60
MAX_DURATION_S = 24 * 3600

_INDEX_VALUE = b"\x00"
_ID_PREFIX = "bg-"


def declaration_id(value: Any, path: str = "declaration_id") -> str:
    """A declaration id: ``bg-`` and 32 lower-case hex characters."""
    if not isinstance(value, str) or len(value) != 35 or not value.startswith(_ID_PREFIX):
        raise ValidationError(f"{path}: {model.shown(value)} is not a break-glass declaration id (bg-<32 hex>)")
    tail = value[3:]
    if any(c not in "0123456789abcdef" for c in tail):
        raise ValidationError(f"{path}: {model.shown(value)} is not a break-glass declaration id (bg-<32 hex>)")
    return value


@dataclasses.dataclass(frozen=True)
class Review:
    """A compliance officer's review of a declaration."""

    outcome: str
    reviewed_by: model.ActorRef
    reviewed_at: str
    note_sha256: str | None

    @classmethod
    def from_dict(cls, data: Any, path: str) -> Review:
        if not isinstance(data, dict) or set(data) != {"outcome", "reviewed_by", "reviewed_at", "note_sha256"}:
            raise ValidationError(f"{path}: expected outcome, reviewed_by, reviewed_at, note_sha256")
        note = data["note_sha256"]
        return cls(
            outcome=model.code(data["outcome"], f"{path}.outcome", codes.BREAKGLASS_REVIEW_OUTCOMES, "a review"),
            reviewed_by=model.ActorRef.from_dict(data["reviewed_by"], f"{path}.reviewed_by"),
            reviewed_at=model.format_time(model.parse_time(data["reviewed_at"], f"{path}.reviewed_at")),
            note_sha256=None if note is None else model.sha256_hex(note, f"{path}.note_sha256"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reviewed_by": self.reviewed_by.to_dict(),
            "reviewed_at": self.reviewed_at,
            "note_sha256": self.note_sha256,
        }


@dataclasses.dataclass(frozen=True)
class Declaration:
    """One version of a break-glass declaration as stored in world state (codes, ids, hashes, times)."""

    id: str
    version: int
    pid: str
    purpose: str
    reason_code: str
    text_sha256: str
    declared_at: str
    expires_at: str
    declared_by: model.ActorRef
    review_status: str
    reviews: tuple[Review, ...] = ()

    FIELDS = frozenset({"id", "version", "pid", "purpose", "reason_code", "text_sha256", "declared_at",
                        "expires_at", "declared_by", "review_status", "reviews"})

    @classmethod
    def from_dict(cls, data: Any, path: str = "declaration") -> Declaration:
        if not isinstance(data, dict) or set(data) != cls.FIELDS:
            raise ValidationError(f"{path}: not a stored break-glass declaration")
        reviews = data["reviews"]
        if not isinstance(reviews, list) or len(reviews) > 8:
            raise ValidationError(f"{path}.reviews: expected a list of at most 8 reviews")
        return cls(
            id=declaration_id(data["id"], f"{path}.id"),
            version=_version(data["version"], f"{path}.version"),
            pid=model.pid(data["pid"], f"{path}.pid"),
            purpose=model.code(data["purpose"], f"{path}.purpose", codes.BREAKGLASS_PURPOSES, "a purpose"),
            reason_code=model.code(data["reason_code"], f"{path}.reason_code", codes.BREAKGLASS_REASONS, "a reason"),
            text_sha256=model.sha256_hex(data["text_sha256"], f"{path}.text_sha256"),
            declared_at=model.format_time(model.parse_time(data["declared_at"], f"{path}.declared_at")),
            expires_at=model.format_time(model.parse_time(data["expires_at"], f"{path}.expires_at")),
            declared_by=model.ActorRef.from_dict(data["declared_by"], f"{path}.declared_by"),
            review_status=model.code(data["review_status"], f"{path}.review_status",
                                     codes.BREAKGLASS_REVIEW_STATUSES, "a review status"),
            reviews=tuple(Review.from_dict(r, f"{path}.reviews[{i}]") for i, r in enumerate(reviews)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "pid": self.pid,
            "purpose": self.purpose,
            "reason_code": self.reason_code,
            "text_sha256": self.text_sha256,
            "declared_at": self.declared_at,
            "expires_at": self.expires_at,
            "declared_by": self.declared_by.to_dict(),
            "review_status": self.review_status,
            "reviews": [r.to_dict() for r in self.reviews],
        }

    def active_at(self, at: datetime) -> bool:
        """Declared at or before ``at`` and not yet expired (end exclusive)."""
        start = model.parse_time(self.declared_at, "declared_at")
        end = model.parse_time(self.expires_at, "expires_at")
        return start <= at < end


def _version(value: Any, path: str) -> int:
    if type(value) is not int or value < 1:
        raise ValidationError(f"{path}: expected a positive integer")
    return value


def _parse(raw: bytes) -> Declaration:
    try:
        return Declaration.from_dict(canonical.loads(raw), "stored declaration")
    except (ValidationError, ValueError) as exc:
        from . import StoredStateError

        raise StoredStateError(f"stored break-glass declaration is malformed: {exc}") from None


def _key(stub: Any, decl_id: str) -> str:
    return str(stub.create_composite_key(BREAKGLASS_KEY, [decl_id]))


async def _load(stub: Any, decl_id: str) -> Declaration | None:
    raw = await stub.get_state(_key(stub, decl_id))
    return _parse(bytes(raw)) if raw else None


async def _for_patient(stub: Any, pid: str) -> list[Declaration]:
    out: list[Declaration] = []
    iterator = await stub.get_state_by_partial_composite_key(BREAKGLASS_BY_PID_KEY, [pid])
    async for kv in iterator:
        _, parts = stub.split_composite_key(kv.key)
        if len(parts) != 2:
            continue
        declaration = await _load(stub, parts[1])
        if declaration is not None:
            out.append(declaration)
    out.sort(key=lambda d: (d.declared_at, d.id))
    return out


async def _all(stub: Any) -> list[Declaration]:
    out: list[Declaration] = []
    iterator = await stub.get_state_by_partial_composite_key(BREAKGLASS_KEY, [])
    async for kv in iterator:
        out.append(_parse(bytes(kv.value)))
    out.sort(key=lambda d: (d.declared_at, d.id))
    return out


async def active_declaration(stub: Any, caller: Caller, pid: str, purpose: str, at: datetime) -> Declaration | None:
    """The caller's declaration for ``pid`` active at ``at`` and at the transaction time, if any.

    Only a clinician's own declaration counts (same subject and organisation), only for a break-glass
    purpose; the earliest-expiring active one is named.
    """
    if not caller.has_role(codes.ROLE_CLINICIAN) or purpose not in codes.BREAKGLASS_PURPOSES:
        return None
    from . import _tx_time

    now = _tx_time(stub)
    found = [
        d for d in await _for_patient(stub, pid)
        if d.declared_by.subject == caller.subject and d.declared_by.org == caller.org
        and d.active_at(at) and d.active_at(now)
    ]
    return min(found, key=lambda d: (d.expires_at, d.id)) if found else None


def _visible(caller: Caller, d: Declaration) -> bool:
    """Oversight sees all; the patient their own; providers their organisation's declarations."""
    if caller.is_oversight:
        return True
    if caller.is_patient and caller.pid == d.pid:
        return True
    return caller.is_provider and caller.org == d.declared_by.org


def _event(d: Declaration) -> bytes:
    latest = d.reviews[-1] if d.reviews else None
    return canonical.dumps({
        "declaration_id": d.id,
        "version": d.version,
        "pid": d.pid,
        "purpose": d.purpose,
        "reason_code": d.reason_code,
        "declared_by": d.declared_by.to_dict(),
        "declared_at": d.declared_at,
        "expires_at": d.expires_at,
        "review_status": d.review_status,
        # Projections mark the off-chain documents referenced (hashes, never the text).
        "text_sha256": d.text_sha256,
        "note_sha256": None if latest is None else latest.note_sha256,
    })


def _declare_input(text: str) -> dict[str, Any]:
    data = model.loads_object(text, "declaration_json")
    allowed = {"pid", "purpose", "reason_code", "text_sha256", "duration_s"}
    unknown = sorted(k for k in data if k not in allowed)
    if unknown:
        raise ValidationError(f"declaration: unknown field(s) {', '.join(map(model.shown, unknown))}")
    missing = sorted(allowed - set(data))
    if missing:
        raise ValidationError(f"declaration: missing required field(s) {', '.join(missing)}")
    duration = data["duration_s"]
    if type(duration) is not int or not MIN_DURATION_S <= duration <= MAX_DURATION_S:
        raise ValidationError(f"declaration.duration_s: expected an integer from {MIN_DURATION_S} to {MAX_DURATION_S}")
    return {
        "pid": model.pid(data["pid"], "declaration.pid"),
        "purpose": model.code(data["purpose"], "declaration.purpose", codes.BREAKGLASS_PURPOSES,
                              "a break-glass purpose (ETREAT|BTG)"),
        "reason_code": model.code(data["reason_code"], "declaration.reason_code", codes.BREAKGLASS_REASONS,
                                  "a break-glass reason"),
        "text_sha256": model.sha256_hex(data["text_sha256"], "declaration.text_sha256"),
        "duration_s": duration,
    }


class BreakGlassContract(Contract):
    """Break-glass declarations: declare (clinicians), read, list, review (compliance officers)."""

    Name = BREAKGLASS_CONTRACT

    def get_evaluate_transactions(self) -> list[str]:
        return ["Get", "ListForPatient", "ListActive", "ListForReview"]

    async def Declare(self, ctx: TransactionContext, declaration_json: str) -> str:
        """Declare break-glass for a patient; the declarer is the caller. Returns the stored declaration."""
        caller = caller_from_ctx(ctx)
        if not caller.has_role(codes.ROLE_CLINICIAN):
            raise permission_denied("only a clinician may declare break-glass")
        data = _declare_input(declaration_json)
        from . import _tx_suffix, _tx_time

        stub = ctx.get_stub()
        now = _tx_time(stub)
        decl_id = _ID_PREFIX + _tx_suffix(stub)
        key = _key(stub, decl_id)
        if await stub.get_state(key):
            raise already_exists(f"break-glass declaration {decl_id} already exists")
        declaration = Declaration(
            id=decl_id,
            version=1,
            pid=data["pid"],
            purpose=data["purpose"],
            reason_code=data["reason_code"],
            text_sha256=data["text_sha256"],
            declared_at=model.format_time(now),
            expires_at=model.format_time(now + timedelta(seconds=data["duration_s"])),
            declared_by=caller.actor_ref(),
            review_status=codes.BREAKGLASS_PENDING,
        )
        body = canonical.dumps(declaration.to_dict())
        await stub.put_state(key, body)
        await stub.put_state(stub.create_composite_key(BREAKGLASS_BY_PID_KEY, [declaration.pid, decl_id]),
                             _INDEX_VALUE)
        stub.set_event(EVENT_BREAKGLASS_DECLARED, _event(declaration))
        return body.decode("utf-8")

    async def Review(self, ctx: TransactionContext, declaration_id_: str, outcome: str, note_sha256: str) -> str:
        """A compliance officer acknowledges or escalates a declaration (``note_sha256`` may be ``""``)."""
        caller = caller_from_ctx(ctx)
        decl_id = declaration_id(declaration_id_)
        outcome = model.code(outcome, "outcome", codes.BREAKGLASS_REVIEW_OUTCOMES, "a review outcome")
        note = None if note_sha256 == "" else model.sha256_hex(note_sha256, "note_sha256")
        if not caller.has_role(codes.ROLE_COMPLIANCE_OFFICER):
            raise permission_denied("only a compliance officer may review a break-glass declaration")
        stub = ctx.get_stub()
        declaration = await _load(stub, decl_id)
        if declaration is None:
            raise not_found(f"break-glass declaration {decl_id} not found")
        if declaration.declared_by.subject == caller.subject:
            raise permission_denied("a declaration may not be reviewed by its own declarer")
        if declaration.review_status == codes.BREAKGLASS_ACKNOWLEDGED:
            raise failed_precondition(f"break-glass declaration {decl_id} is already acknowledged")
        if declaration.review_status == outcome:
            raise failed_precondition(f"break-glass declaration {decl_id} is already {outcome}")
        from . import _tx_time

        review = Review(outcome=outcome, reviewed_by=caller.actor_ref(),
                        reviewed_at=model.format_time(_tx_time(stub)), note_sha256=note)
        updated = dataclasses.replace(declaration, version=declaration.version + 1, review_status=outcome,
                                      reviews=declaration.reviews + (review,))
        body = canonical.dumps(updated.to_dict())
        await stub.put_state(_key(stub, decl_id), body)
        stub.set_event(EVENT_BREAKGLASS_REVIEWED, _event(updated))
        return body.decode("utf-8")

    async def Get(self, ctx: TransactionContext, declaration_id_: str) -> str:
        """One declaration the caller may see (NOT_FOUND otherwise)."""
        caller = caller_from_ctx(ctx)
        decl_id = declaration_id(declaration_id_)
        declaration = await _load(ctx.get_stub(), decl_id)
        if declaration is None or not _visible(caller, declaration):
            raise not_found(f"break-glass declaration {decl_id} not found")
        return canonical.dumps(declaration.to_dict()).decode("utf-8")

    async def ListForPatient(self, ctx: TransactionContext, pid: str) -> str:
        """The patient's declarations the caller may see, oldest first."""
        caller = caller_from_ctx(ctx)
        pid = model.pid(pid)
        if not (caller.is_oversight or caller.is_provider or (caller.is_patient and caller.pid == pid)):
            raise permission_denied("caller may not list this patient's break-glass declarations")
        found = [d.to_dict() for d in await _for_patient(ctx.get_stub(), pid) if _visible(caller, d)]
        return canonical.dumps(found).decode("utf-8")

    async def ListActive(self, ctx: TransactionContext) -> str:
        """Declarations active now that the caller may see (oversight: all; providers: their org's)."""
        caller = caller_from_ctx(ctx)
        if not (caller.is_oversight or caller.is_provider):
            raise permission_denied("only providers and oversight may list active break-glass declarations")
        from . import _tx_time

        stub = ctx.get_stub()
        now = _tx_time(stub)
        found = [d.to_dict() for d in await _all(stub) if _visible(caller, d) and d.active_at(now)]
        return canonical.dumps(found).decode("utf-8")

    async def ListForReview(self, ctx: TransactionContext) -> str:
        """Every declaration with its review state, for compliance officers and admins (oldest first)."""
        caller = caller_from_ctx(ctx)
        if not caller.is_oversight:
            raise permission_denied("only a compliance officer or admin may list declarations for review")
        return canonical.dumps([d.to_dict() for d in await _all(ctx.get_stub())]).decode("utf-8")


__all__ = [
    "BREAKGLASS_CONTRACT",
    "BreakGlassContract",
    "Declaration",
    "EVENT_BREAKGLASS_DECLARED",
    "EVENT_BREAKGLASS_REVIEWED",
    "MAX_DURATION_S",
    "MIN_DURATION_S",
    "active_declaration",
    "declaration_id",
]
