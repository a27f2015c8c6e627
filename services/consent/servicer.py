"""ConsentService: a thin servicer over the consent contract and the off-chain documents."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from ciphercare.consent import canonical
from ciphercare.services.consent.fhir import (
    FhirDocumentError,
    consent_document,
    document_pid,
    evidence_sha256,
    has_source,
    parse_consent_document,
)
from ciphercare.services.identity.interceptor import current_principal
from ciphercare.services.platform import convert
from ciphercare.services.platform.errors import invalid, not_found
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


class ConsentServicer(consent_pb2_grpc.ConsentServiceServicer):
    """Grant, revoke, read and check consents; every write returns a ledger receipt."""

    def __init__(self, ledger: ContractHandles, store: OffchainStore) -> None:
        self.ledger = ledger
        self.store = store

    async def Grant(
        self, request: consent_pb2.GrantRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.GrantResponse:
        principal = current_principal()
        _require(request.pid, "pid")
        _require(request.grantee_organization, "grantee_organization")
        grant = convert.grant_input_from_proto(request, document_sha256="0" * 64)
        if not grant["period"].get("start"):
            grant["period"]["start"] = _now_iso()
        on_behalf = bool(principal.roles & STAFF_ROLES) and not (
            "patient" in principal.roles and principal.pid == request.pid
        )
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
        if on_behalf and not has_source(document):
            # Staff record a patient's consent only with the evidence of it (FHIR R4 Consent.source[x]:
            # the signed form or a reference to it), kept off-chain under the hash the ledger records.
            raise invalid(
                "a consent recorded on a patient's behalf must carry the evidence of their agreement: "
                "send fhir_consent_json with sourceAttachment (the signed form) or sourceReference"
            )
        # The document goes off-chain first (content-addressed, idempotent): a crash
        # before the ledger write leaves an unreferenced document, never a consent
        # whose document is missing.
        evidence = evidence_sha256(document)
        if evidence is not None:
            grant["evidence_sha256"] = evidence
        grant["document_sha256"] = self.store.put_document("fhir-consent", canonical.dumps(document),
                                                           pid=grant["pid"])
        receipt = await self.ledger.consent(principal).submit("Grant", self.ledger.arg(grant))
        record = self.ledger.result(receipt)
        return consent_pb2.GrantResponse(
            consent=convert.consent_to_proto(record), receipt=convert.receipt_to_proto(receipt)
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
            consent=convert.consent_to_proto(record), receipt=convert.receipt_to_proto(receipt)
        )

    async def Get(
        self, request: consent_pb2.GetConsentRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.GetConsentResponse:
        principal = current_principal()
        _require(request.consent_id, "consent_id")
        record = await evaluate_json(self.ledger.consent(principal), "Get", request.consent_id)
        try:
            document = self.store.get_document(record.get("document_sha256", ""), pid=record["pid"])
        except DocumentErasedError as exc:
            raise not_found(f"the FHIR document of consent {request.consent_id} was erased (right to erasure)") from exc
        if document is None:
            raise not_found(f"the FHIR document of consent {request.consent_id} is missing from the off-chain store")
        return consent_pb2.GetConsentResponse(
            consent=convert.consent_to_proto(record), fhir_consent_json=document.decode("utf-8")
        )

    async def ListForPatient(
        self, request: consent_pb2.ListForPatientRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.ListForPatientResponse:
        principal = current_principal()
        _require(request.pid, "pid")
        records = await evaluate_json(self.ledger.consent(principal), "ListForPatient", request.pid)
        if not request.include_inactive:
            records = [r for r in records if r["status"] == "active"]
        return consent_pb2.ListForPatientResponse(consents=[convert.consent_to_proto(r) for r in records])

    async def GetHistory(
        self, request: consent_pb2.GetConsentHistoryRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.GetConsentHistoryResponse:
        principal = current_principal()
        _require(request.consent_id, "consent_id")
        versions = await evaluate_json(self.ledger.consent(principal), "History", request.consent_id)
        return consent_pb2.GetConsentHistoryResponse(versions=[convert.consent_to_proto(v) for v in versions])

    async def Check(
        self, request: consent_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.CheckResponse:
        principal = current_principal()
        _require(request.pid, "pid")
        _require(request.recipient_organization, "recipient_organization")
        _require(request.purpose, "purpose")
        _require(request.data_class, "data_class")
        at = convert.iso_from_timestamp(request.at) if request.HasField("at") else _now_iso()
        decision = await evaluate_json(
            self.ledger.consent(principal), "Check",
            request.pid, request.recipient_organization, request.purpose, request.data_class, at,
        )
        return convert.decision_to_proto(decision, at)
