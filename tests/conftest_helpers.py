"""Small helpers shared by test modules (importable because tests/ is on pythonpath)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A currently free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
