"""`ciphercare chaincode serve`: the contracts as an external chaincode service (registered by services/cli.py).

Configured the Fabric way, by ``CHAINCODE_ID``, ``CHAINCODE_SERVER_ADDRESS`` and the ``CHAINCODE_TLS_*`` /
``CHAINCODE_CLIENT_CA_CERT`` variables (see :mod:`ciphercare.consent.server`), not by ``CIPHERCARE_*``
settings: the same variables configure the chaincode container, which ships the consent package alone.
Exit codes: 0 after SIGINT/SIGTERM, 2 for an incomplete configuration, 1 without the server extra (one
line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any


def cmd_chaincode_serve(args: argparse.Namespace) -> int:
    try:
        from ciphercare.consent.server import (
            ChaincodeConfigError,
            ChaincodeServerConfig,
            quiet_shim_logging,
            serve,
        )
    except ModuleNotFoundError as exc:  # a plain (SDK) install has no chaincode runtime
        print(f"ciphercare: chaincode serve needs the server extra (pip install 'ciphercare[server]'): {exc}",
              file=sys.stderr)
        return 1

    try:
        config = ChaincodeServerConfig.from_environ(os.environ)
    except ChaincodeConfigError as exc:
        print(f"ciphercare: {exc}", file=sys.stderr)
        return 2
    quiet_shim_logging()
    asyncio.run(serve(config))
    return 0


def register(sub: Any) -> None:
    """Add ``chaincode serve`` to the top-level subcommands."""
    chaincode = sub.add_parser("chaincode", help="chaincode as a service (Fabric external chaincode)")
    chaincode_sub = chaincode.add_subparsers(dest="chaincode_command", required=True)
    serve = chaincode_sub.add_parser(
        "serve",
        help="serve the contracts to Fabric peers (CHAINCODE_ID, CHAINCODE_SERVER_ADDRESS, CHAINCODE_TLS_*)",
    )
    serve.set_defaults(func=cmd_chaincode_serve)
