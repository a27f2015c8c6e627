"""`ciphercare receipt verify`: check a portal/console receipt offline (registered by services/cli/main.py)."""

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
    for line in check.problems:
        print(f"  BAD {line}", file=sys.stderr)
    print("receipt OK" if check.ok else "receipt NOT verified", file=sys.stdout if check.ok else sys.stderr)
    return 0 if check.ok else 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``receipt verify`` to the top-level parser."""
    receipt = sub.add_parser("receipt", help="proof receipts from the web portal and console")
    receipt_sub = receipt.add_subparsers(dest="receipt_command", required=True)
    verify = receipt_sub.add_parser("verify", help="verify a receipt offline (signature, inclusion proof, leaf)")
    verify.add_argument("file", help="the receipt JSON file")
    verify.add_argument("--vkey", default=None, help="the log's verifier key you trust (default: the receipt's own)")
    verify.set_defaults(func=cmd_receipt_verify)
