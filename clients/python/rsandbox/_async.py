"""The asyncio client: :class:`AsyncClient`, its :class:`AsyncSession` s and their
:class:`AsyncFiles`: the blocking client's methods, awaited."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, AsyncIterator, Dict, Generator, Iterable, List, Mapping, Optional, Sequence, Union

import httpx

from . import _core as C
from . import _errors as E
from ._types import ContextInfo, Event, Execution, FileInfo, Report, SessionInfo


class AsyncClient:
    """A connection to an rsandbox daemon for asyncio; arguments as :class:`rsandbox.Client`.

    Use it as an async context manager (``async with AsyncClient() as c:``), or await
    :meth:`close`.
    """

    def __init__(self, target: Optional[str] = None, token: Optional[str] = None, timeout: float = C.DEFAULT_TIMEOUT) -> None:
        self.target = C.resolve_target(target)
        self.timeout = float(timeout)
        transport = httpx.AsyncHTTPTransport(uds=self.target.uds) if self.target.uds else None
        self._http = httpx.AsyncClient(
            base_url=self.target.base_url,
            transport=transport,
            headers=C.headers(C.resolve_token(token)),
            timeout=C.http_timeout(self.timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self._checked = False

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connections (sessions stay alive in the daemon)."""
        await self._http.aclose()

    async def _send(self, call: C.Call, stream: bool = False) -> httpx.Response:
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
            resp = await self._http.send(req, stream=stream)
        except httpx.HTTPError as e:
            raise C.transport_error(e, self.target) from e
        if resp.status_code >= 400:
            if stream:
                await resp.aread()
                await resp.aclose()
            C.raise_for(resp, call.session)
        return resp

    async def _version_check(self) -> None:
        if self._checked:
            return
        self._checked = True
        try:
            C.check_version((await self._send(C.health_call())).json())
        except E.Error:
            pass

    async def _do(self, call: C.Call) -> Any:
        if not self._checked:
            await self._version_check()
        return call.parse(await self._send(call))

    async def health(self) -> Dict[str, Any]:
        """``GET /v1/health``."""
        return await self._do(C.health_call())

    async def run(
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
        """As :meth:`rsandbox.Client.run`."""
        body = C.run_body(
            code, argv=argv, language=language, stdin=stdin, files=files, fetch=fetch, env=env,
            seccomp=seccomp, timeout=timeout, memory_mb=memory_mb, cpus=cpus, pids=pids,
            network=network, allowed_hosts=allowed_hosts, gpus=gpus, **more,
        )  # fmt: skip
        return await self._do(C.run_call(body, self.timeout))

    async def map_run(
        self,
        codes: Iterable[Union[str, Mapping[str, Any]]],
        concurrency: Optional[int] = None,
        *,
        progress: bool = False,
        **limits: Any,
    ) -> List[Report]:
        """As :meth:`rsandbox.Client.map_run`: reports in order, 503s retried with backoff."""
        items = [C.map_item(c, limits) for c in codes]
        if concurrency is None:
            concurrency = 2 * int((await self.health()).get("slots") or os.cpu_count() or 1)
        gate = asyncio.Semaphore(max(1, concurrency))
        bar, tick = C.progress_bar(len(items), progress)

        async def one(kw: Dict[str, Any]) -> Report:
            async with gate:
                attempt = 0
                while True:
                    try:
                        r = await self.run(**kw)
                        tick()
                        return r
                    except E.Busy as e:
                        await asyncio.sleep(C.backoff(attempt, e.retry_after))
                        attempt += 1

        try:
            return list(await asyncio.gather(*(one(kw) for kw in items)))
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
    ) -> "AsyncSession":
        """A session, created when entered (``async with client.session() as s:``) or awaited
        (``s = await client.session()``, then ``await s.close()``)."""
        body = C.session_body(
            memory_mb=memory_mb, cpus=cpus, pids=pids, network=network, allowed_hosts=allowed_hosts,
            gpus=gpus, env=env, seccomp=seccomp, idle_timeout=idle_timeout, lifetime=lifetime, **more,
        )  # fmt: skip
        return AsyncSession(self, None, body)

    async def sessions(self) -> List[SessionInfo]:
        """The daemon's live sessions."""
        return await self._do(C.sessions_call())

    async def session_from_id(self, id: str) -> "AsyncSession":
        """Reconnects to a live session; :class:`SessionGone` when it is not live."""
        await self._do(C.session_info_call(id))
        return AsyncSession(self, id)


class AsyncFiles:
    """The work dir of a session; as :class:`rsandbox.Files`, awaited."""

    def __init__(self, session: "AsyncSession") -> None:
        self._s = session

    async def read(self, path: str) -> bytes:
        return await self._s._client._do(C.file_read_call(self._s._sid(), path))

    async def write(self, path: str, data: C.Data, mode: int = 0o644) -> None:
        await self._s._client._do(C.file_write_call(self._s._sid(), path, data, mode))

    async def list(self, dir: str = "") -> List[FileInfo]:
        return await self._s._client._do(C.file_list_call(self._s._sid(), dir))

    async def remove(self, path: str) -> None:
        await self._s._client._do(C.file_remove_call(self._s._sid(), path))

    async def upload(self, host_path: Union[str, "os.PathLike[str]"], path: Optional[str] = None) -> None:
        host_path = os.fspath(host_path)
        with open(host_path, "rb") as f:
            data = f.read()
        mode = os.stat(host_path).st_mode & 0o7777
        await self.write(path if path is not None else os.path.basename(host_path), data, mode)

    async def download(self, path: str, host_path: Union[str, "os.PathLike[str]"]) -> None:
        data = await self.read(path)
        with open(os.fspath(host_path), "wb") as f:
            f.write(data)


class AsyncContexts:
    """The stateful contexts of a session; as :class:`rsandbox.Contexts`, awaited."""

    def __init__(self, session: "AsyncSession") -> None:
        self._s = session

    async def create(self, *, ipython: Optional[bool] = None) -> str:
        return await self._s._client._do(C.context_create_call(self._s._sid(), ipython))

    async def list(self) -> List[ContextInfo]:
        return await self._s._client._do(C.contexts_call(self._s._sid()))

    async def delete(self, context: str) -> None:
        await self._s._client._do(C.context_op_call(self._s._sid(), context, "delete"))

    async def restart(self, context: str) -> None:
        await self._s._client._do(C.context_op_call(self._s._sid(), context, "restart"))

    async def interrupt(self, context: str) -> str:
        return await self._s._client._do(C.context_op_call(self._s._sid(), context, "interrupt"))


class AsyncSession:
    """A session of the daemon for asyncio; as :class:`rsandbox.Session`, awaited."""

    def __init__(self, client: AsyncClient, id: Optional[str], body: Optional[Dict[str, Any]] = None) -> None:
        self._client = client
        self._body = body
        self.id: Optional[str] = id
        self.files = AsyncFiles(self)
        self.contexts = AsyncContexts(self)

    def _sid(self) -> str:
        if self.id is None:
            raise RuntimeError("the session is not created yet: use `async with` or `await` it")
        return self.id

    async def _create(self) -> "AsyncSession":
        if self.id is None:
            self.id = await self._client._do(C.create_session_call(self._body or {}))
        return self

    def __await__(self) -> Generator[Any, None, "AsyncSession"]:
        return self._create().__await__()

    async def __aenter__(self) -> "AsyncSession":
        return await self._create()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncSession({self.id!r})"

    async def close(self) -> None:
        """Ends the session; one already ended (or never created) is fine."""
        if self.id is None:
            return
        try:
            await self._client._do(C.delete_session_call(self.id))
        except E.SessionGone:
            pass

    async def info(self) -> SessionInfo:
        return await self._client._do(C.session_info_call(self._sid()))

    async def usage(self) -> Dict[str, Any]:
        return (await self.info()).usage or {}

    async def run(
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
        """As :meth:`rsandbox.Session.run`."""
        body = C.run_body(
            code, argv=argv, language=language, stdin=stdin, files=files, fetch=fetch, env=env,
            timeout=timeout, **more,
        )  # fmt: skip
        return await self._client._do(C.run_call(body, self._client.timeout, self._sid()))

    async def execute(self, code: str, context: Optional[str] = None, timeout: Optional[float] = None) -> Execution:
        """As :meth:`rsandbox.Session.execute`."""
        body = C.execute_body(code, context, timeout)
        return await self._client._do(C.execute_call(self._sid(), body, self._client.timeout))

    async def execute_stream(
        self, code: str, context: Optional[str] = None, timeout: Optional[float] = None
    ) -> AsyncIterator[Event]:
        """As :meth:`rsandbox.Session.execute_stream`, an async iterator."""
        c = self._client
        if not c._checked:
            await c._version_check()
        call = C.execute_call(self._sid(), C.execute_body(code, context, timeout), c.timeout)
        call.headers = {"Accept": "application/x-ndjson"}
        resp = await c._send(call, stream=True)
        try:
            async for line in resp.aiter_lines():
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
            await resp.aclose()
