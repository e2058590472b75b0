"""What the sync and async clients share: where the daemon is, how each request is built (a
:class:`Call`), how answers become values and errors become exceptions, and HTTP timeouts.

The clients only send Calls (``Client._do`` / ``await AsyncClient._do``), so both speak the
same protocol by construction.
"""

from __future__ import annotations

import base64
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

import httpx

from . import _errors as E
from ._types import ContextInfo, Execution, FileInfo, Report, SessionInfo

__version__ = "0.1.0"

#: The daemon's default run timeout (seconds), used to size HTTP timeouts when a run gives none.
DAEMON_DEFAULT_TIMEOUT = 30.0
#: Added to a run's own time for the queue, start-up and the answer's transfer.
MARGIN = 30.0
#: HTTP timeout of requests that run nothing (health, files, session management).
DEFAULT_TIMEOUT = 60.0
#: Languages with no compile step (a compiled one may also take its compile_timeout).
INTERPRETED = frozenset({"python", "python3", "bash", "nodejs", "perl", "ruby", "php", "lua"})

Data = Union[str, bytes]


class VersionWarning(UserWarning):
    """The daemon's version differs from this package's."""


def default_socket() -> str:
    """The daemon's default socket, as ``rsandbox serve`` picks it: /run/rsandbox/rsandbox.sock
    as root; else $XDG_RUNTIME_DIR/rsandbox.sock when that directory is ours, else
    /tmp/rsandbox-UID/rsandbox.sock."""
    uid = os.getuid()
    if uid == 0:
        return "/run/rsandbox/rsandbox.sock"
    d = os.environ.get("XDG_RUNTIME_DIR")
    if d:
        try:
            if os.stat(d).st_uid == uid:
                return os.path.join(d, "rsandbox.sock")
        except OSError:
            pass
    return f"/tmp/rsandbox-{uid}/rsandbox.sock"


@dataclass
class Target:
    """Where requests go: ``uds`` (a Unix socket path) or ``base_url`` (http[s]://...)."""

    base_url: str
    uds: Optional[str] = None


def resolve_target(target: Optional[str]) -> Target:
    """``target``, else $RSANDBOX_URL, else :func:`default_socket`: ``unix:PATH``, a path, or
    an ``http://`` / ``https://`` URL."""
    t = target if target is not None else os.environ.get("RSANDBOX_URL") or default_socket()
    t = os.fspath(t)
    if t.startswith(("http://", "https://")):
        return Target(base_url=t.rstrip("/"))
    if t.startswith("unix://"):
        t = t[len("unix://") :]
    elif t.startswith("unix:"):
        t = t[len("unix:") :]
    if not t or "://" in t:
        raise ValueError(f"rsandbox target {target!r}: give a Unix socket path, unix:PATH or an http:// URL")
    return Target(base_url="http://localhost", uds=t)


def resolve_token(token: Optional[str]) -> Optional[str]:
    return token if token is not None else os.environ.get("RSANDBOX_TOKEN") or None


def headers(token: Optional[str]) -> Dict[str, str]:
    h = {"User-Agent": f"rsandbox-python/{__version__}"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


def http_timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, 30.0))


@dataclass
class Call:
    """One request: method, path, body, the HTTP timeout it needs and how to read the answer.
    ``session``: a 404/410 means the session (or context) is gone."""

    method: str
    path: str
    parse: Callable[[httpx.Response], Any]
    json: Any = None
    content: Optional[bytes] = None
    params: Optional[Dict[str, str]] = None
    timeout: Optional[float] = None
    session: bool = False
    headers: Dict[str, str] = field(default_factory=dict)


def raise_for(resp: httpx.Response, session: bool) -> None:
    """Raises the rsandbox exception for an error answer; returns for a 2xx."""
    code = resp.status_code
    if code < 400:
        return
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text
    message, stage, reason = resp.reason_phrase or f"HTTP {code}", None, None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        message = str(err.get("message", message))
        stage, reason = err.get("stage"), err.get("reason")
    elif isinstance(body, dict) and "detail" in body:
        message = json.dumps(body["detail"]) if not isinstance(body["detail"], str) else body["detail"]
    elif isinstance(body, str) and body:
        message = body
    kw: Dict[str, Any] = {"status": code, "stage": stage, "body": body}
    if code in (401, 403):
        raise E.AuthError(message, **kw)
    if code == 503:
        try:
            retry = float(resp.headers.get("retry-after", "1"))
        except ValueError:
            retry = 1.0
        raise E.Busy(message, retry_after=retry, **kw)
    if code in (404, 410) and stage == "files":
        raise E.FileNotFound(message, **kw)
    if code in (404, 410) and (stage in ("session", "context") or (session and stage is None)):
        raise E.SessionGone(message, reason=reason, **kw)
    if code in (400, 405, 413, 422):
        raise E.InvalidRequest(message, **kw)
    if code >= 500:
        raise E.SandboxError(message, **kw)
    raise E.Error(message, **kw)


def transport_error(e: httpx.HTTPError, target: Target) -> E.Error:
    where = f"unix:{target.uds}" if target.uds else target.base_url
    if isinstance(e, httpx.TimeoutException):
        return E.ConnectionFailed(f"rsandbox daemon at {where}: timed out ({e!r})")
    return E.ConnectionFailed(f"rsandbox daemon at {where}: {e}")


def check_version(health: Mapping[str, Any]) -> None:
    v = health.get("version")
    if v is not None and v != __version__:
        warnings.warn(
            f"the rsandbox daemon is version {v}, this package is {__version__}: "
            "fields or endpoints may differ",
            VersionWarning,
            stacklevel=4,
        )


def _json(resp: httpx.Response) -> Any:
    return resp.json()


def health_call() -> Call:
    return Call("GET", "/v1/health", _json)


def _stdin(stdin: Optional[Data]) -> Dict[str, str]:
    if stdin is None:
        return {}
    if isinstance(stdin, bytes):
        return {"stdin_b64": base64.b64encode(stdin).decode()}
    return {"stdin": stdin}


def _files(files: Optional[Mapping[str, Data]]) -> List[Dict[str, Any]]:
    out = []
    for path, data in (files or {}).items():
        if isinstance(data, bytes):
            out.append({"path": path, "content_b64": base64.b64encode(data).decode()})
        else:
            out.append({"path": path, "content": data})
    return out


def limits(
    *,
    timeout: Optional[float] = None,
    compile_timeout: Optional[float] = None,
    cpu_time: Optional[float] = None,
    memory_mb: Optional[int] = None,
    cpus: Optional[float] = None,
    pids: Optional[int] = None,
    network: Optional[str] = None,
    allowed_hosts: Optional[Sequence[str]] = None,
    gpus: Union[int, Sequence[int], None] = None,
    gpu_share: Optional[bool] = None,
) -> Dict[str, Any]:
    """The ``limits`` object (only what was given). ``gpus``: a count, or a list of host
    indices (``gpu_devices``)."""
    lim: Dict[str, Any] = {}
    for k, v in (
        ("timeout", timeout),
        ("compile_timeout", compile_timeout),
        ("cpu_time", cpu_time),
        ("memory_mb", memory_mb),
        ("cpus", cpus),
        ("pids", pids),
        ("network", network),
        ("gpu_share", gpu_share),
    ):
        if v is not None:
            lim[k] = v
    if allowed_hosts is not None:
        lim["allowed_hosts"] = list(allowed_hosts)
    if isinstance(gpus, int):
        lim["gpus"] = gpus
    elif gpus is not None:
        lim["gpu_devices"] = list(gpus)
    return lim


def run_timeout(body: Mapping[str, Any], floor: float) -> float:
    """The HTTP timeout of a run: its own time (and compile time) plus :data:`MARGIN`, never
    less than ``floor``."""
    lim = body.get("limits") or {}
    t = float(lim.get("timeout") or DAEMON_DEFAULT_TIMEOUT)
    if "code" in body and body.get("language", "python") not in INTERPRETED:
        t += float(lim.get("compile_timeout") or DAEMON_DEFAULT_TIMEOUT)
    return max(t + MARGIN, floor)


def run_body(
    code: Optional[str] = None,
    *,
    argv: Optional[Sequence[str]] = None,
    language: str = "python",
    stdin: Optional[Data] = None,
    files: Optional[Mapping[str, Data]] = None,
    fetch: Optional[Iterable[str]] = None,
    env: Optional[Mapping[str, str]] = None,
    seccomp: Optional[str] = None,
    tty: Optional[bool] = None,
    **lim: Any,
) -> Dict[str, Any]:
    """The JSON of a ``/v1/run`` (or session run) request."""
    if (code is None) == (argv is None):
        raise ValueError("give exactly one of code and argv")
    body: Dict[str, Any] = {}
    if code is not None:
        body["code"] = code
        body["language"] = language
    else:
        body["argv"] = list(argv or [])
    body.update(_stdin(stdin))
    if files:
        body["files"] = _files(files)
    if fetch:
        body["fetch"] = list(fetch)
    if env:
        body["env"] = dict(env)
    if seccomp is not None:
        body["seccomp"] = seccomp
    if tty is not None:
        body["tty"] = tty
    lims = limits(**lim)
    if lims:
        body["limits"] = lims
    return body


def _report(resp: httpx.Response) -> Report:
    return Report.from_json(resp.json())


def run_call(body: Dict[str, Any], floor: float, session_id: Optional[str] = None) -> Call:
    path = "/v1/run" if session_id is None else f"/v1/sessions/{session_id}/run"
    return Call("POST", path, _report, json=body, timeout=run_timeout(body, floor), session=session_id is not None)


def session_body(
    *,
    env: Optional[Mapping[str, str]] = None,
    seccomp: Optional[str] = None,
    idle_timeout: Optional[float] = None,
    lifetime: Optional[float] = None,
    **lim: Any,
) -> Dict[str, Any]:
    """The JSON of ``POST /v1/sessions``: limits (memory_mb, cpus, pids, network,
    allowed_hosts, gpus, gpu_share), env, seccomp, idle_timeout, lifetime."""
    body: Dict[str, Any] = {}
    lims = limits(**lim)
    if lims:
        body["limits"] = lims
    if env:
        body["env"] = dict(env)
    for k, v in (("seccomp", seccomp), ("idle_timeout", idle_timeout), ("lifetime", lifetime)):
        if v is not None:
            body[k] = v
    return body


def create_session_call(body: Dict[str, Any]) -> Call:
    return Call("POST", "/v1/sessions", lambda r: r.json()["id"], json=body)


def session_info_call(sid: str) -> Call:
    return Call("GET", f"/v1/sessions/{sid}", lambda r: SessionInfo.from_json(r.json()), session=True)


def sessions_call() -> Call:
    return Call("GET", "/v1/sessions", lambda r: [SessionInfo.from_json(s) for s in r.json()["sessions"]])


def delete_session_call(sid: str) -> Call:
    return Call("DELETE", f"/v1/sessions/{sid}", lambda r: None, session=True)


def execute_body(code: str, context: Optional[str], timeout: Optional[float]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"code": code}
    if context is not None:
        body["context_id"] = context
    if timeout is not None:
        body["limits"] = {"timeout": timeout}
    return body


def execute_call(sid: str, body: Dict[str, Any], floor: float) -> Call:
    return Call(
        "POST",
        f"/v1/sessions/{sid}/execute",
        lambda r: Execution.from_json(r.json()),
        json=body,
        timeout=run_timeout(body, floor),
        session=True,
    )


def stream_end_error(d: Mapping[str, Any]) -> Optional[E.Error]:
    """The exception for a stream's ``end`` line that says the cell never ran."""
    if d.get("status") != "failed":
        return None
    message = str(d.get("message", "the cell did not run"))
    if "queue is full" in message or "shutting down" in message:
        return E.Busy(message, retry_after=1.0, status=503, stage="queue", body=dict(d))
    return E.SandboxError(message, status=500, body=dict(d))


def context_create_call(sid: str, ipython: Optional[bool]) -> Call:
    body: Dict[str, Any] = {"language": "python"}
    if ipython is not None:
        body["ipython"] = ipython
    return Call("POST", f"/v1/sessions/{sid}/contexts", lambda r: r.json()["id"], json=body, session=True)


def contexts_call(sid: str) -> Call:
    return Call(
        "GET",
        f"/v1/sessions/{sid}/contexts",
        lambda r: [ContextInfo.from_json(c) for c in r.json()["contexts"]],
        session=True,
    )


def context_op_call(sid: str, cid: str, op: str) -> Call:
    """``op``: ``delete``, ``restart`` or ``interrupt`` (the last two answer the status)."""
    if op == "delete":
        return Call("DELETE", f"/v1/sessions/{sid}/contexts/{quote(cid, safe='')}", lambda r: None, session=True)
    return Call(
        "POST",
        f"/v1/sessions/{sid}/contexts/{quote(cid, safe='')}/{op}",
        lambda r: r.json().get("status"),
        session=True,
        timeout=DEFAULT_TIMEOUT,
    )


def _file_path(sid: str, path: str) -> str:
    """The URL of a work-dir file (an absolute /home/sandbox/... path is made relative)."""
    if path.startswith("/home/sandbox/"):
        path = path[len("/home/sandbox/") :]
    # `.` and `..` are percent-encoded so that the daemon sees (and refuses) them: HTTP
    # clients resolve them away otherwise.
    segs = [quote(p, safe="") if p not in (".", "..") else p.replace(".", "%2E") for p in path.split("/")]
    return f"/v1/sessions/{sid}/files/{'/'.join(segs)}"


def file_read_call(sid: str, path: str) -> Call:
    return Call("GET", _file_path(sid, path), lambda r: r.content, session=True)


def file_write_call(sid: str, path: str, data: Data, mode: int) -> Call:
    content = data.encode() if isinstance(data, str) else bytes(data)
    return Call(
        "PUT",
        _file_path(sid, path),
        lambda r: None,
        content=content,
        params={"mode": format(mode, "o")},
        session=True,
        headers={"Content-Type": "application/octet-stream"},
    )


def file_list_call(sid: str, dir: str) -> Call:
    return Call(
        "GET",
        f"/v1/sessions/{sid}/files",
        lambda r: [FileInfo.from_json(e) for e in r.json()["entries"]],
        params={"dir": dir} if dir else None,
        session=True,
    )


def file_remove_call(sid: str, path: str) -> Call:
    return Call("DELETE", _file_path(sid, path), lambda r: None, session=True)


def map_item(item: Union[str, Mapping[str, Any]], lim: Mapping[str, Any]) -> Dict[str, Any]:
    """One program of ``map_run``: code, or a dict of ``run`` arguments; ``lim`` fills in."""
    if isinstance(item, str):
        return dict(lim, code=item)
    kw = dict(lim)
    kw.update(item)
    return kw


def backoff(attempt: int, retry_after: float) -> float:
    """Seconds before retry ``attempt`` (from 0) of a 503: the daemon's Retry-After, growing."""
    return min(max(retry_after, 0.05) * (1.5 ** min(attempt, 8)), 10.0)


def progress_bar(total: int, enabled: bool) -> Tuple[Any, Callable[[], None]]:
    """A tqdm bar (or nothing) and a function that advances it."""
    if not enabled:
        return None, lambda: None
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        warnings.warn("progress=True needs tqdm (pip install 'rsandbox[progress]')", stacklevel=3)
        return None, lambda: None
    bar = tqdm(total=total, unit="run")
    return bar, lambda: bar.update(1)
