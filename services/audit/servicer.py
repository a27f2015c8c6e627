"""AccessLogService: record, search, prove and watch access events.

The ledger is the source of truth. Search runs on an off-chain projection of
the ledger's ``AccessRecorded`` events (:class:`AccessProjector`), which can be
rebuilt from the ledger at any time; proofs come from the ledger itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc

from ciphercare.consent import canonical
from ciphercare.consent.caller import msp_id_for_org
from ciphercare.consent.contracts import SERVICE_OBSERVER_PREFIX, consent_basis_refusal
from ciphercare.consent.errors import ValidationError
from ciphercare.consent.model import EVENT_ID_RE, AccessEventInput, ConsentRecord
from ciphercare.ledger.api import CommittedEvent, EndorseError, Principal
from ciphercare.ledger.gateway import TransparencyLog
from ciphercare.services.audit import convert as audit_convert
from ciphercare.services.audit.batches import (
    BATCH_EVENT_NAME,
    membership_for_row,
    membership_to_proto,
    project_batches,
)
from ciphercare.services.identity.interceptor import current_principal
from ciphercare.services.platform import convert
from ciphercare.services.platform.errors import STORE_UNAVAILABLE_ERRORS, forbidden, invalid, not_found, precondition
from ciphercare.services.platform.gateway import ContractHandles
from ciphercare.services.platform.projections import ProjectionRunner, committed_events
from ciphercare.services.store import AccessEventIndex, AccessQuery, OffchainStore
from ciphercare.services.store.repository import ACCESS_PROJECTION
from ciphercare.v1 import access_log_pb2, access_log_pb2_grpc

EVENT_NAME = "AccessRecorded"
MAX_DETAIL_BYTES = 64 * 1024
DEFAULT_PAGE = 100
MAX_PAGE = 1000
ALL_SCOPE_ROLES = frozenset({"compliance-officer", "admin"})
MAX_PAGE_TOKEN_CHARS = 512
MAX_SEQ = 2**63 - 1
#: Reads consents to check the one an event cites (never writes).
READER = Principal(subject="service:ciphercare-accesslog", org="ciphercare", roles=frozenset({"compliance-officer"}),
                   client_id="ciphercare-server")
log = logging.getLogger("ciphercare.accesslog")


def index_from_event(event: CommittedEvent) -> AccessEventIndex:
    """The searchable projection row of one committed AccessRecorded event."""
    record = json.loads(event.payload)
    recorded = datetime.fromisoformat(record["recorded"].replace("Z", "+00:00"))
    return AccessEventIndex(
        seq=event.seq,
        event_id=record["id"],
        tx_id=event.tx_id,
        recorded_ms=int(recorded.timestamp() * 1000),
        pid=record["entity"].get("pid") or "",
        agent_subject=record["agent"]["subject"],
        agent_org=record["agent"]["org"],
        purpose=record.get("purpose_of_use") or "",
        outcome=record["outcome"],
        event_json=event.payload,
    )


def event_proto(row: AccessEventIndex) -> access_log_pb2.AccessEvent:
    return audit_convert.access_event_to_proto(json.loads(row.event_json), row.seq, row.tx_id)


class AccessScope:
    """What part of the access log a caller may read (role and identity, never request fields)."""

    def __init__(self, principal: Principal) -> None:
        self.pid: str | None = None
        self.org: str | None = None
        if principal.roles & ALL_SCOPE_ROLES:
            return
        if "patient" in principal.roles and not principal.roles & {"hospital", "clinician"}:
            if not principal.pid:
                raise forbidden("a patient token without a pid claim cannot read access events")
            self.pid = principal.pid
            return
        if not principal.org:
            raise forbidden("a token without an organisation claim cannot read access events")
        self.org = principal.org

    def allows(self, row: AccessEventIndex) -> bool:
        if self.pid is not None and row.pid != self.pid:
            return False
        return not (self.org is not None and row.agent_org != self.org)

    @property
    def unrestricted(self) -> bool:
        return self.pid is None and self.org is None


class AccessProjection:
    """The off-chain search index of access events (idempotent by seq, resumable from its cursor).

    A projection fed by the :class:`~ciphercare.services.platform.projections.ProjectionRunner`.
    """

    cursor_name = ACCESS_PROJECTION
    # scoreperf (issue 16 item 3): AccessBatchRecorded entries project one row per member (services/audit/batches.py)
    event_names = frozenset({EVENT_NAME, BATCH_EVENT_NAME})

    def __init__(self, store: OffchainStore) -> None:
        self.store = store

    def cursor(self) -> int:
        return self.store.projection_cursor()

    def apply(self, events: Sequence[CommittedEvent], next_seq: int) -> None:
        rows = [index_from_event(e) for e in events if e.name == EVENT_NAME]
        rows += project_batches(self.store, events)  # scoreperf: batched access events
        self.store.project_access_events(rows, next_seq=next_seq)

    def replay(self, log: TransparencyLog) -> int:
        """Apply every committed event past the cursor, on its own (the store check); returns how many."""
        start, end = self.cursor(), log.size()
        if start >= end:
            return 0
        events = list(committed_events(log, start, end, self.event_names))
        self.apply(events, end)
        return len(events)


class AccessLogServicer(access_log_pb2_grpc.AccessLogServiceServicer):
    def __init__(self, ledger: ContractHandles, store: OffchainStore, projections: ProjectionRunner,
                 observers: Mapping[str, Sequence[str]] | None = None) -> None:
        self.observers = {org: frozenset(names) for org, names in (observers or {}).items()}
        self.ledger = ledger
        self.log = ledger.transparency
        self.store = store
        self.vkey = self.log.verifier_key()
        self._projections = projections

    def _read_committed(self) -> None:
        """Bring the search index up to the ledger before answering (read-your-writes).

        Writers other than ``Record`` (scoring, the rejection hook) leave the projection to the
        ledger follower, which applies bursts asynchronously; a reader must not see less than
        what was committed before it asked.
        """
        self._projections.read_committed()

    # Writes -----------------------------------------------------------------

    async def Record(
        self, request: access_log_pb2.RecordRequest, context: grpc.aio.ServicerContext
    ) -> access_log_pb2.RecordResponse:
        """Validate, authorise and check the cited consent first; store the detail; then write the ledger."""
        principal = current_principal()
        for field in ("type", "action", "purpose_of_use", "pid"):
            if not getattr(request, field):
                raise invalid(f"{field} is required")
        event = audit_convert.record_input_from_proto(request, None)
        if not event["source"]["observer"]:
            # BALP: the observer is the system that saw the access; default to the caller's client.
            event["source"]["observer"] = f"{principal.org}/{principal.client_id or 'client'}"
        self._check_observer(principal, event["source"]["observer"])
        detail: bytes | None = None
        if request.detail_json:
            if len(request.detail_json.encode("utf-8")) > MAX_DETAIL_BYTES:
                raise invalid(f"detail_json is larger than {MAX_DETAIL_BYTES} bytes")
            try:
                parsed = json.loads(request.detail_json)
            except json.JSONDecodeError as exc:
                raise invalid(f"detail_json is not JSON: {exc.msg} at position {exc.pos}") from exc
            except RecursionError:
                raise invalid("detail_json nests too deeply") from None
            if not isinstance(parsed, dict):
                raise invalid("detail_json must be a JSON object")
            try:
                detail = canonical.dumps(parsed)
            except (canonical.CanonicalJSONError, ValueError, RecursionError) as exc:
                raise invalid(f"detail_json cannot be stored canonically: {str(exc)[:200]}") from None
            event["entity"]["detail_sha256"] = hashlib.sha256(detail).hexdigest()
        try:
            data = AccessEventInput.from_dict(event, "event")  # the contract's validation, before any write
        except ValidationError as exc:
            raise invalid(exc.detail) from exc
        await self._precheck_consent(principal, data)
        if detail is not None:
            await self.store.run(self.store.put_document, "access-detail", detail, pid=request.pid)
        receipt = await self.ledger.accesslog(principal).submit("Record", self.ledger.arg(event))
        committed = [e for e in receipt.events if e.name == EVENT_NAME]
        if len(committed) != 1:
            raise RuntimeError(f"Record tx {receipt.tx_id} emitted {len(committed)} AccessRecorded events")
        row = index_from_event(
            CommittedEvent(receipt.seq, receipt.tx_id, 0, committed[0].name, committed[0].payload)
        )
        # Read-your-writes for Search; the projector applies the same row idempotently.
        try:
            await self.store.run(self.store.project_access_events, [row])
        except STORE_UNAVAILABLE_ERRORS:
            # The event is committed (the ledger is the source of truth): its receipt goes back, and the index
            # row follows from the projection runner once the store is back (issue 14, dependency faults).
            log.warning("access event index not updated; the projection will add it", extra={"tx_id": receipt.tx_id})
        return access_log_pb2.RecordResponse(event=event_proto(row), receipt=self.ledger.write_receipt(receipt))

    def _check_observer(self, principal: Principal, observer: str) -> None:
        """``source_observer`` must be a system the caller's organisation registered (settings)."""
        shown = observer if len(observer) <= 64 else observer[:64] + "…"
        if observer.startswith(SERVICE_OBSERVER_PREFIX):
            raise forbidden(f"source_observer {shown!r}: names under 'ciphercare/' are reserved for ciphercare's "
                            "own services")
        registered = self.observers.get(principal.org)
        if registered is not None:
            if observer not in registered:
                raise forbidden(f"source_observer {shown!r} is not a registered system of {principal.org}; "
                                f"registered: {', '.join(sorted(registered)) or 'none'}")
        elif not observer.startswith(f"{principal.org}/"):
            raise forbidden(f"source_observer {shown!r} is not a system of {principal.org}; name one as "
                            f"'{principal.org}/<system>'")

    async def _precheck_consent(self, principal: Principal, data: AccessEventInput) -> None:
        """The contract's check of the cited consent, made before anything is stored off-chain."""
        cid = data.entity.consent_id
        if cid is None:
            return
        try:
            raw = await self.ledger.consent(READER).evaluate("Get", cid)
            consent: ConsentRecord | None = ConsentRecord.from_dict(json.loads(raw))
        except EndorseError as exc:
            if exc.code != "NOT_FOUND":
                raise
            consent = None
        refusal = consent_basis_refusal(consent, cid, data, principal.org, datetime.now(UTC))
        if refusal is not None:
            raise precondition(refusal)

    # Reads ------------------------------------------------------------------

    def _visible(self, event_id: str, principal: Principal) -> AccessEventIndex:
        """The index row of ``event_id`` if the caller may see it (reads the store: call on a store thread)."""
        row = self.store.get_access_event(event_id)
        if row is None:
            self._read_committed()
            row = self.store.get_access_event(event_id)
        if row is None or not AccessScope(principal).allows(row):
            raise not_found(f"access event {event_id} not found")
        return row

    async def Get(
        self, request: access_log_pb2.GetAccessEventRequest, context: grpc.aio.ServicerContext
    ) -> access_log_pb2.GetAccessEventResponse:
        if not request.event_id:
            raise invalid("event_id is required")
        _check_event_id(request.event_id)
        row = await self.store.run(self._visible, request.event_id, current_principal())
        return access_log_pb2.GetAccessEventResponse(event=event_proto(row))

    async def Search(
        self, request: access_log_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> access_log_pb2.SearchResponse:
        scope = AccessScope(current_principal())
        page_size = request.page_size or DEFAULT_PAGE
        if page_size > MAX_PAGE:
            raise invalid(f"page_size must be at most {MAX_PAGE}")
        outcome = ""
        if request.outcome:
            if request.outcome not in audit_convert.OUTCOME_FROM_PROTO:
                raise invalid("outcome is not a known AccessOutcome")
            outcome = audit_convert.OUTCOME_FROM_PROTO[request.outcome]
        query = AccessQuery(
            pid=request.pid,
            agent_subject=request.requester_subject,
            agent_org=request.organization,
            purpose=request.purpose_of_use,
            outcome=outcome,
            recorded_from_ms=convert.ms_from_timestamp(request.recorded_from, "recorded_from")
            if request.HasField("recorded_from") else None,
            recorded_to_ms=convert.ms_from_timestamp(request.recorded_to, "recorded_to")
            if request.HasField("recorded_to") else None,
            scope_pid=scope.pid,
            scope_org=scope.org,
        )
        after, member = (decode_page_token_at(request.page_token, query.fingerprint()) if request.page_token
                         else (-1, None))
        rows, more = await self.store.run(self._search, query, after, page_size, member)
        token = encode_page_token(rows[-1].seq, query.fingerprint(), rows[-1].member) if more and rows else ""
        return access_log_pb2.SearchResponse(events=[event_proto(r) for r in rows], next_page_token=token)

    def _search(self, query: AccessQuery, after: int, limit: int, member: int | None
                ) -> tuple[list[AccessEventIndex], bool]:
        """One page of the index once it is level with the ledger (on a store thread)."""
        self._read_committed()
        return self.store.search_access_events(query, after_seq=after, limit=limit, after_member=member)

    # Proofs -----------------------------------------------------------------

    def _checkpoint_at(self, size: int):  # type: ignore[no-untyped-def]
        latest = self.log.checkpoint()
        if size == 0 or size == latest.size:
            return latest
        if size > latest.size:
            raise invalid(f"tree_size {size} is beyond the latest checkpoint ({latest.size})")
        checkpoint = self.log.checkpoint_at(size)
        if checkpoint is None:
            raise precondition(f"no signed checkpoint exists at tree size {size}; pass 0 for the latest")
        return checkpoint

    def _written_by_own_org(self, seq: int, principal: Principal) -> bool:
        """Did a member of the caller's organisation write ledger entry ``seq`` (its creator MSP is theirs)?"""
        if not principal.org or not principal.roles & {"hospital", "clinician"}:
            return False
        return self.log.entry(seq).creator_msp == msp_id_for_org(principal.org)

    def _about_own_patient(self, seq: int, principal: Principal) -> bool:
        """Is ledger entry ``seq`` solely about the calling patient (every event it emitted names their pid)?"""
        if "patient" not in principal.roles or not principal.pid or seq >= self.log.size():
            return False
        events = self.log.entry(seq).events
        if not events:
            return False
        for event in events:
            payload = json.loads(event.payload)
            pid = payload.get("pid") or (payload.get("entity") or {}).get("pid")
            if pid != principal.pid:
                return False
        return True

    async def GetCheckpoint(
        self, request: access_log_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> access_log_pb2.GetCheckpointResponse:
        # Ledger integrity (issue 11): the witness-cosigned checkpoint and its cosignature lines.
        cosigned = getattr(self.log, "cosigned_checkpoint", lambda: None)()
        if request.cosigned:
            if request.tree_size:
                raise invalid("pass tree_size 0 with cosigned: the newest cosigned checkpoint is returned")
            if cosigned is None:
                raise precondition("no checkpoint has been cosigned by the witness quorum yet")
            checkpoint = cosigned[0]
        else:
            checkpoint = self._checkpoint_at(request.tree_size)
        lines: list[str] = []
        if cosigned is not None and cosigned[0].size == checkpoint.size and cosigned[0].note == checkpoint.note:
            lines = [ln for ln in cosigned[1][len(checkpoint.note):].decode("utf-8").split("\n") if ln]
        return access_log_pb2.GetCheckpointResponse(
            checkpoint=convert.checkpoint_to_proto(checkpoint), verifier_key=self.vkey, cosignatures=lines
        )

    async def GetInclusionProof(
        self, request: access_log_pb2.GetInclusionProofRequest, context: grpc.aio.ServicerContext
    ) -> access_log_pb2.GetInclusionProofResponse:
        principal = current_principal()
        target = request.WhichOneof("target")
        if target == "event_id":
            _check_event_id(request.event_id)
            visible = await self.store.run(self._visible, request.event_id, principal)
            seq = visible.seq
        elif target == "sequence":
            seq = request.sequence
            if seq >= self.log.size():
                raise not_found(f"no ledger entry {seq} (the ledger has {self.log.size()})")
            if not (principal.roles & ALL_SCOPE_ROLES or self._written_by_own_org(seq, principal)
                    or self._about_own_patient(seq, principal)):
                raise forbidden(
                    "a proof by sequence is for compliance officers and admins, for entries the caller's own "
                    "organisation wrote, or for entries solely about the caller's own patient record"
                )
        else:
            raise invalid("event_id or sequence is required")
        checkpoint = self._checkpoint_at(request.tree_size)
        if seq >= checkpoint.size:
            raise precondition(f"entry {seq} is not covered by the checkpoint of size {checkpoint.size} yet")
        proof = self.log.inclusion_proof(seq, checkpoint.size)
        entry = self.log.entry(seq)
        response = access_log_pb2.GetInclusionProofResponse(
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            hashes=list(proof.hashes),
            leaf=entry.leaf,
            checkpoint=convert.checkpoint_to_proto(checkpoint),
        )
        if target == "event_id":  # scoreperf (issue 16): a batched event's membership (salt, member, path)
            membership = await self.store.run(membership_for_row, self.store, self.log, visible)
            if membership is not None:
                response.batch_membership.CopyFrom(membership_to_proto(membership))
        return response

    async def GetConsistencyProof(
        self, request: access_log_pb2.GetConsistencyProofRequest, context: grpc.aio.ServicerContext
    ) -> access_log_pb2.GetConsistencyProofResponse:
        second = self._checkpoint_at(request.second_tree_size)
        if request.first_tree_size == 0 or request.first_tree_size > second.size:
            raise invalid(f"first_tree_size must be in 1..{second.size}")
        first = self._checkpoint_at(request.first_tree_size)
        proof = self.log.consistency_proof(first.size, second.size)
        return access_log_pb2.GetConsistencyProofResponse(
            first_tree_size=proof.first_size,
            second_tree_size=proof.second_size,
            hashes=list(proof.hashes),
            first_checkpoint=convert.checkpoint_to_proto(first),
            second_checkpoint=convert.checkpoint_to_proto(second),
        )

    # Streaming --------------------------------------------------------------

    async def Watch(
        self, request: access_log_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[access_log_pb2.AccessEvent]:
        scope = AccessScope(current_principal())
        stream = self.ledger.events(request.start_sequence, frozenset({EVENT_NAME, BATCH_EVENT_NAME}))
        iterator = iter(stream)
        try:
            while True:
                event = await asyncio.to_thread(next, iterator, None)
                if event is None:
                    return
                # scoreperf (issue 16): a batch entry streams one event per member (members read off-chain)
                rows = ([index_from_event(event)] if event.name == EVENT_NAME
                        else await self.store.run(project_batches, self.store, [event], True))
                for row in rows:
                    if not scope.allows(row):
                        continue
                    if request.pid and row.pid != request.pid:
                        continue
                    if request.organization and row.agent_org != request.organization:
                        continue
                    yield event_proto(row)
        finally:
            stream.close()


def encode_page_token(after_seq: int, fingerprint: str, member: int = -1) -> str:
    # scoreperf: a page may end inside a batch entry (many rows share its seq): the member position goes along.
    raw = canonical.dumps({"after": after_seq, "q": fingerprint} | ({"m": member} if member >= 0 else {}))
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_page_token_at(token: str, fingerprint: str) -> tuple[int, int | None]:
    """(seq, member) after which the next page starts (member None: after every row of seq)."""
    after = decode_page_token(token, fingerprint)
    padded = token + "=" * (-len(token) % 4)
    member = json.loads(base64.urlsafe_b64decode(padded.encode("ascii"))).get("m")
    if member is not None and (not isinstance(member, int) or member < 0):
        raise invalid("page_token is malformed")
    return after, member


def decode_page_token(token: str, fingerprint: str) -> int:
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise invalid("page_token is malformed (too long)")
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")), parse_constant=_no_constant)
        after = data["after"]
        query = data["q"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise invalid("page_token is malformed") from exc
    # Exactly the int the service wrote: not a bool (JSON true), a float, a string or out of range.
    if type(after) is not int or not isinstance(query, str):
        raise invalid("page_token is malformed")
    if query != fingerprint:
        raise invalid("page_token belongs to a search with different filters")
    if not 0 <= after < MAX_SEQ:
        raise invalid("page_token is malformed (position out of range)")
    return after


def _no_constant(_: str) -> Any:
    raise ValueError("NaN and Infinity are not allowed")


def _check_event_id(event_id: str) -> None:
    """A well-formed event id (``ae-`` + 32 hex), refused without echoing anything longer."""
    if not EVENT_ID_RE.match(event_id):
        shown = repr(event_id) if len(event_id) <= 40 else f"a {len(event_id)}-character string"
        raise invalid(f"event_id {shown} is not an access event id (ae- followed by 32 lower-case hex)")
