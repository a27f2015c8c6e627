"""The ``model`` contract: which scoring model (by SHA-256) was deployed, when and by whom.

Additive to the consent and access-log contracts; written against the same Fabric contract API.
``Deploy`` records a model package's hash and a few public facts once (ALREADY_EXISTS afterwards) and
emits ``ModelDeployed``; ``Get`` reads it back. Every scoring access event names the same hash, so an
auditor can tie each score to the exact model that produced it.
"""

from __future__ import annotations

import re
from typing import Any

from fabric_chaincode_python.fabric_contract_api.contractapi import Contract, TransactionContext

from .. import canonical, model
from ..caller import caller_from_ctx
from ..errors import ValidationError, already_exists, not_found, permission_denied

MODEL_CONTRACT = "model"
MODEL_KEY = "model"
EVENT_MODEL_DEPLOYED = "ModelDeployed"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_FIELDS = ("model_sha256", "name", "version", "n_trees", "max_depth", "edge_count")


def _deployment(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError("model: expected a JSON object")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValidationError(f"model: unknown field(s) {unknown}")
    missing = [f for f in _FIELDS if f not in data]
    if missing:
        raise ValidationError(f"model: missing field(s) {missing}")
    out: dict[str, Any] = {"model_sha256": model.sha256_hex(data["model_sha256"], "model.model_sha256")}
    for name in ("name", "version"):
        value = data[name]
        if not isinstance(value, str) or not _NAME_RE.match(value):
            raise ValidationError(f"model.{name}: expected a short name (letters, digits, . _ : -)")
        out[name] = value
    for name in ("n_trees", "max_depth", "edge_count"):
        value = data[name]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 100_000:
            raise ValidationError(f"model.{name}: expected a positive integer")
        out[name] = value
    return out


class ModelRegistryContract(Contract):
    """Deployed scoring models, keyed by the SHA-256 of their package."""

    Name = MODEL_CONTRACT

    def get_evaluate_transactions(self) -> list[str]:
        return ["Get"]

    async def Deploy(self, ctx: TransactionContext, model_json: str) -> str:
        """Record a model deployment; the deployer is the caller (an organisation, never a patient)."""
        caller = caller_from_ctx(ctx)
        if caller.is_patient and not caller.is_provider:
            raise permission_denied("a patient may not deploy a scoring model")
        record = _deployment(model.loads_object(model_json, "model_json"))
        stub = ctx.get_stub()
        key = stub.create_composite_key(MODEL_KEY, [record["model_sha256"]])
        if await stub.get_state(key):
            raise already_exists(f"model {record['model_sha256']} is already deployed")
        from . import _tx_time  # the one reading of the transaction time

        record["deployed_at"] = model.format_time(_tx_time(stub))
        record["deployed_by"] = caller.actor_ref().to_dict()
        record["tx_id"] = stub.get_txid()
        body = canonical.dumps(record)
        await stub.put_state(key, body)
        stub.set_event(EVENT_MODEL_DEPLOYED, body)
        return body.decode("utf-8")

    async def Get(self, ctx: TransactionContext, model_sha256: str) -> str:
        """The deployment record of a model (NOT_FOUND if it was never deployed)."""
        caller_from_ctx(ctx)
        sha = model.sha256_hex(model_sha256, "model_sha256")
        value = await ctx.get_stub().get_state(ctx.get_stub().create_composite_key(MODEL_KEY, [sha]))
        if not value:
            raise not_found(f"model {sha} is not deployed")
        return bytes(value).decode("utf-8")
