"""The two ciphercare contracts: ``consent`` and ``accesslog``.

Written once against the Fabric Python contract API; they run unchanged on a
Fabric peer and in the embedded ledger. Every argument is a string (JSON
arguments are canonical JSON), every return and event payload is canonical
JSON, the actor always comes from the creator certificate
(:func:`caller.caller_from_ctx`), and each write transaction validates
everything before its first ``put_state`` so a refused transaction writes
nothing. Errors are :class:`errors.ContractError` (message ``"CODE: detail"``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fabric_chaincode_python.fabric_contract_api.contractapi import (
    Contract,
    ContractChaincode,
    TransactionContext,
)

from .. import canonical, codes, model
from ..cache import LRU
from ..caller import Caller, caller_from_ctx
from ..decision import AccessRequest, decide, evaluate_consent
from ..errors import (
    ValidationError,
    already_exists,
    failed_precondition,
    not_found,
    permission_denied,
)
from ..model import AccessEvent, AccessEventInput, ConsentGrant, ConsentRecord, Decision
from .breakglass import BreakGlassContract, active_declaration  # break-glass (issue 15)

CONSENT_CONTRACT = "consent"
ACCESSLOG_CONTRACT = "accesslog"

CONSENT_KEY = "consent"
POLICY_KEY = "policy~consent"
CONSENT_BY_PID_KEY = "consent~pid"
ACCESS_KEY = "access"
ACCESS_BY_PID_KEY = "access~pid"

EVENT_CONSENT_GRANTED = "ConsentGranted"
EVENT_CONSENT_REVOKED = "ConsentRevoked"
EVENT_CONSENT_CONFIRMED = "ConsentConfirmed"
EVENT_POLICY_SET = "ConsentPolicySet"

#: The consent policy when none was set (see codes.STAFF_PERMIT_MODES and docs/THREATS.md).
DEFAULT_POLICY: dict[str, str] = {"staff_permit": codes.STAFF_PERMIT_CONFIRM}
EVENT_ACCESS_RECORDED = "AccessRecorded"

#: Right to erasure: an admin records, through ``accesslog:Record``, an access event with this
#: outcome_desc (type 110110, subtype delete, action D, outcome success, no detail); off-chain stores
#: destroy the patient's data key when they see it. Only admins may use it (see ``Record``).
ERASURE_OUTCOME_DESC = "patient-erasure"

#: Parsed stored records keyed by SHA-256 of their bytes: re-validating every record on every Check
#: dominates its cost, and records are immutable values.
_PARSED: LRU[bytes, ConsentRecord | AccessEvent] = LRU(4096)

#: Value of index entries (Fabric convention: a non-empty placeholder; empty would mean delete).
_INDEX_VALUE = b"\x00"
_HEX_TX_ID = re.compile(r"^[0-9a-f]{32,}$")

#: ``consent:CheckMany``: at most this many pids per call (one Score chunk), and the argument's size bound
#: (every pid at its longest: 64 characters, two quotes and a comma, plus the brackets).
MAX_CHECK_MANY = 4096
MAX_CHECK_MANY_BYTES = MAX_CHECK_MANY * (64 + 3) + 2


class StoredStateError(RuntimeError):
    """World state holds a value these contracts did not write: an INTERNAL fault, never a client error."""


# --- Transaction helpers ------------------------------------------------------------


def _to_json(value: Any) -> str:
    return canonical.dumps(value).decode("utf-8")


def _tx_time(stub: Any) -> datetime:
    """The transaction timestamp (the proposal's channel-header time) as an aware UTC datetime."""
    ts = stub.get_tx_timestamp()
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise failed_precondition("transaction timestamp has no timezone")
        return ts.astimezone(UTC)
    seconds = getattr(ts, "seconds", None)
    if ts is None or not isinstance(seconds, int):
        raise failed_precondition("transaction timestamp is unavailable")
    nanos = getattr(ts, "nanos", 0) or 0
    micros = (nanos // 1_000_000) * 1000  # millisecond precision on chain
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


def _tx_suffix(stub: Any) -> str:
    """32 hex characters identifying the transaction: the tx id's prefix (Fabric tx ids are SHA-256 hex)."""
    tx_id = stub.get_txid()
    if not isinstance(tx_id, str) or not tx_id:
        raise failed_precondition("transaction id is unavailable")
    lowered = tx_id.lower()
    if _HEX_TX_ID.match(lowered):
        return lowered[:32]
    return hashlib.sha256(tx_id.encode("utf-8")).hexdigest()[:32]


async def _get(stub: Any, key: str) -> bytes | None:
    value = await stub.get_state(key)
    return bytes(value) if value else None


def _parse_consent(raw: bytes) -> ConsentRecord:
    """A stored consent, validated once per distinct value."""
    digest = b"c" + hashlib.sha256(raw).digest()
    cached = _PARSED.get(digest)
    if isinstance(cached, ConsentRecord):
        return cached
    try:
        record = ConsentRecord.from_dict(canonical.loads(raw), "stored consent")
    except (ValidationError, ValueError) as exc:  # corrupt state is an internal fault, not bad input
        raise StoredStateError(f"stored consent is malformed: {exc}") from None
    _PARSED.put(digest, record)
    return record


def _parse_event(raw: bytes) -> AccessEvent:
    """A stored access event, validated once per distinct value."""
    digest = b"e" + hashlib.sha256(raw).digest()
    cached = _PARSED.get(digest)
    if isinstance(cached, AccessEvent):
        return cached
    try:
        event = AccessEvent.from_dict(canonical.loads(raw), "stored event")
    except (ValidationError, ValueError) as exc:
        raise StoredStateError(f"stored access event is malformed: {exc}") from None
    _PARSED.put(digest, event)
    return event


async def _keys_with_prefix(stub: Any, object_type: str, attrs: list[str]) -> AsyncIterator[list[str]]:
    """Attributes of every composite key under ``(object_type, *attrs)``, in key order."""
    iterator = await stub.get_state_by_partial_composite_key(object_type, attrs)
    async for kv in iterator:
        key = kv.key
        _, parts = stub.split_composite_key(key)
        yield parts


# --- Consent --------------------------------------------------------------------------


def _consent_visible(caller: Caller, record: ConsentRecord) -> bool:
    """Patients and their proxies see theirs; providers see consents naming their org; oversight sees all."""
    if caller.is_oversight:
        return True
    if caller.speaks_for(record.pid) is not None:
        return True
    if caller.is_provider and caller.org in (record.grantee_org, record.recorded_by.org):
        return True
    return False


def _revoke_refusal(caller: Caller, record: ConsentRecord) -> str | None:
    """Why ``caller`` may not revoke ``record`` (None: it may). The consent authority rules:

    * the patient or their proxy may revoke (or supersede, or decline) any consent about the patient;
    * a directive the patient or proxy recorded is theirs alone: no organisation may revoke it;
    * staff may revoke only a consent their own organisation recorded.
    """
    if caller.speaks_for(record.pid) is not None:
        return None
    if record.effective_authority != codes.AUTHORITY_STAFF:
        return (
            f"consent {record.id} is the patient's own directive; only the patient or their proxy may "
            "revoke or supersede it"
        )
    if not caller.is_provider:
        return f"caller may not revoke consent {record.id}"
    if caller.org != record.recorded_by.org:
        return (
            f"consent {record.id} was recorded by {record.recorded_by.org}; staff may revoke only consents "
            "their own organisation recorded"
        )
    return None


def _consent_event(record: ConsentRecord) -> bytes:
    payload: dict[str, Any] = {
        "consent_id": record.id,
        "pid": record.pid,
        "grantee_org": record.grantee_org,
        "version": record.version,
        "status": record.status,
        "authority": record.effective_authority,
        "recorded_by_org": record.recorded_by.org,
        # Projections (the privacy projection's document references) take the document's hash from the event
        # and never read the chain back per event; a hash, never the document.
        "document_sha256": record.document_sha256,
    }
    if record.evidence_sha256 is not None:  # the signed form staff attached, kept off-chain like the document
        payload["evidence_sha256"] = record.evidence_sha256
    if record.revocation_reason is not None:
        payload["revocation_reason"] = record.revocation_reason
    return canonical.dumps(payload)


class ConsentContract(Contract):
    """FHIR-Consent-shaped consent records: grant, revoke, read, and the access decision."""

    Name = CONSENT_CONTRACT

    def get_evaluate_transactions(self) -> list[str]:
        return ["Get", "ListForPatient", "History", "Check", "CheckMany", "GetPolicy"]

    # -- storage --

    @staticmethod
    def _key(ctx: TransactionContext, consent_id: str) -> str:
        return ctx.get_stub().create_composite_key(CONSENT_KEY, [consent_id])

    async def _load(self, ctx: TransactionContext, consent_id: str) -> ConsentRecord | None:
        raw = await _get(ctx.get_stub(), self._key(ctx, consent_id))
        if raw is None:
            return None
        return _parse_consent(raw)

    async def _for_patient(self, ctx: TransactionContext, pid: str) -> list[ConsentRecord]:
        stub = ctx.get_stub()
        records: list[ConsentRecord] = []
        async for parts in _keys_with_prefix(stub, CONSENT_BY_PID_KEY, [pid]):
            if len(parts) != 2:
                continue
            record = await self._load(ctx, parts[1])
            if record is not None:
                records.append(record)
        records.sort(key=lambda r: (model.parse_time(r.recorded_at, "recorded_at"), r.id))
        return records

    async def _visible(self, ctx: TransactionContext, caller: Caller, consent_id: str) -> ConsentRecord:
        consent_id = model.consent_id(consent_id)
        record = await self._load(ctx, consent_id)
        if record is None or not _consent_visible(caller, record):
            raise not_found(f"consent {consent_id} not found")
        return record

    # -- transactions --

    async def _policy(self, ctx: TransactionContext) -> dict[str, str]:
        raw = await _get(ctx.get_stub(), POLICY_KEY)
        if raw is None:
            return dict(DEFAULT_POLICY)
        try:
            return _parse_policy(canonical.loads(raw), "stored policy")
        except (ValidationError, ValueError) as exc:
            raise StoredStateError(f"stored consent policy is malformed: {exc}") from None

    async def Grant(self, ctx: TransactionContext, consent_json: str) -> str:
        """Record a new consent (version 1); returns the stored record JSON.

        The patient (or their proxy) records a directive that is in force at once. Staff of a provider
        organisation record a consent only for their own organisation as recipient and only with the
        hash of the patient's signed agreement (stored off-chain); a staff PERMIT is ``proposed`` until
        the patient or proxy confirms it, unless the policy says ``immediate``. A staff DENY is in force
        at once (it can only restrict).
        """
        caller = caller_from_ctx(ctx)
        grant = ConsentGrant.from_dict(model.loads_object(consent_json, "consent_json"), "consent")
        authority = caller.speaks_for(grant.pid)
        if authority is None:
            if not caller.is_provider:
                if caller.has_role(codes.ROLE_PATIENT):
                    raise permission_denied(
                        "a patient may grant consent only for their own pseudonym (or one they are proxy for)"
                    )
                raise permission_denied(
                    "only a patient (for themselves), their proxy, a hospital or a clinician may grant a consent"
                )
            authority = codes.AUTHORITY_STAFF
            if grant.grantee_org != caller.org:
                raise permission_denied(
                    f"staff of {caller.org} may record consents only with {caller.org} as recipient; a consent "
                    f"for {grant.grantee_org} must be recorded by the patient or their proxy"
                )
            if grant.evidence_sha256 is None:
                # Staff record a patient's consent only with the evidence of the patient's agreement
                # (the hash of the signed form, which the service stores off-chain).
                raise ValidationError(
                    "consent.evidence_sha256: a consent recorded on a patient's behalf must reference the "
                    "evidence of their agreement"
                )
        status = codes.CONSENT_STATUS_ACTIVE
        if authority == codes.AUTHORITY_STAFF and grant.decision == codes.PERMIT:
            if (await self._policy(ctx))["staff_permit"] == codes.STAFF_PERMIT_CONFIRM:
                status = codes.CONSENT_STATUS_PROPOSED

        stub = ctx.get_stub()
        now = _tx_time(stub)
        consent_id = "cns-" + _tx_suffix(stub)
        key = self._key(ctx, consent_id)
        if await _get(stub, key) is not None:
            raise already_exists(f"consent {consent_id} already exists")
        record = ConsentRecord(
            id=consent_id,
            version=1,
            pid=grant.pid,
            grantee_org=grant.grantee_org,
            decision=grant.decision,
            purposes=grant.purposes,
            data_classes=grant.data_classes,
            period=grant.period,
            provisions=grant.provisions,
            status=status,
            document_sha256=grant.document_sha256,
            recorded_at=model.format_time(now),
            recorded_by=caller.actor_ref(),
            evidence_sha256=grant.evidence_sha256,
            authority=authority,
        )
        body = canonical.dumps(record.to_dict())
        index_key = stub.create_composite_key(CONSENT_BY_PID_KEY, [record.pid, consent_id])
        event = _consent_event(record)

        await stub.put_state(key, body)
        await stub.put_state(index_key, _INDEX_VALUE)
        stub.set_event(EVENT_CONSENT_GRANTED, event)
        return body.decode("utf-8")

    async def Revoke(self, ctx: TransactionContext, consent_id: str, reason_code: str) -> str:
        """Make a consent inactive (version + 1); returns the new record JSON. History keeps the old one.

        Who may: see :func:`_revoke_refusal`. An active or proposed consent can be revoked (a proposed
        one the patient turns down is revoked with ``declined-by-patient``).
        """
        caller = caller_from_ctx(ctx)
        consent_id = model.consent_id(consent_id)
        reason = model.code(reason_code, "reason_code", codes.REVOCATION_REASONS, "a revocation reason")
        if not (caller.is_provider or caller.has_role(codes.ROLE_PATIENT)):
            raise permission_denied("only a patient, their proxy, a hospital or a clinician may revoke a consent")
        record = await self._load(ctx, consent_id)
        if record is None or not _consent_visible(caller, record):
            raise not_found(f"consent {consent_id} not found")
        refusal = _revoke_refusal(caller, record)
        if refusal is not None:
            raise permission_denied(refusal)
        if record.status == codes.CONSENT_STATUS_INACTIVE:
            raise failed_precondition(f"consent {consent_id} is already {record.status}")
        patient_side = caller.speaks_for(record.pid) is not None
        if reason in ("patient-request", "declined-by-patient") and not patient_side:
            raise permission_denied(f"only the patient or their proxy may revoke with reason {reason!r}")

        stub = ctx.get_stub()
        now = _tx_time(stub)
        revoked = dataclasses.replace(
            record,
            version=record.version + 1,
            status=codes.CONSENT_STATUS_INACTIVE,
            revoked_at=model.format_time(now),
            revoked_by=caller.actor_ref(),
            revocation_reason=reason,
            authority=record.effective_authority,
        )
        body = canonical.dumps(revoked.to_dict())
        event = _consent_event(revoked)

        await stub.put_state(self._key(ctx, consent_id), body)
        stub.set_event(EVENT_CONSENT_REVOKED, event)
        return body.decode("utf-8")

    async def Confirm(self, ctx: TransactionContext, consent_id: str) -> str:
        """The patient (or proxy) confirms a consent staff proposed: it becomes active (version + 1)."""
        caller = caller_from_ctx(ctx)
        consent_id = model.consent_id(consent_id)
        record = await self._load(ctx, consent_id)
        if record is None or not _consent_visible(caller, record):
            raise not_found(f"consent {consent_id} not found")
        if caller.speaks_for(record.pid) is None:
            raise permission_denied("only the patient or their proxy may confirm a consent")
        if record.status != codes.CONSENT_STATUS_PROPOSED:
            raise failed_precondition(f"consent {consent_id} is {record.status}, not proposed")
        stub = ctx.get_stub()
        confirmed = dataclasses.replace(
            record,
            version=record.version + 1,
            status=codes.CONSENT_STATUS_ACTIVE,
            confirmed_at=model.format_time(_tx_time(stub)),
            confirmed_by=caller.actor_ref(),
            authority=record.effective_authority,
        )
        body = canonical.dumps(confirmed.to_dict())
        await stub.put_state(self._key(ctx, consent_id), body)
        stub.set_event(EVENT_CONSENT_CONFIRMED, _consent_event(confirmed))
        return body.decode("utf-8")

    async def SetPolicy(self, ctx: TransactionContext, policy_json: str) -> str:
        """An admin sets the consent policy (``{"staff_permit": "confirm"|"immediate"}``); returns it."""
        caller = caller_from_ctx(ctx)
        if not caller.has_role(codes.ROLE_ADMIN):
            raise permission_denied("only an admin may set the consent policy")
        policy = _parse_policy(model.loads_object(policy_json, "policy_json"), "policy")
        body = canonical.dumps(policy)
        stub = ctx.get_stub()
        await stub.put_state(POLICY_KEY, body)
        stub.set_event(EVENT_POLICY_SET, body)
        return body.decode("utf-8")

    async def GetPolicy(self, ctx: TransactionContext) -> str:
        """The consent policy in force (the default when none was set)."""
        caller_from_ctx(ctx)
        return _to_json(await self._policy(ctx))

    async def Get(self, ctx: TransactionContext, consent_id: str) -> str:
        """The current version of a consent the caller may see (NOT_FOUND otherwise)."""
        caller = caller_from_ctx(ctx)
        record = await self._visible(ctx, caller, consent_id)
        return _to_json(record.to_dict())

    async def ListForPatient(self, ctx: TransactionContext, pid: str) -> str:
        """The patient's consents the caller may see, oldest first (JSON list of records)."""
        caller = caller_from_ctx(ctx)
        pid = model.pid(pid)
        if not (caller.is_oversight or caller.is_provider or caller.speaks_for(pid) is not None):
            raise permission_denied("caller may not list this patient's consents")
        records = [r for r in await self._for_patient(ctx, pid) if _consent_visible(caller, r)]
        return _to_json([r.to_dict() for r in records])

    async def History(self, ctx: TransactionContext, consent_id: str) -> str:
        """Every version of a consent the caller may see, oldest first (JSON list of records)."""
        caller = caller_from_ctx(ctx)
        record = await self._visible(ctx, caller, consent_id)
        stub = ctx.get_stub()
        versions: dict[int, dict[str, Any]] = {}
        iterator = await stub.get_history_for_key(self._key(ctx, record.id))
        async for mod in iterator:
            if getattr(mod, "is_delete", False) or not mod.value:
                continue
            version = _parse_consent(bytes(mod.value))
            versions[version.version] = version.to_dict()
        versions.setdefault(record.version, record.to_dict())
        return _to_json([versions[v] for v in sorted(versions)])

    async def Check(
        self,
        ctx: TransactionContext,
        pid: str,
        recipient_org: str,
        purpose: str,
        data_class: str,
        at_iso: str,
    ) -> str:
        """Decide whether ``recipient_org`` may use ``data_class`` of ``pid`` for ``purpose`` (Decision JSON).

        ``at_iso`` is the instant to decide for; ``""`` means the transaction time.
        """
        caller = caller_from_ctx(ctx)
        at = _check_time(ctx, at_iso)
        request = AccessRequest.validated(pid, recipient_org, purpose, data_class, at)
        _authorize_check(caller, request)
        return _to_json(await self._decide(ctx, request))

    async def CheckMany(
        self,
        ctx: TransactionContext,
        pids_json: str,
        recipient_org: str,
        purpose: str,
        data_class: str,
        at_iso: str,
    ) -> str:
        """``Check`` for every pid of ``pids_json`` (a JSON array of distinct pids, 1..MAX_CHECK_MANY).

        Returns the JSON array of their Decisions, in the order of ``pids_json``; each equals what
        ``Check`` returns for that pid. Validation and authorization are Check's, applied to every pid
        before any is decided: one malformed or unauthorized pid refuses the whole call.
        """
        caller = caller_from_ctx(ctx)
        at = _check_time(ctx, at_iso)
        pids = _pid_list(pids_json)
        first = AccessRequest.validated(pids[0], recipient_org, purpose, data_class, at)
        requests = [first] + [dataclasses.replace(first, pid=p) for p in pids[1:]]
        for request in requests:
            _authorize_check(caller, request)
        return _to_json([await self._decide(ctx, request) for request in requests])

    async def _decide(self, ctx: TransactionContext, request: AccessRequest) -> dict[str, Any]:
        """The Decision (as a dict) for an already validated and authorized request."""
        decision = decide(await self._for_patient(ctx, request.pid), request)
        # --- break-glass (issue 15; consent/contracts/breakglass.py) -----------------------------------------
        # No consent permits: the caller's own active break-glass declaration for this patient does,
        # for ETREAT/BTG only, and the decision names it (reason_code "break-glass").
        if not decision.permitted and request.purpose in codes.BREAKGLASS_PURPOSES:
            declaration = await active_declaration(
                ctx.get_stub(), caller_from_ctx(ctx), request.pid, request.purpose, request.at
            )
            if declaration is not None:
                decision = Decision(
                    decision=codes.PERMIT,
                    consent_id=None,
                    reason=f"break-glass declaration {declaration.id} permits {request.describe()} "
                    f"until {declaration.expires_at} ({decision.reason_code} otherwise)",
                    reason_code="break-glass",
                    breakglass_id=declaration.id,
                )
        # --- end break-glass --------------------------------------------------------------------------
        return decision.to_dict()


def _check_time(ctx: TransactionContext, at_iso: str) -> datetime:
    """The instant a Check decides for: ``at_iso``, or the transaction time when it is ``""``."""
    return _tx_time(ctx.get_stub()) if at_iso == "" else model.parse_time(at_iso, "at_iso")


def _authorize_check(caller: Caller, request: AccessRequest) -> None:
    """Who may ask for a decision: oversight; a provider for its own org; a patient for themselves."""
    allowed = (
        caller.is_oversight
        or (caller.is_provider and caller.org == request.recipient_org)
        or caller.speaks_for(request.pid) is not None
    )
    if not allowed:
        if caller.is_provider:
            raise permission_denied("a hospital or clinician may check consent only for its own org")
        raise permission_denied("caller may not check this patient's consent")


def _parse_policy(data: Any, path: str) -> dict[str, str]:
    if not isinstance(data, dict) or set(data) != {"staff_permit"}:
        raise ValidationError(f"{path}: expected an object with exactly the field staff_permit")
    mode = model.code(data["staff_permit"], f"{path}.staff_permit", codes.STAFF_PERMIT_MODES,
                      "a staff-permit mode (confirm|immediate)")
    return {"staff_permit": mode}


def _pid_list(pids_json: str) -> list[str]:
    """``CheckMany``'s pids: a JSON array of 1..MAX_CHECK_MANY distinct valid pids (INVALID_ARGUMENT otherwise)."""
    if not isinstance(pids_json, str):
        raise ValidationError(f"pids_json: expected a JSON array of pids, got {model.shown(pids_json)}")
    if len(pids_json.encode("utf-8")) > MAX_CHECK_MANY_BYTES:
        raise ValidationError(f"pids_json: larger than {MAX_CHECK_MANY_BYTES} bytes")
    try:
        value = canonical.loads(pids_json)
    except (ValueError, RecursionError):
        raise ValidationError("pids_json: not valid JSON") from None
    if not isinstance(value, list):
        raise ValidationError(f"pids_json: expected a JSON array of pids, got {model.shown(value)}")
    if not value:
        raise ValidationError("pids_json: name at least one pid")
    if len(value) > MAX_CHECK_MANY:
        raise ValidationError(f"pids_json: at most {MAX_CHECK_MANY} pids per call, got {len(value)}")
    pids = [model.pid(item, f"pids_json[{i}]") for i, item in enumerate(value)]
    if len(set(pids)) != len(pids):
        seen: set[str] = set()
        for i, p in enumerate(pids):
            if p in seen:
                raise ValidationError(f"pids_json[{i}]: {p!r} appears twice")
            seen.add(p)
    return pids


# --- Access log ------------------------------------------------------------------------


def _event_visible(caller: Caller, event: AccessEvent) -> bool:
    """Patients see events about themselves; providers see their org's events; oversight sees all."""
    if caller.is_oversight:
        return True
    if event.entity.pid is not None and caller.speaks_for(event.entity.pid) is not None:
        return True
    if caller.is_provider and event.agent.org == caller.org:
        return True
    return False


def _check_erasure(caller: Caller, data: AccessEventInput) -> None:
    """An erasure event is an admin's, of one exact shape: it makes off-chain stores destroy data."""
    if not caller.has_role(codes.ROLE_ADMIN):
        raise permission_denied(f"only an admin may record a {ERASURE_OUTCOME_DESC!r} event")
    shape = (data.type, data.subtype, data.action, data.outcome)
    if shape != ("110110", "delete", "D", codes.OUTCOME_SUCCESS) or data.entity.pid is None:
        raise ValidationError(
            f"event: a {ERASURE_OUTCOME_DESC!r} event has type 110110, subtype delete, action D, outcome success "
            "and a pid"
        )
    if data.entity.detail_sha256 is not None or data.entity.consent_id is not None:
        raise ValidationError(f"event.entity: a {ERASURE_OUTCOME_DESC!r} event carries only the pid")


#: Observer names reserved for ciphercare's own services (``ciphercare/ScoringService``, ...).
SERVICE_OBSERVER_PREFIX = "ciphercare/"


def _check_observer(caller: Caller, observer: str) -> None:
    """The observer is a system of the caller's own organisation (``<org>/<system>``) or a ciphercare service.

    Which systems an organisation registered (and that only the services use ``ciphercare/``) is checked
    by the AccessLogService before it submits; here the namespace rule holds even on a Fabric peer.
    """
    if observer.startswith(SERVICE_OBSERVER_PREFIX) or observer.startswith(caller.org + "/"):
        return
    raise permission_denied(
        f"event.source.observer: {model.shown(observer)} is not a system of {caller.org}; name one as "
        f"'{caller.org}/<system>'"
    )


def consent_basis_refusal(
    consent: ConsentRecord | None, cid: str, data: AccessEventInput, caller_org: str, at: datetime
) -> str | None:
    """Why the consent an event cites cannot back it (None: it can). The AccessLogService asks the same
    question before it stores anything off-chain; the contract's answer at the transaction time decides.

    The consent must exist, be about the same patient and name the caller's organisation as recipient; for
    a ``success`` event it must, at the recorded time, permit the purpose and every data class.
    """
    if consent is None:
        return f"event.entity.consent_id: consent {cid} does not exist"
    if consent.pid != data.entity.pid:
        return f"event.entity.consent_id: consent {cid} is about another patient"
    if consent.grantee_org != caller_org:
        return f"event.entity.consent_id: consent {cid} names {consent.grantee_org}, not {caller_org}"
    if data.outcome != codes.OUTCOME_SUCCESS:
        return None
    if data.purpose_of_use is None or not data.entity.data_classes:
        return "event: a success event citing a consent must name its purpose_of_use and data_classes"
    for data_class in data.entity.data_classes:
        request = AccessRequest(consent.pid, caller_org, data.purpose_of_use, data_class, at)
        if evaluate_consent(consent, request) != codes.PERMIT:
            state = consent.status if consent.status != codes.CONSENT_STATUS_ACTIVE else "active"
            return (
                f"event.entity.consent_id: consent {cid} ({state}) does not permit {data.purpose_of_use} "
                f"access to {data_class} at {model.format_time(at)}"
            )
    return None


async def _consent_basis(ctx: TransactionContext, caller: Caller, data: AccessEventInput, at: datetime) -> str:
    """Check the consent an event cites (FAILED_PRECONDITION when it cannot back the event)."""
    cid = data.entity.consent_id
    if cid is None:
        return model.CONSENT_BASIS_NONE
    raw = await _get(ctx.get_stub(), ctx.get_stub().create_composite_key(CONSENT_KEY, [cid]))
    refusal = consent_basis_refusal(None if raw is None else _parse_consent(raw), cid, data, caller.org, at)
    if refusal is not None:
        raise failed_precondition(refusal)
    return model.CONSENT_BASIS_VERIFIED


class AccessLogContract(Contract):
    """IHE-BALP-shaped access events: who accessed which pseudonym, why, with what outcome."""

    Name = ACCESSLOG_CONTRACT

    def get_evaluate_transactions(self) -> list[str]:
        return ["Get", "ListForPatient"]

    @staticmethod
    def _key(ctx: TransactionContext, event_id: str) -> str:
        return ctx.get_stub().create_composite_key(ACCESS_KEY, [event_id])

    async def _load(self, ctx: TransactionContext, event_id: str) -> AccessEvent | None:
        raw = await _get(ctx.get_stub(), self._key(ctx, event_id))
        if raw is None:
            return None
        return _parse_event(raw)

    async def Record(self, ctx: TransactionContext, event_json: str) -> str:
        """Append an access event; the agent is the caller. Returns the stored event JSON."""
        caller = caller_from_ctx(ctx)
        data = AccessEventInput.from_dict(model.loads_object(event_json, "event_json"), "event")
        if data.outcome_desc == ERASURE_OUTCOME_DESC:
            _check_erasure(caller, data)
        elif not caller.is_provider and data.outcome == codes.OUTCOME_SUCCESS:
            raise permission_denied(
                "only a hospital or clinician may record outcome 'success'; other callers may record "
                "'denied' or 'error'"
            )
        _check_observer(caller, data.source.observer)
        stub = ctx.get_stub()
        now = _tx_time(stub)
        basis = await _consent_basis(ctx, caller, data, now)
        event = AccessEvent.build("ae-" + _tx_suffix(stub), now, caller.audit_agent(), data, basis)
        key = self._key(ctx, event.id)
        if await _get(stub, key) is not None:
            raise already_exists(f"access event {event.id} already exists")
        body = canonical.dumps(event.to_dict())
        index_key = (
            None
            if event.entity.pid is None
            else stub.create_composite_key(ACCESS_BY_PID_KEY, [event.entity.pid, event.id])
        )

        await stub.put_state(key, body)
        if index_key is not None:
            await stub.put_state(index_key, _INDEX_VALUE)
        stub.set_event(EVENT_ACCESS_RECORDED, body)
        return body.decode("utf-8")

    async def Get(self, ctx: TransactionContext, event_id: str) -> str:
        """One access event the caller may see (NOT_FOUND otherwise)."""
        caller = caller_from_ctx(ctx)
        event_id = model.event_id(event_id)
        event = await self._load(ctx, event_id)
        if event is None or not _event_visible(caller, event):
            raise not_found(f"access event {event_id} not found")
        return _to_json(event.to_dict())

    async def ListForPatient(self, ctx: TransactionContext, pid: str) -> str:
        """Access events about ``pid`` the caller may see, oldest first (JSON list)."""
        caller = caller_from_ctx(ctx)
        pid = model.pid(pid)
        if not (caller.is_oversight or caller.is_provider or (caller.is_patient and caller.pid == pid)):
            raise permission_denied("caller may not list this patient's access events")
        events: list[AccessEvent] = []
        async for parts in _keys_with_prefix(ctx.get_stub(), ACCESS_BY_PID_KEY, [pid]):
            if len(parts) != 2:
                continue
            event = await self._load(ctx, parts[1])
            if event is not None and _event_visible(caller, event):
                events.append(event)
        events.sort(key=lambda e: (model.parse_time(e.recorded, "recorded"), e.id))
        return _to_json([e.to_dict() for e in events])


def new_chaincode() -> ContractChaincode:
    """The ciphercare chaincode: consent, access log, scoring-model registry, batched access events, break-glass."""
    from .accessbatch import AccessBatchContract  # scoreperf (issue 16 item 3): batched access events
    from .model_registry import ModelRegistryContract

    return ContractChaincode.new_chaincode(ConsentContract(), AccessLogContract(), ModelRegistryContract(),
                                           AccessBatchContract(), BreakGlassContract())


__all__ = [
    "ACCESSLOG_CONTRACT",
    "CONSENT_CONTRACT",
    "AccessLogContract",
    "ConsentContract",
    "EVENT_ACCESS_RECORDED",
    "EVENT_CONSENT_GRANTED",
    "EVENT_CONSENT_REVOKED",
    "ERASURE_OUTCOME_DESC",
    "new_chaincode",
]
