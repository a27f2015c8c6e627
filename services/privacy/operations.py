"""Privacy guards and operations: pseudonym shape, the off-chain store's keys, patient erasure.

* :class:`PseudonymGuardInterceptor` refuses, before anything else sees the request,
  a ``pid`` that looks like a name or a medical record number: a pid goes on the
  ledger for ever, so it must be a pseudonym. The refusal never echoes the value.
* :func:`open_offchain_store` wires the store from settings: pool and timeouts,
  the key-encryption key (generated 0600 on first start), Alembic to head.
* :func:`erase_patient` records the erasure on the ledger (an admin's ``patient-erasure``
  access event through ``accesslog.Record``; the ledger is the source of truth) and
  then applies it to the store: the patient's data key is destroyed (crypto-shredding),
  their sealed documents and pseudonym registry rows deleted. A crash in between is repaired at the next start by the
  privacy projection (:mod:`ciphercare.services.store.consistency`).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from ciphercare.consent import canonical
from ciphercare.consent.contracts import ERASURE_OUTCOME_DESC
from ciphercare.consent.model import PID_RE
from ciphercare.ledger.api import Principal
from ciphercare.services.platform.gateway import ContractHandles
from ciphercare.services.platform.handlers import Behaviour, rewrap
from ciphercare.services.platform.settings import Settings
from ciphercare.services.store import OffchainStore
from ciphercare.services.store.consistency import PRIVACY_PRINCIPAL, erasure_from_event
from ciphercare.services.store.envelope import KeyEncryptionKey
from ciphercare.services.store.models import Erasure

# --- Pseudonym shape ----------------------------------------------------------------

_SEPARATORS = re.compile(r"[._-]+")
_RECORD_NUMBER_MARKER = re.compile(r"mrn|medrec|patnr|ssn|nhs|svnr", re.IGNORECASE)
_CAPITALISED_WORD = re.compile(r"[A-Z][a-z]{2,}")


def identifying_pid_reason(pid: str) -> str | None:
    """Why ``pid`` looks like an identity rather than a pseudonym, or ``None``.

    Defence in depth, not a proof: a pseudonym is issued by the hospital's
    pseudonymisation and carries a number or random part. Refused shapes: a
    record-number marker (``MRN-...``), digits only (a record number), no digit at
    all (a name such as ``jane.doe``), a capitalised word (``Doe-1984``).
    """
    if _RECORD_NUMBER_MARKER.search(pid):
        return "it looks like a medical record number"
    bare = _SEPARATORS.sub("", pid)
    if bare.isdigit() and len(bare) >= 5:
        return "it looks like a record number (digits only)"
    if not any(ch.isdigit() for ch in pid):
        return "it looks like a name (a pseudonym carries a number or random part)"
    if any(_CAPITALISED_WORD.fullmatch(segment) for segment in _SEPARATORS.split(pid)):
        return "it looks like a name"
    return None


def pid_refusal(pid: str) -> str | None:
    """The caller-facing refusal for an identifying ``pid`` (never echoes it), or ``None``."""
    reason = identifying_pid_reason(pid)
    if reason is None:
        return None
    return f"pid must be a pseudonym, not an identifier: the {len(pid)}-character value was refused because {reason}"


class PseudonymGuardInterceptor(aio.ServerInterceptor):
    """Refuses (INVALID_ARGUMENT) any request naming a patient by something shaped like a name or an MRN.

    Looks at every field called ``pid`` or ``pids``, at any depth of the request message
    (e.g. ``ScoreHeader.pids`` inside a streamed ``ScoreRequest``), in unary requests and in
    every message of a client stream. Placed first, so neither authentication's
    denied-access logging nor a servicer ever handles such a value.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return rewrap(handler, _guard_behaviour)


def _guard_behaviour(inner: Behaviour, request_streaming: bool, response_streaming: bool) -> Behaviour:
    """``inner`` behind the pseudonym guard: the unary request, or every message of a request stream."""
    if response_streaming:

        async def streaming(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            if request_streaming:
                request = _guarded(request, context)
            else:
                await _guard(request, context)
            async for item in inner(request, context):
                yield item

        return streaming

    async def unary(request: Any, context: aio.ServicerContext) -> Any:
        if request_streaming:
            request = _guarded(request, context)
        else:
            await _guard(request, context)
        return await inner(request, context)

    return unary


async def _guarded(requests: AsyncIterator[Any], context: aio.ServicerContext) -> AsyncIterator[Any]:
    async for request in requests:
        await _guard(request, context)
        yield request


def request_pids(message: Any, depth: int = 0) -> list[str]:
    """Every string in a field named ``pid`` or ``pids`` of a protobuf message, nested messages included."""
    found: list[str] = []
    list_fields = getattr(message, "ListFields", None)
    if list_fields is None or depth > 8:
        return found
    for descriptor, value in list_fields():
        repeated = descriptor.label == descriptor.LABEL_REPEATED
        if descriptor.type == descriptor.TYPE_STRING and descriptor.name in ("pid", "pids"):
            found.extend(value if repeated else [value])
        elif descriptor.type == descriptor.TYPE_MESSAGE and not (
            descriptor.message_type and descriptor.message_type.GetOptions().map_entry
        ):
            for item in value if repeated else [value]:
                found.extend(request_pids(item, depth + 1))
    return found


async def _guard(request: Any, context: aio.ServicerContext) -> None:
    for pid in request_pids(request):
        # Only values the pseudonym syntax would accept: anything else is refused by the validators
        # behind (which never put it on the ledger); this guard closes what they would let through.
        refusal = pid_refusal(pid) if PID_RE.match(pid) else None
        if refusal is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal)


# --- Wiring ----------------------------------------------------------------------------


def open_offchain_store(settings: Settings, *, migrate: bool = True) -> OffchainStore:
    """The store from settings: pooling and timeouts, the KEK (generated on first start), schema at head."""
    kek = KeyEncryptionKey.load_or_create(settings.resolved_kek_path)
    store = OffchainStore.from_url(
        settings.resolved_database_url,
        kek=kek,
        pool_size=settings.database_pool_size,
        pool_timeout_s=settings.database_pool_timeout_s,
        connect_timeout_s=settings.database_connect_timeout_s,
        statement_timeout_ms=settings.database_statement_timeout_ms,
        lock_timeout_ms=settings.database_lock_timeout_ms,
    )
    if migrate:
        store.migrate()
    return store


class LedgerInUseError(RuntimeError):
    """Another process (a running server) owns the embedded ledger."""


class LedgerOwnerLock:
    """An exclusive advisory lock next to the embedded ledger file: one writing process at a time.

    The server holds it while it runs; offline commands that write the ledger
    (``patient erase``) take it too and fail fast when the server has it.
    """

    def __init__(self, ledger_path: Path) -> None:
        self.path = ledger_path.with_name(ledger_path.name + ".owner.lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise LedgerInUseError(
                f"the ledger at {ledger_path} is in use by another process (a running ciphercare server?)"
            ) from None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def ledger_owner_lock(settings: Settings) -> LedgerOwnerLock | None:
    """The owner lock for the embedded ledger (``None`` for a shared ledger backend such as Fabric)."""
    if settings.ledger_backend != "embedded":
        return None
    return LedgerOwnerLock(settings.resolved_ledger_path)


# --- Erasure -----------------------------------------------------------------------------

ERASURE_PURPOSES = frozenset({"PATRQT", "HLEGAL"})


class ErasureError(RuntimeError):
    """The erasure could not be recorded or applied; the message says which step."""


@dataclass(frozen=True)
class ErasureResult:
    pid: str
    event_id: str
    seq: int
    tx_id: str
    documents_shredded: int
    keys_destroyed: int


def erase_patient(ledger: ContractHandles, store: OffchainStore, pid: str, *, purpose: str = "PATRQT",
                  principal: Principal = PRIVACY_PRINCIPAL, timeout_s: float = 10.0) -> ErasureResult:
    """Record the erasure of ``pid`` on the ledger, then destroy the patient's data key and documents.

    Ledger first: once the event is committed the erasure is owed, and the privacy
    projection applies it at the latest on the next start. The ledger keeps only
    the pseudonym, codes and times, so it stays verifiable and PHI-free.
    """
    refusal = pid_refusal(pid)
    if refusal is not None:
        raise ErasureError(refusal)
    if purpose not in ERASURE_PURPOSES:
        raise ErasureError(f"purpose must be one of {sorted(ERASURE_PURPOSES)}")
    event = {
        "type": "110110",
        "subtype": "delete",
        "action": "D",
        "outcome": "success",
        "outcome_desc": ERASURE_OUTCOME_DESC,
        "purpose_of_use": purpose,
        "source": {"observer": "ciphercare/privacy"},
        "entity": {"pid": pid, "data_classes": []},
    }
    contract = ledger.accesslog(principal)
    receipt = asyncio.run(contract.submit("Record", canonical.dumps(event).decode(), timeout=timeout_s))
    events = [e for e in receipt.events if e.name == "AccessRecorded"]
    if len(events) != 1:
        raise ErasureError(f"erasure tx {receipt.tx_id} emitted {len(events)} AccessRecorded events")
    payload = canonical.loads(events[0].payload)
    erasure = erasure_from_event(payload, receipt.seq, receipt.tx_id)
    if erasure is None:
        raise ErasureError(f"erasure tx {receipt.tx_id} did not record an erasure event")
    try:
        store.apply_privacy_batch([], [erasure], None)
        applied: list[Erasure] = [e for e in store.erasures(pid) if e.event_id == erasure.event_id]
    except Exception as exc:  # noqa: BLE001 - reported as one line; the ledger already holds the erasure
        raise ErasureError(
            f"the erasure is on the ledger (seq {receipt.seq}) but the store could not apply it now "
            f"({type(exc).__name__}); the next start of the server applies it"
        ) from exc
    if not applied:
        raise ErasureError(f"the erasure is on the ledger (seq {receipt.seq}) but the store did not apply it")
    return ErasureResult(pid, erasure.event_id, receipt.seq, receipt.tx_id, applied[0].documents_shredded,
                         applied[0].keys_destroyed)


__all__ = [
    "ErasureError",
    "ErasureResult",
    "LedgerInUseError",
    "LedgerOwnerLock",
    "PseudonymGuardInterceptor",
    "erase_patient",
    "identifying_pid_reason",
    "ledger_owner_lock",
    "open_offchain_store",
    "pid_refusal",
]
