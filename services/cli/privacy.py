"""`ciphercare` subcommands of the privacy room (registered by services/cli/main.py).

* ``patient erase <pid>`` -- right to erasure: record it on the ledger, destroy the patient's data key.
* ``store check [--no-repair] [--json]`` -- the off-chain store against the ledger (what every start logs).
* ``store rotate-kek [--destroy-old]`` -- re-wrap every data key under a new key-encryption key.

With the embedded ledger these run while the server is stopped (one process owns the ledger file;
they say so and exit 1 otherwise). Exit codes: 0 success, 1 failure (one line on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any


class PrivacyCliError(Exception):
    """A failure worth one line on stderr and exit code 1."""


def _fail(message: str) -> Exception:
    return PrivacyCliError(message)


def _one_line_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Exit 1 with one line on stderr for this room's errors (also when cli.py runs as ``__main__``)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except PrivacyCliError as exc:
            print(f"ciphercare: {exc}", file=sys.stderr)
            return 1

    return run


def _settings(args: argparse.Namespace) -> Any:
    """Settings, and JSON logging of warnings and errors only (the command prints its own result)."""
    from ciphercare.services.cli.main import _settings as cli_settings
    from ciphercare.services.platform.logs import configure_logging

    try:
        settings = cli_settings(args)
    except Exception as exc:
        if type(exc).__name__ == "CliError":  # cli.py's, possibly from its __main__ copy
            raise PrivacyCliError(str(exc)) from exc
        raise
    configure_logging(settings, level=logging.WARNING)
    return settings


def _owner_lock(settings: Any) -> Any:
    from ciphercare.services.privacy.operations import LedgerInUseError, ledger_owner_lock

    try:
        return ledger_owner_lock(settings)
    except LedgerInUseError as exc:
        raise _fail(f"{exc}; stop it first") from exc


@_one_line_errors
def cmd_patient_erase(args: argparse.Namespace) -> int:
    settings = _settings(args)  # first: logging is configured before heavy imports log anything
    from ciphercare.ledger.api import LedgerError
    from ciphercare.services.platform.gateway import embedded_handles
    from ciphercare.services.platform.wiring import open_ledger
    from ciphercare.services.privacy.operations import ErasureError, erase_patient, open_offchain_store
    from ciphercare.services.store.envelope import CryptoError

    lock = _owner_lock(settings)
    try:
        ledger = open_ledger(settings)
        try:
            store = open_offchain_store(settings)
            try:
                result = erase_patient(embedded_handles(ledger), store, args.pid, purpose=args.purpose,
                                       timeout_s=settings.ledger_submit_timeout_s)
            finally:
                store.close()
        finally:
            ledger.close()
    except (ErasureError, CryptoError) as exc:
        raise _fail(str(exc)) from exc
    except LedgerError as exc:
        raise _fail(f"the ledger refused the erasure: {exc}") from exc
    finally:
        if lock is not None:
            lock.release()
    print(f"patient {result.pid} erased: ledger seq {result.seq} tx {result.tx_id} event {result.event_id}; "
          f"data key destroyed ({result.keys_destroyed}), {result.documents_shredded} documents shredded")
    return 0


@_one_line_errors
def cmd_store_check(args: argparse.Namespace) -> int:
    settings = _settings(args)  # first: logging is configured before heavy imports log anything
    from ciphercare.services.platform.gateway import embedded_handles
    from ciphercare.services.platform.wiring import open_ledger
    from ciphercare.services.privacy.operations import open_offchain_store
    from ciphercare.services.store.consistency import check_store

    lock = _owner_lock(settings)
    try:
        ledger = open_ledger(settings)
        try:
            store = open_offchain_store(settings)
            try:
                report = check_store(embedded_handles(ledger), store, full=True, orphan_grace_s=settings.orphan_grace_s,
                                     repair=not args.no_repair)
            finally:
                store.close()
        finally:
            ledger.close()
    finally:
        if lock is not None:
            lock.release()
    if args.json:
        print(json.dumps({**asdict(report), "ok": report.ok}, indent=2, sort_keys=True))
    else:
        fields = report.log_fields()
        print(("store OK: " if report.ok else "store NOT OK: ")
              + ", ".join(f"{k}={v}" for k, v in fields.items() if k not in ("mode", "ok") and v))
        for line in report.missing:
            print(f"  missing document: {line}")
    return 0 if report.ok else 1


@_one_line_errors
def cmd_store_rotate_kek(args: argparse.Namespace) -> int:
    settings = _settings(args)  # first: logging is configured before heavy imports log anything
    from ciphercare.services.privacy.operations import open_offchain_store
    from ciphercare.services.store.envelope import CryptoError, KeyEncryptionKey

    lock = _owner_lock(settings)
    path: Path = settings.resolved_kek_path
    try:
        if not path.exists():
            raise _fail(f"no key-encryption key at {path}")
        store = open_offchain_store(settings)
        try:
            old = store.kek
            new = KeyEncryptionKey.generate()
            staged = path.with_name(path.name + ".new")
            if staged.exists():
                staged.unlink()
            new.write_new(staged)
            try:
                count = store.rotate_kek(new)
            except CryptoError as exc:
                staged.unlink()
                raise _fail(str(exc)) from exc
        finally:
            store.close()
        retired = path.with_name(f"{path.name}.retired-{old.kek_id}") if old is not None else None
        if retired is not None:
            os.replace(path, retired)
        os.replace(staged, path)
        if args.destroy_old and retired is not None:
            with open(retired, "r+b") as handle:
                handle.write(b"\0" * retired.stat().st_size)
                handle.flush()
                os.fsync(handle.fileno())
            retired.unlink()
    finally:
        if lock is not None:
            lock.release()
    where = "destroyed" if args.destroy_old else f"kept at {retired} (destroy it to make older backups unreadable)"
    print(f"key-encryption key rotated: {count} data keys re-wrapped under {new.kek_id}; old key {where}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this room's subcommands to the top-level parser."""
    patient = sub.add_parser("patient", help="patient data rights")
    patient_sub = patient.add_subparsers(dest="patient_command", required=True)
    erase = patient_sub.add_parser(
        "erase", help="right to erasure: record it on the ledger, destroy the patient's data key (crypto-shredding)")
    erase.add_argument("pid", help="the patient's pseudonym")
    erase.add_argument("--purpose", default="PATRQT", choices=["PATRQT", "HLEGAL"],
                       help="why: patient request (default) or legal requirement")
    erase.set_defaults(func=cmd_patient_erase)

    store = sub.add_parser("store", help="off-chain store")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    check = store_sub.add_parser("check", help="check the off-chain store against the ledger and repair it")
    check.add_argument("--no-repair", action="store_true",
                       help="only report (default: re-project gaps, delete expired orphans and unreadable leftovers)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=cmd_store_check)
    rotate = store_sub.add_parser("rotate-kek", help="re-wrap every data key under a new key-encryption key")
    rotate.add_argument("--destroy-old", action="store_true", help="overwrite and delete the old key afterwards")
    rotate.set_defaults(func=cmd_store_rotate_kek)
