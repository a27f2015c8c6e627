"""``ciphercare witness serve``: a C2SP tlog-witness (HTTP ``POST <prefix>/add-checkpoint``).

The witness keeps, per log origin, the latest checkpoint it cosigned, in a JSON state
file replaced atomically (write, fsync, rename, fsync directory) before it answers.
Checking the old size and recording the new checkpoint happen under one lock, so two
concurrent requests cannot roll its state back (the race the spec describes).

Answers, as the spec says:

* 200 + cosignature line(s): the checkpoint is signed by the log's key and consistent with
  the last cosigned one (or the first one seen);
* 400 malformed request, or old size > checkpoint size;  404 unknown origin;
  403 no valid signature by a trusted log key;
* 409 + ``text/x.tlog.size`` body ``<stored size>\\n``: the old size is not the size it last
  cosigned, or the same size with a different root (a fork);
* 422 the consistency proof does not verify (the log was rewritten).

Refusals with a valid log signature are appended to ``evidence.log`` (they may prove misbehaviour).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ciphercare.ledger.transparency.checkpoint import CheckpointError, CheckpointKeyring
from ciphercare.ledger.transparency.merkle import HASH_SIZE, ProofError, check_consistency
from ciphercare.ledger.witness.cosignature import WitnessSigner

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, content type, body."""

    status: int
    content_type: str
    body: bytes

    @classmethod
    def text(cls, status: int, message: str) -> Answer:
        return cls(status, "text/plain; charset=utf-8", (message.rstrip("\n") + "\n").encode())


def parse_request(body: bytes) -> tuple[int, list[bytes], bytes]:
    """``(old size, proof hashes, checkpoint note)`` of an add-checkpoint body; raises ValueError."""
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise ValueError("request has no empty line before the checkpoint")
    lines = head.split(b"\n")
    first = lines[0]
    if not first.startswith(b"old "):
        raise ValueError("request must start with 'old <size>'")
    size_text = first[4:]
    if not size_text.isdigit() or (len(size_text) > 1 and size_text[:1] == b"0"):
        raise ValueError("old size is not a canonical decimal")
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise ValueError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof: list[bytes] = []
    for line in proof_lines:
        try:
            h = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a consistency proof line is not base64") from exc
        if len(h) != HASH_SIZE:
            raise ValueError("a consistency proof line is not a 32-byte hash")
        proof.append(h)
    if not note:
        raise ValueError("request has no checkpoint")
    return int(size_text), proof, note


def request_body(old_size: int, proof: list[bytes], note: bytes) -> bytes:
    """Build an add-checkpoint body (used by the client and the tests)."""
    lines = [f"old {old_size}".encode()] + [base64.b64encode(h) for h in proof]
    return b"\n".join(lines) + b"\n\n" + note


class WitnessState:
    """Latest cosigned checkpoint per origin, durably in ``state.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self._data: dict[str, dict[str, object]] = {}
        if path.exists():
            self._data = json.loads(path.read_text(encoding="utf-8"))

    def get(self, origin: str) -> tuple[int, bytes] | None:
        rec = self._data.get(origin)
        if rec is None:
            return None
        return int(rec["size"]), base64.b64decode(str(rec["root"]))  # type: ignore[call-overload]

    def put(self, origin: str, size: int, root: bytes, note: bytes) -> None:
        data = dict(self._data)
        data[origin] = {"size": size, "root": base64.b64encode(root).decode(),
                        "note": base64.b64encode(note).decode(), "at": int(time.time())}
        raw = json.dumps(data, sort_keys=True, indent=1).encode()
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=str(self.path.parent))
        try:
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(str(self.path.parent), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._data = data


class Witness:
    """The witness logic, independent of HTTP."""

    def __init__(self, data_dir: str | os.PathLike[str], name: str, logs: dict[str, CheckpointKeyring],
                 alg: str = "ed25519") -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.signer = WitnessSigner(self.dir / f"witness-{alg}.pem", name, alg)
        self.logs = dict(logs)
        self.state = WitnessState(self.dir / "state.json")
        self._evidence = self.dir / "evidence.log"

    @property
    def vkey(self) -> str:
        return self.signer.vkey

    def _record_evidence(self, status: int, reason: str, body: bytes) -> None:
        line = json.dumps({"at": int(time.time()), "status": status, "reason": reason,
                           "request_b64": base64.b64encode(body).decode()})
        with open(self._evidence, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def add_checkpoint(self, body: bytes) -> Answer:
        """Handle one add-checkpoint request body."""
        try:
            old, proof, note = parse_request(body)
        except ValueError as exc:
            return Answer.text(400, f"bad request: {exc}")
        origin = note.split(b"\n", 1)[0].decode("utf-8", errors="replace")
        keyring = self.logs.get(origin)
        if keyring is None:
            return Answer.text(404, f"unknown log origin {origin!r}")
        try:
            cp = keyring.verify(note, origin=origin)
        except CheckpointError as exc:
            return Answer.text(403, f"no valid signature by a trusted key of {origin}: {exc}")
        if old > cp.size:
            return Answer.text(400, f"old size {old} is larger than the checkpoint size {cp.size}")
        with self.state.lock:
            stored = self.state.get(origin)
            stored_size = stored[0] if stored else 0
            if old != stored_size:
                if cp.size < stored_size:
                    self._record_evidence(409, f"checkpoint {cp.size} is older than cosigned {stored_size}", body)
                return Answer(409, SIZE_CONTENT_TYPE, f"{stored_size}\n".encode())
            if stored is not None and cp.size == stored_size:
                if cp.root_hash != stored[1]:
                    self._record_evidence(409, f"different root for cosigned size {stored_size} (fork)", body)
                    return Answer(409, SIZE_CONTENT_TYPE, f"{stored_size}\n".encode())
            elif old == 0:
                if proof:
                    return Answer.text(422, "the consistency proof must be empty when the old size is 0")
            else:
                assert stored is not None
                try:
                    check_consistency(old, cp.size, proof, stored[1], cp.root_hash)
                except ProofError as exc:
                    self._record_evidence(422, f"inconsistent with cosigned {old}: {exc}", body)
                    return Answer.text(422, f"not consistent with the checkpoint cosigned at size {old}: {exc}")
            self.state.put(origin, cp.size, cp.root_hash, note)
            body_end = note.rfind(b"\n\n")
            line = self.signer.cosign(note[: body_end + 1])
        return Answer(200, "text/plain; charset=utf-8", line.encode())


class _Handler(BaseHTTPRequestHandler):
    server: WitnessHTTPServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; on a kept-alive connection Nagle + delayed ACK would hold
        # the body back ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if self.path.rstrip("/") != self.server.prefix + "/add-checkpoint":
            self._send(Answer.text(404, "not found"))
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(Answer.text(411, "Content-Length required"))
            return
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self._send(Answer.text(413, f"request body over {MAX_BODY} bytes"))
            return
        body = self.rfile.read(length)
        try:
            answer = self.server.witness.add_checkpoint(body)
        except Exception:  # never a traceback to the client
            log.exception("add-checkpoint failed")
            answer = Answer.text(500, "internal error")
        self._send(answer)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path.rstrip("/") == self.server.prefix + "/vkey":
            self._send(Answer.text(200, self.server.witness.vkey))
            return
        self._send(Answer.text(404, "not found"))


class WitnessHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], witness: Witness, prefix: str = "") -> None:
        super().__init__(address, _Handler)
        self.witness = witness
        self.prefix = prefix.rstrip("/")
