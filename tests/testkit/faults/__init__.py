"""Dependency faults for tests, made on the wire and on the real components (no mocks).

* :class:`FaultProxy` -- a small asyncio TCP proxy on loopback between a client (the server under test)
  and a real dependency (PostgreSQL, the identity provider, a witness). It passes bytes through, and on
  demand delays them (latency injection: a fixed delay, or held until the test releases them), resets new
  connections with a probability (flakiness), resets every open connection (a dependency restart), or
  refuses everything (the dependency is down).
* :class:`PrivateCluster` -- a PostgreSQL cluster of the test's own, made with Debian's ``initdb`` and
  driven with ``pg_ctl``, so it can be stopped and started without disturbing the shared test server.
* :class:`ResourceCounts` -- threads, open file descriptors, resident memory and checked-out pool
  connections of this process, to show a fault cycle leaks nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testkit import component_missing
from testkit.process import free_port

__all__ = ["FaultProxy", "PrivateCluster", "ResourceCounts", "postgres_bindir"]


class FaultProxy:
    """A TCP proxy on ``127.0.0.1:<port>`` to ``upstream``, with faults switched on and off at run time.

    Modes (:meth:`pass_through`, :meth:`refuse`, :meth:`blackhole`) say what happens to NEW connections;
    ``delay_s`` delays every chunk in both directions; :meth:`hold` delays them until :meth:`release` (latency
    the test ends, so an ordering can be asserted without timing); ``reset_probability`` resets that share of new
    connections at once; :meth:`cut` resets every open connection. Runs its own event loop in a thread.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, seed: int = 7) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.delay_s = 0.0
        self.reset_probability = 0.0
        self.mode = "pass"
        self.accepted = 0
        self.resets = 0
        self.held = 0  # chunks waiting in hold() right now
        self._released: asyncio.Event | None = None
        self._random = random.Random(seed)
        self._conns: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.port}", daemon=True)

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- faults ------------------------------------------------------------------------------------

    def pass_through(self) -> None:
        """Heal: new connections pass, no delay, no resets, nothing held."""
        self.mode, self.delay_s, self.reset_probability = "pass", 0.0, 0.0
        self.release()

    def hold(self) -> None:
        """Latency without a set length: every chunk, both ways, waits until :meth:`release`."""
        self._on_loop(lambda released: released.clear())

    def release(self) -> None:
        """End :meth:`hold`: the held chunks go on, in order."""
        self._on_loop(lambda released: released.set())

    def _on_loop(self, action: Any) -> None:
        loop, released = self._loop, self._released
        if loop is None or released is None:
            return
        done = threading.Event()

        def run() -> None:
            action(released)
            done.set()

        loop.call_soon_threadsafe(run)
        done.wait(5)

    def refuse(self, cut_open: bool = True) -> None:
        """The dependency is down: every new connection is reset at once (and, by default, open ones too)."""
        self.mode = "refuse"
        if cut_open:
            self.cut()

    def blackhole(self) -> None:
        """The dependency hangs: new connections are accepted and never answered."""
        self.mode = "blackhole"

    def slow(self, delay_s: float) -> None:
        """Latency injection: every chunk, both ways, waits ``delay_s``."""
        self.delay_s = delay_s

    def flaky(self, reset_probability: float) -> None:
        """Each new connection is reset at once with this probability."""
        self.reset_probability = reset_probability

    def cut(self) -> None:
        """Reset every open connection (as a dependency restart does)."""
        loop = self._loop
        if loop is None:
            return
        done = threading.Event()

        def cut_all() -> None:
            for writer in list(self._conns):
                _reset(writer)
            self._conns.clear()
            done.set()

        loop.call_soon_threadsafe(cut_all)
        done.wait(5)

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    # -- the loop ----------------------------------------------------------------------------------

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopped = asyncio.Event()
            self._released = asyncio.Event()
            self._released.set()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            self._ready.set()
            await self._stopped.wait()
            self._server.close()
            for writer in list(self._conns):
                _reset(writer)
            await self._server.wait_closed()

        asyncio.run(main())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "refuse" or (self.reset_probability and self._random.random() < self.reset_probability):
            self.resets += 1
            _reset(writer)
            return
        self._conns.add(writer)
        if self.mode == "blackhole":
            try:
                while await reader.read(65536):
                    pass
            except OSError:
                pass
            finally:
                self._conns.discard(writer)
                _close(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._conns.discard(writer)
            _reset(writer)
            return
        self._conns.add(up_writer)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._conns.discard(writer)
            self._conns.discard(up_writer)
            _close(writer)
            _close(up_writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                released = self._released
                if released is not None and not released.is_set():
                    self.held += 1
                    try:
                        await released.wait()
                    finally:
                        self.held -= 1
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer's kernel does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close(writer)


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()


# --- a private PostgreSQL cluster ------------------------------------------------------------------

def postgres_bindir() -> Path:
    """Debian's PostgreSQL server binaries (newest major); skips (fails under CI=true) when absent."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                        if p.parent.name.isdigit() else 0, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    message = "no PostgreSQL server binaries (scripts/setup/10-postgres.sh installs Debian's postgresql)"
    component_missing(message)


class PrivateCluster:
    """A throw-away PostgreSQL cluster on loopback, owned by the test: ``start()``, ``stop()``, ``url``.

    Trust authentication on loopback only (the cluster lives for one test module in a private directory).
    As root the server runs as the ``postgres`` user, as Debian's does.
    """

    def __init__(self, root: Path) -> None:
        self.bindir = postgres_bindir()
        self.root = root
        self.data = root / "data"
        self.sock = root / "sock"
        self.logfile = root / "server.log"
        self.port = free_port()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        done = subprocess.run([*self._as_owner, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[-800:]}")

    def init(self) -> PrivateCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir()
        self.sock.mkdir()
        if self._as_owner:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.data, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "ciphercare", "-E", "UTF8",
                  "--no-locale", "--auth-local=trust", "--auth-host=trust", "--no-sync")
        return self

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB -c max_connections=60")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60",
                  "-o", options, "start")

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; ``immediate`` is a crash as far as clients can tell (connections reset)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    @property
    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str = "postgres", port: int | None = None) -> str:
        return f"postgresql+psycopg://ciphercare@127.0.0.1:{port or self.port}/{database}"

    def create_database(self, name: str) -> str:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        finally:
            engine.dispose()
        return name

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[PrivateCluster]:
        """A new cluster in a fresh directory under the temp dir (reachable by the ``postgres`` user)."""
        root = Path(tempfile.mkdtemp(prefix="ciphercare-pg-faults-"))
        root.chmod(0o711)
        cluster = cls(root / "cluster").init()
        try:
            cluster.start()
            yield cluster
        finally:
            if cluster.is_running:
                with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                    cluster.stop()
            shutil.rmtree(root, ignore_errors=True)


# --- leak accounting -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResourceCounts:
    """What a leak would grow: threads, open fds, resident memory, pool connections checked out."""

    threads: int
    fds: int
    rss_kib: int
    checked_out: int

    @classmethod
    def now(cls, engine: Any = None) -> ResourceCounts:
        rss = 0
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        checked_out = int(engine.pool.checkedout()) if engine is not None else 0
        return cls(threading.active_count(), len(os.listdir("/proc/self/fd")), rss, checked_out)


def wait_until(predicate: Any, timeout_s: float = 20.0, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval_s)
