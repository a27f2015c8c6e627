"""Helpers for the auth tests: token surgery and a static JWKS server."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ciphercare.services.identity.devissuer import DevIssuerServer
from ciphercare.services.identity.jwks import JwksCache
from ciphercare.services.identity.tokens import TokenVerifier

AUDIENCE = "ciphercare-api"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def decode_segment(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    h, p, s = token.split(".")
    return decode_segment(h), decode_segment(p), s


class StaticJwks:
    """A loopback HTTP server serving a mutable JWKS document (for EC / odd-key tests)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.hits += 1
                body = json.dumps(owner.doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/certs"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @contextmanager
    def running(self) -> Iterator[StaticJwks]:
        self.thread.start()
        try:
            yield self
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()


class FakeClock:
    """A monotonic clock tests can advance."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_verifier(server: DevIssuerServer, clock: FakeClock | None = None) -> TokenVerifier:
    """A verifier with its own (cold) JWKS cache pointed at ``server``."""
    jwks = (
        JwksCache(server.jwks_url, ttl_s=300.0, clock=clock)
        if clock
        else JwksCache(server.jwks_url, ttl_s=300.0)
    )
    return TokenVerifier(server.issuer_url, AUDIENCE, jwks, algorithms=("RS256", "ES256"))
