"""The ``ciphercare`` command line.

Exit codes: 0 success, 1 the operation failed (one readable line on stderr),
2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ciphercare.services.platform.settings import Settings, load_settings

COMMAND_MODULES = (
    "ciphercare.services.cli.scoring",
    "ciphercare.services.cli.privacy",
    "ciphercare.services.cli.receipt",
    "ciphercare.services.cli.integrity",  # witness serve / vkey (issue 11)
    "ciphercare.services.cli.chaincode",  # fabric-network (issue 13 item 4): `chaincode serve`
    "ciphercare.services.cli.audit",  # compliance (issue 15): `audit search|export|verify|flags`
    "ciphercare.services.cli.fhir",  # issue 15 item 3: `fhir import|export|audit`
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ciphercare")
    except PackageNotFoundError:  # running from a checkout without an install
        return "unknown"


class CliError(Exception):
    """A failure worth one line on stderr and exit code 1."""


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = dict(extra)
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"invalid setting {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from exc


# up ---------------------------------------------------------------------------


def _display_url(settings: Settings) -> str:
    """The database URL with any password masked (it is printed and may be logged)."""
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


def cmd_up(args: argparse.Namespace) -> int:
    from ciphercare.services.platform.logs import configure_logging

    extra: dict[str, Any] = {}
    if args.port is not None:
        extra["grpc_port"] = args.port
    settings = _settings(args, **extra)
    # JSON logging first: importing the server pulls in libraries that log (Alembic's plugins) or install a
    # plain DEBUG handler of their own (the Fabric shim) at import time.
    configure_logging(settings)
    # ledger integrity (issue 11): CIPHERCARE_DEMO_WITNESS=true starts a local witness process for the demo
    from ciphercare.services.cli.integrity import start_demo_witness
    from ciphercare.services.platform.wiring import Application
    from ciphercare.services.scoring.servicer import ensure_default_model

    # Scoring: the service never trains; `up` puts the default model in place if none is deployed (logged).
    ensure_default_model(settings)
    settings, demo_witness = start_demo_witness(settings)
    try:
        app = Application.from_settings(settings)
    except BaseException:
        if demo_witness is not None:
            demo_witness.terminate()
        raise

    async def run() -> None:
        ready = asyncio.Event()
        ports: list[int] = []
        stop = asyncio.Event()
        task = asyncio.create_task(app.serve(ready, ports, stop))
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # perf (issue 16 item 2): CIPHERCARE_GRPC_PROCESSES > 1 starts read replicas on the same port.
        from ciphercare.services.platform.replicas import start_replicas

        try:
            replicas = await start_replicas(settings, ports[0])
        except BaseException:
            stop.set()
            await task
            raise
        web = None
        if settings.web_enabled:
            from ciphercare.services.web.server import start_web

            try:
                web = await asyncio.to_thread(start_web, settings, ports[0])
            except OSError as exc:  # the gRPC services stay up without the web app
                print(f"ciphercare: web app not started: {exc}", file=sys.stderr, flush=True)
        print("ciphercare is up", flush=True)
        print(f"  gRPC (Consent, AccessLog, Scoring; health, reflection):     {settings.grpc_host}:{ports[0]}")
        if app.dev_issuer_server is not None:
            print(f"  development identity provider (OIDC, JWKS):                {settings.resolved_oidc_issuer}")
        if replicas is not None:
            print(f"  read replicas on the same port (SO_REUSEPORT):              {len(replicas.processes)} "
                  f"(pids {', '.join(map(str, replicas.pids()))})")
        print(f"  ledger (embedded, RFC 9162, Ed25519 checkpoints):           {settings.resolved_ledger_path}")
        if settings.witness_policy is not None:
            print(f"  witness policy (C2SP tlog-witness cosignatures):            {settings.witness_policy}")
        print(f"  off-chain store:                                            {_display_url(settings)}")
        if app.metrics_port:
            print(f"  metrics (Prometheus):                                       "
                  f"http://{settings.metrics_host}:{app.metrics_port}/metrics")
        if settings.tls_enabled:
            print("  TLS on gRPC" + (" (mutual)" if settings.tls_client_ca_path else "") +
                  (" and web" if settings.web_tls else ""))
        if web is not None:
            print(f"  web (patient portal, compliance console):                   {web.url}/")
        print("  try: ciphercare demo    stop: Ctrl-C", flush=True)
        try:
            await task
        finally:
            if web is not None:
                web.stop()
            if replicas is not None:
                await asyncio.to_thread(replicas.stop)

    try:
        asyncio.run(run())
    finally:
        app.close()
        if demo_witness is not None:
            demo_witness.terminate()
            demo_witness.wait(10)
    return 0


def cmd_replica(args: argparse.Namespace) -> int:
    from ciphercare.services.platform.logs import configure_logging

    settings = _settings(args, **({"grpc_port": args.port} if args.port is not None else {}))
    configure_logging(settings)
    from ciphercare.services.platform.replicas import run_replica

    return run_replica(settings)


# dev-token ----------------------------------------------------------------------


def cmd_dev_token(args: argparse.Namespace) -> int:
    from ciphercare.services.identity.devissuer import DevIssuer

    settings = _settings(args)
    if not settings.dev_issuer_enabled:
        raise CliError("the development issuer is disabled (CIPHERCARE_DEV_ISSUER_ENABLED=false)")
    issuer = DevIssuer.from_settings(settings)
    subject = args.subject or f"dev-{args.role[0]}-{args.org or args.pid or 'user'}"
    token = issuer.issue(subject=subject, roles=list(args.role), org=args.org or "", pid=args.pid,
                         ttl_s=args.ttl or settings.dev_token_ttl_s)
    print(token)
    return 0


# bench ------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from ciphercare.services.bench.runner import run_bench

    if getattr(args, "gateway", False):  # fabricgw: the Fabric Gateway protocol beside in-process
        from ciphercare.services.bench.gateway import main as gateway_bench

        return gateway_bench((["--quick"] if args.quick or args.smoke else [])
                             + (["--json", args.json] if args.json else []))
    if args.events is not None and args.events < 1:
        raise CliError("--events must be at least 1")
    rows = run_bench(args.which, quick=args.quick, smoke=args.smoke, out=Path(args.json) if args.json else None,
                     witness=args.witness, million=args.million, concrete=args.concrete,
                     events=args.events, database_url=args.database_url)
    return 0 if rows else 1


# demo --------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from ciphercare.services.cli.demo import run_demo

    settings = _settings(args)
    return run_demo(settings, target=args.target or settings.grpc_target)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from ciphercare.services.platform.wiring import open_store

    settings = _settings(args)
    open_store(settings).close()
    print(f"off-chain store at head: {settings.resolved_database_url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ciphercare", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--data-dir", help="state directory for the embedded defaults (CIPHERCARE_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start every service on localhost with the configured defaults")
    up.add_argument("--port", type=int, help="gRPC port (default 50051; 0 = any free port)")
    up.set_defaults(func=cmd_up)

    # perf (issue 16 item 2): a read replica, started by `up` when CIPHERCARE_GRPC_PROCESSES > 1.
    replica = sub.add_parser("replica", help="serve as a read replica beside a running `up` (started by `up`)")
    replica.add_argument("--port", type=int, help="the writer's gRPC port (default from settings)")
    replica.set_defaults(func=cmd_replica)

    demo = sub.add_parser("demo", help="drive a scripted scenario against running services")
    demo.add_argument("--target", help="gRPC host:port (default from settings)")
    demo.set_defaults(func=cmd_demo)

    token = sub.add_parser("dev-token", help="print a token from the development identity provider")
    token.add_argument("--role", action="append", required=True,
                       choices=["patient", "clinician", "hospital", "compliance-officer", "admin"])
    token.add_argument("--org", default="")
    token.add_argument("--pid", default=None, help="patient pseudonym (for --role patient)")
    token.add_argument("--subject", default=None)
    token.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    token.set_defaults(func=cmd_dev_token)

    ledger = sub.add_parser("ledger", help="ledger tools")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    # ledger verify / ledger check: the ledger-integrity room (services/cli_integrity.py, issue 11)
    importlib.import_module("ciphercare.services.cli.integrity").register_ledger(ledger_sub)
    # fabricgw: `ledger serve` (the Fabric Gateway node) lives in its own module.
    from ciphercare.services.cli.ledger_node import register_ledger_serve

    register_ledger_serve(ledger_sub)

    from ciphercare.services.bench import BENCHMARKS

    bench = sub.add_parser(
        "bench", help="benchmarks (print a table; --json writes the figures)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="benchmarks:\n" + "\n".join(f"  {name:<12} {text}" for name, text in BENCHMARKS.items())
        + "\n\nEach --json report has its headline 'figures': figure, value, anchor (measured in the same run), "
          "ratio, target, met.")
    bench.add_argument("which", choices=list(BENCHMARKS), metavar="{" + ",".join(BENCHMARKS) + "}")
    bench.add_argument("--json", help="write results as JSON to this file")
    bench.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    bench.add_argument("--smoke", action="store_true",
                       help="the smallest sizes: checks that the benchmark runs (CI); its figures mean little")
    bench.add_argument("--concrete", action="store_true",
                       help="scoring: also Concrete ML (installed on first use into a cache; never without this flag)")
    bench.add_argument("--witness", action="store_true",
                       help="ledger: the cost of witnessing (appends/s with and without a witness, checkpoint latency)")
    bench.add_argument("--gateway", action="store_true",
                       help="ledger: durable tx/s and Check rate through the Fabric Gateway protocol beside in-process")
    bench.add_argument("--million", action="store_true", help="anomaly: include 10^6 events (minutes, ~1.4 GB)")
    bench.add_argument("--events", type=int, default=None,
                       help="audit: events in the store (default 10^6; 10^4 with --quick)")
    bench.add_argument("--database-url", default="",
                       help="audit: an empty PostgreSQL (or SQLite) store to fill instead of a temporary SQLite file")
    bench.set_defaults(func=cmd_bench)

    db = sub.add_parser("db", help="off-chain store")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply Alembic migrations")
    upgrade.set_defaults(func=cmd_db_upgrade)

    # Commands of other rooms register themselves; each module owns its subcommands.
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Libraries configure logging at import (the Fabric shim sets the root logger to DEBUG);
    # commands other than `up` (which installs JSON logging) report through their own output.
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"ciphercare: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"ciphercare: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "),
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

