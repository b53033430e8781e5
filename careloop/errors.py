"""Domain errors the services raise; the API turns them into 404, 409 and 422 answers."""

from __future__ import annotations


class DomainError(Exception):
    status_code = 400


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class InvalidInput(DomainError):
    """Input that is well-formed but wrong; names the field."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
