"""A consortium's access log with labelled misuse, for evaluating the unusual-access detector.

Several organisations, each with clinical teams and clinicians in day or night shifts; patients with
consents and care episodes (admissions and visits); scoring and research service accounts. Benign
access follows the care episodes, with a small share of stray, unexplained look-ups (consults that left
no trace, late follow-ups) and occasional break-glass in the emergency team. Misuse of six kinds is
injected and labelled per event (see ``events.MISUSE_KINDS``). Everything is drawn from one seeded
generator: the same :class:`SimConfig` gives the same tables, byte for byte.

The simulated patients' names and neighbourhoods are off-chain details (``Simulation.patients``),
held here only to shape neighbour snooping; the detector never receives them. One patient carries
:data:`CANARY_NAME`, so tests can assert that it never reaches a flag.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from ciphercare.analytics.anomaly.events import DAY_MS, EVENT_COLUMNS, HOUR_MS, MINUTE_MS, MISUSE_KINDS, check_events
from ciphercare.analytics.anomaly.explain import AuditContext

BENIGN = ""
CANARY_NAME = "Ottoline Canarywharf-Quist"
TEAMS: tuple[str, ...] = ("emergency", "cardiology", "oncology", "surgery", "medicine", "paediatrics", "neurology",
                          "renal", "orthopaedics", "respiratory")
DATA_CLASSES: tuple[str, ...] = ("Observation", "Condition", "MedicationRequest", "DiagnosticReport", "Encounter",
                                 "Procedure", "AllergyIntolerance", "DocumentReference", "ImagingStudy", "CarePlan")
DATA_CLASS_WEIGHTS = np.array([30, 15, 15, 12, 10, 5, 4, 4, 3, 2], dtype=float) / 100
TREATMENT_CONSENT_PURPOSES: tuple[str, ...] = ("TREAT", "ETREAT", "CAREMGT")
FIRST_NAMES = ("Ada", "Bram", "Cleo", "Dev", "Esme", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kira", "Luis", "Mina")
LAST_NAMES = ("Abbott", "Barros", "Chen", "Dube", "Evans", "Fischer", "Garcia", "Haddad", "Ito", "Jensen", "Kaur")
INT64_MAX = np.iinfo(np.int64).max
START = datetime(2026, 10, 19, tzinfo=UTC)  # a Monday


@dataclass(frozen=True)
class SimConfig:
    """Size and behaviour of a simulated consortium (the defaults run in a few seconds)."""

    seed: int = 0
    orgs: int = 3
    teams_per_org: int = 4
    clinicians_per_team: int = 6
    patients: int = 2400
    history_days: int = 21
    days: int = 30
    accesses_per_shift: float = 24.0
    stray_rate: float = 0.006
    night_share: float = 0.2
    episodes_per_patient: float = 0.9  # care episodes per patient per 30 days
    cases_per_kind: int = 12
    #: Misuse in the history, per day, relative to the evaluated month (which is dense for the sake of recall).
    history_misuse_share: float = 0.25
    care_grace_days: float = 3.0
    break_glass_hours: float = 4.0

    def __post_init__(self) -> None:
        for name in ("orgs", "teams_per_org", "clinicians_per_team", "patients", "days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.teams_per_org > len(TEAMS):
            raise ValueError(f"teams_per_org must be <= {len(TEAMS)}")
        if self.history_days < 0 or self.cases_per_kind < 0:
            raise ValueError("history_days and cases_per_kind must be >= 0")
        if not 0.0 <= self.history_misuse_share <= 10.0:
            raise ValueError("history_misuse_share must be in [0, 10]")

    @classmethod
    def for_events(cls, n_events: int, seed: int = 0) -> SimConfig:
        """A configuration producing roughly ``n_events`` events over history + month."""
        base = cls(seed=seed)
        scale = max(n_events / 94_000, 0.05)  # the default configuration makes about 94,000 events
        orgs = max(1, min(40, round(3 * scale ** 0.5)))
        per_org = max(scale * 3 / orgs, 0.05)
        teams = max(2, min(len(TEAMS), round(4 * per_org ** 0.5)))
        clinicians = max(2, round(6 * per_org * 4 / teams))
        return replace(base, orgs=orgs, teams_per_org=teams, clinicians_per_team=clinicians,
                       patients=max(200, round(base.patients * scale)),
                       cases_per_kind=max(1, min(120, round(base.cases_per_kind * scale))))


@dataclass(frozen=True)
class Simulation:
    """A simulated access log: events, their misuse labels, the audit context and off-chain details."""

    config: SimConfig
    events: pd.DataFrame
    labels: np.ndarray
    context: AuditContext
    patients: pd.DataFrame = field(repr=False)
    start_ms: int
    eval_start_ms: int

    @property
    def end_ms(self) -> int:
        return self.eval_start_ms + self.config.days * DAY_MS

    def history(self) -> pd.DataFrame:
        """Events before the evaluated month (the consortium's history the detector learns from)."""
        return self.events[self.events["time"] < self.eval_start_ms].reset_index(drop=True)

    def month(self) -> tuple[pd.DataFrame, np.ndarray]:
        """The evaluated month's events and their labels."""
        mask = (self.events["time"] >= self.eval_start_ms).to_numpy()
        return self.events[mask].reset_index(drop=True), self.labels[mask]


def _pseudonym(prefix: str, seed: int, index: int) -> str:
    return f"{prefix}-{hashlib.sha256(f'{prefix}:{seed}:{index}'.encode()).hexdigest()[:10]}"


class _Builder:
    """Accumulates event columns as arrays (one append per generated batch)."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, label: str, **columns: object) -> None:
        time = np.asarray(columns["time"], dtype=np.int64)
        n = len(time)
        if n == 0:
            return
        batch: dict[str, np.ndarray] = {"time": time}
        for name in EVENT_COLUMNS[1:]:
            value = columns[name]
            batch[name] = np.asarray(value, dtype=object) if isinstance(value, np.ndarray | list) \
                else np.full(n, value, dtype=object)
        batch["label"] = np.full(n, label, dtype=object)
        self.parts.append(batch)

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            raise ValueError("the simulation produced no events")
        return pd.DataFrame({name: np.concatenate([p[name] for p in self.parts]) for name in self.parts[0]})


class _World:
    """The consortium: organisations, teams, staff, patients, consents and care episodes."""

    def __init__(self, config: SimConfig) -> None:
        self.c = config
        self.rng = np.random.default_rng(config.seed)
        rng = self.rng
        self.start_ms = int(START.timestamp() * 1000)
        self.total_days = config.history_days + config.days
        self.eval_start_ms = self.start_ms + config.history_days * DAY_MS
        self.end_ms = self.start_ms + self.total_days * DAY_MS
        self.org_names = [f"hospital-{chr(97 + i % 26)}{'' if i < 26 else i // 26}" for i in range(config.orgs)]
        self.team_names = list(TEAMS[: config.teams_per_org])

        # Staff: one row per clinician.
        n_orgs, n_teams, per_team = config.orgs, config.teams_per_org, config.clinicians_per_team
        self.staff_org = np.repeat(np.arange(n_orgs), n_teams * per_team)
        self.staff_team = np.tile(np.repeat(np.arange(n_teams), per_team), n_orgs)
        n_staff = len(self.staff_org)
        self.staff_id = np.array([_pseudonym("clin", config.seed, i) for i in range(n_staff)], dtype=object)
        self.staff_night = rng.random(n_staff) < config.night_share
        self.staff_rate = config.accesses_per_shift * rng.lognormal(0.0, 0.35, n_staff)
        self.staff_stray = config.stray_rate * rng.lognormal(0.0, 0.5, n_staff)
        self.staff_clinic = rng.random(n_staff) < 0.3
        self.works = rng.random((n_staff, self.total_days)) < 5 / 7

        # Patients, with off-chain details (PHI in real life) kept apart from everything the detector sees.
        n_pat = config.patients
        self.pid = np.array([_pseudonym("pid", config.seed, i) for i in range(n_pat)], dtype=object)
        self.home = rng.integers(0, n_orgs, n_pat)
        names = [f"{FIRST_NAMES[a]} {LAST_NAMES[b]}" for a, b in zip(rng.integers(0, len(FIRST_NAMES), n_pat),
                                                                      rng.integers(0, len(LAST_NAMES), n_pat),
                                                                      strict=True)]
        names[0] = CANARY_NAME
        self.neighbourhood = rng.integers(0, max(1, n_pat // 40), n_pat)
        self.vips = np.arange(min(3, n_pat))  # well-known patients; the canary is one of them
        self.patients = pd.DataFrame({"pid": self.pid, "name": names, "neighbourhood": self.neighbourhood,
                                      "well_known": np.isin(np.arange(n_pat), self.vips)})

        # Consents: treatment consents (TREAT, ETREAT, CAREMGT) and research consents (HRESCH).
        self.treat = rng.random((n_pat, n_orgs)) < 0.2
        self.treat[np.arange(n_pat), self.home] = rng.random(n_pat) < 0.92
        self.treat_from = np.full((n_pat, n_orgs), self.start_ms - 400 * DAY_MS, dtype=np.int64)
        late = rng.random((n_pat, n_orgs)) < 0.03
        self.treat_from[late] = self.start_ms + rng.integers(0, self.total_days, late.sum()) * DAY_MS
        self.revoked = np.full((n_pat, n_orgs), INT64_MAX, dtype=np.int64)
        gone = self.treat & (rng.random((n_pat, n_orgs)) < 0.02)
        self.revoked[gone] = self.start_ms + rng.integers(0, self.total_days * DAY_MS, gone.sum())
        self.research = np.zeros((n_pat, n_orgs), dtype=bool)
        self.research[np.arange(n_pat), self.home] = rng.random(n_pat) < 0.35
        self.consent_id = np.array([[_pseudonym("consent", config.seed, p * n_orgs + o) for o in range(n_orgs)]
                                    for p in range(n_pat)], dtype=object)
        self.research_id = np.array([_pseudonym("consent-r", config.seed, p) for p in range(n_pat)], dtype=object)

        # Care episodes: admissions and visits, mostly at the patient's home organisation.
        counts = rng.poisson(config.episodes_per_patient * self.total_days / 30, n_pat)
        ep_pat = np.repeat(np.arange(n_pat), counts)
        n_ep = len(ep_pat)
        ep_org = np.where(rng.random(n_ep) < 0.85, self.home[ep_pat], rng.integers(0, n_orgs, n_ep))
        ep_team = np.where(rng.random(n_ep) < 0.3, 0, rng.integers(min(1, n_teams - 1), n_teams, n_ep))
        ep_start = self.start_ms - 5 * DAY_MS + rng.integers(0, (self.total_days + 5) * DAY_MS, n_ep)
        inpatient = rng.random(n_ep) < 0.6
        duration = np.where(inpatient, rng.lognormal(np.log(3 * DAY_MS), 0.7, n_ep),
                            rng.uniform(2 * HOUR_MS, 6 * HOUR_MS, n_ep))
        duration = np.where(ep_team == 0, np.minimum(duration, DAY_MS), duration)  # emergency stays are short
        self.ep_pat, self.ep_org, self.ep_team = ep_pat, ep_org, ep_team
        self.ep_start = ep_start.astype(np.int64)
        self.ep_end = (ep_start + duration).astype(np.int64)
        self.glass: list[tuple[str, str, str, int, int]] = []  # (requester, org, pid, start, end)
        self._vip_turn = 0
        self.grace_ms = int(config.care_grace_days * DAY_MS)

    # --- helpers ---------------------------------------------------------------------------------

    def shift(self, staff: int, day: int) -> tuple[int, int]:
        start = self.start_ms + day * DAY_MS + (19 if self.staff_night[staff] else 7) * HOUR_MS
        return start, start + 12 * HOUR_MS

    def source(self, staff: int, clinic: bool = False) -> str:
        org, team = self.org_names[self.staff_org[staff]], self.team_names[self.staff_team[staff]]
        return f"{org}/ehr/{team}{'-clinic' if clinic else ''}"

    def team_episodes(self, org: int, team: int | None, lo: int, hi: int) -> np.ndarray:
        mask = (self.ep_org == org) & (self.ep_start < hi) & (self.ep_end > lo)
        if team is not None:
            mask &= self.ep_team == team
        return np.flatnonzero(mask)

    def outcome(self, patients: np.ndarray, org: int, times: np.ndarray, purposes: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Outcome and consent id per access, as ``consent:Check`` would decide."""
        research = purposes == "HRESCH"
        treat_ok = self.treat[patients, org] & (times >= self.treat_from[patients, org]) \
            & (times < self.revoked[patients, org])
        ok = np.where(research, self.research[patients, org], treat_ok)
        ok &= np.isin(purposes, (*TREATMENT_CONSENT_PURPOSES, "HRESCH"))
        ids = np.where(research, self.research_id[patients], self.consent_id[patients, org])
        return np.where(ok, "success", "denied"), np.where(ok, ids, "")

    def clinician_access(self, out: _Builder, label: str, staff: int, patients: np.ndarray, times: np.ndarray,
                         *, purpose: str = "TREAT", source: str | np.ndarray | None = None,
                         kind: tuple[str, str] = ("110110", "read")) -> None:
        n = len(times)
        if n == 0:
            return
        org = int(self.staff_org[staff])
        purposes = np.full(n, purpose, dtype=object)
        if purpose == "TREAT":
            purposes[self.rng.random(n) < 0.07] = "CAREMGT"
        types = np.full(n, kind[0], dtype=object)
        subtypes = np.full(n, kind[1], dtype=object)
        if kind == ("110110", "read"):
            query = self.rng.random(n) < 0.2
            types[query], subtypes[query] = "110112", "search-type"
        outcome, consent = self.outcome(patients, org, times, purposes)
        if purpose == "ETREAT":  # break-glass: permitted without consent while declared
            outcome = np.full(n, "success", dtype=object)
        out.add(label, time=times, requester=self.staff_id[staff], org=self.org_names[org], client="ehr-portal",
                source=source if source is not None else self.source(staff), pid=self.pid[patients],
                purpose=purposes, data_class=self.rng.choice(DATA_CLASSES, n, p=DATA_CLASS_WEIGHTS),
                outcome=outcome, consent_id=consent, type=types, subtype=subtypes, action="R")

    def service_access(self, out: _Builder, label: str, org: int, service: str, patients: np.ndarray,
                       times: np.ndarray, purpose: str, kind: tuple[str, str, str]) -> None:
        if len(times) == 0:
            return
        purposes = np.full(len(times), purpose, dtype=object)
        outcome, consent = self.outcome(patients, org, times, purposes)
        observer = "ciphercare/ScoringService" if kind[0] == "risk-scoring" else f"{self.org_names[org]}/{service}"
        out.add(label, time=times, requester=f"svc-{self.org_names[org]}-{service}", org=self.org_names[org],
                client=f"{service}-client", source=observer, pid=self.pid[patients], purpose=purpose,
                data_class="Observation", outcome=outcome, consent_id=consent, type=kind[0], subtype=kind[1],
                action=kind[2])

    def in_shift(self, lo: int, hi: int, n: int) -> np.ndarray:
        return np.sort(lo + (self.rng.random(n) * (hi - lo)).astype(np.int64))

    # --- benign activity -------------------------------------------------------------------------

    def benign(self, out: _Builder) -> None:
        rng = self.rng
        for staff in range(len(self.staff_id)):
            org, team = int(self.staff_org[staff]), int(self.staff_team[staff])
            for day in np.flatnonzero(self.works[staff]):
                lo, hi = self.shift(staff, int(day))
                active = self.team_episodes(org, team, lo - DAY_MS, hi)
                n = rng.poisson(self.staff_rate[staff])
                if len(active) and n:
                    pick = active[rng.integers(0, len(active), n)]
                    first = np.maximum(lo, self.ep_start[pick])
                    last = np.minimum(hi, self.ep_end[pick] + DAY_MS)
                    times = first + (rng.random(n) * np.maximum(last - first, 1)).astype(np.int64)
                    order = np.argsort(times)
                    times, pick = times[order], pick[order]
                    source: str | np.ndarray = self.source(staff)
                    if self.staff_clinic[staff] and rng.random() < 0.3:
                        source = np.where(times > lo + 9 * HOUR_MS, self.source(staff, clinic=True), source)
                    self.clinician_access(out, BENIGN, staff, self.ep_pat[pick], times, source=source)
                    # Staying late now and then: a few more look-ups after the shift.
                    if rng.random() < 0.15:
                        late = int(rng.integers(1, 5))
                        self.clinician_access(out, BENIGN, staff, self.ep_pat[pick[rng.integers(0, n, late)]],
                                              self.in_shift(hi, hi + int(rng.integers(30, 120)) * MINUTE_MS, late))
                # Stray look-ups: a consult on another team's patient, a late follow-up.
                n_stray = rng.poisson(self.staff_rate[staff] * self.staff_stray[staff])
                others = self.team_episodes(org, None, lo - 14 * DAY_MS, hi)
                if n_stray and len(others):
                    pick = others[rng.integers(0, len(others), n_stray)]
                    self.clinician_access(out, BENIGN, staff, self.ep_pat[pick], self.in_shift(lo, hi, n_stray))
                # Emergency break-glass for a patient without consent, now and then.
                if team == 0 and len(active):
                    for _ in range(rng.poisson(0.1)):
                        patient = int(self.ep_pat[active[rng.integers(0, len(active))]])
                        self.break_glass(out, BENIGN, staff, patient, int(self.in_shift(lo, hi - HOUR_MS, 1)[0]))
        self.services(out)

    def break_glass(self, out: _Builder, label: str, staff: int, patient: int, at: int) -> None:
        end = at + int(self.c.break_glass_hours * HOUR_MS)
        org = str(self.org_names[self.staff_org[staff]])
        self.glass.append((str(self.staff_id[staff]), org, str(self.pid[patient]), at, end))
        n = int(self.rng.integers(2, 6))
        times = np.sort(at + self.rng.integers(0, HOUR_MS, n))
        self.clinician_access(out, label, staff, np.full(n, patient), times, purpose="ETREAT")

    def services(self, out: _Builder) -> None:
        rng = self.rng
        for org in range(self.c.orgs):
            for day in range(self.total_days):
                day_ms = self.start_ms + day * DAY_MS
                # Nightly risk scoring of the organisation's current patients.
                active = np.unique(self.ep_pat[self.team_episodes(org, None, day_ms, day_ms + DAY_MS)])
                times = self.in_shift(day_ms + 2 * HOUR_MS, day_ms + 2 * HOUR_MS + 30 * MINUTE_MS, len(active))
                self.service_access(out, BENIGN, org, "scoring", rng.permutation(active), times, "CAREMGT",
                                    ("risk-scoring", "score", "E"))
                # Daytime re-scoring after new results: a few patients, once to three times.
                again = rng.choice(active, len(active) // 8, replace=False) if len(active) >= 8 else active[:0]
                again = np.repeat(again, rng.integers(1, 4, len(again)))
                self.service_access(out, BENIGN, org, "scoring", again,
                                    self.in_shift(day_ms + 8 * HOUR_MS, day_ms + 18 * HOUR_MS, len(again)), "CAREMGT",
                                    ("risk-scoring", "score", "E"))
                # Weekly research extract (Mondays): last week's patients with a research consent.
                if (day % 7) == 0:
                    week = np.unique(self.ep_pat[self.team_episodes(org, None, day_ms - 7 * DAY_MS, day_ms)])
                    week = week[self.research[week, org]]
                    times = self.in_shift(day_ms + 10 * HOUR_MS, day_ms + 11 * HOUR_MS, len(week))
                    self.service_access(out, BENIGN, org, "research", week, times, "HRESCH",
                                        ("110106", "read", "R"))

    # --- misuse ----------------------------------------------------------------------------------

    def _cases(self, in_history: bool) -> int:
        if in_history:
            return int(round(self.c.cases_per_kind * self.c.history_misuse_share * self.c.history_days / self.c.days))
        return self.c.cases_per_kind

    def _working(self, staff: int, first_day: int, last_day: int) -> np.ndarray:
        return first_day + np.flatnonzero(self.works[staff, first_day:last_day])

    def _day_range(self, in_history: bool) -> tuple[int, int]:
        return (0, self.c.history_days) if in_history else (self.c.history_days, self.total_days)

    def _staff_day(self, in_history: bool, *, emergency: bool | None = None, night: bool | None = None
                   ) -> tuple[int, int] | None:
        first, last = self._day_range(in_history)
        for _ in range(200):
            staff = int(self.rng.integers(0, len(self.staff_id)))
            if emergency is not None and (self.staff_team[staff] == 0) != emergency:
                continue
            if night is not None and bool(self.staff_night[staff]) != night:
                continue
            days = self._working(staff, first, last)
            if len(days):
                return staff, int(days[self.rng.integers(0, len(days))])
        return None

    def _outsiders(self, staff: int, at: int, n: int, pool: np.ndarray | None = None) -> np.ndarray:
        """Patients with no care episode with this clinician's team around ``at``."""
        org, team = self.staff_org[staff], self.staff_team[staff]
        near = (self.ep_org == org) & (self.ep_team == team) & (self.ep_start < at + DAY_MS) \
            & (self.ep_end + self.grace_ms > at - DAY_MS)
        cared = set(self.ep_pat[near].tolist())
        candidates = np.arange(len(self.pid)) if pool is None else pool
        candidates = np.array([p for p in candidates.tolist() if p not in cared and p not in set(self.vips.tolist())],
                              dtype=np.int64)
        if len(candidates) == 0:
            return candidates
        return self.rng.choice(candidates, min(n, len(candidates)), replace=False)

    def snooping(self, out: _Builder, in_history: bool) -> None:
        rng = self.rng
        cases = self._cases(in_history)
        for case in range(cases):
            if case % 3 == 2 and len(self.vips):
                self._snoop_well_known(out, in_history)
                continue
            found = self._staff_day(in_history)
            if found is None:
                continue
            staff, day = found
            lo, hi = self.shift(staff, day)
            # Neighbours: patients who live where one of the organisation's patients lives.
            street = self.neighbourhood[rng.integers(0, len(self.pid))]
            targets = self._outsiders(staff, lo, int(rng.integers(1, 4)), np.flatnonzero(self.neighbourhood == street))
            for patient in targets:
                looks = int(rng.integers(2, 5))
                self.clinician_access(out, "snooping", staff, np.full(looks, patient), self.in_shift(lo, hi, looks))

    def _snoop_well_known(self, out: _Builder, in_history: bool) -> None:
        rng = self.rng
        vip = int(self.vips[self._vip_turn % len(self.vips)])  # the canary patient comes first
        self._vip_turn += 1
        first, last = self._day_range(in_history)
        day = int(rng.integers(first, last))
        org = int(rng.integers(0, self.c.orgs))
        admit = self.start_ms + day * DAY_MS + 3 * HOUR_MS
        team = int(rng.integers(0, self.c.teams_per_org))
        # The admission is a care episode like any other: the admitting team looks after the patient.
        self.ep_pat, self.ep_org = np.append(self.ep_pat, vip), np.append(self.ep_org, org)
        self.ep_team = np.append(self.ep_team, team)
        self.ep_start, self.ep_end = np.append(self.ep_start, admit), np.append(self.ep_end, admit + 2 * DAY_MS)
        cared = (self.ep_pat == vip) & (self.ep_org == org) & (self.ep_start < admit + DAY_MS) \
            & (self.ep_end + self.grace_ms > admit - DAY_MS)
        peers = np.flatnonzero((self.staff_org == org) & (self.staff_team != team) & self.works[:, day]
                               & ~np.isin(self.staff_team, self.ep_team[cared]))
        day_end = self.start_ms + (day + 1) * DAY_MS
        for staff in rng.choice(peers, min(len(peers), int(rng.integers(3, 7))), replace=False):
            lo, hi = self.shift(int(staff), day)
            looks = int(rng.integers(1, 4))
            self.clinician_access(out, "snooping", int(staff), np.full(looks, vip),
                                  self.in_shift(max(lo, admit), min(hi, day_end), looks))

    def bulk_export(self, out: _Builder, in_history: bool) -> None:
        rng = self.rng
        for case in range(self._cases(in_history)):
            if case % 3 == 2:  # a research client pulls far more than its weekly extract
                first, last = self._day_range(in_history)
                org, day = int(rng.integers(0, self.c.orgs)), int(rng.integers(first, last))
                n = int(rng.integers(150, 400))
                pool = np.flatnonzero(self.home == org)
                patients = rng.choice(pool, min(n, len(pool)), replace=False)
                lo = self.start_ms + day * DAY_MS + int(rng.integers(8, 20)) * HOUR_MS
                self.service_access(out, "bulk_export", org, "research", patients,
                                    self.in_shift(lo, lo + HOUR_MS, len(patients)), "HRESCH", ("110106", "read", "R"))
                continue
            found = self._staff_day(in_history)
            if found is None:
                continue
            staff, day = found
            lo, hi = self.shift(staff, day)
            pool = np.flatnonzero(self.home == self.staff_org[staff])
            patients = rng.choice(pool, min(int(rng.integers(120, 400)), len(pool)), replace=False)
            start = int(self.in_shift(lo, hi - 2 * HOUR_MS, 1)[0])
            self.clinician_access(out, "bulk_export", staff, patients,
                                  self.in_shift(start, start + int(rng.integers(45, 120)) * MINUTE_MS, len(patients)),
                                  kind=("110106", "search-type"))

    def off_hours(self, out: _Builder, in_history: bool) -> None:
        rng = self.rng
        for _ in range(self._cases(in_history)):
            found = self._staff_day(in_history, night=False)
            if found is None:
                continue
            staff, day = found
            lo = self.start_ms + day * DAY_MS + int(rng.integers(0, 4)) * HOUR_MS + int(rng.integers(0, 60)) * MINUTE_MS
            hi = lo + int(rng.integers(60, 150)) * MINUTE_MS
            n = int(rng.integers(20, 50))
            own = self.team_episodes(int(self.staff_org[staff]), int(self.staff_team[staff]), lo - DAY_MS, hi)
            mine = self.ep_pat[own[rng.integers(0, len(own), n // 2)]] if len(own) else np.empty(0, dtype=np.int64)
            others = self._outsiders(staff, lo, n - len(mine), np.flatnonzero(self.home == self.staff_org[staff]))
            patients = np.concatenate([mine, others]).astype(np.int64)
            self.clinician_access(out, "off_hours", staff, rng.permutation(patients),
                                  self.in_shift(lo, hi, len(patients)))

    def shared_credentials(self, out: _Builder, in_history: bool) -> None:
        rng = self.rng
        for _ in range(self._cases(in_history)):
            found = self._staff_day(in_history)
            if found is None:
                continue
            owner, day = found
            org, night = self.staff_org[owner], self.staff_night[owner]
            mates = np.flatnonzero((self.staff_org == org) & (self.staff_team != self.staff_team[owner])
                                   & (self.staff_night == night))
            if len(mates) == 0:
                continue
            borrower = int(mates[rng.integers(0, len(mates))])
            lo, hi = self.shift(owner, day)
            start = lo + int(rng.integers(0, 5)) * HOUR_MS
            active = self.team_episodes(int(org), int(self.staff_team[borrower]), lo - DAY_MS, hi)
            if len(active) == 0:
                continue
            n = int(rng.integers(12, 30))
            patients = self.ep_pat[active[rng.integers(0, len(active), n)]]
            times = self.in_shift(start, start + int(rng.integers(3, 7)) * HOUR_MS, n)
            # The borrower works under the owner's account from the borrower's own workstation.
            row_start = len(out.parts)
            self.clinician_access(out, "shared_credentials", borrower, patients, times, source=self.source(borrower))
            for part in out.parts[row_start:]:
                part["requester"][:] = self.staff_id[owner]

    def model_extraction(self, out: _Builder, in_history: bool) -> None:
        rng = self.rng
        first, last = self._day_range(in_history)
        for _ in range(self._cases(in_history)):
            org, day = int(rng.integers(0, self.c.orgs)), int(rng.integers(first, last))
            consented = np.flatnonzero(self.treat[:, org])
            probes = rng.choice(consented, min(int(rng.integers(15, 50)), len(consented)), replace=False)
            repeats = int(rng.integers(5, 40))
            patients = rng.permutation(np.repeat(probes, repeats))
            lo = self.start_ms + day * DAY_MS + int(rng.integers(8, 18)) * HOUR_MS
            self.service_access(out, "model_extraction", org, "scoring", patients,
                                self.in_shift(lo, lo + int(rng.integers(2, 6)) * HOUR_MS, len(patients)), "CAREMGT",
                                ("risk-scoring", "score", "E"))

    def repeated_break_glass(self, out: _Builder, in_history: bool) -> None:
        rng = self.rng
        first, last = self._day_range(in_history)
        for _ in range(max(1, self._cases(in_history) // 2) if self._cases(in_history) else 0):
            found = self._staff_day(in_history, emergency=False)
            if found is None:
                continue
            staff = found[0]
            days = self._working(staff, first, last)
            for day in rng.choice(days, min(len(days), 2), replace=False):
                lo, hi = self.shift(staff, int(day))
                for patient in self._outsiders(staff, lo, int(rng.integers(3, 6)),
                                               np.flatnonzero(self.home == self.staff_org[staff])):
                    at = int(self.in_shift(lo, hi - HOUR_MS, 1)[0])
                    self.break_glass(out, "break_glass", staff, int(patient), at)

    # --- assembly --------------------------------------------------------------------------------

    def context(self) -> AuditContext:
        orgs, teams = np.array(self.org_names, dtype=object), np.array(self.team_names, dtype=object)
        roster = pd.DataFrame({"requester": self.staff_id, "org": orgs[self.staff_org], "team": teams[self.staff_team],
                               "kind": "clinician"})
        services = pd.DataFrame([(f"svc-{o}-{s}", o, "", "service") for o in self.org_names for s in
                                 ("scoring", "research")], columns=["requester", "org", "team", "kind"])
        care = pd.DataFrame({"pid": self.pid[self.ep_pat], "org": np.array(self.org_names, dtype=object)[self.ep_org],
                             "team": np.array(self.team_names, dtype=object)[self.ep_team],
                             "start": self.ep_start, "end": self.ep_end})
        p, o = np.nonzero(self.treat)
        treat = pd.DataFrame({"consent_id": self.consent_id[p, o], "pid": self.pid[p],
                              "org": np.array(self.org_names, dtype=object)[o],
                              "start": self.treat_from[p, o], "end": INT64_MAX, "revoked": self.revoked[p, o]})
        treat = pd.concat([treat.assign(purpose=purpose) for purpose in TREATMENT_CONSENT_PURPOSES])
        p, o = np.nonzero(self.research)
        research = pd.DataFrame({"consent_id": self.research_id[p], "pid": self.pid[p],
                                 "org": np.array(self.org_names, dtype=object)[o], "purpose": "HRESCH",
                                 "start": self.start_ms - 400 * DAY_MS, "end": INT64_MAX, "revoked": INT64_MAX})
        glass = pd.DataFrame(self.glass, columns=["requester", "org", "pid", "start", "end"])
        return AuditContext.build(roster=pd.concat([roster, services], ignore_index=True), care=care,
                                  consents=pd.concat([treat, research], ignore_index=True), break_glass=glass,
                                  care_grace_ms=self.grace_ms)


def simulate(config: SimConfig | None = None) -> Simulation:
    """Simulate ``config.history_days`` of history and ``config.days`` of evaluated access, with labelled misuse."""
    config = config or SimConfig()
    world = _World(config)
    out = _Builder()
    for in_history in (True, False):
        world.snooping(out, in_history)
        world.bulk_export(out, in_history)
        world.off_hours(out, in_history)
        world.shared_credentials(out, in_history)
        world.model_extraction(out, in_history)
        world.repeated_break_glass(out, in_history)
    world.benign(out)
    frame = out.frame()
    frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
    labels = frame["label"].to_numpy(dtype=object)
    unknown = set(np.unique(labels).tolist()) - {BENIGN, *MISUSE_KINDS}
    if unknown:
        raise RuntimeError(f"simulator produced unknown labels {sorted(unknown)}")
    events = check_events(frame)
    return Simulation(config=config, events=events, labels=labels, context=world.context(),
                      patients=world.patients, start_ms=world.start_ms, eval_start_ms=world.eval_start_ms)
