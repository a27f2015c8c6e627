"""The ledger interface, shaped like the Fabric Gateway: ``evaluate`` reads, ``submit`` writes.

Two backends implement :class:`Ledger`: the embedded ledger (default; an
append-only RFC 9162 log with signed checkpoints) and, later, the Fabric
Gateway client. Services depend on this module only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Principal:
    """A caller whose bearer token has been verified.

    Built only by the auth layer from a verified token; the ledger turns it into
    an X.509 creator identity so contracts read the actor from the transaction
    creator, never from an argument.
    """

    subject: str
    org: str
    roles: frozenset[str]
    client_id: str = ""
    pid: str | None = None
    #: Pseudonyms of patients this caller is an authorised proxy for (guardian, legal representative), as
    #: asserted by the identity provider's ``proxy_for`` claim. (consent, issue 10)
    proxy_for: frozenset[str] = frozenset()

    def has_role(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head in the C2SP signed-note checkpoint format.

    ``note`` is the whole signed note (body + signature lines) exactly as signed.
    """

    origin: str
    size: int
    root_hash: bytes
    timestamp_ms: int
    note: bytes
    key_name: str
    key_id: bytes  # 4-byte key hash as in the signed-note format


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 section 2.1.3 audit path of ``leaf_index`` in a tree of ``tree_size`` leaves."""

    leaf_index: int
    tree_size: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 section 2.1.4 consistency proof between two tree sizes."""

    first_size: int
    second_size: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class ChaincodeEvent:
    """An event a contract emitted with ``stub.set_event`` (Fabric semantics: committed with its tx)."""

    name: str
    payload: bytes


@dataclass(frozen=True)
class LedgerEntry:
    """One committed transaction: leaf ``seq`` (0-based) of the Merkle tree.

    ``leaf`` is the canonical JSON bytes that are hashed into the tree
    (``SHA-256(0x00 || leaf)``); every other field is decoded from it.
    """

    seq: int
    tx_id: str
    timestamp_ms: int
    contract: str
    function: str
    creator_msp: str
    leaf: bytes
    events: tuple[ChaincodeEvent, ...] = ()


@dataclass(frozen=True)
class Receipt:
    """What ``submit`` returns once the transaction is durable."""

    tx_id: str
    seq: int
    checkpoint: Checkpoint
    result: bytes
    events: tuple[ChaincodeEvent, ...] = ()


@dataclass(frozen=True)
class CommittedEvent:
    """A chaincode event as delivered to listeners, in ledger order."""

    seq: int
    tx_id: str
    timestamp_ms: int
    name: str
    payload: bytes


class LedgerError(Exception):
    """Base of every ledger failure."""


@dataclass
class EndorseError(LedgerError):
    """The contract rejected the proposal; nothing was written.

    ``code`` is the gRPC status name the contract chose (``INVALID_ARGUMENT``,
    ``NOT_FOUND``, ``PERMISSION_DENIED``, ``FAILED_PRECONDITION``, ``ALREADY_EXISTS``),
    parsed from a chaincode message of the form ``"CODE: detail"``.
    """

    tx_id: str
    code: str
    message: str
    extra: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass
class CommitError(LedgerError):
    """The transaction was endorsed but could not be made durable; it is not on the ledger."""

    tx_id: str
    message: str

    def __str__(self) -> str:
        return f"commit of {self.tx_id} failed: {self.message}"


@dataclass
class LedgerTimeout(LedgerError):
    """The deadline passed before the transaction's commit status was known."""

    tx_id: str
    seconds: float

    def __str__(self) -> str:
        return f"transaction {self.tx_id} not committed within {self.seconds:.3f}s"


class EventStream(Protocol):
    """A blocking iterator over committed events; ``close()`` ends it from another thread."""

    def __iter__(self) -> Iterator[CommittedEvent]: ...

    def next_batch(self, max_events: int = 1024) -> list[CommittedEvent]:
        """Block for the next event, then return it with every further one already committed."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Ledger(Protocol):
    """One interface for the embedded ledger and the Fabric gateway."""

    def evaluate(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> bytes:
        """Run a read-only transaction against committed state; never writes."""
        ...

    def submit(
        self,
        principal: Principal,
        contract: str,
        function: str,
        args: Sequence[str],
        *,
        timeout: float = 10.0,
    ) -> Receipt:
        """Endorse, order and commit a transaction; return once it is durable."""
        ...

    def events(self, start_seq: int = 0, names: frozenset[str] | None = None) -> EventStream:
        """Committed events with ``seq >= start_seq`` in order, then new ones as they commit."""
        ...

    def checkpoint(self) -> Checkpoint:
        """The latest signed checkpoint."""
        ...

    def inclusion_proof(self, seq: int, tree_size: int) -> InclusionProof: ...

    def consistency_proof(self, first_size: int, second_size: int) -> ConsistencyProof: ...

    def entry(self, seq: int) -> LedgerEntry: ...

    def size(self) -> int: ...

    def close(self) -> None: ...
