"""Break-glass declarations: contract JSON <-> protobuf, as a symmetric pair."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from ciphercare.consent.model import format_time
from ciphercare.services.platform import convert
from ciphercare.v1 import breakglass_pb2


def _chain_time(ts: Timestamp) -> str:
    """A proto timestamp in the contracts' one text form of time."""
    return format_time(ts.ToDatetime(tzinfo=UTC))


def is_active(record: dict[str, Any], now: datetime) -> bool:
    """Declared at or before ``now`` and not yet expired (end exclusive)."""
    start = datetime.fromisoformat(record["declared_at"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(record["expires_at"].replace("Z", "+00:00"))
    return start <= now < end


def declaration_to_proto(record: dict[str, Any], now: datetime) -> breakglass_pb2.BreakGlassDeclaration:
    """A stored declaration (contract JSON) as its proto; ``active`` is evaluated at ``now``."""
    return breakglass_pb2.BreakGlassDeclaration(
        id=record["id"],
        version=record["version"],
        pid=record["pid"],
        purpose=record["purpose"],
        reason_code=record["reason_code"],
        text_sha256=record["text_sha256"],
        declared_at=convert.timestamp_from_iso(record["declared_at"]),
        expires_at=convert.timestamp_from_iso(record["expires_at"]),
        declared_by=convert.actor_to_proto(record["declared_by"]),
        review_status=record["review_status"],
        reviews=[
            breakglass_pb2.BreakGlassReview(
                outcome=r["outcome"],
                reviewed_by=convert.actor_to_proto(r["reviewed_by"]),
                reviewed_at=convert.timestamp_from_iso(r["reviewed_at"]),
                note_sha256=r["note_sha256"] or "",
            )
            for r in record["reviews"]
        ],
        active=is_active(record, now),
    )


def declaration_from_proto(message: breakglass_pb2.BreakGlassDeclaration) -> dict[str, Any]:
    """The contract JSON of a declaration proto (``active`` is derived, not stored, and dropped)."""
    return {
        "id": message.id,
        "version": message.version,
        "pid": message.pid,
        "purpose": message.purpose,
        "reason_code": message.reason_code,
        "text_sha256": message.text_sha256,
        "declared_at": _chain_time(message.declared_at),
        "expires_at": _chain_time(message.expires_at),
        "declared_by": convert.actor_from_proto(message.declared_by),
        "review_status": message.review_status,
        "reviews": [
            {
                "outcome": r.outcome,
                "reviewed_by": convert.actor_from_proto(r.reviewed_by),
                "reviewed_at": _chain_time(r.reviewed_at),
                "note_sha256": r.note_sha256 or None,
            }
            for r in message.reviews
        ],
    }

