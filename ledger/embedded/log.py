"""The durable transaction log: SQLite (WAL, ``synchronous=FULL``) plus the in-memory Merkle tree.

Every committed transaction is one leaf: the canonical JSON of what it did
(see :func:`encode_leaf`).  A batch of transactions, their state writes,
history rows, events and the signed checkpoint for the new tree size are
written in ONE SQLite transaction; when ``COMMIT`` returns, WAL +
``synchronous=FULL`` means it has been fsynced.  Only then is the new size
published to readers.  If anything fails the tree is rolled back to its old
size and the exception propagates: nothing is half-applied.

World state is a cache of the leaves: replaying every leaf's ``writes`` in
order rebuilds the ``state`` and ``history`` tables (``ledger/embedded/verify.py``
checks exactly that).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ciphercare.consent import canonical
from ciphercare.ledger.api import (
    ChaincodeEvent,
    Checkpoint,
    CommittedEvent,
    ConsistencyProof,
    InclusionProof,
    LedgerEntry,
    LedgerError,
)
from ciphercare.ledger.embedded.checkpoint_log import (
    CheckpointFile,
    LogRefusedError,
    check_log_against_published,
    default_path,
)
from ciphercare.ledger.transparency.checkpoint import CheckpointKeyring, CheckpointSigner
from ciphercare.ledger.transparency.merkle import HASH_SIZE, MerkleTree, leaf_hash

log = logging.getLogger(__name__)

LEAF_VERSION = 1
SCHEMA_VERSION = "1"
#: Upper bound used for partial composite key scans (the shim's convention: prefix + U+10FFFF).
MAX_UNICODE_RUNE = "\U0010ffff"

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq         INTEGER PRIMARY KEY,
    tx_id       TEXT NOT NULL UNIQUE,
    ts_ms       INTEGER NOT NULL,
    contract    TEXT NOT NULL,
    function    TEXT NOT NULL,
    creator_msp TEXT NOT NULL,
    leaf        BLOB NOT NULL,
    leaf_hash   BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq     INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    name    TEXT NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (seq, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    key         TEXT PRIMARY KEY,
    value       BLOB NOT NULL,
    version_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    key       TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    value     BLOB,
    is_delete INTEGER NOT NULL,
    PRIMARY KEY (key, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    note BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


# ---------------------------------------------------------------------- leaves


@dataclass(frozen=True)
class PendingTx:
    """An endorsed transaction waiting to be appended.

    ``writes`` is the final write set (one entry per key, ``None`` = delete);
    ``events`` are the chaincode events in emission order.
    """

    tx_id: str
    ts_ms: int
    channel: str
    chaincode: str
    contract: str
    function: str
    args: tuple[str, ...]
    creator_msp: str
    creator_cert_sha256: str
    result: bytes
    writes: tuple[tuple[str, bytes | None], ...]
    events: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class DecodedLeaf:
    """The fields of a leaf, decoded and type-checked."""

    tx_id: str
    ts_ms: int
    channel: str
    chaincode: str
    contract: str
    function: str
    args: tuple[str, ...]
    creator_msp: str
    creator_cert_sha256: str
    result_sha256: str
    writes: tuple[tuple[str, bytes | None], ...]
    events: tuple[tuple[str, bytes], ...]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_MAX_SAFE_INT = 2**53 - 1


def _fast_canonical(value: object) -> bytes:
    """``canonical.dumps`` minus its recursive type walk, for leaf objects built below from str/int/None only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _fast_path_matches_canonical() -> bool:
    """Self-check at import: the fast encoder must give canonical.dumps's exact bytes, else it is not used."""
    sample = {
        "v": 1, "ts_ms": _MAX_SAFE_INT, "s": "\x00k\x01\u00e9\u2014\U0001f600\n\"\\/", "n": None,
        "l": ["a", {"z": "", "a": "b"}], "neg": -5,
    }  # fmt: skip
    return _fast_canonical(sample) == canonical.dumps(sample)


_USE_FAST_ENCODER = _fast_path_matches_canonical()


def encode_leaf(tx: PendingTx) -> bytes:
    """The canonical JSON leaf for ``tx`` (writes sorted by key; duplicates rejected).

    The object holds only str / int / None / lists / dicts built here, so when
    the import-time self-check shows the plain encoder produces
    ``canonical.dumps``'s bytes we skip its recursive type walk (a third of the
    append cost); the integer range it would check is checked explicitly.
    """
    writes = sorted(tx.writes, key=lambda w: w[0])
    for a, b in zip(writes, writes[1:], strict=False):
        if a[0] == b[0]:
            raise ValueError(f"transaction {tx.tx_id} writes key {a[0]!r} twice")
    if not isinstance(tx.ts_ms, int) or isinstance(tx.ts_ms, bool) or not 0 <= tx.ts_ms <= _MAX_SAFE_INT:
        raise ValueError(f"transaction {tx.tx_id} timestamp {tx.ts_ms!r} is not a non-negative safe integer")
    for name, value in (("tx_id", tx.tx_id), ("contract", tx.contract), ("function", tx.function)):
        if not isinstance(value, str):
            raise ValueError(f"transaction {tx.tx_id}: {name} must be a string")
    for arg in tx.args:
        if not isinstance(arg, str):
            raise ValueError(f"transaction {tx.tx_id}: arguments must be strings")
    encode = _fast_canonical if _USE_FAST_ENCODER else canonical.dumps
    return encode(
        {
            "v": LEAF_VERSION,
            "tx_id": tx.tx_id,
            "ts_ms": tx.ts_ms,
            "channel": tx.channel,
            "chaincode": tx.chaincode,
            "contract": tx.contract,
            "function": tx.function,
            "args": list(tx.args),
            "creator": {"msp": tx.creator_msp, "cert_sha256": tx.creator_cert_sha256},
            "result_sha256": hashlib.sha256(tx.result).hexdigest(),
            "writes": [{"key": k, "value_b64": None if v is None else _b64(v)} for k, v in writes],
            "events": [{"name": n, "payload_b64": _b64(p)} for n, p in tx.events],
        }
    )


# perf: the pipelined writer encodes leaves while the previous batch is being fsynced.
_ENCODED_TOKEN = object()


class EncodedTx:
    """A :class:`PendingTx` with its leaf and leaf hash; made only by :func:`encode_tx`, so they always match."""

    __slots__ = ("tx", "leaf", "leaf_hash")

    def __init__(self, tx: PendingTx, leaf: bytes, hash_: bytes, token: object) -> None:
        if token is not _ENCODED_TOKEN:
            raise TypeError("EncodedTx is made by encode_tx()")
        object.__setattr__(self, "tx", tx)
        object.__setattr__(self, "leaf", leaf)
        object.__setattr__(self, "leaf_hash", hash_)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("EncodedTx is immutable")

    tx: PendingTx
    leaf: bytes
    leaf_hash: bytes


def encode_tx(tx: PendingTx) -> EncodedTx:
    """Encode ``tx``'s leaf (and hash it) ahead of :meth:`TransactionLog.append_batch`."""
    leaf = encode_leaf(tx)
    return EncodedTx(tx, leaf, leaf_hash(leaf), _ENCODED_TOKEN)


def _field(obj: dict[str, object], name: str, typ: type, where: str) -> object:
    if name not in obj:
        raise ValueError(f"{where}: missing field {name!r}")
    value = obj[name]
    if typ is int and isinstance(value, bool):
        raise ValueError(f"{where}: field {name!r} must be an integer")
    if not isinstance(value, typ):
        raise ValueError(f"{where}: field {name!r} must be {typ.__name__}, got {type(value).__name__}")
    return value


def _unb64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{where}: invalid base64: {exc}") from exc


def decode_leaf(leaf: bytes) -> DecodedLeaf:
    """Parse and type-check a leaf; raises ValueError naming what is wrong.

    The leaf must be canonical: re-encoding the parsed value must give the same bytes.
    """
    try:
        obj = canonical.loads(leaf)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"leaf is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError("leaf is not a JSON object")
    if canonical.dumps(obj) != bytes(leaf):
        raise ValueError("leaf is not canonical JSON")
    expected = {
        "v", "tx_id", "ts_ms", "channel", "chaincode", "contract", "function",
        "args", "creator", "result_sha256", "writes", "events",
    }  # fmt: skip
    if set(obj) != expected:
        raise ValueError(f"leaf fields {sorted(obj)} are not {sorted(expected)}")
    if _field(obj, "v", int, "leaf") != LEAF_VERSION:
        raise ValueError(f"leaf version {obj['v']!r} is not {LEAF_VERSION}")
    args = _field(obj, "args", list, "leaf")
    if not all(isinstance(a, str) for a in args):  # type: ignore[attr-defined]
        raise ValueError("leaf: args must all be strings")
    creator = _field(obj, "creator", dict, "leaf")
    writes_raw = _field(obj, "writes", list, "leaf")
    writes: list[tuple[str, bytes | None]] = []
    for i, w in enumerate(writes_raw):  # type: ignore[arg-type,var-annotated]
        where = f"leaf.writes[{i}]"
        if not isinstance(w, dict) or set(w) != {"key", "value_b64"}:
            raise ValueError(f"{where}: must be an object with key and value_b64")
        key = _field(w, "key", str, where)
        vb = w["value_b64"]
        if vb is None:
            writes.append((key, None))  # type: ignore[arg-type]
        elif isinstance(vb, str):
            writes.append((key, _unb64(vb, where)))  # type: ignore[arg-type]
        else:
            raise ValueError(f"{where}: value_b64 must be a string or null")
    for a, b in zip(writes, writes[1:], strict=False):
        if a[0] >= b[0]:
            raise ValueError(f"leaf.writes: keys not strictly sorted at {b[0]!r}")
    events_raw = _field(obj, "events", list, "leaf")
    events: list[tuple[str, bytes]] = []
    for i, e in enumerate(events_raw):  # type: ignore[arg-type,var-annotated]
        where = f"leaf.events[{i}]"
        if not isinstance(e, dict) or set(e) != {"name", "payload_b64"}:
            raise ValueError(f"{where}: must be an object with name and payload_b64")
        name = _field(e, "name", str, where)
        payload = _unb64(_field(e, "payload_b64", str, where), where)  # type: ignore[arg-type]
        events.append((name, payload))  # type: ignore[arg-type]
    return DecodedLeaf(
        tx_id=_field(obj, "tx_id", str, "leaf"),  # type: ignore[arg-type]
        ts_ms=_field(obj, "ts_ms", int, "leaf"),  # type: ignore[arg-type]
        channel=_field(obj, "channel", str, "leaf"),  # type: ignore[arg-type]
        chaincode=_field(obj, "chaincode", str, "leaf"),  # type: ignore[arg-type]
        contract=_field(obj, "contract", str, "leaf"),  # type: ignore[arg-type]
        function=_field(obj, "function", str, "leaf"),  # type: ignore[arg-type]
        args=tuple(args),  # type: ignore[arg-type]
        creator_msp=_field(creator, "msp", str, "leaf.creator"),  # type: ignore[arg-type]
        creator_cert_sha256=_field(creator, "cert_sha256", str, "leaf.creator"),  # type: ignore[arg-type]
        result_sha256=_field(obj, "result_sha256", str, "leaf"),  # type: ignore[arg-type]
        writes=tuple(writes),
        events=tuple(events),
    )


# ---------------------------------------------------------------------- state reads


@dataclass(frozen=True)
class HistoryRecord:
    """One committed modification of a key."""

    seq: int
    tx_id: str
    ts_ms: int
    value: bytes | None
    is_delete: bool


class StateView:
    """World-state reads on one SQLite connection (inside a read transaction for a stable snapshot)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, key: str) -> bytes | None:
        """The committed value of ``key`` or None."""
        row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def range(self, start: str, end: str) -> list[tuple[str, bytes]]:
        """Keys in ``[start, end)`` in key order; ``end == ""`` means unbounded (Fabric semantics)."""
        if end:
            rows = self._conn.execute(
                "SELECT key, value FROM state WHERE key >= ? AND key < ? ORDER BY key", (start, end)
            )
        else:
            rows = self._conn.execute("SELECT key, value FROM state WHERE key >= ? ORDER BY key", (start,))
        return [(k, bytes(v)) for k, v in rows]

    # perf (pipelined writer): tells the executor whether the batch being committed is in this snapshot.
    def has_entry(self, tx_id: str) -> bool:
        """Whether an entry with this transaction id is visible in this view."""
        return self._conn.execute("SELECT 1 FROM entries WHERE tx_id = ?", (tx_id,)).fetchone() is not None

    def prefix(self, prefix: str) -> list[tuple[str, bytes]]:
        """Partial composite key scan: ``[prefix, prefix + U+10FFFF)`` as the shim does."""
        return self.range(prefix, prefix + MAX_UNICODE_RUNE)

    def version(self, key: str) -> int | None:
        """Seq of the transaction that last wrote ``key`` (None if absent): the MVCC version (fabricgw)."""
        row = self._conn.execute("SELECT version_seq FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def history(self, key: str) -> list[HistoryRecord]:
        """Committed modifications of ``key``, newest first (Fabric 2.x order)."""
        rows = self._conn.execute(
            "SELECT h.seq, e.tx_id, e.ts_ms, h.value, h.is_delete FROM history h "
            "JOIN entries e ON e.seq = h.seq WHERE h.key = ? ORDER BY h.seq DESC",
            (key,),
        )
        return [
            HistoryRecord(seq, tx_id, ts, None if v is None else bytes(v), bool(d)) for seq, tx_id, ts, v, d in rows
        ]


# ---------------------------------------------------------------------- perf: multi-row inserts

#: Rows per INSERT statement in append_batch. ``executemany`` steps once per row, and each step
#: releases and re-takes the GIL (waiting up to the switch interval when other threads run Python);
#: one multi-row statement per 64 rows does the same inserts with 1/64 of the steps.
_ROWS_PER_STATEMENT = 64


def _insert_rows(
    conn: sqlite3.Connection, head: str, ncols: int, rows: Sequence[tuple[object, ...]], tail: str = ""
) -> None:
    """``INSERT ... VALUES (..), (..), ...`` for ``rows``, in order, ``_ROWS_PER_STATEMENT`` rows per statement."""
    one = "(" + ",".join("?" * ncols) + ")"
    for i in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[i : i + _ROWS_PER_STATEMENT]
        conn.execute(head + ",".join([one] * len(chunk)) + tail, [v for row in chunk for v in row])


# ---------------------------------------------------------------------- the log


def _connect(path: str, *, readonly: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


class TransactionLog:
    """Append-only, fsynced, Merkle-tree-backed store of transactions, state and checkpoints."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        signer: CheckpointSigner,
        *,
        channel: str = "ciphercare",
        chaincode: str = "ciphercare",
        retired_vkeys: Sequence[str] = (),
        published_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.signer = signer
        # Integrity (issue 11): the keys this log was ever signed with, oldest first (rotation), and the
        # append-only file of every checkpoint published, outside SQLite (ledger/checkpoint_log.py).
        self.retired_vkeys = tuple(v for v in retired_vkeys if v != signer.vkey)
        self.keyring = CheckpointKeyring.from_vkeys([*self.retired_vkeys, signer.vkey])
        self.verifier = self.keyring  # verify(note, origin) accepts any key of the ring
        self.published_path = Path(published_path) if published_path is not None else default_path(self.path)
        self._published: CheckpointFile | None = None
        self._after_publish: list[Callable[[Checkpoint], None]] = []
        self.channel = channel
        self.chaincode = chaincode
        self._append_lock = threading.Lock()
        self._tree_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._broken: str | None = None

        self._wconn = _connect(str(self.path), readonly=False)
        mode = self._wconn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise LedgerError(f"could not put {self.path} in WAL mode (got {mode})")
        self._wconn.execute("PRAGMA synchronous = FULL")
        self._wconn.executescript(SCHEMA)
        try:
            self._check_meta()
            self._tree = self._load_tree()
            self._size = self._tree.size
            self._check_published()  # integrity: refuse a log shorter than / different from what was published
            self._published = CheckpointFile(self.published_path)
            self._latest = self._load_latest_checkpoint()
            self._publish(self._latest, initial=True)
        except BaseException:
            if self._published is not None:
                self._published.close()
            self._wconn.close()
            raise

    # ------------------------------------------------------------------ open

    def _check_meta(self) -> None:
        """Record origin/key/channel on first open; refuse to open with different ones later."""
        want = {
            "schema_version": SCHEMA_VERSION,
            "origin": self.signer.origin,
            "vkey": self.signer.vkey,
            "channel": self.channel,
            "chaincode": self.chaincode,
        }
        have = dict(self._wconn.execute("SELECT key, value FROM meta").fetchall())
        if not have:
            self._wconn.execute("BEGIN IMMEDIATE")
            self._wconn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", want.items())
            self._wconn.execute("COMMIT")
            return
        for key, value in want.items():
            if key == "vkey" and have.get(key) != value and have.get(key) in self.retired_vkeys:
                # Key rotation: the previous key is named as retired; new checkpoints are signed by the new one.
                log.warning("checkpoint key rotated from %s to %s", have.get(key), value)
                self._wconn.execute("BEGIN IMMEDIATE")
                self._wconn.execute("UPDATE meta SET value = ? WHERE key = 'vkey'", (value,))
                self._wconn.execute("COMMIT")
                continue
            if have.get(key) != value:
                hint = " (rotating the signing key? name the old key as retired)" if key == "vkey" else ""
                raise LedgerError(
                    f"{self.path}: ledger {key} is {have.get(key)!r} but this process uses {value!r}{hint}"
                )

    def _load_tree(self) -> MerkleTree:
        count, max_seq = self._wconn.execute("SELECT COUNT(*), MAX(seq) FROM entries").fetchone()
        if count and (max_seq != count - 1):
            raise LedgerError(f"{self.path}: entry seqs are not contiguous ({count} rows, max seq {max_seq})")
        buf = bytearray()
        for (h,) in self._wconn.execute("SELECT leaf_hash FROM entries ORDER BY seq"):
            if len(h) != HASH_SIZE:
                raise LedgerError(f"{self.path}: a stored leaf hash has {len(h)} bytes")
            buf += h
        return MerkleTree.from_leaf_hashes(buf)

    def _check_published(self) -> None:
        """Start-up proof that this log extends the newest checkpoint in the published-checkpoint file."""
        started = self._wconn.execute("SELECT value FROM meta WHERE key = 'published_file'").fetchone()
        if not self.published_path.exists() or self.published_path.stat().st_size == 0:
            if started is not None:
                raise LogRefusedError(
                    f"{self.published_path} (every checkpoint this node published) is missing or empty, but "
                    f"{self.path} says it was started. Refusing to start: without it the node cannot prove it "
                    "is not rolled back. Restore the file from a backup or replica."
                )
            if self._tree.size:
                log.warning("no published-checkpoint file yet for a ledger of %d entries; starting one at %s",
                            self._tree.size, self.published_path)
        else:
            check_log_against_published(self._tree, self.published_path, self.keyring, self.signer.origin,
                                        self.path)
        if started is None:
            self._wconn.execute("BEGIN IMMEDIATE")
            self._wconn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('published_file', ?)",
                                (str(self.published_path.name),))
            self._wconn.execute("COMMIT")

    def _publish(self, cp: Checkpoint, *, initial: bool = False) -> None:
        """Record ``cp`` in the published-checkpoint file (fsynced) before anyone is told about it."""
        assert self._published is not None
        if initial:
            latest = self._published.latest()
            if latest is not None and latest.note == cp.note:
                return
        self._published.append_checkpoint(cp)
        for hook in self._after_publish:
            try:
                hook(cp)
            except Exception:  # a witness hook must never break the append path
                log.exception("after-publish hook failed")

    def add_publish_hook(self, hook: Callable[[Checkpoint], None]) -> None:
        """Call ``hook(checkpoint)`` after each checkpoint is recorded (the witness submitter uses this)."""
        self._after_publish.append(hook)

    def _load_latest_checkpoint(self) -> Checkpoint:
        row = self._wconn.execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        if row is not None and row[0] > self._size:
            raise LedgerError(f"{self.path}: checkpoint for size {row[0]} but only {self._size} entries")
        resign = row is None or row[0] != self._size
        if not resign and self.keyring.signer_index(bytes(row[1])) != len(self.keyring.verifiers) - 1:
            resign = True  # signed by a retired key: the new key takes over at this size
        if resign:
            cp = self.signer.sign(self._size, self._tree.root())
            self._wconn.execute("BEGIN IMMEDIATE")
            self._wconn.execute("INSERT OR REPLACE INTO checkpoints(size, note) VALUES (?, ?)", (cp.size, cp.note))
            self._wconn.execute("COMMIT")
            return cp
        cp = self.verifier.verify(bytes(row[1]), origin=self.signer.origin)
        if cp.root_hash != self._tree.root():
            raise LedgerError(
                f"{self.path}: stored leaf hashes do not match the latest checkpoint (size {cp.size}); "
                "run `ciphercare ledger verify`"
            )
        return cp

    # ------------------------------------------------------------------ connections

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise LedgerError("transaction log is closed")
            conn = _connect(str(self.path), readonly=True)
            self._local.conn = conn
            self._local.depth = 0
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def snapshot(self) -> Iterator[StateView]:
        """A consistent read-only view of committed state for the duration of the block."""
        conn = self._reader()
        depth = self._local.depth
        if depth == 0:
            conn.execute("BEGIN")
        self._local.depth = depth + 1
        try:
            yield StateView(conn)
        finally:
            self._local.depth = depth
            if depth == 0:
                conn.execute("COMMIT")

    def writer_view(self) -> StateView:
        """Committed state read through the writer's connection (for the single appending thread)."""
        return StateView(self._wconn)

    # ------------------------------------------------------------------ append

    def append_batch(self, txs: Sequence[PendingTx | EncodedTx]) -> Checkpoint:
        """Durably append ``txs`` (one SQLite transaction, one fsync) and return the new checkpoint."""
        if not txs:
            raise ValueError("append_batch needs at least one transaction")
        with self._append_lock:
            if self._closed:
                raise LedgerError("transaction log is closed")
            if self._broken is not None:
                raise LedgerError(f"transaction log is unusable after a failed commit: {self._broken}")
            base = self._size
            seen: set[str] = set()
            entry_rows = []
            event_rows = []
            history_rows = []
            final: dict[str, tuple[bytes | None, int]] = {}
            hashes = []
            for i, item in enumerate(txs):
                if isinstance(item, EncodedTx):  # perf: leaf encoded ahead by the pipelined executor
                    tx, leaf, h = item.tx, item.leaf, item.leaf_hash
                else:
                    tx = item
                    leaf = encode_leaf(tx)
                    h = leaf_hash(leaf)
                if tx.tx_id in seen:
                    raise ValueError(f"transaction id {tx.tx_id} appears twice in the batch")
                seen.add(tx.tx_id)
                seq = base + i
                hashes.append(h)
                entry_rows.append((seq, tx.tx_id, tx.ts_ms, tx.contract, tx.function, tx.creator_msp, leaf, h))
                for idx, (name, payload) in enumerate(tx.events):
                    event_rows.append((seq, idx, name, payload))
                for key, value in tx.writes:
                    history_rows.append((key, seq, value, 0 if value is not None else 1))
                    final[key] = (value, seq)
            upserts = [(k, v, s) for k, (v, s) in final.items() if v is not None]
            deletes = [(k,) for k, (v, _s) in final.items() if v is None]
            new_size = base + len(txs)

            with self._tree_lock:
                self._tree.extend_hashes(hashes)
                root = self._tree.root(new_size)
            try:
                ts = max(time.time_ns() // 1_000_000, self._latest.timestamp_ms)
                cp = self.signer.sign(new_size, root, ts)
                conn = self._wconn
                conn.execute("BEGIN IMMEDIATE")
                _insert_rows(
                    conn,
                    "INSERT INTO entries(seq, tx_id, ts_ms, contract, function, creator_msp, leaf, leaf_hash) VALUES ",
                    8,
                    entry_rows,
                )
                if event_rows:
                    _insert_rows(conn, "INSERT INTO events(seq, idx, name, payload) VALUES ", 4, event_rows)
                if history_rows:
                    _insert_rows(conn, "INSERT INTO history(key, seq, value, is_delete) VALUES ", 4, history_rows)
                if upserts:
                    _insert_rows(
                        conn,
                        "INSERT INTO state(key, value, version_seq) VALUES ",
                        3,
                        upserts,
                        " ON CONFLICT(key) DO UPDATE SET value = excluded.value, version_seq = excluded.version_seq",
                    )
                if deletes:
                    conn.executemany("DELETE FROM state WHERE key = ?", deletes)
                conn.execute("INSERT INTO checkpoints(size, note) VALUES (?, ?)", (new_size, cp.note))
                conn.execute("COMMIT")
            except BaseException as exc:
                self._undo(base, exc)
                raise
            try:
                self._publish(cp)  # integrity: fsynced outside SQLite before any receipt is returned
            except BaseException as exc:
                # Committed but not recorded as published: no receipt may go out, and the node stops appending.
                self._broken = f"could not record checkpoint {new_size} in {self.published_path}: {exc!r}"
                log.error("%s", self._broken)
                self._latest = cp
                self._size = new_size
                raise LedgerError(self._broken) from exc
            self._latest = cp
            self._size = new_size
            return cp

    def _undo(self, base: int, exc: BaseException) -> None:
        """Roll back a failed append: SQLite transaction and in-memory tree back to ``base`` leaves."""
        try:
            if self._wconn.in_transaction:
                self._wconn.execute("ROLLBACK")
            (count,) = self._wconn.execute("SELECT COUNT(*) FROM entries").fetchone()
        except sqlite3.Error as rb_exc:
            self._broken = f"{exc!r}; rollback failed: {rb_exc!r}"
            log.error("ledger append failed and could not be rolled back: %s", self._broken)
            count = None
        if count is not None and count != base:
            self._broken = f"{exc!r}; store has {count} entries after rollback, expected {base}"
            log.error("ledger append failed with an unknown outcome: %s", self._broken)
        with self._tree_lock:
            self._tree.truncate(base)

    # ------------------------------------------------------------------ reads

    def size(self) -> int:
        """Number of committed entries."""
        return self._size

    def latest_checkpoint(self) -> Checkpoint:
        """The checkpoint for the current size."""
        return self._latest

    def checkpoint_at(self, size: int) -> Checkpoint | None:
        """The stored checkpoint for exactly ``size`` entries, or None (one is stored per committed batch)."""
        latest = self._latest
        if size < 0 or size > latest.size:
            raise ValueError(f"tree size {size} out of range: the ledger has {latest.size} entries")
        if size == latest.size:
            return latest
        row = self._reader().execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
        if row is None:
            return None
        return self.verifier.verify(bytes(row[0]), origin=self.signer.origin)

    def checkpoint_sizes(self) -> list[int]:
        """Every tree size that has a stored checkpoint, ascending."""
        return [s for (s,) in self._reader().execute("SELECT size FROM checkpoints ORDER BY size")]

    def root(self, size: int | None = None) -> bytes:
        """The Merkle root at ``size`` (default: current)."""
        committed = self._size
        if size is None:
            size = committed
        if size < 0 or size > committed:
            raise ValueError(f"tree size {size} out of range: the ledger has {committed} entries")
        with self._tree_lock:
            return self._tree.root(size)

    def inclusion_proof(self, seq: int, tree_size: int) -> InclusionProof:
        """RFC 9162 inclusion proof of entry ``seq`` in the tree of ``tree_size`` entries."""
        committed = self._size
        if tree_size < 1 or tree_size > committed:
            raise ValueError(f"tree_size {tree_size} must be between 1 and the ledger size {committed}")
        if seq < 0 or seq >= tree_size:
            raise ValueError(f"seq {seq} must be >= 0 and < tree_size {tree_size}")
        with self._tree_lock:
            path = self._tree.inclusion_proof(seq, tree_size)
        return InclusionProof(leaf_index=seq, tree_size=tree_size, hashes=tuple(path))

    def consistency_proof(self, first_size: int, second_size: int) -> ConsistencyProof:
        """RFC 9162 consistency proof between two tree sizes (``1 <= first <= second <= size``)."""
        committed = self._size
        if second_size > committed:
            raise ValueError(f"second_size {second_size} exceeds the ledger size {committed}")
        if first_size < 1 or first_size > second_size:
            raise ValueError(f"first_size {first_size} must be between 1 and second_size {second_size}")
        with self._tree_lock:
            path = self._tree.consistency_proof(first_size, second_size)
        return ConsistencyProof(first_size=first_size, second_size=second_size, hashes=tuple(path))

    def leaf_hash(self, seq: int) -> bytes:
        """The Merkle leaf hash of committed entry ``seq``."""
        if seq < 0 or seq >= self._size:
            raise ValueError(f"seq {seq} out of range: the ledger has {self._size} entries")
        with self._tree_lock:
            return self._tree.leaf_hash_at(seq)

    def get_state(self, key: str) -> bytes | None:
        """Committed value of ``key``."""
        return StateView(self._reader()).get(key)

    def get_state_range(self, start: str, end: str) -> list[tuple[str, bytes]]:
        """Committed keys in ``[start, end)``; ``end == ""`` is unbounded."""
        return StateView(self._reader()).range(start, end)

    def get_state_prefix(self, prefix: str) -> list[tuple[str, bytes]]:
        """Committed keys under a partial composite key."""
        return StateView(self._reader()).prefix(prefix)

    def history(self, key: str) -> list[HistoryRecord]:
        """Committed modifications of ``key``, newest first."""
        return StateView(self._reader()).history(key)

    def _events_for(self, conn: sqlite3.Connection, start: int, end: int) -> dict[int, list[ChaincodeEvent]]:
        out: dict[int, list[ChaincodeEvent]] = {}
        for seq, name, payload in conn.execute(
            "SELECT seq, name, payload FROM events WHERE seq >= ? AND seq < ? ORDER BY seq, idx", (start, end)
        ):
            out.setdefault(seq, []).append(ChaincodeEvent(name, bytes(payload)))
        return out

    def entries(self, start: int, end: int) -> list[LedgerEntry]:
        """Committed entries with ``start <= seq < end`` (``end`` clipped to the size)."""
        if start < 0 or end < start:
            raise ValueError(f"bad entry range [{start}, {end})")
        end = min(end, self._size)
        if start >= end:
            return []
        conn = self._reader()
        events = self._events_for(conn, start, end)
        rows = conn.execute(
            "SELECT seq, tx_id, ts_ms, contract, function, creator_msp, leaf FROM entries "
            "WHERE seq >= ? AND seq < ? ORDER BY seq",
            (start, end),
        )
        return [
            LedgerEntry(seq, tx_id, ts, c, f, msp, bytes(leaf), tuple(events.get(seq, ())))
            for seq, tx_id, ts, c, f, msp, leaf in rows
        ]

    def entry(self, seq: int) -> LedgerEntry:
        """Committed entry ``seq``."""
        if seq < 0 or seq >= self._size:
            raise ValueError(f"seq {seq} out of range: the ledger has {self._size} entries")
        return self.entries(seq, seq + 1)[0]

    def entry_by_tx_id(self, tx_id: str) -> LedgerEntry | None:
        """The committed entry with this transaction id, if any."""
        row = self._reader().execute("SELECT seq FROM entries WHERE tx_id = ?", (tx_id,)).fetchone()
        if row is None or row[0] >= self._size:
            return None
        return self.entry(row[0])

    def committed_events(
        self, start_seq: int, end_seq: int, names: frozenset[str] | None = None
    ) -> list[CommittedEvent]:
        """Events of entries ``start_seq <= seq < end_seq`` in (seq, emission) order, optionally by name."""
        end_seq = min(end_seq, self._size)
        if start_seq >= end_seq:
            return []
        rows = self._reader().execute(
            "SELECT ev.seq, e.tx_id, e.ts_ms, ev.name, ev.payload FROM events ev "
            "JOIN entries e ON e.seq = ev.seq WHERE ev.seq >= ? AND ev.seq < ? ORDER BY ev.seq, ev.idx",
            (start_seq, end_seq),
        )
        return [
            CommittedEvent(seq, tx_id, ts, name, bytes(payload))
            for seq, tx_id, ts, name, payload in rows
            if names is None or name in names
        ]

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """Close every connection; further use raises."""
        with self._append_lock:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                readers, self._readers = self._readers, []
            for conn in readers:
                conn.close()
            self._wconn.close()
            if self._published is not None:
                self._published.close()
