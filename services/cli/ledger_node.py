"""``ciphercare ledger serve``: the embedded ledger as a Fabric Gateway node (ledger/gateway_server.py)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any


class _Refused(Exception):
    """A configuration problem: one line on stderr, exit code 1 (as the CLI's CliError)."""


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Refused(f"cannot read {what} {path}: {exc.strerror}") from exc


def cmd_ledger_serve(args: argparse.Namespace) -> int:
    # Handled here: CliError may be a second copy of the class when the CLI runs as ``python -m``.
    try:
        return _serve(args)
    except _Refused as exc:
        print(f"ciphercare: {exc}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    import logging

    from pydantic import ValidationError

    from ciphercare.ledger.embedded.gateway_server import MspRegistry, NodeTLS, org_msp_ids, start_node
    from ciphercare.services.platform.settings import load_settings

    extra: dict[str, Any] = {"ledger_backend": "embedded"}
    if args.port is not None:
        extra["ledger_node_port"] = args.port
    if getattr(args, "data_dir", None):
        extra["data_dir"] = Path(args.data_dir)
    try:
        settings = load_settings(**extra)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _Refused(f"invalid setting {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from exc
    from ciphercare.services.platform.logs import configure_logging

    # JSON lines only, as every component (the Fabric shim sets the root logger to DEBUG at import)
    configure_logging(settings, level=logging.WARNING)
    tls = None
    cert = _read(settings.ledger_node_tls_cert_path, "TLS certificate")
    key = _read(settings.ledger_node_tls_key_path, "TLS key")
    if (cert is None) != (key is None):
        raise _Refused("TLS needs both CIPHERCARE_LEDGER_NODE_TLS_CERT_PATH and CIPHERCARE_LEDGER_NODE_TLS_KEY_PATH")
    if cert is not None and key is not None:
        tls = NodeTLS(cert, key, _read(settings.ledger_node_tls_client_ca_path, "TLS client CA"))
    from ciphercare.ledger.fabric.gateway import is_loopback

    if tls is None and not is_loopback(f"{settings.ledger_node_host}:0"):
        raise _Refused(
            f"listening on {settings.ledger_node_host} needs TLS (CIPHERCARE_LEDGER_NODE_TLS_CERT_PATH and "
            "CIPHERCARE_LEDGER_NODE_TLS_KEY_PATH); plaintext only on a loopback address"
        )
    from ciphercare.services.privacy.operations import LedgerOwnerLock

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = LedgerOwnerLock(settings.resolved_ledger_path)
    except Exception as exc:  # noqa: BLE001 - one readable line
        raise _Refused(str(exc)) from exc
    from ciphercare.services.platform.telemetry.metrics import Metrics
    from ciphercare.services.platform.wiring import open_embedded_ledger

    msp_dir = settings.resolved_ledger_msp_dir
    try:  # the same integrity settings as `up`: published checkpoints, retired keys, key mode, witnesses
        ledger = open_embedded_ledger(settings, channel=settings.ledger_channel,
                                      chaincode_name=settings.ledger_chaincode, msp_dir=msp_dir)
    except Exception as exc:  # noqa: BLE001 - a refused start (rolled-back log, bad key mode ...): one line
        lock.release()
        raise _Refused(f"the ledger did not open: {exc}") from exc
    metrics_server: Any = None
    metrics_note = ""
    if settings.metrics_enabled:
        metrics = Metrics()
        metrics.observe_ledger(ledger.stats, ledger.size, dict)
        if ledger.witnessing is not None:
            metrics.observe_witnessing(ledger.witnessing)
        try:
            metrics_server, metrics_port = metrics.serve(settings.metrics_host, settings.metrics_port)
            metrics_note = f", /metrics on {settings.metrics_host}:{metrics_port}"
        except OSError as exc:  # the node stays up without /metrics; say so
            print(f"ciphercare: /metrics not started on port {settings.metrics_port}: {exc.strerror}",
                  file=sys.stderr)

    async def run() -> None:
        server, port, gateway = await start_node(
            ledger,
            MspRegistry(msp_dir),
            host=settings.ledger_node_host,
            port=settings.ledger_node_port,
            tls=tls,
            max_message_bytes=settings.grpc_max_message_bytes,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"ledger node: gateway.Gateway on {settings.ledger_node_host}:{port} "
            f"({'TLS' if tls else 'plaintext'}), channel {settings.ledger_channel}, "
            f"chaincode {settings.ledger_chaincode}, MSPs {', '.join(org_msp_ids(msp_dir)) or '(none yet)'}"
            f"{metrics_note}",
            flush=True,
        )
        await stop.wait()
        gateway.stop()
        await server.stop(grace=2.0)

    try:
        asyncio.run(run())
    finally:
        if metrics_server is not None:
            http_server, thread = metrics_server
            http_server.shutdown()
            http_server.server_close()
            thread.join(5)
        ledger.close()
        lock.release()
    print("ledger node stopped", file=sys.stderr)
    return 0


def register_ledger_serve(ledger_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``ledger serve`` under the ``ledger`` command."""
    serve = ledger_sub.add_parser("serve", help="run the embedded ledger as a Fabric Gateway node (gRPC)")
    serve.add_argument("--port", type=int, help="gRPC port (default CIPHERCARE_LEDGER_NODE_PORT, 7051; 0 = any)")
    serve.set_defaults(func=cmd_ledger_serve)
