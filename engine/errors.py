"""The one error base of ocgate's engine: something a caller asked for that cannot be done.

Every error the workflows raise on purpose is an :class:`OcgateError` (or a subclass): it carries a stable
machine-readable ``code``, the HTTP ``status`` the API answers with, a ``message`` for a person, and
optional ``problems`` (one line each: the positioned problems of a rule file, the entries that cannot be
billed). The API has one handler for the base class; the command line prints the message and the problems
and exits 2, or 75 when ``retryable`` says trying again later may work.

Pure: nothing here knows about HTTP frameworks or databases; ``status`` is just a number.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OcgateError(Exception):
    """A request the engine refuses, with a stable ``code`` and the HTTP ``status`` that means it."""

    code: ClassVar[str] = "invalid_request"
    status: ClassVar[int] = 400
    retryable: bool = False  # a remote system could not be reached: the same request may work later

    def __init__(self, message: str, problems: list[Any] | None = None):
        super().__init__(message)
        self.message = message
        self.problems: list[Any] = list(problems or [])

    def details(self) -> list[dict[str, Any]]:
        """The problems as JSON objects (the API's ``error.details``)."""
        return [{"message": str(p)} for p in self.problems[:50]]


class NotFound(OcgateError):
    code, status = "not_found", 404


class Conflict(OcgateError):
    """Not in a state that allows this."""

    code, status = "conflict", 409


class Invalid(OcgateError):
    """Understood, but the content cannot be used."""

    code, status = "invalid", 422


class Unavailable(OcgateError):
    """A remote system (a destination, a source) could not be reached; nothing was lost, try again later."""

    code, status = "unavailable", 503
    retryable = True
