"""A smart contract within a chaincode on a channel (``client.Contract``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fabric_protos.peer import proposal_pb2

from ciphercare.ledger.fabric.commit import SubmittedTransaction
from ciphercare.ledger.fabric.proposal import Proposal, build_proposal, transaction_name


class Contract:
    """``evaluate`` / ``submit`` / ``submit_async`` / ``new_proposal`` for one contract of a chaincode."""

    def __init__(self, gateway: object, channel: str, chaincode_name: str, contract_name: str = "") -> None:
        if not chaincode_name:
            raise ValueError("chaincode name must not be empty")
        self._gateway = gateway
        self.channel = channel
        self.chaincode_name = chaincode_name
        self.contract_name = contract_name

    def new_proposal(
        self,
        name: str,
        *,
        arguments: Sequence[str | bytes] = (),
        transient_data: Mapping[str, bytes] | None = None,
        endorsing_organizations: Sequence[str] = (),
    ) -> Proposal:
        """Build and sign a proposal for transaction ``name`` (qualified with the contract name)."""
        from ciphercare.ledger.fabric.gateway import Gateway

        gw = self._gateway
        assert isinstance(gw, Gateway)
        if not name:
            raise ValueError("transaction name must not be empty")
        proposal, tx_id = build_proposal(
            channel=self.channel,
            chaincode=self.chaincode_name,
            transaction=transaction_name(self.contract_name, name),
            args=arguments,
            creator=gw.identity.serialize(),
            transient=transient_data,
        )
        proposal_bytes = proposal.SerializeToString()
        signed = proposal_pb2.SignedProposal(proposal_bytes=proposal_bytes, signature=gw.signer(proposal_bytes))
        return Proposal(gw, self.channel, tx_id, signed, tuple(endorsing_organizations))

    async def evaluate(
        self,
        name: str,
        arguments: Sequence[str | bytes] = (),
        *,
        transient_data: Mapping[str, bytes] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Evaluate a transaction (query); raises :class:`EndorseError` on refusal."""
        proposal = self.new_proposal(name, arguments=arguments, transient_data=transient_data)
        return await proposal.evaluate(timeout=timeout)

    async def submit_async(
        self,
        name: str,
        arguments: Sequence[str | bytes] = (),
        *,
        transient_data: Mapping[str, bytes] | None = None,
        endorse_timeout: float | None = None,
        submit_timeout: float | None = None,
    ) -> SubmittedTransaction:
        """Endorse and send to ordering; the result is available now, the commit status later."""
        proposal = self.new_proposal(name, arguments=arguments, transient_data=transient_data)
        transaction = await proposal.endorse(timeout=endorse_timeout)
        return await transaction.submit(timeout=submit_timeout)

    async def submit(
        self,
        name: str,
        arguments: Sequence[str | bytes] = (),
        *,
        transient_data: Mapping[str, bytes] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Endorse, order and wait for a valid commit; :class:`CommitError` if committed as invalid."""
        submitted = await self.submit_async(
            name, arguments, transient_data=transient_data, endorse_timeout=timeout, submit_timeout=timeout
        )
        return await submitted.committed_result(timeout=timeout)
