"""Direct dispatch: the runtime's compiled path gives exactly what fabric-chaincode-python's dispatcher gives.

Every case runs twice against the same committed state (a real TransactionLog): once through
``ChaincodeRuntime(direct=True)`` and once through the library's ``ContractChaincode.invoke``;
status, payload, message, write set and events must be equal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fabric_chaincode_python.fabric_contract_api.contractapi import Contract, ContractChaincode, TransactionContext
from testkit.ledger import ALICE, ORIGIN, KVContract

from ciphercare.consent.contracts import new_chaincode
from ciphercare.ledger.embedded.log import PendingTx, StateView, TransactionLog
from ciphercare.ledger.embedded.msp import EmbeddedMSP
from ciphercare.ledger.embedded.runtime import BatchOverlay, ChaincodeRuntime, DirectDispatch, ExecutionResult
from ciphercare.ledger.transparency.checkpoint import CheckpointSigner


class OddContract(Contract):
    """Shapes the direct path must either handle like the dispatcher or leave to it."""

    Name = "odd"

    async def NotAString(self, ctx: TransactionContext) -> str:
        return 5  # type: ignore[return-value]

    async def NoneResult(self, ctx: TransactionContext, a: str) -> str:
        return None  # type: ignore[return-value]

    def Sync(self, ctx: TransactionContext, a: str, b: str) -> str:
        ctx.get_stub().set_event("sync", (a + b).encode())
        return a + b

    async def NoReturn(self, ctx: TransactionContext, key: str) -> None:
        await ctx.get_stub().put_state(key, b"v")

    async def Raises(self, ctx: TransactionContext) -> str:
        raise KeyError("boom")

    async def Count(self, ctx: TransactionContext, n: int) -> str:
        return str(n + 1)

    async def lower(self, ctx: TransactionContext, a: str) -> str:
        return a.upper()


class HookedContract(Contract):
    """A before-transaction hook: the dispatcher must run it, so nothing here is direct."""

    Name = "hooked"

    def __init__(self) -> None:
        super().__init__()
        self.BeforeTransaction = self.before

    async def before(self, ctx: TransactionContext) -> None:
        ctx.get_stub().set_event("before", b"")

    async def Echo(self, ctx: TransactionContext, a: str) -> str:
        return a


def _chaincode() -> ContractChaincode:
    return ContractChaincode.new_chaincode(KVContract(), OddContract(), HookedContract())


@pytest.fixture
def view(tmp_path: Path) -> Iterator[StateView]:
    tlog = TransactionLog(tmp_path / "l.db", CheckpointSigner(tmp_path / "k.pem", ORIGIN))
    tlog.append_batch(
        [
            PendingTx(
                "a" * 64, 1, "ciphercare", "ciphercare", "kv", "Put", ("k", "v"), "M", "c" * 64, b"",
                (("k", b"committed"), ("k2", b"two")), (),
            )
        ]
    )  # fmt: skip
    with tlog.snapshot() as v:
        yield v
    tlog.close()


def _both(view: StateView, cc: ContractChaincode, contract: str, fn: str, args: list[str], **kw: object) -> None:
    msp = EmbeddedMSP()
    identity = msp.identity(ALICE)
    results: list[ExecutionResult] = []
    for direct in (True, False):
        rt = ChaincodeRuntime(cc, channel="ciphercare", chaincode_name="ciphercare", direct=direct)
        overlay = BatchOverlay()
        overlay.apply("b" * 64, 2, [("k2", b"pending")])
        results.append(
            rt.execute(
                view, overlay, identity, contract, fn, args, tx_id="f" * 64, ts_ms=1_750_000_000_000, read_only=False
            )
        )
    fast, library = results
    assert fast == library, (contract, fn, args)


CASES = [
    ("kv", "Put", ["k", "new"]),
    ("kv", "Put", ["k", "new", "extra", "args"]),  # extra arguments are ignored by the dispatcher too
    ("kv", "Put", ["only-one"]),  # incorrect number of params
    ("kv", "Get", ["k2"]),  # reads through the overlay
    ("kv", "Get", ["missing"]),  # contract error
    ("kv", "PutThenGet", ["k", "x"]),
    ("kv", "Fail", ["NOT_FOUND", "gone"]),
    ("kv", "Events", ["3"]),  # int parameter: dispatcher path in both
    ("kv", "Events", ["three"]),
    ("kv", "Nope", []),
    ("nope", "Put", ["a", "b"]),
    ("kv", "put", ["k", "lowercase name"]),  # the dispatcher's first-rune-upper fallback
    ("odd", "NotAString", []),
    ("odd", "NoneResult", ["a"]),
    ("odd", "Sync", ["a", "b"]),
    ("odd", "NoReturn", ["key"]),
    ("odd", "Raises", []),
    ("odd", "Count", ["41"]),
    ("odd", "lower", ["abc"]),
    ("odd", "Lower", ["abc"]),
    ("hooked", "Echo", ["x"]),
    ("", "Put", ["k", "default contract"]),
    ("kv:x", "Put", ["k", "colon in the contract name"]),
]


@pytest.mark.parametrize(("contract", "fn", "args"), CASES)
def test_direct_path_equals_the_dispatcher(view: StateView, contract: str, fn: str, args: list[str]) -> None:
    _both(view, _chaincode(), contract, fn, args)


def test_which_transactions_are_direct() -> None:
    table = DirectDispatch(_chaincode())
    assert table.lookup("kv:Put") is not None and table.lookup("odd:Sync") is not None
    assert table.lookup("kv:Events") is None and table.lookup("odd:Count") is None  # int parameters
    assert table.lookup("hooked:Echo") is None  # before-transaction hook
    assert table.lookup("kv:Nope") is None and table.lookup("kv:put") is None
    assert table.lookup("Put") is not None  # the default contract (kv)
    consent = DirectDispatch(new_chaincode())
    for name in ("consent:Grant", "consent:Revoke", "consent:Check", "consent:CheckMany", "accesslog:Record"):
        assert consent.lookup(name) is not None, name


def test_consent_contract_refusals_equal_the_dispatcher(view: StateView) -> None:
    cc = new_chaincode()
    digest = hashlib.sha256(b"x").hexdigest()
    for fn, args in (
        ("Grant", ["{}"]),
        ("Grant", ['{"pid": 5}']),
        ("Revoke", ["cns-" + digest[:32], "patient-request"]),
        ("Check", ["pat-0001", "hospital-a", "TREAT", "Observation", ""]),
        ("Check", ["bad pid!", "hospital-a", "TREAT", "Observation", ""]),
        ("CheckMany", ["[]", "hospital-a", "TREAT", "Observation", ""]),
    ):
        _both(view, cc, "consent", fn, args)
    _both(view, cc, "accesslog", "Record", ['{"type": 1}'])
