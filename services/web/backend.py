"""The web layer's only way to data: the Python SDK over gRPC, with the signed-in user's token.

Each request builds a :class:`~ciphercare.sdk.client.CiphercareClient` on one
shared channel with that user's bearer token, so the services authenticate the
user and apply their own role, organisation and patient scoping. SDK calls are
blocking; they run in worker threads so the event loop stays free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from ciphercare.sdk.channels import ChannelSecurity, open_channel
from ciphercare.sdk.client import CiphercareClient, ProofError
from ciphercare.services.platform.settings import Settings

T = TypeVar("T")

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNAVAILABLE: 503,
}


class ServiceRefusal(Exception):
    """A ciphercare service refused or failed a call; ``message`` is the service's own words."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 502)

    @property
    def code_name(self) -> str:
        return self.code.name


class Services:
    """A gRPC channel to ciphercare and per-user SDK clients on it."""

    def __init__(self, target: str, deadline_s: float = 10.0, max_message_bytes: int = 4 * 1024 * 1024,
                 security: ChannelSecurity | None = None, interceptors: Sequence[Any] = ()) -> None:
        self.target = target
        self.deadline_s = deadline_s
        self._raw_channel = open_channel(target, security, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ])
        # interceptors: e.g. tracing's, which puts the trace context of the web request in the call metadata
        self.channel = grpc.intercept_channel(self._raw_channel, *interceptors) if interceptors else self._raw_channel

    def client(self, access_token: str) -> CiphercareClient:
        return CiphercareClient(self.channel, lambda: access_token, deadline_s=self.deadline_s)

    async def call(self, access_token: str, operation: Callable[[CiphercareClient], T]) -> T:
        """Run ``operation`` with the user's client in a worker thread; gRPC errors become :class:`ServiceRefusal`."""
        client = self.client(access_token)

        def run() -> T:
            try:
                return operation(client)
            except grpc.RpcError as exc:
                code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
                details = exc.details() if callable(getattr(exc, "details", None)) else ""
                raise ServiceRefusal(code, details or code.name.lower().replace("_", " ")) from None

        return await asyncio.to_thread(run)

    def close(self) -> None:
        self._raw_channel.close()


__all__ = ["ProofError", "ServiceRefusal", "Services"]


def backend_security(settings: Settings) -> ChannelSecurity:
    """How the web app reaches the gRPC services: TLS with the configured roots when the services serve TLS."""
    if not settings.tls_enabled:
        return ChannelSecurity()
    return ChannelSecurity(tls=True, ca_path=settings.tls_ca_path or settings.tls_cert_path,
                           server_name=settings.tls_server_name)
