"""Client identities: an X.509 certificate plus the MSP id of the organisation that issued it."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from fabric_protos.msp import identities_pb2


@dataclass(frozen=True)
class X509Identity:
    """``msp_id`` and the PEM certificate (``credentials``), as ``identity.X509Identity`` in the official clients."""

    msp_id: str
    credentials: bytes

    def __post_init__(self) -> None:
        if not self.msp_id:
            raise ValueError("msp_id must not be empty")
        x509.load_pem_x509_certificate(self.credentials)  # refuse anything that is not one PEM certificate

    @classmethod
    def from_certificate(cls, msp_id: str, cert: x509.Certificate) -> X509Identity:
        from cryptography.hazmat.primitives import serialization

        return cls(msp_id, cert.public_bytes(serialization.Encoding.PEM))

    def serialize(self) -> bytes:
        """``msp.SerializedIdentity`` bytes: the ``creator`` of every proposal and request."""
        return serialize_identity(self.msp_id, self.credentials)


def serialize_identity(msp_id: str, credentials: bytes) -> bytes:
    """``msp.SerializedIdentity{mspid, id_bytes}`` serialized as Fabric and the official clients do."""
    return identities_pb2.SerializedIdentity(mspid=msp_id, id_bytes=credentials).SerializeToString()
