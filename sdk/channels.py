"""gRPC channels for ciphercare clients: TLS by default, plaintext only to loopback.

Bearer tokens travel in request metadata, so a channel that leaves the machine must be encrypted.
:func:`open_channel` makes a TLS channel (the system's roots, or a pinned CA file), with a client
certificate for mutual TLS when one is given; it refuses a plaintext channel to anything but a
loopback address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc


class ChannelConfigError(ValueError):
    """The channel settings are unusable (for example plaintext towards a remote host)."""


@dataclass(frozen=True)
class ChannelSecurity:
    """How a client reaches a ciphercare endpoint.

    ``tls``: ``None`` decides by address (plaintext for loopback, TLS otherwise); ``True`` / ``False`` force it.
    ``ca_path``: PEM roots to trust (default: the system's). ``cert_path`` / ``key_path``: a client
    certificate for mutual TLS. ``server_name``: the name to check in the server's certificate, when it
    differs from the target's host.
    """

    tls: bool | None = None
    ca_path: Path | None = None
    cert_path: Path | None = None
    key_path: Path | None = None
    server_name: str = ""


def target_host(target: str) -> str:
    """The host part of a gRPC target (``host:port``, ``[v6]:port``, ``dns:///host:port``)."""
    rest = target.split("///", 1)[-1]
    if rest.startswith("["):
        return rest[1:rest.find("]")]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


def is_loopback(target: str) -> bool:
    host = target_host(target)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ChannelConfigError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def channel_credentials(security: ChannelSecurity) -> grpc.ChannelCredentials:
    """TLS credentials from ``security`` (roots, and a client certificate for mutual TLS)."""
    if (security.cert_path is None) != (security.key_path is None):
        raise ChannelConfigError("a client certificate needs both its certificate and its key")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(security.ca_path, "CA certificate"),
        private_key=_read(security.key_path, "client key"),
        certificate_chain=_read(security.cert_path, "client certificate"),
    )


def open_channel(target: str, security: ChannelSecurity | None = None,
                 options: list[tuple[str, object]] | None = None) -> grpc.Channel:
    """A blocking-API channel to ``target``; TLS unless the target is loopback (or TLS is forced)."""
    security = security or ChannelSecurity()
    options = list(options or [])
    use_tls = security.tls if security.tls is not None else not is_loopback(target)
    if not use_tls:
        if not is_loopback(target):
            raise ChannelConfigError(
                f"refusing a plaintext channel to {target_host(target)!r}: bearer tokens would travel in clear; "
                "use TLS (a CA with --ca or CIPHERCARE_TLS_CA_PATH), or a loopback address")
        return grpc.insecure_channel(target, options=options)
    if security.server_name:
        options.append(("grpc.ssl_target_name_override", security.server_name))
    return grpc.secure_channel(target, channel_credentials(security), options=options)
