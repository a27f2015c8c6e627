"""The detector's input: access events as one columnar table, shaped like the ledger's AccessEvent.

One row per access event, with the fields of ``ciphercare.v1.AccessEvent`` the detector needs
(pseudonyms and codes only, never off-chain details). :func:`events_from_records` converts the
ledger's event JSON (what ``AccessLogService.Search`` / ``Watch`` return, as dicts) into this table;
:func:`records_from_events` goes the other way, so simulated events can be fed through the same path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

#: Columns of an events table, in order. ``time`` is milliseconds since the Unix epoch (UTC).
EVENT_COLUMNS: tuple[str, ...] = (
    "time",  # AccessEvent.recorded
    "requester",  # AccessEvent.agent.subject (pseudonymous user or service account)
    "org",  # AccessEvent.agent.organization
    "client",  # AccessEvent.agent.client_id
    "source",  # AccessEvent.source_observer (the workstation / system that saw the access)
    "pid",  # AccessEvent.pid (patient pseudonym)
    "purpose",  # AccessEvent.purpose_of_use (v3 ActReason)
    "data_class",  # first of AccessEvent.data_classes
    "outcome",  # "success" | "denied" | "error"
    "consent_id",  # AccessEvent.consent_id ("" when none)
    "type",  # AccessEvent.type ("110110" record, "110112" query, "110106" export, "risk-scoring")
    "subtype",  # AccessEvent.subtype ("read", "search-type", "score", ...)
    "action",  # AccessEvent.action (C R U D E)
)
STRING_COLUMNS: tuple[str, ...] = EVENT_COLUMNS[1:]

OUTCOME_SUCCESS = "success"
OUTCOME_DENIED = "denied"
TYPE_EXPORT = "110106"
TYPE_SCORING = "risk-scoring"

#: Kinds of misuse the simulator injects and the detector names in a flag.
MISUSE_KINDS: tuple[str, ...] = (
    "snooping",  # looking up neighbours or a well-known patient with no care relationship
    "bulk_export",  # hundreds of patients' records within an hour or two
    "off_hours",  # a day-shift clinician's burst of access in the middle of the night
    "shared_credentials",  # one account used by two people at once, from two workstations
    "model_extraction",  # scoring volumes of the same few patients, shaped like probing the model
    "break_glass",  # repeated break-glass declarations outside any care relationship
)


class EventSchemaError(ValueError):
    """An events table or record lacks a field the detector needs."""


def empty_events() -> pd.DataFrame:
    """An events table with no rows and the right columns and types."""
    frame = pd.DataFrame({name: pd.Series(dtype=object) for name in STRING_COLUMNS})
    frame.insert(0, "time", pd.Series(dtype=np.int64))
    return frame


def check_events(events: pd.DataFrame) -> pd.DataFrame:
    """Validate an events table and return it with ``time`` as int64 and rows in time order."""
    missing = [name for name in EVENT_COLUMNS if name not in events.columns]
    if missing:
        raise EventSchemaError(f"events lack column(s): {', '.join(missing)}")
    out = events.loc[:, list(EVENT_COLUMNS)].copy()
    out["time"] = out["time"].astype(np.int64)
    for name in STRING_COLUMNS:
        if out[name].isna().any():
            raise EventSchemaError(f"column {name} has missing values (use '' for none)")
    if not out["time"].is_monotonic_increasing:
        out = out.sort_values("time", kind="stable")
    return out.reset_index(drop=True)


def timestamp_ms(value: Any) -> int:
    """Milliseconds since the epoch of an ISO 8601 string (``Z`` or offset; naive means UTC) or a datetime."""
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, str):
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
    else:
        raise EventSchemaError(f"recorded must be an ISO 8601 string or a datetime, not {type(value).__name__}")
    return int(stamp.timestamp() * 1000)


def events_from_records(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build an events table from ledger-shaped AccessEvent dicts (``recorded``, ``agent``, ``entity`` ...)."""
    rows: dict[str, list[Any]] = {name: [] for name in EVENT_COLUMNS}
    for index, record in enumerate(records):
        try:
            agent = record["agent"]
            entity = record.get("entity") or {}
            classes = entity.get("data_classes") or []
            rows["time"].append(timestamp_ms(record["recorded"]))
            rows["requester"].append(str(agent["subject"]))
            rows["org"].append(str(agent.get("org") or ""))
            rows["client"].append(str(agent.get("client") or ""))
            rows["source"].append(str((record.get("source") or {}).get("observer") or ""))
            rows["pid"].append(str(entity.get("pid") or ""))
            rows["purpose"].append(str(record.get("purpose_of_use") or ""))
            rows["data_class"].append(str(classes[0]) if classes else "")
            rows["outcome"].append(str(record["outcome"]))
            rows["consent_id"].append(str(entity.get("consent_id") or ""))
            rows["type"].append(str(record["type"]))
            rows["subtype"].append(str(record.get("subtype") or ""))
            rows["action"].append(str(record.get("action") or ""))
        except KeyError as exc:
            raise EventSchemaError(f"record {index} lacks {exc.args[0]!r}") from exc
    if not rows["time"]:
        return empty_events()
    return check_events(pd.DataFrame(rows))


def records_from_events(events: pd.DataFrame) -> list[dict[str, Any]]:
    """Ledger-shaped AccessEvent dicts for an events table (inverse of :func:`events_from_records`)."""
    out: list[dict[str, Any]] = []
    checked = check_events(events)
    columns = {name: checked[name].tolist() for name in EVENT_COLUMNS}
    for i, time in enumerate(columns["time"]):
        row = {name: str(columns[name][i]) for name in STRING_COLUMNS}
        stamp = datetime.fromtimestamp(int(time) / 1000, tz=UTC).isoformat(timespec="milliseconds")
        entity: dict[str, Any] = {"pid": row["pid"], "data_classes": [row["data_class"]] if row["data_class"] else []}
        if row["consent_id"]:
            entity["consent_id"] = row["consent_id"]
        agent: dict[str, Any] = {"subject": row["requester"], "org": row["org"], "roles": []}
        if row["client"]:
            agent["client"] = row["client"]
        out.append({
            "type": row["type"], "subtype": row["subtype"], "action": row["action"],
            "recorded": stamp.replace("+00:00", "Z"), "outcome": row["outcome"], "purpose_of_use": row["purpose"],
            "agent": agent, "source": {"observer": row["source"]}, "entity": entity,
        })
    return out
