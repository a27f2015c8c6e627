"""Server TLS for every gRPC listener: certificates reloaded without a restart, optional mutual TLS.

The certificate, key and (for mutual TLS) client CA are files (Kubernetes Secrets mounted as volumes in
production). gRPC asks :meth:`CertificateFiles.fetch` at each new handshake; when a file changed on disk
the new configuration takes effect for the next connection, so a renewed certificate needs no restart.
With a client CA, connections without a certificate signed by it are refused during the handshake, and
``tls_client_allowed_names`` (when set) limits which certificate names may call at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from ciphercare.services.platform.handlers import Behaviour, rewrap
from ciphercare.services.platform.settings import Settings

log = logging.getLogger("ciphercare.server")


class TlsConfigError(ValueError):
    """The TLS settings are unusable (a file is missing or unreadable, a key without a certificate)."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read the TLS {what} {path}: {exc.strerror}") from exc


class CertificateFiles:
    """The server's certificate, key and client CA as files; reloaded when they change."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._stamp = self._stat()
        self.reloads = 0

    def _stat(self) -> tuple[float, ...]:
        paths = [p for p in (self.cert, self.key, self.client_ca) if p is not None]
        try:
            return tuple(os.stat(p).st_mtime_ns for p in paths)
        except OSError as exc:
            raise TlsConfigError(f"cannot read the TLS files: {exc.strerror}") from exc

    def configuration(self) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(_read(self.key, "key"), _read(self.cert, "certificate"))],
            root_certificates=_read(self.client_ca, "client CA") if self.client_ca else None,
        )

    def fetch(self) -> Any:
        """Called by gRPC at each handshake: a new configuration when a file changed, else None."""
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return None
            configuration = self.configuration()
        except TlsConfigError as exc:  # a half-written renewal: keep serving the old certificate
            log.warning("TLS reload skipped", extra={"error": str(exc)})
            return None
        self._stamp = stamp
        self.reloads += 1
        log.info("TLS certificate reloaded", extra={"reloads": self.reloads})
        return configuration


def server_credentials(settings: Settings) -> tuple[grpc.ServerCredentials, CertificateFiles] | None:
    """TLS credentials for the gRPC listeners, or None when TLS is not configured."""
    if settings.tls_cert_path is None and settings.tls_key_path is None:
        return None
    if settings.tls_cert_path is None or settings.tls_key_path is None:
        raise TlsConfigError("TLS needs both CIPHERCARE_TLS_CERT_PATH and CIPHERCARE_TLS_KEY_PATH")
    files = CertificateFiles(settings.tls_cert_path, settings.tls_key_path, settings.tls_client_ca_path)
    credentials = grpc.dynamic_ssl_server_credentials(
        files.configuration(), files.fetch, require_client_authentication=settings.tls_client_ca_path is not None
    )
    return credentials, files


def _peer_names(context: aio.ServicerContext) -> set[str]:
    auth = context.auth_context()
    names: set[str] = set()
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        names.update(value.decode("utf-8", "replace") for value in auth.get(key, []))
    return names


class ClientCertificateInterceptor(aio.ServerInterceptor):
    """With mutual TLS and an allow-list, only clients whose certificate names one of ``allowed`` may call."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not self.allowed:
            return handler
        allowed = self.allowed

        def wrap(inner: Behaviour, request_streaming: bool, response_streaming: bool) -> Behaviour:
            async def refuse(context: aio.ServicerContext) -> None:
                if not _peer_names(context) & allowed:
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                        "the client certificate is not one of the services allowed to call")

            if response_streaming:
                async def streamed(request: Any, context: aio.ServicerContext) -> Any:
                    await refuse(context)
                    async for item in inner(request, context):
                        yield item
                return streamed

            async def unary(request: Any, context: aio.ServicerContext) -> Any:
                await refuse(context)
                return await inner(request, context)
            return unary

        return rewrap(handler, wrap)
