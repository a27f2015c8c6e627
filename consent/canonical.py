"""Canonical JSON: one byte sequence per value, on every peer and in the embedded ledger.

Keys sorted by code point, no insignificant white space, UTF-8, and no floats
(their text form is not portable across languages; amounts and times are
integers or strings here). This is the subset of RFC 8785 (JCS) where JCS and
``json.dumps(sort_keys=True)`` agree byte for byte.
"""

from __future__ import annotations

import json
from typing import Any


class CanonicalJSONError(ValueError):
    """The value cannot be written canonically (a float, a non-string key, NaN ...)."""


def _check(value: Any, path: str) -> None:
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if abs(value) > 2**53 - 1:
            raise CanonicalJSONError(f"{path}: integer {value} is outside the interoperable range")
        return
    if isinstance(value, float):
        raise CanonicalJSONError(f"{path}: floats are not allowed in canonical JSON")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalJSONError(f"{path}: object key {key!r} is not a string")
            _check(item, f"{path}.{key}")
        return
    raise CanonicalJSONError(f"{path}: {type(value).__name__} is not a JSON value")


def dumps(value: Any) -> bytes:
    """Serialize ``value`` to canonical JSON bytes."""
    _check(value, "$")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(data: bytes | str) -> Any:
    """Parse JSON; the inverse of :func:`dumps` for canonical input."""
    return json.loads(data)
