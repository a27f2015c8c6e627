"""A Python Fabric Gateway client, shaped like the official Go and Node clients.

``connect(identity, signer, target)`` -> :class:`Gateway` -> ``network(channel)`` ->
``contract(chaincode, contract_name)`` -> ``evaluate`` / ``submit`` / ``submit_async``.
It speaks ``gateway.proto`` to a Fabric peer or to ``ciphercare ledger serve``.
"""

from ciphercare.ledger.fabric.contract import Contract
from ciphercare.ledger.fabric.errors import (
    CommitError,
    CommitStatusError,
    EndorseError,
    ErrorDetail,
    GatewayError,
    SubmitError,
)
from ciphercare.ledger.fabric.gateway import ConnectOptions, Gateway, connect
from ciphercare.ledger.fabric.identity import X509Identity
from ciphercare.ledger.fabric.network import Network
from ciphercare.ledger.fabric.signer import new_private_key_signer

__all__ = [
    "CommitError",
    "CommitStatusError",
    "ConnectOptions",
    "Contract",
    "EndorseError",
    "ErrorDetail",
    "Gateway",
    "GatewayError",
    "Network",
    "SubmitError",
    "X509Identity",
    "connect",
    "new_private_key_signer",
]
