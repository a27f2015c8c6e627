"""Offline verification of an embedded ledger file (``ciphercare ledger verify``).

Opens the SQLite file read-only inside one read transaction and checks,
in seq order:

* seqs are contiguous from 0 and tx ids are unique;
* every leaf is canonical, well-formed JSON whose tx id / timestamp /
  contract / function / creator MSP match the entry's columns;
* ``SHA-256(0x00 || leaf)`` equals the stored ``leaf_hash``;
* the ``events`` rows equal the leaf's events and the ``history`` rows equal
  the leaf's writes;
* every stored checkpoint is signed by the given key, carries the ledger's
  origin, and its root equals the root recomputed from the leaves at its size;

and finally that the ``state`` table equals the state obtained by replaying
every leaf's writes.  The first problem found is reported with the seq and tx
id it concerns.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ciphercare.ledger.embedded.log import decode_leaf
from ciphercare.ledger.transparency.checkpoint import CheckpointError, CheckpointVerifier, parse_vkey
from ciphercare.ledger.transparency.merkle import EMPTY_ROOT, MerkleTree, leaf_hash


@dataclass(frozen=True)
class VerifyError:
    """The first problem found; ``seq``/``tx_id`` name the entry it concerns (None if none does)."""

    seq: int | None
    tx_id: str | None
    message: str
    checkpoint_size: int | None = None

    def __str__(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        if self.tx_id is not None:
            where.append(f"tx {self.tx_id}")
        if self.checkpoint_size is not None:
            where.append(f"checkpoint size {self.checkpoint_size}")
        return f"{', '.join(where) or 'ledger'}: {self.message}"


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_ledger`."""

    path: str
    ok: bool
    entries_checked: int
    checkpoints_checked: int
    state_keys_checked: int
    size: int
    root_hash: bytes | None
    first_error: VerifyError | None

    def summary(self) -> str:
        """One human-readable paragraph."""
        head = (
            f"{self.path}: {self.entries_checked} entries, {self.checkpoints_checked} checkpoints, "
            f"{self.state_keys_checked} state keys checked"
        )
        if self.ok:
            root = base64.b64encode(self.root_hash or b"").decode()
            return f"{head}; OK (size {self.size}, root {root})"
        return f"{head}; FAILED: {self.first_error}"


class _Failed(Exception):
    def __init__(self, error: VerifyError) -> None:
        super().__init__(str(error))
        self.error = error


def _verifier_for(
    key: str | bytes | CheckpointVerifier, key_name: str | None, meta: dict[str, str]
) -> CheckpointVerifier:
    if isinstance(key, CheckpointVerifier):
        return key
    if isinstance(key, str):
        if key.count("+") >= 2:
            name, raw = parse_vkey(key)
            return CheckpointVerifier(raw, name)
        raise ValueError("a string key must be a verifier key <name>+<hash>+<base64 key>")
    name = key_name
    if name is None:
        stored = meta.get("vkey")
        if stored is None:
            raise ValueError("no key name given and the ledger has no stored verifier key to take it from")
        name = parse_vkey(stored)[0]
    return CheckpointVerifier(bytes(key), name)


def _rows(conn: sqlite3.Connection, sql: str) -> Iterator[tuple[object, ...]]:
    yield from conn.execute(sql)


def verify_ledger(
    path: str | os.PathLike[str],
    public_key: str | bytes | CheckpointVerifier,
    *,
    key_name: str | None = None,
    origin: str | None = None,
) -> VerifyReport:
    """Verify the ledger file at ``path`` against a checkpoint key (vkey string, raw key + name, or verifier).

    ``origin`` defaults to the origin recorded in the ledger's meta table.
    Never modifies the file.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"ledger file {p} does not exist")
    conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    counters = {"entries": 0, "checkpoints": 0, "state": 0}
    tree = MerkleTree()
    try:
        conn.execute("BEGIN")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        verifier = _verifier_for(public_key, key_name, meta)
        want_origin = origin if origin is not None else meta.get("origin")
        if want_origin is None:
            raise ValueError("no origin given and the ledger records none")
        try:
            _verify(conn, verifier, want_origin, meta, tree, counters)
            error = None
        except _Failed as failed:
            error = failed.error
        conn.execute("COMMIT")
    finally:
        conn.close()
    size = tree.size
    return VerifyReport(
        path=str(p),
        ok=error is None,
        entries_checked=counters["entries"],
        checkpoints_checked=counters["checkpoints"],
        state_keys_checked=counters["state"],
        size=size,
        root_hash=tree.root() if error is None else None,
        first_error=error,
    )


def _verify(
    conn: sqlite3.Connection,
    verifier: CheckpointVerifier,
    origin: str,
    meta: dict[str, str],
    tree: MerkleTree,
    counters: dict[str, int],
) -> None:
    vkey = meta.get("vkey")
    if vkey is not None and vkey != verifier.vkey:
        raise _Failed(VerifyError(None, None, f"ledger was created with key {vkey}, not {verifier.vkey}"))

    # Duplicate tx ids: report the later occurrence.
    dup = conn.execute(
        "SELECT MIN(e2.seq), e2.tx_id FROM entries e1 JOIN entries e2 ON e1.tx_id = e2.tx_id AND e1.seq < e2.seq"
    ).fetchone()
    if dup is not None and dup[0] is not None:
        raise _Failed(VerifyError(dup[0], dup[1], "duplicate tx_id (also used by an earlier entry)"))

    checkpoints = {int(s): bytes(n) for s, n in conn.execute("SELECT size, note FROM checkpoints")}

    def seq_tx(seq: int | None) -> str | None:
        if seq is None:
            return None
        row = conn.execute("SELECT tx_id FROM entries WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row[0])

    def check_checkpoint(size: int) -> None:
        note = checkpoints.get(size)
        if note is None:
            return
        last_seq = size - 1 if size else None
        tx = seq_tx(last_seq)
        try:
            cp = verifier.verify(note, origin=origin)
        except CheckpointError as exc:
            raise _Failed(VerifyError(last_seq, tx, f"checkpoint for size {size}: {exc}", size)) from exc
        if cp.size != size:
            raise _Failed(VerifyError(last_seq, tx, f"checkpoint stored under size {size} says size {cp.size}", size))
        root = tree.root(size) if size else EMPTY_ROOT
        if cp.root_hash != root:
            raise _Failed(
                VerifyError(last_seq, tx, f"checkpoint root for size {size} does not match the recomputed root", size)
            )
        counters["checkpoints"] += 1

    check_checkpoint(0)

    # Replayed state goes to a temporary database so memory stays bounded on large ledgers.
    replay = sqlite3.connect("", isolation_level=None)
    try:
        replay.execute("PRAGMA journal_mode = OFF")
        replay.execute("PRAGMA synchronous = OFF")
        replay.execute("CREATE TABLE s (key TEXT PRIMARY KEY, value BLOB, seq INTEGER NOT NULL) WITHOUT ROWID")
        replay.execute("BEGIN")

        events_cur = _rows(conn, "SELECT seq, idx, name, payload FROM events ORDER BY seq, idx")
        history_cur = _rows(conn, "SELECT seq, key, value, is_delete FROM history ORDER BY seq, key")
        next_event = next(events_cur, None)
        next_hist = next(history_cur, None)

        expected_seq = 0
        for seq, tx_id, ts_ms, contract, function, creator_msp, leaf, stored_hash in conn.execute(
            "SELECT seq, tx_id, ts_ms, contract, function, creator_msp, leaf, leaf_hash FROM entries ORDER BY seq"
        ):
            if seq != expected_seq:
                raise _Failed(VerifyError(expected_seq, None, f"entry missing: next stored seq is {seq}"))
            leaf = bytes(leaf)
            h = leaf_hash(leaf)
            if bytes(stored_hash) != h:
                raise _Failed(VerifyError(seq, tx_id, "leaf hash does not match SHA-256(0x00 || leaf)"))
            try:
                d = decode_leaf(leaf)
            except ValueError as exc:
                raise _Failed(VerifyError(seq, tx_id, f"malformed leaf: {exc}")) from exc
            mismatches = [
                name
                for name, col, val in (
                    ("tx_id", tx_id, d.tx_id),
                    ("ts_ms", ts_ms, d.ts_ms),
                    ("contract", contract, d.contract),
                    ("function", function, d.function),
                    ("creator_msp", creator_msp, d.creator_msp),
                )
                if col != val
            ]
            if mismatches:
                raise _Failed(VerifyError(seq, tx_id, f"entry columns {mismatches} differ from the leaf"))
            if d.channel != meta.get("channel", d.channel) or d.chaincode != meta.get("chaincode", d.chaincode):
                raise _Failed(VerifyError(seq, tx_id, "leaf channel/chaincode differ from the ledger's"))

            stored_events = []
            while next_event is not None and next_event[0] <= seq:
                if next_event[0] < seq:
                    bad = int(next_event[0])  # type: ignore[call-overload]
                    raise _Failed(VerifyError(bad, seq_tx(bad), "event row without a matching leaf event"))
                stored_events.append((next_event[2], bytes(next_event[3])))  # type: ignore[arg-type]
                next_event = next(events_cur, None)
            if stored_events != list(d.events):
                raise _Failed(VerifyError(seq, tx_id, "events table differs from the leaf's events"))

            stored_writes = []
            while next_hist is not None and next_hist[0] <= seq:
                if next_hist[0] < seq:
                    bad = int(next_hist[0])  # type: ignore[call-overload]
                    raise _Failed(VerifyError(bad, seq_tx(bad), "history row without a matching leaf write"))
                _s, key, value, is_delete = next_hist
                stored_writes.append((key, None if is_delete else bytes(value)))  # type: ignore[arg-type]
                if bool(is_delete) != (value is None):
                    raise _Failed(VerifyError(seq, tx_id, f"history row for key {key!r} has inconsistent is_delete"))
                next_hist = next(history_cur, None)
            if stored_writes != list(d.writes):
                raise _Failed(VerifyError(seq, tx_id, "history table differs from the leaf's writes"))

            for key, value in d.writes:
                if value is None:
                    replay.execute("DELETE FROM s WHERE key = ?", (key,))
                else:
                    replay.execute("INSERT OR REPLACE INTO s (key, value, seq) VALUES (?, ?, ?)", (key, value, seq))

            tree.append_hash(h)
            counters["entries"] += 1
            expected_seq += 1
            check_checkpoint(expected_seq)

        if next_event is not None:
            raise _Failed(VerifyError(int(next_event[0]), None, "event row for a seq that has no entry"))  # type: ignore[arg-type]
        if next_hist is not None:
            raise _Failed(VerifyError(int(next_hist[0]), None, "history row for a seq that has no entry"))  # type: ignore[arg-type]
        beyond = sorted(s for s in checkpoints if s > expected_seq)
        if beyond:
            raise _Failed(
                VerifyError(None, None, f"checkpoint for size {beyond[0]} but only {expected_seq} entries", beyond[0])
            )
        _compare_state(conn, replay, seq_tx, counters)
        replay.execute("COMMIT")
    finally:
        replay.close()


def _compare_state(
    conn: sqlite3.Connection,
    replay: sqlite3.Connection,
    seq_tx: Callable[[int | None], str | None],
    counters: dict[str, int],
) -> None:
    """Merge-compare the stored state table with the replayed one, both in key order."""
    stored = conn.execute("SELECT key, value, version_seq FROM state ORDER BY key")
    replayed = replay.execute("SELECT key, value, seq FROM s ORDER BY key")
    a = next(stored, None)
    b = next(replayed, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            seq = int(a[2])  # type: ignore[index]
            raise _Failed(VerifyError(seq, seq_tx(seq), f"state key {a[0]!r} is not produced by any leaf"))  # type: ignore[index]
        if a is None or b[0] < a[0]:
            seq = int(b[2])
            raise _Failed(VerifyError(seq, seq_tx(seq), f"state key {b[0]!r} written by this entry is missing"))
        if bytes(a[1]) != bytes(b[1]):
            seq = int(b[2])
            raise _Failed(VerifyError(seq, seq_tx(seq), f"state value of key {a[0]!r} differs from replay"))
        if int(a[2]) != int(b[2]):
            seq = int(b[2])
            raise _Failed(VerifyError(seq, seq_tx(seq), f"state version of key {a[0]!r} is {a[2]}, replay says {b[2]}"))
        counters["state"] += 1
        a = next(stored, None)
        b = next(replayed, None)
