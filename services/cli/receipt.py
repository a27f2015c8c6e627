"""`ciphercare receipt verify` checks a portal/console receipt offline; `ciphercare receipt vkey` prints the
log's verifier key on the ledger host, for clients to pin (registered by services/cli/main.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_receipt_verify(args: argparse.Namespace) -> int:
    from ciphercare.sdk.receipts import ReceiptError, verify_receipt

    try:
        receipt = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"ciphercare: cannot read receipt {args.file}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(receipt, dict):
        print("ciphercare: a receipt is a JSON object", file=sys.stderr)
        return 1
    try:
        if receipt.get("kind") == "access-event-batched":  # scoreperf (issue 16): one member of an access batch
            from ciphercare.sdk.batch_receipts import verify_batch_receipt

            check = verify_batch_receipt(receipt, args.vkey)
        else:
            check = verify_receipt(receipt, args.vkey)
    except ReceiptError as exc:
        print(f"receipt BAD: {exc}", file=sys.stderr)
        return 1
    for line in check.checks:
        print(f"  ok  {line}")
    for line in check.warnings:
        print(f"  WARNING {line}", file=sys.stderr)
    for line in check.problems:
        print(f"  BAD {line}", file=sys.stderr)
    print("receipt OK" if check.ok else "receipt NOT verified", file=sys.stdout if check.ok else sys.stderr)
    return 0 if check.ok else 1


def cmd_receipt_vkey(args: argparse.Namespace) -> int:
    """Print the verifier key of the ledger's checkpoint signing key (run where the key is)."""
    from ciphercare.ledger.transparency.checkpoint import CheckpointSigner
    from ciphercare.services.platform.settings import load_settings

    overrides: dict[str, object] = {}
    if args.data_dir:
        overrides["data_dir"] = Path(args.data_dir)
    settings = load_settings(**overrides)
    key_path = settings.resolved_ledger_key_path
    if not key_path.exists():
        print(f"ciphercare: no checkpoint signing key at {key_path}", file=sys.stderr)
        return 1
    print(CheckpointSigner.load(key_path, settings.ledger_origin).vkey)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``receipt verify`` to the top-level parser."""
    receipt = sub.add_parser("receipt", help="proof receipts from the web portal and console")
    receipt_sub = receipt.add_subparsers(dest="receipt_command", required=True)
    verify = receipt_sub.add_parser("verify", help="verify a receipt offline (signature, inclusion proof, leaf)")
    verify.add_argument("file", help="the receipt JSON file")
    verify.add_argument("--vkey", default=None,
                        help="the log's verifier key you pinned (without it the receipt's own key is used, with a "
                             "warning: that proves only self-consistency)")
    verify.set_defaults(func=cmd_receipt_verify)
    vkey = receipt_sub.add_parser("vkey", help="print the ledger's verifier key (on the ledger host) for clients "
                                               "to pin")
    vkey.add_argument("--data-dir", default=None, help="the server's data directory (default: the setting)")
    vkey.set_defaults(func=cmd_receipt_vkey)
