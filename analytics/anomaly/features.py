"""Features of one requester's access in one time window (default: a calendar day).

Every feature is a count, a share or a ratio over the window's events; none carries a patient's
identity. Features that describe *whom* was accessed use the explanation (``explain.py``): only
unexplained accesses count as unexplained, snooping-shaped or without basis.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ciphercare.analytics.anomaly.events import DAY_MS, HOUR_MS, MINUTE_MS, OUTCOME_DENIED, TYPE_EXPORT, TYPE_SCORING
from ciphercare.analytics.anomaly.explain import BY_BREAK_GLASS, TREATMENT_PURPOSES, UNEXPLAINED

WINDOW_KEYS: tuple[str, ...] = ("requester", "org", "window")

#: Feature columns and what each measures (the docs table is generated from this).
FEATURES: dict[str, str] = {
    "events": "accesses in the window (rate)",
    "patients": "distinct patients accessed",
    "peak_events_per_hour": "most accesses in one clock hour",
    "peak_patients_per_hour": "most distinct patients in one clock hour",
    "active_hours": "clock hours with at least one access",
    "span_hours": "hours from first to last access",
    "off_hours_events": "accesses outside 07:00-19:00 local time",
    "off_hours_share": "share of accesses outside working hours",
    "purposes": "distinct purposes of use",
    "non_treatment_share": "share of accesses for a purpose other than TREAT, ETREAT, CAREMGT",
    "denials": "accesses denied",
    "denial_share": "share of accesses denied",
    "new_patient_ratio": "share of the window's patients this requester never accessed before",
    "unexplained": "accesses with no consent, care relationship or break-glass declaration",
    "unexplained_patients": "distinct patients among unexplained accesses",
    "no_basis": "unexplained accesses to a patient with no consent or care episode at the organisation",
    "max_unexplained_repeat": "most unexplained accesses to a single patient (repeated look-ups)",
    "repeat_ratio": "accesses per distinct patient",
    "crowd": "most distinct requesters with unexplained access (scoring aside) to the same patient in the window",
    "scoring_events": "risk scores requested",
    "scoring_repeat": "risk scores per distinct scored patient",
    "rescored_patients": "patients scored at least 5 times in the window (repeated look-ups by scoring)",
    "export_patients": "distinct patients in exports",
    "sources": "distinct workstations / systems (source observers)",
    "fast_source_switches": "consecutive accesses from different sources less than 10 minutes apart",
    "interleaved_sources": "accesses from one source between two from another within 30 minutes (A, B, A)",
    "break_glass": "break-glass declarations made in the window",
    "break_glass_uncared": "patients whose access in the window rests on break-glass alone (no care relationship)",
}

FAST_SWITCH_MS = 10 * MINUTE_MS
INTERLEAVE_MS = 30 * MINUTE_MS
RESCORED_MIN = 5
WORK_START_HOUR = 7
WORK_END_HOUR = 19


def off_hours(time_ms: np.ndarray, utc_offset_hours: float = 0.0) -> np.ndarray:
    """True where a time (ms since epoch) falls outside 07:00-19:00 local time.

    By the clock only: hospitals work weekends, so a Saturday day shift is not off-hours.
    """
    local = time_ms.astype(np.int64) + int(utc_offset_hours * HOUR_MS)
    hour = (local // HOUR_MS) % 24
    return np.asarray((hour < WORK_START_HOUR) | (hour >= WORK_END_HOUR))


def window_features(
    events: pd.DataFrame,
    basis: np.ndarray | None = None,
    no_basis: np.ndarray | None = None,
    *,
    break_glass: pd.DataFrame | None = None,
    prior_pairs: pd.DataFrame | None = None,
    window_ms: int = DAY_MS,
    utc_offset_hours: float = 0.0,
) -> pd.DataFrame:
    """One row per (requester, org, window) with every column of :data:`FEATURES`.

    Args:
        events: an events table (``events.check_events``).
        basis, no_basis: per-event explanation (``explain.explain``); ``None`` treats every access as unexplained.
        break_glass: declarations (``requester``, ``start``) to count per window.
        prior_pairs: (``requester``, ``pid``) pairs seen before ``events`` (for the new-patient ratio).
        window_ms: window length; windows start at multiples of it in local time.
    Returns:
        a frame indexed by (requester, org, window) where window is the window's start in ms.
    """
    if window_ms <= 0:
        raise ValueError("window_ms must be > 0")
    n = len(events)
    if basis is None:
        basis = np.zeros(n, dtype=np.int8)
    if no_basis is None:
        no_basis = np.ones(n, dtype=bool)
    if len(basis) != n or len(no_basis) != n:
        raise ValueError("basis and no_basis must have one entry per event")
    offset = int(utc_offset_hours * HOUR_MS)
    time = events["time"].to_numpy(dtype=np.int64)
    unexplained = np.asarray(basis) == UNEXPLAINED
    frame = pd.DataFrame({
        "requester": events["requester"].to_numpy(dtype=object),
        "org": events["org"].to_numpy(dtype=object),
        "window": ((time + offset) // window_ms) * window_ms - offset,
        "hour": (time + offset) // HOUR_MS,
        "time": time,
        "pid": events["pid"].to_numpy(dtype=object),
        "source": events["source"].to_numpy(dtype=object),
        "purpose": events["purpose"].to_numpy(dtype=object),
        "off": off_hours(time, utc_offset_hours),
        "denied": (events["outcome"] == OUTCOME_DENIED).to_numpy(),
        "non_treatment": ~events["purpose"].isin(TREATMENT_PURPOSES).to_numpy(),
        "unexplained": unexplained,
        "no_basis": np.asarray(no_basis) & unexplained,
        "scoring": (events["type"] == TYPE_SCORING).to_numpy(),
        "export": (events["type"] == TYPE_EXPORT).to_numpy(),
    })
    keys = list(WINDOW_KEYS)
    grouped = frame.groupby(keys, sort=True)
    out = pd.DataFrame({
        "events": grouped.size(),
        "patients": grouped["pid"].nunique(),
        "active_hours": grouped["hour"].nunique(),
        "span_hours": (grouped["time"].max() - grouped["time"].min()) / HOUR_MS,
        "off_hours_events": grouped["off"].sum(),
        "purposes": grouped["purpose"].nunique(),
        "non_treatment_events": grouped["non_treatment"].sum(),
        "denials": grouped["denied"].sum(),
        "unexplained": grouped["unexplained"].sum(),
        "no_basis": grouped["no_basis"].sum(),
        "scoring_events": grouped["scoring"].sum(),
    })
    hourly = frame.groupby([*keys, "hour"], sort=False)
    out["peak_events_per_hour"] = hourly.size().groupby(level=keys).max()
    out["peak_patients_per_hour"] = hourly["pid"].nunique().groupby(level=keys).max()
    out["off_hours_share"] = out["off_hours_events"] / out["events"]
    out["non_treatment_share"] = out["non_treatment_events"] / out["events"]
    out["denial_share"] = out["denials"] / out["events"]
    out["repeat_ratio"] = out["events"] / out["patients"]

    subset = frame[frame["unexplained"]]
    if len(subset):
        per_patient = subset.groupby([*keys, "pid"], sort=False).size()
        out["unexplained_patients"] = per_patient.groupby(level=keys).size()
        out["max_unexplained_repeat"] = per_patient.groupby(level=keys).max()
        # Crowd: people looking, so automated scoring (a batch, not a look) is left out.
        looking = subset[~subset["scoring"]]
        if len(looking):
            crowd = looking.groupby(["window", "pid"], sort=False)["requester"].nunique().rename("crowd")
            with_crowd = looking[[*keys, "pid"]].join(crowd, on=["window", "pid"])
            out["crowd"] = with_crowd.groupby(keys, sort=False)["crowd"].max()

    glass_only = frame[np.asarray(basis) == BY_BREAK_GLASS]
    if len(glass_only):
        out["break_glass_uncared"] = glass_only.groupby(keys, sort=False)["pid"].nunique()

    subset = frame[frame["scoring"]]
    if len(subset):
        out["scoring_patients"] = subset.groupby(keys, sort=False)["pid"].nunique()
        per_patient = subset.groupby([*keys, "pid"], sort=False).size()
        out["rescored_patients"] = (per_patient >= RESCORED_MIN).groupby(level=keys).sum()
    subset = frame[frame["export"]]
    if len(subset):
        out["export_patients"] = subset.groupby(keys, sort=False)["pid"].nunique()

    # New patients: the requester's first access to the patient (in prior_pairs + events) is in this window.
    pairs = frame[[*keys, "pid"]].drop_duplicates(["requester", "pid"], keep="first")
    if prior_pairs is not None and len(prior_pairs):
        known = pd.MultiIndex.from_frame(prior_pairs[["requester", "pid"]].astype(object))
        pairs = pairs[~pd.MultiIndex.from_frame(pairs[["requester", "pid"]]).isin(known)]
    out["new_patients"] = pairs.groupby(keys, sort=False).size()

    # Consecutive accesses by the same requester from different sources, close in time.
    ordered = frame.sort_values(["requester", "time"], kind="stable")
    same_requester = ordered["requester"].to_numpy()[1:] == ordered["requester"].to_numpy()[:-1]
    switched = ordered["source"].to_numpy()[1:] != ordered["source"].to_numpy()[:-1]
    close = np.diff(ordered["time"].to_numpy()) < FAST_SWITCH_MS
    same_window = ordered["window"].to_numpy()[1:] == ordered["window"].to_numpy()[:-1]
    fast = np.concatenate([[False], same_requester & switched & close & same_window])
    out["fast_source_switches"] = ordered[fast].groupby(keys, sort=False).size()
    source = ordered["source"].to_numpy()
    requester = ordered["requester"].to_numpy()
    times = ordered["time"].to_numpy()
    window = ordered["window"].to_numpy()
    middle = np.zeros(len(ordered), dtype=bool)
    if len(ordered) >= 3:
        middle[1:-1] = ((source[:-2] == source[2:]) & (source[1:-1] != source[:-2])
                        & (requester[:-2] == requester[2:]) & (requester[1:-1] == requester[:-2])
                        & (window[:-2] == window[2:]) & (times[2:] - times[:-2] < INTERLEAVE_MS))
    out["interleaved_sources"] = ordered[middle].groupby(keys, sort=False).size()
    out["sources"] = grouped["source"].nunique()

    out["break_glass"] = 0
    if break_glass is not None and len(break_glass):
        start = break_glass["start"].to_numpy(dtype=np.int64)
        declared = pd.DataFrame({"requester": break_glass["requester"].to_numpy(dtype=object),
                                 "window": ((start + offset) // window_ms) * window_ms - offset})
        on = ["requester", "window"]
        if "org" in break_glass.columns:  # declarations naming the declarer's organisation count there only
            declared["org"] = break_glass["org"].to_numpy(dtype=object)
            on = ["requester", "org", "window"]
        counts = declared.groupby(on).size().rename("bg")
        joined = out.reset_index()[keys].join(counts, on=on)
        out["break_glass"] = joined["bg"].fillna(0).to_numpy()

    for name in ("unexplained_patients", "max_unexplained_repeat", "crowd", "scoring_patients", "export_patients",
                 "new_patients", "fast_source_switches", "interleaved_sources", "break_glass_uncared",
                 "rescored_patients"):
        if name not in out.columns:
            out[name] = 0
    out = out.fillna(0)
    out["new_patient_ratio"] = out["new_patients"] / out["patients"]
    out["scoring_repeat"] = np.where(out["scoring_patients"] > 0,
                                     out["scoring_events"] / out["scoring_patients"].clip(lower=1), 0.0)
    result = out[list(FEATURES)].astype(float)
    result.index = result.index.set_names(keys)
    return result
