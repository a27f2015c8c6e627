"""Structured (JSON lines) logging for the services, scrubbed where records are made into text.

What a log line may carry is decided here, by type, before anything is rendered:

* the message template and its arguments: log calls pass identifiers and codes only
  (method names, status codes, counts, sequence numbers, pseudonyms); request bodies,
  documents and tokens are never handed to a logger;
* extra fields of scalar type only (str, int, float, bool, None); anything else is
  written as its type name, never as ``str(value)``, so an object cannot dump its state;
* exceptions as their type, an optional code attribute and the stack frames
  (file, line, function) -- never the exception's message or arguments, which is where
  data leaks without anyone deciding to log it (a driver's error quoting a value, a
  parser quoting its input). SQL parameters are kept out of database errors at the
  source as well (``hide_parameters`` in the store's engine).
"""

from __future__ import annotations

import enum
import json
import logging
import os
import sys
import time
import traceback
from types import TracebackType
from typing import Any

from ciphercare.services.platform.settings import Settings

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_SCALARS = (str, int, float, bool, type(None))
_MAX_FRAMES = 20
_QUIET_LIBRARIES = ("alembic.runtime.plugins", "asyncio", "hpack", "urllib3", "fabric_chaincode_python")


def _scalar(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, list | tuple | set | frozenset) and len(value) <= 32 and all(
            isinstance(item, str | int | float | bool) for item in value):
        # short collections of scalars (roles, codes) as lists; sets sorted so lines are stable
        return sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
    return f"<{type(value).__name__}>"


def exception_fields(exc_type: type[BaseException] | None, exc: BaseException | None,
                     tb: TracebackType | None) -> dict[str, Any]:
    """An exception as data: type names along the cause chain, a code if it has one, and its frames."""
    if exc_type is None or exc is None:
        return {}
    chain: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(f"{type(current).__module__}.{type(current).__qualname__}")
        current = current.__cause__ or current.__context__
    fields: dict[str, Any] = {"exc_type": chain[0], "exc_chain": chain[1:]}
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) <= 64:
        fields["exc_code"] = code
    frames = traceback.extract_tb(tb)[-_MAX_FRAMES:]
    fields["exc_frames"] = [f"{frame.filename}:{frame.lineno}:{frame.name}" for frame in frames]
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, scalar extra fields, exception as data."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self._message(record),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = _scalar(value)
        if record.exc_info:
            entry.update(exception_fields(*record.exc_info))
        if record.stack_info:
            entry["stack"] = "<omitted>"
        return json.dumps(entry, ensure_ascii=False)

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        template = str(record.msg)
        if not record.args:
            return template
        args = record.args
        if isinstance(args, dict):
            safe: Any = {key: _argument(value) for key, value in args.items()}
        else:
            safe = tuple(_argument(value) for value in args)
        try:
            return template % safe
        except (TypeError, ValueError, KeyError):
            return template


def _argument(value: Any) -> Any:
    """A %-argument: scalars, paths and enum names as they are; an exception or other object by type only."""
    if isinstance(value, BaseException):
        return type(value).__name__
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return f"<{type(value).__name__}>"


def configure_logging(settings: Settings, stream: Any = None, level: int = logging.INFO) -> None:
    """Route every logger to one JSON-lines handler on ``stream`` (stderr by default) at ``level``.

    Replaces whatever handlers a library installed on import (the Fabric shim calls
    ``basicConfig(level=DEBUG)``), so nothing bypasses the formatter above.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("ciphercare").setLevel(level)
    for noisy in _QUIET_LIBRARIES:  # libraries that narrate their own set-up at INFO or DEBUG
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
