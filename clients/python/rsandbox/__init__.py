"""rsandbox: a client for the rsandbox daemon (``rsandbox serve``), which runs untrusted code in
Linux sandboxes (namespaces, cgroups, seccomp, Landlock).

>>> import rsandbox
>>> with rsandbox.Client() as c:                       # $RSANDBOX_URL or the default socket
...     r = c.run("print(6 * 7)", timeout=5, memory_mb=256)
...     print(r.status, r.stdout)
...     with c.session() as s:
...         s.execute("x = 41")
...         print(s.execute("x + 1").text)

A program that fails is a :class:`Report` (``status``), not an exception; refused requests
raise subclasses of :class:`Error`.
"""

from ._async import AsyncClient, AsyncContexts, AsyncFiles, AsyncSession
from ._core import VersionWarning, __version__, default_socket
from ._errors import (
    AuthError,
    Busy,
    ConnectionFailed,
    Error,
    FileNotFound,
    InvalidRequest,
    SandboxError,
    SessionGone,
)
from ._sync import Client, Contexts, Files, Session
from ._types import CellError, CellResult, ContextInfo, Event, Execution, FileInfo, Report, SessionInfo

__all__ = [
    "AsyncClient",
    "AsyncContexts",
    "AsyncFiles",
    "AsyncSession",
    "AuthError",
    "Busy",
    "CellError",
    "CellResult",
    "Client",
    "ConnectionFailed",
    "ContextInfo",
    "Contexts",
    "Error",
    "Event",
    "Execution",
    "FileInfo",
    "FileNotFound",
    "Files",
    "InvalidRequest",
    "Report",
    "SandboxError",
    "Session",
    "SessionGone",
    "SessionInfo",
    "VersionWarning",
    "__version__",
    "default_socket",
]
