"""The contracts as an external chaincode service (Fabric "chaincode as a service").

A Fabric peer whose chaincode package is of type ``ccaas`` does not start the
chaincode: it dials the address named in the package's ``connection.json`` and
opens the ``protos.Chaincode/Connect`` stream. This module serves that stream
with fabric-chaincode-python 2.5.4's own server pieces (``ChaincodeService``,
``Handler``, ``ChaincodeStub``) running the same ``ContractChaincode`` the
embedded ledger runs (:func:`ciphercare.consent.contracts.new_chaincode`).

Configuration follows Fabric's external chaincode conventions (the variables
of fabric-samples' ``chaincode-external``), read once by
:meth:`ChaincodeServerConfig.from_environ`:

* ``CHAINCODE_ID`` -- the package id the peer expects in ``REGISTER``
  (``label:sha256``, printed by ``peer lifecycle chaincode install``);
* ``CHAINCODE_SERVER_ADDRESS`` -- ``host:port`` to listen on;
* ``CHAINCODE_TLS_DISABLED`` -- ``true`` to serve plaintext. Unlike the sample
  the default is ``false``: TLS is required unless switched off explicitly;
* ``CHAINCODE_TLS_KEY`` / ``CHAINCODE_TLS_CERT`` -- PEM files of the server's
  TLS key and certificate (required with TLS);
* ``CHAINCODE_CLIENT_CA_CERT`` -- PEM file of the CA(s) that issue the peers'
  client certificates; when set, a peer must present one (mutual TLS, the
  ``client_auth_required`` of ``connection.json``).

Four defects of the 2.5.4 shim are corrected here, in subclasses, so the
contracts behave on a peer exactly as they do embedded:

* the library drops chaincode events (its ``COMPLETED`` message never carries
  ``chaincode_event``): we attach the transaction's event, and like Fabric's Go
  shim only one, the last one set;
* the library treats an ``ERROR`` answer of the peer to a state request as a
  value (``get_state`` would return the peer's error text): we fail the request,
  so the contract fails and writes nothing;
* a message the library cannot decode (malformed proposal, no function name)
  raises inside a background task and the peer waits forever: we answer
  ``ERROR`` for that transaction, as the Go shim does;
* the library writes to the stream from one task per in-flight transaction and
  grpc.aio refuses overlapping writes, so concurrent transactions on one stream
  (which a peer sends) failed and their peer waited forever: writes are
  serialised, as the Go shim serialises its sends.

The stub also gains what the Go shim does and the Python one lacks: simple-key
validation and the ``"\\x01"`` substitute for an empty range start key, and
``get_transient``. On the channel one chaincode definition, ``ciphercare``,
serves every contract from one state namespace (the contracts read each
other's state); :func:`definition_refusal` refuses every contract through a
definition named after a contract, which would be a namespace of its own.

This module imports nothing from ``ciphercare.ledger`` or ``ciphercare.services``:
the chaincode package stays deployable alone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from fabric_chaincode_python.fabric_contract_api.contractapi import ContractChaincode
from fabric_chaincode_python.fabric_shim.handler import Handler
from fabric_chaincode_python.fabric_shim.msg_queue_handler import MsgQueueHandler
from fabric_chaincode_python.fabric_shim.server import ChaincodeService
from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub
from fabric_chaincode_python.fabric_shim.utils import COMPOSITEKEY_NS
from fabric_protos.peer import chaincode_pb2 as cc_pb
from fabric_protos.peer import chaincode_shim_pb2 as shim_pb
from fabric_protos.peer import chaincode_shim_pb2_grpc as shim_grpc
from fabric_protos.peer import proposal_pb2 as proposal_pb
from fabric_protos.peer import proposal_response_pb2 as response_pb

log = logging.getLogger(__name__)

ENV_CHAINCODE_ID = "CHAINCODE_ID"
ENV_SERVER_ADDRESS = "CHAINCODE_SERVER_ADDRESS"
ENV_TLS_DISABLED = "CHAINCODE_TLS_DISABLED"
ENV_TLS_KEY = "CHAINCODE_TLS_KEY"
ENV_TLS_CERT = "CHAINCODE_TLS_CERT"
ENV_CLIENT_CA_CERT = "CHAINCODE_CLIENT_CA_CERT"

#: Fabric's default gRPC message bound (peer.maxRecvMsgSize / maxSendMsgSize, 100 MiB).
MAX_MESSAGE_BYTES = 100 * 1024 * 1024
#: The peer pings every 60 s by default (peer.keepalive.client.interval); accept pings that often.
MIN_PING_INTERVAL_MS = 30_000
_ERROR_THRESHOLD = 400
_EMPTY_KEY_SUBSTITUTE = "\x01"
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})


class ChaincodeConfigError(ValueError):
    """The chaincode server's configuration is incomplete or inconsistent (one readable line)."""


@dataclass(frozen=True)
class ChaincodeServerConfig:
    """Where and how the chaincode server listens."""

    chaincode_id: str
    address: str
    tls_key: bytes | None = None
    tls_cert: bytes | None = None
    client_ca_cert: bytes | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def mutual_tls(self) -> bool:
        return self.client_ca_cert is not None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ChaincodeServerConfig:
        """Read the ``CHAINCODE_*`` variables; raise :class:`ChaincodeConfigError` on anything missing or bad."""
        ccid = environ.get(ENV_CHAINCODE_ID, "").strip()
        address = environ.get(ENV_SERVER_ADDRESS, "").strip()
        if not ccid:
            raise ChaincodeConfigError(f"{ENV_CHAINCODE_ID} is not set (the package id, label:hash)")
        if not address or ":" not in address:
            raise ChaincodeConfigError(f"{ENV_SERVER_ADDRESS} must be host:port, got {address!r}")
        disabled_text = environ.get(ENV_TLS_DISABLED, "false").strip().lower()
        if disabled_text not in _TRUE | _FALSE:
            raise ChaincodeConfigError(f"{ENV_TLS_DISABLED} must be true or false, got {disabled_text!r}")
        if disabled_text in _TRUE:
            for name in (ENV_TLS_KEY, ENV_TLS_CERT, ENV_CLIENT_CA_CERT):
                if environ.get(name, "").strip():
                    raise ChaincodeConfigError(f"{name} is set but {ENV_TLS_DISABLED}=true")
            return cls(ccid, address)
        key_path = environ.get(ENV_TLS_KEY, "").strip()
        cert_path = environ.get(ENV_TLS_CERT, "").strip()
        if not key_path or not cert_path:
            raise ChaincodeConfigError(
                f"TLS is required: set {ENV_TLS_KEY} and {ENV_TLS_CERT} (or {ENV_TLS_DISABLED}=true)"
            )
        ca_path = environ.get(ENV_CLIENT_CA_CERT, "").strip()
        return cls(
            ccid,
            address,
            tls_key=_read_pem(ENV_TLS_KEY, key_path),
            tls_cert=_read_pem(ENV_TLS_CERT, cert_path),
            client_ca_cert=_read_pem(ENV_CLIENT_CA_CERT, ca_path) if ca_path else None,
        )


def _read_pem(variable: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ChaincodeConfigError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ChaincodeConfigError(f"{variable}: {path} is not a PEM file")
    return data


# --- the shim, corrected -----------------------------------------------------------------------


class PeerRequestFailed(Exception):
    """The peer answered a state request with ERROR (its message is the peer's text)."""


#: The library's private (name-mangled) queue methods, pinned by fabric-chaincode-python==2.5.4.
_QUEUE_HEAD = "_MsgQueueHandler__get_current_msg"
_QUEUE_POP = "_MsgQueueHandler__remove_current_and_send_next"


class _FailClosedQueue(MsgQueueHandler):
    """The library's per-transaction request queue, failing a request the peer answered with ERROR."""

    async def handle_msg_response(self, response: shim_pb.ChaincodeMessage) -> None:
        if response.type != shim_pb.ChaincodeMessage.ERROR:
            await super().handle_msg_response(response)
            return
        tx_context_id = response.channel_id + response.txid
        pending = getattr(self, _QUEUE_HEAD)(tx_context_id)
        if pending is None:
            log.warning("peer sent ERROR for tx %s with no request outstanding", response.txid)
            return
        text = bytes(response.payload).decode("utf-8", errors="replace")
        pending.future.set_exception(PeerRequestFailed(text or "peer refused the request"))
        await getattr(self, _QUEUE_POP)(tx_context_id)


class ServerStub(ChaincodeStub):
    """The library's stub plus what the Go shim does: key validation, the empty-start substitute, transient data."""

    def __init__(
        self, client: Any, channel_id: str, tx_id: str, cc_input: cc_pb.ChaincodeInput, signed_proposal: Any
    ) -> None:
        super().__init__(client, channel_id, tx_id, cc_input, signed_proposal)
        self._transient: dict[str, bytes] = {}
        #: The chaincode definition the client invoked (the proposal's ChaincodeHeaderExtension).
        self.chaincode_name = ""
        decoded = self.signed_proposal_pb
        if isinstance(decoded, dict):
            proposal = decoded.get("proposal", {})
            payload = proposal.get("payload")
            if isinstance(payload, proposal_pb.ChaincodeProposalPayload):
                self._transient = {k: bytes(v) for k, v in payload.TransientMap.items()}
            channel_header = proposal.get("header", {}).get("channelHeader")
            if channel_header is not None and channel_header.extension:
                extension = proposal_pb.ChaincodeHeaderExtension.FromString(channel_header.extension)
                self.chaincode_name = extension.chaincode_id.name

    def get_transient(self) -> dict[str, bytes]:
        """The proposal's transient map (never part of the transaction the orderer sees)."""
        return dict(self._transient)

    @staticmethod
    def _valid_key(key: object) -> str:
        if not isinstance(key, str) or not key:
            raise Exception("key must not be an empty string")
        return key

    async def get_state(self, key: str) -> Any:
        return await super().get_state(self._valid_key(key))

    async def put_state(self, key: str, value: Any) -> Any:
        return await super().put_state(self._valid_key(key), value)

    async def delete_state(self, key: str) -> Any:
        return await super().delete_state(self._valid_key(key))

    async def get_history_for_key(self, key: str) -> Any:
        return await super().get_history_for_key(self._valid_key(key))

    async def get_state_by_range(self, start_key: str, end_key: str) -> Any:
        """``[start_key, end_key)`` of simple keys; an empty start is ``"\\x01"`` (the Go shim's substitute)."""
        if not isinstance(start_key, str) or not isinstance(end_key, str):
            raise TypeError("range keys must be strings")
        for key in (start_key, end_key):
            if key and key[0] == COMPOSITEKEY_NS:
                raise Exception(
                    f"first character of the key {key!r} contains a null character which is not allowed"
                )
        return await super().get_state_by_range(start_key or _EMPTY_KEY_SUBSTITUTE, end_key)

    async def get_state_by_partial_composite_key(self, object_type: str, attributes: Sequence[str]) -> Any:
        """Composite keys under the prefix (the library's range query, without the simple-key check)."""
        prefix = self.create_composite_key(object_type, attributes)
        return await super().get_state_by_range(prefix, prefix + "\U0010ffff")


class _SerialWriter:
    """One ``write`` at a time on the stream: grpc.aio refuses overlapping writes (TOO_MANY_OPERATIONS),
    and the library writes from one task per in-flight transaction (the Go shim serialises its sends too)."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._lock = asyncio.Lock()

    async def write(self, message: shim_pb.ChaincodeMessage) -> None:
        async with self._lock:
            await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class CompletingHandler(Handler):
    """The library's stream handler; sends the event with COMPLETED, answers ERROR instead of hanging,
    and serialises writes so that concurrent transactions on one stream work."""

    @property
    def context(self) -> Any:
        return self._serial_context

    @context.setter
    def context(self, value: Any) -> None:
        self._serial_context = None if value is None else _SerialWriter(value)

    # The library builds a plain MsgQueueHandler inside chat_with_peer; this property swaps in ours.
    @property
    def msg_queue_handler(self) -> MsgQueueHandler | None:
        return self._queue

    @msg_queue_handler.setter
    def msg_queue_handler(self, value: MsgQueueHandler | None) -> None:
        self._queue = None if value is None else _FailClosedQueue(self)

    async def handle_stub_interaction(self, msg: shim_pb.ChaincodeMessage, action: str = "Invoke") -> None:
        try:
            cc_input = cc_pb.ChaincodeInput.FromString(msg.payload)
            stub = ServerStub(self, msg.channel_id, msg.txid, cc_input, msg.proposal)
            refusal = definition_refusal(self.chaincode, stub)
            if refusal is not None:
                response = response_pb.Response(status=500, message=refusal)
            elif action.lower() == "init":
                response = await self.chaincode.init(stub)
            else:
                response = await self.chaincode.invoke(stub)
        except Exception as exc:  # the Go shim answers ERROR when the transaction cannot run at all
            log.warning("tx %s could not run: %s", msg.txid, exc)
            await self.context.write(
                shim_pb.ChaincodeMessage(
                    type=shim_pb.ChaincodeMessage.ERROR,
                    payload=f"{type(exc).__name__}: {exc}".encode(),
                    txid=msg.txid,
                    channel_id=msg.channel_id,
                )
            )
            return
        if response is None or not response.status:
            response = response_pb.Response(status=500, message=f"chaincode {action}() returned no response")
        completed = shim_pb.ChaincodeMessage(
            type=shim_pb.ChaincodeMessage.COMPLETED,
            payload=response.SerializeToString(),
            txid=msg.txid,
            channel_id=msg.channel_id,
        )
        events = stub.get_events()
        if len(events) > 1:
            log.warning("tx %s set %d events; Fabric keeps only the last", msg.txid, len(events))
        if events and response.status < _ERROR_THRESHOLD:
            completed.chaincode_event.CopyFrom(events[-1])
        await self.context.write(completed)


#: The contract API's own contract (metadata); reachable through every definition.
SYSTEM_CONTRACT = "org.hyperledger.fabric"


def definition_refusal(chaincode: ContractChaincode, stub: ServerStub) -> str | None:
    """Why this transaction may not run, or None.

    On a peer every chaincode definition is its own state namespace, and the contracts read each other's
    state: ``accesslog:Record`` reads the consent an event cites, ``consent:Check`` and ``CheckMany`` read
    break-glass declarations. So one definition serves them all: ``ciphercare`` on the channel
    (``fabric-network/chaincode/definitions.env``), as in the embedded ledger and ``ciphercare ledger serve``.
    A definition named after a contract (``consent``, ``accesslog``, ...) would hold that contract's state
    apart from the others' (an event citing a consent refused, break-glass never permitting): every
    contract is refused through it, the contract API's own metadata contract excepted.
    """
    contracts = getattr(chaincode, "_contracts", {})
    if stub.chaincode_name not in contracts:
        return None
    namespace, _, _ = chaincode._get_namespace_function_and_params(stub)
    if namespace == SYSTEM_CONTRACT:
        return None
    return (
        f"PERMISSION_DENIED: contract {namespace!r} is not served through the chaincode definition "
        f"{stub.chaincode_name!r}: the contracts read each other's state and are served only through one "
        "definition named after no contract (ciphercare)"
    )


class CiphercareChaincodeService(ChaincodeService):
    """``protos.Chaincode``: one :class:`CompletingHandler` per peer stream."""

    async def Connect(self, request_iterator: AsyncIterable[shim_pb.ChaincodeMessage], context: Any) -> None:
        handler = CompletingHandler(self._ccid, self._cc)
        try:
            await handler.chat_with_peer(request_iterator, context)
        except asyncio.CancelledError:
            log.info("peer stream cancelled")


def build_server(
    config: ChaincodeServerConfig, chaincode: ContractChaincode | None = None
) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server serving ``protos.Chaincode`` on ``config.address``; returns it and the bound port."""
    if chaincode is None:
        from .contracts import new_chaincode

        chaincode = new_chaincode()
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ]
    )
    shim_grpc.add_ChaincodeServicer_to_server(CiphercareChaincodeService(config.chaincode_id, chaincode), server)
    if config.tls_key is not None and config.tls_cert is not None:
        credentials = grpc.ssl_server_credentials(
            [(config.tls_key, config.tls_cert)],
            root_certificates=config.client_ca_cert,
            require_client_auth=config.mutual_tls,
        )
        port = server.add_secure_port(config.address, credentials)
    else:
        port = server.add_insecure_port(config.address)
    if port == 0:
        raise ChaincodeConfigError(f"cannot listen on {config.address}")
    return server, port


def quiet_shim_logging() -> None:
    """Undo the shim's import-time ``basicConfig(level=DEBUG)``; it also logs every message (payloads included)
    on the ``asyncio`` logger at INFO/WARNING: keep its errors only."""
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.ERROR)


async def serve(config: ChaincodeServerConfig, *, ready: Any = None) -> None:
    """Serve until SIGINT/SIGTERM; prints one line with the address once listening."""
    quiet_shim_logging()
    server, port = build_server(config)
    await server.start()
    mode = "mutual TLS" if config.mutual_tls else ("TLS" if config.tls else "plaintext")
    host = config.address.rsplit(":", 1)[0]
    print(f"chaincode {config.chaincode_id} listening on {host}:{port} ({mode})", flush=True)
    if ready is not None:
        ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(3)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """``python -m ciphercare.consent.server`` (the container's entrypoint): exit 2 on bad configuration."""
    argparse.ArgumentParser(
        prog="ciphercare-chaincode", description="serve the ciphercare contracts as an external chaincode"
    ).parse_args(argv)
    try:
        config = ChaincodeServerConfig.from_environ(os.environ if environ is None else environ)
    except ChaincodeConfigError as exc:
        print(f"ciphercare-chaincode: {exc}", file=sys.stderr)
        return 2
    quiet_shim_logging()
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
