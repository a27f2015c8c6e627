"""A Fabric peer's side of the chaincode protocol, enough to drive an external chaincode (chaincode as a service).

With a ``ccaas`` package the PEER dials the chaincode server and calls ``protos.Chaincode/Connect``.
On that stream (``fabric-protos`` ``ChaincodeMessage``):

1. the chaincode sends ``REGISTER`` with its ``ChaincodeID`` (the package id); the peer checks it and
   answers ``REGISTERED`` then ``READY``;
2. per transaction the peer sends ``TRANSACTION`` (or ``INIT``) carrying the ``ChaincodeInput`` and the
   client's ``SignedProposal``; the chaincode asks for state (``GET_STATE``, ``PUT_STATE``, ``DEL_STATE``,
   ``GET_STATE_BY_RANGE`` + ``QUERY_STATE_NEXT`` / ``QUERY_STATE_CLOSE``, ``GET_HISTORY_FOR_KEY``), each
   answered with ``RESPONSE`` or ``ERROR``; it ends with ``COMPLETED`` (a ``Response`` and, optionally, a
   ``ChaincodeEvent``) or ``ERROR``.

What the peer does with those requests is Fabric's simulator, reduced: reads see committed state only
(no read-your-writes), writes are collected into a write set (an empty value is a delete), range and
history results come back in pages of ``query_page_size`` (Fabric's ``internalQueryLimit``), history is
newest first, the event gets the chaincode name and tx id (as ``processChaincodeExecutionResult`` does),
and the write set is applied only by :meth:`LedgerState.commit`. Before simulating, the peer checks what a
peer checks of the proposal: the tx id is SHA-256(nonce || creator), the signature verifies against the
creator's certificate and is low-S, channel and chaincode names match. The transport is the real one:
gRPC (loopback, optional mutual TLS) to the real chaincode server process.

Creators are the embedded MSP's certificates (``ciphercare.ledger.embedded.msp``), so ``consent/caller.py`` reads
the actor exactly as it does embedded; :func:`issue_signer` keeps the private key the MSP generates so the
proposal carries a real signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from unittest import mock

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from fabric_protos.common import common_pb2
from fabric_protos.ledger.queryresult import kv_query_result_pb2 as kv_pb
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import chaincode_event_pb2 as event_pb
from fabric_protos.peer import chaincode_pb2 as cc_pb
from fabric_protos.peer import chaincode_shim_pb2 as shim_pb
from fabric_protos.peer import chaincode_shim_pb2_grpc as shim_grpc
from fabric_protos.peer import proposal_pb2
from fabric_protos.peer import proposal_response_pb2 as response_pb
from google.protobuf.timestamp_pb2 import Timestamp

from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded import msp as msp_module
from ciphercare.ledger.embedded.log import HistoryRecord
from ciphercare.ledger.embedded.msp import EmbeddedMSP, Identity

T = TypeVar("T")
CM = shim_pb.ChaincodeMessage
Message = Any  # a ChaincodeMessage (generated protobuf classes carry no static types)
#: The order of the P-256 group (low-S: s <= n/2).
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


# --- identities and proposals --------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """A creator identity from the embedded MSP plus the private key of its certificate."""

    identity: Identity
    key: ec.EllipticCurvePrivateKey

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 / SHA-256, DER, normalised to low S as Fabric requires."""
        r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
        if s > P256_N // 2:
            s = P256_N - s
        return encode_dss_signature(r, s)


def issue_signer(msp: EmbeddedMSP, principal: Principal) -> Signer:
    """The MSP's own certificate for ``principal``, with the key it generated (captured, not replaced)."""
    keys: list[ec.EllipticCurvePrivateKey] = []
    real = ec.generate_private_key

    def capture(curve: ec.EllipticCurve, *args: Any, **kwargs: Any) -> ec.EllipticCurvePrivateKey:
        key = real(curve, *args, **kwargs)
        keys.append(key)
        return key

    msp.ca_certificate(principal.org)  # create the org CA first, so the only key made below is the client's
    with mock.patch.object(msp_module.ec, "generate_private_key", side_effect=capture):
        identity = msp.identity(principal)
    if len(keys) != 1:
        raise RuntimeError(f"expected the MSP to generate one client key, saw {len(keys)} (cached principal?)")
    cert_key = x509.load_pem_x509_certificate(identity.cert_pem).public_key()
    if not isinstance(cert_key, ec.EllipticCurvePublicKey) or cert_key != keys[0].public_key():
        raise RuntimeError("captured key does not match the issued certificate")
    return Signer(identity, keys[0])


def tx_id_for(nonce: bytes, creator: bytes) -> str:
    """Fabric's ``ComputeTxID``: hex(SHA-256(nonce || serialized creator))."""
    return hashlib.sha256(nonce + creator).hexdigest()


def timestamp_ms(ts_ms: int) -> Timestamp:
    return Timestamp(seconds=ts_ms // 1000, nanos=(ts_ms % 1000) * 1_000_000)


@dataclass(frozen=True)
class Proposal:
    """A signed endorsement proposal and what the peer sends the chaincode for it."""

    signed: proposal_pb2.SignedProposal
    tx_id: str
    channel: str
    chaincode: str
    input: cc_pb.ChaincodeInput


def build_proposal(
    signer: Signer,
    *,
    channel: str,
    chaincode: str,
    function: str,
    args: Sequence[str | bytes],
    ts_ms: int,
    transient: Mapping[str, bytes] | None = None,
    nonce: bytes | None = None,
) -> Proposal:
    """A proposal built as Fabric's clients build one (ChannelHeader, SignatureHeader, ChaincodeProposalPayload)."""
    nonce = os.urandom(24) if nonce is None else nonce
    creator = signer.identity.serialized
    tx_id = tx_id_for(nonce, creator)
    cc_id = cc_pb.ChaincodeID(name=chaincode)
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.ENDORSER_TRANSACTION,
        timestamp=timestamp_ms(ts_ms),
        channel_id=channel,
        tx_id=tx_id,
        extension=proposal_pb2.ChaincodeHeaderExtension(chaincode_id=cc_id).SerializeToString(),
    )
    signature_header = common_pb2.SignatureHeader(creator=creator, nonce=nonce)
    header = common_pb2.Header(
        channel_header=channel_header.SerializeToString(), signature_header=signature_header.SerializeToString()
    )
    cc_input = cc_pb.ChaincodeInput(args=[a if isinstance(a, bytes) else a.encode("utf-8") for a in (function, *args)])
    spec = cc_pb.ChaincodeInvocationSpec(
        chaincode_spec=cc_pb.ChaincodeSpec(type=cc_pb.ChaincodeSpec.GOLANG, chaincode_id=cc_id, input=cc_input)
    )
    payload = proposal_pb2.ChaincodeProposalPayload(input=spec.SerializeToString(), TransientMap=dict(transient or {}))
    proposal = proposal_pb2.Proposal(header=header.SerializeToString(), payload=payload.SerializeToString())
    proposal_bytes = proposal.SerializeToString()
    signed = proposal_pb2.SignedProposal(proposal_bytes=proposal_bytes, signature=signer.sign(proposal_bytes))
    return Proposal(signed, tx_id, channel, chaincode, cc_input)


class ProposalRejected(Exception):
    """The peer refused the proposal before simulating it (as a peer's endorser would)."""


def check_proposal(signed: proposal_pb2.SignedProposal, *, channel: str, chaincode: str) -> str:
    """What an endorser checks before simulating: structure, names, tx id, signature (low S). Returns the tx id."""
    proposal = proposal_pb2.Proposal.FromString(signed.proposal_bytes)
    header = common_pb2.Header.FromString(proposal.header)
    ch = common_pb2.ChannelHeader.FromString(header.channel_header)
    sh = common_pb2.SignatureHeader.FromString(header.signature_header)
    if ch.type != common_pb2.ENDORSER_TRANSACTION:
        raise ProposalRejected(f"invalid header type {ch.type}")
    if ch.channel_id != channel:
        raise ProposalRejected(f"channel {ch.channel_id!r} is not {channel!r}")
    ext = proposal_pb2.ChaincodeHeaderExtension.FromString(ch.extension)
    if ext.chaincode_id.name != chaincode:
        raise ProposalRejected(f"chaincode {ext.chaincode_id.name!r} is not {chaincode!r}")
    if len(sh.nonce) == 0:
        raise ProposalRejected("nonce is empty")
    if ch.tx_id != tx_id_for(sh.nonce, sh.creator):
        raise ProposalRejected("tx id does not match nonce and creator")
    creator = identities_pb2.SerializedIdentity.FromString(sh.creator)
    cert = x509.load_pem_x509_certificate(creator.id_bytes)
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ProposalRejected("creator key is not ECDSA")
    _, s = decode_dss_signature(signed.signature)
    if s > P256_N // 2:
        raise ProposalRejected("signature is not low-S")
    try:
        public_key.verify(signed.signature, signed.proposal_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ProposalRejected("signature does not verify against the creator certificate") from None
    return ch.tx_id


# --- world state --------------------------------------------------------------------------------


class LedgerState:
    """Committed world state with per-key history; also a ``ciphercare.ledger.embedded.runtime.StateReader``."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self._history: dict[str, list[HistoryRecord]] = {}
        self.height = 0

    def get(self, key: str) -> bytes | None:
        return self.values.get(key)

    def range(self, start: str, end: str) -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self.values.items() if k >= start and (not end or k < end))

    def history(self, key: str) -> list[HistoryRecord]:
        """Newest first (Fabric 2.x)."""
        return list(reversed(self._history.get(key, [])))

    def commit(self, tx_id: str, ts_ms: int, writes: Iterable[tuple[str, bytes | None]]) -> None:
        """Apply a valid transaction's write set (one block per transaction)."""
        self.height += 1
        for key, value in writes:
            if value is None:
                self.values.pop(key, None)
            else:
                self.values[key] = value
            self._history.setdefault(key, []).append(
                HistoryRecord(seq=self.height, tx_id=tx_id, ts_ms=ts_ms, value=value, is_delete=value is None)
            )


# --- the peer --------------------------------------------------------------------------------------


@dataclass
class Simulation:
    """The chaincode's answer to one proposal, as the peer saw it."""

    tx_id: str
    status: int  # the Response status; 0 when the chaincode answered ERROR instead of COMPLETED
    payload: bytes
    message: str
    writes: tuple[tuple[str, bytes | None], ...]
    event: event_pb.ChaincodeEvent | None
    error: str | None = None  # the payload of an ERROR message
    requests: list[str] = field(default_factory=list)  # the message types the chaincode sent, in order

    @property
    def ok(self) -> bool:
        return self.error is None and 0 < self.status < 400


class _PeerRefusal(Exception):
    pass


class _Query:
    def __init__(self, results: list[bytes], page: int) -> None:
        self.results = results
        self.page = page
        self.pos = 0

    def next_page(self, query_id: str) -> shim_pb.QueryResponse:
        chunk = self.results[self.pos : self.pos + self.page]
        self.pos += len(chunk)
        return shim_pb.QueryResponse(
            results=[shim_pb.QueryResultBytes(resultBytes=b) for b in chunk],
            has_more=self.pos < len(self.results),
            id=query_id,
        )


class ChaincodePeer:
    """Dials a chaincode server, runs the registration handshake and simulates proposals against a LedgerState."""

    def __init__(
        self,
        target: str,
        *,
        expected_ccid: str,
        state: LedgerState,
        channel: str = "ciphercare",
        chaincode: str = "ciphercare",
        credentials: grpc.ChannelCredentials | None = None,
        query_page_size: int = 1000,
        timeout_s: float = 20.0,
        refuse: Iterable[int] = (),
    ) -> None:
        self.target = target
        self.expected_ccid = expected_ccid
        self.state = state
        self.channel_id = channel
        self.chaincode = chaincode
        self._credentials = credentials
        self.query_page_size = query_page_size
        self.timeout_s = timeout_s
        self.refuse = set(refuse)  # request types answered with ERROR (fault injection)
        self._outbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._txs: dict[str, asyncio.Queue[Message]] = {}
        self._channel: grpc.aio.Channel | None = None
        self._reader: asyncio.Task[None] | None = None
        self.registered_as: str | None = None

    async def _requests(self) -> AsyncIterator[Message]:
        while True:
            msg = await self._outbox.get()
            if msg is None:
                return
            yield msg

    async def connect(self) -> None:
        """Open Connect, expect REGISTER with the expected package id, answer REGISTERED and READY."""
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        else:
            self._channel = grpc.aio.secure_channel(self.target, self._credentials)
        call = shim_grpc.ChaincodeStub(self._channel).Connect(self._requests())
        first = await asyncio.wait_for(call.read(), self.timeout_s)
        if first is grpc.aio.EOF or first.type != CM.REGISTER:
            raise ProposalRejected(f"expected REGISTER, got {first!r}")
        name = cc_pb.ChaincodeID.FromString(first.payload).name
        self.registered_as = name
        if name != self.expected_ccid:
            await self._outbox.put(CM(type=CM.ERROR, payload=f"chaincode {name} is not {self.expected_ccid}".encode()))
            await self._outbox.put(None)
            raise ProposalRejected(f"chaincode registered as {name!r}, expected {self.expected_ccid!r}")
        await self._outbox.put(CM(type=CM.REGISTERED))
        await self._outbox.put(CM(type=CM.READY))
        self._reader = asyncio.create_task(self._read(call))

    async def _read(self, call: Any) -> None:
        while True:  # read() only: grpc.aio forbids mixing read() with async iteration
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            queue = self._txs.get(msg.channel_id + msg.txid)
            if queue is not None:
                queue.put_nowait(msg)

    async def close(self) -> None:
        await self._outbox.put(None)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await self._reader
        if self._channel is not None:
            await self._channel.close()

    async def simulate(self, proposal: Proposal, *, init: bool = False) -> Simulation:
        """Send the proposal to the chaincode and serve its state requests until COMPLETED or ERROR."""
        check_proposal(proposal.signed, channel=self.channel_id, chaincode=self.chaincode)
        return await self.send_raw(
            CM(
                type=CM.INIT if init else CM.TRANSACTION,
                payload=proposal.input.SerializeToString(),
                txid=proposal.tx_id,
                channel_id=proposal.channel,
                proposal=proposal.signed,
            )
        )

    async def send_raw(self, message: Message) -> Simulation:
        """Send any TRANSACTION/INIT message (tests send malformed ones) and run it to its end."""
        key = message.channel_id + message.txid
        if key in self._txs:
            raise ProposalRejected(f"duplicate tx {message.txid}")
        queue: asyncio.Queue[Message] = asyncio.Queue()
        self._txs[key] = queue
        writes: dict[str, bytes | None] = {}
        queries: dict[str, _Query] = {}
        seen: list[str] = []
        try:
            await self._outbox.put(message)
            while True:
                msg = await asyncio.wait_for(queue.get(), self.timeout_s)
                seen.append(CM.Type.Name(msg.type))
                if msg.type == CM.COMPLETED:
                    response = response_pb.Response.FromString(msg.payload)
                    event = None
                    if response.status < 400 and msg.HasField("chaincode_event"):
                        event = event_pb.ChaincodeEvent()
                        event.CopyFrom(msg.chaincode_event)
                        # the peer names the event (processChaincodeExecutionResult)
                        event.chaincode_id = self.chaincode
                        event.tx_id = message.txid
                    kept = tuple(sorted(writes.items())) if response.status < 400 else ()
                    return Simulation(
                        message.txid, response.status, bytes(response.payload), response.message, kept, event,
                        requests=seen,
                    )
                if msg.type == CM.ERROR:
                    text = bytes(msg.payload).decode("utf-8", "replace")
                    return Simulation(message.txid, 0, b"", "", (), None, error=text, requests=seen)
                try:
                    if msg.type in self.refuse:
                        raise _PeerRefusal(f"injected fault for {CM.Type.Name(msg.type)}")
                    payload = self._answer(msg, writes, queries)
                    reply = CM(type=CM.RESPONSE, payload=payload, txid=msg.txid, channel_id=msg.channel_id)
                except _PeerRefusal as exc:
                    reply = CM(type=CM.ERROR, payload=str(exc).encode(), txid=msg.txid, channel_id=msg.channel_id)
                await self._outbox.put(reply)
        finally:
            del self._txs[key]

    def _answer(self, msg: Message, writes: dict[str, bytes | None], queries: dict[str, _Query]) -> bytes:
        t = msg.type
        if t == CM.GET_STATE:
            req = shim_pb.GetState.FromString(msg.payload)
            self._public(req.collection)
            return self.state.get(self._key(req.key)) or b""
        if t == CM.PUT_STATE:
            put = shim_pb.PutState.FromString(msg.payload)
            self._public(put.collection)
            writes[self._key(put.key)] = bytes(put.value) or None
            return b""
        if t == CM.DEL_STATE:
            delete = shim_pb.DelState.FromString(msg.payload)
            self._public(delete.collection)
            writes[self._key(delete.key)] = None
            return b""
        if t == CM.GET_STATE_BY_RANGE:
            rng = shim_pb.GetStateByRange.FromString(msg.payload)
            self._public(rng.collection)
            if rng.metadata:
                raise _PeerRefusal("paginated range queries are not served by this test peer")
            rows = self.state.range(rng.startKey, rng.endKey)
            results = [kv_pb.KV(namespace=self.chaincode, key=k, value=v).SerializeToString() for k, v in rows]
            return self._open_query(results, queries)
        if t == CM.GET_HISTORY_FOR_KEY:
            hist = shim_pb.GetHistoryForKey.FromString(msg.payload)
            mods = [
                kv_pb.KeyModification(
                    tx_id=r.tx_id, value=r.value or b"", timestamp=timestamp_ms(r.ts_ms), is_delete=r.is_delete
                ).SerializeToString()
                for r in self.state.history(self._key(hist.key))
            ]
            return self._open_query(mods, queries)
        if t == CM.QUERY_STATE_NEXT:
            query_id = shim_pb.QueryStateNext.FromString(msg.payload).id
            query = queries.get(query_id)
            if query is None:
                raise _PeerRefusal(f"query iterator not found: {query_id}")
            return query.next_page(query_id).SerializeToString()
        if t == CM.QUERY_STATE_CLOSE:
            query_id = shim_pb.QueryStateClose.FromString(msg.payload).id
            queries.pop(query_id, None)
            return shim_pb.QueryResponse(has_more=False, id=query_id).SerializeToString()
        if t == CM.GET_QUERY_RESULT:
            raise _PeerRefusal("ExecuteQuery not supported for leveldb")
        raise _PeerRefusal(f"[{msg.txid}] Fabric side handler cannot handle message ({CM.Type.Name(t)})")

    def _open_query(self, results: list[bytes], queries: dict[str, _Query]) -> bytes:
        query_id = f"q{len(queries) + 1}-{os.urandom(4).hex()}"
        query = _Query(results, self.query_page_size)
        queries[query_id] = query
        return query.next_page(query_id).SerializeToString()

    @staticmethod
    def _key(key: str) -> str:
        if not key:
            raise _PeerRefusal("key must not be an empty string")
        return key

    @staticmethod
    def _public(collection: str) -> None:
        if collection:
            raise _PeerRefusal("private data collections are not configured on this channel")


class SyncPeer:
    """A :class:`ChaincodePeer` on its own event loop thread, for synchronous tests."""

    def __init__(self, factory: Callable[[], ChaincodePeer]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-peer", daemon=True)
        self._thread.start()
        self.peer: ChaincodePeer = self.run(self._make(factory))
        self.run(self.peer.connect())

    @staticmethod
    async def _make(factory: Callable[[], ChaincodePeer]) -> ChaincodePeer:
        return factory()  # built inside the loop: its queues belong to it

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.peer.close(), 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
