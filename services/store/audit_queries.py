"""Compliance reads of the access-event projection: pages both ways, aggregates, exports, detector rows.

Everything here runs in SQL over the whole filtered set (never over a first page of rows), on SQLite and
PostgreSQL alike. Paging is by keyset on the ledger sequence (``seq``), so a deep page costs what the first
page costs. Only the projection's columns and the on-chain event JSON are read: pseudonyms, codes and
hashes, never an off-chain document.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select

from ciphercare.services.store.models import AccessEventRow
from ciphercare.services.store.repository import AccessEventIndex, AccessQuery, OffchainStore

DAY_MS = 86_400_000
#: The projection's columns in AccessEventIndex order (read as plain rows: no ORM objects on bulk reads).
_COLUMNS = (AccessEventRow.seq, AccessEventRow.event_id, AccessEventRow.tx_id, AccessEventRow.recorded_ms,
            AccessEventRow.pid, AccessEventRow.agent_subject, AccessEventRow.agent_org, AccessEventRow.purpose,
            AccessEventRow.outcome, AccessEventRow.event_json)


def _index(row: Any) -> AccessEventIndex:
    return AccessEventIndex(int(row[0]), row[1], row[2], int(row[3]), row[4], row[5], row[6], row[7], row[8],
                            bytes(row[9]))
Direction = Literal["next", "previous"]


@dataclass(frozen=True)
class AccessPage:
    """One page of a search, in the search order, and where the pages before and after it start."""

    rows: list[AccessEventIndex]
    #: Seq to continue after in the search order (None: this is the last page).
    next_after: int | None
    #: Seq to go back from (None: this is the first page).
    previous_before: int | None


@dataclass(frozen=True)
class AccessAggregate:
    """Counts over every event matching a query."""

    total: int
    by_outcome: dict[str, int]
    #: (UTC day number since the epoch, events, denied, errors), oldest day first.
    by_day: list[tuple[int, int, int, int]]
    #: (organisation, events, denied, errors), most events first.
    by_organization: list[tuple[str, int, int, int]]


def conditions(query: AccessQuery) -> list[ColumnElement[bool]]:
    """The WHERE conditions of ``query`` (filters and the caller's scope)."""
    where: list[ColumnElement[bool]] = []
    equal = (
        (AccessEventRow.pid, query.pid),
        (AccessEventRow.agent_subject, query.agent_subject),
        (AccessEventRow.agent_org, query.agent_org),
        (AccessEventRow.purpose, query.purpose),
        (AccessEventRow.outcome, query.outcome),
    )
    for column, value in equal:
        if value:
            where.append(column == value)
    if query.scope_pid is not None:
        where.append(AccessEventRow.pid == query.scope_pid)
    if query.scope_org is not None:
        where.append(AccessEventRow.agent_org == query.scope_org)
    if query.recorded_from_ms is not None:
        where.append(AccessEventRow.recorded_ms >= query.recorded_from_ms)
    if query.recorded_to_ms is not None:
        where.append(AccessEventRow.recorded_ms < query.recorded_to_ms)
    return where


class AccessEventQueries:
    """Compliance queries over the ``access_events`` projection of one :class:`OffchainStore`."""

    def __init__(self, store: OffchainStore) -> None:
        self.store = store

    # Search ---------------------------------------------------------------------------------

    def page(self, query: AccessQuery, *, limit: int, newest_first: bool = True,
             cursor: tuple[Direction, int] | None = None) -> AccessPage:
        """One page in the search order: the first (no cursor), the one after ``("next", seq)`` or the
        one before ``("previous", seq)``."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        direction: Direction = cursor[0] if cursor else "next"
        # Scanning forward in the search order means descending seq for newest-first.
        descending = newest_first if direction == "next" else not newest_first
        stmt = select(*_COLUMNS).where(*conditions(query))
        if cursor is not None:
            seq = cursor[1]
            stmt = stmt.where(AccessEventRow.seq < seq if descending else AccessEventRow.seq > seq)
        stmt = stmt.order_by(AccessEventRow.seq.desc() if descending else AccessEventRow.seq).limit(limit + 1)
        with self.store.session() as session:
            found = [_index(r) for r in session.execute(stmt)]
        more = len(found) > limit
        rows = found[:limit]
        if direction == "previous":
            rows.reverse()  # fetched walking backwards: show in the search order
        if not rows:
            return AccessPage([], None, None)
        if direction == "next":
            next_after = rows[-1].seq if more else None
            previous_before = rows[0].seq if cursor is not None else None
        else:
            next_after = rows[-1].seq  # the page we came back from follows
            previous_before = rows[0].seq if more else None
        return AccessPage(rows, next_after, previous_before)

    # Aggregates -------------------------------------------------------------------------------

    def aggregate(self, query: AccessQuery) -> AccessAggregate:
        """Counts by outcome, by UTC day and by organisation over every event matching ``query``.

        One scan: the rows are grouped by (day, organisation, outcome) in SQL and the few groups folded here.
        """
        day = (AccessEventRow.recorded_ms // DAY_MS).label("day")
        stmt = (select(day, AccessEventRow.agent_org, AccessEventRow.outcome, func.count())
                .where(*conditions(query)).group_by(day, AccessEventRow.agent_org, AccessEventRow.outcome))
        by_outcome: dict[str, int] = {}
        days: dict[int, list[int]] = {}
        orgs: dict[str, list[int]] = {}
        with self.store.session() as session:
            for d, org, outcome, n in session.execute(stmt):
                count = int(n)
                by_outcome[str(outcome)] = by_outcome.get(str(outcome), 0) + count
                for bucket in (days.setdefault(int(d), [0, 0, 0]), orgs.setdefault(str(org), [0, 0, 0])):
                    bucket[0] += count
                    bucket[1] += count if outcome == "denied" else 0
                    bucket[2] += count if outcome == "error" else 0
        return AccessAggregate(
            total=sum(by_outcome.values()), by_outcome=by_outcome,
            by_day=[(d, n, k, e) for d, (n, k, e) in sorted(days.items())],
            by_organization=[(o, n, k, e) for o, (n, k, e) in
                             sorted(orgs.items(), key=lambda item: (-item[1][0], item[0]))])

    def count(self, query: AccessQuery, *, max_seq: int | None = None) -> int:
        where = conditions(query)
        if max_seq is not None:
            where.append(AccessEventRow.seq <= max_seq)
        with self.store.session() as session:
            return int(session.scalar(select(func.count()).select_from(AccessEventRow).where(*where)) or 0)

    def max_seq(self) -> int:
        """The highest projected seq (-1 when empty): an export's snapshot bound."""
        with self.store.session() as session:
            value = session.scalar(select(func.max(AccessEventRow.seq)))
            return -1 if value is None else int(value)

    # Export -----------------------------------------------------------------------------------

    def iter_rows(self, query: AccessQuery, *, max_seq: int, batch: int = 2000,
                  newest_first: bool = True) -> Iterator[list[AccessEventIndex]]:
        """Every event matching ``query`` with seq <= ``max_seq``, in batches (keyset paging, no cap)."""
        cursor: tuple[Direction, int] = ("next", max_seq + 1) if newest_first else ("next", -1)
        bounded = [*conditions(query), AccessEventRow.seq <= max_seq]
        while True:
            seq = cursor[1]
            stmt = select(*_COLUMNS).where(*bounded)
            stmt = stmt.where(AccessEventRow.seq < seq) if newest_first else stmt.where(AccessEventRow.seq > seq)
            stmt = stmt.order_by(AccessEventRow.seq.desc() if newest_first else AccessEventRow.seq).limit(batch)
            with self.store.session() as session:
                rows = [_index(r) for r in session.execute(stmt)]
            if not rows:
                return
            yield rows
            if len(rows) < batch:
                return
            cursor = ("next", rows[-1].seq)

    # The unusual-access detector's input --------------------------------------------------------

    def detector_records(self, query: AccessQuery, *, batch: int = 5000) -> Iterator[dict[str, Any]]:
        """The fields the unusual-access detector reads, one ledger-shaped dict per event, oldest first.

        Only codes, pseudonyms and the agent's roles: the event's detail hash, model hash and outcome
        description are left out, and no off-chain document is ever read.
        """
        after = -1
        where = conditions(query)
        columns = (AccessEventRow.seq, AccessEventRow.event_json)
        while True:
            stmt = select(*columns).where(*where, AccessEventRow.seq > after).order_by(AccessEventRow.seq).limit(batch)
            with self.store.session() as session:
                found = session.execute(stmt).all()
            for seq, raw in found:
                yield _detector_fields(json.loads(bytes(raw)))
                after = int(seq)
            if len(found) < batch:
                return


def _detector_fields(event: dict[str, Any]) -> dict[str, Any]:
    agent = event.get("agent") or {}
    entity = event.get("entity") or {}
    return {
        "recorded": event["recorded"], "type": event.get("type", ""), "subtype": event.get("subtype", ""),
        "action": event.get("action", ""), "outcome": event.get("outcome", ""),
        "purpose_of_use": event.get("purpose_of_use", ""),
        "agent": {"subject": agent.get("subject", ""), "org": agent.get("org", ""),
                  "client": agent.get("client", ""), "roles": list(agent.get("roles") or [])},
        "source": {"observer": (event.get("source") or {}).get("observer", "")},
        "entity": {"pid": entity.get("pid", ""), "data_classes": list(entity.get("data_classes") or []),
                   "consent_id": entity.get("consent_id", "")},
    }
