"""Explanation-based auditing: which accesses have a reason on record.

An access is *explained* when one of these covers it at the time it happened:

- a **care relationship**: the requester's team (from the organisation's roster) has a care episode
  with the patient at the requester's organisation, up to a grace period after the episode ends;
- a **consent**: an active consent of the patient grants the requester's organisation the access's
  purpose. A consent is an organisation-level basis, so it explains accesses by service accounts
  (scoring, research export) and non-treatment purposes; a treatment access by an individual
  clinician also needs that clinician's care relationship (or a break-glass declaration);
- a **break-glass declaration** by the requester (at the requester's organisation, when the declarations
  name it) for the patient, within its time limit.

Explained accesses are not suspicious one by one; what remains goes to the features and the model.
``no_basis`` marks the stronger case: neither a consent of the patient with the organisation nor any
care episode of the patient at the organisation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ciphercare.analytics.anomaly.events import DAY_MS, timestamp_ms

TREATMENT_PURPOSES: frozenset[str] = frozenset({"TREAT", "ETREAT", "CAREMGT"})

#: Basis codes, in the order they are tried.
UNEXPLAINED = 0
BY_CARE = 1
BY_CONSENT = 2
BY_BREAK_GLASS = 3
BASIS_NAMES: dict[int, str] = {
    UNEXPLAINED: "none", BY_CARE: "care", BY_CONSENT: "consent", BY_BREAK_GLASS: "break-glass",
}

ROSTER_COLUMNS = ("requester", "org", "team", "kind")  # kind: "clinician" | "service"
CARE_COLUMNS = ("pid", "org", "team", "start", "end")
CONSENT_COLUMNS = ("consent_id", "pid", "org", "purpose", "start", "end", "revoked")
BREAK_GLASS_COLUMNS = ("requester", "pid", "start", "end")  # optional: "org", the declarer's organisation


def _frame(data: pd.DataFrame | None, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    if data is None:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    missing = [name for name in columns if name not in data.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s): {', '.join(missing)}")
    return data.loc[:, list(columns)].reset_index(drop=True)


@dataclass(frozen=True)
class AuditContext:
    """What can explain an access (no PHI: pseudonyms, codes and times in ms).

    ``consents`` has one row per (consent, purpose); ``end`` and ``revoked`` are ``INT64_MAX`` when open.
    ``break_glass`` has one row per declaration, ``end`` inclusive; with an ``org`` column a declaration
    explains only its declarer's accesses at that organisation (as ``consent:Check`` decides).
    """

    roster: pd.DataFrame
    care: pd.DataFrame
    consents: pd.DataFrame
    break_glass: pd.DataFrame
    care_grace_ms: int = 3 * DAY_MS

    @classmethod
    def build(cls, roster: pd.DataFrame | None = None, care: pd.DataFrame | None = None,
              consents: pd.DataFrame | None = None, break_glass: pd.DataFrame | None = None,
              care_grace_ms: int = 3 * DAY_MS) -> AuditContext:
        """A context from tables with the documented columns (any may be omitted: nothing explains then)."""
        if care_grace_ms < 0:
            raise ValueError("care_grace_ms must be >= 0")
        glass = _frame(break_glass, BREAK_GLASS_COLUMNS, "break_glass")
        if break_glass is not None and "org" in break_glass.columns:
            glass = glass.assign(org=break_glass["org"].to_numpy(dtype=object))
        return cls(_frame(roster, ROSTER_COLUMNS, "roster"), _frame(care, CARE_COLUMNS, "care"),
                   _frame(consents, CONSENT_COLUMNS, "consents"), glass, care_grace_ms)


_OPEN_MS = int(np.iinfo(np.int64).max)


def consents_from_records(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The ``consents`` table from the consent contract's records (the ledger's consent JSON).

    Only ``permit`` consents explain an access; each gives one row per purpose, with its period and
    revocation time. A consent with nested provisions is left out: its exceptions (a purpose or period
    denied inside it) would make the explanation broader than ``consent:Check``, and leaving it out only
    leaves more accesses unexplained, never fewer.
    """
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        try:
            if record["decision"] != "permit" or record.get("provisions"):
                continue
            period = record.get("period") or {}
            start = timestamp_ms(period["start"]) if period.get("start") else -_OPEN_MS
            end = timestamp_ms(period["end"]) - 1 if period.get("end") else _OPEN_MS  # the end is exclusive
            revoked = timestamp_ms(record["revoked_at"]) if record.get("revoked_at") else _OPEN_MS
            for purpose in record["purposes"]:
                rows.append({"consent_id": str(record["id"]), "pid": str(record["pid"]),
                             "org": str(record["grantee_org"]), "purpose": str(purpose), "start": start,
                             "end": end, "revoked": revoked})
        except KeyError as exc:
            raise ValueError(f"consent record {index} lacks {exc.args[0]!r}") from exc
    if not rows:
        return _frame(None, CONSENT_COLUMNS, "consents")
    return pd.DataFrame(rows, columns=list(CONSENT_COLUMNS))


def break_glass_from_records(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The ``break_glass`` table (with ``org``) from the breakglass contract's declarations (the ledger's JSON).

    A declaration explains its declarer's accesses to its patient from ``declared_at`` until ``expires_at``
    (exclusive), whatever its review state: an escalated declaration still explains *why* the record was
    opened; whether the reason was good is the review's question, and the repeated-break-glass rule
    looks at how often a clinician declares.
    """
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        try:
            declarer = record["declared_by"]
            rows.append({"requester": str(declarer["subject"]), "org": str(declarer["org"]),
                         "pid": str(record["pid"]), "start": timestamp_ms(record["declared_at"]),
                         "end": timestamp_ms(record["expires_at"]) - 1})
        except KeyError as exc:
            raise ValueError(f"break-glass declaration {index} lacks {exc.args[0]!r}") from exc
    return pd.DataFrame(rows, columns=[*BREAK_GLASS_COLUMNS, "org"])


@dataclass(frozen=True)
class Explanation:
    """Per event: the basis code that explains it (``UNEXPLAINED`` if none) and, for unexplained accesses only,
    whether the patient has no consent and no care episode at the organisation at all (``no_basis``)."""

    basis: np.ndarray
    no_basis: np.ndarray

    @property
    def explained(self) -> np.ndarray:
        return np.asarray(self.basis != UNEXPLAINED)


def _covered(left: pd.DataFrame, right: pd.DataFrame, on: list[str], start: str, end: str) -> np.ndarray:
    """Row numbers (``_row``) of ``left`` whose ``time`` falls in [start, end] of a matching ``right`` row."""
    if left.empty or right.empty:
        return np.empty(0, dtype=np.int64)
    joined = left.merge(right, on=on, how="inner")
    time = joined["time"].to_numpy()
    inside = (time >= joined[start].to_numpy()) & (time <= joined[end].to_numpy())
    return np.unique(joined["_row"].to_numpy()[inside]).astype(np.int64)


def explain(events: pd.DataFrame, context: AuditContext) -> Explanation:
    """The basis of every access in ``events`` (an events table) under ``context``."""
    n = len(events)
    basis = np.zeros(n, dtype=np.int8)
    base = pd.DataFrame({
        "_row": np.arange(n, dtype=np.int64),
        "time": events["time"].to_numpy(dtype=np.int64),
        "requester": events["requester"].to_numpy(dtype=object),
        "org": events["org"].to_numpy(dtype=object),
        "pid": events["pid"].to_numpy(dtype=object),
        "purpose": events["purpose"].to_numpy(dtype=object),
    })
    roster = context.roster.drop_duplicates(["requester", "org"])
    with_team = base.merge(roster, on=["requester", "org"], how="left")
    with_team = with_team.sort_values("_row")
    kind = with_team["kind"].fillna("").to_numpy(dtype=object)

    care = context.care.assign(
        start=context.care["start"].astype(np.int64),
        grace_end=context.care["end"].astype(np.int64) + context.care_grace_ms,
    )
    by_care = _covered(with_team[["_row", "time", "pid", "org", "team"]].dropna(subset=["team"]),
                       care[["pid", "org", "team", "start", "grace_end"]], ["pid", "org", "team"], "start", "grace_end")
    basis[by_care] = BY_CARE

    consents = context.consents.assign(
        valid_to=np.minimum(context.consents["end"].astype(np.int64), context.consents["revoked"].astype(np.int64) - 1),
        start=context.consents["start"].astype(np.int64),
    )
    consent_basis = (kind == "service") | ~base["purpose"].isin(TREATMENT_PURPOSES).to_numpy()
    open_rows = base[(basis == UNEXPLAINED) & consent_basis]
    by_consent = _covered(open_rows[["_row", "time", "pid", "org", "purpose"]],
                          consents[["pid", "org", "purpose", "start", "valid_to"]],
                          ["pid", "org", "purpose"], "start", "valid_to")
    basis[by_consent] = BY_CONSENT

    open_rows = base[basis == UNEXPLAINED]
    glass = context.break_glass.assign(start=context.break_glass["start"].astype(np.int64),
                                       end=context.break_glass["end"].astype(np.int64))
    on = ["requester", "pid", "org"] if "org" in glass.columns else ["requester", "pid"]
    by_glass = _covered(open_rows[["_row", "time", *on]], glass, on, "start", "end")
    basis[by_glass] = BY_BREAK_GLASS

    # No basis at all: no consent of the patient with the organisation and no episode there.
    open_rows = base[basis == UNEXPLAINED]
    any_consent = _covered(open_rows[["_row", "time", "pid", "org"]],
                           consents[["pid", "org", "start", "valid_to"]], ["pid", "org"], "start", "valid_to")
    any_care = _covered(open_rows[["_row", "time", "pid", "org"]], care[["pid", "org", "start", "grace_end"]],
                        ["pid", "org"], "start", "grace_end")
    no_basis = basis == UNEXPLAINED
    no_basis[any_consent] = False
    no_basis[any_care] = False
    return Explanation(basis=basis, no_basis=no_basis)
