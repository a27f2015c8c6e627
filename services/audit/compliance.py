"""ComplianceService: unusual-access flags, newest-first search both ways, aggregates and complete exports.

Scope comes from the caller's identity (:class:`~ciphercare.services.audit.servicer.AccessScope`):
compliance officers and admins read every organisation, providers their own organisation's events. The
role table (services/identity/rules.py) keeps patients out, and clinicians out of flags (a flag names a
colleague). Every read runs in SQL over the projection (``services/store/audit_queries.py``).

Flags come from the unusual-access detector (``analytics/anomaly``): fitted on the consortium's own
access events in the ``compliance_flag_history_days`` before the window, then run over the window. What
can explain an access: the agents' roles (clinician or service account), the consents on the ledger and
the break-glass declarations on the ledger (the declarer's own accesses to that patient while it lasts).
Care relationships and rosters live in the hospitals' systems, not here, so every clinician's treatment
access is "unexplained" to the detector and the rules and the model carry the load (docs/ANOMALY.md).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format

from ciphercare.consent import canonical
from ciphercare.ledger.api import LedgerError, Principal
from ciphercare.services.audit import convert as audit_convert
from ciphercare.services.audit import exports
from ciphercare.services.audit.servicer import AccessScope, event_proto
from ciphercare.services.identity.interceptor import current_principal
from ciphercare.services.platform import convert
from ciphercare.services.platform.errors import forbidden, invalid
from ciphercare.services.platform.gateway import ContractHandles, evaluate_json
from ciphercare.services.platform.projections import ProjectionRunner
from ciphercare.services.store import AccessQuery, OffchainStore
from ciphercare.services.store.audit_queries import DAY_MS, AccessEventQueries, Direction
from ciphercare.v1 import access_log_pb2, compliance_pb2, compliance_pb2_grpc

DEFAULT_PAGE = 100
MAX_PAGE = 1000
DEFAULT_FLAG_PAGE = 50
MAX_FLAG_PAGE = 500
MAX_FLAG_WINDOW_DAYS = 31
#: Export chunks are cut at about this many bytes (well under the gRPC message limit).
CHUNK_BYTES = 256 * 1024
EXPORT_BATCH = 500
#: Consents explain accesses by service accounts and for purposes other than treatment (docs/ANOMALY.md).
TREATMENT_PURPOSES = frozenset({"TREAT", "ETREAT", "CAREMGT"})
#: The server's own identity for reading consents when it explains accesses (an evaluate: never a write).
#: Patients whose consents one ListFlags reads from the ledger (one evaluate each); the rest explain nothing.
MAX_CONSENT_LOOKUPS = 2000
DETECTOR_PRINCIPAL = Principal(subject="service:ciphercare-compliance", org="ciphercare",
                               roles=frozenset({"compliance-officer"}), client_id="ciphercare-server")
log = logging.getLogger("ciphercare.compliance")


# Filters and cursors -----------------------------------------------------------------------------


def access_query(flt: compliance_pb2.AccessFilter, scope: AccessScope) -> AccessQuery:
    """The store query of a request's filter within the caller's scope (INVALID_ARGUMENT on bad input)."""
    outcome = ""
    if flt.outcome:
        if flt.outcome not in audit_convert.OUTCOME_FROM_PROTO:
            raise invalid("filter.outcome is not a known AccessOutcome")
        outcome = audit_convert.OUTCOME_FROM_PROTO[flt.outcome]
    start = convert.ms_from_timestamp(flt.recorded_from) if flt.HasField("recorded_from") else None
    end = convert.ms_from_timestamp(flt.recorded_to) if flt.HasField("recorded_to") else None
    if start is not None and end is not None and end <= start:
        raise invalid("filter.recorded_to must be after filter.recorded_from")
    return AccessQuery(pid=flt.pid, agent_subject=flt.requester_subject, agent_org=flt.organization,
                       purpose=flt.purpose_of_use, outcome=outcome, recorded_from_ms=start, recorded_to_ms=end,
                       scope_pid=scope.pid, scope_org=scope.org)


def _encode(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(canonical.dumps(data)).decode("ascii").rstrip("=")


def _decode(token: str) -> dict[str, Any]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, TypeError) as exc:
        raise invalid("page_token is malformed") from exc
    if not isinstance(data, dict):
        raise invalid("page_token is malformed")
    return data


def encode_search_token(direction: Direction, seq: int, fingerprint: str) -> str:
    return _encode({"d": direction, "s": seq, "q": fingerprint})


def decode_search_token(token: str, fingerprint: str) -> tuple[Direction, int]:
    data = _decode(token)
    direction, seq = data.get("d"), data.get("s")
    if direction not in ("next", "previous") or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise invalid("page_token is malformed")
    if data.get("q") != fingerprint:
        raise invalid("page_token belongs to a search with different filters or order")
    return direction, seq  # type: ignore[return-value]


# Flags -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagRun:
    """The detector's output for one window (every organisation), cached by window and projection size."""

    flags: tuple[dict[str, Any], ...]
    events_by_org: dict[str, int]
    history_events: int
    history_start_ms: int
    history_end_ms: int
    notice: str


def flag_id(requester: str, org: str, window_start: str) -> str:
    return hashlib.sha256(f"{requester}|{org}|{window_start}".encode()).hexdigest()[:16]


def _roster(records: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Each requester's kind from the roles on its events: a clinician, else a service account."""
    kinds: dict[tuple[str, str], str] = {}
    for record in records:
        agent = record["agent"]
        key = (agent["subject"], agent["org"])
        kind = "clinician" if "clinician" in agent["roles"] else "service"
        if kinds.get(key) != "clinician":
            kinds[key] = kind
    return [{"requester": r, "org": o, "team": "", "kind": k} for (r, o), k in sorted(kinds.items())]


class FlagEngine:
    """Runs the unusual-access detector over the projection; one run per window and projection state."""

    def __init__(self, handles: ContractHandles | None, queries: AccessEventQueries, history_days: int) -> None:
        self.handles = handles
        self.queries = queries
        self.history_ms = history_days * DAY_MS
        self._cache: OrderedDict[tuple[int, int, int, int, int, str], FlagRun] = OrderedDict()
        self._lock = threading.Lock()

    def run(self, start_ms: int, end_ms: int, consents: dict[str, list[dict[str, Any]]],
            declarations: Iterable[dict[str, Any]] = ()) -> FlagRun:
        """Fit on the history before ``start_ms`` and detect over [start_ms, end_ms) (CPU bound: off the loop).

        ``declarations``: the breakglass contract's declarations; each explains its declarer's accesses to its
        patient at the declarer's organisation while it is active, and counts towards repeated break-glass.
        """
        import pandas as pd

        from ciphercare.analytics.anomaly import AccessAnomalyDetector, AuditContext, events_from_records
        from ciphercare.analytics.anomaly.explain import break_glass_from_records, consents_from_records

        history_start = start_ms - self.history_ms
        history = list(self.queries.detector_records(AccessQuery(recorded_from_ms=history_start,
                                                                 recorded_to_ms=start_ms)))
        window = list(self.queries.detector_records(AccessQuery(recorded_from_ms=start_ms, recorded_to_ms=end_ms)))
        events_by_org: dict[str, int] = {}
        for record in window:
            org = record["agent"]["org"]
            events_by_org[org] = events_by_org.get(org, 0) + 1
        empty = FlagRun((), events_by_org, len(history), history_start, start_ms, "")
        if not window:
            return empty
        if not history:
            return FlagRun((), events_by_org, 0, history_start, start_ms,
                           "no access events in the history window: the detector has nothing to learn from")
        roster = pd.DataFrame(_roster([*history, *window]), columns=["requester", "org", "team", "kind"])
        consent_rows = consents_from_records(record for records in consents.values() for record in records)
        context = AuditContext.build(roster=roster, consents=consent_rows,
                                     break_glass=break_glass_from_records(declarations))
        try:
            detector = AccessAnomalyDetector().fit(events_from_records(history), context)
        except ValueError as exc:
            return FlagRun((), events_by_org, len(history), history_start, start_ms, f"no flags: {exc}")
        flags = detector.detect(events_from_records(window), context)
        out = []
        for flag in flags:
            data = flag.to_dict()
            data["id"] = flag_id(flag.requester, flag.organization, data["window_start"])
            out.append(data)
        return FlagRun(tuple(out), events_by_org, len(history), history_start, start_ms, "")

    def pids_needing_consents(self, start_ms: int, end_ms: int) -> tuple[list[str], int]:
        """Patients whose consents can explain something (accessed by a service account or not for treatment),
        those in the window first, then the most accessed, at most :data:`MAX_CONSENT_LOOKUPS`; and how many
        there were in all."""
        window: Counter[str] = Counter()
        history: Counter[str] = Counter()
        for record in self.queries.detector_records(AccessQuery(recorded_from_ms=start_ms - self.history_ms,
                                                                recorded_to_ms=end_ms)):
            if record["purpose_of_use"] not in TREATMENT_PURPOSES or "clinician" not in record["agent"]["roles"]:
                in_window = convert.ms_from_timestamp(convert.timestamp_from_iso(record["recorded"])) >= start_ms
                (window if in_window else history)[record["entity"]["pid"]] += 1
        ranked = [pid for pid, _ in window.most_common()] + [pid for pid, _ in history.most_common()
                                                             if pid not in window]
        return ranked[:MAX_CONSENT_LOOKUPS], len(ranked)

    async def consents(self, pids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The consent contract's records of ``pids`` (read as the server; an unreadable pid explains nothing)."""
        if self.handles is None:
            return {}  # no ledger (the benchmark): nothing is explained by a consent
        contract = self.handles.consent(DETECTOR_PRINCIPAL)
        found: dict[str, list[dict[str, Any]]] = {}
        for pid in pids:
            try:
                found[pid] = list(await evaluate_json(contract, "ListForPatient", pid))
            except LedgerError as exc:
                log.warning("consents of a patient not read for flag explanation: %s", type(exc).__name__)
            await asyncio.sleep(0)  # an in-process ledger evaluates synchronously: let other calls through
        return found

    async def declarations(self, start_ms: int, end_ms: int) -> tuple[list[dict[str, Any]], str]:
        """The break-glass declarations that overlap the history or the window (read as the server), and a
        notice when they could not be read (then nothing is explained by break-glass: more flags, never fewer)."""
        if self.handles is None:
            return [], ""  # no ledger (the benchmark)
        try:
            records = await evaluate_json(self.handles.contract(DETECTOR_PRINCIPAL, "breakglass"), "ListForReview")
        except LedgerError as exc:
            log.warning("break-glass declarations not read for flag explanation: %s", type(exc).__name__)
            return [], "break-glass declarations could not be read; accesses under them count as unexplained"
        lo, hi = start_ms - self.history_ms, end_ms
        out = []
        for record in records:
            declared = convert.ms_from_timestamp(convert.timestamp_from_iso(record["declared_at"]))
            expires = convert.ms_from_timestamp(convert.timestamp_from_iso(record["expires_at"]))
            if expires > lo and declared < hi:
                out.append(record)
        return out, ""

    async def flags(self, start_ms: int, end_ms: int) -> FlagRun:
        size = await self.queries.store.run(lambda: (self.queries.max_seq(), self.queries.count(AccessQuery())))
        declarations, glass_notice = await self.declarations(start_ms, end_ms)
        # A new declaration (or review) changes what is explained: it is part of the cache key.
        key = (start_ms, end_ms, *size, len(declarations), glass_notice)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        pids, wanted = await self.queries.store.run(self.pids_needing_consents, start_ms, end_ms)
        consents = await self.consents(pids)
        # CPU bound (the detectors), one run at a time: the default executor, not one of the store's threads
        result = await asyncio.to_thread(self._locked_run, start_ms, end_ms, consents, declarations)
        if glass_notice:
            result = dataclasses.replace(result, notice=(result.notice + " " if result.notice else "") + glass_notice)
        if wanted > len(pids):  # say so: fewer explanations can only mean more flags, never fewer
            result = dataclasses.replace(result, notice=(result.notice + " " if result.notice else "") + (
                f"consents were read for {len(pids)} of {wanted} patients accessed by service accounts or for "
                "purposes other than treatment; the others' accesses count as unexplained"))
        self._cache[key] = result
        while len(self._cache) > 8:
            self._cache.popitem(last=False)
        return result

    def _locked_run(self, start_ms: int, end_ms: int, consents: dict[str, list[dict[str, Any]]],
                    declarations: list[dict[str, Any]]) -> FlagRun:
        with self._lock:  # one detector run at a time: it is CPU bound and the machine is shared
            return self.run(start_ms, end_ms, consents, declarations)


def flag_to_proto(data: dict[str, Any]) -> compliance_pb2.UnusualAccessFlag:
    message = compliance_pb2.UnusualAccessFlag(
        id=data["id"], requester_subject=data["requester"], organization=data["organization"],
        score=float(data["score"]), kind=data["kind"], reasons=data["reasons"], detectors=data["detectors"],
        patients=data["patients"])
    for field, value in (("window_start", data["window_start"]), ("window_end", data["window_end"])):
        getattr(message, field).CopyFrom(
            convert.timestamp_from_ms(int(datetime.fromisoformat(value).timestamp() * 1000)))
    return message


# Exports ---------------------------------------------------------------------------------------


def export_pieces(events: Iterable[list[access_log_pb2.AccessEvent]], fmt: int) -> Iterator[tuple[bytes, int]]:
    """The bytes of an export, piece by piece, with the number of events each piece adds."""
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    if fmt == compliance_pb2.EXPORT_FORMAT_FHIR_BUNDLE:
        head = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "meta": {"lastUpdated": now},
                "type": "collection", "timestamp": now}
        yield json.dumps(head)[:-1].encode() + b', "entry": [', 0
        first = True
        for batch in events:
            parts = []
            for e in batch:
                entry = {"fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'ciphercare:' + e.id)}",
                         "resource": exports.audit_event(e)}
                parts.append(("" if first else ",\n") + json.dumps(entry))
                first = False
            yield "".join(parts).encode(), len(batch)
        yield b"]}\n", 0
        return
    if fmt == compliance_pb2.EXPORT_FORMAT_JSON_LINES:
        for batch in events:
            lines = [json.dumps(json_format.MessageToDict(e, preserving_proto_field_name=True), sort_keys=True)
                     for e in batch]
            yield ("\n".join(lines) + "\n").encode(), len(batch)
        return
    yield ",".join(exports.CSV_COLUMNS).encode() + b"\r\n", 0
    for batch in events:
        yield exports.to_csv(batch).split("\r\n", 1)[1].encode(), len(batch)


# The servicer ---------------------------------------------------------------------------------


class ComplianceServicer(compliance_pb2_grpc.ComplianceServiceServicer):
    def __init__(self, handles: ContractHandles, store: OffchainStore, projections: ProjectionRunner,
                 history_days: int) -> None:
        self.queries = AccessEventQueries(store)
        self.engine = FlagEngine(handles, self.queries, history_days)
        self._projections = projections

    def _read_committed(self) -> None:
        self._projections.read_committed()

    async def ListFlags(self, request: compliance_pb2.ListFlagsRequest,
                        context: grpc.aio.ServicerContext) -> compliance_pb2.ListFlagsResponse:
        principal = current_principal()
        scope = AccessScope(principal)
        if scope.pid is not None:
            raise forbidden("patients cannot read unusual-access flags")
        end_ms = convert.ms_from_timestamp(request.window_end) if request.HasField("window_end") \
            else int(time.time() * 1000)
        start_ms = convert.ms_from_timestamp(request.window_start) if request.HasField("window_start") \
            else end_ms - DAY_MS
        if end_ms <= start_ms:
            raise invalid("window_end must be after window_start")
        if end_ms - start_ms > MAX_FLAG_WINDOW_DAYS * DAY_MS:
            raise invalid(f"the window may span at most {MAX_FLAG_WINDOW_DAYS} days")
        page_size = request.page_size or DEFAULT_FLAG_PAGE
        if page_size > MAX_FLAG_PAGE:
            raise invalid(f"page_size must be at most {MAX_FLAG_PAGE}")
        fingerprint = hashlib.sha256(canonical.dumps(
            [start_ms, end_ms, request.requester_subject, request.organization, scope.org])).hexdigest()[:16]
        offset = 0
        if request.page_token:
            data = _decode(request.page_token)
            offset = data.get("o", -1)
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise invalid("page_token is malformed")
            if data.get("q") != fingerprint:
                raise invalid("page_token belongs to a flag listing with a different window or filters")
        await self.queries.store.run(self._read_committed)
        run = await self.engine.flags(start_ms, end_ms)
        visible = [f for f in run.flags
                   if (scope.org is None or f["organization"] == scope.org)
                   and (not request.organization or f["organization"] == request.organization)
                   and (not request.requester_subject or f["requester"] == request.requester_subject)]
        page = visible[offset:offset + page_size]
        more = offset + page_size < len(visible)
        if scope.org is not None:
            examined = run.events_by_org.get(scope.org, 0)
        else:
            examined = sum(run.events_by_org.values())
        if request.organization:
            examined = run.events_by_org.get(request.organization, 0) if scope.org in (None, request.organization) \
                else 0
        response = compliance_pb2.ListFlagsResponse(
            flags=[flag_to_proto(f) for f in page], total_flags=len(visible), events_examined=examined,
            history_events=run.history_events, notice=run.notice,
            next_page_token=_encode({"o": offset + page_size, "q": fingerprint}) if more else "")
        response.history_start.CopyFrom(convert.timestamp_from_ms(run.history_start_ms))
        response.history_end.CopyFrom(convert.timestamp_from_ms(run.history_end_ms))
        return response

    async def Search(self, request: compliance_pb2.ComplianceSearchRequest,
                     context: grpc.aio.ServicerContext) -> compliance_pb2.ComplianceSearchResponse:
        scope = AccessScope(current_principal())
        query = access_query(request.filter, scope)
        page_size = request.page_size or DEFAULT_PAGE
        if page_size > MAX_PAGE:
            raise invalid(f"page_size must be at most {MAX_PAGE}")
        if request.order not in compliance_pb2.SearchOrder.values():
            raise invalid("order is not a known SearchOrder")
        newest_first = request.order != compliance_pb2.SEARCH_ORDER_OLDEST_FIRST
        fingerprint = query.fingerprint() + ("d" if newest_first else "a")
        cursor = decode_search_token(request.page_token, fingerprint) if request.page_token else None
        await self.queries.store.run(self._read_committed)
        page = await self.queries.store.run(self.queries.page, query, limit=page_size, newest_first=newest_first,
                                            cursor=cursor)
        return compliance_pb2.ComplianceSearchResponse(
            events=[event_proto(r) for r in page.rows],
            next_page_token=encode_search_token("next", page.next_after, fingerprint)
            if page.next_after is not None else "",
            previous_page_token=encode_search_token("previous", page.previous_before, fingerprint)
            if page.previous_before is not None else "")

    async def Aggregate(self, request: compliance_pb2.AggregateRequest,
                        context: grpc.aio.ServicerContext) -> compliance_pb2.AggregateResponse:
        scope = AccessScope(current_principal())
        query = access_query(request.filter, scope)
        await self.queries.store.run(self._read_committed)
        agg = await self.queries.store.run(self.queries.aggregate, query)
        return compliance_pb2.AggregateResponse(
            total=agg.total,
            by_outcome=[compliance_pb2.OutcomeCount(outcome=audit_convert.OUTCOME_TO_PROTO[o], count=n)
                        for o, n in sorted(agg.by_outcome.items()) if o in audit_convert.OUTCOME_TO_PROTO],
            by_day=[compliance_pb2.DayCount(day=datetime.fromtimestamp(d * 86400, tz=UTC).date().isoformat(),
                                            count=n, denied=k, errors=e) for d, n, k, e in agg.by_day],
            by_organization=[compliance_pb2.OrganizationCount(organization=o, count=n, denied=k, errors=e)
                             for o, n, k, e in agg.by_organization])

    async def Export(self, request: compliance_pb2.ExportRequest,
                     context: grpc.aio.ServicerContext) -> AsyncIterator[compliance_pb2.ExportChunk]:
        scope = AccessScope(current_principal())
        query = access_query(request.filter, scope)
        if request.format not in compliance_pb2.ExportFormat.values():
            raise invalid("format is not a known ExportFormat")
        await self.queries.store.run(self._read_committed)
        bound = await self.queries.store.run(self.queries.max_seq)
        total = await self.queries.store.run(self.queries.count, query, max_seq=bound)
        batches = (list(map(event_proto, rows)) for rows in self.queries.iter_rows(query, max_seq=bound,
                                                                                   batch=EXPORT_BATCH))
        pieces = export_pieces(batches, request.format or compliance_pb2.EXPORT_FORMAT_CSV)
        buffer: list[bytes] = []
        size = rows = 0
        while True:
            piece = await self.queries.store.run(next, pieces, None)
            if piece is None:
                break
            data, count = piece
            rows += count
            buffer.append(data)
            size += len(data)
            if size >= CHUNK_BYTES:
                yield compliance_pb2.ExportChunk(data=b"".join(buffer), rows=rows, total_rows=total)
                buffer, size = [], 0
        yield compliance_pb2.ExportChunk(data=b"".join(buffer), rows=rows, total_rows=total)
