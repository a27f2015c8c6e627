"""The one error table: a dependency that is down or slow is UNAVAILABLE, never INTERNAL or UNKNOWN."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import exc as sa_exc

from ciphercare.ledger.api import CommitError, LedgerError, LedgerTimeout
from ciphercare.ledger.gateway import SubmitError
from ciphercare.services.platform.errors import status_for


def _operational(message: str) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, Exception(message))


@pytest.mark.parametrize(
    ("error", "code", "fragment"),
    [
        (_operational("connection refused"), grpc.StatusCode.UNAVAILABLE, "off-chain store is unavailable"),
        (sa_exc.InterfaceError("SELECT 1", {}, Exception("closed")), grpc.StatusCode.UNAVAILABLE, "off-chain store"),
        (sa_exc.TimeoutError("QueuePool limit reached"), grpc.StatusCode.UNAVAILABLE, "off-chain store"),
        (sa_exc.DisconnectionError("gone"), grpc.StatusCode.UNAVAILABLE, "off-chain store"),
        (CommitError("tx-1", "disk I/O error"), grpc.StatusCode.UNAVAILABLE, "nothing was written"),
        (SubmitError("tx-2", "ordering down"), grpc.StatusCode.UNAVAILABLE, "ledger is unavailable"),
        (LedgerError("transaction log is closed"), grpc.StatusCode.UNAVAILABLE, "ledger is unavailable"),
        (LedgerTimeout("tx-3", 1.0), grpc.StatusCode.DEADLINE_EXCEEDED, "not committed within"),
        (ConnectionRefusedError(111, "refused"), grpc.StatusCode.UNAVAILABLE, "unavailable"),
        # Bugs stay INTERNAL, with an opaque message.
        (sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")), grpc.StatusCode.INTERNAL, "internal error"),
        (KeyError("x"), grpc.StatusCode.INTERNAL, "internal error"),
    ],
)
def test_dependency_errors_map_to_readable_statuses(error: BaseException, code: grpc.StatusCode,
                                                    fragment: str) -> None:
    got_code, message = status_for(error)
    assert got_code == code
    assert fragment in message
    assert "SELECT" not in message and "duplicate" not in message  # no SQL or driver text reaches the caller


def test_invalidated_connection_is_unavailable() -> None:
    error = sa_exc.DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True)
    assert status_for(error)[0] == grpc.StatusCode.UNAVAILABLE
