"""FhirService: FHIR Consent import/export and BALP AuditEvent bundles over gRPC.

Import validates completely (library model, code bindings, organisation registry, the ledger's own
consent validation, who may grant for whom, the status the document asks for) before it writes the
document off-chain and the grant on the ledger, in that order (as ConsentService.Grant does). Exports read
through the contracts as the caller, so they show exactly what the caller may see.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import grpc

from ciphercare.consent import canonical, codes
from ciphercare.ledger.api import Principal
from ciphercare.services.audit.exports import audit_bundle
from ciphercare.services.audit.servicer import AccessScope, event_proto
from ciphercare.services.consent.fhir_interchange import (
    PROPOSED_STATUS,
    R4B,
    FhirImportError,
    consent_from_fhir,
    consent_to_fhir,
    evidence_of,
    status_of,
    version,
)
from ciphercare.services.consent.servicer import grant_authority
from ciphercare.services.identity.interceptor import current_principal
from ciphercare.services.platform import convert
from ciphercare.services.platform.errors import invalid, not_found, precondition
from ciphercare.services.platform.gateway import ContractHandles, evaluate_json
from ciphercare.services.platform.projections import ProjectionRunner
from ciphercare.services.platform.settings import Settings
from ciphercare.services.store import AccessEventIndex, AccessQuery, DocumentErasedError, OffchainStore
from ciphercare.v1 import fhir_pb2, fhir_pb2_grpc

DEFAULT_EXPORT = 1000
MAX_EXPORT = 10_000
_PAGE = 1000


def _now_iso() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class FhirServicer(fhir_pb2_grpc.FhirServiceServicer):
    """FHIR in and out; the consent and access-log contracts decide visibility and permission."""

    def __init__(self, ledger: ContractHandles, store: OffchainStore, settings: Settings,
                 projections: ProjectionRunner | None = None) -> None:
        self.ledger = ledger
        self.store = store
        self.organizations = dict(settings.organizations)
        self._projections = projections

    async def ImportConsent(
        self, request: fhir_pb2.ImportConsentRequest, context: grpc.aio.ServicerContext
    ) -> fhir_pb2.ImportConsentResponse:
        principal = current_principal()
        if not request.resource_json:
            raise invalid("resource_json is required")
        try:
            fhir_version = version(request.fhir_version)
            grant, document = consent_from_fhir(request.resource_json, fhir_version, self.organizations, _now_iso())
        except FhirImportError as exc:
            raise invalid(str(exc)) from None
        # Who speaks for whom: the contract's rule, checked first so a refused import stores nothing off-chain.
        authority = grant_authority(principal, grant["pid"], grant["grantee_org"])
        if authority == "staff" and "evidence_sha256" not in grant:
            raise invalid("a consent recorded on a patient's behalf must carry the evidence of their agreement "
                          "(sourceAttachment or sourceReference)")
        await self._check_status(principal, authority, grant, status_of(document, fhir_version), fhir_version)
        grant["document_sha256"] = await self.store.run(self.store.put_document, "fhir-consent",
                                                        canonical.dumps(document), pid=grant["pid"])
        receipt = await self.ledger.consent(principal).submit("Grant", self.ledger.arg(grant))
        record = self.ledger.result(receipt)
        return fhir_pb2.ImportConsentResponse(consent_id=record["id"], receipt=convert.receipt_to_proto(receipt),
                                              status=record["status"])

    async def _check_status(self, principal: Principal, authority: str, grant: dict[str, Any], wanted: str,
                            fhir_version: str) -> None:
        """A document proposed to the patient (R4B ``proposed``, R5 ``draft``) is imported only where the ledger
        records it as proposed too: a staff PERMIT under the ``confirm`` policy. The ledger never puts in force
        what the document says is not; an ``active`` document from staff is still only proposed (the contract
        decides, the patient confirms): import cannot bypass the authority rule either way."""
        if wanted != codes.CONSENT_STATUS_PROPOSED:
            return
        shown = PROPOSED_STATUS[fhir_version]
        if authority == "patient":
            raise invalid(f"Consent.status: {shown!r} is for a consent staff record on the patient's behalf; the "
                          "patient (or proxy) records a consent in force at once: import it with status 'active', "
                          "or confirm the proposed consent (ConsentService.Confirm)")
        if grant["decision"] != codes.PERMIT:
            raise invalid(f"Consent.status: {shown!r}: a deny staff record is in force at once (it only "
                          "restricts); import it with status 'active'")
        policy = await evaluate_json(self.ledger.consent(principal), "GetPolicy")
        if policy.get("staff_permit") != codes.STAFF_PERMIT_CONFIRM:
            raise precondition(f"Consent.status: {shown!r}: the consent policy puts permits staff record in force "
                               "at once (consent_staff_permit immediate); import it with status 'active'")

    async def ExportConsent(
        self, request: fhir_pb2.ExportConsentRequest, context: grpc.aio.ServicerContext
    ) -> fhir_pb2.ExportConsentResponse:
        principal = current_principal()
        if not request.consent_id:
            raise invalid("consent_id is required")
        try:
            fhir_version = version(request.fhir_version)
        except FhirImportError as exc:
            raise invalid(str(exc)) from None
        record = await evaluate_json(self.ledger.consent(principal), "Get", request.consent_id)
        try:
            body = await self.store.run(self.store.get_document, record["document_sha256"], pid=record["pid"])
        except DocumentErasedError as exc:
            raise not_found(f"the FHIR document of consent {request.consent_id} was erased") from exc
        evidence = evidence_of(json.loads(body)) if body is not None else {}
        resource = consent_to_fhir(record, evidence, fhir_version, self.organizations)
        return fhir_pb2.ExportConsentResponse(resource_json=json.dumps(resource, sort_keys=True))

    def _newest_rows(self, query: AccessQuery, limit: int) -> list[AccessEventIndex]:
        """The newest ``limit`` index rows of ``query``, oldest first, once the index is level (a store thread)."""
        if self._projections is not None:
            self._projections.read_committed()
        rows: list[AccessEventIndex] = []
        after, more = -1, True
        while more:
            page, more = self.store.search_access_events(query, after_seq=after, limit=_PAGE)
            if not page:
                break
            rows.extend(page)
            rows = rows[-limit:]
            after = page[-1].seq
        return rows

    async def ExportAuditEvents(
        self, request: fhir_pb2.ExportAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> fhir_pb2.ExportAuditEventsResponse:
        principal = current_principal()
        if not request.pid:
            raise invalid("pid is required")
        if (request.fhir_version or R4B).upper() != R4B:
            raise invalid("IHE BALP profiles FHIR R4 AuditEvents: export them with fhir_version R4B")
        limit = request.limit or DEFAULT_EXPORT
        if limit > MAX_EXPORT:
            raise invalid(f"limit must be at most {MAX_EXPORT}")
        scope = AccessScope(principal)
        query = AccessQuery(pid=request.pid, scope_pid=scope.pid, scope_org=scope.org)
        rows = await self.store.run(self._newest_rows, query, limit)
        events = [event_proto(r) for r in reversed(rows)]  # newest first
        bundle = audit_bundle(events, f"urn:ciphercare:fhir/AuditEvent?patient={request.pid}", "collection")
        return fhir_pb2.ExportAuditEventsResponse(bundle_json=json.dumps(bundle, sort_keys=True), count=len(events))
