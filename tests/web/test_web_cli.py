"""`ciphercare up` serves the web app next to the gRPC services (and stays up without it if its port is taken)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from testkit.process import free_port


def _up(data_dir: Path, web_port: int) -> tuple[subprocess.Popen[str], list[str]]:
    env = {**os.environ, "CIPHERCARE_DATA_DIR": str(data_dir), "CIPHERCARE_DEV_ISSUER_PORT": str(free_port()),
           "CIPHERCARE_WEB_PORT": str(web_port)}
    env.pop("CIPHERCARE_CONFIG", None)
    err = (data_dir / "up.err").open("w")  # a file, so a chatty log can never block the server on a full pipe
    proc = subprocess.Popen([sys.executable, "-m", "ciphercare.services.cli.main", "up", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=err, text=True)
    err.close()
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "try: ciphercare demo" in line:
            return proc, lines
    proc.kill()
    raise AssertionError(f"ciphercare up did not come up: {lines} {(data_dir / 'up.err').read_text()}")


def _stop(proc: subprocess.Popen[str], data_dir: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    err = (data_dir / "up.err").read_text()
    assert proc.returncode == 0, err
    return err


def test_up_serves_the_web_app(tmp_path: Path) -> None:
    port = free_port()
    proc, lines = _up(tmp_path, port)
    try:
        assert f"  web (patient portal, compliance console):                   http://127.0.0.1:{port}/" in lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200 and "Sign in" in response.read().decode()
    finally:
        _stop(proc, tmp_path)


def test_up_keeps_the_services_when_the_web_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc, lines = _up(tmp_path, taken.getsockname()[1])
        try:
            assert any(line.startswith("  gRPC") for line in lines)
            assert not any("web (patient portal" in line for line in lines)
        finally:
            err = _stop(proc, tmp_path)
    assert "web app not started" in err
