"""Test kit for the ledger tests: a tiny key/value contract and principals (imported by conftest and tests)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from fabric_chaincode_python.fabric_contract_api.contractapi import (
    Contract,
    ContractChaincode,
    TransactionContext,
)

from ciphercare.consent.contracts import new_chaincode
from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.log import HistoryRecord
from ciphercare.ledger.embedded.msp import ATTR_OID, EmbeddedMSP
from ciphercare.ledger.embedded.runtime import WorldStateStub, endorse_error, new_tx_id, run_without_loop

ORIGIN = "ciphercare.test/ledger"


class KVContract(Contract):
    """Exercises the stub surface the real contracts use."""

    Name = "kv"

    async def Put(self, ctx: TransactionContext, key: str, value: str) -> str:
        stub = ctx.get_stub()
        old = await stub.get_state(key)
        await stub.put_state(key, value.encode())
        stub.set_event("put", json.dumps({"key": key, "value": value}).encode())
        return old.decode()

    async def Get(self, ctx: TransactionContext, key: str) -> str:
        value = await ctx.get_stub().get_state(key)
        if not value:
            raise ValueError(f"NOT_FOUND: no key {key}")
        return value.decode()

    async def Del(self, ctx: TransactionContext, key: str) -> None:
        await ctx.get_stub().delete_state(key)

    async def PutThenGet(self, ctx: TransactionContext, key: str, value: str) -> str:
        """Fabric has no read-your-writes: the get returns the committed value."""
        stub = ctx.get_stub()
        await stub.put_state(key, value.encode())
        return (await stub.get_state(key)).decode()

    async def Append(self, ctx: TransactionContext, key: str, suffix: str) -> str:
        """Read-modify-write: sees writes of earlier transactions in the same batch."""
        stub = ctx.get_stub()
        new = (await stub.get_state(key)).decode() + suffix
        await stub.put_state(key, new.encode())
        return new

    async def Scan(self, ctx: TransactionContext, start: str, end: str) -> str:
        it = await ctx.get_stub().get_state_by_range(start, end)
        return json.dumps([[kv.key, kv.value.decode()] async for kv in it])

    async def Page(self, ctx: TransactionContext, start: str, end: str, size: int, bookmark: str) -> str:
        it = await ctx.get_stub().get_state_by_range_with_pagination(start, end, size, bookmark)
        keys = [kv.key async for kv in it]
        return json.dumps({"keys": keys, "bookmark": it.bookmark, "count": it.fetched_records_count})

    async def PutComposite(self, ctx: TransactionContext, kind: str, a: str, b: str, value: str) -> None:
        stub = ctx.get_stub()
        await stub.put_state(stub.create_composite_key(kind, [a, b]), value.encode())

    async def ScanComposite(self, ctx: TransactionContext, kind: str, a: str) -> str:
        stub = ctx.get_stub()
        it = await stub.get_state_by_partial_composite_key(kind, [a] if a else [])
        out = []
        async for kv in it:
            _, attrs = stub.split_composite_key(kv.key)
            out.append([attrs, kv.value.decode()])
        return json.dumps(out)

    async def History(self, ctx: TransactionContext, key: str) -> str:
        it = await ctx.get_stub().get_history_for_key(key)
        return json.dumps([[m.tx_id, m.value.decode(), m.is_delete] async for m in it])

    async def Fail(self, ctx: TransactionContext, code: str, detail: str) -> str:
        await ctx.get_stub().put_state("never", b"written")
        raise ValueError(f"{code}: {detail}")

    async def Events(self, ctx: TransactionContext, n: int) -> None:
        for i in range(n):
            ctx.get_stub().set_event(f"e{i}", str(i).encode())

    async def Suspend(self, ctx: TransactionContext) -> None:
        await asyncio.sleep(0)

    async def WhoAmI(self, ctx: TransactionContext) -> str:
        stub = ctx.get_stub()
        creator = stub.get_creator()
        cert = x509.load_pem_x509_certificate(creator["idBytes"])
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(ATTR_OID))
        cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        ts = stub.get_tx_timestamp()
        return json.dumps(
            {
                "mspid": creator["mspid"],
                "cn": cn,
                "attrs": json.loads(ext.value.value)["attrs"],
                "tx_id": stub.get_txid(),
                "channel": stub.get_channel_id(),
                "ts": ts.seconds * 1000 + ts.nanos // 1_000_000,
            }
        )


def kv_chaincode() -> ContractChaincode:
    return ContractChaincode.new_chaincode(KVContract())


ALICE = Principal("alice", "hospital-a", frozenset({"doctor", "admin"}), "portal", None)
BOB = Principal("bob", "clinic_b", frozenset({"patient"}), "app", "pid-42")


# --- A clocked world state for the contracts (break-glass expiry, issue 15) ---------------------------------
#
# The real chaincode through the ledger's own WorldStateStub and the library's dispatcher, with real creator
# certificates from EmbeddedMSP; only the storage is a dict, so tests can move the transaction clock and see
# the write set a refused transaction attempted.

CLOCK_BASE_MS = 1_750_000_000_000  # 2025-06-15T15:06:40Z


@dataclass(frozen=True)
class ClockedReceipt:
    tx_id: str
    result: bytes
    events: tuple[Any, ...]


class ClockedWorldState:
    """Each transaction advances the clock by ``step_ms``; ``advance(ms)`` jumps it."""

    def __init__(self, step_ms: int = 1000) -> None:
        self.state: dict[str, bytes] = {}
        self._history: dict[str, list[HistoryRecord]] = {}
        self._seq = itertools.count()
        self.now_ms = CLOCK_BASE_MS
        self.step_ms = step_ms
        self.msp = EmbeddedMSP()
        self.chaincode = new_chaincode()
        self.committed_events: list[tuple[str, bytes]] = []
        self.attempted_writes: tuple[tuple[str, bytes | None], ...] = ()

    def advance(self, ms: int) -> None:
        self.now_ms += ms

    def get(self, key: str) -> bytes | None:
        return self.state.get(key)

    def range(self, start: str, end: str) -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self.state.items() if k >= start and (not end or k < end))

    def history(self, key: str) -> list[HistoryRecord]:
        return list(reversed(self._history.get(key, [])))

    def _run(self, principal: Principal, contract: str, function: str, args: Sequence[str],
             read_only: bool) -> ClockedReceipt:
        identity = self.msp.identity(principal)
        tx_id = new_tx_id(identity)
        self.now_ms += self.step_ms
        stub = WorldStateStub(
            self, None, tx_id=tx_id, channel_id="ciphercare", chaincode_name="ciphercare",
            function=f"{contract}:{function}", params=list(args), identity=identity, ts_ms=self.now_ms,
            read_only=read_only,
        )
        response = run_without_loop(self.chaincode.invoke(stub))
        self.attempted_writes = stub.write_set()
        if response.status >= 400:
            raise endorse_error(tx_id, response.message)
        events = tuple(stub.get_events())
        if not read_only:
            seq = next(self._seq)
            for key, value in stub.write_set():
                if value is None:
                    self.state.pop(key, None)
                else:
                    self.state[key] = value
                self._history.setdefault(key, []).append(
                    HistoryRecord(seq=seq, tx_id=tx_id, ts_ms=self.now_ms, value=value, is_delete=value is None)
                )
            self.committed_events.extend((e.event_name, e.payload) for e in events)
        return ClockedReceipt(tx_id, bytes(response.payload), events)

    def evaluate(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> bytes:
        return self._run(principal, contract, function, args, True).result

    def submit(self, principal: Principal, contract: str, function: str, args: Sequence[str]) -> ClockedReceipt:
        return self._run(principal, contract, function, args, False)
