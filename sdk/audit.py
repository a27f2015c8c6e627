"""The compliance officer's client: flags, newest-first search, aggregates, streamed exports, verification.

:class:`AuditClient` wraps ``ComplianceService`` and the proof calls of ``AccessLogService``. Verification
trusts a pinned verifier key only (never the key the server sends along), and remembers the last checkpoint
it verified in a small JSON file (:class:`CheckpointMemory`), so that the next run demands a consistency
proof from it: a log rewritten between two runs is caught.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ciphercare.ledger.transparency.checkpoint import CheckpointError, CheckpointVerifier
from ciphercare.ledger.transparency.merkle import ProofError as MerkleProofError
from ciphercare.ledger.transparency.merkle import check_consistency
from ciphercare.sdk.client import CiphercareClient, ProofError, TokenSource
from ciphercare.v1 import access_log_pb2, compliance_pb2, compliance_pb2_grpc

EXPORT_FORMATS: dict[str, compliance_pb2.ExportFormat] = {
    "csv": compliance_pb2.EXPORT_FORMAT_CSV,
    "fhir": compliance_pb2.EXPORT_FORMAT_FHIR_BUNDLE,
    "jsonl": compliance_pb2.EXPORT_FORMAT_JSON_LINES,
}


class CheckpointMemoryError(ValueError):
    """The remembered checkpoint file is unreadable or was written for another log or key."""


@dataclass(frozen=True)
class RememberedCheckpoint:
    origin: str
    vkey: str
    size: int
    root_hash_hex: str
    note: str


class CheckpointMemory:
    """The last checkpoint this client verified for a log, in a JSON file (written atomically, mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @staticmethod
    def default_path() -> Path:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        return base / "ciphercare" / "checkpoints.json"

    def _all(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointMemoryError(f"cannot read the remembered checkpoints {self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise CheckpointMemoryError(f"{self.path} is not a checkpoint memory file")
        return data

    def load(self, origin: str) -> RememberedCheckpoint | None:
        entry = self._all().get(origin)
        if entry is None:
            return None
        try:
            return RememberedCheckpoint(origin, str(entry["vkey"]), int(entry["size"]), str(entry["root_hash"]),
                                        str(entry["note"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointMemoryError(f"the remembered checkpoint of {origin} in {self.path} is damaged") from exc

    def save(self, checkpoint: RememberedCheckpoint) -> None:
        data = self._all()
        data[checkpoint.origin] = {"vkey": checkpoint.vkey, "size": checkpoint.size,
                                   "root_hash": checkpoint.root_hash_hex, "note": checkpoint.note}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".checkpoints-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@dataclass
class VerifyReport:
    """What ``verify`` checked, line by line (every line is a check that passed)."""

    checkpoint_size: int = 0
    checks: list[str] = field(default_factory=list)


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

    def flags(self, request: compliance_pb2.ListFlagsRequest) -> Iterator[compliance_pb2.ListFlagsResponse]:
        """Every page of flags for a window (the first page's response carries the totals)."""
        page = compliance_pb2.ListFlagsRequest()
        page.CopyFrom(request)
        while True:
            response = self.client.call(self.compliance.ListFlags, page)
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

    def _consistent(self, verifier: CheckpointVerifier, remembered: RememberedCheckpoint, size: int) -> str:
        """Check that the log at ``size`` extends the remembered checkpoint (one proof, every root checked)."""
        try:
            old = verifier.verify(remembered.note.encode("utf-8"))
        except CheckpointError as exc:
            raise ProofError(f"the remembered checkpoint no longer verifies: {exc}") from exc
        if old.root_hash.hex() != remembered.root_hash_hex or old.size != remembered.size:
            raise ProofError("the remembered checkpoint file was altered")
        proof = self.client.call(self.client.access_log.GetConsistencyProof, access_log_pb2.GetConsistencyProofRequest(
            first_tree_size=remembered.size, second_tree_size=size))
        try:
            first = verifier.verify(proof.first_checkpoint.signed_note.encode("utf-8"))
            second = verifier.verify(proof.second_checkpoint.signed_note.encode("utf-8"))
        except CheckpointError as exc:
            raise ProofError(f"a checkpoint of the consistency proof is not signed by the pinned key: {exc}") from exc
        if (first.size, second.size) != (remembered.size, size):
            raise ProofError("the consistency proof is not between the sizes asked for")
        if first.root_hash != old.root_hash:
            raise ProofError(f"the log was rewritten: its root at size {remembered.size} differs from the "
                             "remembered checkpoint")
        try:
            check_consistency(first.size, second.size, list(proof.hashes), first.root_hash, second.root_hash)
        except MerkleProofError as exc:
            raise ProofError(f"the log at {second.size} does not extend the remembered one at {first.size}: "
                             f"{exc}") from exc
        return f"consistent with the remembered checkpoint: size {first.size} -> {second.size}"

    def verify(self, vkey: str, memory: CheckpointMemory | None = None, event_ids: Iterable[str] = (),
               progress: Callable[[str], None] | None = None) -> VerifyReport:
        """Verify the latest checkpoint against the pinned ``vkey``, its consistency with the remembered one,
        and the inclusion of ``event_ids``; remember the checkpoint afterwards. Raises :class:`ProofError`."""
        try:
            verifier = CheckpointVerifier.from_vkey(vkey)
        except (CheckpointError, ValueError) as exc:
            raise ProofError(f"the pinned verifier key is not a valid signed-note key: {exc}") from exc
        report = VerifyReport()
        response = self.client.call(self.client.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest())
        try:
            latest = verifier.verify(response.checkpoint.signed_note.encode("utf-8"))
        except CheckpointError as exc:
            raise ProofError(f"the latest checkpoint is not signed by the pinned key: {exc}") from exc
        report.checkpoint_size = latest.size
        report.checks.append(f"checkpoint of {latest.origin} at size {latest.size} signed by the pinned key "
                             f"({verifier.vkey.split('+')[0]})")
        remembered = memory.load(latest.origin) if memory is not None else None
        if remembered is not None:
            if remembered.vkey != verifier.vkey:
                raise ProofError(f"the remembered checkpoint of {latest.origin} was verified with another key")
            if remembered.size > latest.size:
                raise ProofError(f"the log shrank: {latest.size} entries now, {remembered.size} remembered")
            if remembered.size == latest.size:
                if remembered.root_hash_hex != latest.root_hash.hex():
                    raise ProofError(f"the log forked: a different root at the remembered size {latest.size}")
                report.checks.append(f"same tree as the remembered checkpoint (size {latest.size})")
            else:
                report.checks.append(self._consistent(verifier, remembered, latest.size))
        for event_id in event_ids:
            try:
                included = self.client.verify_event_inclusion(event_id, verifier)
            except CheckpointError as exc:
                raise ProofError(f"the checkpoint of the proof for {event_id} is not signed by the pinned key: "
                                 f"{exc}") from exc
            report.checks.append(f"event {event_id} included at leaf {included.leaf_index} of {included.tree_size}")
            if progress is not None:
                progress(event_id)
        if memory is not None:
            memory.save(RememberedCheckpoint(latest.origin, verifier.vkey, latest.size, latest.root_hash.hex(),
                                             response.checkpoint.signed_note))
        return report
