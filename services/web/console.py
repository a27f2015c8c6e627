"""The compliance console: search access events, check the ledger's integrity, export, chart, flags.

Searches run as the signed-in user, so the services scope them (a compliance
officer sees everything, a clinician their organisation). Results come from
``ComplianceService``: newest first by default, one page at a time with cursors
both ways; counts and the chart come from the service's aggregates over the whole
search, never from a page of rows; exports stream the service's complete export.
Integrity is checked here with the SDK: the latest checkpoint's signature, its
consistency with the last checkpoint this session verified, and the inclusion
proof of each event on the page shown (the panel says which page it checked).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from ciphercare.consent import codes
from ciphercare.consent.model import EVENT_ID_RE, ORG_RE, PID_RE, SUBJECT_RE
from ciphercare.ledger.transparency.checkpoint import CheckpointError, CheckpointKeyring
from ciphercare.sdk.audit import AuditClient
from ciphercare.sdk.checkpoints import CheckpointCheckError, CheckpointMemory, Remembered, RollbackError, served_note
from ciphercare.sdk.client import CiphercareClient, ProofError
from ciphercare.sdk.receipts import ReceiptError, access_event_receipt, verify_receipt
from ciphercare.services.web import chart, present
from ciphercare.services.web.app import WebApp
from ciphercare.services.web.portal import pinned_vkey
from ciphercare.services.web.sessions import Session, VerifiedCheckpoint
from ciphercare.v1 import access_log_pb2, compliance_pb2

PAGE_SIZES = (10, 25, 50, 100)
ORDERS = ("newest", "oldest")
FILTER_FIELDS = ("pid", "requester", "organization", "purpose", "outcome", "recorded_from", "recorded_to", "size",
                 "order")


def routes(web: WebApp) -> list[Route]:
    return [
        Route("/console", web.page(search)),
        Route("/console/verify", web.page(verify), methods=["POST"]),
        Route("/console/patient", web.page(patient_lookup)),
        Route("/console/events/{event_id}", web.page(event_detail)),
        Route("/console/events/{event_id}/receipt.json", web.page(event_receipt)),
        Route("/console/export.csv", web.page(export_csv)),
        Route("/console/export.fhir.json", web.page(export_fhir)),
        Route("/console/export.jsonl", web.page(export_jsonl)),
        Route("/console/flags", web.page(flags_page)),
    ]


@dataclass
class Filters:
    """The search form: raw values, per-field errors, and the filter they make."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    request: compliance_pb2.AccessFilter = field(default_factory=compliance_pb2.AccessFilter)
    page_size: int = 25
    newest_first: bool = True

    @classmethod
    def parse(cls, source: Any) -> Filters:
        f = cls(values={k: str(source.get(k, "") or "").strip() for k in FILTER_FIELDS})
        v, e, r = f.values, f.errors, f.request
        if v["pid"]:
            if PID_RE.match(v["pid"]):
                r.pid = v["pid"]
            else:
                e["pid"] = "A patient pseudonym is 3-64 letters, digits, dots, hyphens or underscores."
        if v["requester"]:
            if SUBJECT_RE.match(v["requester"]):
                r.requester_subject = v["requester"]
            else:
                e["requester"] = "Enter the requester's subject id exactly as shown in the results."
        if v["organization"]:
            if ORG_RE.match(v["organization"]):
                r.organization = v["organization"]
            else:
                e["organization"] = "Use the organisation's id, for example hospital-a."
        if v["purpose"]:
            if v["purpose"] in codes.PURPOSES_OF_USE:
                r.purpose_of_use = v["purpose"]
            else:
                e["purpose"] = "Choose a purpose from the list."
        if v["outcome"]:
            if v["outcome"] in present.OUTCOME_CODES:
                r.outcome = present.OUTCOME_CODES[v["outcome"]]
            else:
                e["outcome"] = "Choose an outcome from the list."
        start = f._time("recorded_from")
        end = f._time("recorded_to")
        if start is not None:
            r.recorded_from.CopyFrom(_ts(start))
        if end is not None:
            r.recorded_to.CopyFrom(_ts(end))
        if start is not None and end is not None and end <= start:
            e["recorded_to"] = "The end of the time range must be after its start."
        if v["size"]:
            if v["size"].isdigit() and int(v["size"]) in PAGE_SIZES:
                f.page_size = int(v["size"])
            else:
                e["size"] = f"Choose {', '.join(map(str, PAGE_SIZES))} per page."
        if v["order"]:
            if v["order"] in ORDERS:
                f.newest_first = v["order"] == "newest"
            else:
                e["order"] = "Choose newest or oldest first."
        return f

    def search_request(self, page_token: str = "") -> compliance_pb2.ComplianceSearchRequest:
        order = (compliance_pb2.SEARCH_ORDER_NEWEST_FIRST if self.newest_first
                 else compliance_pb2.SEARCH_ORDER_OLDEST_FIRST)
        return compliance_pb2.ComplianceSearchRequest(filter=self.request, order=order, page_size=self.page_size,
                                                      page_token=page_token)

    def _time(self, name: str) -> datetime | None:
        text = self.values[name]
        if not text:
            return None
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            self.errors[name] = "Enter a date and time (UTC) like 2026-11-21T14:30."
            return None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)

    def query(self, **extra: str) -> str:
        items = {k: v for k, v in self.values.items() if v}
        items.update({k: v for k, v in extra.items() if v})
        return urllib.parse.urlencode(items)

    @property
    def any(self) -> bool:
        return any(v for k, v in self.values.items() if k not in ("size", "order"))


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


# ----------------------------------------------------------------------- search


async def search(web: WebApp, request: Request, session: Session) -> Response:
    filters = Filters.parse(request.query_params)
    page_token = request.query_params.get("page", "")
    events: list[access_log_pb2.AccessEvent] = []
    page = compliance_pb2.ComplianceSearchResponse()
    aggregate = compliance_pb2.AggregateResponse()
    if not filters.errors:
        def load(client: CiphercareClient) -> tuple[Any, Any]:
            audit = AuditClient(client)
            return audit.search(filters.search_request(page_token)), audit.aggregate(filters.request)

        page, aggregate = await web.call(session, load)
        events = list(page.events)
    data, unit = chart.day_buckets((d.day, d.count, d.denied, d.errors) for d in aggregate.by_day)
    by_outcome = {c.outcome: c.count for c in aggregate.by_outcome}
    counts = {"allowed": by_outcome.get(access_log_pb2.ACCESS_OUTCOME_SUCCESS, 0),
              "denied": by_outcome.get(access_log_pb2.ACCESS_OUTCOME_DENIED, 0),
              "error": by_outcome.get(access_log_pb2.ACCESS_OUTCOME_ERROR, 0)}
    user = session.user
    shown = [e.id for e in events]
    integrity = session.integrity
    return web.render(request, "console.html", {
        "title": "Access log", "filters": filters, "events": [present.access_view(e) for e in events],
        "next_query": filters.query(page=page.next_page_token) if page.next_page_token else "",
        "previous_query": filters.query(page=page.previous_page_token) if page.previous_page_token else "",
        "first_query": filters.query() if page_token else "", "total": aggregate.total, "counts": counts,
        "organizations": list(aggregate.by_organization)[:10],
        "chart_svg": chart.svg(data, unit), "chart_rows": data, "chart_unit": unit,
        "purposes": list(codes.PURPOSES_OF_USE.items()), "page_sizes": PAGE_SIZES,
        "integrity": integrity, "inclusion": session.inclusion, "page_token": page_token,
        # The inclusion line speaks of this page only when the last check covered exactly the events shown.
        "integrity_matches_page": bool(integrity) and integrity.get("event_ids") == shown,
        "shown": len(shown),
        "scope_note": _scope_note(user.roles if user else frozenset(), user.org if user else ""),
        "export_query": filters.query(), "can_see_flags": bool(user and user.roles & FLAG_ROLES),
    }, 400 if filters.errors else 200)


def _scope_note(roles: frozenset[str], org: str) -> str:
    if roles & {"compliance-officer", "admin"}:
        return "You see every access event on the ledger."
    if roles & {"clinician", "hospital"}:
        return f"The service shows you the access events of your organisation ({org})."
    return "The service shows you the access events about you."


async def patient_lookup(web: WebApp, request: Request, session: Session) -> Response:
    pid = request.query_params.get("pid", "").strip()
    if not PID_RE.match(pid):
        session.flash.append({"text": "Enter a valid patient pseudonym to open a patient's consents."})
        return RedirectResponse("/console", status_code=303)
    return RedirectResponse(f"/patients/{urllib.parse.quote(pid)}", status_code=303)


# -------------------------------------------------------------------- integrity


def _verified(checkpoint: Any, note: str) -> VerifiedCheckpoint:
    return VerifiedCheckpoint(origin=checkpoint.origin, tree_size=checkpoint.size,
                              root_hash_hex=checkpoint.root_hash.hex(), timestamp_ms=checkpoint.timestamp_ms,
                              signed_note=note, verified_at=time.time())


def _witness_policy(web: WebApp) -> Any:
    """The deployment's witness policy (CIPHERCARE_WITNESS_POLICY), or None: the console requires its quorum."""
    path = getattr(web.settings, "witness_policy", None)
    if not path:
        return None
    from ciphercare.ledger.witness.policy import Policy

    return Policy.load(path)


def check_integrity(web: WebApp, session: Session, client: CiphercareClient,
                    event_ids: list[str]) -> dict[str, Any]:
    """Verify the latest checkpoint, its consistency with the session's last one, and events' inclusion (SDK)."""
    report: dict[str, Any] = {"checked_at": datetime.now(UTC).strftime("%d %b %Y, %H:%M:%S UTC"), "ok": False,
                              "problems": []}
    verifier, latest = client.verifier()
    vkey = pinned_vkey(web, session, latest.verifier_key)
    report["vkey"] = vkey
    try:
        checkpoint = verifier.verify(latest.checkpoint.signed_note.encode("utf-8"))
    except CheckpointError as exc:
        report["problems"].append(f"The latest checkpoint's signature does not verify: {exc}")
        return report
    current = _verified(checkpoint, latest.checkpoint.signed_note)
    report["checkpoint"] = current
    previous = session.last_checkpoint
    # Ledger integrity (issue 11): the session remembers the last verified checkpoint; every newer one must come
    # with a consistency proof from it; a rollback or fork is reported with both signed notes as evidence.
    policy = _witness_policy(web)
    memory = CheckpointMemory(CheckpointKeyring([verifier]), policy=policy)
    served = latest
    if policy is not None and policy.quorum:
        served = client.call(client.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest(cosigned=True))
    if previous is not None:
        memory.seed(Remembered(previous.origin, previous.tree_size, bytes.fromhex(previous.root_hash_hex),
                               previous.signed_note.encode("utf-8"), previous.verified_at))

    def prove(first: int, second: int) -> list[bytes]:
        proof = client.call(client.access_log.GetConsistencyProof, access_log_pb2.GetConsistencyProofRequest(
            first_tree_size=first, second_tree_size=second))
        return list(proof.hashes)

    try:
        result = memory.check_note(served_note(served), prove)
        report["consistency"] = "first" if previous is None else "consistent"
        if previous is not None:
            report["previous"] = previous
        if result.witnesses:
            report["witnesses"] = list(result.witnesses)
    except RollbackError as exc:
        report["consistency"] = "inconsistent"
        report["previous"] = previous
        report["evidence"] = exc.evidence()
        report["problems"].append(f"The log is not consistent with the checkpoint verified before: {exc}")
    except CheckpointCheckError as exc:
        report["problems"].append(f"The latest checkpoint does not verify: {exc}")
        return report
    included = 0
    for event_id in event_ids:
        try:
            proof = client.verify_event_inclusion(event_id, verifier)
        except (ProofError, CheckpointError) as exc:
            session.inclusion[event_id] = {"ok": False, "message": str(exc)}
            report["problems"].append(f"Event {event_id}: {exc}")
        else:
            included += 1
            session.inclusion[event_id] = {"ok": True, "tree_size": proof.tree_size, "leaf_index": proof.leaf_index,
                                           "root": proof.root_hash.hex()}
    report["events_checked"], report["events_included"] = len(event_ids), included
    if report["consistency"] != "inconsistent":
        session.previous_checkpoint, session.last_checkpoint = previous, current
    report["ok"] = not report["problems"]
    return report


async def verify(web: WebApp, request: Request, session: Session) -> Response:
    form = await request.form()
    filters = Filters.parse(form)
    page_token = str(form.get("page", ""))
    event_ids: list[str] = []

    def run(client: CiphercareClient) -> dict[str, Any]:
        if not filters.errors:  # exactly the events of the page the officer is looking at
            event_ids.extend(e.id for e in AuditClient(client).search(filters.search_request(page_token)).events)
        report = check_integrity(web, session, client, event_ids)
        report["event_ids"] = list(event_ids)
        return report

    session.integrity = await web.call(session, run)
    return RedirectResponse(f"/console?{filters.query(page=page_token)}#integrity", status_code=303)


# ----------------------------------------------------------------------- events


def _event_id(request: Request) -> str | None:
    event_id = request.path_params["event_id"]
    return event_id if EVENT_ID_RE.match(event_id) else None


async def event_detail(web: WebApp, request: Request, session: Session) -> Response:
    event_id = _event_id(request)
    if event_id is None:
        return web.error(request, 404, "Not found", "There is no access event at this address.")

    def load(client: CiphercareClient) -> tuple[access_log_pb2.AccessEvent, dict[str, Any]]:
        event = client.call(client.access_log.Get, access_log_pb2.GetAccessEventRequest(event_id=event_id)).event
        _, latest = client.verifier()
        vkey = pinned_vkey(web, session, latest.verifier_key)
        # The badge is the receipt check anyone runs: signature, inclusion AND every field shown vs the leaf.
        proof = client.call(client.access_log.GetInclusionProof,
                            access_log_pb2.GetInclusionProofRequest(event_id=event_id))
        try:
            check = verify_receipt(access_event_receipt(event, proof, vkey), vkey)
        except ReceiptError as exc:
            return event, {"ok": False, "message": str(exc)}
        if not check.ok:
            return event, {"ok": False, "message": "; ".join(check.problems)}
        return event, {"ok": True, "tree_size": check.tree_size, "leaf_index": proof.leaf_index,
                       "root": check.root_hash_hex}

    event, inclusion = await web.call(session, load)
    session.inclusion[event_id] = inclusion
    return web.render(request, "event.html", {
        "title": f"Access event {event_id}", "event": present.access_view(event), "raw": event,
        "inclusion": inclusion, "data_classes": list(event.data_classes),
    })


async def event_receipt(web: WebApp, request: Request, session: Session) -> Response:
    event_id = _event_id(request)
    if event_id is None:
        return web.error(request, 404, "Not found", "There is no access event at this address.")

    def load(client: CiphercareClient) -> tuple[Any, Any, str]:
        event = client.call(client.access_log.Get, access_log_pb2.GetAccessEventRequest(event_id=event_id)).event
        proof = client.call(client.access_log.GetInclusionProof,
                            access_log_pb2.GetInclusionProofRequest(event_id=event_id))
        served = client.call(client.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest()).verifier_key
        return event, proof, served

    event, proof, served = await web.call(session, load)
    vkey = pinned_vkey(web, session, served)
    if proof.HasField("batch_membership"):  # scoreperf (issue 16): one member of an access batch
        from ciphercare.sdk.batch_receipts import batch_event_receipt, membership_from_proto, verify_batch_receipt

        receipt = batch_event_receipt(event, membership_from_proto(proof.batch_membership), proof, vkey,
                                      event.tx_id, event.sequence)
        check = verify_batch_receipt(receipt, vkey)
    else:
        receipt = access_event_receipt(event, proof, vkey)
        check = verify_receipt(receipt, vkey)
    if not check.ok:
        return web.error(request, 502, "Proof did not verify", "; ".join(check.problems))
    return Response(json.dumps(receipt, indent=2) + "\n", media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="receipt-{event_id}.json"'})


# ---------------------------------------------------------------------- exports


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


async def _export(web: WebApp, request: Request, session: Session, fmt: str, media_type: str,
                  filename: str) -> Response:
    """Stream the service's complete export (every matching event, newest first; no cap)."""
    filters = Filters.parse(request.query_params)
    if filters.errors:
        return web.error(request, 400, "Export not possible", "Fix the search filters first: "
                         + " ".join(filters.errors.values()))

    def start(client: CiphercareClient) -> tuple[Any, Any]:
        chunks = AuditClient(client).export(filters.request, fmt)
        return next(chunks, None), chunks  # the first chunk: a refusal becomes an error page, not a broken file

    first, rest = await web.call(session, start)

    def body() -> Any:
        if first is not None:
            yield first.data
        for chunk in rest:  # a failure after this point aborts the download: never a silently short file
            yield chunk.data

    headers = {"Content-Disposition": f'attachment; filename="{filename}-{_stamp()}.{fmt_extension(fmt)}"'}
    if first is not None:
        headers["X-Ciphercare-Export-Rows"] = str(first.total_rows)
    return StreamingResponse(body(), media_type=media_type, headers=headers)


def fmt_extension(fmt: str) -> str:
    return {"csv": "csv", "fhir": "json", "jsonl": "jsonl"}[fmt]


async def export_csv(web: WebApp, request: Request, session: Session) -> Response:
    return await _export(web, request, session, "csv", "text/csv; charset=utf-8", "access-events")


async def export_fhir(web: WebApp, request: Request, session: Session) -> Response:
    return await _export(web, request, session, "fhir", "application/fhir+json", "audit-events")


async def export_jsonl(web: WebApp, request: Request, session: Session) -> Response:
    return await _export(web, request, session, "jsonl", "application/jsonl", "access-events")


# ------------------------------------------------------------------------ flags

FLAG_ROLES = frozenset({"compliance-officer", "admin", "hospital"})
KIND_WORDS = {
    "snooping": "Looking up patients without a reason on record",
    "bulk_export": "Bulk access or export",
    "off_hours": "Unusual night-time access",
    "shared_credentials": "One account used from several workstations at once",
    "model_extraction": "Scoring volumes shaped like probing the model",
    "break_glass": "Repeated break-glass outside any care relationship",
}


async def flags_page(web: WebApp, request: Request, session: Session) -> Response:
    params = request.query_params
    values = {k: str(params.get(k, "") or "").strip() for k in ("from", "to", "requester", "organization")}
    errors: dict[str, str] = {}
    times: dict[str, datetime] = {}
    for name in ("from", "to"):
        if values[name]:
            try:
                parsed = datetime.fromisoformat(values[name])
                times[name] = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
            except ValueError:
                errors[name] = "Enter a date and time (UTC) like 2026-11-21T14:30."
    end = times.get("to") or datetime.now(UTC)
    start = times.get("from") or end - timedelta(days=1)
    if not errors and end <= start:
        errors["to"] = "The end of the window must be after its start."
    if values["requester"] and not SUBJECT_RE.match(values["requester"]):
        errors["requester"] = "Enter the requester's subject id exactly as shown."
    if values["organization"] and not ORG_RE.match(values["organization"]):
        errors["organization"] = "Use the organisation's id, for example hospital-a."
    result: dict[str, Any] = {}
    if not errors:
        flags_request = compliance_pb2.ListFlagsRequest(requester_subject=values["requester"],
                                                        organization=values["organization"], page_size=500)
        flags_request.window_start.CopyFrom(_ts(start))
        flags_request.window_end.CopyFrom(_ts(end))
        pages = await web.call(session, lambda c: list(AuditClient(c).flags(flags_request)))
        first = pages[0]
        result = {
            "flags": [_flag_view(f) for page in pages for f in page.flags], "examined": first.events_examined,
            "history_events": first.history_events, "notice": first.notice,
            "history_from": first.history_start.ToDatetime(tzinfo=UTC).strftime("%d %b %Y"),
            "history_to": first.history_end.ToDatetime(tzinfo=UTC).strftime("%d %b %Y, %H:%M UTC"),
        }
    return web.render(request, "flags.html", {
        "title": "Unusual access", "values": values, "errors": errors,
        "window_from": start.strftime("%d %b %Y, %H:%M UTC"), "window_to": end.strftime("%d %b %Y, %H:%M UTC"),
        **result,
    }, 400 if errors else 200)


def _flag_view(flag: compliance_pb2.UnusualAccessFlag) -> dict[str, Any]:
    start = flag.window_start.ToDatetime(tzinfo=UTC)
    end = flag.window_end.ToDatetime(tzinfo=UTC)
    return {
        "id": flag.id, "kind": flag.kind, "kind_words": KIND_WORDS.get(flag.kind, flag.kind),
        "requester": flag.requester_subject, "organization": flag.organization,
        "window": f"{start.strftime('%d %b %Y, %H:%M')} to {end.strftime('%d %b %Y, %H:%M')} UTC",
        "score": flag.score, "reasons": list(flag.reasons), "patients": list(flag.patients),
        "by_rule": any(d.startswith("rule:") for d in flag.detectors), "by_model": "model" in flag.detectors,
        "search_query": urllib.parse.urlencode({
            "requester": flag.requester_subject, "organization": flag.organization,
            "recorded_from": start.strftime("%Y-%m-%dT%H:%M"), "recorded_to": end.strftime("%Y-%m-%dT%H:%M")}),
    }
