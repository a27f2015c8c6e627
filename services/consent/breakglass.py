"""BreakGlassService: declare, read, review and use emergency access over the ``breakglass`` contract.

The free-text justification (and a reviewer's note) is PHI-prone prose: it goes to the off-chain store,
sealed under the patient's data key, inside a small JSON document with a random nonce (so its hash on the
ledger cannot be confirmed by guessing a short text); the ledger records only that document's SHA-256.
Every request is validated completely before anything is written, off-chain included.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import grpc

from ciphercare.consent import canonical, codes, model
from ciphercare.consent.contracts.breakglass import declaration_id
from ciphercare.consent.errors import ContractError
from ciphercare.ledger.api import Principal
from ciphercare.services.consent.breakglass_convert import declaration_to_proto, is_active
from ciphercare.services.identity.interceptor import current_principal
from ciphercare.services.platform.errors import forbidden, invalid, not_found, precondition
from ciphercare.services.platform.gateway import ContractHandles, evaluate_json
from ciphercare.services.platform.settings import Settings
from ciphercare.services.store import DocumentErasedError, OffchainStore
from ciphercare.v1 import breakglass_pb2, breakglass_pb2_grpc

MAX_TEXT_CHARS = 2000
OBSERVER = "ciphercare/BreakGlassService"
#: Access-event subtypes a break-glass access may record (RESTful interactions) and their actions.
ACCESS_SUBTYPES = {"read": "R", "search-type": "R", "create": "C", "update": "U"}
JUSTIFICATION_KIND = "breakglass-justification"
NOTE_KIND = "breakglass-note"


def _now() -> datetime:
    return datetime.now(UTC)


def _checked(fn: Any, *args: Any) -> Any:
    """Run a domain validator (consent.model) as request validation: INVALID_ARGUMENT on refusal."""
    try:
        return fn(*args)
    except ContractError as exc:
        raise invalid(exc.detail) from None


def _text(value: str, field: str, *, required: bool) -> str:
    text = value.strip()
    if required and not text:
        raise invalid(f"{field} is required: say in a few words why consent cannot be obtained")
    if len(text) > MAX_TEXT_CHARS:
        raise invalid(f"{field} is longer than {MAX_TEXT_CHARS} characters")
    if "\x00" in text:
        raise invalid(f"{field} contains a NUL character")
    return text


def sealed_text_document(kind: str, pid: str, text: str, author: str) -> bytes:
    """The off-chain document holding free text: canonical JSON with a random nonce (hash not guessable)."""
    return canonical.dumps({"kind": kind, "pid": pid, "author": author, "text": text,
                            "nonce": secrets.token_hex(16)})


def _reason_code(value: str) -> str:
    if not value:
        raise invalid(f"reason_code is required; one of: {codes.allowed(codes.BREAKGLASS_REASONS)}")
    return str(_checked(model.code, value, "reason_code", codes.BREAKGLASS_REASONS, "a break-glass reason"))


def _purpose(value: str) -> str:
    return str(_checked(model.code, value or "ETREAT", "purpose", codes.BREAKGLASS_PURPOSES,
                        "a break-glass purpose (ETREAT|BTG)"))


class BreakGlassServicer(breakglass_pb2_grpc.BreakGlassServiceServicer):
    """Thin servicer over the ``breakglass`` contract; the contract decides who may do what."""

    def __init__(self, ledger: ContractHandles, store: OffchainStore, settings: Settings) -> None:
        self.ledger = ledger
        self.store = store
        self.duration_s = settings.breakglass_duration_s

    def _contract(self, principal: Principal) -> Any:
        return self.ledger.contract(principal, "breakglass")

    # Writes ------------------------------------------------------------------

    async def Declare(
        self, request: breakglass_pb2.DeclareBreakGlassRequest, context: grpc.aio.ServicerContext
    ) -> breakglass_pb2.DeclareBreakGlassResponse:
        principal = current_principal()
        if "clinician" not in principal.roles:
            raise forbidden("only a clinician may declare break-glass")
        if not request.pid:
            raise invalid("pid is required")
        pid = _checked(model.pid, request.pid, "pid")
        reason = _reason_code(request.reason_code)
        purpose = _purpose(request.purpose)
        text = _text(request.justification, "justification", required=True)
        # Off-chain first (a crash leaves an unreferenced document, never a declaration without its text).
        justification = sealed_text_document(JUSTIFICATION_KIND, pid, text, principal.subject)
        sha = await self.store.run(self.store.put_document, JUSTIFICATION_KIND, justification, pid=pid)
        body = {"pid": pid, "purpose": purpose, "reason_code": reason, "text_sha256": sha,
                "duration_s": self.duration_s}
        receipt = await self._contract(principal).submit("Declare", self.ledger.arg(body))
        record = self.ledger.result(receipt)
        return breakglass_pb2.DeclareBreakGlassResponse(
            declaration=declaration_to_proto(record, _now()), receipt=self.ledger.write_receipt(receipt)
        )

    async def Review(
        self, request: breakglass_pb2.ReviewBreakGlassRequest, context: grpc.aio.ServicerContext
    ) -> breakglass_pb2.ReviewBreakGlassResponse:
        principal = current_principal()
        if "compliance-officer" not in principal.roles:
            raise forbidden("only a compliance officer may review a break-glass declaration")
        if not request.declaration_id:
            raise invalid("declaration_id is required")
        decl_id = _checked(declaration_id, request.declaration_id)
        if request.outcome not in codes.BREAKGLASS_REVIEW_OUTCOMES:
            raise invalid("outcome must be acknowledged or escalated")
        note = _text(request.note, "note", required=False)
        current = await evaluate_json(self._contract(principal), "Get", decl_id)
        if current["review_status"] == codes.BREAKGLASS_ACKNOWLEDGED:
            raise precondition(f"break-glass declaration {decl_id} is already acknowledged")
        if current["review_status"] == request.outcome:
            raise precondition(f"break-glass declaration {decl_id} is already {request.outcome}")
        if current["declared_by"]["subject"] == principal.subject:
            raise forbidden("a declaration may not be reviewed by its own declarer")
        note_sha = ""
        if note:
            sealed = sealed_text_document(NOTE_KIND, current["pid"], note, principal.subject)
            note_sha = await self.store.run(self.store.put_document, NOTE_KIND, sealed, pid=current["pid"])
        receipt = await self._contract(principal).submit("Review", decl_id, request.outcome, note_sha)
        return breakglass_pb2.ReviewBreakGlassResponse(
            declaration=declaration_to_proto(self.ledger.result(receipt), _now()),
            receipt=self.ledger.write_receipt(receipt),
        )

    async def RecordAccess(
        self, request: breakglass_pb2.RecordBreakGlassAccessRequest, context: grpc.aio.ServicerContext
    ) -> breakglass_pb2.RecordBreakGlassAccessResponse:
        """Check every data class under break-glass, then record one access event naming the declaration."""
        principal = current_principal()
        if not request.pid:
            raise invalid("pid is required")
        pid = _checked(model.pid, request.pid, "pid")
        if not request.data_classes:
            raise invalid("data_classes is required: name the FHIR resource types accessed")
        classes = [
            _checked(model.code, c, f"data_classes[{i}]", codes.DATA_CLASSES, "a FHIR resource-type data class")
            for i, c in enumerate(request.data_classes)
        ]
        subtype = request.subtype or "read"
        if subtype not in ACCESS_SUBTYPES:
            raise invalid(f"subtype must be one of {', '.join(ACCESS_SUBTYPES)}")
        if not principal.org:
            raise forbidden("a token without an organisation claim cannot record access")
        now = _now()
        at = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        purposes = [request.purpose] if request.purpose else ["ETREAT", "BTG"]
        for p in purposes:
            _purpose(p)
        decisions: list[dict[str, Any]] = []
        purpose = purposes[0]
        for purpose in purposes:  # without an explicit purpose: the first purpose break-glass permits
            decisions = [
                await evaluate_json(self.ledger.consent(principal), "Check", pid, principal.org, purpose, c, at)
                for c in classes
            ]
            if all(d.get("breakglass_id") for d in decisions):
                break
        if not all(d.get("breakglass_id") for d in decisions):
            # The attempt is on the record (a denied access event), like every refused access naming a patient.
            denied = {
                "type": "110110", "subtype": subtype, "action": ACCESS_SUBTYPES[subtype], "outcome": "denied",
                "outcome_desc": "no-breakglass-declaration", "purpose_of_use": purpose,
                "source": {"observer": OBSERVER}, "entity": {"pid": pid, "data_classes": classes},
            }
            await self.ledger.accesslog(principal).submit("Record", self.ledger.arg(denied))
            raise precondition(
                f"no active break-glass declaration of yours covers {purpose} access to {pid}; declare one first"
            )
        decl_id = decisions[0]["breakglass_id"]
        event = {
            "type": "110110",
            "subtype": subtype,
            "action": ACCESS_SUBTYPES[subtype],
            "outcome": "success",
            "outcome_desc": f"break-glass:{decl_id}",
            "purpose_of_use": purpose,
            "source": {"observer": OBSERVER},
            "entity": {"pid": pid, "data_classes": classes},
        }
        receipt = await self.ledger.accesslog(principal).submit("Record", self.ledger.arg(event))
        recorded = self.ledger.result(receipt)
        return breakglass_pb2.RecordBreakGlassAccessResponse(
            event_id=recorded["id"], declaration_id=decl_id, receipt=self.ledger.write_receipt(receipt)
        )

    # Reads --------------------------------------------------------------------

    def _texts_of(self, record: dict[str, Any]) -> tuple[str, list[str]]:
        """A declaration's justification and review notes, read off-chain (on a store thread)."""
        pid = record["pid"]
        notes = [self._text_of(r["note_sha256"], pid) for r in record["reviews"]]
        return self._text_of(record["text_sha256"], pid), notes

    def _text_of(self, sha: str | None, pid: str) -> str:
        if not sha:
            return ""
        try:
            body = self.store.get_document(sha, pid=pid)
        except DocumentErasedError:
            return ""
        if body is None:
            return ""
        return str(json.loads(body).get("text", ""))

    async def Get(
        self, request: breakglass_pb2.GetBreakGlassRequest, context: grpc.aio.ServicerContext
    ) -> breakglass_pb2.GetBreakGlassResponse:
        principal = current_principal()
        if not request.declaration_id:
            raise invalid("declaration_id is required")
        decl_id = _checked(declaration_id, request.declaration_id)
        record = await evaluate_json(self._contract(principal), "Get", decl_id)
        if record is None:  # pragma: no cover - the contract answers NOT_FOUND itself
            raise not_found(f"break-glass declaration {decl_id} not found")
        justification, notes = await self.store.run(self._texts_of, record)
        return breakglass_pb2.GetBreakGlassResponse(
            declaration=declaration_to_proto(record, _now()), justification=justification, review_notes=notes
        )

    async def ListForPatient(
        self, request: breakglass_pb2.ListBreakGlassForPatientRequest, context: grpc.aio.ServicerContext
    ) -> breakglass_pb2.ListBreakGlassResponse:
        principal = current_principal()
        if not request.pid:
            raise invalid("pid is required")
        records = await evaluate_json(self._contract(principal), "ListForPatient", request.pid)
        now = _now()
        return breakglass_pb2.ListBreakGlassResponse(declarations=[declaration_to_proto(r, now) for r in records])

    async def ListActive(
        self, request: breakglass_pb2.ListActiveBreakGlassRequest, context: grpc.aio.ServicerContext
    ) -> breakglass_pb2.ListBreakGlassResponse:
        records = await evaluate_json(self._contract(current_principal()), "ListActive")
        now = _now()
        return breakglass_pb2.ListBreakGlassResponse(declarations=[declaration_to_proto(r, now) for r in records])

    async def ListForReview(
        self, request: breakglass_pb2.ListBreakGlassForReviewRequest, context: grpc.aio.ServicerContext
    ) -> breakglass_pb2.ListBreakGlassForReviewResponse:
        status = request.review_status
        if status and status not in codes.BREAKGLASS_REVIEW_STATUSES:
            raise invalid("review_status must be pending, acknowledged or escalated (or empty for all)")
        records = await evaluate_json(self._contract(current_principal()), "ListForReview")
        now = _now()
        return breakglass_pb2.ListBreakGlassForReviewResponse(
            declarations=[declaration_to_proto(r, now) for r in reversed(records)
                          if not status or r["review_status"] == status],
            counts=counts(records, now),
        )


def counts(records: list[dict[str, Any]], now: datetime) -> breakglass_pb2.BreakGlassCounts:
    """The report over every declaration: totals, review states, by reason and by organisation."""
    states = Counter(r["review_status"] for r in records)
    return breakglass_pb2.BreakGlassCounts(
        total=len(records),
        active=sum(1 for r in records if is_active(r, now)),
        pending=states[codes.BREAKGLASS_PENDING],
        acknowledged=states[codes.BREAKGLASS_ACKNOWLEDGED],
        escalated=states[codes.BREAKGLASS_ESCALATED],
        by_reason=dict(Counter(r["reason_code"] for r in records)),
        by_organization=dict(Counter(r["declared_by"]["org"] for r in records)),
    )
