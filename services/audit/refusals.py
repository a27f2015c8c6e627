"""What happens to a refused call: the security log for strangers, the ledger (aggregated) for callers.

* A caller the server could not authenticate (no token, a bad or expired one) writes NOTHING to the
  ledger: the refusal goes to the structured ``ciphercare.security`` log, rate-limited (a token bucket;
  lines dropped past the rate are counted and reported in the next line that is written).
* An authenticated caller refused (PERMISSION_DENIED by the access table, by a servicer or by a contract)
  leaves a ``denied`` access event in the patient's history with what the request actually named: the
  pid, the purpose and data classes when the request carried them (a code the contract would refuse, or
  none, is recorded as unspecified, never as an invented value), the method as the observer.
* Refusals are aggregated per (caller subject, caller org, pid) per time window: the first refusal in a
  window is written at once; further refusals in the same window are counted and written, when the window
  closes, as ONE event with ``repeat_count``. So one caller adds at most two events per patient per
  window to a history, however often it calls.
* A token without an organisation claim (an officer or admin of no org) is recorded under the org
  ``no-org``, so the refusal is still on the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ciphercare.consent import canonical, codes
from ciphercare.consent.model import OBSERVER_RE, PID_RE
from ciphercare.ledger.api import EndorseError, LedgerError, Principal
from ciphercare.services.audit.events import access_event

security_log = logging.getLogger("ciphercare.security")
log = logging.getLogger("ciphercare.refusals")

#: The org recorded for a refused caller whose token carried none.
NO_ORG = "no-org"
MAX_DATA_CLASSES = 16

Submit = Callable[[Principal, str], Awaitable[Any]]


@dataclass(frozen=True)
class Refusal:
    """One refused call, as the recorder sees it."""

    method: str
    code: str  # gRPC status name
    principal: Principal | None
    request: object = None
    peer: str = ""


def _field(request: object, *names: str) -> Any:
    for name in names:
        try:
            value = getattr(request, name, None)
        except Exception:  # noqa: BLE001 - a hostile or odd message must not break refusal handling
            return None
        if value is not None:
            return value
    return None


def requested_pid(request: object) -> str | None:
    """The pid a request named, when it is a valid pseudonym (anything else cannot be logged under a pid)."""
    pid = _field(request, "pid")
    if isinstance(pid, str) and PID_RE.match(pid):
        return pid
    header = _field(request, "header")
    pids = _field(header, "pids") if header is not None else None
    if pids is not None and len(pids) == 1 and isinstance(pids[0], str) and PID_RE.match(pids[0]):
        return str(pids[0])
    return None


def requested_purpose(request: object) -> str | None:
    """The purpose of use the request named, if it is one known code; None = unspecified."""
    purpose = _field(request, "purpose", "purpose_of_use")
    if purpose is None:
        many = _field(request, "purposes")
        if many is not None and not isinstance(many, str):
            try:
                listed = list(many)[:2]
            except TypeError:
                listed = []
            purpose = listed[0] if len(listed) == 1 else None  # several purposes: no single one to record
    if purpose is None:
        header = _field(request, "header")
        purpose = _field(header, "purpose_of_use") if header is not None else None
    return purpose if isinstance(purpose, str) and purpose in codes.PURPOSES_OF_USE else None


def requested_data_classes(request: object) -> list[str]:
    """The data classes the request named (known codes only, deduplicated, bounded)."""
    values: list[str] = []
    single = _field(request, "data_class")
    if isinstance(single, str):
        values.append(single)
    many = _field(request, "data_classes")
    if many is not None and not isinstance(many, str):
        try:
            values.extend(v for v in list(many)[:MAX_DATA_CLASSES] if isinstance(v, str))
        except TypeError:
            pass
    out: list[str] = []
    for v in values:
        if v in codes.DATA_CLASSES and v not in out:
            out.append(v)
    return out[:MAX_DATA_CLASSES]


def observer_for(method: str) -> str:
    """``ciphercare/<Service>`` of a full method name (``/ciphercare.v1.ConsentService/Check``)."""
    parts = method.split("/")
    service = parts[1].rsplit(".", 1)[-1] if len(parts) >= 3 else "unknown"
    name = f"ciphercare/{service}"
    return name if OBSERVER_RE.match(name) else "ciphercare/unknown"


class SecurityLog:
    """Structured, rate-limited log lines for refusals of unauthenticated callers (a token bucket)."""

    def __init__(self, rate_per_s: float = 20.0, burst: int = 50, clock: Callable[[], float] = time.monotonic):
        self.rate = rate_per_s
        self.burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self.dropped = 0
        self.written = 0

    def _take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def refused(self, refusal: Refusal, message: str) -> bool:
        """Log one unauthenticated refusal; False when it was dropped by the rate limit (and counted)."""
        if not self._take():
            self.dropped += 1
            return False
        fields = {
            "event": "unauthenticated-refusal",
            "method": refusal.method[:200],
            "code": refusal.code,
            "peer": refusal.peer[:100],
            "reason": message[:200],
            "dropped_since_last": self.dropped,
        }
        self.dropped = 0
        self.written += 1
        security_log.warning("refused unauthenticated call", extra=fields)
        return True


@dataclass
class _Window:
    started: float
    first: dict[str, Any]
    principal: Principal
    repeats: int = 0
    last: dict[str, Any] = field(default_factory=dict)


class RefusalRecorder:
    """Turns refusals into the security log or aggregated ``denied`` access events (see module docstring).

    ``submit(principal, event_json)`` writes one access event (``accesslog:Record``) as that principal.
    """

    def __init__(self, submit: Submit, *, window_s: float = 60.0, security: SecurityLog | None = None,
                 clock: Callable[[], float] = time.monotonic, max_windows: int = 100_000) -> None:
        self._submit = submit
        self.window_s = window_s
        self.security = security or SecurityLog()
        self._clock = clock
        self._windows: dict[tuple[str, str, str], _Window] = {}
        self.max_windows = max_windows
        self._lock = asyncio.Lock()

    @staticmethod
    def ledger_principal(principal: Principal) -> Principal:
        """The identity the refusal is recorded under: the caller's own, ``no-org`` when it has no org."""
        if principal.org:
            return principal
        if principal.roles and principal.roles <= {"patient"}:
            return replace(principal, org="patients")
        return replace(principal, org=NO_ORG)

    @staticmethod
    def event(refusal: Refusal, pid: str, repeat_count: int | None = None) -> dict[str, Any]:
        return access_event(
            type="110110", subtype="read", action="E", outcome="denied",
            outcome_desc=refusal.code.lower().replace("_", "-"), observer=observer_for(refusal.method), pid=pid,
            purpose_of_use=requested_purpose(refusal.request), data_classes=requested_data_classes(refusal.request),
            repeat_count=repeat_count,
        )

    async def record(self, refusal: Refusal, message: str = "") -> None:
        """Handle one refusal; never raises (the refusal stands whatever happens here)."""
        try:
            if refusal.principal is None:
                self.security.refused(refusal, message)
                return
            pid = requested_pid(refusal.request)
            if pid is None:
                return  # nothing names a patient: the refusal is in the server log only
            await self._aggregate(refusal, refusal.principal, pid)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("refusal of %s could not be recorded", refusal.method[:200])

    async def _aggregate(self, refusal: Refusal, principal: Principal, pid: str) -> None:
        key = (principal.subject, principal.org or NO_ORG, pid)
        now = self._clock()
        event = self.event(refusal, pid)
        flush: list[tuple[Principal, dict[str, Any]]] = []
        async with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.started < self.window_s:
                window.repeats += 1
                window.last = self.event(refusal, pid)
                return
            if window is not None:
                flush.extend(self._summary(window))
            if len(self._windows) >= self.max_windows:
                flush.extend(self._expire(now, force=True))
            self._windows[key] = _Window(started=now, first=event, principal=principal)
        for who, summary in flush:
            await self._write(who, summary)
        await self._write(principal, event)

    def _summary(self, window: _Window) -> Iterable[tuple[Principal, dict[str, Any]]]:
        if window.repeats == 0:
            return []
        last = dict(window.last)
        if window.repeats >= 2:
            last["repeat_count"] = window.repeats
        return [(window.principal, last)]

    def _expire(self, now: float, force: bool = False) -> list[tuple[Principal, dict[str, Any]]]:
        out: list[tuple[Principal, dict[str, Any]]] = []
        for key, window in list(self._windows.items()):
            if force or now - window.started >= self.window_s:
                out.extend(self._summary(window))
                del self._windows[key]
        return out

    async def flush(self, force: bool = False) -> int:
        """Write the summaries of closed windows (all windows when ``force``); returns how many were written."""
        async with self._lock:
            pending = self._expire(self._clock(), force=force)
        for who, summary in pending:
            await self._write(who, summary)
        return len(pending)

    async def run(self) -> None:
        """Flush closed windows periodically until cancelled (then flush everything)."""
        try:
            while True:
                await asyncio.sleep(max(self.window_s / 4, 0.05))
                await self.flush()
        finally:
            await asyncio.shield(self.flush(force=True))

    async def _write(self, principal: Principal, event: dict[str, Any]) -> None:
        try:
            await self._submit(self.ledger_principal(principal), canonical.dumps(event).decode())
        except EndorseError as exc:
            log.warning("denied access event not recorded: %s", exc.code)
        except LedgerError:
            log.exception("denied access event not recorded")
