"""A Python Fabric Gateway client, shaped like the official Go and Node clients.

``connect(identity, signer, target)`` -> :class:`Gateway` -> ``network(channel)`` ->
``contract(chaincode, contract_name)`` -> ``evaluate`` / ``submit`` / ``submit_async``.
It speaks ``gateway.proto`` to a Fabric peer or to ``ciphercare ledger serve``.
"""

from .contract import Contract
from .errors import CommitError, CommitStatusError, EndorseError, ErrorDetail, GatewayError, SubmitError
from .gateway import ConnectOptions, Gateway, connect
from .identity import X509Identity
from .network import Network
from .signer import new_private_key_signer

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
