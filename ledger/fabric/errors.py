"""One error type per stage of a transaction, as in the official clients.

Each carries the transaction id and the per-peer :class:`ErrorDetail` list
the gateway attached to its gRPC status (``google.rpc.Status.details``).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from fabric_protos.gateway import gateway_pb2
from fabric_protos.peer import transaction_pb2
from google.rpc import status_pb2


@dataclass(frozen=True)
class ErrorDetail:
    """What one peer or orderer said (``gateway.ErrorDetail``)."""

    address: str
    msp_id: str
    message: str


class GatewayError(Exception):
    """A gRPC call to the gateway failed: ``code`` is the gRPC status, ``details`` what each peer said."""

    def __init__(
        self, message: str, code: grpc.StatusCode, details: tuple[ErrorDetail, ...] = (), tx_id: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.details = details
        self.tx_id = tx_id

    @property
    def message(self) -> str:
        return str(self.args[0])


class EndorseError(GatewayError):
    """Evaluate or endorse failed (the contract refused, or the proposal was refused)."""


class SubmitError(GatewayError):
    """The endorsed transaction could not be sent to ordering."""


class CommitStatusError(GatewayError):
    """The commit status could not be obtained (it may still commit)."""


class CommitError(Exception):
    """The transaction was ordered but committed as invalid (``code`` is its ``TxValidationCode``)."""

    def __init__(self, tx_id: str, code: int, block_number: int) -> None:
        name = (
            transaction_pb2.TxValidationCode.Name(code)
            if code in transaction_pb2.TxValidationCode.values()
            else str(code)
        )
        super().__init__(f"transaction {tx_id} failed to commit with status code {code} ({name})")
        self.tx_id = tx_id
        self.code = code
        self.code_name = name
        self.block_number = block_number


def error_details(err: grpc.RpcError) -> tuple[ErrorDetail, ...]:
    """The ``gateway.ErrorDetail`` messages packed in a gRPC error's ``grpc-status-details-bin`` trailer."""
    trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    raw = None
    for key, value in trailers or ():
        if key == "grpc-status-details-bin":
            raw = value
    if not raw:
        return ()
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except Exception:  # noqa: BLE001 - a malformed trailer yields no details, the status still stands
        return ()
    out = []
    for any_msg in status.details:
        detail = gateway_pb2.ErrorDetail()
        if any_msg.Unpack(detail):
            out.append(ErrorDetail(detail.address, detail.msp_id, detail.message))
    return tuple(out)


def wrap(cls: type[GatewayError], err: grpc.RpcError, tx_id: str) -> GatewayError:
    """Turn a gRPC error into the stage's error type."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    return cls(message or code.name, code, error_details(err), tx_id)
