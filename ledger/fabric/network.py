"""A channel (``client.Network``): contracts on it, and its chaincode events with checkpoint resume."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from fabric_protos.gateway import gateway_pb2
from fabric_protos.orderer import ab_pb2

from ciphercare.ledger.fabric.contract import Contract
from ciphercare.ledger.fabric.errors import GatewayError, wrap


@dataclass(frozen=True)
class ChaincodeEvent:
    """One committed chaincode event (``client.ChaincodeEvent``)."""

    block_number: int
    transaction_id: str
    chaincode_name: str
    event_name: str
    payload: bytes


class Checkpointer:
    """In-memory checkpoint (``checkpointers.inMemory()``): the block to resume from and the last tx seen in it."""

    def __init__(self, block_number: int | None = None, transaction_id: str = "") -> None:
        self.block_number = block_number
        self.transaction_id = transaction_id

    def checkpoint_block(self, block_number: int) -> None:
        """Everything in ``block_number`` is processed: resume at the next block."""
        self.block_number = block_number + 1
        self.transaction_id = ""
        self._save()

    def checkpoint_transaction(self, block_number: int, transaction_id: str) -> None:
        """Events up to ``transaction_id`` in ``block_number`` are processed."""
        self.block_number = block_number
        self.transaction_id = transaction_id
        self._save()

    def checkpoint_chaincode_event(self, event: ChaincodeEvent) -> None:
        self.checkpoint_transaction(event.block_number, event.transaction_id)

    def _save(self) -> None:
        pass


class FileCheckpointer(Checkpointer):
    """A checkpoint persisted as JSON (``checkpointers.file()``), written atomically."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        block, tx = None, ""
        if self.path.exists():
            data = json.loads(self.path.read_text())
            block, tx = data.get("blockNumber"), data.get("transactionId", "")
        super().__init__(block, tx)

    def _save(self) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps({"blockNumber": self.block_number, "transactionId": self.transaction_id}))
        os.replace(tmp, self.path)


class Network:
    """One channel reached through a :class:`ciphercare.ledger.fabric.gateway.Gateway`."""

    def __init__(self, gateway: object, name: str) -> None:
        self._gateway = gateway
        self.name = name

    def contract(self, chaincode_name: str, contract_name: str = "") -> Contract:
        """``getContract(chaincodeName, contractName)``."""
        return Contract(self._gateway, self.name, chaincode_name, contract_name)

    async def chaincode_events(
        self,
        chaincode_name: str,
        *,
        start_block: int | None = None,
        checkpoint: Checkpointer | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[ChaincodeEvent]:
        """Events of ``chaincode_name`` in commit order from the checkpoint, ``start_block``, or the next commit.

        A checkpoint with a position wins over ``start_block`` (as in the official clients);
        events of the checkpoint's transaction and earlier ones in its block are skipped.
        """
        from ciphercare.ledger.fabric.gateway import Gateway

        gw = self._gateway
        assert isinstance(gw, Gateway)
        position = ab_pb2.SeekPosition(next_commit=ab_pb2.SeekNextCommit())
        after_tx = ""
        if checkpoint is not None and checkpoint.block_number is not None:
            position = ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=checkpoint.block_number))
            after_tx = checkpoint.transaction_id
        elif start_block is not None:
            if start_block < 0:
                raise ValueError(f"start_block must be >= 0, got {start_block}")
            position = ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=start_block))
        request = gateway_pb2.ChaincodeEventsRequest(
            channel_id=self.name,
            chaincode_id=chaincode_name,
            identity=gw.identity.serialize(),
            start_position=position,
            after_transaction_id=after_tx,
        ).SerializeToString()
        signed = gateway_pb2.SignedChaincodeEventsRequest(request=request, signature=gw.signer(request))
        call = gw.stub.ChaincodeEvents(signed, timeout=gw.options.deadline("chaincode_events", timeout))
        try:
            async for response in call:
                for ev in response.events:
                    yield ChaincodeEvent(
                        int(response.block_number), ev.tx_id, ev.chaincode_id, ev.event_name, bytes(ev.payload)
                    )
        except grpc.RpcError as err:
            raise wrap(GatewayError, err, "") from err
        finally:
            call.cancel()
