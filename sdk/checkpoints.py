"""Clients that remember: the last checkpoint this client verified, per log, kept on disk.

Every check fetches the served checkpoint, verifies the log's signature (and, with a
policy, the witness quorum), and then compares it with the remembered one:

* same size, same root: nothing new;
* larger: the server must prove consistency (RFC 9162) from the remembered size;
* smaller (a rollback), same size with another root (a fork), or a proof that fails or is
  refused: :class:`RollbackError`, carrying BOTH signed notes as evidence.

The store is one small JSON file per log origin under a directory (atomic replace, 0600),
so the SDK and the ``ciphercare`` CLI keep it between runs.  The web portal and console keep
the same record in the session (services/web).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from ciphercare.ledger.api import Checkpoint
from ciphercare.ledger.transparency.checkpoint import CheckpointError, CheckpointKeyring
from ciphercare.ledger.transparency.merkle import ProofError as MerkleProofError
from ciphercare.ledger.transparency.merkle import check_consistency
from ciphercare.v1 import access_log_pb2

if TYPE_CHECKING:
    from ciphercare.ledger.witness.policy import Policy
    from ciphercare.sdk.client import CiphercareClient

#: gRPC codes with which a server refuses a consistency proof it should be able to give.
_UNPROVABLE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
               grpc.StatusCode.OUT_OF_RANGE}


class CheckpointCheckError(Exception):
    """The served checkpoint does not verify (log signature or witness quorum)."""


class RollbackError(Exception):
    """The log served now does not extend the one this client verified before: rollback or fork.

    ``remembered`` and ``served`` are the two signed notes: together they are the evidence.
    """

    def __init__(self, message: str, remembered: bytes, served: bytes) -> None:
        super().__init__(message)
        self.remembered = remembered
        self.served = served

    def evidence(self) -> dict[str, Any]:
        return {"problem": str(self), "remembered_checkpoint": self.remembered.decode("utf-8", "replace"),
                "served_checkpoint": self.served.decode("utf-8", "replace")}


@dataclass(frozen=True)
class Remembered:
    """A checkpoint this client verified (its note includes any cosignature lines)."""

    origin: str
    size: int
    root_hash: bytes
    note: bytes
    verified_at: float


class CheckpointStore:
    """One JSON file per log origin under ``directory``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)

    def _path(self, origin: str) -> Path:
        return self.dir / (hashlib.sha256(origin.encode()).hexdigest()[:32] + ".json")

    def load(self, origin: str) -> Remembered | None:
        path = self._path(origin)
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return Remembered(data["origin"], int(data["size"]), base64.b64decode(data["root_hash"]),
                          base64.b64decode(data["note"]), float(data["verified_at"]))

    def save(self, item: Remembered) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        raw = json.dumps({"origin": item.origin, "size": item.size,
                          "root_hash": base64.b64encode(item.root_hash).decode(),
                          "note": base64.b64encode(item.note).decode(), "verified_at": item.verified_at},
                         indent=1).encode()
        fd, tmp = tempfile.mkstemp(prefix=".cp-", dir=str(self.dir))
        try:
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path(item.origin))


@dataclass(frozen=True)
class CheckResult:
    """What :meth:`CheckpointMemory.check` established."""

    checkpoint: Checkpoint
    previous: Remembered | None
    witnesses: tuple[str, ...]
    status: str  # "first", "unchanged", "extended"


class CheckpointMemory:
    """Verifies served checkpoints against the log keys / policy and what this client saw before."""

    def __init__(self, keyring: CheckpointKeyring, *, policy: Policy | None = None,
                 store: CheckpointStore | None = None) -> None:
        self.keyring = policy.log_keys if policy is not None else keyring
        self.policy = policy
        self.store = store
        self._session: dict[str, Remembered] = {}

    def seed(self, item: Remembered) -> None:
        """Start from a checkpoint verified earlier (the web keeps it in the session)."""
        self._session[item.origin] = item

    def remembered(self, origin: str) -> Remembered | None:
        if self.store is not None:
            stored = self.store.load(origin)
            if stored is not None:
                return stored
        return self._session.get(origin)

    def _remember(self, item: Remembered) -> None:
        self._session[item.origin] = item
        if self.store is not None:
            self.store.save(item)

    def verify_note(self, note: bytes) -> tuple[Checkpoint, tuple[str, ...]]:
        """Log signature, and the witness quorum when a policy is set."""
        if self.policy is not None:
            from ciphercare.ledger.witness.policy import PolicyError

            try:
                cp, cosigs = self.policy.verify(note)
            except PolicyError as exc:
                raise CheckpointCheckError(str(exc)) from exc
            return cp, tuple(c.name for c in cosigs)
        try:
            return self.keyring.verify(note), ()
        except CheckpointError as exc:
            raise CheckpointCheckError(f"checkpoint signature: {exc}") from exc

    def check_note(self, note: bytes, prove: Any) -> CheckResult:
        """Check ``note`` against memory; ``prove(first, second)`` returns consistency-proof hashes."""
        cp, witnesses = self.verify_note(note)
        prev = self.remembered(cp.origin)
        status = "first"
        if prev is not None:
            if cp.size < prev.size:
                raise RollbackError(f"rollback: the log now presents {cp.size} entries, but this client verified "
                                    f"{prev.size} before", prev.note, note)
            if cp.size == prev.size:
                if cp.root_hash != prev.root_hash:
                    raise RollbackError(f"fork: two different signed trees of size {cp.size}", prev.note, note)
                status = "unchanged"
            else:
                try:
                    hashes = prove(prev.size, cp.size)
                    check_consistency(prev.size, cp.size, hashes, prev.root_hash, cp.root_hash)
                except MerkleProofError as exc:
                    raise RollbackError(f"fork: the log of {cp.size} entries does not extend the verified "
                                        f"{prev.size}: {exc}", prev.note, note) from exc
                except grpc.RpcError as exc:
                    if exc.code() not in _UNPROVABLE:  # type: ignore[attr-defined]
                        raise
                    raise RollbackError(f"the server cannot prove that {cp.size} entries extend the verified "
                                        f"{prev.size}: {exc.details()}", prev.note, note) from exc  # type: ignore[attr-defined]
                status = "extended"
        self._remember(Remembered(cp.origin, cp.size, cp.root_hash, note, time.time()))
        return CheckResult(cp, prev, witnesses, status)

    def check(self, client: CiphercareClient) -> CheckResult:
        """Fetch the served checkpoint (the cosigned one with a quorum policy) and check it."""
        cosigned = self.policy is not None and self.policy.quorum > 0
        response = client.call(client.access_log.GetCheckpoint,
                               access_log_pb2.GetCheckpointRequest(cosigned=cosigned))
        note = served_note(response)

        def prove(first: int, second: int) -> list[bytes]:
            proof = client.call(client.access_log.GetConsistencyProof, access_log_pb2.GetConsistencyProofRequest(
                first_tree_size=first, second_tree_size=second))
            if (proof.first_tree_size, proof.second_tree_size) != (first, second):
                raise MerkleProofError("the proof is for other tree sizes than asked")
            return list(proof.hashes)

        return self.check_note(note, prove)


def served_note(response: access_log_pb2.GetCheckpointResponse) -> bytes:
    """The served checkpoint's signed note with its cosignature lines appended."""
    extra = "".join(line.rstrip("\n") + "\n" for line in response.cosignatures)
    return response.checkpoint.signed_note.encode("utf-8") + extra.encode("utf-8")
