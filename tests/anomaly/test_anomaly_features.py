"""Window features on hand-made event lists: every value is worked out by hand in the comments."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from ciphercare.analytics.anomaly.events import DAY_MS, EVENT_COLUMNS, EventSchemaError, check_events
from ciphercare.analytics.anomaly.explain import BY_BREAK_GLASS, BY_CARE, BY_CONSENT, UNEXPLAINED
from ciphercare.analytics.anomaly.features import FEATURES, off_hours, window_features

DAY1 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)
DAY2 = DAY1 + DAY_MS


def at(day: int, hh: int, mm: int = 0) -> int:
    return day + (hh * 60 + mm) * 60_000


def event(time: int, requester: str, pid: str, *, purpose: str = "TREAT", outcome: str = "success",
          source: str = "h-a/ehr/s1", type_: str = "110110", org: str = "h-a") -> dict[str, object]:
    return {"time": time, "requester": requester, "org": org, "client": "ehr", "source": source, "pid": pid,
            "purpose": purpose, "data_class": "Observation", "outcome": outcome, "consent_id": "",
            "type": type_, "subtype": "read", "action": "R"}


# (event, basis, no_basis)
ROWS = [
    (event(at(DAY1, 8), "u1", "p1"), BY_BREAK_GLASS, False),  # 1
    (event(at(DAY1, 8, 5), "u1", "p1", source="h-a/ehr/s2"), BY_CARE, False),  # 2: s1 -> s2 in 5 min
    (event(at(DAY1, 8, 20), "u1", "p2", outcome="denied"), UNEXPLAINED, True),  # 3: s2 -> s1 in 15 min
    (event(at(DAY1, 9, 10), "u1", "p3", purpose="HRESCH", type_="110106"), BY_CONSENT, False),  # 4: export
    (event(at(DAY1, 20, 30), "u1", "p3"), UNEXPLAINED, True),  # 5: off hours
    (event(at(DAY1, 10), "u2", "p2", source="h-a/ehr/s3"), UNEXPLAINED, False),  # 6
    (event(at(DAY1, 10, 30), "u2", "p2", source="h-a/ehr/s3"), UNEXPLAINED, False),  # 7
    (event(at(DAY1, 2), "svc", "p1", purpose="CAREMGT", type_="risk-scoring"), BY_CONSENT, False),  # 8
    (event(at(DAY1, 2, 1), "svc", "p1", purpose="CAREMGT", type_="risk-scoring"), BY_CONSENT, False),  # 9
    (event(at(DAY1, 2, 2), "svc", "p5", purpose="CAREMGT", type_="risk-scoring"), BY_CONSENT, False),  # 10
    (event(at(DAY2, 8), "u1", "p1"), BY_CARE, False),  # 11: p1 seen on day 1
    (event(at(DAY2, 8, 30), "u1", "p6"), BY_CARE, False),  # 12: p6 new
]


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    frame = pd.DataFrame([r[0] for r in ROWS])
    order = np.argsort(frame["time"].to_numpy(), kind="stable")
    basis = np.array([r[1] for r in ROWS], dtype=np.int8)[order]
    no_basis = np.array([r[2] for r in ROWS])[order]
    events = check_events(frame)
    glass = pd.DataFrame({"requester": ["u1"], "pid": ["p1"], "start": [at(DAY1, 7, 55)], "end": [at(DAY1, 11, 55)]})
    return window_features(events, basis, no_basis, break_glass=glass,
                           prior_pairs=pd.DataFrame({"requester": ["svc"], "pid": ["p1"]}))


def test_every_documented_feature_is_computed(features: pd.DataFrame) -> None:
    assert list(features.columns) == list(FEATURES)
    assert list(features.index.names) == ["requester", "org", "window"]
    assert set(features.index) == {("u1", "h-a", DAY1), ("u1", "h-a", DAY2), ("u2", "h-a", DAY1),
                                   ("svc", "h-a", DAY1)}


def test_clinician_day_exact_values(features: pd.DataFrame) -> None:
    row = features.loc[("u1", "h-a", DAY1)].to_dict()
    assert row == {
        "events": 5.0,
        "patients": 3.0,  # p1, p2, p3
        "peak_events_per_hour": 3.0,  # 08:00, 08:05, 08:20
        "peak_patients_per_hour": 2.0,  # p1, p2 in the 08 hour
        "active_hours": 3.0,  # 08, 09, 20
        "span_hours": 12.5,  # 08:00 -> 20:30
        "off_hours_events": 1.0,  # 20:30
        "off_hours_share": 0.2,
        "purposes": 2.0,  # TREAT, HRESCH
        "non_treatment_share": 0.2,
        "denials": 1.0,
        "denial_share": 0.2,
        "new_patient_ratio": 1.0,  # nothing before
        "unexplained": 2.0,  # events 3 and 5
        "unexplained_patients": 2.0,
        "no_basis": 2.0,
        "max_unexplained_repeat": 1.0,
        "repeat_ratio": 5 / 3,
        "crowd": 2.0,  # p2 is also unexplained for u2 that day
        "scoring_events": 0.0,
        "scoring_repeat": 0.0,
        "rescored_patients": 0.0,
        "export_patients": 1.0,
        "sources": 2.0,
        "fast_source_switches": 1.0,  # s1 -> s2 within 5 minutes; s2 -> s1 took 15
        "interleaved_sources": 1.0,  # s1, s2, s1 within 20 minutes
        "break_glass": 1.0,
        "break_glass_uncared": 1.0,  # p1 at 08:00 rests on break-glass alone
    }


def test_repeated_lookups_crowd_scoring_and_new_patients(features: pd.DataFrame) -> None:
    u2 = features.loc[("u2", "h-a", DAY1)]
    assert (u2["unexplained"], u2["unexplained_patients"], u2["max_unexplained_repeat"]) == (2.0, 1.0, 2.0)
    assert (u2["crowd"], u2["no_basis"], u2["repeat_ratio"], u2["new_patient_ratio"]) == (2.0, 0.0, 2.0, 1.0)
    svc = features.loc[("svc", "h-a", DAY1)]
    assert (svc["scoring_events"], svc["scoring_repeat"], svc["off_hours_share"]) == (3.0, 1.5, 1.0)
    assert svc["non_treatment_share"] == 0.0  # CAREMGT is a treatment purpose
    assert svc["new_patient_ratio"] == 0.5  # p1 was in prior_pairs, p5 is new
    day2 = features.loc[("u1", "h-a", DAY2)]
    assert (day2["events"], day2["new_patient_ratio"], day2["unexplained"], day2["break_glass"]) == (2.0, 0.5, 0.0, 0.0)


def test_window_length_and_local_time() -> None:
    events = check_events(pd.DataFrame([event(at(DAY1, 6, 30), "u1", "p1"), event(at(DAY1, 7, 30), "u1", "p1")]))
    utc = window_features(events)
    assert utc["off_hours_events"].tolist() == [1.0]
    # Two hours east of UTC, 06:30Z is 08:30 local and 07:30Z is 09:30: both within working hours.
    east = window_features(events, utc_offset_hours=2)
    assert east["off_hours_events"].tolist() == [0.0]
    hourly = window_features(events, window_ms=3_600_000)
    assert hourly["events"].tolist() == [1.0, 1.0]
    assert off_hours(np.array([at(DAY1, 7), at(DAY1, 18, 59), at(DAY1, 19)])).tolist() == [False, False, True]


def test_bad_inputs_are_refused() -> None:
    events = check_events(pd.DataFrame([event(at(DAY1, 8), "u1", "p1")]))
    with pytest.raises(ValueError, match="one entry per event"):
        window_features(events, np.zeros(2, dtype=np.int8), np.zeros(2, dtype=bool))
    with pytest.raises(ValueError, match="window_ms"):
        window_features(events, window_ms=0)
    with pytest.raises(EventSchemaError, match="pid"):
        check_events(pd.DataFrame([event(at(DAY1, 8), "u1", "p1")]).drop(columns="pid"))
    broken = pd.DataFrame([event(at(DAY1, 8), "u1", "p1")])
    broken.loc[0, "purpose"] = None
    with pytest.raises(EventSchemaError, match="purpose"):
        check_events(broken)
    assert list(check_events(pd.DataFrame([event(1, "u", "p")])).columns) == list(EVENT_COLUMNS)
