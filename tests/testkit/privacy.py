"""PHI canaries and the scanner that looks for them everywhere a deployment keeps or emits bytes.

A canary is a unique random token planted in a PHI-bearing field. The scanner
looks for each token raw, lower-cased and base64-encoded (any alignment), in:
every file under the data directory (ledger, its WAL, keys, MSP, the SQLite
store), every row of every table of the off-chain database, the PostgreSQL
server's files for that database and its WAL (after a CHECKPOINT), the
captured JSON log lines and every error message a caller received.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import secrets
import string
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from ciphercare.services.platform.logs import configure_logging
from ciphercare.services.platform.settings import Settings


def _letters(n: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(n))


def _digits(n: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(n))


@dataclass
class Canaries:
    """Named unique tokens; ``name(...)`` looks like a person's name, ``mrn(...)`` like a record number."""

    tokens: dict[str, str] = field(default_factory=dict)

    def name(self, label: str) -> str:
        token = "Kx" + _letters(12)
        self.tokens[label] = token
        return token

    def mrn(self, label: str) -> str:
        token = _digits(12)
        self.tokens[label] = token
        return token

    def words(self, label: str) -> str:
        token = "kq" + _letters(12)
        self.tokens[label] = token
        return token


def needles(token: str) -> set[bytes]:
    """The byte patterns that would betray ``token``: raw, lower-cased, and base64 at each alignment."""
    raw = token.encode()
    found = {raw, raw.lower()}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        # Drop the characters that depend on the neighbouring bytes.
        start = {0: 0, 1: 2, 2: 3}[shift]
        core = encoded[start : start + (len(raw) * 4) // 3 - 4]
        if len(core) >= 8:
            found.add(core)
    return found


@dataclass(frozen=True)
class Finding:
    canary: str
    where: str

    def __str__(self) -> str:
        return f"canary {self.canary!r} found in {self.where}"


class Scanner:
    """Looks for canaries in bytes, files, database rows, log lines and error messages."""

    def __init__(self, canaries: dict[str, str]) -> None:
        self.patterns = {label: needles(token) for label, token in canaries.items()}
        self.findings: list[Finding] = []
        self.scanned: dict[str, int] = {}

    def _count(self, kind: str, amount: int = 1) -> None:
        self.scanned[kind] = self.scanned.get(kind, 0) + amount

    def scan_bytes(self, where: str, data: bytes) -> None:
        for label, patterns in self.patterns.items():
            for pattern in patterns:
                offset = data.find(pattern)
                if offset >= 0:
                    self.findings.append(Finding(label, f"{where} at byte {offset}"))
                    break

    def scan_file(self, path: Path) -> None:
        self.scan_bytes(str(path), path.read_bytes())
        self._count("files")
        self._count("file bytes", path.stat().st_size)

    def scan_tree(self, root: Path) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self.scan_file(path)

    def scan_database(self, url: str) -> None:
        """Every column of every row of every table, as bytes."""
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                for table in inspect(connection).get_table_names():
                    rows = connection.execute(text(f'SELECT * FROM "{table}"')).mappings().all()
                    self._count("tables")
                    self._count("rows", len(rows))
                    for index, row in enumerate(rows):
                        for column, value in row.items():
                            if value is None:
                                continue
                            data = bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
                            self.scan_bytes(f"table {table} row {index} column {column}", data)
        finally:
            engine.dispose()

    def scan_postgres_files(self, url: str) -> str:
        """The server's files for this database and its WAL (flushed first); returns what was scanned or why not."""
        parsed = make_url(url)
        engine = create_engine(parsed, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("CHECKPOINT")
                data_dir = Path(connection.exec_driver_sql("SHOW data_directory").scalar())
                oid = connection.exec_driver_sql(
                    "SELECT oid FROM pg_database WHERE datname = current_database()").scalar()
        finally:
            engine.dispose()
        roots = [data_dir / "base" / str(oid), data_dir / "pg_wal"]
        if not all(os.access(root, os.R_OK | os.X_OK) for root in roots):
            return f"PostgreSQL files not readable by this user ({data_dir})"
        for root in roots:
            self.scan_tree(root)
        return f"PostgreSQL files under {roots[0]} and {roots[1]}"

    def scan_lines(self, kind: str, lines: Iterable[str]) -> None:
        for number, line in enumerate(lines, 1):
            self._count(kind)
            self.scan_bytes(f"{kind} #{number}: {line[:160]!r}", line.encode())

    def report(self) -> str:
        return "\n".join(str(f) for f in self.findings)


@contextmanager
def json_logs(settings: Settings) -> Iterator[io.StringIO]:
    """The services' real JSON logging (services/platform/logs.py) into a buffer; old handlers come back after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("ciphercare").level)
    buffer = io.StringIO()
    configure_logging(settings, stream=buffer, level=logging.DEBUG)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("ciphercare").setLevel(saved[2])


def log_lines(buffer: io.StringIO) -> list[str]:
    """The captured lines, each checked to be one JSON object."""
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    for line in lines:
        entry = json.loads(line)
        if not isinstance(entry, dict) or "msg" not in entry or "level" not in entry:
            raise AssertionError(f"not a structured log line: {line[:200]}")
    return lines


class Errors:
    """Collects the status and message of every refused call."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def expect(self, code: grpc.StatusCode, call, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
        try:
            call(*args, **kwargs)
        except grpc.RpcError as exc:
            details = exc.details() or ""
            self.messages.append(f"{exc.code().name}: {details}")
            if exc.code() != code:
                raise AssertionError(f"expected {code.name}, got {exc.code().name}: {details}") from exc
            return details
        raise AssertionError(f"expected {code.name}, the call succeeded")


# --- PHI-bearing inputs ----------------------------------------------------------------------


def consent_document(pid: str, c: Canaries) -> str:
    """A FHIR R4 Consent as an EHR would send it: names, an MRN and narrative text inside."""
    return json.dumps({
        "resourceType": "Consent",
        "status": "active",
        "identifier": [{"system": "urn:oid:1.2.3.4.5.mrn", "value": "MRN" + c.mrn("consent.identifier.mrn")}],
        "patient": {
            "identifier": {"system": "urn:ciphercare:pid", "value": pid},
            "display": f"{c.name('consent.patient.given')} {c.name('consent.patient.family')}",
        },
        "text": {"status": "generated",
                 "div": f"<div>Patient {c.words('consent.text.div')} agrees to share labs with Dr Smith.</div>"},
        "performer": [{"display": c.name("consent.performer.display")}],
        "provision": {"type": "permit"},
    })


def access_detail(c: Canaries) -> str:
    return json.dumps({
        "patient_name": c.name("detail.patient_name"),
        "mrn": c.mrn("detail.mrn"),
        "note": f"Reviewed {c.words('detail.note')} discharge summary; HbA1c 9.1%",
    })


def decrypted_documents(settings: Settings) -> bytes:
    """Everything the store can still read: every document row, opened with the deployment's keys."""
    from ciphercare.services.privacy.operations import open_offchain_store
    from ciphercare.services.store import DocumentErasedError
    from ciphercare.services.store.models import Document

    store = open_offchain_store(settings, migrate=False)
    try:
        with store.session() as session:
            rows = [(row.sha256, row.pid) for row in session.query(Document)]
        out = b""
        for sha, owner in rows:
            try:
                out += store.get_document(sha, pid=owner) or b""
            except DocumentErasedError:
                continue
        return out
    finally:
        store.close()
