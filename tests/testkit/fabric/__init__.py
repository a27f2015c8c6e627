"""Fabric test kit.

Chaincode side: a peer's side of the chaincode protocol (``chaincode_peer``), the consent decision table as
one scripted transaction sequence (``consent_table``) and committed blocks in Fabric's wire shapes
(``blocks``). Gateway side: a ledger node in process or as ``ciphercare ledger serve``, enrolled identities
and the Python, Node and Go clients (``gateway``), and the decision table as a client-neutral plan those
clients run (``gateway_plan``).
"""
