"""Test kit for the ledger tests: a tiny key/value contract and principals (imported by conftest and tests)."""

from __future__ import annotations

import asyncio
import json

from cryptography import x509
from fabric_chaincode_python.fabric_contract_api.contractapi import (
    Contract,
    ContractChaincode,
    TransactionContext,
)

from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.msp import ATTR_OID

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
