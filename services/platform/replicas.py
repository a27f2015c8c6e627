"""Several server processes on one gRPC port (issue 16 item 2): one writer, read replicas beside it.

With ``CIPHERCARE_GRPC_PROCESSES=N`` (N > 1) ``ciphercare up`` runs the usual server (the *writer*: it owns
the embedded ledger, its owner lock, the off-chain store's writes, the projections, /metrics) and starts
N - 1 *read replicas* (``ciphercare replica``). Every process listens on the same gRPC port with
``SO_REUSEPORT``; the kernel spreads incoming connections over them.

A replica serves ``ConsentService/Check`` itself, against the ledger's world state (a read-only
:class:`~ciphercare.ledger.embedded.replica.ReplicaLedger` on the writer's SQLite file), and gRPC health.
Every other call -- every write, every read that needs the off-chain store or the transparency log, and
every Check that is not plainly well-formed and authorised (no or bad token, a role the access table
refuses, a pid the pseudonym guard refuses, a message that does not parse) -- is forwarded unchanged
(bytes, metadata, deadline) to the writer over a Unix socket in the data directory, and the writer's
answer (status, message, trailing metadata) goes back unchanged. So refusals are logged on the ledger by
the writer exactly as with one process, and a replica never writes anything.

Failure behaviour: a replica that dies takes only its own connections with it, and those the kernel hands
its listening socket while its threads are still exiting (they are reset: the caller gets ``UNAVAILABLE``
for a call that was never served, and may retry it); its peers keep the port and ``up`` starts a new one.
If the writer dies, replicas go on answering Check and refuse every forwarded call with ``UNAVAILABLE``.

Mutual TLS: a replica applies the client-certificate allow-list itself before serving or forwarding. The
writer's Unix socket is plaintext and made owner-only (mode 0600) inside the data directory; the bearer
token is checked by the writer on every forwarded call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ciphercare.consent.contracts import new_chaincode
from ciphercare.consent.model import PID_RE
from ciphercare.ledger.embedded.replica import ReplicaLedger, ReplicaTransport
from ciphercare.ledger.gateway import GatewayOptions
from ciphercare.services.consent.servicer import ConsentServicer
from ciphercare.services.identity.interceptor import _PRINCIPAL, _bearer_token
from ciphercare.services.identity.jwks import JwksError
from ciphercare.services.identity.rules import RULES
from ciphercare.services.identity.token_cache import CachingVerifier
from ciphercare.services.identity.tokens import AuthError, TokenVerifier
from ciphercare.services.platform.errors import _abort
from ciphercare.services.platform.gateway import ContractHandles
from ciphercare.services.platform.settings import Settings
from ciphercare.services.platform.tls import ClientCertificateInterceptor, server_credentials
from ciphercare.services.privacy.operations import pid_refusal
from ciphercare.v1 import access_log_pb2, consent_pb2, scoring_pb2

log = logging.getLogger("ciphercare.replicas")

#: The writer's private endpoint for forwarded calls, inside the data directory.
WRITER_SOCKET_NAME = "grpc-writer.sock"
CHECK_METHOD = "/ciphercare.v1.ConsentService/Check"
#: Printed by a replica once it serves (``up`` waits for it).
READY_LINE = "ciphercare replica serving"

_HOP_BY_HOP = frozenset({"user-agent", "content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"})


def writer_socket_path(settings: Settings) -> Path:
    """Where the writer process listens for calls forwarded by its replicas."""
    return (settings.data_dir / WRITER_SOCKET_NAME).resolve()


#: Unix socket paths are limited to 108 bytes (sun_path) on Linux.
MAX_SOCKET_PATH = 100


def writer_socket_usable(settings: Settings) -> bool:
    """Whether the writer's socket path fits a Unix socket address (a very deep data directory does not)."""
    return len(str(writer_socket_path(settings)).encode()) <= MAX_SOCKET_PATH


def writer_target(settings: Settings) -> str:
    return "unix:" + str(writer_socket_path(settings))


def reuseport_options(settings: Settings) -> list[tuple[str, Any]]:
    """The gRPC server option that lets several processes share the port (only when there are several)."""
    return [("grpc.so_reuseport", 1)] if settings.grpc_processes > 1 else []


def _streaming_shapes() -> dict[str, tuple[bool, bool]]:
    """``/package.Service/Method`` -> (request streaming, response streaming) for every service forwarded."""
    from grpc_reflection.v1alpha import reflection_pb2

    shapes: dict[str, tuple[bool, bool]] = {}
    for module in (consent_pb2, access_log_pb2, scoring_pb2, reflection_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                shapes[f"/{service.full_name}/{method.name}"] = (method.client_streaming, method.server_streaming)
    return shapes


def _forwarded_metadata(context: grpc.aio.ServicerContext) -> list[tuple[str, str | bytes]]:
    return [(k, v) for k, v in (context.invocation_metadata() or ())
            if not k.startswith(":") and k.lower() not in _HOP_BY_HOP]


class Forwarder:
    """Carries calls, as bytes, to the writer process and brings its answers back unchanged."""

    def __init__(self, target: str, max_message_bytes: int) -> None:
        self.channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ])
        self._unary: dict[str, Any] = {}

    async def close(self) -> None:
        await self.channel.close()

    @staticmethod
    async def _relay_error(context: grpc.aio.ServicerContext, exc: grpc.aio.AioRpcError) -> None:
        code = exc.code()
        details = exc.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            details = f"the writer process is unavailable: {details}"
        trailing = tuple((k, v) for k, v in (exc.trailing_metadata() or ()) if not k.startswith(":"))
        await context.abort(code, details, trailing)

    async def unary(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        call = self._unary.get(method)
        if call is None:
            call = self._unary[method] = self.channel.unary_unary(method)
        try:
            response: bytes = await call(request, metadata=_forwarded_metadata(context),
                                         timeout=context.time_remaining())
        except grpc.aio.AioRpcError as exc:
            await self._relay_error(context, exc)
            raise  # unreachable: abort raises
        return response

    def handler(self, method: str, shape: tuple[bool, bool]) -> grpc.RpcMethodHandler:
        request_streaming, response_streaming = shape
        if not request_streaming and not response_streaming:
            async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                return await self.unary(method, request, context)
            return grpc.unary_unary_rpc_method_handler(unary)

        async def streamed(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            source: Any = requests
            if not request_streaming:  # a single request message: send it as a one-message stream
                async def one(item: bytes = requests) -> AsyncIterator[bytes]:
                    yield item
                source = one()
            call = self.channel.stream_stream(method)(
                source, metadata=_forwarded_metadata(context), timeout=context.time_remaining())
            try:
                async for item in call:
                    yield item
            except grpc.aio.AioRpcError as exc:
                await self._relay_error(context, exc)

        if response_streaming:
            factory = (grpc.stream_stream_rpc_method_handler if request_streaming
                       else grpc.unary_stream_rpc_method_handler)
            return factory(streamed)

        async def client_streaming(requests: Any, context: grpc.aio.ServicerContext) -> bytes:
            last = b""
            async for item in streamed(requests, context):
                last = item
            return last
        return grpc.stream_unary_rpc_method_handler(client_streaming)


class ReplicaHandler(grpc.GenericRpcHandler):
    """Check served here when it is plainly well-formed and authorised; everything else to the writer."""

    def __init__(self, servicer: ConsentServicer, verifier: CachingVerifier, forwarder: Forwarder) -> None:
        self.servicer = servicer
        self.verifier = verifier
        self.forwarder = forwarder
        self.rule = RULES[CHECK_METHOD]
        self.local = 0
        self.forwarded = 0
        self._handlers: dict[str, grpc.RpcMethodHandler] = {
            method: forwarder.handler(method, shape) for method, shape in _streaming_shapes().items()
        }
        self._handlers[CHECK_METHOD] = grpc.unary_unary_rpc_method_handler(self._check)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)

    async def _check(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            principal = await self.verifier.averify(_bearer_token(context.invocation_metadata()))
            request = consent_pb2.CheckRequest.FromString(raw)
        except (AuthError, DecodeError):
            principal = None
        if (principal is None or not self.rule.allows(principal.roles)
                or (PID_RE.match(request.pid) and pid_refusal(request.pid) is not None)):
            # The writer refuses it exactly as with one process (and logs the refusal on the ledger).
            self.forwarded += 1
            return await self.forwarder.unary(CHECK_METHOD, raw, context)
        self.local += 1
        token = _PRINCIPAL.set(principal)
        try:
            response = await self.servicer.Check(request, context)
        except (grpc.aio.AbortError, grpc.aio.BaseError):
            raise
        except Exception as exc:  # noqa: BLE001 - the one error table, as the writer's interceptor applies it
            await _abort(context, CHECK_METHOD, exc)
            raise  # unreachable: abort raises
        finally:
            _PRINCIPAL.reset(token)
        return response.SerializeToString()


async def serve_replica(settings: Settings, *, ready: Callable[[int], None] | None = None,
                        stop: asyncio.Event | None = None) -> None:
    """Serve as a read replica on ``settings.grpc_target`` until ``stop`` is set."""
    token_verifier = TokenVerifier.from_settings(settings)
    try:
        token_verifier.jwks.refresh()
    except JwksError as exc:
        log.warning("JWKS not fetched at start-up; will retry on first use", extra={"error": type(exc).__name__})
    verifier = CachingVerifier(token_verifier)
    ledger = ReplicaLedger(settings.resolved_ledger_path, new_chaincode)
    handles = ContractHandles(ReplicaTransport(ledger), GatewayOptions())
    # Check never reads the off-chain store; every RPC that does is forwarded to the writer.
    servicer = ConsentServicer(handles, None)  # type: ignore[arg-type]
    forwarder = Forwarder(writer_target(settings), settings.grpc_max_message_bytes)
    allowed = frozenset(settings.tls_client_allowed_names)
    # Any interceptor puts every call through grpc.aio's interceptor pipeline: only when there is one to apply.
    server = grpc.aio.server(
        interceptors=[ClientCertificateInterceptor(allowed)] if allowed else None,
        options=[
            ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
            ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
            ("grpc.so_reuseport", 1),
        ],
    )
    server.add_generic_rpc_handlers((ReplicaHandler(servicer, verifier, forwarder),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    tls = server_credentials(settings)
    port = (server.add_secure_port(settings.grpc_target, tls[0]) if tls is not None
            else server.add_insecure_port(settings.grpc_target))
    if port == 0:
        raise RuntimeError(f"cannot listen on {settings.grpc_target}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("ciphercare.v1.ConsentService", health_pb2.HealthCheckResponse.SERVING)
    if ready is not None:
        ready(port)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.stop(grace=2.0)
        await forwarder.close()
        ledger.close()


def run_replica(settings: Settings) -> int:
    """``ciphercare replica``: serve until SIGTERM / SIGINT."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(port: int) -> None:
            print(f"{READY_LINE} on {settings.grpc_host}:{port} (pid {os.getpid()})", flush=True)

        await serve_replica(settings, ready=ready, stop=stop)

    asyncio.run(main())
    return 0


class ReplicaSupervisor:
    """Starts ``count`` replicas on the writer's port, restarts any that dies, stops them all at the end."""

    def __init__(self, settings: Settings, port: int, count: int,
                 command: Sequence[str] = (sys.executable, "-m", "ciphercare.services.cli.main", "replica"),
                 start_timeout_s: float = 90.0) -> None:
        self.settings = settings
        self.port = port
        self.count = count
        self.command = tuple(command)
        self.start_timeout_s = start_timeout_s
        self.processes: list[subprocess.Popen[str]] = []
        self.restarts = 0
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    def _env(self) -> dict[str, str]:
        return dict(os.environ, CIPHERCARE_DATA_DIR=str(self.settings.data_dir.resolve()),
                    CIPHERCARE_GRPC_HOST=self.settings.grpc_host, CIPHERCARE_GRPC_PORT=str(self.port),
                    CIPHERCARE_METRICS_ENABLED="false", CIPHERCARE_WEB_ENABLED="false")

    def _spawn(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen([*self.command], env=self._env(), stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None  # noqa: S101 - stdout=PIPE
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                if proc.poll() is not None:
                    raise RuntimeError(f"read replica exited with {proc.returncode} before serving")
                continue
            if line.startswith(READY_LINE):
                threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
                return proc
        proc.kill()
        raise RuntimeError("read replica did not start in time")

    def start(self) -> None:
        for _ in range(self.count):
            self.processes.append(self._spawn())
        self._monitor = threading.Thread(target=self._watch, name="replica-supervisor", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            for i, proc in enumerate(list(self.processes)):
                if proc.poll() is not None and not self._stopping.is_set():
                    log.warning("read replica exited; starting another",
                                extra={"pid": proc.pid, "code": proc.returncode})
                    try:
                        self.processes[i] = self._spawn()
                        self.restarts += 1
                    except RuntimeError:
                        log.exception("read replica could not be restarted")

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join(5)
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _drain(stream: Any) -> None:
    with contextlib.suppress(Exception):
        for line in stream:
            sys.stdout.write(line)


async def start_replicas(settings: Settings, port: int) -> ReplicaSupervisor | None:
    """``up``: the replicas for ``CIPHERCARE_GRPC_PROCESSES`` (embedded ledger only), started and serving."""
    if settings.grpc_processes <= 1:
        return None
    if settings.ledger_backend != "embedded":
        log.warning("CIPHERCARE_GRPC_PROCESSES > 1 needs the embedded ledger; serving from one process")
        return None
    if not writer_socket_usable(settings):
        raise RuntimeError(f"read replicas need the writer's socket {writer_socket_path(settings)}, whose path is "
                           f"longer than {MAX_SOCKET_PATH} bytes: use a shorter CIPHERCARE_DATA_DIR")
    supervisor = ReplicaSupervisor(settings, port, settings.grpc_processes - 1)
    try:
        await asyncio.to_thread(supervisor.start)
    except BaseException:
        await asyncio.to_thread(supervisor.stop)
        raise
    return supervisor

