"""Commit status of a submitted transaction (``client.Commit`` / ``client.Status`` in the official clients)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from fabric_protos.gateway import gateway_pb2
from fabric_protos.peer import transaction_pb2

from ciphercare.ledger.fabric.errors import CommitError, CommitStatusError, wrap


@dataclass(frozen=True)
class Status:
    """``code`` is the ``TxValidationCode`` the committing peer gave the transaction."""

    transaction_id: str
    code: int
    block_number: int

    @property
    def successful(self) -> bool:
        return self.code == transaction_pb2.VALID

    @property
    def code_name(self) -> str:
        return str(transaction_pb2.TxValidationCode.Name(self.code))


class Commit:
    """Waits for a submitted transaction to be committed (the gateway blocks until it is)."""

    def __init__(self, gateway: object, channel: str, transaction_id: str) -> None:
        self._gateway = gateway
        self.channel = channel
        self.transaction_id = transaction_id

    async def status(self, *, timeout: float | None = None) -> Status:
        """The transaction's commit status; :class:`CommitStatusError` when it cannot be obtained in time."""
        from ciphercare.ledger.fabric.gateway import Gateway

        gw = self._gateway
        assert isinstance(gw, Gateway)
        request = gateway_pb2.CommitStatusRequest(
            transaction_id=self.transaction_id, channel_id=self.channel, identity=gw.identity.serialize()
        ).SerializeToString()
        signed = gateway_pb2.SignedCommitStatusRequest(request=request, signature=gw.signer(request))
        try:
            response = await gw.stub.CommitStatus(signed, timeout=gw.options.deadline("commit_status", timeout))
        except grpc.RpcError as err:
            raise wrap(CommitStatusError, err, self.transaction_id) from err
        return Status(self.transaction_id, int(response.result), int(response.block_number))


@dataclass(frozen=True)
class SubmittedTransaction:
    """A transaction sent to ordering: its endorsed result now, its commit status later."""

    transaction_id: str
    result: bytes
    commit: Commit

    async def status(self, *, timeout: float | None = None) -> Status:
        return await self.commit.status(timeout=timeout)

    async def committed_result(self, *, timeout: float | None = None) -> bytes:
        """The result once committed as VALID; :class:`CommitError` with the validation code otherwise."""
        status = await self.status(timeout=timeout)
        if not status.successful:
            raise CommitError(status.transaction_id, status.code, status.block_number)
        return self.result
