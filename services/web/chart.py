"""A server-rendered SVG chart: accesses over time, stacked by outcome (no JavaScript).

The console draws it from the service's aggregates over the whole search (:func:`day_buckets`), never from a
page of rows. Tick labels are thinned to what fits the axis, so they never overlap.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape

from ciphercare.v1 import access_log_pb2

OUTCOMES = (
    (access_log_pb2.ACCESS_OUTCOME_SUCCESS, "allowed", "bar-allowed"),
    (access_log_pb2.ACCESS_OUTCOME_DENIED, "denied", "bar-denied"),
    (access_log_pb2.ACCESS_OUTCOME_ERROR, "error", "bar-error"),
)
MAX_BUCKETS = 48
#: Width a tick label needs on the x axis (SVG units: about 6.5 per character of the 11px tick font, plus a gap).
TICK_CHAR_W = 6.5
TICK_GAP = 10.0


@dataclass(frozen=True)
class Bucket:
    start: datetime
    label: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def buckets(events: Iterable[access_log_pb2.AccessEvent]) -> tuple[list[Bucket], str]:
    """Events counted per hour (a span under two days) or per day, by outcome; returns (buckets, unit)."""
    stamped = [(e.recorded.ToDatetime(tzinfo=UTC), e.outcome) for e in events if e.HasField("recorded")]
    if not stamped:
        return [], "day"
    first = min(t for t, _ in stamped)
    last = max(t for t, _ in stamped)
    hourly = last - first < timedelta(days=2)
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    floor = first.replace(minute=0, second=0, microsecond=0)
    if not hourly:
        floor = floor.replace(hour=0)
    count = min(int((last - floor) / step) + 1, MAX_BUCKETS)
    if int((last - floor) / step) + 1 > MAX_BUCKETS:  # too long a span: widen the step
        step = (last - floor) / MAX_BUCKETS + timedelta(seconds=1)
    tallies: list[Counter[str]] = [Counter() for _ in range(count)]
    names = {code: name for code, name, _ in OUTCOMES}
    for t, outcome in stamped:
        index = min(int((t - floor) / step), count - 1)
        tallies[index][names.get(outcome, "error")] += 1
    fmt = "%d %b %H:00" if hourly else "%d %b %Y"
    result = [Bucket(floor + i * step, (floor + i * step).strftime(fmt), dict(tallies[i])) for i in range(count)]
    return result, "hour" if hourly else "day"


def day_buckets(by_day: Iterable[tuple[str, int, int, int]]) -> tuple[list[Bucket], str]:
    """Buckets from per-day aggregates (``(YYYY-MM-DD, events, denied, errors)``): every day from the first to
    the last (empty days included), grouped into runs of days when there are more than :data:`MAX_BUCKETS`."""
    counts = {datetime.fromisoformat(day).replace(tzinfo=UTC): (n, denied, errors) for day, n, denied, errors in by_day}
    if not counts:
        return [], "day"
    first, last = min(counts), max(counts)
    days = (last - first).days + 1
    width = max(1, -(-days // MAX_BUCKETS))  # days per bucket
    result: list[Bucket] = []
    for start_index in range(0, days, width):
        start = first + timedelta(days=start_index)
        tally: Counter[str] = Counter()
        for offset in range(width):
            n, denied, errors = counts.get(start + timedelta(days=offset), (0, 0, 0))
            tally["allowed"] += n - denied - errors
            tally["denied"] += denied
            tally["error"] += errors
        label = start.strftime("%d %b %Y") if width == 1 else f"{start.strftime('%d %b %Y')} (+{width - 1} days)"
        result.append(Bucket(start, label, {k: v for k, v in tally.items() if v}))
    return result, "day" if width == 1 else f"{width} days"


def tick_label(bucket: Bucket, unit: str, first: bool) -> str:
    """A short x-axis label: "03 Mar" (the year on the first tick and in January), or "14:00" per hour."""
    if unit == "hour":
        return bucket.start.strftime("%d %b %H:00" if first or bucket.start.hour == 0 else "%H:00")
    return bucket.start.strftime("%d %b %Y" if first or bucket.start.month == 1 and bucket.start.day <= 7
                                 else "%d %b")


def label_step(labels: list[str], slot: float) -> int:
    """Show every n-th tick label (``slot`` apart) so that even the widest two never overlap."""
    if not labels:
        return 1
    need = max(len(text) for text in labels) * TICK_CHAR_W + TICK_GAP
    return max(1, math.ceil(need / max(slot, 1.0)))


def svg(data: list[Bucket], unit: str, width: int = 640, height: int = 220) -> str:
    """An accessible stacked bar chart (``role=img`` with a title and description)."""
    if not data:
        return ""
    top = max(b.total for b in data) or 1
    left, bottom, right, head = 36, 40, 8, 10
    plot_w, plot_h = width - left - right, height - bottom - head
    bar_w = min(plot_w / len(data), 56.0)
    totals = {name: sum(b.counts.get(name, 0) for b in data) for _, name, _ in OUTCOMES}
    span = f"{len(data)} {unit}s" if unit in ("hour", "day") else f"{len(data)} periods of {unit}"
    desc = (f"{sum(totals.values())} accesses over {span}: " +
            ", ".join(f"{n} {name}" for name, n in totals.items()))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-title chart-desc" '
        'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMinYMin meet">',
        f'<title id="chart-title">Accesses per {unit} by outcome</title>',
        f'<desc id="chart-desc">{escape(desc)}</desc>',
        f'<line class="axis" x1="{left}" y1="{head + plot_h}" x2="{width - right}" y2="{head + plot_h}"/>',
        f'<text class="tick" x="{left - 4}" y="{head + 4}" text-anchor="end">{top}</text>',
        f'<text class="tick" x="{left - 4}" y="{head + plot_h}" text-anchor="end">0</text>',
    ]
    labels = [tick_label(bucket, unit, i == 0) for i, bucket in enumerate(data)]
    label_every = label_step(labels, bar_w)
    mid = (top + 1) // 2
    if 0 < mid < top:
        parts.append(f'<text class="tick" x="{left - 4}" y="{head + plot_h - plot_h * mid / top + 4:.1f}" '
                     f'text-anchor="end">{mid}</text>')
    for i, bucket in enumerate(data):
        x = left + i * bar_w
        y: float = head + plot_h
        for _, name, css in OUTCOMES:
            n = bucket.counts.get(name, 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            parts.append(f'<rect class="{css}" x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                         f'height="{h:.1f}"><title>{escape(bucket.label)}: {n} {name}</title></rect>')
        if i % label_every == 0:
            parts.append(f'<text class="tick tick-x" x="{x + bar_w / 2:.1f}" y="{head + plot_h + 16}" '
                         f'text-anchor="middle">{escape(labels[i])}</text>')
    parts.append("</svg>")
    return "".join(parts)
