"""ConsentService: a thin servicer over the consent contract and the off-chain documents."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import grpc

from ciphercare.consent import canonical
from ciphercare.consent.errors import ValidationError
from ciphercare.consent.model import ConsentGrant
from ciphercare.ledger.api import Principal
from ciphercare.services.consent import convert as consent_convert
from ciphercare.services.consent.fhir import (
    FhirDocumentError,
    consent_document,
    document_pid,
    evidence_attachment,
    parse_consent_document,
)
from ciphercare.services.identity.interceptor import current_principal
from ciphercare.services.platform import convert
from ciphercare.services.platform.errors import forbidden, invalid, not_found
from ciphercare.services.platform.gateway import ContractHandles, evaluate_json
from ciphercare.services.store import DocumentErasedError, OffchainStore
from ciphercare.v1 import consent_pb2, consent_pb2_grpc

STAFF_ROLES = frozenset({"hospital", "clinician"})


def _now_iso() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _require(value: str, field: str) -> str:
    if not value:
        raise invalid(f"{field} is required")
    return value


def grant_authority(principal: Principal, pid: str, grantee: str) -> str:
    """Whom a Grant by ``principal`` speaks for, or PERMISSION_DENIED: the contract's rule, checked first
    so a refused Grant stores nothing off-chain."""
    if "patient" in principal.roles and (principal.pid == pid or (
            pid in principal.proxy_for and not principal.roles & STAFF_ROLES)):
        return "patient"
    if principal.roles & STAFF_ROLES:
        if grantee != principal.org:
            raise forbidden(
                f"staff of {principal.org or 'no organisation'} may record consents only with "
                f"{principal.org or 'their organisation'} as recipient; a consent for {grantee[:64]} must be "
                "recorded by the patient or their proxy"
            )
        return "staff"
    if "patient" in principal.roles:
        raise forbidden("a patient may grant consent only for their own pseudonym (or one they are proxy for)")
    raise forbidden("only a patient (for themselves), their proxy, a hospital or a clinician may grant a consent")


def unknown_organization(grant: Mapping[str, Any], organizations: Mapping[str, str]) -> str | None:
    """Why a Grant input names an organisation outside the registry (the ``organizations`` setting), or None.

    The recipient and every actor of a nested provision must be organisations ciphercare knows: a typo
    (``hospital-zzz``) would otherwise be a consent nobody can ever use, shown to the patient as in force.
    """
    known = ", ".join(sorted(organizations)) or "none configured"

    def refusal(org: object, field: str) -> str:
        return f"{field}: {str(org)[:64]!r} is not an organisation ciphercare knows; known: {known}"

    if grant.get("grantee_org") not in organizations:
        return refusal(grant.get("grantee_org"), "grantee_organization")
    pending = [(p, f"provisions[{i}]") for i, p in enumerate(grant.get("provisions") or [])]
    while pending:
        provision, path = pending.pop(0)
        for j, actor in enumerate(provision.get("actors") or []):
            if actor not in organizations:
                return refusal(actor, f"{path}.actors[{j}]")
        pending += [(c, f"{path}.provisions[{k}]") for k, c in enumerate(provision.get("provisions") or [])]
    return None


class ConsentServicer(consent_pb2_grpc.ConsentServiceServicer):
    """Grant, revoke, read and check consents; every write returns a ledger receipt.

    ``organizations`` is the registry a Grant's recipient and actors must come from (the ``organizations``
    setting); empty (a read replica, which forwards writes): every Grant is refused.
    """

    def __init__(self, ledger: ContractHandles, store: OffchainStore,
                 organizations: Mapping[str, str] | None = None) -> None:
        self.ledger = ledger
        self.store = store
        self.organizations = dict(organizations or {})

    async def Grant(
        self, request: consent_pb2.GrantRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.GrantResponse:
        """Validate and authorise everything first; only then store off-chain, then write the ledger.

        The contract re-checks all of it (it is the authority); the checks here only keep a request the
        contract would refuse from leaving documents or data keys behind.
        """
        principal = current_principal()
        _require(request.pid, "pid")
        _require(request.grantee_organization, "grantee_organization")
        grant = consent_convert.grant_input_from_proto(request, document_sha256="0" * 64)
        if not grant["period"].get("start"):
            grant["period"]["start"] = _now_iso()
        unknown = unknown_organization(grant, self.organizations)
        if unknown is not None:
            raise invalid(unknown)
        authority = grant_authority(principal, request.pid, request.grantee_organization)
        try:
            ConsentGrant.from_dict(grant, "consent")  # the contract's own validation, before any write
        except ValidationError as exc:
            raise invalid(exc.detail) from exc
        if request.fhir_consent_json:
            try:
                document = parse_consent_document(request.fhir_consent_json)
            except FhirDocumentError as exc:
                raise invalid(str(exc)) from exc
        else:
            document = consent_document(grant, grant["period"]["start"])
        named = document_pid(document)
        if named is not None and named != request.pid:
            # Erasure finds a patient's documents by pid: a document about someone else must not hide here.
            raise invalid("fhir_consent_json names a different patient than pid")
        evidence: bytes | None = None
        if authority == "staff":
            if not request.fhir_consent_json:
                raise invalid(
                    "a consent recorded on a patient's behalf must carry the evidence of their agreement: send "
                    "fhir_consent_json with sourceAttachment {contentType, data} (the signed form, base64)"
                )
            try:
                evidence, document = evidence_attachment(document)
            except FhirDocumentError as exc:
                raise invalid(str(exc)) from exc
            grant["evidence_sha256"] = hashlib.sha256(evidence).hexdigest()
        body = canonical.dumps(document)
        grant["document_sha256"] = hashlib.sha256(body).hexdigest()
        # Everything checked: the documents go off-chain first (content-addressed, idempotent), so a crash
        # before the ledger write leaves an unreferenced document (removed at start-up with its data key
        # if it is the patient's only one), never a consent whose document is missing.
        if evidence is not None:
            await self.store.run(self.store.put_document, "consent-evidence", evidence, pid=grant["pid"])
        await self.store.run(self.store.put_document, "fhir-consent", body, pid=grant["pid"])
        receipt = await self.ledger.consent(principal).submit("Grant", self.ledger.arg(grant))
        record = self.ledger.result(receipt)
        return consent_pb2.GrantResponse(
            consent=consent_convert.consent_to_proto(record), receipt=self.ledger.write_receipt(receipt)
        )

    async def Revoke(
        self, request: consent_pb2.RevokeRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.RevokeResponse:
        principal = current_principal()
        _require(request.consent_id, "consent_id")
        _require(request.reason, "reason")
        receipt = await self.ledger.consent(principal).submit("Revoke", request.consent_id, request.reason)
        record = self.ledger.result(receipt)
        return consent_pb2.RevokeResponse(
            consent=consent_convert.consent_to_proto(record), receipt=self.ledger.write_receipt(receipt)
        )

    async def Confirm(
        self, request: consent_pb2.ConfirmRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.ConfirmResponse:
        principal = current_principal()
        _require(request.consent_id, "consent_id")
        receipt = await self.ledger.consent(principal).submit("Confirm", request.consent_id)
        record = self.ledger.result(receipt)
        return consent_pb2.ConfirmResponse(
            consent=consent_convert.consent_to_proto(record), receipt=self.ledger.write_receipt(receipt)
        )

    async def Get(
        self, request: consent_pb2.GetConsentRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.GetConsentResponse:
        principal = current_principal()
        _require(request.consent_id, "consent_id")
        record = await evaluate_json(self.ledger.consent(principal), "Get", request.consent_id)
        try:
            document = await self.store.run(self.store.get_document, record.get("document_sha256", ""),
                                            pid=record["pid"])
        except DocumentErasedError as exc:
            raise not_found(f"the FHIR document of consent {request.consent_id} was erased (right to erasure)") from exc
        if document is None:
            raise not_found(f"the FHIR document of consent {request.consent_id} is missing from the off-chain store")
        return consent_pb2.GetConsentResponse(
            consent=consent_convert.consent_to_proto(record), fhir_consent_json=document.decode("utf-8")
        )

    async def ListForPatient(
        self, request: consent_pb2.ListForPatientRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.ListForPatientResponse:
        principal = current_principal()
        _require(request.pid, "pid")
        records = await evaluate_json(self.ledger.consent(principal), "ListForPatient", request.pid)
        if not request.include_inactive:
            records = [r for r in records if r["status"] != "inactive"]  # active and proposed
        return consent_pb2.ListForPatientResponse(consents=[consent_convert.consent_to_proto(r) for r in records])

    async def GetHistory(
        self, request: consent_pb2.GetConsentHistoryRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.GetConsentHistoryResponse:
        principal = current_principal()
        _require(request.consent_id, "consent_id")
        versions = await evaluate_json(self.ledger.consent(principal), "History", request.consent_id)
        return consent_pb2.GetConsentHistoryResponse(versions=[consent_convert.consent_to_proto(v) for v in versions])

    async def Check(
        self, request: consent_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.CheckResponse:
        principal = current_principal()
        _require(request.pid, "pid")
        _require(request.recipient_organization, "recipient_organization")
        _require(request.purpose, "purpose")
        _require(request.data_class, "data_class")
        at = convert.iso_from_timestamp(request.at, "at") if request.HasField("at") else _now_iso()
        decision = await evaluate_json(
            self.ledger.consent(principal), "Check",
            request.pid, request.recipient_organization, request.purpose, request.data_class, at,
        )
        return consent_convert.decision_to_proto(decision, at)
