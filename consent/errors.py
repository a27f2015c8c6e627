"""Contract errors: one exception type whose message is ``"CODE: detail"``.

The gateway (embedded ledger or Fabric) parses the code from the chaincode's
error message and maps it to a gRPC status, so the code set is closed.
"""

from __future__ import annotations

INVALID_ARGUMENT = "INVALID_ARGUMENT"
NOT_FOUND = "NOT_FOUND"
ALREADY_EXISTS = "ALREADY_EXISTS"
PERMISSION_DENIED = "PERMISSION_DENIED"
FAILED_PRECONDITION = "FAILED_PRECONDITION"

CODES: frozenset[str] = frozenset(
    {INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, FAILED_PRECONDITION}
)


class ContractError(Exception):
    """A refusal by a contract; ``str(err)`` is ``"CODE: detail"``."""

    def __init__(self, code: str, detail: str) -> None:
        if code not in CODES:
            raise ValueError(f"unknown contract error code {code!r}")
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}")


class ValidationError(ContractError):
    """Malformed input: always ``INVALID_ARGUMENT``."""

    def __init__(self, detail: str) -> None:
        super().__init__(INVALID_ARGUMENT, detail)


def invalid(detail: str) -> ValidationError:
    return ValidationError(detail)


def not_found(detail: str) -> ContractError:
    return ContractError(NOT_FOUND, detail)


def already_exists(detail: str) -> ContractError:
    return ContractError(ALREADY_EXISTS, detail)


def permission_denied(detail: str) -> ContractError:
    return ContractError(PERMISSION_DENIED, detail)


def failed_precondition(detail: str) -> ContractError:
    return ContractError(FAILED_PRECONDITION, detail)
