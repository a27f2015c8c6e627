"""Server-side sessions keyed by a random id in an HTTP-only, SameSite cookie.

The cookie carries only the id (256 random bits); tokens, the CSRF token, the
login in progress and the last verified checkpoint stay on the server. Sessions
expire after an idle time and an absolute lifetime; the id is replaced at login
so a session id planted before login is worthless afterwards.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ciphercare.services.identity.rules import ADMIN, CLINICIAN, COMPLIANCE_OFFICER, HOSPITAL, PATIENT

MAX_PENDING_LOGINS = 5
MAX_RECEIPTS = 50


@dataclass(frozen=True)
class WebUser:
    """The signed-in person, from their verified access token (and ID token for the name)."""

    subject: str
    username: str
    name: str
    roles: frozenset[str]
    org: str
    pid: str | None

    @property
    def is_patient(self) -> bool:
        return PATIENT in self.roles and not self.roles & {CLINICIAN, HOSPITAL}

    @property
    def is_provider(self) -> bool:
        return bool(self.roles & {CLINICIAN, HOSPITAL})

    @property
    def is_oversight(self) -> bool:
        return bool(self.roles & {COMPLIANCE_OFFICER, ADMIN})

    def may_offer_grant(self, pid: str) -> bool:
        """Whether to show grant/revoke controls: the services decide; this only hides what they refuse."""
        return self.is_provider or (self.is_patient and self.pid == pid)

    @property
    def role_label(self) -> str:
        if self.is_oversight:
            return "compliance officer" if COMPLIANCE_OFFICER in self.roles else "administrator"
        if self.is_provider:
            return f"clinician at {self.org}" if CLINICIAN in self.roles else f"hospital {self.org}"
        if self.is_patient:
            return "patient"
        return "no ciphercare role"


@dataclass
class PendingLogin:
    """An authorization request in flight: what the callback must match."""

    state: str
    nonce: str
    code_verifier: str
    next_path: str
    created: float


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose signature this session verified (and which later ones must extend)."""

    origin: str
    tree_size: int
    root_hash_hex: str
    timestamp_ms: int
    signed_note: str
    verified_at: float


@dataclass
class Session:
    """One browser's state on the server."""

    id: str
    csrf_token: str
    created: float
    last_seen: float
    pending: dict[str, PendingLogin] = field(default_factory=dict)
    user: WebUser | None = None
    access_token: str = ""
    access_expires: float = 0.0
    refresh_token: str = ""
    id_token: str = ""
    #: The checkpoint verifier key this session trusts (pinned on first use unless configured).
    vkey: str = ""
    last_checkpoint: VerifiedCheckpoint | None = None
    previous_checkpoint: VerifiedCheckpoint | None = None
    integrity: dict[str, Any] = field(default_factory=dict)
    inclusion: dict[str, dict[str, Any]] = field(default_factory=dict)
    receipts: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    #: One-time messages for the next page: ``text`` and optionally ``href`` + ``link``.
    flash: list[dict[str, str]] = field(default_factory=list)

    @property
    def signed_in(self) -> bool:
        return self.user is not None and bool(self.access_token)

    def remember_receipt(self, key: str, receipt: dict[str, Any]) -> None:
        self.receipts[key] = receipt
        while len(self.receipts) > MAX_RECEIPTS:
            self.receipts.popitem(last=False)

    def add_pending(self, login: PendingLogin) -> None:
        self.pending[login.state] = login
        while len(self.pending) > MAX_PENDING_LOGINS:
            oldest = min(self.pending.values(), key=lambda p: p.created)
            del self.pending[oldest.state]


class SessionStore:
    """In-memory sessions with idle and absolute expiry (one process; bounded)."""

    def __init__(self, idle_s: float, max_age_s: float, max_sessions: int = 10_000) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def new(self) -> Session:
        now = time.time()
        session = Session(id=secrets.token_urlsafe(32), csrf_token=secrets.token_urlsafe(32), created=now,
                          last_seen=now)
        with self._lock:
            self._sessions[session.id] = session
            self._evict()
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session for ``session_id``, or ``None`` (unknown or expired, then forgotten)."""
        if not session_id:
            return None
        now = time.time()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_seen > self.idle_s or now - session.created > self.max_age_s:
                del self._sessions[session_id]
                return None
            session.last_seen = now
            self._sessions.move_to_end(session_id)
            return session

    def rotate(self, session: Session) -> Session:
        """Give ``session`` a new id and CSRF token (at login); the old id stops working."""
        with self._lock:
            self._sessions.pop(session.id, None)
            session.id = secrets.token_urlsafe(32)
            session.csrf_token = secrets.token_urlsafe(32)
            session.created = session.last_seen = time.time()
            self._sessions[session.id] = session
        return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _evict(self) -> None:
        """Over the limit: drop the least recently used sessions, not-signed-in ones first."""
        excess = len(self._sessions) - self.max_sessions
        if excess <= 0:
            return
        anonymous = [sid for sid, s in self._sessions.items() if s.user is None][:excess]
        for sid in anonymous:
            del self._sessions[sid]
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
