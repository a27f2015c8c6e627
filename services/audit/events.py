"""The one builder of access events: every ``accesslog:Record`` input the services submit is made here.

Used by AccessLogService.Record (an access a hospital reports), the refusal recorder (denied events for
refused calls), the scoring servicer (one event per scored or refused patient) and privacy erasure (the
erasure event). The contract validates the result (consent/model.py ``AccessEventInput``) and adds the
id, the recorded time and the agent (always the caller's certificate, never an argument).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def access_event(
    *,
    type: str,  # noqa: A002 - the AuditEvent field's name
    subtype: str,
    action: str,
    outcome: str,
    observer: str,
    pid: str | None,
    purpose_of_use: str | None = None,
    data_classes: Iterable[str] = (),
    outcome_desc: str = "",
    consent_id: str | None = None,
    model_sha256: str | None = None,
    detail_sha256: str | None = None,
    repeat_count: int | None = None,
) -> dict[str, Any]:
    """The contract input of one access event (``purpose_of_use`` None = unspecified, never invented)."""
    entity: dict[str, Any] = {"pid": pid, "data_classes": list(data_classes)}
    for name, value in (("consent_id", consent_id), ("model_sha256", model_sha256),
                        ("detail_sha256", detail_sha256)):
        if value:
            entity[name] = value
    event: dict[str, Any] = {
        "type": type,
        "subtype": subtype,
        "action": action,
        "outcome": outcome,
        "purpose_of_use": purpose_of_use or None,
        "source": {"observer": observer},
        "entity": entity,
    }
    if outcome_desc:
        event["outcome_desc"] = outcome_desc
    if repeat_count is not None:
        event["repeat_count"] = repeat_count
    return event
