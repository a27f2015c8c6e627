"""The embedded ledger as a node speaking the Fabric Gateway protocol (``gateway.Gateway`` over gRPC).

``ciphercare ledger serve`` runs this. Each request is checked as a Fabric peer
checks it, in this order, and refused with the status in brackets:

1. structure: ``SignedProposal`` / ``Proposal`` / ``Header`` / ``ChannelHeader`` /
   ``SignatureHeader`` / ``ChaincodeProposalPayload`` / ``ChaincodeInvocationSpec`` (or the
   ``Envelope`` / ``Payload`` / ``Transaction`` / ``ChaincodeActionPayload`` chain) parse, the header
   type is ``ENDORSER_TRANSACTION``, the request's channel and tx id equal the header's
   [INVALID_ARGUMENT];
2. channel and chaincode names are the ones this node serves [NOT_FOUND];
3. the creator is an X.509 certificate issued by a CA of a configured MSP, currently valid,
   not a CA [UNAUTHENTICATED];
4. the signature is a canonical DER, low-S ECDSA P-256 signature over the signed bytes by the
   creator's key [UNAUTHENTICATED];
5. the tx id is ``hex(SHA-256(nonce || creator))`` [INVALID_ARGUMENT];
6. (endorse, submit) the tx id is not already on the ledger or in flight [ALREADY_EXISTS];
7. (submit) the envelope carries this node's endorsement over exactly the proposal response
   payload, whose proposal hash matches the envelope's header and payload [PERMISSION_DENIED].

Blocks: one block per committed transaction, block number = the transaction's leaf index
(``seq``) in the RFC 9162 log; the MVCC version of a key is ``Version{block_num: seq of its last
write, tx_num: 0}``. Unlike Fabric, invalid transactions are not appended to the log; their
``TxValidationCode`` (``MVCC_READ_CONFLICT``, ``PHANTOM_READ_CONFLICT``) is kept in memory for
``CommitStatus`` with ``block_number`` = the log size when they were rejected.

Contract refusals: the contract's ``"CODE: detail"`` message picks the gRPC status
(INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION, ALREADY_EXISTS; Fabric's
own gateway says UNKNOWN / ABORTED here) and the ``gateway.ErrorDetail`` carries
``"chaincode response 500, <message>"`` as a Fabric gateway does.

The same server also serves the transparency API (checkpoints, inclusion and consistency
proofs with the leaves) as the ``GetCheckpoint`` / ``GetInclusionProof`` /
``GetConsistencyProof`` methods of ``ciphercare.v1.AccessLogService``, for channel members
only: each call carries the caller's serialized identity and a signature over the method name,
a millisecond timestamp and the request bytes in metadata (see :func:`sign_transparency_call`).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as _dt
import functools
import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import chaincode_event_pb2, chaincode_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from ciphercare.ledger.api import ChaincodeEvent, Checkpoint, CommitError, EndorseError, LedgerError, Principal
from ciphercare.ledger.embedded.ledger import EmbeddedLedger, TxFuture
from ciphercare.ledger.embedded.log import StateView
from ciphercare.ledger.embedded.msp import EmbeddedMSP, Identity, msp_id_for_org
from ciphercare.ledger.embedded.runtime import BatchOverlay, ExecutionResult, StateReader, endorse_error
from ciphercare.ledger.fabric.proposal import transaction_id
from ciphercare.ledger.fabric.signer import SignatureError, new_private_key_signer, verify
from ciphercare.v1 import access_log_pb2, access_log_pb2_grpc
from ciphercare.v1 import common_pb2 as cc_common_pb2

log = logging.getLogger(__name__)

GATEWAY_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
NODE_ORG = "ciphercare-node"
_MAX_INVALID_KEPT = 100_000
_CREATOR_CACHE = 4096
_EVENT_CHUNK = 256
#: How far a proposal's timestamp may be from the node's clock (endorse, evaluate and submit).
TIMESTAMP_WINDOW_MS = 5 * 60 * 1000
TRANSPARENCY_CREATOR_KEY = "ciphercare-creator-bin"
TRANSPARENCY_SIGNATURE_KEY = "ciphercare-signature-bin"
TRANSPARENCY_TIME_KEY = "ciphercare-timestamp-ms"
TRANSPARENCY_SKEW_MS = 5 * 60 * 1000

_CONTRACT_CODES = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
}


# ---------------------------------------------------------------------------- errors


class RequestRefused(Exception):
    """A request refused with a gRPC status, a message and optional per-peer details."""

    def __init__(self, code: grpc.StatusCode, message: str, details: Sequence[gateway_pb2.ErrorDetail] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = tuple(details)


class TransactionInvalid(CommitError):
    """The writer refused an endorsed transaction at commit; ``code`` is its ``TxValidationCode``."""

    def __init__(self, tx_id: str, message: str, code: int) -> None:
        super().__init__(tx_id, message)
        self.code = code


def _invalid(message: str) -> NoReturn:
    raise RequestRefused(grpc.StatusCode.INVALID_ARGUMENT, message)


def _unauthenticated(message: str) -> NoReturn:
    raise RequestRefused(grpc.StatusCode.UNAUTHENTICATED, message)


def _parse(cls: type[Any], data: bytes, what: str) -> Any:
    msg = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise RequestRefused(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {what}: {exc}") from exc
    return msg


def status_details(code: grpc.StatusCode, message: str, details: Sequence[gateway_pb2.ErrorDetail]) -> bytes:
    """``google.rpc.Status`` with ``gateway.ErrorDetail`` entries, for the ``grpc-status-details-bin`` trailer."""
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=code.value[0], message=message, details=packed).SerializeToString()


# ---------------------------------------------------------------------------- MSPs


@dataclass(frozen=True)
class _Creator:
    identity: Identity
    public_key: ec.EllipticCurvePublicKey
    not_after: _dt.datetime


class MspRegistry:
    """The configured MSPs: MSP id -> CA certificates whose issued identities are channel members.

    Loaded from ``directory/<MSPID>/ca-cert.pem`` (the embedded MSP's layout); an MSP id not known yet
    is looked up in the directory again (whoever can write there administers the channel's MSPs).
    """

    def __init__(self, directory: Path | None = None, cas: Mapping[str, Sequence[x509.Certificate]] | None = None):
        self._dir = directory
        self._cas: dict[str, list[x509.Certificate]] = {k: list(v) for k, v in (cas or {}).items()}
        self._cache: collections.OrderedDict[bytes, _Creator] = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, msp_id: str, ca: x509.Certificate) -> None:
        with self._lock:
            self._cas.setdefault(msp_id, []).append(ca)

    def _cas_for(self, msp_id: str) -> list[x509.Certificate]:
        with self._lock:
            cas = self._cas.get(msp_id)
        if cas is None and self._dir is not None and msp_id and "/" not in msp_id and not msp_id.startswith("."):
            path = self._dir / msp_id / "ca-cert.pem"
            if path.is_file():
                cas = [x509.load_pem_x509_certificate(path.read_bytes())]
                with self._lock:
                    self._cas[msp_id] = cas
        return cas or []

    def validate(self, creator: bytes) -> tuple[Identity, ec.EllipticCurvePublicKey]:
        """The creator's identity and key if it is a current member of a configured MSP; else UNAUTHENTICATED."""
        now = _dt.datetime.now(_dt.UTC)
        with self._lock:
            hit = self._cache.get(creator)
            if hit is not None:
                self._cache.move_to_end(creator)
        if hit is not None and now <= hit.not_after:
            return hit.identity, hit.public_key
        sid = _parse(identities_pb2.SerializedIdentity, creator, "creator (msp.SerializedIdentity)")
        cas = self._cas_for(sid.mspid)
        if not cas:
            _unauthenticated(f"creator MSP {sid.mspid!r} is not a member of this channel")
        try:
            cert = x509.load_pem_x509_certificate(bytes(sid.id_bytes))
        except ValueError:
            _unauthenticated("creator identity is not a PEM X.509 certificate")
        issuer = None
        for ca in cas:
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, Exception):  # noqa: BLE001 - any failure means "not this CA"
                continue
            issuer = ca
            break
        if issuer is None:
            _unauthenticated(f"creator certificate was not issued by a CA of {sid.mspid}")
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            _unauthenticated("creator certificate is expired or not yet valid")
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            if bc.ca:
                _unauthenticated("creator certificate is a CA certificate")
        except x509.ExtensionNotFound:
            pass
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            _unauthenticated("creator key is not ECDSA P-256")
        der = cert.public_bytes(serialization.Encoding.DER)
        identity = Identity(sid.mspid, bytes(sid.id_bytes), hashlib.sha256(der).hexdigest(), creator)
        with self._lock:
            self._cache[creator] = _Creator(identity, key, cert.not_valid_after_utc)
            while len(self._cache) > _CREATOR_CACHE:
                self._cache.popitem(last=False)
        return identity, key


# ---------------------------------------------------------------------------- proposals


@dataclass(frozen=True)
class CheckedProposal:
    """A proposal that passed every check."""

    tx_id: str
    channel: str
    chaincode: str
    ts_ms: int
    creator: bytes
    identity: Identity
    contract: str
    function: str
    args: tuple[str, ...]
    channel_header: bytes
    signature_header: bytes
    payload_without_transient: bytes


def _ts_ms(header: common_pb2.ChannelHeader) -> int:
    """The proposal's timestamp in ms, refused unless within :data:`TIMESTAMP_WINDOW_MS` of the node's clock.

    The contracts take the transaction time from it (record times, ``Check`` at ""), so a client must
    not choose it freely; a Fabric peer does not check it (docs/FABRIC.md).
    """
    if not header.HasField("timestamp"):
        _invalid("channel header has no timestamp")
    ts = int(header.timestamp.seconds) * 1000 + int(header.timestamp.nanos) // 1_000_000
    skew = ts - time.time_ns() // 1_000_000
    if abs(skew) > TIMESTAMP_WINDOW_MS:
        _invalid(
            f"transaction timestamp is {skew / 1000:+.0f} s from the node's clock (allowed ±"
            f"{TIMESTAMP_WINDOW_MS // 1000} s)"
        )
    return ts


def _split_transaction_name(name: str) -> tuple[str, str]:
    contract, sep, function = name.partition(":")
    return (contract, function) if sep else ("", name)


class PeerChecks:
    """The checks a peer makes, shared by every RPC."""

    def __init__(self, channel: str, chaincode: str, msps: MspRegistry) -> None:
        self.channel = channel
        self.chaincode = chaincode
        self.msps = msps

    def check_channel(self, channel_id: str) -> None:
        if channel_id != self.channel:
            raise RequestRefused(grpc.StatusCode.NOT_FOUND, f"channel {channel_id!r} does not exist on this node")

    def check_chaincode(self, name: str) -> None:
        if name != self.chaincode:
            raise RequestRefused(
                grpc.StatusCode.NOT_FOUND, f"chaincode {name!r} is not deployed on channel {self.channel!r}"
            )

    def authenticate(self, creator: bytes, signed: bytes, signature: bytes) -> Identity:
        identity, key = self.msps.validate(creator)
        try:
            verify(key, signed, signature)
        except SignatureError as exc:
            _unauthenticated(f"access denied: {exc}")
        return identity

    def headers(self, header_bytes: bytes) -> tuple[common_pb2.ChannelHeader, common_pb2.SignatureHeader, bytes, bytes]:
        header = _parse(common_pb2.Header, header_bytes, "header")
        if not header.channel_header or not header.signature_header:
            _invalid("header lacks a channel header or a signature header")
        ch = _parse(common_pb2.ChannelHeader, header.channel_header, "channel header")
        sh = _parse(common_pb2.SignatureHeader, header.signature_header, "signature header")
        if ch.type != common_pb2.HeaderType.ENDORSER_TRANSACTION:
            _invalid(
                f"header type {ch.type} is not ENDORSER_TRANSACTION ({common_pb2.HeaderType.ENDORSER_TRANSACTION})"
            )
        if not sh.nonce:
            _invalid("signature header has no nonce")
        if not sh.creator:
            _invalid("signature header has no creator")
        return ch, sh, bytes(header.channel_header), bytes(header.signature_header)

    def check_tx_id(self, ch: common_pb2.ChannelHeader, sh: common_pb2.SignatureHeader, request_tx_id: str) -> None:
        expected = transaction_id(bytes(sh.nonce), bytes(sh.creator))
        if ch.tx_id != expected:
            _invalid(f"transaction id {ch.tx_id!r} is not SHA-256(nonce || creator) = {expected}")
        if request_tx_id != ch.tx_id:
            _invalid(f"request transaction id {request_tx_id!r} does not match the proposal's {ch.tx_id!r}")

    def check_header_chaincode(self, ch: common_pb2.ChannelHeader) -> None:
        ext = _parse(proposal_pb2.ChaincodeHeaderExtension, ch.extension, "chaincode header extension")
        self.check_chaincode(ext.chaincode_id.name)

    def proposal(
        self, signed: proposal_pb2.SignedProposal, request_tx_id: str, request_channel: str
    ) -> CheckedProposal:
        """Check a ``SignedProposal`` of an Evaluate or Endorse request."""
        if not signed.proposal_bytes:
            _invalid("proposed_transaction is missing or has no proposal bytes")
        proposal = _parse(proposal_pb2.Proposal, signed.proposal_bytes, "proposal")
        ch, sh, ch_bytes, sh_bytes = self.headers(proposal.header)
        if request_channel != ch.channel_id:
            _invalid(f"request channel {request_channel!r} does not match the proposal's {ch.channel_id!r}")
        self.check_channel(ch.channel_id)
        self.check_header_chaincode(ch)
        cpp = _parse(proposal_pb2.ChaincodeProposalPayload, proposal.payload, "chaincode proposal payload")
        spec = _parse(chaincode_pb2.ChaincodeInvocationSpec, cpp.input, "chaincode invocation spec")
        self.check_chaincode(spec.chaincode_spec.chaincode_id.name)
        identity = self.authenticate(bytes(sh.creator), bytes(signed.proposal_bytes), bytes(signed.signature))
        self.check_tx_id(ch, sh, request_tx_id)
        args_raw = list(spec.chaincode_spec.input.args)
        if not args_raw or not args_raw[0]:
            _invalid("chaincode input has no transaction name")
        try:
            args = [bytes(a).decode("utf-8") for a in args_raw]
        except UnicodeDecodeError:
            _invalid("chaincode arguments must be UTF-8 text")
        contract, function = _split_transaction_name(args[0])
        if not function:
            _invalid(f"transaction name {args[0]!r} has no function")
        stripped = proposal_pb2.ChaincodeProposalPayload(input=cpp.input).SerializeToString()
        return CheckedProposal(
            tx_id=ch.tx_id,
            channel=ch.channel_id,
            chaincode=self.chaincode,
            ts_ms=_ts_ms(ch),
            creator=bytes(sh.creator),
            identity=identity,
            contract=contract,
            function=function,
            args=tuple(args[1:]),
            channel_header=ch_bytes,
            signature_header=sh_bytes,
            payload_without_transient=stripped,
        )

    def signed_request(self, request: bytes, signature: bytes, cls: type[Any], what: str) -> tuple[Any, Identity]:
        """A ``SignedCommitStatusRequest`` / ``SignedChaincodeEventsRequest``: parse, authenticate."""
        if not request:
            _invalid(f"{what} is empty")
        msg = _parse(cls, request, what)
        self.check_channel(msg.channel_id)
        identity = self.authenticate(bytes(msg.identity), request, signature)
        return msg, identity


# ---------------------------------------------------------------------------- simulation and MVCC


def proposal_hash(channel_header: bytes, signature_header: bytes, payload_without_transient: bytes) -> bytes:
    """``protoutil.GetProposalHash2``: SHA-256 over the header parts and the transient-free payload."""
    return hashlib.sha256(channel_header + signature_header + payload_without_transient).digest()


class RecordingView:
    """A committed-state view that records what a simulation read, with versions (its read set)."""

    def __init__(self, view: StateView) -> None:
        self._view = view
        self.reads: dict[str, int | None] = {}
        self.ranges: list[tuple[str, str, list[tuple[str, int | None]]]] = []

    def get(self, key: str) -> bytes | None:
        if key not in self.reads:
            self.reads[key] = self._view.version(key)
        return self._view.get(key)

    def range(self, start: str, end: str) -> list[tuple[str, bytes]]:
        rows = self._view.range(start, end)
        self.ranges.append((start, end, [(k, self._view.version(k)) for k, _ in rows]))
        return rows

    def history(self, key: str) -> Any:
        return self._view.history(key)  # history reads are not validated, as in Fabric


def build_rwset(
    namespace: str, recorder: RecordingView, writes: Iterable[tuple[str, bytes | None]]
) -> rwset_pb2.TxReadWriteSet:
    """The ``TxReadWriteSet`` of a simulation, as a peer writes it into ``ChaincodeAction.results``."""
    kv = kv_rwset_pb2.KVRWSet()
    for key in sorted(recorder.reads):
        seq = recorder.reads[key]
        read = kv.reads.add(key=key)
        if seq is not None:
            read.version.block_num = seq
            read.version.tx_num = 0
    for start, end, rows in recorder.ranges:
        info = kv.range_queries_info.add(start_key=start, end_key=end, itr_exhausted=True)
        for key, seq in rows:
            read = info.raw_reads.kv_reads.add(key=key)
            if seq is not None:
                read.version.block_num = seq
                read.version.tx_num = 0
    for key, value in writes:
        kv.writes.add(key=key, is_delete=value is None, value=value or b"")
    return rwset_pb2.TxReadWriteSet(
        data_model=rwset_pb2.TxReadWriteSet.KV,
        ns_rwset=[rwset_pb2.NsReadWriteSet(namespace=namespace, rwset=kv.SerializeToString())],
    )


def _read_version(read: kv_rwset_pb2.KVRead) -> int | None:
    return int(read.version.block_num) if read.HasField("version") else None


@dataclass(frozen=True)
class EndorsedTransaction:
    """What the writer commits for a submitted envelope (implements ``embedded.PreparedTransaction``)."""

    tx_id: str
    payload: bytes
    kv: kv_rwset_pb2.KVRWSet
    events: tuple[ChaincodeEvent, ...]

    def validate(self, view: StateView, overlay: BatchOverlay) -> ExecutionResult:
        for read in self.kv.reads:
            if read.key in overlay.values or view.version(read.key) != _read_version(read):
                raise TransactionInvalid(
                    self.tx_id, f"read of {read.key!r} is stale", transaction_pb2.MVCC_READ_CONFLICT
                )
        for info in self.kv.range_queries_info:
            start, end = info.start_key, info.end_key
            if any(k >= start and (not end or k < end) for k in overlay.values):
                raise TransactionInvalid(self.tx_id, "range changed", transaction_pb2.PHANTOM_READ_CONFLICT)
            now = [(k, view.version(k)) for k, _ in view.range(start, end)]
            then = [(r.key, _read_version(r)) for r in info.raw_reads.kv_reads]
            if now != then:
                raise TransactionInvalid(self.tx_id, "range changed", transaction_pb2.PHANTOM_READ_CONFLICT)
        writes = tuple((w.key, None if w.is_delete else bytes(w.value)) for w in self.kv.writes)
        return ExecutionResult(self.tx_id, 200, self.payload, "", writes, self.events)


# ---------------------------------------------------------------------------- the servicer


def _endorser_identity(msp: EmbeddedMSP) -> tuple[Identity, ec.EllipticCurvePrivateKey]:
    principal = Principal("peer0", NODE_ORG, frozenset({"peer"}), "ciphercare-ledger-node")
    return msp.enrol(principal, _dt.timedelta(days=365))


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    """``gateway.Gateway`` over an :class:`EmbeddedLedger`."""

    def __init__(
        self,
        ledger: EmbeddedLedger,
        msps: MspRegistry,
        *,
        address: str = "",
        node_msp: EmbeddedMSP | None = None,
        on_request: Callable[[str, Message], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.checks = PeerChecks(ledger.channel, ledger.chaincode_name, msps)
        self.address = address
        self._endorser, key = _endorser_identity(node_msp or ledger.msp)
        self._sign = new_private_key_signer(key)
        self._endorser_key = key.public_key()
        msps.add(self._endorser.mspid, x509.load_pem_x509_certificate(self._ca_pem(node_msp or ledger.msp)))
        self._inflight: dict[str, TxFuture] = {}
        self._invalid: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._on_request = on_request
        self._notifier: threading.Thread | None = None
        self._signal: asyncio.Event | None = None
        self._stopping = False

    @staticmethod
    def _ca_pem(msp: EmbeddedMSP) -> bytes:
        return msp.ca_certificate(NODE_ORG)

    @property
    def endorser_msp_id(self) -> str:
        return self._endorser.mspid

    # -- plumbing

    async def _abort(self, context: grpc.aio.ServicerContext, exc: RequestRefused) -> NoReturn:
        if exc.details:
            context.set_trailing_metadata(
                (("grpc-status-details-bin", status_details(exc.code, exc.message, exc.details)),)
            )
        await context.abort(exc.code, exc.message)
        raise AssertionError("unreachable")  # pragma: no cover

    def _detail(self, message: str) -> gateway_pb2.ErrorDetail:
        return gateway_pb2.ErrorDetail(address=self.address, msp_id=self._endorser.mspid, message=message)

    def _contract_refusal(self, err: EndorseError, stage: str) -> RequestRefused:
        code = _CONTRACT_CODES.get(err.code, grpc.StatusCode.ABORTED)
        text = f"{err.code}: {err.message}" if err.code in _CONTRACT_CODES else err.message
        return RequestRefused(code, f"{stage}: {text}", [self._detail(f"chaincode response 500, {text}")])

    def _capture(self, method: str, request: Message) -> None:
        if self._on_request is not None:
            self._on_request(method, request)

    def _simulate(self, p: CheckedProposal, read_only: bool) -> tuple[ExecutionResult, RecordingView]:
        with self.ledger.snapshot() as view:
            recorder = RecordingView(view)
            reader: StateReader = recorder
            res = self.ledger.runtime.execute(
                reader,
                None,
                p.identity,
                p.contract,
                p.function,
                p.args,
                tx_id=p.tx_id,
                ts_ms=p.ts_ms,
                read_only=read_only,
            )
        return res, recorder

    def _duplicate(self, tx_id: str) -> bool:
        with self._lock:
            if tx_id in self._inflight or tx_id in self._invalid:
                return True
        return self.ledger.entry_by_tx_id(tx_id) is not None

    # -- Evaluate

    async def Evaluate(
        self, request: gateway_pb2.EvaluateRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.EvaluateResponse:
        self._capture("Evaluate", request)
        try:
            p = self.checks.proposal(request.proposed_transaction, request.transaction_id, request.channel_id)
            res, _ = self._simulate(p, read_only=True)
            if not res.ok:
                raise self._contract_refusal(
                    endorse_error(p.tx_id, res.message), "evaluate call to endorser returned error"
                )
        except RequestRefused as exc:
            await self._abort(context, exc)
        return gateway_pb2.EvaluateResponse(
            result=proposal_response_pb2.Response(status=res.status, message=res.message, payload=res.payload)
        )

    # -- Endorse

    async def Endorse(
        self, request: gateway_pb2.EndorseRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.EndorseResponse:
        self._capture("Endorse", request)
        try:
            p = self.checks.proposal(request.proposed_transaction, request.transaction_id, request.channel_id)
            if self._duplicate(p.tx_id):
                raise RequestRefused(grpc.StatusCode.ALREADY_EXISTS, f"duplicate transaction found [{p.tx_id}]")
            res, recorder = self._simulate(p, read_only=False)
            if not res.ok:
                raise self._contract_refusal(endorse_error(p.tx_id, res.message), "failed to endorse transaction")
            if len(res.events) > 1:
                raise RequestRefused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "failed to endorse transaction: a Fabric transaction carries at most one chaincode event",
                )
            envelope = self._prepare(p, res, recorder)
        except RequestRefused as exc:
            await self._abort(context, exc)
        return gateway_pb2.EndorseResponse(prepared_transaction=envelope)

    def _prepare(self, p: CheckedProposal, res: ExecutionResult, recorder: RecordingView) -> common_pb2.Envelope:
        event = b""
        if res.events:
            ev = res.events[0]
            event = chaincode_event_pb2.ChaincodeEvent(
                chaincode_id=p.chaincode, tx_id=p.tx_id, event_name=ev.name, payload=ev.payload
            ).SerializeToString()
        action = proposal_pb2.ChaincodeAction(
            results=build_rwset(p.chaincode, recorder, res.writes).SerializeToString(),
            events=event,
            response=proposal_response_pb2.Response(status=res.status, message=res.message, payload=res.payload),
            chaincode_id=chaincode_pb2.ChaincodeID(name=p.chaincode),
        )
        prp = proposal_response_pb2.ProposalResponsePayload(
            proposal_hash=proposal_hash(p.channel_header, p.signature_header, p.payload_without_transient),
            extension=action.SerializeToString(),
        ).SerializeToString()
        endorser = self._endorser.serialized
        endorsement = proposal_response_pb2.Endorsement(endorser=endorser, signature=self._sign(prp + endorser))
        action_payload = transaction_pb2.ChaincodeActionPayload(
            chaincode_proposal_payload=p.payload_without_transient,
            action=transaction_pb2.ChaincodeEndorsedAction(proposal_response_payload=prp, endorsements=[endorsement]),
        )
        tx = transaction_pb2.Transaction(
            actions=[
                transaction_pb2.TransactionAction(header=p.signature_header, payload=action_payload.SerializeToString())
            ]
        )
        payload = common_pb2.Payload(
            header=common_pb2.Header(channel_header=p.channel_header, signature_header=p.signature_header),
            data=tx.SerializeToString(),
        )
        return common_pb2.Envelope(payload=payload.SerializeToString())

    # -- Submit

    def _check_envelope(self, request: gateway_pb2.SubmitRequest) -> tuple[CheckedProposal, EndorsedTransaction]:
        env = request.prepared_transaction
        if not env.payload:
            _invalid("prepared_transaction is missing or has no payload")
        payload = _parse(common_pb2.Payload, env.payload, "envelope payload")
        if not payload.HasField("header"):
            _invalid("envelope payload has no header")
        ch, sh, ch_bytes, sh_bytes = self.checks.headers(payload.header.SerializeToString())
        if request.channel_id != ch.channel_id:
            _invalid(f"request channel {request.channel_id!r} does not match the envelope's {ch.channel_id!r}")
        self.checks.check_channel(ch.channel_id)
        self.checks.check_header_chaincode(ch)
        identity = self.checks.authenticate(bytes(sh.creator), bytes(env.payload), bytes(env.signature))
        self.checks.check_tx_id(ch, sh, request.transaction_id)
        tx = _parse(transaction_pb2.Transaction, payload.data, "transaction")
        if len(tx.actions) != 1:
            _invalid(f"an endorser transaction has exactly one action, got {len(tx.actions)}")
        if tx.actions[0].header != sh_bytes:
            _invalid("transaction action header differs from the envelope's signature header")
        cap = _parse(transaction_pb2.ChaincodeActionPayload, tx.actions[0].payload, "chaincode action payload")
        cpp = _parse(
            proposal_pb2.ChaincodeProposalPayload, cap.chaincode_proposal_payload, "chaincode proposal payload"
        )
        if cpp.TransientMap:
            _invalid("transient data must not be part of a transaction")
        spec = _parse(chaincode_pb2.ChaincodeInvocationSpec, cpp.input, "chaincode invocation spec")
        self.checks.check_chaincode(spec.chaincode_spec.chaincode_id.name)
        prp_bytes = bytes(cap.action.proposal_response_payload)
        prp = _parse(proposal_response_pb2.ProposalResponsePayload, prp_bytes, "proposal response payload")
        if prp.proposal_hash != proposal_hash(ch_bytes, sh_bytes, bytes(cap.chaincode_proposal_payload)):
            raise RequestRefused(grpc.StatusCode.PERMISSION_DENIED, "endorsement does not cover this proposal")
        endorsed = False
        for e in cap.action.endorsements:
            if e.endorser != self._endorser.serialized:
                continue
            try:
                verify(self._endorser_key, prp_bytes + bytes(e.endorser), bytes(e.signature))
                endorsed = True
            except SignatureError:
                pass
        if not endorsed:
            raise RequestRefused(
                grpc.StatusCode.PERMISSION_DENIED, "endorsement policy failure: no valid endorsement from this node"
            )
        action = _parse(proposal_pb2.ChaincodeAction, prp.extension, "chaincode action")
        rws = _parse(rwset_pb2.TxReadWriteSet, action.results, "read-write set")
        kv = kv_rwset_pb2.KVRWSet()
        for ns in rws.ns_rwset:
            if ns.namespace == self.checks.chaincode:
                kv = _parse(kv_rwset_pb2.KVRWSet, ns.rwset, "KV read-write set")
        events: tuple[ChaincodeEvent, ...] = ()
        if action.events:
            ev = _parse(chaincode_event_pb2.ChaincodeEvent, action.events, "chaincode event")
            events = (ChaincodeEvent(ev.event_name, bytes(ev.payload)),)
        args = [bytes(a).decode("utf-8") for a in spec.chaincode_spec.input.args]
        contract, function = _split_transaction_name(args[0])
        checked = CheckedProposal(
            ch.tx_id,
            ch.channel_id,
            self.checks.chaincode,
            _ts_ms(ch),
            bytes(sh.creator),
            identity,
            contract,
            function,
            tuple(args[1:]),
            ch_bytes,
            sh_bytes,
            bytes(cap.chaincode_proposal_payload),
        )
        return checked, EndorsedTransaction(ch.tx_id, bytes(action.response.payload), kv, events)

    async def Submit(
        self, request: gateway_pb2.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SubmitResponse:
        self._capture("Submit", request)
        try:
            p, endorsed = self._check_envelope(request)
            with self._lock:
                if p.tx_id in self._inflight or p.tx_id in self._invalid:
                    raise RequestRefused(grpc.StatusCode.ALREADY_EXISTS, f"duplicate transaction found [{p.tx_id}]")
                if self.ledger.entry_by_tx_id(p.tx_id) is not None:
                    raise RequestRefused(grpc.StatusCode.ALREADY_EXISTS, f"duplicate transaction found [{p.tx_id}]")
                try:
                    fut = self.ledger.submit_prepared(
                        p.identity, p.tx_id, p.ts_ms, p.contract, p.function, p.args, endorsed
                    )
                except LedgerError as exc:
                    raise RequestRefused(grpc.StatusCode.UNAVAILABLE, f"failed to submit transaction: {exc}") from exc
                self._inflight[p.tx_id] = fut
            fut.add_done_callback(functools.partial(self._settle, p.tx_id))
        except RequestRefused as exc:
            await self._abort(context, exc)
        return gateway_pb2.SubmitResponse()

    def _settle(self, tx_id: str, fut: TxFuture) -> None:
        exc = fut.exception()
        with self._lock:
            if exc is not None:
                code = exc.code if isinstance(exc, TransactionInvalid) else transaction_pb2.INVALID_OTHER_REASON
                self._invalid[tx_id] = (code, self.ledger.size())
                while len(self._invalid) > _MAX_INVALID_KEPT:
                    self._invalid.popitem(last=False)
            self._inflight.pop(tx_id, None)

    # -- CommitStatus

    async def CommitStatus(
        self, request: gateway_pb2.SignedCommitStatusRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CommitStatusResponse:
        self._capture("CommitStatus", request)
        try:
            msg, _ = self.checks.signed_request(
                request.request, request.signature, gateway_pb2.CommitStatusRequest, "commit status request"
            )
            if not msg.transaction_id:
                _invalid("commit status request has no transaction id")
        except RequestRefused as exc:
            await self._abort(context, exc)
        tx_id = msg.transaction_id
        while True:
            with self._lock:
                fut = self._inflight.get(tx_id)
                invalid = self._invalid.get(tx_id)
            if invalid is not None:
                return gateway_pb2.CommitStatusResponse(result=invalid[0], block_number=invalid[1])
            if fut is not None:
                try:
                    receipt = await asyncio.wrap_future(fut)
                    return gateway_pb2.CommitStatusResponse(result=transaction_pb2.VALID, block_number=receipt.seq)
                except Exception:  # noqa: BLE001 - recorded by _settle; loop to read it
                    await asyncio.sleep(0)
                    continue
            entry = self.ledger.entry_by_tx_id(tx_id)
            if entry is not None:
                return gateway_pb2.CommitStatusResponse(result=transaction_pb2.VALID, block_number=entry.seq)
            await asyncio.sleep(0.05)  # not seen yet: wait for it as a peer does, until the caller's deadline

    # -- ChaincodeEvents

    async def ChaincodeEvents(
        self, request: gateway_pb2.SignedChaincodeEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.ChaincodeEventsResponse]:
        self._capture("ChaincodeEvents", request)
        try:
            msg, _ = self.checks.signed_request(
                request.request, request.signature, gateway_pb2.ChaincodeEventsRequest, "chaincode events request"
            )
            self.checks.check_chaincode(msg.chaincode_id)
            start = self._start_block(msg)
        except RequestRefused as exc:
            await self._abort(context, exc)
        after_tx = msg.after_transaction_id
        next_seq = start
        skipping = bool(after_tx)
        while True:
            signal = self._commit_signal()
            size = self.ledger.size()
            if next_seq >= size:
                await signal.wait()  # set by the notifier thread on the next commit (or close)
                if self._stopping:
                    return
                continue
            end = min(size, next_seq + _EVENT_CHUNK)
            for entry in self.ledger.entries(next_seq, end):
                events = []
                for ev in entry.events:
                    if skipping and entry.seq == start:
                        continue
                    events.append(
                        chaincode_event_pb2.ChaincodeEvent(
                            chaincode_id=self.checks.chaincode,
                            tx_id=entry.tx_id,
                            event_name=ev.name,
                            payload=ev.payload,
                        )
                    )
                if skipping and entry.seq == start:
                    skipping = entry.tx_id != after_tx  # one transaction per block: skip it and what precedes it
                    if skipping:
                        continue
                skipping = False
                if events:
                    yield gateway_pb2.ChaincodeEventsResponse(events=events, block_number=entry.seq)
            next_seq = end

    def _commit_signal(self) -> asyncio.Event:
        """An event set at the next commit; one notifier thread serves every stream of this servicer."""
        if self._notifier is None:
            loop = asyncio.get_running_loop()
            self._signal = asyncio.Event()

            def notify() -> None:
                seen = self.ledger.size()
                try:
                    while not self._stopping:
                        if self.ledger.wait_for_size(seen + 1, timeout=1.0):
                            seen = self.ledger.size()
                            loop.call_soon_threadsafe(self._fire)
                        elif self.ledger._closed:  # noqa: SLF001 - the ledger gives no other closed flag
                            break
                    loop.call_soon_threadsafe(self._fire)
                except RuntimeError:  # the serving loop is gone
                    return

            self._notifier = threading.Thread(target=notify, name="gateway-commit-notifier", daemon=True)
            self._notifier.start()
        assert self._signal is not None
        return self._signal

    def _fire(self) -> None:
        assert self._signal is not None
        signal, self._signal = self._signal, asyncio.Event()
        signal.set()

    def stop(self) -> None:
        """End the notifier and every event stream (call on the serving loop)."""
        self._stopping = True
        if self._signal is not None:
            self._fire()

    def _start_block(self, msg: gateway_pb2.ChaincodeEventsRequest) -> int:
        size = self.ledger.size()
        if not msg.HasField("start_position"):
            return size
        kind = msg.start_position.WhichOneof("Type")
        if kind == "specified":
            return int(msg.start_position.specified.number)
        if kind == "oldest":
            return 0
        if kind == "newest":
            return max(size - 1, 0)
        return size  # next_commit or unset


# ---------------------------------------------------------------------------- transparency


def transparency_message(method: str, timestamp_ms: int, request: bytes) -> bytes:
    """What a transparency call's signature covers."""
    return method.encode() + b"\n" + str(timestamp_ms).encode() + b"\n" + request


def sign_transparency_call(
    method: str, request: Message, creator: bytes, signer: Callable[[bytes], bytes]
) -> tuple[tuple[str, bytes | str], ...]:
    """gRPC metadata authenticating a transparency call as a channel member."""
    ts = time.time_ns() // 1_000_000
    sig = signer(transparency_message(method, ts, request.SerializeToString()))
    return (
        (TRANSPARENCY_CREATOR_KEY, creator),
        (TRANSPARENCY_SIGNATURE_KEY, sig),
        (TRANSPARENCY_TIME_KEY, str(ts)),
    )


def _checkpoint_proto(cp: Checkpoint) -> cc_common_pb2.Checkpoint:
    from google.protobuf.timestamp_pb2 import Timestamp

    return cc_common_pb2.Checkpoint(
        origin=cp.origin,
        tree_size=cp.size,
        root_hash=cp.root_hash,
        timestamp=Timestamp(seconds=cp.timestamp_ms // 1000, nanos=(cp.timestamp_ms % 1000) * 1_000_000),
        signed_note=cp.note.decode("utf-8"),
        key_name=cp.key_name,
    )


class TransparencyServicer(access_log_pb2_grpc.AccessLogServiceServicer):
    """Checkpoints and RFC 9162 proofs of the node's log, for authenticated channel members."""

    def __init__(self, ledger: EmbeddedLedger, checks: PeerChecks) -> None:
        self.ledger = ledger
        self.checks = checks

    async def _authenticate(self, method: str, request: Message, context: grpc.aio.ServicerContext) -> None:
        md = {k: v for k, v in (context.invocation_metadata() or ())}
        creator, sig, ts = (
            md.get(TRANSPARENCY_CREATOR_KEY),
            md.get(TRANSPARENCY_SIGNATURE_KEY),
            md.get(TRANSPARENCY_TIME_KEY),
        )
        try:
            if not isinstance(creator, bytes) or not isinstance(sig, bytes) or not isinstance(ts, str):
                _unauthenticated("transparency calls must carry the caller's identity, timestamp and signature")
            try:
                ts_ms = int(ts)
            except ValueError:
                _unauthenticated("malformed timestamp")
            if abs(time.time_ns() // 1_000_000 - ts_ms) > TRANSPARENCY_SKEW_MS:
                _unauthenticated("signature timestamp is outside the allowed clock skew")
            self.checks.authenticate(creator, transparency_message(method, ts_ms, request.SerializeToString()), sig)
        except RequestRefused as exc:
            await context.abort(exc.code, exc.message)

    def _checkpoint_at(self, size: int) -> Checkpoint:
        if size == 0:
            return self.ledger.checkpoint()
        cp = self.ledger.checkpoint_at(size)
        if cp is None:
            raise RequestRefused(grpc.StatusCode.NOT_FOUND, f"no checkpoint was signed at tree size {size}")
        return cp

    async def GetCheckpoint(
        self, request: access_log_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> access_log_pb2.GetCheckpointResponse:
        await self._authenticate("GetCheckpoint", request, context)
        try:
            cp = self._checkpoint_at(request.tree_size)
        except RequestRefused as exc:
            await context.abort(exc.code, exc.message)
        return access_log_pb2.GetCheckpointResponse(
            checkpoint=_checkpoint_proto(cp), verifier_key=self.ledger.public_key_vkey()
        )

    async def GetInclusionProof(
        self, request: access_log_pb2.GetInclusionProofRequest, context: grpc.aio.ServicerContext
    ) -> access_log_pb2.GetInclusionProofResponse:
        await self._authenticate("GetInclusionProof", request, context)
        if request.WhichOneof("target") != "sequence":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the ledger node serves proofs by sequence only")
        try:
            cp = self._checkpoint_at(request.tree_size)
            if request.sequence >= cp.size:
                raise RequestRefused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"entry {request.sequence} is not covered by the checkpoint of size {cp.size}",
                )
        except RequestRefused as exc:
            await context.abort(exc.code, exc.message)
        proof = self.ledger.inclusion_proof(request.sequence, cp.size)
        return access_log_pb2.GetInclusionProofResponse(
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            hashes=list(proof.hashes),
            leaf=self.ledger.entry(request.sequence).leaf,
            checkpoint=_checkpoint_proto(cp),
        )

    async def GetConsistencyProof(
        self, request: access_log_pb2.GetConsistencyProofRequest, context: grpc.aio.ServicerContext
    ) -> access_log_pb2.GetConsistencyProofResponse:
        await self._authenticate("GetConsistencyProof", request, context)
        try:
            second = self._checkpoint_at(request.second_tree_size)
            if request.first_tree_size == 0 or request.first_tree_size > second.size:
                _invalid(f"first_tree_size must be in 1..{second.size}")
            first = self._checkpoint_at(request.first_tree_size)
        except RequestRefused as exc:
            await context.abort(exc.code, exc.message)
        proof = self.ledger.consistency_proof(first.size, second.size)
        return access_log_pb2.GetConsistencyProofResponse(
            first_tree_size=proof.first_size,
            second_tree_size=proof.second_size,
            hashes=list(proof.hashes),
            first_checkpoint=_checkpoint_proto(first),
            second_checkpoint=_checkpoint_proto(second),
        )


# ---------------------------------------------------------------------------- serving


@dataclass
class NodeTLS:
    """Server TLS material (PEM); ``client_ca`` set means mutual TLS is required."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None


async def start_node(
    ledger: EmbeddedLedger,
    msps: MspRegistry,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: NodeTLS | None = None,
    on_request: Callable[[str, Message], None] | None = None,
    max_message_bytes: int = 4 * 1024 * 1024,
) -> tuple[grpc.aio.Server, int, GatewayServicer]:
    """Start the gateway and transparency services; returns the server, the bound port and the servicer."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
    )
    address = f"{host}:{port}"
    if tls is not None:
        creds = grpc.ssl_server_credentials(
            [(tls.key, tls.cert)], root_certificates=tls.client_ca, require_client_auth=tls.client_ca is not None
        )
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"could not bind {address}")
    gateway = GatewayServicer(ledger, msps, address=f"{host}:{bound}", on_request=on_request)
    gateway_pb2_grpc.add_GatewayServicer_to_server(gateway, server)
    access_log_pb2_grpc.add_AccessLogServiceServicer_to_server(TransparencyServicer(ledger, gateway.checks), server)
    # grpc.health.v1 for probes (Kubernetes, ciphercare-healthcheck): the node and each service it serves
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await server.start()
    for name in ("", "gateway.Gateway", "ciphercare.v1.AccessLogService"):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound, gateway


def org_msp_ids(msp_dir: Path) -> list[str]:
    """MSP ids with a CA certificate under ``msp_dir`` (for logs and tests)."""
    return sorted(p.name for p in msp_dir.iterdir() if (p / "ca-cert.pem").is_file()) if msp_dir.is_dir() else []


__all__ = [
    "EndorsedTransaction",
    "GatewayServicer",
    "MspRegistry",
    "NodeTLS",
    "PeerChecks",
    "RequestRefused",
    "TransactionInvalid",
    "TransparencyServicer",
    "msp_id_for_org",
    "org_msp_ids",
    "sign_transparency_call",
    "start_node",
    "status_details",
]
