"""Small helpers shared by test modules (importable because tests/ is on pythonpath)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

CLI = (sys.executable, "-m", "ciphercare.services.cli.main")


def free_port() -> int:
    """A currently free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_cli_server(env: dict[str, str], timeout_s: float = 90.0) -> tuple[subprocess.Popen[str], int]:
    """``ciphercare up`` in its own process with ``env``; returns it and its gRPC port once it is serving."""
    env = {"CIPHERCARE_METRICS_PORT": "0", **env}  # several servers at once: /metrics on any free port
    proc = subprocess.Popen([*CLI, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    port = 0
    if proc.stdout is None:
        raise RuntimeError("no stdout pipe")
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
            continue
        if line.strip().startswith("gRPC"):
            port = int(line.rsplit(":", 1)[1])
        if "try: ciphercare demo" in line:
            return proc, port
    proc.kill()
    raise RuntimeError("server did not come up")
