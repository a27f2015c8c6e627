"""The console's break-glass page: declarations as high priority, the review workflow and the report.

Everything runs as the signed-in user: the BreakGlassService (and, behind it, the ``breakglass`` contract)
decides who may list and who may review; the page only hides controls the service would refuse.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ciphercare.consent import codes
from ciphercare.sdk.client import CiphercareClient
from ciphercare.services.consent.breakglass import MAX_TEXT_CHARS
from ciphercare.services.web import present
from ciphercare.services.web.app import WebApp
from ciphercare.services.web.backend import ServiceRefusal
from ciphercare.services.web.sessions import Session
from ciphercare.v1 import breakglass_pb2, breakglass_pb2_grpc

STATUSES = ("pending", "escalated", "acknowledged")


def routes(web: WebApp) -> list[Route]:
    return [
        Route("/console/breakglass", web.page(overview)),
        Route("/console/breakglass/{declaration_id}", web.page(detail), methods=["GET", "POST"]),
    ]


def _stub(client: CiphercareClient) -> breakglass_pb2_grpc.BreakGlassServiceStub:
    return breakglass_pb2_grpc.BreakGlassServiceStub(client.channel)


def _row(d: breakglass_pb2.BreakGlassDeclaration, names: dict[str, str]) -> dict[str, Any]:
    declared = present.ts_datetime(d.declared_at)
    expires = present.ts_datetime(d.expires_at)
    return {
        "id": d.id, "pid": d.pid, "active": d.active, "purpose": d.purpose,
        "reason": codes.BREAKGLASS_REASONS.get(d.reason_code, d.reason_code), "reason_code": d.reason_code,
        "clinician": d.declared_by.subject, "org": present.org_name(d.declared_by.organization, names),
        "declared": present.when(declared), "declared_iso": present.iso(declared),
        "expires": present.when(expires), "expires_iso": present.iso(expires),
        "review_status": d.review_status,
        "reviews": [{"outcome": r.outcome, "by": r.reviewed_by.subject,
                     "at": present.when(present.ts_datetime(r.reviewed_at)),
                     "at_iso": present.iso(present.ts_datetime(r.reviewed_at))} for r in d.reviews],
    }


async def overview(web: WebApp, request: Request, session: Session) -> Response:
    status = request.query_params.get("status", "")
    if status not in ("", *STATUSES):
        status = ""

    def load(client: CiphercareClient) -> breakglass_pb2.ListBreakGlassForReviewResponse:
        return client.call(_stub(client).ListForReview,
                           breakglass_pb2.ListBreakGlassForReviewRequest(review_status=status))

    response = await web.call(session, load)
    names = web.settings.organizations
    rows = [_row(d, names) for d in response.declarations]
    counts = response.counts
    return web.render(request, "breakglass.html", {
        "title": "Break-glass review", "rows": rows, "status": status, "statuses": STATUSES,
        "counts": counts, "by_reason": sorted(counts.by_reason.items(), key=lambda kv: (-kv[1], kv[0])),
        "by_org": sorted(counts.by_organization.items(), key=lambda kv: (-kv[1], kv[0])),
        "reason_words": codes.BREAKGLASS_REASONS, "org_words": names,
    })


async def detail(web: WebApp, request: Request, session: Session) -> Response:
    declaration_id = request.path_params["declaration_id"]
    error = ""
    if request.method == "POST":
        form = await request.form()
        outcome = str(form.get("outcome", ""))
        note = str(form.get("note", "")).strip()
        if outcome not in codes.BREAKGLASS_REVIEW_OUTCOMES:
            error = "Choose acknowledge or escalate."
        elif len(note) > MAX_TEXT_CHARS:
            error = f"The note is longer than {MAX_TEXT_CHARS} characters."
        else:
            def review(client: CiphercareClient) -> breakglass_pb2.ReviewBreakGlassResponse:
                return client.call(_stub(client).Review, breakglass_pb2.ReviewBreakGlassRequest(
                    declaration_id=declaration_id, outcome=outcome, note=note))

            try:
                done = await web.call(session, review)
            except ServiceRefusal as exc:
                error = exc.message
            else:
                session.flash.append({"text": f"Declaration {declaration_id} {done.declaration.review_status}; "
                                              f"recorded on the ledger (tx {done.receipt.tx_id[:16]}…)."})
                return RedirectResponse(f"/console/breakglass/{urllib.parse.quote(declaration_id)}", status_code=303)

    def load(client: CiphercareClient) -> breakglass_pb2.GetBreakGlassResponse:
        return client.call(_stub(client).Get, breakglass_pb2.GetBreakGlassRequest(declaration_id=declaration_id))

    got = await web.call(session, load)
    user = session.user
    row = _row(got.declaration, web.settings.organizations)
    return web.render(request, "breakglass_detail.html", {
        "title": f"Break-glass {declaration_id}", "d": row, "justification": got.justification,
        "notes": list(got.review_notes), "error": error,
        "may_review": bool(user and codes.ROLE_COMPLIANCE_OFFICER in user.roles)
        and row["review_status"] != codes.BREAKGLASS_ACKNOWLEDGED,
    }, 400 if error else 200)
