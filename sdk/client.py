"""Python SDK for hospital integrations and compliance tooling.

Built from explicit parts (a channel, a token source, a deadline), never from
globals. Every call carries the deadline and the bearer token. Proofs are
verified here, on the client, against the signed checkpoint: trust comes from
the math, not from the server's word.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from ciphercare.ledger.transparency.checkpoint import CheckpointVerifier
from ciphercare.ledger.transparency.merkle import ProofError as MerkleProofError
from ciphercare.ledger.transparency.merkle import check_consistency, leaf_hash, verify_inclusion
from ciphercare.sdk.channels import ChannelSecurity, open_channel
from ciphercare.v1 import access_log_pb2, access_log_pb2_grpc, consent_pb2, consent_pb2_grpc

TokenSource = Callable[[], str]


class ProofError(Exception):
    """A proof or checkpoint from the server did not verify."""


@dataclass(frozen=True)
class VerifiedInclusion:
    leaf_index: int
    tree_size: int
    root_hash: bytes


class CiphercareClient:
    """Typed access to ConsentService and AccessLogService."""

    def __init__(self, channel: grpc.Channel, token: TokenSource, *, deadline_s: float = 10.0) -> None:
        self.channel = channel
        self._token = token
        self.deadline_s = deadline_s
        self.consent = consent_pb2_grpc.ConsentServiceStub(channel)
        self.access_log = access_log_pb2_grpc.AccessLogServiceStub(channel)

    @classmethod
    def connect(cls, target: str, token: TokenSource | str, *, deadline_s: float = 10.0,
                max_message_bytes: int = 4 * 1024 * 1024, security: ChannelSecurity | None = None) -> CiphercareClient:
        """A client over a new channel: TLS unless ``target`` is loopback (see :mod:`ciphercare.sdk.channels`)."""
        source: TokenSource = (lambda: token) if isinstance(token, str) else token
        channel = open_channel(
            target,
            security,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        return cls(channel, source, deadline_s=deadline_s)

    def close(self) -> None:
        self.channel.close()

    def _meta(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self._token()}")]

    def call(self, method: Callable, request):  # type: ignore[no-untyped-def,type-arg]
        """Invoke a unary stub method with the token and the deadline."""
        return method(request, metadata=self._meta(), timeout=self.deadline_s)

    # Consent --------------------------------------------------------------

    def grant(self, request: consent_pb2.GrantRequest) -> consent_pb2.GrantResponse:
        return self.call(self.consent.Grant, request)

    def revoke(self, consent_id: str, reason: str) -> consent_pb2.RevokeResponse:
        return self.call(self.consent.Revoke, consent_pb2.RevokeRequest(consent_id=consent_id, reason=reason))

    def check(self, pid: str, recipient_org: str, purpose: str, data_class: str) -> consent_pb2.CheckResponse:
        return self.call(
            self.consent.Check,
            consent_pb2.CheckRequest(pid=pid, recipient_organization=recipient_org, purpose=purpose,
                                     data_class=data_class),
        )

    def list_for_patient(self, pid: str, include_inactive: bool = False) -> list[consent_pb2.Consent]:
        response = self.call(
            self.consent.ListForPatient,
            consent_pb2.ListForPatientRequest(pid=pid, include_inactive=include_inactive),
        )
        return list(response.consents)

    # Access log -------------------------------------------------------------

    def record(self, request: access_log_pb2.RecordRequest) -> access_log_pb2.RecordResponse:
        return self.call(self.access_log.Record, request)

    def search_all(self, request: access_log_pb2.SearchRequest) -> Iterator[access_log_pb2.AccessEvent]:
        """Every matching event, following the cursor page by page."""
        page = access_log_pb2.SearchRequest()
        page.CopyFrom(request)
        while True:
            response = self.call(self.access_log.Search, page)
            yield from response.events
            if not response.next_page_token:
                return
            page.page_token = response.next_page_token

    def watch(self, start_sequence: int = 0, **filters: str) -> Iterator[access_log_pb2.AccessEvent]:
        """A live stream of events; no deadline (cancel it to stop)."""
        return self.access_log.Watch(
            access_log_pb2.WatchRequest(start_sequence=start_sequence, **filters), metadata=self._meta()
        )

    # Proofs -----------------------------------------------------------------

    def verifier(self) -> tuple[CheckpointVerifier, access_log_pb2.GetCheckpointResponse]:
        response = self.call(self.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest())
        return CheckpointVerifier.from_vkey(response.verifier_key), response

    def verify_event_inclusion(self, event_id: str, verifier: CheckpointVerifier) -> VerifiedInclusion:
        """Fetch and verify the inclusion proof of ``event_id`` against a signed checkpoint."""
        proof = self.call(
            self.access_log.GetInclusionProof, access_log_pb2.GetInclusionProofRequest(event_id=event_id)
        )
        checkpoint = verifier.verify(proof.checkpoint.signed_note.encode("utf-8"))
        if checkpoint.size != proof.tree_size:
            raise ProofError(f"proof is for size {proof.tree_size} but the checkpoint covers {checkpoint.size}")
        if not verify_inclusion(leaf_hash(proof.leaf), proof.leaf_index, proof.tree_size, list(proof.hashes),
                                checkpoint.root_hash):
            raise ProofError(f"inclusion proof of {event_id} does not lead to the signed root")
        return VerifiedInclusion(proof.leaf_index, proof.tree_size, checkpoint.root_hash)

    def verify_consistency(self, first_size: int, verifier: CheckpointVerifier,
                           second_size: int = 0) -> tuple[int, int]:
        """Verify that the log at ``second_size`` (0 = latest) extends the one at ``first_size``."""
        proof = self.call(
            self.access_log.GetConsistencyProof,
            access_log_pb2.GetConsistencyProofRequest(first_tree_size=first_size, second_tree_size=second_size),
        )
        first = verifier.verify(proof.first_checkpoint.signed_note.encode("utf-8"))
        second = verifier.verify(proof.second_checkpoint.signed_note.encode("utf-8"))
        if (first.size, second.size) != (proof.first_tree_size, proof.second_tree_size):
            raise ProofError("consistency proof sizes do not match its checkpoints")
        try:
            check_consistency(first.size, second.size, list(proof.hashes), first.root_hash, second.root_hash)
        except MerkleProofError as exc:
            raise ProofError(f"log at {second.size} is not an extension of the log at {first.size}: {exc}") from exc
        return first.size, second.size
