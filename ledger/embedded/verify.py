"""Offline verification of an embedded ledger file (``ciphercare ledger verify``).

Opens the SQLite file read-only inside one read transaction and checks:

* SQLite's own structure (``PRAGMA integrity_check``): a damaged page or index is named;
* seqs are contiguous from 0 and tx ids are unique;
* every leaf is canonical, well-formed JSON whose tx id / timestamp /
  contract / function / creator MSP match the entry's columns;
* ``SHA-256(0x00 || leaf)`` equals the stored ``leaf_hash``;
* the ``events`` rows equal the leaf's events and the ``history`` rows equal
  the leaf's writes;
* every stored checkpoint is signed by a trusted key (rotation: a retired key may
  not sign past the point where a newer key took over), carries the ledger's
  origin, and its root equals the root recomputed from the leaves at its size;
* a signed checkpoint covers the whole log: an unsigned tail is a failure;
* every checkpoint in the published-checkpoint file (``<ledger>.checkpoints``,
  outside SQLite) is covered by the log with the same root: a shorter log
  (rollback) or a different one (fork) is a failure;
* with a witness policy: the newest checkpoint cosigned by a quorum of witnesses
  (``<ledger>.cosigned``) is consistent with the log and covers it (up to
  ``max_unwitnessed`` entries);

and finally that the ``state`` table equals the state obtained by replaying
every leaf's writes.  The first problem found is reported with the seq and tx
id it concerns, and with a kind that ``ciphercare ledger verify`` maps to its
exit code (:data:`EXIT_CODES`).  Damaged files never raise: they are reported.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ciphercare.ledger.embedded.checkpoint_log import CheckpointLogError, default_path, read_records
from ciphercare.ledger.embedded.log import SCHEMA_VERSION, decode_leaf
from ciphercare.ledger.transparency.checkpoint import (
    CheckpointError,
    CheckpointKeyring,
    CheckpointVerifier,
    parse_vkey,
)
from ciphercare.ledger.transparency.merkle import EMPTY_ROOT, MerkleTree, leaf_hash

if TYPE_CHECKING:
    from ciphercare.ledger.witness.policy import Policy

#: Kinds of failure and the exit code of ``ciphercare ledger verify`` for each (documented in its --help).
KIND_TAMPERED = "tampered"  # content does not match its hashes/signatures/replay
KIND_UNSIGNED = "unsigned"  # no signed checkpoint covers the whole log (unsigned tail)
KIND_ROLLED_BACK = "rolled-back"  # shorter than, or different from, a checkpoint the node published
KIND_DAMAGED = "damaged"  # SQLite reports a damaged page/index or the file cannot be read
KIND_WITNESS = "witness"  # the witness policy is not met
EXIT_OK = 0
EXIT_CODES = {KIND_TAMPERED: 3, KIND_UNSIGNED: 4, KIND_ROLLED_BACK: 4, KIND_DAMAGED: 5, KIND_WITNESS: 6}


@dataclass(frozen=True)
class VerifyError:
    """The first problem found; ``seq``/``tx_id`` name the entry it concerns (None if none does)."""

    seq: int | None
    tx_id: str | None
    message: str
    checkpoint_size: int | None = None
    kind: str = KIND_TAMPERED

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]

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
    published_checked: int = 0
    witnessed_size: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.first_error is None else self.first_error.exit_code

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


def _keyring_for(
    key: str | bytes | CheckpointVerifier | CheckpointKeyring | Sequence[str], key_name: str | None,
    meta: dict[str, str],
) -> CheckpointKeyring:
    if isinstance(key, CheckpointKeyring):
        return key
    if isinstance(key, CheckpointVerifier):
        return CheckpointKeyring([key])
    if isinstance(key, str):
        if key.count("+") >= 2:
            return CheckpointKeyring.from_vkeys(key)
        raise ValueError("a string key must be a verifier key <name>+<hash>+<base64 key>")
    if isinstance(key, (list, tuple)):
        return CheckpointKeyring.from_vkeys(list(key))
    name = key_name
    if name is None:
        stored = meta.get("vkey")
        if stored is None:
            raise ValueError("no key name given and the ledger has no stored verifier key to take it from")
        name = parse_vkey(stored)[0]
    return CheckpointKeyring([CheckpointVerifier(bytes(key), name)])  # type: ignore[arg-type]


def _rows(conn: sqlite3.Connection, sql: str) -> Iterator[tuple[object, ...]]:
    yield from conn.execute(sql)


def _text(data: bytes) -> str:
    # Invalid UTF-8 in a TEXT column (a flipped byte) becomes U+FFFD and then fails a comparison
    # that names the entry, instead of raising out of the cursor.
    return data.decode("utf-8", errors="replace")


def verify_ledger(
    path: str | os.PathLike[str],
    public_key: str | bytes | CheckpointVerifier | CheckpointKeyring | Sequence[str],
    *,
    key_name: str | None = None,
    origin: str | None = None,
    published_path: str | os.PathLike[str] | None = None,
    policy: Policy | None = None,
    cosigned_path: str | os.PathLike[str] | None = None,
    max_unwitnessed: int = 0,
) -> VerifyReport:
    """Verify the ledger file at ``path`` against trusted checkpoint keys.

    ``public_key``: a vkey string (or comma-separated vkeys, oldest first), a list of vkeys,
    raw key bytes + ``key_name``, a verifier or a keyring.  ``origin`` defaults to the
    origin recorded in the ledger's meta table.  ``published_path`` defaults to
    ``<ledger>.checkpoints`` when that file exists; ``cosigned_path`` to ``<ledger>.cosigned``.
    Never modifies the file and never raises on a damaged one (the report names the damage).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"ledger file {p} does not exist")
    counters = {"entries": 0, "checkpoints": 0, "state": 0, "published": 0, "seq": 0}
    tree = MerkleTree()
    notes: list[str] = []
    witnessed: list[int] = []
    error: VerifyError | None = None
    conn: sqlite3.Connection | None = None
    # A bad key is the caller's error (ValueError), not damage: parse it before touching the file.
    ring = None if isinstance(public_key, (bytes, bytearray)) else _keyring_for(public_key, key_name, {})
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        conn.text_factory = _text
        conn.execute("BEGIN")
        _check_structure(conn)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        keyring = ring if ring is not None else _keyring_for(public_key, key_name, meta)
        # An empty meta table (e.g. a WAL lost to damage) must not stop the check against the published file.
        want_origin = origin if origin is not None else meta.get("origin", keyring.current.key_name)
        if want_origin is None:
            raise _Failed(VerifyError(None, None, "no origin given and the ledger records none", kind=KIND_DAMAGED))
        signed_sizes = _verify(conn, keyring, want_origin, meta, tree, counters)
        pub = Path(published_path) if published_path is not None else default_path(p)
        recorded = meta.get("published_file")
        if recorded is not None and recorded != pub.name:
            raise _Failed(VerifyError(None, None, f"the ledger records its published-checkpoint file as {recorded!r}, "
                                      f"not {pub.name!r} (pass --checkpoints with the node's file)"))
        if recorded is not None and not pub.exists():
            raise _Failed(VerifyError(None, None, f"the published-checkpoint file {pub} that the ledger records is "
                                      "missing: nothing proves the log was not rolled back", kind=KIND_ROLLED_BACK))
        if published_path is not None or pub.exists():
            signed_sizes |= _check_published(pub, keyring, want_origin, tree, counters)
        else:
            notes.append(f"no published-checkpoint file at {pub}: rollback protection not checked")
        if tree.size not in signed_sizes:
            last = max((s for s in signed_sizes if s <= tree.size), default=0)
            raise _Failed(VerifyError(
                last, None,
                f"entries {last}..{tree.size - 1} are not covered by any signed checkpoint (unsigned tail): "
                "the log was changed or extended without the signing key, or its checkpoints were deleted",
                tree.size, kind=KIND_UNSIGNED))
        if policy is not None:
            cos = Path(cosigned_path) if cosigned_path is not None else default_path(p, ".cosigned")
            witnessed.append(_check_witnessed(cos, policy, want_origin, tree, max_unwitnessed))
        conn.execute("COMMIT")
    except _Failed as failed:
        error = failed.error
    except sqlite3.DatabaseError as exc:
        near = f" (while reading entries near seq {counters['seq']})" if counters["seq"] else ""
        error = VerifyError(counters["seq"] or None, None, f"SQLite reports damage{near}: {exc}", kind=KIND_DAMAGED)
    except (UnicodeDecodeError, OverflowError, ValueError, TypeError) as exc:
        error = VerifyError(counters["seq"] or None, None, f"unreadable value: {exc}", kind=KIND_DAMAGED)
    except Exception as exc:  # a damaged file must end in a report, never a traceback
        error = VerifyError(counters["seq"] or None, None, f"unexpected {type(exc).__name__} reading the file: {exc}",
                            kind=KIND_DAMAGED)
    finally:
        if conn is not None:
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
        published_checked=counters["published"],
        witnessed_size=witnessed[0] if witnessed else None,
        notes=notes,
    )


def _check_structure(conn: sqlite3.Connection) -> None:
    """``PRAGMA integrity_check``: names damaged pages, broken b-trees and index rows that do not match."""
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(20)")]
    except sqlite3.DatabaseError as exc:
        # Too damaged for the whole-file check: check table by table to name where the damage is.
        places = []
        try:
            roots = conn.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'table'").fetchall()
        except sqlite3.DatabaseError as schema_exc:
            raise _Failed(VerifyError(None, None, f"SQLite schema (page 1) is damaged: {schema_exc}",
                                      kind=KIND_DAMAGED)) from schema_exc
        for name, root in roots:
            try:
                bad = [str(r[0]) for r in conn.execute(f'PRAGMA integrity_check("{name}")')]
                if bad != ["ok"]:
                    places.append(f"{name} (root page {root}): {bad[0]}")
            except sqlite3.DatabaseError as table_exc:
                places.append(f"{name} (root page {root}): {table_exc}")
        detail = "; ".join(places[:4]) or str(exc)
        raise _Failed(VerifyError(None, None, f"SQLite reports damage: {detail}", kind=KIND_DAMAGED)) from exc
    if rows != ["ok"]:
        detail = "; ".join(r.strip().replace("\n", " ") for r in rows[:5])
        raise _Failed(VerifyError(None, None, f"SQLite integrity check failed: {detail}", kind=KIND_DAMAGED))


def _check_published(
    pub: Path, keyring: CheckpointKeyring, origin: str, tree: MerkleTree, counters: dict[str, int]
) -> set[int]:
    """Every published checkpoint must be covered by the log with the same root."""
    try:
        records, _torn = read_records(pub)
    except (OSError, CheckpointLogError) as exc:
        raise _Failed(VerifyError(None, None, f"published-checkpoint file: {exc}", kind=KIND_DAMAGED)) from exc
    sizes: set[int] = set()
    verified = []
    for rec in records:
        try:
            verified.append((keyring.verify(rec.note, origin=origin), rec))
        except CheckpointError as exc:
            raise _Failed(VerifyError(None, None, f"{pub} line {rec.line_no}: {exc}", rec.size,
                                      kind=KIND_TAMPERED)) from exc
    # The largest published size first, so a rollback names the whole missing range.
    verified.sort(key=lambda pair: -pair[0].size)
    for cp, rec in verified:
        if cp.size > tree.size:
            raise _Failed(VerifyError(
                tree.size, None,
                f"the log has {tree.size} entries but checkpoint {cp.size} was published ({pub} line "
                f"{rec.line_no}): entries {tree.size}..{cp.size - 1} were acknowledged and are missing",
                cp.size, kind=KIND_ROLLED_BACK))
        if tree.root(cp.size) != cp.root_hash if cp.size else cp.root_hash != EMPTY_ROOT:
            raise _Failed(VerifyError(
                cp.size - 1 if cp.size else None, None,
                f"the log differs from the checkpoint published for {cp.size} entries ({pub} line {rec.line_no}):"
                " a rewritten or forked log", cp.size, kind=KIND_ROLLED_BACK))
        sizes.add(cp.size)
        counters["published"] += 1
    return sizes


def _check_witnessed(cos: Path, policy: Policy, origin: str, tree: MerkleTree, max_unwitnessed: int) -> int:
    """The newest quorum-cosigned checkpoint must match the log and cover all but ``max_unwitnessed`` entries."""
    from ciphercare.ledger.witness.policy import PolicyError

    best: int | None = None
    if cos.exists():
        try:
            records, _torn = read_records(cos)
        except (OSError, CheckpointLogError) as exc:
            raise _Failed(VerifyError(None, None, f"cosigned-checkpoint file: {exc}", kind=KIND_DAMAGED)) from exc
        for rec in records:
            try:
                cp, _cosigs = policy.verify(rec.note, origin=origin)
            except PolicyError:
                continue  # fewer cosignatures than the quorum: not evidence either way
            if cp.size > tree.size or (cp.size and tree.root(cp.size) != cp.root_hash):
                raise _Failed(VerifyError(
                    min(cp.size, tree.size), None,
                    f"witnesses cosigned a checkpoint of size {cp.size} that this log does not extend "
                    f"({cos} line {rec.line_no}): the log was rolled back or rewritten", cp.size,
                    kind=KIND_ROLLED_BACK))
            best = cp.size if best is None else max(best, cp.size)
    if best is None:
        raise _Failed(VerifyError(None, None, f"no checkpoint cosigned by a quorum of {policy.quorum} witness(es) "
                                  f"in {cos}", kind=KIND_WITNESS))
    if tree.size - best > max_unwitnessed:
        raise _Failed(VerifyError(
            best, None,
            f"entries {best}..{tree.size - 1} are not covered by a witness-cosigned checkpoint "
            f"(allowed: {max_unwitnessed})", best, kind=KIND_WITNESS))
    return best


def _verify(
    conn: sqlite3.Connection,
    keyring: CheckpointKeyring,
    origin: str,
    meta: dict[str, str],
    tree: MerkleTree,
    counters: dict[str, int],
) -> set[int]:
    vkey = meta.get("vkey")
    if vkey is not None and vkey not in keyring.vkeys:
        raise _Failed(VerifyError(None, None, f"ledger was created with key {vkey}, not {keyring.current.vkey}"))
    known = {"schema_version", "origin", "vkey", "channel", "chaincode", "published_file"}
    if set(meta) - known:
        raise _Failed(VerifyError(None, None, f"meta table has unknown keys {sorted(set(meta) - known)}"))
    if meta.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise _Failed(VerifyError(None, None, f"meta schema_version is {meta['schema_version']!r}"))
    if meta.get("origin", origin) != origin:
        raise _Failed(VerifyError(None, None, f"meta origin {meta['origin']!r} is not {origin!r}"))
    published = meta.get("published_file")
    if published is not None and (not published or "/" in published or published.startswith(".")):
        raise _Failed(VerifyError(None, None, f"meta published_file {published!r} is not a file name"))
    signed: set[int] = set()
    newest_key = [0]

    # Duplicate tx ids: report the later occurrence.
    dup = conn.execute(
        "SELECT MIN(e2.seq), e2.tx_id FROM entries e1 JOIN entries e2 ON e1.tx_id = e2.tx_id AND e1.seq < e2.seq"
    ).fetchone()
    if dup is not None and dup[0] is not None:
        raise _Failed(VerifyError(dup[0], dup[1], "duplicate tx_id (also used by an earlier entry)"))

    checkpoints: dict[int, bytes] = {}
    for s_, n_ in conn.execute("SELECT size, note FROM checkpoints"):
        if not isinstance(s_, int) or not isinstance(n_, bytes):
            raise _Failed(VerifyError(None, None, f"checkpoints row {s_!r} has the wrong column types",
                                      kind=KIND_DAMAGED))
        checkpoints[s_] = n_

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
            cp, key_index = keyring.verify_indexed(note, origin=origin)
        except CheckpointError as exc:
            raise _Failed(VerifyError(last_seq, tx, f"checkpoint for size {size}: {exc}", size)) from exc
        if key_index < newest_key[0]:
            raise _Failed(VerifyError(
                last_seq, tx, f"checkpoint for size {size} is signed by a retired key after a newer key took over",
                size))
        newest_key[0] = key_index
        if cp.size != size:
            raise _Failed(VerifyError(last_seq, tx, f"checkpoint stored under size {size} says size {cp.size}", size))
        root = tree.root(size) if size else EMPTY_ROOT
        if cp.root_hash != root:
            raise _Failed(
                VerifyError(last_seq, tx, f"checkpoint root for size {size} does not match the recomputed root", size)
            )
        counters["checkpoints"] += 1
        signed.add(size)

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
            counters["seq"] = expected_seq
            if seq != expected_seq:
                raise _Failed(VerifyError(expected_seq, None, f"entry missing: next stored seq is {seq}"))
            if not isinstance(leaf, bytes) or not isinstance(stored_hash, bytes):
                raise _Failed(VerifyError(seq, tx_id, "leaf or leaf_hash column has the wrong type"))
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
                stored_events.append((next_event[2], bytes(next_event[3])))  # type: ignore[arg-type,call-overload]
                next_event = next(events_cur, None)
            if stored_events != list(d.events):
                raise _Failed(VerifyError(seq, tx_id, "events table differs from the leaf's events"))

            stored_writes = []
            while next_hist is not None and next_hist[0] <= seq:
                if next_hist[0] < seq:
                    bad = int(next_hist[0])  # type: ignore[call-overload]
                    raise _Failed(VerifyError(bad, seq_tx(bad), "history row without a matching leaf write"))
                _s, key, value, is_delete = next_hist
                stored_writes.append((key, None if is_delete else bytes(value)))  # type: ignore[arg-type,call-overload]
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
            raise _Failed(VerifyError(int(next_event[0]), None, "event row for a seq that has no entry"))  # type: ignore[arg-type,call-overload]
        if next_hist is not None:
            raise _Failed(VerifyError(int(next_hist[0]), None, "history row for a seq that has no entry"))  # type: ignore[arg-type,call-overload]
        beyond = sorted(s for s in checkpoints if s > expected_seq)
        if beyond:
            raise _Failed(
                VerifyError(None, None, f"checkpoint for size {beyond[0]} but only {expected_seq} entries", beyond[0],
                            kind=KIND_ROLLED_BACK)
            )
        _compare_state(conn, replay, seq_tx, counters)
        replay.execute("COMMIT")
    finally:
        replay.close()
    return signed


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
