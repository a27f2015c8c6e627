"""``connect`` -> :class:`Gateway`: one gRPC channel to a gateway peer (or ``ciphercare ledger serve``).

Default deadlines are those the official clients' samples recommend:
evaluate 5 s, endorse 15 s, submit 5 s, commit status 60 s; chaincode event
streams have none (they are long-lived) unless one is given. Every call takes
a ``timeout`` overriding the default for that call.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import grpc
from fabric_protos.gateway import gateway_pb2_grpc

from ciphercare.ledger.fabric.identity import X509Identity
from ciphercare.ledger.fabric.network import Network
from ciphercare.ledger.fabric.signer import Signer


@dataclass(frozen=True)
class ConnectOptions:
    """Per-stage default deadlines in seconds (``None``: no deadline; only sensible for event streams)."""

    evaluate_timeout: float = 5.0
    endorse_timeout: float = 15.0
    submit_timeout: float = 5.0
    commit_status_timeout: float = 60.0
    chaincode_events_timeout: float | None = None

    def deadline(self, stage: str, override: float | None) -> float | None:
        if override is not None:
            if override <= 0:
                raise ValueError(f"{stage} timeout must be positive, got {override}")
            return override
        value: float | None = getattr(self, f"{stage}_timeout")
        return value


def is_loopback(target: str) -> bool:
    """Whether a ``host:port`` / ``[v6]:port`` target is a loopback address (plaintext is allowed only there)."""
    rest = target.split("///", 1)[-1]
    host = (
        rest[1 : rest.find("]")] if rest.startswith("[") else (rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest)
    )
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secure_channel_credentials(
    root_certificates: bytes, client_cert: bytes | None = None, client_key: bytes | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials (mutual TLS when a client certificate and key are given)."""
    return grpc.ssl_channel_credentials(
        root_certificates=root_certificates, private_key=client_key, certificate_chain=client_cert
    )


class Gateway:
    """A connection to a Fabric Gateway; use as ``async with`` or call :meth:`close`."""

    def __init__(
        self, channel: grpc.aio.Channel, identity: X509Identity, signer: Signer, options: ConnectOptions, owns: bool
    ) -> None:
        self.grpc_channel = channel
        self.identity = identity
        self.signer = signer
        self.options = options
        self.stub = gateway_pb2_grpc.GatewayStub(channel)
        self._owns = owns

    def network(self, channel_name: str) -> Network:
        """The channel ``channel_name`` (``getNetwork``)."""
        if not channel_name:
            raise ValueError("channel name must not be empty")
        return Network(self, channel_name)

    async def close(self) -> None:
        """Close the gRPC channel if ``connect`` opened it."""
        if self._owns:
            await self.grpc_channel.close()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def connect(
    identity: X509Identity,
    signer: Signer,
    *,
    target: str | None = None,
    channel: grpc.aio.Channel | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    server_name_override: str | None = None,
    options: ConnectOptions | None = None,
) -> Gateway:
    """Connect with an existing ``grpc.aio`` channel, or open one to ``target`` (TLS when ``credentials``)."""
    if (channel is None) == (target is None):
        raise ValueError("give exactly one of channel= and target=")
    owns = channel is None
    if channel is None:
        assert target is not None
        if credentials is not None:
            opts = [("grpc.ssl_target_name_override", server_name_override)] if server_name_override else []
            channel = grpc.aio.secure_channel(target, credentials, options=opts)
        else:
            channel = grpc.aio.insecure_channel(target)
    return Gateway(channel, identity, signer, options or ConnectOptions(), owns)
