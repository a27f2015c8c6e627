"""Scoring volume per organisation: the quota that bounds black-box model extraction, and its counters.

Every patient the ScoringService permits counts against the caller organisation's quota for that
purpose of use over a rolling window (``scoring_quota_patients`` per ``scoring_quota_window_s``;
0 disables the quota). A call whose permitted patients would exceed it is refused with
RESOURCE_EXHAUSTED before anything is recorded. The counters (:meth:`ScoringUsage.snapshot`) are
what the unusual-access detector and the metrics read: patients scored, calls, refusals and the
current window's use per organisation and purpose.

The counts live in the server process (a restart forgets the window; the ledger's access events
remain the durable record of every scoring).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class QuotaExceeded(Exception):
    """The organisation's scoring quota for this purpose and window would be exceeded."""

    def __init__(self, org: str, purpose: str, used: int, requested: int, limit: int, window_s: float,
                 retry_after_s: float) -> None:
        hours = window_s / 3600
        super().__init__(
            f"scoring quota exhausted for organisation {org!r}, purpose {purpose}: {used} of {limit} patients "
            f"used in the last {hours:g} h, this call needs {requested} more; retry in {retry_after_s:.0f} s "
            f"or ask the operator to raise scoring_quota_patients")
        self.retry_after_s = retry_after_s


@dataclass
class _Counter:
    window: deque[tuple[float, int]] = field(default_factory=deque)
    in_window: int = 0
    patients_total: int = 0
    calls_total: int = 0
    refused_total: int = 0


class ScoringUsage:
    """Rolling-window quota and cumulative counters per (organisation, purpose of use)."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 0 or window_s <= 0:
            raise ValueError("quota limit must be >= 0 and the window > 0")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], _Counter] = {}

    def _expire(self, counter: _Counter, now: float) -> None:
        while counter.window and counter.window[0][0] <= now - self.window_s:
            _, n = counter.window.popleft()
            counter.in_window -= n

    def reserve(self, org: str, purpose: str, patients: int) -> None:
        """Count ``patients`` against the quota, or raise :class:`QuotaExceeded` (nothing counted)."""
        if patients < 0:
            raise ValueError("patients must be >= 0")
        with self._lock:
            now = self._clock()
            counter = self._counters.setdefault((org, purpose), _Counter())
            self._expire(counter, now)
            if self.limit and counter.in_window + patients > self.limit:
                counter.refused_total += 1
                oldest = counter.window[0][0] if counter.window else now
                raise QuotaExceeded(org, purpose, counter.in_window, patients, self.limit, self.window_s,
                                    max(0.0, oldest + self.window_s - now))
            counter.calls_total += 1
            if patients:
                counter.window.append((now, patients))
                counter.in_window += patients
                counter.patients_total += patients

    def used(self, org: str, purpose: str) -> int:
        """Patients counted for ``org`` and ``purpose`` in the current window."""
        with self._lock:
            counter = self._counters.get((org, purpose))
            if counter is None:
                return 0
            self._expire(counter, self._clock())
            return counter.in_window

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per (organisation, purpose): window use, limit, cumulative patients, calls, refusals."""
        with self._lock:
            now = self._clock()
            rows = []
            for (org, purpose), counter in sorted(self._counters.items()):
                self._expire(counter, now)
                rows.append({"org": org, "purpose_of_use": purpose, "patients_in_window": counter.in_window,
                             "quota": self.limit, "window_s": self.window_s,
                             "patients_total": counter.patients_total, "calls_total": counter.calls_total,
                             "refused_total": counter.refused_total})
            return rows
