"""The log side of tlog-witness: submit checkpoints, collect cosignatures, keep the cosigned ones.

:class:`WitnessSubmitter` runs one background thread. After every published checkpoint it
takes the NEWEST one (a burst of commits is witnessed once, at its end: a witness only needs
consistency from the size it last cosigned), sends it with a consistency proof to every
witness of the policy in parallel, learns a witness's size from a 409 answer and retries,
and records a checkpoint in ``<ledger>.cosigned`` once a quorum has cosigned it. Progress listeners
hear (newest published size, newest quorum-cosigned size) whenever either moves (the witness lag metric).
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ciphercare.ledger.api import Checkpoint, LedgerError
from ciphercare.ledger.embedded.checkpoint_log import CheckpointFile, LogRefusedError, default_path
from ciphercare.ledger.witness.cosignature import CosignatureError, split_note

if TYPE_CHECKING:
    from ciphercare.ledger.embedded.log import TransactionLog
from ciphercare.ledger.witness.policy import Policy, PolicyError, Witness, merge_cosignatures
from ciphercare.ledger.witness.server import SIZE_CONTENT_TYPE, request_body

log = logging.getLogger(__name__)

ProofFn = Callable[[int, int], list[bytes]]
#: Called with (newest published checkpoint size, newest quorum-cosigned size); must not block.
ProgressListener = Callable[[int, int], None]


class WitnessRefusal(LedgerError):
    """A witness refused a checkpoint in a way that proves the log is rolled back or forked."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str


def post_add_checkpoint(url: str, body: bytes, timeout: float) -> Response:
    """One ``POST <url>/add-checkpoint``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"witness URL {url!r} must be http(s)")
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("POST", parts.path.rstrip("/") + "/add-checkpoint", body=body,
                     headers={"Content-Type": "text/plain"})
        resp = conn.getresponse()
        return Response(resp.status, resp.read(65536), resp.getheader("Content-Type", ""))
    finally:
        conn.close()


class KeepAlive:
    """One persistent HTTP connection per witness URL (tlog-witness: clients SHOULD use keep-alive).

    Used by one thread per witness at a time (the submitter's rounds are sequential)."""

    def __init__(self) -> None:
        self._conns: dict[str, http.client.HTTPConnection] = {}
        self._lock = threading.Lock()

    def _drop(self, url: str) -> None:
        with self._lock:
            conn = self._conns.pop(url, None)
        if conn is not None:
            conn.close()

    def post(self, url: str, body: bytes, timeout: float) -> Response:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"witness URL {url!r} must be http(s)")
        for attempt in (0, 1):
            with self._lock:
                conn = self._conns.get(url)
                if conn is None:
                    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
                    conn = cls(parts.hostname or "", parts.port, timeout=timeout)
                    self._conns[url] = conn
            try:
                conn.request("POST", parts.path.rstrip("/") + "/add-checkpoint", body=body,
                             headers={"Content-Type": "text/plain"})
                resp = conn.getresponse()
                data = resp.read(65536)
                if resp.will_close:
                    self._drop(url)
                return Response(resp.status, data, resp.getheader("Content-Type", ""))
            except (http.client.HTTPException, OSError):
                self._drop(url)  # a stale kept-alive connection: retry once on a fresh one
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()


def cosign_with(witness: Witness, note: bytes, size: int, proof_fn: ProofFn, timeout: float,
                known_size: int | None,
                post: Callable[[str, bytes, float], Response] = post_add_checkpoint,
                ) -> tuple[str | None, int | None, str]:
    """Get ``witness``'s cosignature on ``note``: ``(signature line or None, witness size, message)``.

    Raises :class:`WitnessRefusal` when the answer proves a rollback or fork.
    """
    old = known_size if known_size is not None and known_size <= size else 0
    for _attempt in range(3):
        proof = proof_fn(old, size) if 0 < old < size else []
        resp = post(witness.url, request_body(old, proof, note), timeout)
        if resp.status == 200:
            body, _ = split_note(note)
            for line in resp.body.decode("utf-8", errors="replace").splitlines():
                if witness.verifier.matches(line):
                    try:
                        witness.verifier.verify_line(body, line)
                    except CosignatureError as exc:
                        return None, old, f"bad cosignature from {witness.name}: {exc}"
                    return line, size, "ok"
            return None, size, f"{witness.name} answered without its cosignature"
        if resp.status == 409 and resp.content_type.startswith(SIZE_CONTENT_TYPE):
            stored = int(resp.body.strip() or b"0")
            if stored > size or (stored == size and old == size):
                raise WitnessRefusal(
                    f"witness {witness.name} has cosigned {stored} entries (a different tree at this size, or a "
                    f"larger one) but this log offers {size}: the log was rolled back or forked")
            old = stored
            continue
        if resp.status == 422:
            raise WitnessRefusal(f"witness {witness.name} refused checkpoint {size}: "
                                 f"{resp.body.decode(errors='replace').strip()}")
        return None, None, f"{witness.name} answered {resp.status}: {resp.body[:200].decode(errors='replace')}"
    return None, None, f"{witness.name} kept answering 409"


class WitnessSubmitter:
    """Background witnessing of the newest published checkpoint (see the module docstring)."""

    def __init__(self, policy: Policy, proof_fn: ProofFn, cosigned_path: Path, *, timeout_s: float = 5.0) -> None:
        self.policy = policy
        self.proof_fn = proof_fn
        self.timeout_s = timeout_s
        self._file = CheckpointFile(cosigned_path)
        self._cond = threading.Condition()
        self._pending: Checkpoint | None = None
        self._latest_cosigned: tuple[Checkpoint, bytes] | None = None
        self._sizes: dict[str, int | None] = {w.name: None for w in policy.witnesses}
        self._closed = False
        self.refusal: str | None = None
        self.rounds = 0
        self._published = 0
        self._listeners: list[ProgressListener] = []
        self._pool = ThreadPoolExecutor(max(1, len(policy.witnesses)), thread_name_prefix="witness")
        self._http = KeepAlive()
        latest = self._file.latest()
        if latest is not None:
            try:
                cp, _ = policy.verify(latest.note)
                self._latest_cosigned = (cp, latest.note)
            except PolicyError as exc:
                log.warning("newest record of %s does not meet the policy: %s", cosigned_path, exc)
        self._thread = threading.Thread(target=self._run, name="witness-submitter", daemon=True)
        self._thread.start()

    def offer(self, cp: Checkpoint) -> None:
        """A new checkpoint was published (called on the writer thread: never blocks)."""
        with self._cond:
            if self._pending is None or cp.size >= self._pending.size:
                self._pending = cp
            self._published = max(self._published, cp.size)
            self._cond.notify_all()
        self._report()

    def add_progress_listener(self, listener: ProgressListener) -> None:
        """Tell ``listener`` (published, cosigned) now and whenever a checkpoint is published or cosigned."""
        with self._cond:
            self._listeners.append(listener)
        self._report()

    def progress(self) -> tuple[int, int]:
        """(newest published checkpoint size, newest quorum-cosigned checkpoint size; 0 before the first)."""
        with self._cond:
            cosigned = 0 if self._latest_cosigned is None else self._latest_cosigned[0].size
            return self._published, cosigned

    def _report(self) -> None:
        with self._cond:
            listeners = list(self._listeners)
        if not listeners:
            return
        published, cosigned = self.progress()
        for listener in listeners:
            try:
                listener(published, cosigned)
            except Exception:  # noqa: BLE001 - a metric must never stop witnessing
                log.exception("witness progress listener failed")

    def latest_cosigned(self) -> tuple[Checkpoint, bytes] | None:
        """The newest checkpoint cosigned by a quorum, and its note with the cosignature lines."""
        with self._cond:
            return self._latest_cosigned

    def wait_cosigned(self, size: int, timeout: float) -> bool:
        """Block until a checkpoint of at least ``size`` entries is quorum-cosigned; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._latest_cosigned is None or self._latest_cosigned[0].size < size:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed or self.refusal is not None:
                    return False
                self._cond.wait(remaining)
            return True

    def witness_round(self, cp: Checkpoint) -> tuple[int, list[str]]:
        """Submit ``cp`` to every witness now; returns (cosignatures, problems). Raises WitnessRefusal."""
        with self._cond:
            self._published = max(self._published, cp.size)
        futures = [
            (w, self._pool.submit(cosign_with, w, cp.note, cp.size, self.proof_fn, self.timeout_s,
                                  self._sizes[w.name], self._http.post))
            for w in self.policy.witnesses
        ]
        lines: list[str] = []
        problems: list[str] = []
        refusal: WitnessRefusal | None = None
        for w, fut in futures:
            try:
                line, size, message = fut.result()
            except WitnessRefusal as exc:
                refusal = exc
                continue
            except OSError as exc:
                problems.append(f"{w.name}: {exc}")
                continue
            self._sizes[w.name] = size
            if line is not None:
                lines.append(line)
            else:
                problems.append(message)
        if refusal is not None:
            raise refusal
        self.rounds += 1
        if len(lines) >= self.policy.quorum:
            note = merge_cosignatures(cp.note, lines)
            self._file.append(cp.size, note)
            with self._cond:
                if self._latest_cosigned is None or cp.size >= self._latest_cosigned[0].size:
                    self._latest_cosigned = (cp, note)
                self._cond.notify_all()
            self._report()
        return len(lines), problems

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                cp, self._pending = self._pending, None
            done = self._latest_cosigned
            if done is not None and done[0].size >= cp.size:
                continue
            try:
                count, problems = self.witness_round(cp)
                if count < self.policy.quorum:
                    log.warning("checkpoint %d: %d of %d cosignatures: %s", cp.size, count, self.policy.quorum,
                                "; ".join(problems))
            except WitnessRefusal as exc:
                log.error("WITNESS REFUSAL: %s", exc)
                with self._cond:
                    self.refusal = str(exc)
                    self._cond.notify_all()
            except Exception:
                log.exception("witnessing checkpoint %d failed", cp.size)

    def close(self, flush_timeout: float = 5.0) -> None:
        """Stop after trying to witness what is pending (bounded by ``flush_timeout``)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(flush_timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
        self._file.close()


def start_witnessing(tlog: TransactionLog, policy: Policy, cosigned_path: Path | None,
                     timeout_s: float) -> WitnessSubmitter:
    """Start-up of a node with witnesses: prove the log extends what witnesses cosigned, then follow it.

    Raises :class:`LogRefusedError` when the newest cosigned checkpoint on disk is not extended by
    the log, or when a witness's answer to the current checkpoint proves a rollback or fork.
    """
    path = cosigned_path or default_path(tlog.path, ".cosigned")

    def proof(old: int, new: int) -> list[bytes]:
        return list(tlog.consistency_proof(old, new).hashes)

    sub = WitnessSubmitter(policy, proof, path, timeout_s=timeout_s)
    try:
        done = sub.latest_cosigned()
        if done is not None:
            cp = done[0]
            if cp.size > tlog.size() or tlog.root(cp.size) != cp.root_hash:
                raise LogRefusedError(
                    f"{path}: witnesses cosigned a checkpoint of {cp.size} entries that {tlog.path} "
                    f"({tlog.size()} entries) does not extend: the log was rolled back or rewritten. "
                    "Restore it from a replica or backup holding that checkpoint's tree.")
        try:
            count, problems = sub.witness_round(tlog.latest_checkpoint())
            if count < policy.quorum:
                log.warning("start-up witnessing: %d of %d cosignatures (%s)", count, policy.quorum,
                            "; ".join(problems))
        except WitnessRefusal as exc:
            raise LogRefusedError(f"refusing to start: {exc}. Restore the log from a replica or backup that "
                                  "extends what the witnesses cosigned.") from exc
    except BaseException:
        sub.close(0)
        raise
    tlog.add_publish_hook(sub.offer)
    return sub
