"""Test kit for tests/integrity: build a small ledger, rewrite it like an operator, copy its files."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from ciphercare.consent import canonical
from ciphercare.ledger.embedded.ledger import EmbeddedLedger
from ciphercare.ledger.transparency.merkle import leaf_hash
from testkit.ledger import ALICE, ORIGIN, kv_chaincode

KEY = "checkpoint.key"
FILES = ("ledger.db", "ledger.db-wal", "ledger.db.checkpoints", "ledger.db.cosigned")


def open_ledger(data: Path, **kw: object) -> EmbeddedLedger:
    params: dict[str, object] = {"max_batch": 8, "max_wait_ms": 1.0}
    params.update(kw)
    return EmbeddedLedger(data / "ledger.db", data / KEY, ORIGIN, kv_chaincode, **params)  # type: ignore[arg-type]


def build(data: Path, n: int = 300, batch: int = 8) -> str:
    """A closed ledger of ``n`` Put entries (key k<i>, value v<i>) in batches; returns its vkey."""
    led = open_ledger(data, max_batch=batch)
    try:
        for start in range(0, n, batch * 4):
            end = min(n, start + batch * 4)
            futs = [led.submit_future(ALICE, "kv", "Put", [f"k{i}", f"v{i}"]) for i in range(start, end)]
            for f in futs:
                f.result(30)
        return led.public_key_vkey()
    finally:
        led.close()


def copy_ledger(src: Path, dst: Path) -> Path:
    """Copy the ledger files (not the -shm index: SQLite rebuilds it from the WAL) and the key."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in (*FILES, KEY):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    return dst


def rewrite_entry(db_path: Path, seq: int, new_value: str) -> None:
    """Rewrite entry ``seq`` (a kv Put) consistently, WITHOUT the signing key.

    New canonical leaf, leaf hash, event payload, history row and state value: every table agrees,
    only the signed checkpoints (and everyone who saw them) can tell.
    """
    with sqlite3.connect(db_path) as db:
        (leaf,) = db.execute("SELECT leaf FROM entries WHERE seq = ?", (seq,)).fetchone()
        obj = json.loads(leaf)
        key = obj["writes"][0]["key"]
        obj["writes"][0]["value_b64"] = base64.b64encode(new_value.encode()).decode()
        payload = json.dumps({"key": key, "value": new_value}).encode()
        obj["events"][0]["payload_b64"] = base64.b64encode(payload).decode()
        obj["args"] = [key, new_value]
        new_leaf = canonical.dumps(obj)
        db.execute("UPDATE entries SET leaf = ?, leaf_hash = ? WHERE seq = ?", (new_leaf, leaf_hash(new_leaf), seq))
        db.execute("UPDATE events SET payload = ? WHERE seq = ? AND idx = 0", (payload, seq))
        db.execute("UPDATE history SET value = ? WHERE seq = ? AND key = ?", (new_value.encode(), seq, key))
        db.execute("UPDATE state SET value = ? WHERE key = ? AND version_seq = ?", (new_value.encode(), key, seq))
    db.close()


def truncate_log(db_path: Path, keep: int) -> None:
    """Delete every entry from ``keep`` on, with its rows and checkpoints (a restored old backup looks the same)."""
    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM entries WHERE seq >= ?", (keep,))
        db.execute("DELETE FROM events WHERE seq >= ?", (keep,))
        db.execute("DELETE FROM history WHERE seq >= ?", (keep,))
        db.execute("DELETE FROM state WHERE version_seq >= ?", (keep,))
        db.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))
    db.close()


def logical_dump(db_path: Path) -> str:
    """SHA-256 over every row of every table, read-only (what a flip must not change unnoticed)."""
    h = hashlib.sha256()
    conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    conn.text_factory = bytes
    try:
        for table in ("entries", "events", "state", "history", "checkpoints", "meta"):
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):  # noqa: S608 - fixed names
                h.update(repr(row).encode())
    finally:
        conn.close()
    return h.hexdigest()


TESTS_DIR = Path(__file__).resolve().parents[2]


def build_killed(data: Path, n: int = 300) -> None:
    """A ledger written by another process that is then SIGKILLed: the WAL is live and never checkpointed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "testkit.integrity.wal_worker", str(data), str(n)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "DONE", f"worker said {line!r}"
    finally:
        proc.kill()
        proc.wait(30)
    time.sleep(0.05)


class WitnessProcess:
    """``ciphercare witness serve`` as its own process on loopback."""

    def __init__(self, state_dir: Path, name: str, log_vkeys: list[str], alg: str = "ed25519") -> None:
        args = [sys.executable, "-m", "ciphercare.services.cli.main", "witness", "serve", "--dir", str(state_dir),
                "--name", name, "--port", "0", "--alg", alg]
        for vkey in log_vkeys:
            args += ["--log", vkey]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        second = self.proc.stdout.readline()
        if not first.startswith("witness "):
            self.stop()
            raise RuntimeError(f"witness did not start: {first!r} {second!r} {self.proc.stderr.read()!r}")
        self.vkey = first.split(" ", 1)[1].strip()
        self.url = second.split(" ")[2]
        self.name = name
        self.state_dir = state_dir

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def policy_text(log_vkeys: list[str], witnesses: list[WitnessProcess], quorum: int) -> str:
    lines = [f"log {v}" for v in log_vkeys] + [f"witness {w.vkey} {w.url}" for w in witnesses]
    return "\n".join([*lines, f"quorum {quorum}"]) + "\n"


def leaf_hashes(db_path: Path) -> list[bytes]:
    with sqlite3.connect(db_path) as db:
        rows = [bytes(h) for (h,) in db.execute("SELECT leaf_hash FROM entries ORDER BY seq")]
    db.close()
    return rows
