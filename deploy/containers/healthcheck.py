#!/usr/bin/env python3
"""Container health check for the ciphercare images (installed as /usr/local/bin/ciphercare-healthcheck).

    ciphercare-healthcheck grpc HOST:PORT [--service NAME] [--tls-ca F [--tls-cert F --tls-key F]
                                          [--server-name N]] [--timeout S]
    ciphercare-healthcheck http URL [--timeout S]
    ciphercare-healthcheck tcp HOST:PORT [--timeout S]

`grpc` asks grpc.health.v1 Check (overall status, or --service) and succeeds only on SERVING; with --tls-ca it
speaks TLS (mutual TLS with --tls-cert/--tls-key), which the kubelet's built-in gRPC probe cannot. `http`
succeeds on a 2xx answer; `tcp` when a connection is accepted. Exit 0 healthy, 1 unhealthy (one line on
stderr saying why), 2 bad usage. No secrets are printed.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path


def _split_target(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {target!r}")
    return host.strip("[]"), int(port)


def check_grpc(target: str, service: str, timeout_s: float, tls_ca: Path | None, tls_cert: Path | None,
               tls_key: Path | None, server_name: str | None) -> str | None:
    """None when the server reports SERVING; otherwise the reason."""
    os.environ["GRPC_VERBOSITY"] = "NONE"  # the one line below says why; no gRPC core log lines on stderr
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    _split_target(target)
    if tls_ca is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls_ca.read_bytes(),
            private_key=tls_key.read_bytes() if tls_key else None,
            certificate_chain=tls_cert.read_bytes() if tls_cert else None,
        )
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        name = code.name if code is not None else "ERROR"
        details = exc.details() if hasattr(exc, "details") else str(exc)
        return f"gRPC health {target} service {service or '(overall)'}: {name}" + (f": {details}" if details else "")
    finally:
        channel.close()
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return f"gRPC health {target} service {service or '(overall)'}: {status}"
    return None


def check_http(url: str, timeout_s: float) -> str | None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"expected an http(s) URL, got {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - scheme checked above
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"HTTP {url}: status {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"HTTP {url}: {getattr(exc, 'reason', exc)}"
    return None if 200 <= status < 300 else f"HTTP {url}: status {status}"


def check_tcp(target: str, timeout_s: float) -> str | None:
    host, port = _split_target(target)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"TCP {target}: {exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ciphercare-healthcheck", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    grpc_p = sub.add_parser("grpc", help="grpc.health.v1 Check")
    grpc_p.add_argument("target")
    grpc_p.add_argument("--service", default="", help="service name (default: the server as a whole)")
    grpc_p.add_argument("--tls-ca", type=Path)
    grpc_p.add_argument("--tls-cert", type=Path)
    grpc_p.add_argument("--tls-key", type=Path)
    grpc_p.add_argument("--server-name")
    http_p = sub.add_parser("http", help="HTTP GET, 2xx is healthy")
    http_p.add_argument("url")
    tcp_p = sub.add_parser("tcp", help="TCP connect")
    tcp_p.add_argument("target")
    for p in (grpc_p, http_p, tcp_p):
        p.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    try:
        if args.kind == "grpc":
            if (args.tls_cert is None) != (args.tls_key is None):
                parser.error("--tls-cert and --tls-key go together")
            if args.tls_cert is not None and args.tls_ca is None:
                parser.error("--tls-cert needs --tls-ca")
            problem = check_grpc(args.target, args.service, args.timeout, args.tls_ca, args.tls_cert,
                                 args.tls_key, args.server_name)
        elif args.kind == "http":
            problem = check_http(args.url, args.timeout)
        else:
            problem = check_tcp(args.target, args.timeout)
    except ValueError as exc:
        print(f"ciphercare-healthcheck: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unreadable certificate files
        print(f"ciphercare-healthcheck: {exc}", file=sys.stderr)
        return 1
    if problem is not None:
        print(f"ciphercare-healthcheck: unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
