"""Unusual-access detection: explanation first, then transparent rules and an isolation forest.

1. Explanation-based auditing (``explain.py``): accesses covered by a consent, a care relationship or a
   break-glass declaration are not suspicious one by one.
2. Features per requester and window (``features.py``), compared with the requester's own history.
3. Transparent rules for behaviour an explanation cannot clear, because it is about volume or shape
   rather than about one access: bulk export, scoring volumes, repeated break-glass, one account used
   from two workstations at once, a night-time burst, many staff on one unexplained patient.
4. An isolation forest (scikit-learn), fitted without labels on the consortium's own history, over the
   windows that still hold unexplained accesses. It flags at most ``alarm_budget`` of requester-days
   (calibrated on the history), and only with a reason: a feature beyond what the history shows.

Every flag says why in plain words, with counts and pseudonyms only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from ciphercare.analytics.anomaly.events import DAY_MS, MISUSE_KINDS, check_events
from ciphercare.analytics.anomaly.explain import UNEXPLAINED, AuditContext, explain
from ciphercare.analytics.anomaly.features import window_features

#: Features the isolation forest sees (counts are log-scaled; ``*_ratio`` and excess are relative to history).
MODEL_FEATURES: tuple[str, ...] = (
    "unexplained", "unexplained_patients", "max_unexplained_repeat", "no_basis", "crowd", "denials",
    "denial_share", "new_patient_ratio", "off_hours_excess", "events_ratio", "peak_ratio", "sources",
    "fast_source_switches", "interleaved_sources", "non_treatment_share", "scoring_repeat", "rescored_patients",
    "break_glass_uncared",
)
_LOG_SCALED = frozenset({"unexplained", "unexplained_patients", "max_unexplained_repeat", "no_basis", "crowd",
                         "denials", "events_ratio", "peak_ratio", "fast_source_switches", "interleaved_sources",
                         "rescored_patients", "break_glass_uncared"})

#: Model reasons: feature -> (misuse kind it points to, wording with {value} and {usual}).
_MODEL_REASONS: dict[str, tuple[str, str]] = {
    "unexplained_patients": ("snooping", "{value:.0f} patient(s) accessed with no consent, care relationship or "
                                         "break-glass (usual: at most {usual:.0f})"),
    "max_unexplained_repeat": ("snooping", "the same unexplained patient looked up {value:.0f} times "
                                           "(usual: at most {usual:.0f})"),
    "no_basis": ("snooping", "{value:.0f} access(es) to patients with no consent or care episode at the "
                             "organisation (usual: at most {usual:.0f})"),
    "crowd": ("snooping", "an unexplained patient was also accessed by {value:.0f} staff without a reason on record "
                          "(usual: at most {usual:.0f})"),
    "denials": ("snooping", "{value:.0f} accesses denied (usual: at most {usual:.0f})"),
    "new_patient_ratio": ("snooping", "{value:.0%} of patients never accessed before (usual: at most {usual:.0%})"),
    "off_hours_excess": ("off_hours", "{value:.0%} more of the accesses outside 07:00-19:00 than usual for this "
                                      "requester"),
    "events_ratio": ("bulk_export", "{value:.1f} times this requester's usual daily accesses"),
    "peak_ratio": ("bulk_export", "{value:.1f} times this requester's usual peak of patients per hour"),
    "fast_source_switches": ("shared_credentials", "{value:.0f} switches between workstations within 10 minutes "
                                                   "(usual: at most {usual:.0f})"),
    "interleaved_sources": ("shared_credentials", "{value:.0f} accesses from one workstation amid another's within "
                                                  "30 minutes (usual: at most {usual:.0f})"),
    "scoring_repeat": ("model_extraction", "{value:.1f} risk scores per patient (usual: at most {usual:.1f})"),
    "rescored_patients": ("model_extraction", "{value:.0f} patients scored 5 times or more (usual: at most "
                                              "{usual:.0f})"),
    "break_glass_uncared": ("break_glass", "{value:.0f} patient(s) accessed on break-glass alone, with no care "
                                           "relationship (usual: at most {usual:.0f})"),
}


@dataclass(frozen=True)
class DetectorSettings:
    """Thresholds and model settings (defaults chosen on the tuning seed; see docs/ANOMALY.md)."""

    window_ms: int = DAY_MS
    utc_offset_hours: float = 0.0
    #: The start of the history that only seeds who-knew-whom (for the new-patient ratio).
    warmup_ms: int = 7 * DAY_MS
    #: Share of requester-days the model may flag (calibrated on history).
    alarm_budget: float = 0.02
    #: A model flag needs a feature above this quantile of the history's remaining windows.
    reason_quantile: float = 0.99
    n_estimators: int = 200
    seed: int = 0
    #: Bulk export: distinct patients in one hour (or exported in the window) above both of these.
    bulk_min_patients: int = 40
    bulk_factor: float = 2.5
    #: Model extraction: scores in the window above both of these, or repeated scores per patient.
    scoring_factor: float = 3.0
    scoring_min_events: int = 100
    scoring_repeat: float = 4.0
    scoring_repeat_min_events: int = 50
    #: ... or this many patients scored 5 times or more in the window.
    rescored_patients: int = 3
    #: Repeated break-glass: patients accessed on break-glass alone (no care relationship) in the window,
    #: or in the week centred on it with one in this window (audit is retrospective, so the week looks both ways).
    break_glass_per_window: int = 2
    break_glass_per_week: int = 3
    #: Shared credentials: fast switches between workstations, or interleaved use (A, B, A within 30 minutes).
    shared_switches: int = 3
    shared_interleaved: int = 2
    #: Off-hours burst: accesses outside 07:00-19:00 above both of these.
    off_hours_min_events: int = 10
    off_hours_factor: float = 3.0
    off_hours_share_excess: float = 0.3
    #: Well-known patient: distinct staff with unexplained access to one patient in the window.
    crowd_min: int = 3

    def __post_init__(self) -> None:
        if self.window_ms <= 0:
            raise ValueError("window_ms must be > 0")
        if not 0.0 < self.alarm_budget < 1.0:
            raise ValueError("alarm_budget must be in (0, 1)")
        if not 0.5 <= self.reason_quantile < 1.0:
            raise ValueError("reason_quantile must be in [0.5, 1)")


@dataclass(frozen=True)
class Flag:
    """One requester's unusual access in one window, with the reasons in plain words (no PHI)."""

    requester: str
    organization: str
    window_start: datetime
    window_end: datetime
    #: 1.0 for a rule hit; for the model, the share of history windows that were less unusual.
    score: float
    reasons: tuple[str, ...]
    #: The misuse kind this most looks like (one of ``MISUSE_KINDS``).
    kind: str
    #: Which parts fired: "rule:<kind>" and/or "model".
    detectors: tuple[str, ...]
    #: Pseudonyms of the patients behind the unexplained accesses (at most 20), for the officer's review.
    patients: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"requester": self.requester, "organization": self.organization,
                "window_start": self.window_start.isoformat(), "window_end": self.window_end.isoformat(),
                "score": round(self.score, 4), "reasons": list(self.reasons), "kind": self.kind,
                "detectors": list(self.detectors), "patients": list(self.patients)}


@dataclass(frozen=True)
class _Baseline:
    """Per-requester typical values from history (medians over active windows), with consortium fallbacks."""

    per_requester: pd.DataFrame
    fallback: pd.Series

    def lookup(self, keys: pd.DataFrame) -> pd.DataFrame:
        joined = keys[["requester"]].join(self.per_requester, on="requester")
        return joined.drop(columns="requester").fillna(self.fallback)


MIN_TRAINING_WINDOWS = 10


@dataclass(frozen=True)
class _PeerModel:
    """One peer group's isolation forest, its alarm threshold, history scores and usual feature values."""

    model: IsolationForest
    threshold: float
    history_scores: np.ndarray
    usual: pd.Series


def _peer_groups(feats: pd.DataFrame, context: AuditContext) -> np.ndarray:
    """Each window's peer group: the requester's kind in the roster ("clinician" when not listed)."""
    keys = feats.index.to_frame(index=False)[["requester", "org"]]
    kinds = context.roster.drop_duplicates(["requester", "org"]).set_index(["requester", "org"])["kind"]
    joined = keys.join(kinds, on=["requester", "org"])
    return joined["kind"].fillna("clinician").astype(str).to_numpy(dtype=object)


_BASELINE_FEATURES = ("events", "peak_patients_per_hour", "off_hours_events", "off_hours_share", "scoring_events",
                      "export_patients")


class AccessAnomalyDetector:
    """Fit on a consortium's history of access events, then flag unusual access in new events."""

    def __init__(self, settings: DetectorSettings | None = None) -> None:
        self.settings = settings or DetectorSettings()
        self._baseline: _Baseline | None = None
        self._models: dict[str, _PeerModel] = {}
        self._seen: pd.DataFrame | None = None

    # --- fitting -----------------------------------------------------------------------------------

    def fit(self, history: pd.DataFrame, context: AuditContext) -> AccessAnomalyDetector:
        """Learn baselines and the model from ``history`` (an events table); no labels are used."""
        history = check_events(history)
        if history.empty:
            raise ValueError("history is empty: the detector learns what is usual from it")
        s = self.settings
        # The first days only tell who already knew which patient (else every patient looks new).
        cut = int(history["time"].iloc[0]) + s.warmup_ms
        warmup, history = history[history["time"] < cut], history[history["time"] >= cut].reset_index(drop=True)
        if history.empty:
            raise ValueError("history is no longer than the warm-up: the detector learns what is usual from it")
        seen = warmup[["requester", "pid"]].drop_duplicates()
        explanation = explain(history, context)
        feats = window_features(history, explanation.basis, explanation.no_basis, break_glass=context.break_glass,
                                prior_pairs=seen, window_ms=s.window_ms, utc_offset_hours=s.utc_offset_hours)
        per_requester = feats.groupby(level="requester")[list(_BASELINE_FEATURES)].median()
        self._baseline = _Baseline(per_requester, per_requester.median())
        self._seen = pd.concat([seen, history[["requester", "pid"]]]).drop_duplicates()
        model_x = self._model_matrix(feats)
        remaining = (feats["unexplained"] > 0).to_numpy()
        # History windows a rule already flags are left out of the model's learning and calibration:
        # misuse in the history would otherwise look usual and use up the alarm budget.
        annotated = self._annotate(feats, model_x)
        ruled = np.array([bool(self._rules(row)) for _, row in annotated.iterrows()], dtype=bool)
        groups = _peer_groups(feats, context)
        self._models = {}
        for group in sorted(set(groups.tolist())):
            members = (groups == group) & ~ruled
            if members.sum() < MIN_TRAINING_WINDOWS or not (remaining & members).any():
                continue  # too little history for a model: this peer group is left to the rules
            # The forest learns the group's whole history (what usual days look like, explained or not);
            # it is applied to, and calibrated on, the windows that still hold unexplained access.
            model = IsolationForest(n_estimators=s.n_estimators, random_state=s.seed)
            model.fit(self._scaled(model_x[members]))
            scores = np.sort(-model.score_samples(self._scaled(model_x[remaining & members])))
            budget = int(np.floor(s.alarm_budget * (groups == group).sum()))
            threshold = float(scores[::-1][budget]) if budget < len(scores) else float(scores[0]) - 1e-9
            self._models[group] = _PeerModel(model, threshold, scores, model_x[members].quantile(s.reason_quantile))
        if not self._models:
            raise ValueError(f"no peer group has {MIN_TRAINING_WINDOWS} history windows with unexplained access: "
                             "too little to learn from")
        return self

    def _model_matrix(self, feats: pd.DataFrame) -> pd.DataFrame:
        if self._baseline is None:
            raise RuntimeError("fit the detector first")
        base = self._baseline.lookup(feats.reset_index())
        base.index = feats.index
        x = pd.DataFrame(index=feats.index)
        for name in MODEL_FEATURES:
            if name == "off_hours_excess":
                x[name] = (feats["off_hours_share"] - base["off_hours_share"]).clip(lower=0.0)
            elif name == "events_ratio":
                x[name] = feats["events"] / (base["events"] + 1.0)
            elif name == "peak_ratio":
                x[name] = feats["peak_patients_per_hour"] / (base["peak_patients_per_hour"] + 1.0)
            else:
                x[name] = feats[name]
        return x

    @staticmethod
    def _scaled(x: pd.DataFrame) -> np.ndarray:
        out = x.to_numpy(dtype=float).copy()
        for i, name in enumerate(x.columns):
            if name in _LOG_SCALED:
                out[:, i] = np.log1p(out[:, i])
        return out

    # --- detection ---------------------------------------------------------------------------------

    def score_windows(self, events: pd.DataFrame, context: AuditContext) -> pd.DataFrame:
        """Features, relative features (``x_*``), usual values (``usual_*``) and the model's score per window."""
        return self._score(events, context)[0]

    def _score(self, events: pd.DataFrame, context: AuditContext
               ) -> tuple[pd.DataFrame, dict[tuple[str, str, int], tuple[str, ...]]]:
        if not self._models or self._baseline is None:
            raise RuntimeError("fit the detector first")
        s = self.settings
        events = check_events(events)
        explanation = explain(events, context)
        feats = window_features(events, explanation.basis, explanation.no_basis, break_glass=context.break_glass,
                                prior_pairs=self._seen, window_ms=s.window_ms, utc_offset_hours=s.utc_offset_hours)
        x = self._model_matrix(feats)
        remaining = (feats["unexplained"] > 0).to_numpy()
        groups = _peer_groups(feats, context)
        out = feats.copy()
        out["peer_group"] = groups
        out["model_score"] = 0.0
        out["model_rank"] = 0.0
        out["model_hit"] = False
        for group, peer in self._models.items():
            rows = remaining & (groups == group)
            if not rows.any():
                continue
            anomaly = -peer.model.score_samples(self._scaled(x[rows]))
            out.loc[rows, "model_score"] = anomaly
            out.loc[rows, "model_rank"] = np.searchsorted(peer.history_scores, anomaly, side="right") / len(
                peer.history_scores)
            out.loc[rows, "model_hit"] = anomaly > peer.threshold
        out = self._annotate(out, x)
        unexplained_pids = events.loc[explanation.basis == UNEXPLAINED, ["requester", "org", "time", "pid"]]
        return out, self._patients_by_window(unexplained_pids)

    def _annotate(self, feats: pd.DataFrame, x: pd.DataFrame) -> pd.DataFrame:
        """Features plus the model's inputs (``x_*``), the requester's usual values and the break-glass week."""
        if self._baseline is None:
            raise RuntimeError("fit the detector first")
        out = feats.copy()
        for name in x.columns:
            out[f"x_{name}"] = x[name]
        base = self._baseline.lookup(feats.reset_index())
        base.index = feats.index
        for name in _BASELINE_FEATURES:
            out[f"usual_{name}"] = base[name]
        out["break_glass_week"] = self._trailing_break_glass(feats)
        return out

    def _trailing_break_glass(self, feats: pd.DataFrame) -> np.ndarray:
        frame = feats["break_glass_uncared"].reset_index()
        week = np.zeros(len(frame))
        for _, group in frame.groupby(["requester", "org"], sort=False):
            times = group["window"].to_numpy()
            counts = group["break_glass_uncared"].to_numpy()
            csum = np.concatenate([[0.0], np.cumsum(counts)])
            lo = np.searchsorted(times, times - 3 * DAY_MS, side="left")
            hi = np.searchsorted(times, times + 3 * DAY_MS, side="right")
            week[group.index.to_numpy()] = csum[hi] - csum[lo]
        return week

    def _patients_by_window(self, rows: pd.DataFrame) -> dict[tuple[str, str, int], tuple[str, ...]]:
        s = self.settings
        offset = int(s.utc_offset_hours * 3_600_000)
        window = ((rows["time"].to_numpy() + offset) // s.window_ms) * s.window_ms - offset
        grouped: dict[tuple[str, str, int], list[str]] = {}
        for requester, org, start, pid in zip(rows["requester"], rows["org"], window, rows["pid"], strict=True):
            bucket = grouped.setdefault((requester, org, int(start)), [])
            if pid not in bucket and len(bucket) < 20:
                bucket.append(pid)
        return {key: tuple(sorted(value)) for key, value in grouped.items()}

    def detect(self, events: pd.DataFrame, context: AuditContext) -> list[Flag]:
        """Flags for ``events``, most unusual first."""
        scored, patients = self._score(events, context)
        flags = [flag for flag in (self._flag(key, row, patients) for key, row in scored.iterrows())
                 if flag is not None]
        return sorted(flags, key=lambda f: (-f.score, f.window_start, f.requester))

    def _rules(self, row: pd.Series) -> list[tuple[str, str]]:
        s = self.settings
        hits: list[tuple[str, str]] = []
        peak_limit = max(s.bulk_min_patients, s.bulk_factor * row["usual_peak_patients_per_hour"])
        export_limit = max(s.bulk_min_patients, s.bulk_factor * row["usual_export_patients"])
        if row["peak_patients_per_hour"] > peak_limit:
            hits.append(("bulk_export", f"opened {row['peak_patients_per_hour']:.0f} patients' records within one "
                                        f"hour (usual peak: {row['usual_peak_patients_per_hour']:.0f})"))
        elif row["export_patients"] > export_limit:
            hits.append(("bulk_export", f"exported {row['export_patients']:.0f} patients' records "
                                        f"(usual: {row['usual_export_patients']:.0f})"))
        scoring_limit = max(s.scoring_min_events, s.scoring_factor * row["usual_scoring_events"])
        if row["scoring_events"] > scoring_limit:
            hits.append(("model_extraction", f"requested {row['scoring_events']:.0f} risk scores "
                                             f"(usual: {row['usual_scoring_events']:.0f})"))
        elif row["scoring_repeat"] >= s.scoring_repeat and row["scoring_events"] >= s.scoring_repeat_min_events:
            hits.append(("model_extraction", f"requested {row['scoring_events']:.0f} risk scores for only "
                                             f"{row['scoring_events'] / row['scoring_repeat']:.0f} patients "
                                             f"({row['scoring_repeat']:.1f} per patient)"))
        elif row["rescored_patients"] >= s.rescored_patients:
            hits.append(("model_extraction", f"scored {row['rescored_patients']:.0f} patients 5 times or more "
                                             f"({row['scoring_events']:.0f} risk scores in all)"))
        glass = row["break_glass_uncared"]
        if glass >= s.break_glass_per_window or (glass >= 1 and row["break_glass_week"] >= s.break_glass_per_week):
            hits.append(("break_glass", f"reached {glass:.0f} patient(s) on break-glass alone, with no care "
                                        f"relationship ({row['break_glass_week']:.0f} within 3 days either side; "
                                        f"{row['break_glass']:.0f} declaration(s) in this window)"))
        if row["fast_source_switches"] >= s.shared_switches or row["interleaved_sources"] >= s.shared_interleaved:
            hits.append(("shared_credentials", f"used from {row['sources']:.0f} workstations at once: "
                                               f"{row['fast_source_switches']:.0f} switches within 10 minutes, "
                                               f"{row['interleaved_sources']:.0f} interleaved accesses"))
        off_limit = max(s.off_hours_min_events, s.off_hours_factor * row["usual_off_hours_events"])
        if row["off_hours_events"] > off_limit and \
                row["off_hours_share"] - row["usual_off_hours_share"] >= s.off_hours_share_excess:
            hits.append(("off_hours", f"{row['off_hours_events']:.0f} accesses outside 07:00-19:00 "
                                      f"(usual: {row['usual_off_hours_events']:.0f})"))
        if row["crowd"] >= s.crowd_min:
            hits.append(("snooping", f"looked up a patient whom {row['crowd']:.0f} staff accessed without a reason "
                                     f"on record in the same window"))
        return hits

    def _model_reasons(self, row: pd.Series) -> list[tuple[float, str, str]]:
        peer = self._models.get(str(row["peer_group"]))
        if peer is None:
            return []
        found: list[tuple[float, str, str]] = []
        for name, (kind, wording) in _MODEL_REASONS.items():
            value, usual = float(row[f"x_{name}"]), float(peer.usual[name])
            if value > usual and value > 0:
                found.append((value / max(usual, 1.0), kind, wording.format(value=value, usual=usual)))
        return sorted(found, key=lambda item: -item[0])

    def _flag(self, key: Any, row: pd.Series, patients_by_window: dict[tuple[str, str, int], tuple[str, ...]]
              ) -> Flag | None:
        requester, org, start = key
        rules = self._rules(row)
        reasons = [text for _, text in rules]
        detectors = [f"rule:{kind}" for kind, _ in rules]
        kind = rules[0][0] if rules else ""
        score = 1.0 if rules else 0.0
        if row["model_hit"]:
            model_reasons = self._model_reasons(row)
            if model_reasons:  # a flag needs a reason an officer can check
                detectors.append("model")
                reasons.extend(text for _, _, text in model_reasons[:3] if text not in reasons)
                kind = kind or model_reasons[0][1]
                score = max(score, float(row["model_rank"]))
        if not detectors:
            return None
        if kind not in MISUSE_KINDS:
            raise RuntimeError(f"unknown misuse kind {kind!r}")
        begin = datetime.fromtimestamp(int(start) / 1000, tz=UTC)
        end = datetime.fromtimestamp((int(start) + self.settings.window_ms) / 1000, tz=UTC)
        patients = patients_by_window.get((str(requester), str(org), int(start)), ())
        return Flag(requester=str(requester), organization=str(org), window_start=begin, window_end=end,
                    score=score, reasons=tuple(reasons), kind=kind, detectors=tuple(detectors), patients=patients)
