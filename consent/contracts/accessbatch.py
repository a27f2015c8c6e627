"""The ``accessbatch`` contract: many access events committed by one transaction, privately per patient.

A service that records one access event per patient for a whole batch (encrypted scoring: up to 4,096
per ciphertext) commits them with one ``RecordBatch`` transaction instead of one ``accesslog:Record``
each. The transaction carries only the RFC 9162 Merkle root of the batch's *salted* member leaves
(``leaf = salt(32 random bytes) || canonical member JSON``, hashed as ``SHA-256(0x00 || leaf)``), the
member count and the count per outcome: no pseudonym reaches the ledger leaf, so a patient's receipt
(its member, its salt, the path to the root, the ledger inclusion proof of this transaction) shows no
other patient. The members themselves are written off-chain by the service before it submits the root
and projected one row per patient when the transaction commits (``services/audit/batches.py``).

The agent (from the caller's certificate) and the recorded time (the transaction's) are the batch's and
apply to every member. Written against the same Fabric contract API as the other contracts; registered
in :func:`ciphercare.consent.contracts.new_chaincode`.
"""

from __future__ import annotations

import re
from typing import Any

from fabric_chaincode_python.fabric_contract_api.contractapi import Contract, TransactionContext

from .. import canonical, codes, model
from ..caller import caller_from_ctx
from ..errors import ValidationError, already_exists, not_found, permission_denied

ACCESSBATCH_CONTRACT = "accessbatch"
BATCH_KEY = "accessbatch"
EVENT_ACCESS_BATCH_RECORDED = "AccessBatchRecorded"
#: At most this many members per batch (one Score call: 40,000 patients).
MAX_BATCH_MEMBERS = 40_000
_BATCH_ID_RE = re.compile(r"^ab-[0-9a-f]{32}$")
_FIELDS = ("root", "count", "outcomes", "observer")


def batch_input(data: Any) -> dict[str, Any]:
    """The validated ``RecordBatch`` argument: root, count, counts per outcome (summing to count), observer."""
    if not isinstance(data, dict):
        raise ValidationError("batch: expected a JSON object")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValidationError(f"batch: unknown field(s) {unknown} (members never go on the ledger)")
    missing = [f for f in _FIELDS if f not in data]
    if missing:
        raise ValidationError(f"batch: missing field(s) {missing}")
    root = model.sha256_hex(data["root"], "batch.root")
    count = data["count"]
    if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= MAX_BATCH_MEMBERS:
        raise ValidationError(f"batch.count: expected an integer in 1..{MAX_BATCH_MEMBERS}")
    outcomes = data["outcomes"]
    if not isinstance(outcomes, dict) or not outcomes:
        raise ValidationError("batch.outcomes: expected an object of counts per outcome")
    clean: dict[str, int] = {}
    for name, value in sorted(outcomes.items()):
        model.code(name, f"batch.outcomes.{name}", codes.AUDIT_OUTCOMES, "an outcome (success|denied|error)")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_BATCH_MEMBERS:
            raise ValidationError(f"batch.outcomes.{name}: expected a positive integer")
        clean[name] = value
    if sum(clean.values()) != count:
        raise ValidationError(f"batch.outcomes: the counts sum to {sum(clean.values())}, not count {count}")
    observer = model.AuditSource.from_dict({"observer": data["observer"]}, "batch").observer
    return {"root": root, "count": count, "outcomes": clean, "observer": observer}


class AccessBatchContract(Contract):
    """Batches of access events: the Merkle root of salted members, their count, counts per outcome."""

    Name = ACCESSBATCH_CONTRACT

    def get_evaluate_transactions(self) -> list[str]:
        return ["Get"]

    async def RecordBatch(self, ctx: TransactionContext, batch_json: str) -> str:
        """Commit a batch root; the agent is the caller. Returns the stored batch record JSON.

        The same rule as ``accesslog:Record``: only a hospital or clinician may record outcome ``success``.
        """
        from . import _tx_suffix, _tx_time  # the one reading of the transaction id and time

        caller = caller_from_ctx(ctx)
        data = batch_input(model.loads_object(batch_json, "batch_json"))
        if data["outcomes"].get(codes.OUTCOME_SUCCESS) and not caller.is_provider:
            raise permission_denied(
                "only a hospital or clinician may record outcome 'success'; other callers may record "
                "'denied' or 'error'"
            )
        stub = ctx.get_stub()
        batch_id = "ab-" + _tx_suffix(stub)
        key = stub.create_composite_key(BATCH_KEY, [batch_id])
        if await stub.get_state(key):
            raise already_exists(f"access batch {batch_id} already exists")
        record = {
            "id": batch_id,
            "root": data["root"],
            "count": data["count"],
            "outcomes": data["outcomes"],
            "recorded": model.format_time(_tx_time(stub)),
            "agent": caller.audit_agent().to_dict(),
            "source": {"observer": data["observer"]},
        }
        body = canonical.dumps(record)
        await stub.put_state(key, body)
        stub.set_event(EVENT_ACCESS_BATCH_RECORDED, body)
        return body.decode("utf-8")

    async def Get(self, ctx: TransactionContext, batch_id: str) -> str:
        """A batch record (root, count, outcomes, agent, time: no pseudonyms), NOT_FOUND otherwise."""
        caller_from_ctx(ctx)
        if not isinstance(batch_id, str) or not _BATCH_ID_RE.match(batch_id):
            raise ValidationError("batch_id: expected ab- followed by 32 lower-case hex")
        value = await ctx.get_stub().get_state(ctx.get_stub().create_composite_key(BATCH_KEY, [batch_id]))
        if not value:
            raise not_found(f"access batch {batch_id} not found")
        return bytes(value).decode("utf-8")


__all__ = ["ACCESSBATCH_CONTRACT", "AccessBatchContract", "EVENT_ACCESS_BATCH_RECORDED", "MAX_BATCH_MEMBERS",
           "batch_input"]
