"""The patient portal: consents in plain language, grant and revoke, access history, receipts.

Every read and write goes through the services as the signed-in user; the
services decide who may see or change what (a patient only their own pid). The
pages only hide controls the services would refuse anyway.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ciphercare.consent import codes
from ciphercare.consent.model import CONSENT_ID_RE, EVENT_ID_RE, ORG_RE, PID_RE
from ciphercare.sdk.client import CiphercareClient
from ciphercare.sdk.receipts import access_event_receipt, consent_change_receipt, verify_receipt
from ciphercare.services.web import present
from ciphercare.services.web.app import WebApp
from ciphercare.services.web.backend import ServiceRefusal
from ciphercare.services.web.integrity import remember_latest
from ciphercare.services.web.sessions import Session
from ciphercare.v1 import access_log_pb2, breakglass_pb2, breakglass_pb2_grpc, common_pb2, consent_pb2

HISTORY_PAGE = 20
HISTORY_CAP = 2000
_TX_RE = re.compile(r"^[0-9a-f]{64}$")

log = logging.getLogger("ciphercare.web.portal")


def routes(web: WebApp) -> list[Route]:
    return [
        Route("/patients/{pid}", web.page(overview)),
        Route("/patients/{pid}/consents/new", web.page(grant), methods=["GET", "POST"]),
        Route("/patients/{pid}/consents/{consent_id}/revoke", web.page(revoke), methods=["GET", "POST"]),
        Route("/patients/{pid}/consents/{consent_id}/confirm", web.page(confirm), methods=["POST"]),
        Route("/patients/{pid}/access/{event_id}/receipt.json", web.page(access_receipt)),
        Route("/patients/{pid}/receipts/{tx_id}.json", web.page(change_receipt)),
    ]


def _pid(web: WebApp, request: Request) -> str | None:
    pid = request.path_params["pid"]
    return pid if PID_RE.match(pid) else None


def _not_found(web: WebApp, request: Request) -> Response:
    return web.error(request, 404, "Not found", "There is no patient page at this address.")


def pinned_vkey(web: WebApp, session: Session, served: str) -> str:
    """The verifier key this session trusts: configured, else the first one the service served (then pinned)."""
    # Ledger integrity (issue 11): the pinned log key CIPHERCARE_LEDGER_VKEY (newest last) applies here too.
    pinned = [k.strip() for k in getattr(web.settings, "ledger_vkey", "").split(",") if k.strip()]
    trusted = web.settings.web_ledger_vkey or (pinned[-1] if pinned else "") or session.vkey or served
    session.vkey = session.vkey or trusted
    if served != trusted:
        raise ServiceRefusal(grpc.StatusCode.DATA_LOSS,
                             "the ledger now presents a different checkpoint key than the one this session "
                             "trusts; its proofs cannot be checked")
    return trusted


# -------------------------------------------------------------------- overview


async def overview(web: WebApp, request: Request, session: Session) -> Response:
    pid = _pid(web, request)
    if pid is None:
        return _not_found(web, request)

    def load(client: CiphercareClient) -> tuple[list[consent_pb2.Consent], list[access_log_pb2.AccessEvent],
                                                list[breakglass_pb2.BreakGlassDeclaration]]:
        consents = client.list_for_patient(pid, include_inactive=True)
        events = list(itertools.islice(
            client.search_all(access_log_pb2.SearchRequest(pid=pid, page_size=500)), HISTORY_CAP))
        stub = breakglass_pb2_grpc.BreakGlassServiceStub(client.channel)
        try:
            declarations = list(client.call(stub.ListForPatient,
                                            breakglass_pb2.ListBreakGlassForPatientRequest(pid=pid)).declarations)
        except grpc.RpcError as exc:  # a role that may not list them sees none (the service decides)
            if exc.code() not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND):
                raise
            declarations = []
        return consents, events, declarations

    consents, events, declarations = await web.call(session, load)
    user = session.user
    own = bool(user and user.pid == pid and user.is_patient)
    names = web.settings.organizations
    views = [present.consent_view(c, own=own, names=names) for c in consents]
    order = {"proposed": 0, "active": 1, "scheduled": 2, "expired": 3, "revoked": 4}
    views.sort(key=lambda v: order[v.status])
    events.reverse()  # newest first
    try:
        page = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        page = 1
    pages = max(1, -(-len(events) // HISTORY_PAGE))
    page = min(page, pages)
    shown = [present.access_view(e, own=own, names=names)
             for e in events[(page - 1) * HISTORY_PAGE: page * HISTORY_PAGE]]
    receipts = [r for r in session.receipts.values() if r.get("pid") == pid]
    emergencies = [present.breakglass_view(d, events, own=own, names=names) for d in reversed(declarations)]
    return web.render(request, "patient.html", {
        "title": "My consents" if own else f"Patient {pid}",
        "pid": pid, "own": own, "consents": views,
        "can_change": bool(user and user.may_offer_grant(pid)),
        "can_confirm": bool(user and user.is_patient and user.pid == pid),
        "events": shown, "page": page, "pages": pages, "event_count": len(events),
        "capped": len(events) >= HISTORY_CAP, "receipts": list(reversed(receipts)),
        "emergencies": emergencies, "quote": urllib.parse.quote,
    })


# ----------------------------------------------------------------------- grant


@dataclass
class GrantForm:
    """The grant form's values and per-field errors."""

    organization: str = ""
    purposes: list[str] = field(default_factory=list)
    data_classes: list[str] = field(default_factory=list)
    expires: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    def validate(self, today: date, organizations: dict[str, str]) -> datetime | None:
        """Field checks before anything is sent; returns the exclusive end of the period (or None).

        The recipient must be one of the organisations ciphercare knows (``organizations``): the form offers
        only those, and anything else sent to this handler is refused here, before the service is asked.
        """
        if not self.organization:
            self.errors["organization"] = "Choose the organisation that may use the data."
        elif not ORG_RE.match(self.organization) or self.organization not in organizations:
            self.errors["organization"] = ("Choose an organisation from the list; ciphercare does not know "
                                           "this one.")
        if not self.purposes:
            self.errors["purposes"] = "Choose at least one purpose."
        elif any(p not in present.GRANTABLE_PURPOSES for p in self.purposes):
            self.errors["purposes"] = "Choose purposes from the list."
        if not self.data_classes:
            self.errors["data_classes"] = "Choose at least one kind of data."
        elif any(c not in codes.DATA_CLASSES for c in self.data_classes):
            self.errors["data_classes"] = "Choose kinds of data from the list."
        end = None
        if self.expires:
            try:
                day = date.fromisoformat(self.expires)
            except ValueError:
                self.errors["expires"] = "Enter the date as YYYY-MM-DD, for example 2027-03-31."
            else:
                if day < today:
                    self.errors["expires"] = "The end date is in the past; choose today or a later date."
                else:
                    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)
        return end


def _server_error_field(message: str) -> str:
    """Which form field a service's INVALID_ARGUMENT message is about (``""`` = the form as a whole)."""
    lowered = message.lower()
    for needle, name in (("grantee", "organization"), ("org", "organization"), ("purpose", "purposes"),
                         ("data_class", "data_classes"), ("period", "expires"), ("end", "expires")):
        if needle in lowered:
            return name
    return ""


async def grant(web: WebApp, request: Request, session: Session) -> Response:
    pid = _pid(web, request)
    if pid is None:
        return _not_found(web, request)
    form = GrantForm()
    status = 200
    refusal = ""
    if request.method == "POST":
        data = await request.form()
        form = GrantForm(organization=str(data.get("organization", "")).strip().lower(),
                         purposes=[str(v) for v in data.getlist("purposes")],
                         data_classes=[str(v) for v in data.getlist("data_classes")],
                         expires=str(data.get("expires", "")).strip())
        end = form.validate(datetime.now(UTC).date(), web.settings.organizations)
        if not form.errors:
            period = common_pb2.Period()
            if end is not None:
                period.end.CopyFrom(_ts(end))
            grant_request = consent_pb2.GrantRequest(
                pid=pid, grantee_organization=form.organization, decision=consent_pb2.CONSENT_DECISION_PERMIT,
                purposes=form.purposes, data_classes=form.data_classes, period=period)

            def run(client: CiphercareClient) -> tuple[consent_pb2.GrantResponse, dict[str, Any]]:
                response = client.grant(grant_request)
                return response, _change_receipt(web, session, client, "grant", response.consent, response.receipt)

            try:
                response, receipt = await web.call(session, run)
            except ServiceRefusal as exc:
                if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                where = _server_error_field(exc.message)
                if where:
                    form.errors[where] = f"The service did not accept this: {exc.message}"
                else:
                    refusal = exc.message
            else:
                user = session.user
                view = present.consent_view(response.consent, own=bool(user and user.pid == pid),
                                            names=web.settings.organizations)
                receipt["pid"] = pid
                session.remember_receipt(response.receipt.tx_id, receipt)
                session.flash.append({"text": f"Consent granted: {view.sentence}",
                                      "href": _receipt_href(pid, response.receipt.tx_id),
                                      "link": "Download the receipt"})
                return RedirectResponse(f"/patients/{urllib.parse.quote(pid)}#consent-{response.consent.id}",
                                        status_code=303)
        status = 400
    user = session.user
    own = bool(user and user.pid == pid and user.is_patient)
    return web.render(request, "grant.html", {
        "title": "Grant consent", "pid": pid, "form": form, "refusal": refusal, "own": own,
        "may_grant": bool(user and user.may_offer_grant(pid)),
        "organizations": sorted(web.settings.organizations.items(), key=lambda kv: kv[1]),
        "purpose_groups": present.PURPOSE_GROUPS,
        "data_classes": [(c, present.data_class_words(c, own)) for c in codes.DATA_CLASSES],
        "today": datetime.now(UTC).date().isoformat(),
    }, status)


# ---------------------------------------------------------------------- revoke


async def revoke(web: WebApp, request: Request, session: Session) -> Response:
    pid = _pid(web, request)
    consent_id = request.path_params["consent_id"]
    if pid is None or not CONSENT_ID_RE.match(consent_id):
        return _not_found(web, request)

    def get(client: CiphercareClient) -> consent_pb2.Consent:
        return client.call(client.consent.Get, consent_pb2.GetConsentRequest(consent_id=consent_id)).consent

    consent = await web.call(session, get)
    if consent.pid != pid:
        return _not_found(web, request)
    user = session.user
    view = present.consent_view(consent, own=bool(user and user.pid == pid and user.is_patient),
                                names=web.settings.organizations)
    reasons = list(codes.REVOCATION_REASONS.items())
    if user is not None and user.is_patient:
        first = "declined-by-patient" if view.proposed else "patient-request"
        reasons = [(k, v) for k, v in reasons if k == first] + [
            (k, v) for k, v in reasons
            if k not in ("patient-request", "declined-by-patient", "withdrawn-by-organization")]
    else:  # staff: the patient's own reasons are the patient's (the contract refuses them to staff)
        reasons = [(k, v) for k, v in reasons if k not in ("patient-request", "declined-by-patient")]
    error = ""
    if request.method == "POST":
        data = await request.form()
        reason = str(data.get("reason", ""))
        if reason not in codes.REVOCATION_REASONS:
            error = "Choose a reason from the list."
        elif data.get("confirm") != "yes":
            error = "Tick the box to confirm that you want to revoke this consent."
        else:
            def run(client: CiphercareClient) -> tuple[consent_pb2.RevokeResponse, dict[str, Any]]:
                response = client.revoke(consent_id, reason)
                return response, _change_receipt(web, session, client, "revocation", response.consent,
                                                 response.receipt)

            response, receipt = await web.call(session, run)
            receipt["pid"] = pid
            session.remember_receipt(response.receipt.tx_id, receipt)
            session.flash.append({"text": f"Consent revoked: {view.who} may no longer use this data.",
                                  "href": _receipt_href(pid, response.receipt.tx_id), "link": "Download the receipt"})
            return RedirectResponse(f"/patients/{urllib.parse.quote(pid)}#consent-{consent_id}", status_code=303)
    return web.render(request, "revoke.html", {
        "title": "Revoke consent", "pid": pid, "consent": view, "reasons": reasons, "error": error,
        "may_revoke": bool(user and user.may_offer_grant(pid)) and view.status != "revoked",
    }, 400 if error else 200)


# ---------------------------------------------------------------------- confirm


async def confirm(web: WebApp, request: Request, session: Session) -> Response:
    """The patient confirms a consent staff proposed for them (the contract checks it is theirs)."""
    pid = _pid(web, request)
    consent_id = request.path_params["consent_id"]
    if pid is None or not CONSENT_ID_RE.match(consent_id):
        return _not_found(web, request)

    def run(client: CiphercareClient) -> tuple[consent_pb2.ConfirmResponse, dict[str, Any]]:
        response = client.confirm(consent_id)
        return response, _change_receipt(web, session, client, "confirmation", response.consent, response.receipt)

    response, receipt = await web.call(session, run)
    if response.consent.pid != pid:
        return _not_found(web, request)
    receipt["pid"] = pid
    session.remember_receipt(response.receipt.tx_id, receipt)
    view = present.consent_view(response.consent)
    session.flash.append({"text": f"Consent confirmed: {view.sentence}",
                          "href": _receipt_href(pid, response.receipt.tx_id), "link": "Download the receipt"})
    return RedirectResponse(f"/patients/{urllib.parse.quote(pid)}#consent-{consent_id}", status_code=303)


# -------------------------------------------------------------------- receipts


def _receipt_href(pid: str, tx_id: str) -> str:
    return f"/patients/{urllib.parse.quote(pid)}/receipts/{tx_id}.json"


def _change_receipt(web: WebApp, session: Session, client: CiphercareClient, change: str,
                    consent: consent_pb2.Consent, ledger: common_pb2.LedgerReceipt) -> dict[str, Any]:
    """A receipt for a consent change, with the proof the write itself returned.

    The change is already committed: a failure here yields a receipt that says what is missing, never an error.
    The receipt carries no verification claim; the portal checks it with the same :func:`verify_receipt` anyone
    runs (``ciphercare receipt verify``) and only logs a failure.
    """
    try:
        latest = client.call(client.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest())
        vkey = pinned_vkey(web, session, latest.verifier_key)
        # Ledger integrity (issue 11): the latest checkpoint must extend the one this session verified before.
        memory_problem, _evidence = remember_latest(web.settings, session, client, vkey, latest)
    except (grpc.RpcError, ServiceRefusal) as exc:
        problem = exc.message if isinstance(exc, ServiceRefusal) else f"{exc.code().name}: {exc.details()}"
        return consent_change_receipt(change, consent, ledger, "", None, f"no trusted verifier key: {problem}")
    receipt = consent_change_receipt(change, consent, ledger, vkey)
    if receipt.get("inclusion_proof") is not None:
        check = verify_receipt(receipt, vkey)
        if not check.ok:
            log.warning("consent change receipt did not verify", extra={"problems": check.problems[:3]})
    if memory_problem is not None:
        # A receipt carries no verification claim: the integrity problem is told to the user, and logged.
        log.warning("ledger integrity problem at a consent change", extra={"problem": memory_problem[:200]})
        session.flash.append({"text": f"Ledger integrity warning: {memory_problem}"})
    return receipt


def _json_download(payload: dict[str, Any], filename: str) -> Response:
    body = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    return Response(body, media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


async def access_receipt(web: WebApp, request: Request, session: Session) -> Response:
    pid = _pid(web, request)
    event_id = request.path_params["event_id"]
    if pid is None or not EVENT_ID_RE.match(event_id):
        return _not_found(web, request)

    def load(client: CiphercareClient) -> tuple[Any, Any, str, str | None]:
        event = client.call(client.access_log.Get, access_log_pb2.GetAccessEventRequest(event_id=event_id)).event
        proof = client.call(client.access_log.GetInclusionProof,
                            access_log_pb2.GetInclusionProofRequest(event_id=event_id))
        latest = client.call(client.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest())
        vkey = pinned_vkey(web, session, latest.verifier_key)
        # Ledger integrity (issue 11): the latest checkpoint must extend the one this session verified before.
        problem, _evidence = remember_latest(web.settings, session, client, vkey, latest)
        return event, proof, vkey, problem

    event, proof, vkey, memory_problem = await web.call(session, load)
    if event.pid != pid:
        return _not_found(web, request)
    if memory_problem is not None:
        return web.error(request, 502, "The ledger was rolled back or forked",
                         "No receipt was issued: " + memory_problem)
    if proof.HasField("batch_membership"):  # scoreperf (issue 16): one member of an access batch
        from ciphercare.sdk.batch_receipts import batch_event_receipt, membership_from_proto, verify_batch_receipt

        receipt = batch_event_receipt(event, membership_from_proto(proof.batch_membership), proof, vkey,
                                      event.tx_id, event.sequence)
        check = verify_batch_receipt(receipt, vkey, expected_pid=pid)
    else:
        receipt = access_event_receipt(event, proof, vkey)
        check = verify_receipt(receipt, vkey)
    if not check.ok:
        return web.error(request, 502, "Proof did not verify",
                         "The ledger's proof for this event did not verify, so no receipt was issued: "
                         + "; ".join(check.problems))
    return _json_download(receipt, f"receipt-{event_id}.json")


async def change_receipt(web: WebApp, request: Request, session: Session) -> Response:
    pid = _pid(web, request)
    tx_id = request.path_params["tx_id"]
    receipt = session.receipts.get(tx_id) if _TX_RE.match(tx_id) else None
    if pid is None or receipt is None or receipt.get("pid") != pid:
        return web.error(request, 404, "Receipt not found",
                         "Receipts for consent changes are kept for the session in which you made the change.")
    return _json_download({k: v for k, v in receipt.items() if k != "pid"}, f"receipt-{tx_id[:16]}.json")


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts
