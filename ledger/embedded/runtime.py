"""Runs Fabric contracts in-process through fabric-chaincode-python's own dispatcher.

:class:`WorldStateStub` implements the ``ChaincodeStubInterface`` surface of
the Python shim (same method names, same sync/async split, same return
shapes: ``get_state`` returns ``b""`` for a missing key, range/history
queries return async iterators of ``fabric_protos`` ``KV`` /
``KeyModification`` messages, ``get_creator()`` returns
``{'mspid', 'idBytes'}``) over the embedded ledger's world state.

Fabric semantics mirrored on purpose:

* no read-your-writes: reads inside a transaction see committed state (plus,
  for group commit, the writes of EARLIER transactions of the same batch,
  which are ordered before it), never the transaction's own writes;
* ``put_state`` with an empty value is a delete (Fabric's ``IsDelete =
  len(value) == 0``);
* range queries reject composite keys and map an empty start key to
  ``"\\x01"`` (the Go shim's ``emptyKeySubstitute``); an empty end key is
  unbounded;
* history is newest first (Fabric 2.x);
* paginated queries are refused in submitted (update) transactions.

Deliberate difference: Fabric keeps only the LAST ``set_event`` of a
transaction; like the Python shim's own stub we keep every event, in order,
and commit them all.

The stub never suspends, so :func:`run_without_loop` drives the dispatcher's
coroutine with ``send(None)`` and no event loop; ``evaluate`` is therefore
safe to call from inside a running asyncio loop's thread.

Direct dispatch (:class:`DirectDispatch`): fabric-chaincode-python's
dispatcher validates every argument and the return value against a JSON
schema (``jsonschema``) on every call, 60 % of a trivial transaction's cost.
For transactions whose registered metadata is only ``{"type": "string"}``
parameters and a ``{"type": "string"}`` (or no) return, that validation is a
type check the runtime can decide once: the arguments are checked to be
``str`` before the call, and a non-``str`` return goes through the
dispatcher's own serializer, so the error text is the dispatcher's.
Everything else the dispatcher does (contract lookup by ``ns:fn``, the
context, the client identity, the "incorrect number of params" and error
responses) is replicated and checked against the dispatcher by tests; any
transaction outside that shape (other parameter types, before/after hooks,
unknown functions, a custom serializer) still goes through the dispatcher.
The contracts are unchanged and run the same on a Fabric peer.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fabric_chaincode_python.fabric_contract_api.contractapi import ContractChaincode
from fabric_chaincode_python.fabric_contract_api.contractapi.transaction_context import ClientIdentity
from fabric_chaincode_python.fabric_contract_api.serializer import JSONSerializer
from fabric_chaincode_python.fabric_shim.interfaces import ChaincodeStubInterface
from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub
from fabric_chaincode_python.fabric_shim.utils import COMPOSITEKEY_NS
from fabric_protos.ledger.queryresult import kv_query_result_pb2 as kv_pb
from fabric_protos.peer import chaincode_event_pb2 as event_pb
from google.protobuf.timestamp_pb2 import Timestamp

from ciphercare.ledger.api import ChaincodeEvent, EndorseError
from ciphercare.ledger.embedded.log import HistoryRecord
from ciphercare.ledger.embedded.msp import Identity

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Status codes a contract may put in front of its error message ("CODE: detail").
CONTRACT_ERROR_CODES = frozenset(
    {"INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "FAILED_PRECONDITION"}
)
#: Message prefixes produced by the dispatcher itself when the call does not fit the contract.
_DISPATCH_ERROR_PREFIXES = (
    "error managing parameter",
    "incorrect number of params",
    "Contract not found with name",
    "Blank function name passed",
)
_EMPTY_KEY_SUBSTITUTE = "\x01"
_MAX_UNICODE_RUNE = "\U0010ffff"
_ERROR_THRESHOLD = 400


class StateReader(Protocol):
    """Committed world-state reads the stub needs (``ledger.log.StateView`` implements it)."""

    def get(self, key: str) -> bytes | None: ...

    def range(self, start: str, end: str) -> list[tuple[str, bytes]]: ...

    def history(self, key: str) -> list[HistoryRecord]: ...


class ChaincodeSuspended(RuntimeError):
    """The chaincode awaited something that really suspends; the embedded runtime has no event loop."""


def run_without_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to completion without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise ChaincodeSuspended(
        "chaincode awaited an operation that suspends (e.g. asyncio.sleep or network I/O); "
        "embedded contracts may only await the stub"
    )


_NONCE_SIZE = 24
_NONCE_POOL_SIZE = _NONCE_SIZE * 512


class _NoncePool(threading.local):
    """Per-thread nonces cut from one ``os.urandom`` read: a system call (which releases and then
    waits to re-take the GIL) per 512 transactions instead of one per transaction."""

    def __init__(self) -> None:
        self.buf = b""
        self.pos = 0

    def take(self) -> bytes:
        pos = self.pos
        if pos + _NONCE_SIZE > len(self.buf):
            self.buf = os.urandom(_NONCE_POOL_SIZE)
            pos = 0
        self.pos = pos + _NONCE_SIZE
        return self.buf[pos : pos + _NONCE_SIZE]


_NONCES = _NoncePool()


def new_tx_id(identity: Identity) -> str:
    """Fabric-style transaction id: hex(SHA-256(24-byte random nonce || serialized creator))."""
    return hashlib.sha256(_NONCES.take() + identity.serialized).hexdigest()


def endorse_error(tx_id: str, message: str) -> EndorseError:
    """Map a chaincode error message to an :class:`EndorseError` with a gRPC status name."""
    head, sep, detail = message.partition(":")
    if sep and head in CONTRACT_ERROR_CODES:
        return EndorseError(tx_id, head, detail.strip())
    if message.startswith(_DISPATCH_ERROR_PREFIXES) or (
        message.startswith("Function ") and " not found in contract " in message
    ):
        return EndorseError(tx_id, "INVALID_ARGUMENT", message)
    return EndorseError(tx_id, "INTERNAL", message or "chaincode failed without a message")


def _validate_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be a string, got {type(key).__name__}")
    if not key:
        raise ValueError("key must not be an empty string")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"key {key!r} is not valid UTF-8") from exc
    return key


def _validate_simple_key(key: str) -> None:
    if key and key[0] == COMPOSITEKEY_NS:
        raise ValueError(f"first character of the key {key!r} contains a null character which is not allowed")


def _timestamp(ts_ms: int) -> Timestamp:
    return Timestamp(seconds=ts_ms // 1000, nanos=(ts_ms % 1000) * 1_000_000)


class BatchOverlay:
    """The writes of transactions earlier in the pending batch, layered over committed state.

    With the pipelined writer, ``parent`` is the overlay of the batch still being committed
    (set while that batch is not yet visible in the snapshot this batch reads), so a
    transaction sees committed state + every earlier write of the pipeline, in order.
    """

    __slots__ = ("values", "history", "parent")

    def __init__(self, parent: BatchOverlay | None = None) -> None:
        self.values: dict[str, bytes | None] = {}
        self.history: dict[str, list[tuple[str, int, bytes | None]]] = {}
        self.parent = parent

    def apply(self, tx_id: str, ts_ms: int, writes: Sequence[tuple[str, bytes | None]]) -> None:
        """Layer a successful transaction's write set on top."""
        values = self.values
        history = self.history
        for key, value in writes:
            values[key] = value
            hist = history.get(key)
            if hist is None:
                history[key] = [(tx_id, ts_ms, value)]
            else:
                hist.append((tx_id, ts_ms, value))

    def lookup(self, key: str) -> tuple[bool, bytes | None]:
        """``(True, value)`` when this overlay or its parent wrote ``key`` (None = deleted), else ``(False, None)``."""
        layer: BatchOverlay | None = self
        while layer is not None:
            if key in layer.values:
                return True, layer.values[key]
            layer = layer.parent
        return False, None

    def pending(self, start: str, end: str) -> dict[str, bytes | None]:
        """Overlaid keys in ``[start, end)`` (``end == ""`` unbounded), newest layer winning."""
        layers: list[BatchOverlay] = []
        layer: BatchOverlay | None = self
        while layer is not None:
            layers.append(layer)
            layer = layer.parent
        out: dict[str, bytes | None] = {}
        for lay in reversed(layers):
            for k, v in lay.values.items():
                if k >= start and (not end or k < end):
                    out[k] = v
        return out

    def key_history(self, key: str) -> list[tuple[str, int, bytes | None]]:
        """Overlaid modifications of ``key``, newest first."""
        out: list[tuple[str, int, bytes | None]] = []
        layer: BatchOverlay | None = self
        while layer is not None:
            out.extend(reversed(layer.history.get(key, ())))
            layer = layer.parent
        return out


class StateIterator:
    """Async iterator over query results (the shim's ``StateQueryIterator`` / ``HistoryQueryIterator`` shape).

    Paginated queries also expose ``fetched_records_count`` and ``bookmark``
    (Fabric's ``QueryResponseMetadata``).
    """

    def __init__(self, items: Sequence[Any], *, bookmark: str = "") -> None:
        self._items = list(items)
        self._pos = 0
        self._closed = False
        self.fetched_records_count = len(self._items)
        self.bookmark = bookmark

    def __aiter__(self) -> StateIterator:
        return self

    async def __anext__(self) -> Any:
        if self._closed or self._pos >= len(self._items):
            self._closed = True
            raise StopAsyncIteration
        item = self._items[self._pos]
        self._pos += 1
        return item

    async def aclose(self) -> None:
        """Stop iterating; safe to call more than once."""
        self._closed = True

    async def close(self) -> None:
        """Alias of :meth:`aclose` (the Node/Go shims call it ``close``)."""
        self._closed = True


class WorldStateStub(ChaincodeStubInterface):
    """A ``ChaincodeStub`` backed by the embedded ledger's world state."""

    def __init__(
        self,
        view: StateReader,
        overlay: BatchOverlay | None,
        *,
        tx_id: str,
        channel_id: str,
        chaincode_name: str,
        function: str,
        params: Sequence[str],
        identity: Identity,
        ts_ms: int,
        read_only: bool,
    ) -> None:
        self._view = view
        self._overlay = overlay
        self._function = function
        self._params = list(params)
        self._read_only = read_only
        self._writes: dict[str, bytes | None] = {}
        self._events: list[event_pb.ChaincodeEvent] = []
        # Same public attributes as the shim's ChaincodeStub.
        self.tx_id = tx_id
        self.channel_id = channel_id
        self.chaincode_id_name = chaincode_name
        self.creator = identity.creator()
        self.tx_timestamp = _timestamp(ts_ms)

    # ------------------------------------------------------------------ transaction info

    def get_function_and_parameters(self) -> tuple[str, list[str]]:
        """``("Contract:Function", [params...])`` as the shim returns it."""
        if not self._function:
            raise Exception("no function name provided in transaction payload")
        return self._function, list(self._params)

    def get_args(self) -> list[bytes]:
        """Function name and parameters as bytes."""
        return [self._function.encode()] + [p.encode() for p in self._params]

    def get_string_args(self) -> list[str]:
        """Function name and parameters as strings."""
        return [self._function] + list(self._params)

    def get_txid(self) -> str:
        return self.tx_id

    def get_channel_id(self) -> str:
        return self.channel_id

    def get_creator(self) -> dict[str, Any]:
        """``{'mspid': ..., 'idBytes': <PEM certificate bytes>}`` like the shim."""
        return self.creator

    def get_transient(self) -> dict[str, bytes]:
        """The embedded gateway sends no transient data."""
        return {}

    def get_tx_timestamp(self) -> Timestamp:
        return self.tx_timestamp

    # ------------------------------------------------------------------ state

    def _read(self, key: str) -> bytes | None:
        if self._overlay is not None:
            found, value = self._overlay.lookup(key)
            if found:
                return value
        return self._view.get(key)

    async def get_state(self, key: str) -> bytes:
        """Committed value (no read-your-writes); ``b""`` when the key does not exist, like the shim."""
        value = self._read(_validate_key(key))
        return b"" if value is None else value

    async def put_state(self, key: str, value: bytes | bytearray | str) -> None:
        """Record a write (an empty value is a delete, as in Fabric)."""
        _validate_key(key)
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value)
        else:
            raise TypeError(f"value must be bytes or str, got {type(value).__name__}")
        self._writes[key] = value if value else None

    async def delete_state(self, key: str) -> None:
        """Record a delete."""
        self._writes[_validate_key(key)] = None

    def _range(self, start: str, end: str) -> list[tuple[str, bytes]]:
        committed = self._view.range(start, end)
        if self._overlay is None:
            return committed
        pending = self._overlay.pending(start, end)
        if not pending:
            return committed
        merged = {k: v for k, v in committed}
        for k, v in pending.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        return sorted(merged.items())

    def _kvs(self, rows: Sequence[tuple[str, bytes]]) -> list[kv_pb.KV]:
        ns = self.chaincode_id_name
        return [kv_pb.KV(namespace=ns, key=k, value=v) for k, v in rows]

    @staticmethod
    def _simple_range(start_key: str, end_key: str) -> tuple[str, str]:
        if not isinstance(start_key, str) or not isinstance(end_key, str):
            raise TypeError("range keys must be strings")
        start = start_key or _EMPTY_KEY_SUBSTITUTE
        _validate_simple_key(start)
        _validate_simple_key(end_key)
        return start, end_key

    async def get_state_by_range(self, start_key: str, end_key: str) -> StateIterator:
        """Keys in ``[start_key, end_key)`` (empty = unbounded) as ``KV`` messages in key order."""
        start, end = self._simple_range(start_key, end_key)
        return StateIterator(self._kvs(self._range(start, end)))

    def _paginate(self, start: str, end: str, page_size: int, bookmark: str) -> StateIterator:
        if not self._read_only:
            raise Exception("paginated queries are only supported in read-only (evaluate) transactions")
        if not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size must be a positive integer, got {page_size!r}")
        if bookmark:
            if bookmark < start or (end and bookmark >= end):
                raise ValueError(f"bookmark {bookmark!r} is outside the queried range")
            start = bookmark
        rows = self._range(start, end)
        page = rows[:page_size]
        next_bookmark = rows[page_size][0] if len(rows) > page_size else ""
        return StateIterator(self._kvs(page), bookmark=next_bookmark)

    async def get_state_by_range_with_pagination(
        self, start_key: str, end_key: str, page_size: int, bookmark: str = ""
    ) -> StateIterator:
        """One page of :meth:`get_state_by_range`; the iterator carries the next ``bookmark``."""
        start, end = self._simple_range(start_key, end_key)
        return self._paginate(start, end, page_size, bookmark)

    async def get_state_by_partial_composite_key(self, object_type: str, attributes: Sequence[str]) -> StateIterator:
        """Keys under the composite key prefix, ``[prefix, prefix + U+10FFFF)`` as the shim does."""
        prefix = self.create_composite_key(object_type, attributes)
        return StateIterator(self._kvs(self._range(prefix, prefix + _MAX_UNICODE_RUNE)))

    async def get_state_by_partial_composite_key_with_pagination(
        self, object_type: str, attributes: Sequence[str], page_size: int, bookmark: str = ""
    ) -> StateIterator:
        """One page of :meth:`get_state_by_partial_composite_key`."""
        prefix = self.create_composite_key(object_type, attributes)
        return self._paginate(prefix, prefix + _MAX_UNICODE_RUNE, page_size, bookmark)

    async def get_history_for_key(self, key: str) -> StateIterator:
        """``KeyModification`` records for ``key``, newest first."""
        _validate_key(key)
        mods: list[kv_pb.KeyModification] = []
        if self._overlay is not None:
            for tx_id, ts_ms, value in self._overlay.key_history(key):
                mods.append(
                    kv_pb.KeyModification(
                        tx_id=tx_id, value=value or b"", timestamp=_timestamp(ts_ms), is_delete=value is None
                    )
                )
        rec: HistoryRecord
        for rec in self._view.history(key):
            mods.append(
                kv_pb.KeyModification(
                    tx_id=rec.tx_id,
                    value=rec.value or b"",
                    timestamp=_timestamp(rec.ts_ms),
                    is_delete=rec.is_delete,
                )
            )
        return StateIterator(mods)

    # ------------------------------------------------------------------ composite keys (the shim's own code)

    def create_composite_key(self, object_type: str, attributes: Sequence[str]) -> str:
        """``\\x00 + type + \\x00 + attr + \\x00 ...`` exactly as the shim builds it."""
        return ChaincodeStub.create_composite_key(self, object_type, attributes)  # type: ignore[arg-type]

    def split_composite_key(self, composite_key: str) -> tuple[str | None, list[str]]:
        """Inverse of :meth:`create_composite_key` (the shim's implementation)."""
        return ChaincodeStub.split_composite_key(self, composite_key)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ events

    def set_event(self, name: str, payload: bytes | str | None) -> None:
        """Emit a chaincode event (all events are kept, in order; see the module docstring)."""
        if not isinstance(name, str) or not name:
            raise Exception("event name must be a non-empty string")
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        elif payload is None:
            payload = b""
        elif not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"event payload must be bytes or str, got {type(payload).__name__}")
        self._events.append(
            event_pb.ChaincodeEvent(
                chaincode_id=self.chaincode_id_name, tx_id=self.tx_id, event_name=name, payload=bytes(payload)
            )
        )

    def get_events(self) -> list[event_pb.ChaincodeEvent]:
        """The events emitted so far (``fabric_protos`` ``ChaincodeEvent`` messages)."""
        return list(self._events)

    # ------------------------------------------------------------------ unsupported on the embedded ledger

    async def get_query_result(self, query: str) -> StateIterator:
        raise Exception("rich (CouchDB) queries are not supported by the embedded ledger")

    async def get_query_result_with_pagination(self, query: str, page_size: int, bookmark: str = "") -> StateIterator:
        raise Exception("rich (CouchDB) queries are not supported by the embedded ledger")

    async def invoke_chaincode(self, chaincode_name: str, args: Sequence[str], channel: str = "") -> Any:
        raise Exception("chaincode-to-chaincode invocation is not supported by the embedded ledger")

    def set_state_validation_parameter(self, *args: Any) -> None:
        raise Exception("key-level endorsement policies are not supported by the embedded ledger")

    def get_state_validation_parameter(self, *args: Any) -> None:
        raise Exception("key-level endorsement policies are not supported by the embedded ledger")

    async def get_private_data(self, *args: Any) -> bytes:
        raise Exception("private data collections are not supported by the embedded ledger")

    async def put_private_data(self, *args: Any) -> None:
        raise Exception("private data collections are not supported by the embedded ledger")

    async def delete_private_data(self, *args: Any) -> None:
        raise Exception("private data collections are not supported by the embedded ledger")

    # ------------------------------------------------------------------ results

    def write_set(self) -> tuple[tuple[str, bytes | None], ...]:
        """The final write set, sorted by key."""
        return tuple(sorted(self._writes.items()))


_STRING_SCHEMA = {"type": "string"}


@dataclass(frozen=True)
class _DirectCall:
    """One transaction function the runtime may call without the per-call schema validation."""

    function: Callable[..., Any]
    is_coroutine: bool
    n_params: int
    uses_context: bool
    returns_value: bool
    context_type: type
    returns_metadata: Any
    components: Any
    serializer: Any
    success_type: Any


class DirectDispatch:
    """The compiled dispatch table of one ``ContractChaincode`` (see the module docstring).

    Built once from the chaincode's own registration (``_contracts``) and compiled metadata
    (``_metadata``); :meth:`lookup` returns None for anything the dispatcher must handle itself.
    """

    def __init__(self, chaincode: ContractChaincode) -> None:
        self.default_contract: str = getattr(chaincode, "DefaultContract", "")
        self._table: dict[tuple[str, str], _DirectCall] = {}
        contracts = getattr(chaincode, "_contracts", None)
        metadata = getattr(chaincode, "_metadata", None)
        serializer = getattr(chaincode, "TransactionSerializer", None)
        if not isinstance(contracts, dict) or metadata is None or type(serializer) is not JSONSerializer:
            return
        for ns, record in contracts.items():
            if record.before_transaction is not None or record.after_transaction is not None:
                continue
            contract_meta = metadata.contracts.get(ns)
            if contract_meta is None:
                continue
            for name, fn in record.functions.items():
                call = self._compile(name, fn, contract_meta, metadata, serializer, record.transaction_context_handler)
                if call is not None:
                    self._table[(ns, name)] = call

    @staticmethod
    def _compile(
        name: str, fn: Any, contract_meta: Any, metadata: Any, serializer: Any, context_type: type
    ) -> _DirectCall | None:
        # The dispatcher matches the metadata by ``tx.name == fn or tx.name == Fn``; take the first such.
        tx_meta = next(
            (tx for tx in contract_meta.transactions if tx.name == name or tx.name == name[:1].upper() + name[1:]),
            None,
        )
        if tx_meta is None:
            return None
        fields = list(fn.params.fields)
        if any(f is not str for f in fields) or len(tx_meta.parameters) != len(fields):
            return None
        if any(p.schema != _STRING_SCHEMA for p in tx_meta.parameters):
            return None
        if fn.returns.error or fn.returns.success not in (None, str):
            return None
        returns_schema = tx_meta.returns.schema if tx_meta.returns is not None else None
        if returns_schema not in (None, _STRING_SCHEMA):
            return None
        return _DirectCall(
            function=fn.function,
            is_coroutine=inspect.iscoroutinefunction(fn.function),
            n_params=len(fields),
            uses_context=fn.params.context is not None,
            returns_value=fn.returns.success is not None,
            context_type=context_type,
            returns_metadata=tx_meta.returns,
            components=metadata.components,
            serializer=serializer,
            success_type=fn.returns.success,
        )

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, transaction_name: str) -> _DirectCall | None:
        """The direct call for ``ns:fn`` split as the dispatcher splits it (last ``:``), or None."""
        idx = transaction_name.rfind(":")
        if idx == -1:
            key = (self.default_contract, transaction_name)
        else:
            key = (transaction_name[:idx], transaction_name[idx + 1 :])
        return self._table.get(key)

    @staticmethod
    def invoke(call: _DirectCall, stub: WorldStateStub, params: Sequence[str]) -> tuple[int, bytes, str]:
        """Run ``call`` as the dispatcher would: ``(status, payload, message)``.

        Raises :class:`ChaincodeSuspended` when the contract awaits something that suspends.
        """
        if len(params) < call.n_params:
            return 500, b"", f"incorrect number of params. Expected {call.n_params}, received {len(params)}"
        ctx = call.context_type()
        ctx.set_stub(stub)
        ctx.set_client_identity(ClientIdentity(stub))
        args = params[: call.n_params]
        try:
            if call.uses_context:
                result = call.function(ctx, *args)
            else:
                result = call.function(*args)
            if call.is_coroutine:
                result = run_without_loop(result)
        except ChaincodeSuspended:
            raise
        except Exception as exc:
            return 500, b"", str(exc)
        if not call.returns_value or result is None:
            return 200, b"", ""
        if type(result) is str:
            return 200, result.encode("utf-8"), ""
        # Not a str: the dispatcher's own serializer decides (and words the error).
        text, err = call.serializer.to_string(result, call.success_type, call.returns_metadata, call.components)
        if err is not None:
            return 500, b"", f"error handling success response. {err}"
        return 200, str(text).encode("utf-8"), ""


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of running one transaction proposal."""

    tx_id: str
    status: int
    payload: bytes
    message: str
    writes: tuple[tuple[str, bytes | None], ...]
    events: tuple[ChaincodeEvent, ...]

    @property
    def ok(self) -> bool:
        return self.status < _ERROR_THRESHOLD


class ChaincodeRuntime:
    """Executes transactions of one ``ContractChaincode`` against a state view."""

    def __init__(self, chaincode: ContractChaincode, *, channel: str, chaincode_name: str, direct: bool = True) -> None:
        if not hasattr(chaincode, "invoke"):
            raise TypeError(f"{type(chaincode).__name__} is not a chaincode (no invoke method)")
        self.chaincode = chaincode
        self.channel = channel
        self.chaincode_name = chaincode_name
        #: The compiled dispatch table; None runs every call through the dispatcher.
        self.direct = DirectDispatch(chaincode) if direct else None

    @staticmethod
    def transaction_name(contract: str, function: str) -> str:
        """The Fabric gateway transaction name: ``Contract:Function`` (or just the function)."""
        if not function:
            raise ValueError("function name must not be empty")
        return f"{contract}:{function}" if contract else function

    def execute(
        self,
        view: StateReader,
        overlay: BatchOverlay | None,
        identity: Identity,
        contract: str,
        function: str,
        args: Sequence[str],
        *,
        tx_id: str,
        ts_ms: int,
        read_only: bool,
    ) -> ExecutionResult:
        """Run one proposal; contract failures come back as a non-OK result, never as an exception."""
        for i, a in enumerate(args):
            if not isinstance(a, str):
                return ExecutionResult(
                    tx_id, 500, b"", f"INVALID_ARGUMENT: argument {i} is {type(a).__name__}, not str", (), ()
                )
        name = self.transaction_name(contract, function)
        stub = WorldStateStub(
            view,
            overlay,
            tx_id=tx_id,
            channel_id=self.channel,
            chaincode_name=self.chaincode_name,
            function=name,
            params=args,
            identity=identity,
            ts_ms=ts_ms,
            read_only=read_only,
        )
        call = self.direct.lookup(name) if self.direct is not None else None
        try:
            if call is not None:
                status, payload, message = DirectDispatch.invoke(call, stub, args)
            else:
                response = run_without_loop(self.chaincode.invoke(stub))
                status, payload, message = int(response.status), bytes(response.payload), response.message
        except ChaincodeSuspended as exc:
            return ExecutionResult(tx_id, 500, b"", str(exc), (), ())
        except Exception as exc:  # the dispatcher itself failed outside its own error handling
            log.exception("chaincode dispatcher raised for tx %s", tx_id)
            return ExecutionResult(tx_id, 500, b"", f"chaincode raised {type(exc).__name__}: {exc}", (), ())
        if status >= _ERROR_THRESHOLD:
            return ExecutionResult(tx_id, status, b"", message, (), ())
        events = tuple(ChaincodeEvent(e.event_name, e.payload) for e in stub._events)
        return ExecutionResult(tx_id, status, payload, message, stub.write_set(), events)
