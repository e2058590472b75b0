"""The exceptions of rsandbox: every one carries the daemon's reason.

A program that fails inside the sandbox is not an exception (it is a :class:`Report` whose
``status`` says how it ended); these are for requests the daemon refused or could not serve.
"""

from __future__ import annotations

from typing import Any, Optional


class Error(Exception):
    """Base class of every rsandbox error.

    Attributes:
        message: the daemon's reason (or the transport's, for a connection that failed).
        status: the HTTP status, or None when no answer came.
        stage: the daemon's ``error.stage`` (``request``, ``access``, ``queue``, ``session``...).
        body: the decoded JSON body of the answer, when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        stage: Optional[str] = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.stage = stage
        self.body = body

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{self.status}: {self.message}"


class AuthError(Error):
    """401 (no or a wrong bearer token on TCP) or 403 (a Unix-socket peer the daemon refuses)."""


class InvalidRequest(Error):
    """400, 413 or 422: the request was malformed, too large, or asked for more than the
    daemon's maxima (the message names the limit and the maximum)."""


class Busy(Error):
    """503: the run queue is full, the session or context limit is reached, or the daemon is
    shutting down. ``retry_after`` is the daemon's Retry-After in seconds."""

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class SessionGone(Error):
    """404 or 410 for a session (or one of its contexts): it never existed, or it ended.
    ``reason`` is the daemon's ``error.reason`` for a 410 (``deleted``, ``expired_idle``,
    ``expired_lifetime``, ``shutdown``), else None."""

    def __init__(self, message: str, *, reason: Optional[str] = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.reason = reason


class SandboxError(Error):
    """5xx (other than 503): the sandbox or the host failed, not the program."""


class FileNotFound(Error, FileNotFoundError):
    """404 for a file of a session's work dir that does not exist (also a FileNotFoundError)."""


class ConnectionFailed(Error):
    """No answer: the daemon could not be reached, or the connection broke or timed out."""
