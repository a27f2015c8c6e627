"""The transparency policy file: which log keys, which witnesses, how many cosignatures.

Format (one directive per line, ``#`` starts a comment)::

    log <log vkey>                  # one or more; oldest first when the key was rotated
    witness <witness vkey> [<url>]  # cosignature/v1 Ed25519 key; URL of its add-checkpoint prefix
    quorum <n>                      # distinct witnesses whose cosignature is required (default: all)

A checkpoint satisfies the policy when a log key signed it (the newest such key
in ring order) and at least ``quorum`` distinct listed witnesses cosigned it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ciphercare.ledger.api import Checkpoint
from ciphercare.ledger.transparency.checkpoint import CheckpointError, CheckpointKeyring
from ciphercare.ledger.witness.cosignature import Cosignature, CosignatureError, CosignatureVerifier, split_note


class PolicyError(ValueError):
    """The policy file is malformed, or a checkpoint does not satisfy the policy."""


@dataclass(frozen=True)
class Witness:
    verifier: CosignatureVerifier
    url: str = ""

    @property
    def name(self) -> str:
        return self.verifier.name


@dataclass
class Policy:
    """Log keys (oldest first), witnesses and quorum."""

    log_keys: CheckpointKeyring
    witnesses: list[Witness] = field(default_factory=list)
    quorum: int = 0
    source: str = ""

    @classmethod
    def parse(cls, text: str, source: str = "<policy>") -> Policy:
        log_vkeys: list[str] = []
        witnesses: list[Witness] = []
        quorum: int | None = None
        for no, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            words = line.split()
            where = f"{source} line {no}"
            try:
                if words[0] == "log" and len(words) == 2:
                    log_vkeys.append(words[1])
                elif words[0] == "witness" and len(words) in (2, 3):
                    witnesses.append(Witness(CosignatureVerifier.from_vkey(words[1]),
                                             words[2] if len(words) == 3 else ""))
                elif words[0] == "quorum" and len(words) == 2 and words[1].isdigit():
                    quorum = int(words[1])
                else:
                    raise PolicyError(f"{where}: expected 'log <vkey>', 'witness <vkey> [url]' or 'quorum <n>'")
            except ValueError as exc:
                if isinstance(exc, PolicyError):
                    raise
                raise PolicyError(f"{where}: {exc}") from exc
        if not log_vkeys:
            raise PolicyError(f"{source}: no 'log <vkey>' line")
        names = [w.name for w in witnesses]
        if len(set(names)) != len(names):
            raise PolicyError(f"{source}: a witness is listed twice")
        if quorum is None:
            quorum = len(witnesses)
        if quorum > len(witnesses):
            raise PolicyError(f"{source}: quorum {quorum} exceeds the {len(witnesses)} witnesses listed")
        try:
            keyring = CheckpointKeyring.from_vkeys(log_vkeys)
        except ValueError as exc:
            raise PolicyError(f"{source}: bad log key: {exc}") from exc
        return cls(keyring, witnesses, quorum, source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Policy:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"cannot read policy file {p}: {exc}") from exc
        return cls.parse(text, str(p))

    def render(self) -> str:
        lines = ["# ciphercare transparency policy (docs/TRANSPARENCY.md)"]
        lines += [f"log {v}" for v in self.log_keys.vkeys]
        lines += [f"witness {w.verifier.vkey}" + (f" {w.url}" if w.url else "") for w in self.witnesses]
        lines.append(f"quorum {self.quorum}")
        return "\n".join(lines) + "\n"

    def cosignatures(self, note: bytes) -> list[Cosignature]:
        """The valid cosignatures on ``note`` by listed witnesses (one per witness)."""
        body, lines = split_note(note)
        found: list[Cosignature] = []
        for w in self.witnesses:
            for line in lines:
                if w.verifier.matches(line):
                    try:
                        found.append(w.verifier.verify_line(body, line))
                        break
                    except CosignatureError:
                        continue
        return found

    def verify(self, note: bytes | str, origin: str | None = None) -> tuple[Checkpoint, list[Cosignature]]:
        """Check the log signature and the witness quorum; raises :class:`PolicyError` saying what is missing."""
        data = note.encode("utf-8") if isinstance(note, str) else bytes(note)
        try:
            cp = self.log_keys.verify(data, origin=origin)
        except CheckpointError as exc:
            raise PolicyError(f"log signature: {exc}") from exc
        try:
            cosigs = self.cosignatures(data)
        except CosignatureError as exc:
            raise PolicyError(str(exc)) from exc
        if len(cosigs) < self.quorum:
            have = ", ".join(c.name for c in cosigs) or "none"
            raise PolicyError(
                f"checkpoint of size {cp.size} has {len(cosigs)} valid witness cosignature(s) ({have}); "
                f"the policy requires {self.quorum}"
            )
        return cp, cosigs


def merge_cosignatures(note: bytes, lines: list[str]) -> bytes:
    """``note`` with the signature ``lines`` appended (each line without or with its newline)."""
    extra = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return note + extra.encode("utf-8")
