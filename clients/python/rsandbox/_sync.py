"""The blocking client: :class:`Client`, its :class:`Session` s and their :class:`Files`."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import httpx

from . import _core as C
from . import _errors as E
from ._types import ContextInfo, Event, Execution, FileInfo, Report, SessionInfo


class Client:
    """A connection to an rsandbox daemon (``rsandbox serve``).

    Args:
        target: a Unix socket path (or ``unix:PATH``) or an ``http://`` URL; default
            ``$RSANDBOX_URL``, else the daemon's default socket.
        token: the bearer token for TCP; default ``$RSANDBOX_TOKEN``.
        timeout: the HTTP timeout in seconds of requests that run nothing; a run's is its own
            timeout plus a margin, never less than this.

    Thread-safe; use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, target: Optional[str] = None, token: Optional[str] = None, timeout: float = C.DEFAULT_TIMEOUT) -> None:
        self.target = C.resolve_target(target)
        self.timeout = float(timeout)
        transport = httpx.HTTPTransport(uds=self.target.uds) if self.target.uds else None
        self._http = httpx.Client(
            base_url=self.target.base_url,
            transport=transport,
            headers=C.headers(C.resolve_token(token)),
            timeout=C.http_timeout(self.timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self._checked = False
        self._lock = threading.Lock()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections (sessions stay alive in the daemon)."""
        self._http.close()

    def _send(self, call: C.Call, stream: bool = False) -> httpx.Response:
        req = self._http.build_request(
            call.method,
            call.path,
            json=call.json,
            content=call.content,
            params=call.params,
            headers=call.headers or None,
            timeout=C.http_timeout(call.timeout or self.timeout),
        )
        try:
            resp = self._http.send(req, stream=stream)
        except httpx.HTTPError as e:
            raise C.transport_error(e, self.target) from e
        if resp.status_code >= 400:
            if stream:
                resp.read()
                resp.close()
            C.raise_for(resp, call.session)
        return resp

    def _version_check(self) -> None:
        with self._lock:
            if self._checked:
                return
            self._checked = True
        try:
            C.check_version(self._send(C.health_call()).json())
        except E.Error:
            pass

    def _do(self, call: C.Call) -> Any:
        if not self._checked:
            self._version_check()
        return call.parse(self._send(call))

    def health(self) -> Dict[str, Any]:
        """``GET /v1/health``: status, version, slots, running, queued, languages, maxima..."""
        return self._do(C.health_call())

    def run(
        self,
        code: Optional[str] = None,
        *,
        argv: Optional[Sequence[str]] = None,
        language: str = "python",
        stdin: Optional[C.Data] = None,
        files: Optional[Mapping[str, C.Data]] = None,
        fetch: Optional[Iterable[str]] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        memory_mb: Optional[int] = None,
        cpus: Optional[float] = None,
        pids: Optional[int] = None,
        network: Optional[str] = None,
        allowed_hosts: Optional[Sequence[str]] = None,
        gpus: Union[int, Sequence[int], None] = None,
        seccomp: Optional[str] = None,
        **more: Any,
    ) -> Report:
        """Runs ``code`` (in ``language``) or ``argv`` in a fresh sandbox and returns its report.

        ``stdin``: text or bytes. ``files``: work-dir path -> text or bytes, written before the
        run. ``fetch``: work-dir files to return in ``Report.files``. ``network``: ``none``,
        ``loopback``, ``allowlist`` (with ``allowed_hosts``) or ``all``. ``gpus``: a count or a
        list of host indices. Also ``compile_timeout``, ``cpu_time``, ``gpu_share``, ``tty``.
        A failing program is a Report (see ``status``), not an exception.
        """
        body = C.run_body(
            code, argv=argv, language=language, stdin=stdin, files=files, fetch=fetch, env=env,
            seccomp=seccomp, timeout=timeout, memory_mb=memory_mb, cpus=cpus, pids=pids,
            network=network, allowed_hosts=allowed_hosts, gpus=gpus, **more,
        )  # fmt: skip
        return self._do(C.run_call(body, self.timeout))

    def map_run(
        self,
        codes: Iterable[Union[str, Mapping[str, Any]]],
        concurrency: Optional[int] = None,
        *,
        progress: bool = False,
        **limits: Any,
    ) -> List[Report]:
        """Runs many programs, keeping the daemon's slots busy, and returns their reports in
        order.

        Each item is code (with ``limits``, any :meth:`run` argument) or a dict of :meth:`run`
        arguments. ``concurrency``: requests in flight (default: twice the daemon's slots).
        503s are retried with backoff; any other error is raised. ``progress``: a tqdm bar.
        """
        items = [C.map_item(c, limits) for c in codes]
        if concurrency is None:
            concurrency = 2 * int(self.health().get("slots") or os.cpu_count() or 1)
        bar, tick = C.progress_bar(len(items), progress)

        def one(kw: Dict[str, Any]) -> Report:
            attempt = 0
            while True:
                try:
                    r = self.run(**kw)
                    tick()
                    return r
                except E.Busy as e:
                    time.sleep(C.backoff(attempt, e.retry_after))
                    attempt += 1

        try:
            with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
                return list(pool.map(one, items))
        finally:
            if bar is not None:
                bar.close()

    def session(
        self,
        *,
        memory_mb: Optional[int] = None,
        cpus: Optional[float] = None,
        pids: Optional[int] = None,
        network: Optional[str] = None,
        allowed_hosts: Optional[Sequence[str]] = None,
        gpus: Union[int, Sequence[int], None] = None,
        env: Optional[Mapping[str, str]] = None,
        seccomp: Optional[str] = None,
        idle_timeout: Optional[float] = None,
        lifetime: Optional[float] = None,
        **more: Any,
    ) -> "Session":
        """Creates a session: one sandbox that lives across many runs, whose limits cover
        everything in it. Use it as a context manager (``with client.session() as s:``) or call
        :meth:`Session.close`."""
        body = C.session_body(
            memory_mb=memory_mb, cpus=cpus, pids=pids, network=network, allowed_hosts=allowed_hosts,
            gpus=gpus, env=env, seccomp=seccomp, idle_timeout=idle_timeout, lifetime=lifetime, **more,
        )  # fmt: skip
        return Session(self, self._do(C.create_session_call(body)))

    def sessions(self) -> List[SessionInfo]:
        """The daemon's live sessions."""
        return self._do(C.sessions_call())

    def session_from_id(self, id: str) -> "Session":
        """Reconnects to a live session; :class:`SessionGone` when it is not live."""
        self._do(C.session_info_call(id))
        return Session(self, id)


class Files:
    """The work dir of a session (``/home/sandbox``); paths are relative to it."""

    def __init__(self, session: "Session") -> None:
        self._s = session

    def read(self, path: str) -> bytes:
        """A file's bytes (:class:`FileNotFound` when it does not exist)."""
        return self._s._client._do(C.file_read_call(self._s.id, path))

    def write(self, path: str, data: C.Data, mode: int = 0o644) -> None:
        """Writes a file (text is UTF-8), creating its parent directories."""
        self._s._client._do(C.file_write_call(self._s.id, path, data, mode))

    def list(self, dir: str = "") -> List[FileInfo]:
        """The entries of a directory (default: the work dir), sorted by name."""
        return self._s._client._do(C.file_list_call(self._s.id, dir))

    def remove(self, path: str) -> None:
        """Removes a file, a symlink (not its target) or an empty directory."""
        self._s._client._do(C.file_remove_call(self._s.id, path))

    def upload(self, host_path: Union[str, "os.PathLike[str]"], path: Optional[str] = None) -> None:
        """Copies a host file into the work dir (default: under its own name), with its mode."""
        host_path = os.fspath(host_path)
        with open(host_path, "rb") as f:
            data = f.read()
        mode = os.stat(host_path).st_mode & 0o7777
        self.write(path if path is not None else os.path.basename(host_path), data, mode)

    def download(self, path: str, host_path: Union[str, "os.PathLike[str]"]) -> None:
        """Copies a work-dir file to the host."""
        data = self.read(path)
        with open(os.fspath(host_path), "wb") as f:
            f.write(data)


class Contexts:
    """The stateful Python contexts of a session (interpreters whose variables persist)."""

    def __init__(self, session: "Session") -> None:
        self._s = session

    def create(self, *, ipython: Optional[bool] = None) -> str:
        """Starts a context and returns its id (``ipython=False``: the standard-library
        path even where IPython is importable)."""
        return self._s._client._do(C.context_create_call(self._s.id, ipython))

    def list(self) -> List[ContextInfo]:
        return self._s._client._do(C.contexts_call(self._s.id))

    def delete(self, context: str) -> None:
        """Ends a context and every process it started."""
        self._s._client._do(C.context_op_call(self._s.id, context, "delete"))

    def restart(self, context: str) -> None:
        """Starts the context's interpreter afresh (its variables are lost)."""
        self._s._client._do(C.context_op_call(self._s.id, context, "restart"))

    def interrupt(self, context: str) -> str:
        """Interrupts its running cell; ``interrupted``, or ``idle`` when none ran."""
        return self._s._client._do(C.context_op_call(self._s.id, context, "interrupt"))

    def __iter__(self) -> Iterator[ContextInfo]:
        return iter(self.list())


class Session:
    """A live session of the daemon. ``files`` is its work dir, ``contexts`` its stateful
    interpreters. A context manager that ends the session."""

    def __init__(self, client: Client, id: str) -> None:
        self._client = client
        self.id = id
        self.files = Files(self)
        self.contexts = Contexts(self)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session({self.id!r})"

    def close(self) -> None:
        """Ends the session (everything in it is destroyed); one already ended is fine."""
        try:
            self._client._do(C.delete_session_call(self.id))
        except E.SessionGone:
            pass

    def info(self) -> SessionInfo:
        """The session's state, limits, times and usage."""
        return self._client._do(C.session_info_call(self.id))

    def usage(self) -> Dict[str, Any]:
        """CPU ms, memory (current and peak) and pids of everything in the session so far."""
        return self.info().usage or {}

    def run(
        self,
        code: Optional[str] = None,
        *,
        argv: Optional[Sequence[str]] = None,
        language: str = "python",
        stdin: Optional[C.Data] = None,
        files: Optional[Mapping[str, C.Data]] = None,
        fetch: Optional[Iterable[str]] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        **more: Any,
    ) -> Report:
        """A run in the session (as :meth:`Client.run`; the limits are the session's, a run
        takes only ``timeout`` and ``compile_timeout``). Files and background processes
        persist; Python variables do not (see :meth:`execute`)."""
        body = C.run_body(
            code, argv=argv, language=language, stdin=stdin, files=files, fetch=fetch, env=env,
            timeout=timeout, **more,
        )  # fmt: skip
        return self._client._do(C.run_call(body, self._client.timeout, self.id))

    def execute(self, code: str, context: Optional[str] = None, timeout: Optional[float] = None) -> Execution:
        """Runs a cell in a stateful context (default: the session's own, made on first use):
        variables persist between cells; the last expression's value is ``text`` /
        ``results``; an exception is ``status == "error"`` with ``error``."""
        body = C.execute_body(code, context, timeout)
        return self._client._do(C.execute_call(self.id, body, self._client.timeout))

    def execute_stream(self, code: str, context: Optional[str] = None, timeout: Optional[float] = None) -> Iterator[Event]:
        """:meth:`execute`, yielding each :class:`Event` as it happens (output, results,
        errors) and last an ``end`` event with the whole :class:`Execution`. Leaving the loop
        early closes the stream, which interrupts the cell."""
        c = self._client
        if not c._checked:
            c._version_check()
        call = C.execute_call(self.id, C.execute_body(code, context, timeout), c.timeout)
        call.headers = {"Accept": "application/x-ndjson"}
        resp = c._send(call, stream=True)
        try:
            for line in resp.iter_lines():
                if not line.strip():
                    continue
                d = json.loads(line)
                if d.get("type") == "keepalive":
                    continue
                if d.get("type") == "end":
                    err = C.stream_end_error(d)
                    if err is not None:
                        raise err
                yield Event.from_json(d)
        except httpx.HTTPError as e:
            raise C.transport_error(e, c.target) from e
        finally:
            resp.close()
