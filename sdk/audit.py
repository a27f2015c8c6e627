"""The compliance officer's client: flags, newest-first search, aggregates, streamed exports, verification.

:class:`AuditClient` wraps ``ComplianceService`` and the proof calls of ``AccessLogService``. Verification
trusts a pinned verifier key only (never the key the server sends along), optionally a witness policy, and
remembers the last checkpoint it verified on disk (:mod:`ciphercare.sdk.checkpoints`, the same memory as
``ciphercare ledger check``), so that the next run demands a consistency proof from it: a log rolled back or
forked between two runs is caught, with both signed notes as evidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ciphercare.ledger.transparency.checkpoint import CheckpointError, CheckpointKeyring, CheckpointVerifier
from ciphercare.sdk.checkpoints import CheckpointCheckError, CheckpointMemory, CheckpointStore, RollbackError
from ciphercare.sdk.client import CiphercareClient, ProofError, TokenSource
from ciphercare.v1 import access_log_pb2, compliance_pb2, compliance_pb2_grpc

if TYPE_CHECKING:
    from ciphercare.ledger.witness.policy import Policy

EXPORT_FORMATS: dict[str, compliance_pb2.ExportFormat] = {
    "csv": compliance_pb2.EXPORT_FORMAT_CSV,
    "fhir": compliance_pb2.EXPORT_FORMAT_FHIR_BUNDLE,
    "jsonl": compliance_pb2.EXPORT_FORMAT_JSON_LINES,
}


def default_state_dir() -> Path:
    """Where clients remember verified checkpoints (shared with ``ciphercare ledger check``)."""
    return Path.home() / ".ciphercare" / "checkpoints"


@dataclass
class VerifyReport:
    """What ``verify`` checked, line by line (every line is a check that passed)."""

    checkpoint_size: int = 0
    checks: list[str] = field(default_factory=list)
    #: Both signed notes when the log was rolled back or forked (what to hand to the operator and witnesses).
    evidence: dict[str, Any] = field(default_factory=dict)


class AuditClient:
    """ComplianceService plus verification, over one channel with a token and a deadline per call."""

    def __init__(self, client: CiphercareClient) -> None:
        self.client = client
        self.compliance = compliance_pb2_grpc.ComplianceServiceStub(client.channel)

    @classmethod
    def connect(cls, target: str, token: TokenSource | str, **options: Any) -> AuditClient:
        return cls(CiphercareClient.connect(target, token, **options))

    def close(self) -> None:
        self.client.close()

    # Reads -----------------------------------------------------------------------------------

    def flags(self, request: compliance_pb2.ListFlagsRequest,
              timeout_s: float = 120.0) -> Iterator[compliance_pb2.ListFlagsResponse]:
        """Every page of flags for a window (the first page's response carries the totals). The first call for
        a window fits the detector on the history: it gets a longer deadline than other calls."""
        page = compliance_pb2.ListFlagsRequest()
        page.CopyFrom(request)
        while True:
            response: compliance_pb2.ListFlagsResponse = self.compliance.ListFlags(
                page, metadata=self.client._meta(), timeout=max(timeout_s, self.client.deadline_s))
            yield response
            if not response.next_page_token:
                return
            page.page_token = response.next_page_token

    def search(self, request: compliance_pb2.ComplianceSearchRequest) -> compliance_pb2.ComplianceSearchResponse:
        response: compliance_pb2.ComplianceSearchResponse = self.client.call(self.compliance.Search, request)
        return response

    def search_all(self, request: compliance_pb2.ComplianceSearchRequest,
                   limit: int | None = None) -> Iterator[access_log_pb2.AccessEvent]:
        """Matching events in the search order, following the cursor (at most ``limit`` when given)."""
        page = compliance_pb2.ComplianceSearchRequest()
        page.CopyFrom(request)
        seen = 0
        while True:
            response = self.search(page)
            for event in response.events:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield event
            if not response.next_page_token:
                return
            page.page_token = response.next_page_token

    def aggregate(self, flt: compliance_pb2.AccessFilter) -> compliance_pb2.AggregateResponse:
        response: compliance_pb2.AggregateResponse = self.client.call(
            self.compliance.Aggregate, compliance_pb2.AggregateRequest(filter=flt))
        return response

    def export(self, flt: compliance_pb2.AccessFilter, fmt: str,
               timeout_s: float | None = None) -> Iterator[compliance_pb2.ExportChunk]:
        """The export's chunks as they stream (no deadline unless ``timeout_s``: a full export may be long)."""
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})")
        stream = self.compliance.Export(compliance_pb2.ExportRequest(filter=flt, format=EXPORT_FORMATS[fmt]),
                                        metadata=self.client._meta(), timeout=timeout_s)
        yield from stream

    # Verification ------------------------------------------------------------------------------

    def verify(self, vkey: str, state_dir: Path | None = None, event_ids: Iterable[str] = (),
               policy: Policy | None = None) -> VerifyReport:
        """Verify the served checkpoint against the pinned ``vkey`` (and the witness quorum of ``policy``), its
        consistency with the checkpoint remembered in ``state_dir`` (None: remember nothing), and the inclusion
        of ``event_ids``. Raises :class:`ProofError` (with :attr:`VerifyReport.evidence` on ``.report``)."""
        try:
            verifier = CheckpointVerifier.from_vkey(vkey)
        except (CheckpointError, ValueError) as exc:
            raise ProofError(f"the pinned verifier key is not a valid signed-note key: {exc}") from exc
        if policy is not None and verifier.vkey not in policy.log_keys.vkeys:
            raise ProofError("the witness policy does not name the pinned verifier key as the log's key")
        memory = CheckpointMemory(CheckpointKeyring([verifier]), policy=policy,
                                  store=CheckpointStore(state_dir) if state_dir is not None else None)
        report = VerifyReport()
        try:
            result = memory.check(self.client)
        except RollbackError as exc:
            error = ProofError(f"the log was rolled back or forked: {exc}")
            report.evidence = exc.evidence()
            error.report = report  # type: ignore[attr-defined]
            raise error from exc
        except CheckpointCheckError as exc:
            raise ProofError(f"the served checkpoint is not signed by the pinned key: {exc}") from exc
        checkpoint = result.checkpoint
        report.checkpoint_size = checkpoint.size
        report.checks.append(f"checkpoint of {checkpoint.origin} at size {checkpoint.size} signed by the pinned key "
                             f"({verifier.vkey.split('+')[0]})")
        if result.witnesses:
            report.checks.append(f"cosigned by the policy's quorum: {', '.join(result.witnesses)}")
        if result.previous is not None:
            if result.status == "unchanged":
                report.checks.append(f"same tree as the remembered checkpoint (size {checkpoint.size})")
            else:
                report.checks.append(f"consistent with the remembered checkpoint: size {result.previous.size} -> "
                                     f"{checkpoint.size}")
        for event_id in event_ids:
            try:
                included = self.client.verify_event_inclusion(event_id, verifier)
            except CheckpointError as exc:
                raise ProofError(f"the checkpoint of the proof for {event_id} is not signed by the pinned key: "
                                 f"{exc}") from exc
            report.checks.append(f"event {event_id} included at leaf {included.leaf_index} of {included.tree_size}")
        return report
