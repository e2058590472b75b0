"""The answers of the daemon as dataclasses: a run's :class:`Report`, a cell's
:class:`Execution` and its streamed :class:`Event` s, a work-dir :class:`FileInfo`, a
:class:`ContextInfo` and a :class:`SessionInfo`.

Every ``from_json`` keeps the fields it knows, ignores the ones it does not (a newer daemon
may add some) and leaves missing ones None (an older daemon may lack some).
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Type, TypeVar

T = TypeVar("T")


def _known(cls: Type[Any], d: Mapping[str, Any], skip: tuple = ()) -> Dict[str, Any]:
    """The items of ``d`` that are init fields of the dataclass ``cls`` (less ``skip``)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return {k: v for k, v in d.items() if k in names and k not in skip}


@dataclass
class Report:
    """The report of one run (the daemon's ``/v1/run`` answer), every field by its schema name.

    ``status`` is ``ok``, ``exit``, ``signal``, ``timeout``, ``cpu_time``, ``memory``, ``pids``,
    ``output_limit`` or ``seccomp``. Output that is not UTF-8 comes in ``stdout_b64`` /
    ``stderr_b64`` with ``stdout`` / ``stderr`` None; :attr:`stdout_data` gives bytes either way.
    ``files`` are the fetched work-dir files, decoded. ``node_id`` is set by a pool of daemons
    (None from one daemon).
    """

    status: Optional[str] = None
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    signal_name: Optional[str] = None
    stdout: Optional[str] = None
    stderr: Optional[str] = None
    stdout_b64: Optional[str] = None
    stderr_b64: Optional[str] = None
    stdout_bytes: Optional[int] = None
    stderr_bytes: Optional[int] = None
    stdout_truncated: Optional[bool] = None
    stderr_truncated: Optional[bool] = None
    limits_hit: Optional[List[str]] = None
    wall_ms: Optional[float] = None
    cpu_ms: Optional[float] = None
    user_ms: Optional[float] = None
    sys_ms: Optional[float] = None
    peak_memory_bytes: Optional[int] = None
    oom_kills: Optional[int] = None
    seccomp_violation: Optional[Dict[str, Any]] = None
    enforcement: Optional[Dict[str, str]] = None
    queued_ms: Optional[float] = None
    network: Optional[Dict[str, int]] = None
    preloaded: Optional[bool] = None
    version: Optional[int] = None
    stage: Optional[str] = None
    compile: Optional["Report"] = None
    files: Dict[str, bytes] = field(default_factory=dict)
    files_refused: Dict[str, str] = field(default_factory=dict)
    node_id: Optional[str] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Report":
        """A report from the daemon's JSON (unknown fields ignored, missing ones None)."""
        kw = _known(cls, d, skip=("compile", "files", "files_refused"))
        if isinstance(d.get("compile"), Mapping):
            kw["compile"] = cls.from_json(d["compile"])
        files = d.get("files") or {}
        kw["files"] = {k: base64.b64decode(v) for k, v in files.items()}
        kw["files_refused"] = dict(d.get("files_refused") or {})
        return cls(**kw)

    @property
    def ok(self) -> bool:
        """Whether the program exited with status 0 (``status == "ok"``)."""
        return self.status == "ok"

    @property
    def stdout_data(self) -> bytes:
        """The captured stdout as bytes, whether it came as text or base64."""
        return _data(self.stdout, self.stdout_b64)

    @property
    def stderr_data(self) -> bytes:
        """The captured stderr as bytes, whether it came as text or base64."""
        return _data(self.stderr, self.stderr_b64)


def _data(text: Optional[str], b64: Optional[str]) -> bytes:
    if text is not None:
        return text.encode()
    if b64 is not None:
        return base64.b64decode(b64)
    return b""


@dataclass
class CellResult:
    """One result of a cell: a MIME bundle (``text/plain``, ``image/png`` as base64...).
    ``main``: the value of the cell's last expression (else display data)."""

    data: Dict[str, Any] = field(default_factory=dict)
    main: bool = False

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "CellResult":
        return cls(data=dict(d.get("data") or {}), main=bool(d.get("main", False)))


@dataclass
class CellError:
    """A cell's exception: its class name, its ``str``, and the traceback as Python prints it."""

    name: str = ""
    value: str = ""
    traceback: str = ""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "CellError":
        return cls(**_known(cls, d))


@dataclass
class Execution:
    """The answer of one cell of a stateful context.

    ``status`` is ``ok``, ``error`` (the cell raised; see ``error``), ``timeout`` (interrupted
    at its timeout; the state survives), ``interrupted`` or ``died`` (the interpreter ended; the
    next cell starts afresh). ``text`` is the main result's ``text/plain``.
    """

    status: Optional[str] = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: Optional[bool] = None
    stderr_truncated: Optional[bool] = None
    text: Optional[str] = None
    results: List[CellResult] = field(default_factory=list)
    error: Optional[CellError] = None
    execution_count: Optional[int] = None
    context_id: Optional[str] = None
    context_restarted: Optional[bool] = None
    wall_ms: Optional[float] = None
    node_id: Optional[str] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Execution":
        """An execution from the daemon's JSON (or a stream's ``end`` line)."""
        kw = _known(cls, d, skip=("results", "error"))
        kw["stdout"] = kw.get("stdout") or ""
        kw["stderr"] = kw.get("stderr") or ""
        kw["results"] = [CellResult.from_json(r) for r in d.get("results") or []]
        if isinstance(d.get("error"), Mapping):
            kw["error"] = CellError.from_json(d["error"])
        return cls(**kw)


@dataclass
class Event:
    """One event of a streamed cell, as it happened.

    ``type`` is ``stdout`` or ``stderr`` (``text``; output that is not UTF-8 has ``text``
    decoded with replacement and the exact bytes in ``raw``), ``result`` (``result``), ``error``
    (``error``) or ``end`` (``execution``: the whole answer, always the last event).
    """

    type: str
    text: Optional[str] = None
    raw: Optional[bytes] = None
    result: Optional[CellResult] = None
    error: Optional[CellError] = None
    execution: Optional[Execution] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Event":
        kind = str(d.get("type"))
        if kind in ("stdout", "stderr"):
            if "b64" in d:
                raw = base64.b64decode(d["b64"])
                return cls(kind, text=raw.decode(errors="replace"), raw=raw)
            text = d.get("text") or ""
            return cls(kind, text=text, raw=text.encode())
        if kind == "result":
            return cls(kind, result=CellResult.from_json(d))
        if kind == "error":
            return cls(kind, error=CellError.from_json(d))
        if kind == "end":
            return cls(kind, execution=Execution.from_json(d))
        return cls(kind)


@dataclass
class FileInfo:
    """An entry of a work-dir listing. ``type``: ``file``, ``dir``, ``symlink`` or ``other``;
    ``mode``: the permission bits (0o644...)."""

    name: str = ""
    size: int = 0
    mode: int = 0
    type: str = "file"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "FileInfo":
        return cls(**_known(cls, d))


@dataclass
class ContextInfo:
    """A stateful context of a session."""

    id: str = ""
    language: str = "python"
    busy: Optional[bool] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ContextInfo":
        return cls(**_known(cls, d))


@dataclass
class SessionInfo:
    """What the daemon says of a session (``usage`` only from a session's own GET)."""

    id: str = ""
    api: Optional[str] = None
    state: Optional[str] = None
    created_at: Optional[float] = None
    last_used_at: Optional[float] = None
    expires_at: Optional[float] = None
    idle_timeout: Optional[float] = None
    lifetime: Optional[float] = None
    limits: Optional[Dict[str, Any]] = None
    seccomp: Optional[str] = None
    env: Optional[Dict[str, str]] = None
    gpus: Optional[List[int]] = None
    runs: Optional[int] = None
    usage: Optional[Dict[str, Any]] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "SessionInfo":
        return cls(**_known(cls, d))
