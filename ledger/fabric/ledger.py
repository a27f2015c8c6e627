"""A :class:`ciphercare.ledger.api.Ledger` over the Fabric Gateway client: services run against a remote node.

Thin on purpose (the ledger interface is being reshaped into gateway handles): every call
becomes one Gateway call on a private event loop thread.

Identity (docs/FABRIC.md): this ciphercare node holds its organisation's user-issuing CA
(``msp_dir/<MSPID>/{ca-cert,ca-key}.pem``). For each verified principal it issues a short-lived
certificate carrying the principal's attributes (Fabric CA attribute extension) and signs that
user's proposals with the matching key; the peer validates the creator natively against the
org's MSP, and the contract reads the actor from the certificate. Certificates are re-issued
before they expire; keys never leave the process.

Reads of the log are verified, not trusted: every checkpoint's signed note is checked against
the node's checkpoint key (pinned, or learnt on first use), and every entry against an RFC 9162
inclusion proof to that checkpoint.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as _dt
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric import ec
from fabric_protos.common import common_pb2
from fabric_protos.peer import chaincode_event_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2

from ciphercare.ledger.api import (
    ChaincodeEvent,
    Checkpoint,
    CommitError,
    CommittedEvent,
    ConsistencyProof,
    EndorseError,
    InclusionProof,
    LedgerEntry,
    LedgerError,
    LedgerTimeout,
    Principal,
    Receipt,
)
from ciphercare.ledger.embedded.log import decode_leaf
from ciphercare.ledger.embedded.msp import EmbeddedMSP, msp_id_for_org
from ciphercare.ledger.fabric import errors as fabric_errors
from ciphercare.ledger.fabric.gateway import ConnectOptions, Gateway, connect
from ciphercare.ledger.fabric.identity import X509Identity
from ciphercare.ledger.fabric.signer import Signer, new_private_key_signer
from ciphercare.ledger.transparency.checkpoint import CheckpointVerifier
from ciphercare.ledger.transparency.merkle import leaf_hash, verify_inclusion
from ciphercare.v1 import access_log_pb2, access_log_pb2_grpc

T = TypeVar("T")

_CONTRACT_CODES = ("INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "FAILED_PRECONDITION")
_RENEW_BEFORE = _dt.timedelta(minutes=5)
_CACHE = 4096


class _TxFuture(Future):  # type: ignore[type-arg]
    """A ``Future[Receipt]`` that knows its transaction id before it resolves (as the embedded one)."""

    def __init__(self, tx_id: str) -> None:
        super().__init__()
        self.tx_id = tx_id


@dataclass(frozen=True)
class _Enrolment:
    gateway: Gateway
    identity: X509Identity
    signer: Signer
    renew_at: _dt.datetime


def endorse_error_from(err: fabric_errors.GatewayError) -> LedgerError:
    """Map a gateway failure to the ledger interface: the contract's code when a peer reported one."""
    for detail in err.details:
        text = detail.message
        if text.startswith("chaincode response"):
            text = text.split(",", 1)[1].strip() if "," in text else text
        head, sep, rest = text.partition(":")
        if sep and head in _CONTRACT_CODES:
            return EndorseError(err.tx_id, head, rest.strip())
    if err.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return LedgerTimeout(err.tx_id, 0.0)
    if err.code.name in _CONTRACT_CODES:
        return EndorseError(err.tx_id, err.code.name, err.message)
    return LedgerError(f"gateway call failed ({err.code.name}): {err.message}")


def _events_of(envelope: common_pb2.Envelope) -> tuple[ChaincodeEvent, ...]:
    payload = common_pb2.Payload.FromString(envelope.payload)
    tx = transaction_pb2.Transaction.FromString(payload.data)
    cap = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
    prp = proposal_response_pb2.ProposalResponsePayload.FromString(cap.action.proposal_response_payload)
    action = proposal_pb2.ChaincodeAction.FromString(prp.extension)
    if not action.events:
        return ()
    ev = chaincode_event_pb2.ChaincodeEvent.FromString(action.events)
    return (ChaincodeEvent(ev.event_name, bytes(ev.payload)),)


class _RemoteEvents:
    """A blocking :class:`ciphercare.ledger.api.EventStream` fed by a chaincode-events stream."""

    _END = object()

    def __init__(self, ledger: FabricLedger, start_seq: int, names: frozenset[str] | None) -> None:
        self._ledger = ledger
        self._names = names
        self._queue: queue.Queue[object] = queue.Queue(maxsize=4096)
        self._closed = False
        self._task: Future[None] = asyncio.run_coroutine_threadsafe(self._pump(start_seq), ledger._loop)

    async def _pump(self, start_seq: int) -> None:
        gw = self._ledger._service_gateway()
        network = gw.network(self._ledger.channel)
        try:
            async for ev in network.chaincode_events(self._ledger.chaincode, start_block=start_seq):
                if self._names is not None and ev.event_name not in self._names:
                    continue
                ts = await self._ledger._entry_async(ev.block_number)
                item = CommittedEvent(ev.block_number, ev.transaction_id, ts.timestamp_ms, ev.event_name, ev.payload)
                while not self._closed:
                    try:
                        self._queue.put_nowait(item)
                        break
                    except queue.Full:
                        await asyncio.sleep(0.05)
        except Exception as exc:  # noqa: BLE001 - the reader sees the failure
            self._queue.put(exc)
        finally:
            self._queue.put(self._END)

    def __iter__(self) -> Iterator[CommittedEvent]:
        return self

    def __next__(self) -> CommittedEvent:
        if self._closed:
            raise StopIteration
        item = self._queue.get()
        if item is self._END:
            self._closed = True
            raise StopIteration
        if isinstance(item, Exception):
            self._closed = True
            raise LedgerError(f"event stream failed: {item}") from item
        assert isinstance(item, CommittedEvent)
        return item

    def next_batch(self, max_events: int = 1024) -> list[CommittedEvent]:
        batch = [next(self)]
        while len(batch) < max_events:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, CommittedEvent):
                self._queue.put(item)
                break
            batch.append(item)
        return batch

    def close(self) -> None:
        self._closed = True
        self._task.cancel()
        self._queue.put(self._END)


class FabricLedger:
    """:class:`ciphercare.ledger.api.Ledger` through a Fabric Gateway (a Fabric peer or ``ciphercare ledger serve``)."""

    def __init__(
        self,
        target: str,
        msp: EmbeddedMSP,
        *,
        channel: str = "ciphercare",
        chaincode: str = "ciphercare",
        service_principal: Principal,
        credentials: grpc.ChannelCredentials | None = None,
        server_name_override: str | None = None,
        options: ConnectOptions | None = None,
        msp_id: str = "",
        user_cert_validity: _dt.timedelta = _dt.timedelta(hours=1),
        checkpoint_vkey: str = "",
    ) -> None:
        if user_cert_validity <= _RENEW_BEFORE * 2:
            raise ValueError(f"user certificates must be valid longer than {2 * _RENEW_BEFORE}")
        self.target = target
        self.channel = channel
        self.chaincode = chaincode
        self._msp = msp
        self._msp_id = msp_id
        self._validity = user_cert_validity
        self._options = options or ConnectOptions()
        self._service_principal = service_principal
        self._verifier = CheckpointVerifier.from_vkey(checkpoint_vkey) if checkpoint_vkey else None
        self._enrolled: collections.OrderedDict[Principal, _Enrolment] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self._stats: dict[str, int] = {"committed": 0, "endorse_refused": 0, "commit_invalid": 0}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fabric-gateway", daemon=True)
        self._thread.start()

        async def open_channel() -> grpc.aio.Channel:
            if credentials is not None:
                opts = [("grpc.ssl_target_name_override", server_name_override)] if server_name_override else []
                return grpc.aio.secure_channel(target, credentials, options=opts)
            return grpc.aio.insecure_channel(target)

        self._channel: grpc.aio.Channel = self._run(open_channel(), None)
        self._transparency = access_log_pb2_grpc.AccessLogServiceStub(self._channel)

    # ------------------------------------------------------------------ plumbing

    def _run(self, coro: Any, timeout: float | None) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except FutureTimeout as exc:
            fut.cancel()
            raise LedgerTimeout("", timeout or 0.0) from exc

    def _enrol(self, principal: Principal) -> _Enrolment:
        now = _dt.datetime.now(_dt.UTC)
        with self._lock:
            hit = self._enrolled.get(principal)
            if hit is not None and now < hit.renew_at:
                self._enrolled.move_to_end(principal)
                return hit
        mspid = msp_id_for_org(principal.org) if principal.org else ""
        if self._msp_id and mspid != self._msp_id:
            raise EndorseError("", "PERMISSION_DENIED", f"this node enrols users of {self._msp_id} only, not {mspid}")
        try:
            ident, key = self._msp.enrol(principal, self._validity)
        except (LookupError, ValueError) as exc:
            raise EndorseError("", "PERMISSION_DENIED", f"cannot enrol the caller: {exc}") from exc
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        identity = X509Identity(ident.mspid, ident.cert_pem)
        signer = new_private_key_signer(key)
        gateway = connect(identity, signer, channel=self._channel, options=self._options)
        enrolment = _Enrolment(gateway, identity, signer, now + self._validity - _RENEW_BEFORE)
        with self._lock:
            self._enrolled[principal] = enrolment
            while len(self._enrolled) > _CACHE:
                self._enrolled.popitem(last=False)
        return enrolment

    def _service_gateway(self) -> Gateway:
        return self._enrol(self._service_principal).gateway

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError("ledger is closed")

    # ------------------------------------------------------------------ evaluate / submit

    def _contract(self, principal: Principal, channel: str, contract: str) -> Any:
        return self._enrol(principal).gateway.network(channel or self.channel).contract(self.chaincode, contract)

    async def evaluate_async(
        self, principal: Principal, channel: str, contract: str, function: str, args: Sequence[str]
    ) -> bytes:
        """Evaluate from any event loop: the call runs on this ledger's loop; errors mapped to the ledger API."""
        self._check_open()
        proposal = self._contract(principal, channel, contract).new_proposal(function, arguments=list(args))

        async def call() -> bytes:
            try:
                return await proposal.evaluate()
            except fabric_errors.GatewayError as err:
                raise endorse_error_from(err) from err

        result: bytes = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), self._loop))
        return result

    async def submit_async(
        self, principal: Principal, channel: str, contract: str, function: str, args: Sequence[str]
    ) -> _TxFuture:
        """Endorse and hand to ordering (errors raised here, per stage); the future resolves once committed."""
        self._check_open()
        proposal = self._contract(principal, channel, contract).new_proposal(function, arguments=list(args))
        fut = _TxFuture(proposal.transaction_id)
        fut.set_running_or_notify_cancel()

        async def stages() -> Any:
            try:
                transaction = await proposal.endorse()
            except fabric_errors.GatewayError as err:
                self._count("endorse_refused")
                raise endorse_error_from(err) from err
            events = _events_of(transaction.envelope)
            try:
                submitted = await transaction.submit()
            except fabric_errors.GatewayError as err:
                from ciphercare.ledger.gateway import SubmitError

                raise SubmitError(proposal.transaction_id, f"{err.code.name}: {err.message}") from err
            return submitted, events

        submitted, events = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(stages(), self._loop))

        async def commit() -> Receipt:
            try:
                status = await submitted.status()
            except fabric_errors.GatewayError as err:
                if err.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise LedgerTimeout(proposal.transaction_id, self._options.commit_status_timeout) from err
                raise LedgerError(f"commit status of {proposal.transaction_id}: {err.message}") from err
            if not status.successful:
                self._count("commit_invalid")
                raise CommitError(status.transaction_id, f"committed as invalid: {status.code_name}")
            checkpoint = await self._checkpoint_async(0)
            if checkpoint.size <= status.block_number:
                raise CommitError(status.transaction_id, "the node's checkpoint does not cover the commit yet")
            self._count("committed")
            return Receipt(proposal.transaction_id, status.block_number, checkpoint, submitted.result, events)

        def done(task: Future[Receipt]) -> None:
            exc = task.exception()
            if exc is None:
                fut.set_result(task.result())
            else:
                fut.set_exception(exc)

        asyncio.run_coroutine_threadsafe(commit(), self._loop).add_done_callback(done)
        return fut

    def evaluate(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> bytes:
        """Evaluate on the gateway (deadline: the evaluate default of the connect options)."""
        self._check_open()
        gw = self._enrol(principal).gateway
        proposal = gw.network(self.channel).contract(self.chaincode, contract).new_proposal(function, arguments=args)
        try:
            result: bytes = self._run(proposal.evaluate(), None)
        except fabric_errors.GatewayError as err:
            raise endorse_error_from(err) from err
        return result

    def submit_future(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> _TxFuture:
        """Endorse, submit and await the commit in the background; resolves to a :class:`Receipt`."""
        self._check_open()
        gw = self._enrol(principal).gateway
        proposal = gw.network(self.channel).contract(self.chaincode, contract).new_proposal(function, arguments=args)
        fut = _TxFuture(proposal.transaction_id)

        async def flow() -> Receipt:
            transaction = await proposal.endorse()
            events = _events_of(transaction.envelope)
            submitted = await transaction.submit()
            status = await submitted.status()
            if not status.successful:
                raise CommitError(status.transaction_id, f"committed as invalid: {status.code_name}")
            checkpoint = await self._checkpoint_async(0)
            if checkpoint.size <= status.block_number:
                raise CommitError(status.transaction_id, "the node's checkpoint does not cover the commit yet")
            return Receipt(proposal.transaction_id, status.block_number, checkpoint, submitted.result, events)

        def done(task: Future[Receipt]) -> None:
            exc = task.exception()
            if exc is None:
                fut.set_result(task.result())
            elif isinstance(exc, fabric_errors.GatewayError):
                mapped = endorse_error_from(exc)
                fut.set_exception(mapped)
            else:
                fut.set_exception(exc)

        fut.set_running_or_notify_cancel()
        asyncio.run_coroutine_threadsafe(flow(), self._loop).add_done_callback(done)
        return fut

    def submit(
        self, principal: Principal, contract: str, function: str, args: Sequence[str], *, timeout: float = 10.0
    ) -> Receipt:
        fut = self.submit_future(principal, contract, function, args)
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout as exc:
            raise LedgerTimeout(fut.tx_id, timeout) from exc

    # ------------------------------------------------------------------ events

    def events(self, start_seq: int = 0, names: frozenset[str] | None = None) -> _RemoteEvents:
        if start_seq < 0:
            raise ValueError(f"start_seq must be >= 0, got {start_seq}")
        self._check_open()
        return _RemoteEvents(self, start_seq, names)

    # ------------------------------------------------------------------ transparency (verified)

    async def _signed(self, method: str, request: Any) -> Any:
        from ciphercare.ledger.embedded.gateway_server import sign_transparency_call

        enrolment = self._enrol(self._service_principal)
        metadata = sign_transparency_call(method, request, enrolment.identity.serialize(), enrolment.signer)
        try:
            return await getattr(self._transparency, method)(
                request, metadata=metadata, timeout=self._options.deadline("evaluate", None)
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise LookupError(err.details()) from err
            raise LedgerError(f"{method} failed ({err.code().name}): {err.details()}") from err

    def _verify(self, note: str, vkey: str) -> Checkpoint:
        if self._verifier is None:
            self._verifier = CheckpointVerifier.from_vkey(vkey)  # trust on first use, then pinned
        return self._verifier.verify(note.encode("utf-8"))

    async def _checkpoint_async(self, size: int) -> Checkpoint:
        response = await self._signed("GetCheckpoint", access_log_pb2.GetCheckpointRequest(tree_size=size))
        return self._verify(response.checkpoint.signed_note, response.verifier_key)

    async def _entry_async(self, seq: int) -> LedgerEntry:
        if self._verifier is None:
            await self._checkpoint_async(0)
        response = await self._signed("GetInclusionProof", access_log_pb2.GetInclusionProofRequest(sequence=seq))
        cp = self._verify(response.checkpoint.signed_note, "")
        if not verify_inclusion(leaf_hash(bytes(response.leaf)), seq, cp.size, list(response.hashes), cp.root_hash):
            raise LedgerError(f"entry {seq} does not verify against the node's checkpoint of size {cp.size}")
        leaf = bytes(response.leaf)
        d = decode_leaf(leaf)
        events = tuple(ChaincodeEvent(n, p) for n, p in d.events)
        return LedgerEntry(seq, d.tx_id, d.ts_ms, d.contract, d.function, d.creator_msp, leaf, events)

    def checkpoint(self) -> Checkpoint:
        return self._run(self._checkpoint_async(0), None)  # type: ignore[no-any-return]

    def checkpoint_at(self, size: int) -> Checkpoint | None:
        try:
            cp: Checkpoint = self._run(self._checkpoint_async(size), None)
        except LookupError:
            return None
        return cp

    def public_key_vkey(self) -> str:
        if self._verifier is None:
            self.checkpoint()
        assert self._verifier is not None
        return self._verifier.vkey

    def size(self) -> int:
        return self.checkpoint().size

    def entry(self, seq: int) -> LedgerEntry:
        return self._run(self._entry_async(seq), None)  # type: ignore[no-any-return]

    def entries(self, start: int, end: int) -> list[LedgerEntry]:
        """Entries ``start <= seq < end`` (clipped to the size), each verified against the checkpoint."""
        end = min(end, self.size())

        async def fetch() -> list[LedgerEntry]:
            return [await self._entry_async(seq) for seq in range(start, end)]

        return self._run(fetch(), None)  # type: ignore[no-any-return]

    def verifier_key(self) -> str:
        return self.public_key_vkey()

    def inclusion_proof(self, seq: int, tree_size: int) -> InclusionProof:
        response = self._run(
            self._signed(
                "GetInclusionProof", access_log_pb2.GetInclusionProofRequest(sequence=seq, tree_size=tree_size)
            ),
            None,
        )
        return InclusionProof(response.leaf_index, response.tree_size, tuple(bytes(h) for h in response.hashes))

    def consistency_proof(self, first_size: int, second_size: int) -> ConsistencyProof:
        request = access_log_pb2.GetConsistencyProofRequest(first_tree_size=first_size, second_tree_size=second_size)
        response = self._run(self._signed("GetConsistencyProof", request), None)
        return ConsistencyProof(
            response.first_tree_size, response.second_tree_size, tuple(bytes(h) for h in response.hashes)
        )

    def stats(self) -> dict[str, int]:
        """Counters since open (no network call): transactions committed and refused through this client."""
        with self._lock:
            return dict(self._stats)

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] = self._stats.get(name, 0) + 1

    def wait_for_size(self, size: int, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.size() < size:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._channel.close(), 10.0)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


def open_fabric_ledger(settings: Any, service_principal: Principal) -> FabricLedger:
    """The Fabric-backed ledger from settings (``CIPHERCARE_LEDGER_ENDPOINT`` and friends)."""
    if not settings.ledger_endpoint:
        raise LedgerError("CIPHERCARE_LEDGER_BACKEND=fabric needs CIPHERCARE_LEDGER_ENDPOINT (host:port)")
    credentials = None
    from ciphercare.ledger.fabric.gateway import is_loopback

    if settings.ledger_org:  # the node's own service identity belongs to its organisation
        service_principal = dataclasses.replace(service_principal, org=settings.ledger_org)

    if settings.ledger_tls_ca_path is None and not is_loopback(settings.ledger_endpoint):
        raise LedgerError(
            f"the gateway endpoint {settings.ledger_endpoint} is not loopback: set CIPHERCARE_LEDGER_TLS_CA_PATH "
            "(plaintext only to a loopback address)"
        )
    if settings.ledger_tls_ca_path is not None:
        from ciphercare.ledger.fabric.gateway import secure_channel_credentials

        cert = settings.ledger_tls_client_cert_path.read_bytes() if settings.ledger_tls_client_cert_path else None
        key = settings.ledger_tls_client_key_path.read_bytes() if settings.ledger_tls_client_key_path else None
        credentials = secure_channel_credentials(settings.ledger_tls_ca_path.read_bytes(), cert, key)
    return FabricLedger(
        settings.ledger_endpoint,
        # With ledger_org set this node enrols users of that one organisation, whose CA must exist; without
        # it (development, one node for every org) the org CAs are created on first use, as embedded.
        EmbeddedMSP(settings.resolved_ledger_msp_dir, create_missing=not settings.ledger_org),
        channel=settings.ledger_channel,
        chaincode=settings.ledger_chaincode,
        service_principal=service_principal,
        credentials=credentials,
        server_name_override=settings.ledger_tls_server_name or None,
        options=ConnectOptions(
            evaluate_timeout=settings.ledger_evaluate_timeout_s, commit_status_timeout=settings.ledger_submit_timeout_s
        ),
        msp_id=msp_id_for_org(settings.ledger_org) if settings.ledger_org else "",
        user_cert_validity=_dt.timedelta(seconds=settings.ledger_user_cert_validity_s),
        checkpoint_vkey=settings.ledger_node_vkey,
    )
