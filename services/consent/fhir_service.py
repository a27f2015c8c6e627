"""FhirService (placeholder until the FHIR interchange lands)."""

from __future__ import annotations

from ciphercare.services.platform.gateway import ContractHandles
from ciphercare.services.platform.settings import Settings
from ciphercare.services.store import OffchainStore
from ciphercare.v1 import fhir_pb2_grpc


class FhirServicer(fhir_pb2_grpc.FhirServiceServicer):
    def __init__(self, ledger: ContractHandles, store: OffchainStore, settings: Settings) -> None:
        self.ledger = ledger
        self.store = store
        self.settings = settings
