"""Protobuf <-> domain conversion shared by every flow: times, periods, actors, checkpoints, receipts.

Symmetric pairs (``*_to_proto`` / ``*_from_proto``); the domain side is the contracts' canonical JSON
(dicts), the proto side ``ciphercare.v1``. The consent flow's pairs live in services/consent/convert.py,
the access log's in services/audit/convert.py. Each pair has a round-trip test in
tests/platform/test_convert.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from ciphercare.ledger.api import Checkpoint, Receipt
from ciphercare.v1 import common_pb2


class ConversionError(ValueError):
    """A request field cannot be turned into a domain value (maps to INVALID_ARGUMENT)."""


# Time -------------------------------------------------------------------


#: google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799


def checked_timestamp(ts: Timestamp, what: str = "timestamp") -> datetime:
    """``ts`` as an aware UTC datetime; ConversionError (INVALID_ARGUMENT) outside years 1..9999 or for
    nanos outside 0..999,999,999."""
    if not 0 <= ts.nanos <= 999_999_999:
        raise ConversionError(f"{what}: nanos must be in 0..999999999")
    if not MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS:
        raise ConversionError(f"{what}: must lie in years 0001..9999 (RFC 3339)")
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def rfc3339_ms(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds and a 4-digit year (strftime drops the zero padding below 1000)."""
    moment = moment.astimezone(UTC)
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
            f"{moment.second:02d}.{moment.microsecond // 1000:03d}Z")


def iso_from_timestamp(ts: Timestamp, what: str = "timestamp") -> str:
    """RFC 3339 UTC with milliseconds, the contracts' time format (range-checked, see checked_timestamp)."""
    return rfc3339_ms(checked_timestamp(ts, what))


def timestamp_from_iso(text: str) -> Timestamp:
    ts = Timestamp()
    if not text:
        return ts
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConversionError(f"'{text}' is not an ISO-8601 time") from exc
    if moment.tzinfo is None:
        raise ConversionError(f"time '{text}' has no time zone")
    ts.FromDatetime(moment.astimezone(UTC))
    return ts


def timestamp_from_ms(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def ms_from_timestamp(ts: Timestamp, what: str = "timestamp") -> int:
    checked_timestamp(ts, what)
    return ts.seconds * 1000 + ts.nanos // 1_000_000


# Common -----------------------------------------------------------------


def period_to_proto(period: dict[str, Any] | None) -> common_pb2.Period:
    message = common_pb2.Period()
    if period:
        if period.get("start"):
            message.start.CopyFrom(timestamp_from_iso(period["start"]))
        if period.get("end"):
            message.end.CopyFrom(timestamp_from_iso(period["end"]))
    return message


def period_from_proto(message: common_pb2.Period) -> dict[str, Any]:
    period: dict[str, Any] = {}
    if message.HasField("start"):
        period["start"] = iso_from_timestamp(message.start, "period.start")
    if message.HasField("end"):
        period["end"] = iso_from_timestamp(message.end, "period.end")
    return period


def actor_to_proto(actor: dict[str, Any] | None) -> common_pb2.Actor:
    if not actor:
        return common_pb2.Actor()
    return common_pb2.Actor(
        subject=actor.get("subject", ""),
        organization=actor.get("org", ""),
        roles=list(actor.get("roles", [])),
        client_id=actor.get("client", ""),
    )


def actor_from_proto(message: common_pb2.Actor) -> dict[str, Any]:
    actor: dict[str, Any] = {"subject": message.subject, "org": message.organization, "roles": list(message.roles)}
    if message.client_id:
        actor["client"] = message.client_id
    return actor


def checkpoint_to_proto(checkpoint: Checkpoint) -> common_pb2.Checkpoint:
    return common_pb2.Checkpoint(
        origin=checkpoint.origin,
        tree_size=checkpoint.size,
        root_hash=checkpoint.root_hash,
        timestamp=timestamp_from_ms(checkpoint.timestamp_ms),
        signed_note=checkpoint.note.decode("utf-8"),
        key_name=checkpoint.key_name,
    )


def checkpoint_from_proto(message: common_pb2.Checkpoint, key_id: bytes = b"") -> Checkpoint:
    """Rebuild the checkpoint fields; the note must still be verified by the caller."""
    return Checkpoint(
        origin=message.origin,
        size=message.tree_size,
        root_hash=message.root_hash,
        timestamp_ms=ms_from_timestamp(message.timestamp),
        note=message.signed_note.encode("utf-8"),
        key_name=message.key_name,
        key_id=key_id,
    )


def receipt_to_proto(receipt: Receipt) -> common_pb2.LedgerReceipt:
    return common_pb2.LedgerReceipt(
        tx_id=receipt.tx_id, sequence=receipt.seq, checkpoint=checkpoint_to_proto(receipt.checkpoint)
    )
