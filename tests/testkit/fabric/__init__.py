"""Fabric test kit: a peer's side of the chaincode protocol (``chaincode_peer``), the consent decision table as
one scripted transaction sequence (``consent_table``) and committed blocks in Fabric's wire shapes (``blocks``)."""
