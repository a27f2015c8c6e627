"""Append-only, fsynced files of signed checkpoint notes, kept outside the SQLite database.

The node appends every checkpoint it publishes to ``<ledger>.checkpoints``
after the SQLite commit and before any receipt for that batch is returned, so
the file always holds the newest tree size anyone was told about.  At start
the node proves its log is consistent with the file's latest checkpoint (see
:func:`check_log_against_published`); a shorter or different log refuses to
start instead of handing out a sequence number twice.

The same format stores the witness-cosigned checkpoints (``<ledger>.cosigned``):
one record per line, ``<tree size> <base64(note)>\\n``, where the note is the
complete signed note (for cosigned records: with the witness signature lines).
A crash can leave a torn last line (no newline); it was never fsynced, so no
receipt depended on it, and opening the file for appending cuts it off.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ciphercare.ledger.api import Checkpoint, LedgerError
from ciphercare.ledger.transparency.checkpoint import CheckpointError, CheckpointKeyring
from ciphercare.ledger.transparency.merkle import MerkleTree

_CHUNK = 64 * 1024


class CheckpointLogError(LedgerError):
    """A record of a checkpoint file is malformed (names the file and line)."""


class LogRefusedError(LedgerError):
    """The log does not extend the newest checkpoint it published: the node must not start."""


@dataclass(frozen=True)
class Record:
    """One line of a checkpoint file."""

    line_no: int
    size: int
    note: bytes


def default_path(ledger_path: str | os.PathLike[str], suffix: str = ".checkpoints") -> Path:
    """``<ledger file>.checkpoints`` (or another suffix) next to the ledger."""
    p = Path(ledger_path)
    return p.with_name(p.name + suffix)


def _parse(line: bytes, line_no: int, path: Path) -> Record:
    parts = line.split(b" ")
    if len(parts) != 2 or not parts[0].isdigit():
        raise CheckpointLogError(f"{path} line {line_no}: not '<size> <base64 note>'")
    try:
        note = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointLogError(f"{path} line {line_no}: note is not base64: {exc}") from exc
    return Record(line_no, int(parts[0]), note)


def read_records(path: str | os.PathLike[str]) -> tuple[list[Record], bool]:
    """Every complete record of ``path`` in file order, and whether a torn last line was skipped."""
    p = Path(path)
    data = p.read_bytes()
    lines = data.split(b"\n")
    torn = lines[-1] != b""
    out = [_parse(line, i + 1, p) for i, line in enumerate(lines[:-1])]
    return out, torn


def iter_reverse(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Complete records from the newest to the oldest, reading the file backwards in chunks.

    Bytes after the last newline (a torn record) are skipped.  Line numbers are not known
    when reading backwards and are reported as -1.
    """
    p = Path(path)
    with open(p, "rb") as f:
        f.seek(0, os.SEEK_END)
        pos = f.tell()
        rest = b""
        torn = True  # until the last newline of the file has been seen
        while pos > 0:
            step = min(_CHUNK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + rest
            lines = data.split(b"\n")
            if torn:
                if len(lines) == 1:
                    rest = b""  # still inside the torn tail
                    continue
                lines.pop()
                torn = False
            rest = lines[0]
            for line in reversed(lines[1:]):
                yield _parse(line, -1, p)
        if not torn and rest:
            yield _parse(rest, -1, p)


class CheckpointFile:
    """Appends checkpoint records to a file with ``O_APPEND`` and one fsync per record."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._fd = os.open(str(self.path), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            # Cut a torn last record (a crash mid-append; it was never fsynced, so never acknowledged).
            keep = 0
            pos = size
            while pos > 0:
                step = min(_CHUNK, pos)
                pos -= step
                cut = os.pread(self._fd, step, pos).rfind(b"\n")
                if cut >= 0:
                    keep = pos + cut + 1
                    break
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
        if created:
            dir_fd = os.open(str(self.path.parent), os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def append(self, size: int, note: bytes) -> None:
        """Append one record and fsync it (raises OSError on failure)."""
        line = f"{size} ".encode() + base64.b64encode(note) + b"\n"
        with self._lock:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
            os.fsync(self._fd)

    def append_checkpoint(self, cp: Checkpoint) -> None:
        self.append(cp.size, cp.note)

    def latest(self) -> Record | None:
        """The newest complete record, or None for an empty file."""
        return next(iter_reverse(self.path), None)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def check_log_against_published(
    tree: MerkleTree,
    published: Path,
    keyring: CheckpointKeyring,
    origin: str,
    ledger_path: Path,
) -> Checkpoint | None:
    """Prove the log in ``tree`` extends the newest checkpoint recorded in ``published``.

    Returns that checkpoint (None when the file holds none) or raises
    :class:`LogRefusedError` naming the missing or differing range and how to recover.
    """
    records = iter_reverse(published)
    latest_rec = next(records, None)
    if latest_rec is None:
        return None
    try:
        latest = keyring.verify(latest_rec.note, origin=origin)
    except CheckpointError as exc:
        raise LogRefusedError(
            f"the newest record of {published} (tree size {latest_rec.size}) does not verify: {exc}. "
            "Refusing to start: that file is the node's memory of what it published. Restore it from a backup "
            "or a replica, or compare it with a witness's cosigned checkpoint before touching it."
        ) from exc
    if latest.size != latest_rec.size:
        raise LogRefusedError(f"{published}: a record says size {latest_rec.size} but its note says {latest.size}")
    recover = (
        "Refusing to start so that no sequence number is handed out twice. Recover: restore the ledger from a "
        f"replica or backup that holds at least {latest.size} entries, check it with `ciphercare ledger verify`, "
        "then start again. Do not delete the checkpoint file to get past this: witnesses and clients hold "
        "the same checkpoints and will report the fork."
    )
    if latest.size > tree.size:
        raise LogRefusedError(
            f"{ledger_path} holds {tree.size} entries but a checkpoint for {latest.size} entries was published "
            f"(recorded in {published}): entries {tree.size}..{latest.size - 1} were acknowledged and are missing. "
            + recover
        )
    if tree.root(latest.size) == latest.root_hash:
        return latest
    # Find the newest published size that still matches, to name the differing range.
    good = 0
    for rec in records:
        if rec.size > tree.size:
            continue
        try:
            cp = keyring.verify(rec.note, origin=origin)
        except CheckpointError:
            continue
        if tree.root(cp.size) == cp.root_hash:
            good = cp.size
            break
    raise LogRefusedError(
        f"{ledger_path} differs from the checkpoint it published for {latest.size} entries (recorded in "
        f"{published}): the entries in {good}..{latest.size - 1} are not the ones that were signed "
        f"(the log still matches the published checkpoint of size {good}). " + recover
    )
