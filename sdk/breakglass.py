"""The compliance officer's break-glass review: the declarations to review and the review verbs.

:class:`BreakGlassReviewClient` wraps the review side of ``BreakGlassService`` (``ListForReview``, ``Get``,
``Review``) over a :class:`~ciphercare.sdk.client.CiphercareClient`. The service and its contract decide who
may do what (compliance officers review; nobody reviews their own declaration; an acknowledged declaration
is final); this client adds the officer's reading order and checks the write receipt of every review: the
signed checkpoint, the leaf's inclusion, and that the leaf is the ``breakglass`` contract's ``Review`` of
that declaration with that outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ciphercare.ledger.transparency.checkpoint import CheckpointError, CheckpointVerifier
from ciphercare.sdk.client import CiphercareClient, ProofError, TokenSource
from ciphercare.sdk.leaf import LeafError, parse_leaf
from ciphercare.v1 import breakglass_pb2, breakglass_pb2_grpc

PENDING, ESCALATED, ACKNOWLEDGED = "pending", "escalated", "acknowledged"
REVIEW_OUTCOMES = (ACKNOWLEDGED, ESCALATED)
#: The officer's reading order: pending first, then escalated (both high priority), then acknowledged.
_PRIORITY_RANK = {PENDING: 0, ESCALATED: 1, ACKNOWLEDGED: 2}


def high_priority(declaration: breakglass_pb2.BreakGlassDeclaration) -> bool:
    """Every declaration is high priority until an officer acknowledges it (as the console shows it)."""
    return declaration.review_status != ACKNOWLEDGED


def review_order(
    declarations: Iterable[breakglass_pb2.BreakGlassDeclaration],
) -> list[breakglass_pb2.BreakGlassDeclaration]:
    """High priority first (pending, then escalated, then acknowledged), newest first within each."""
    return sorted(declarations, key=lambda d: (_PRIORITY_RANK.get(d.review_status, 3),
                                               -d.declared_at.seconds, -d.declared_at.nanos))


class BreakGlassReviewClient:
    """BreakGlassService's review calls, with the token and deadline of one client."""

    def __init__(self, client: CiphercareClient) -> None:
        self.client = client
        self.stub = breakglass_pb2_grpc.BreakGlassServiceStub(client.channel)

    @classmethod
    def connect(cls, target: str, token: TokenSource | str, **options: Any) -> BreakGlassReviewClient:
        return cls(CiphercareClient.connect(target, token, **options))

    def close(self) -> None:
        self.client.close()

    def list_for_review(self, review_status: str = "") -> breakglass_pb2.ListBreakGlassForReviewResponse:
        """Declarations in ``review_status`` (empty: all), newest first, with the counts over all of them."""
        response: breakglass_pb2.ListBreakGlassForReviewResponse = self.client.call(
            self.stub.ListForReview, breakglass_pb2.ListBreakGlassForReviewRequest(review_status=review_status))
        return response

    def get(self, declaration_id: str) -> breakglass_pb2.GetBreakGlassResponse:
        """One declaration with its justification and the reviewers' notes (off-chain text)."""
        response: breakglass_pb2.GetBreakGlassResponse = self.client.call(
            self.stub.Get, breakglass_pb2.GetBreakGlassRequest(declaration_id=declaration_id))
        return response

    def review(self, declaration_id: str, outcome: str, note: str = "") -> breakglass_pb2.ReviewBreakGlassResponse:
        """Acknowledge or escalate; the write receipt is verified (see the module). Raises ``ValueError`` for bad
        input (nothing sent), ``grpc.RpcError`` for a refusal, and :class:`ProofError` when the review was
        submitted but its receipt does not prove it."""
        if outcome not in REVIEW_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(REVIEW_OUTCOMES)}, not {outcome!r}")
        if self.client.vkey:  # a key that cannot check the receipt is refused before anything is written
            try:
                CheckpointVerifier.from_vkey(self.client.vkey)
            except (CheckpointError, ValueError) as exc:
                raise ValueError(f"the pinned verifier key is not a signed-note verifier key: {exc}") from None
        response: breakglass_pb2.ReviewBreakGlassResponse = self.client.call(
            self.stub.Review, breakglass_pb2.ReviewBreakGlassRequest(declaration_id=declaration_id, outcome=outcome,
                                                                     note=note))
        self.client.verify_write(response.receipt)
        try:
            entry = parse_leaf(response.receipt.leaf)
        except LeafError as exc:  # pragma: no cover - verify_write parsed the same leaf
            raise ProofError(f"the write receipt does not verify: {exc}") from exc
        args = entry.get("args")
        if (entry["contract"], entry["function"]) != ("breakglass", "Review") or not isinstance(args, list) \
                or args[:2] != [declaration_id, outcome]:
            raise ProofError(f"the write receipt is not the ledger's record of this review of {declaration_id}")
        if response.declaration.id != declaration_id or not response.declaration.reviews or \
                response.declaration.reviews[-1].outcome != outcome:
            raise ProofError(f"the service answered with another declaration than the one reviewed ({declaration_id})")
        return response
