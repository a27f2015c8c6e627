"""The simulator: deterministic by seed, shaped like ciphercare's access events, PHI kept off the detector's path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ciphercare.analytics.anomaly.events import (
    EVENT_COLUMNS,
    MISUSE_KINDS,
    EventSchemaError,
    events_from_records,
    records_from_events,
)
from ciphercare.analytics.anomaly.simulate import BENIGN, CANARY_NAME, SimConfig, Simulation, simulate
from ciphercare.consent import codes

SMALL = SimConfig(seed=11, orgs=2, teams_per_org=3, clinicians_per_team=3, patients=500, history_days=7, days=8,
                  cases_per_kind=2)


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(SMALL)


def _context_tables(s: Simulation) -> list[pd.DataFrame]:
    return [s.context.roster, s.context.care, s.context.consents, s.context.break_glass]


def test_same_seed_same_tables(sim: Simulation) -> None:
    again = simulate(SMALL)
    pd.testing.assert_frame_equal(sim.events, again.events)
    assert np.array_equal(sim.labels, again.labels)
    for mine, theirs in zip(_context_tables(sim), _context_tables(again), strict=True):
        pd.testing.assert_frame_equal(mine, theirs)
    pd.testing.assert_frame_equal(sim.patients, again.patients)


def test_another_seed_another_log(sim: Simulation) -> None:
    other = simulate(SimConfig(**{**SMALL.__dict__, "seed": 12}))
    assert not set(other.events["pid"]) & set(sim.events["pid"])  # pseudonyms are drawn per seed
    assert len(other.events) != len(sim.events) or not np.array_equal(other.events["time"], sim.events["time"])


def test_events_are_shaped_like_ciphercares(sim: Simulation) -> None:
    events = sim.events
    assert list(events.columns) == list(EVENT_COLUMNS)
    assert events["time"].is_monotonic_increasing
    assert set(events["purpose"]) <= set(codes.PURPOSES_OF_USE)
    assert set(events["data_class"]) <= set(codes.DATA_CLASSES)
    assert set(events["type"]) <= set(codes.AUDIT_EVENT_TYPES)
    assert set(events["subtype"]) <= set(codes.AUDIT_EVENT_SUBTYPES)
    assert set(events["action"]) <= set(codes.AUDIT_ACTIONS)
    assert set(events["outcome"]) <= {codes.OUTCOME_SUCCESS, codes.OUTCOME_DENIED}
    # An allowed access names its consent unless it rests on break-glass; a denied one names none.
    allowed = events["outcome"] == "success"
    assert (events.loc[~allowed, "consent_id"] == "").all()
    assert (events.loc[allowed & (events["purpose"] != "ETREAT"), "consent_id"] != "").all()


def test_every_misuse_kind_is_injected_and_labelled(sim: Simulation) -> None:
    assert len(sim.labels) == len(sim.events)
    assert set(np.unique(sim.labels)) == {BENIGN, *MISUSE_KINDS}
    history, (month, labels) = sim.history(), sim.month()
    assert len(history) + len(month) == len(sim.events)
    assert history["time"].max() < sim.eval_start_ms <= month["time"].min()
    assert set(np.unique(labels)) == {BENIGN, *MISUSE_KINDS}


def test_records_round_trip_through_the_ledger_shape(sim: Simulation) -> None:
    sample = sim.events.iloc[::97].reset_index(drop=True)
    records = records_from_events(sample)
    assert records[0]["agent"]["subject"] == sample.loc[0, "requester"]
    assert records[0]["recorded"].endswith("Z")
    pd.testing.assert_frame_equal(events_from_records(records), sample)
    with pytest.raises(EventSchemaError, match="record 0 lacks 'agent'"):
        events_from_records([{k: v for k, v in records[0].items() if k != "agent"}])


def test_canary_phi_stays_off_chain(sim: Simulation) -> None:
    assert CANARY_NAME in set(sim.patients["name"])
    names = set(sim.patients["name"])
    for table in [sim.events, *_context_tables(sim)]:
        text = table.astype(str).to_csv()
        assert CANARY_NAME not in text
        assert not any(name in text for name in names)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="orgs"):
        SimConfig(orgs=0)
    with pytest.raises(ValueError, match="teams_per_org"):
        SimConfig(teams_per_org=99)
    assert SimConfig.for_events(10**6).orgs > SimConfig.for_events(10**4).orgs
