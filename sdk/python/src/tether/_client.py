"""`AsyncClient`: the whole API on asyncio. `Client` (`_sync.py`) offers
the same names and semantics to blocking code.

One client holds one WebSocket (`_connection.Connection`, opened by the
first call and reconnected by itself) for every command it starts or
attaches, and one HTTP connection pool (httpx) for files and code runs.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import shlex
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, List, Literal, Optional, Union, overload

import httpx

from . import _proto as p
from ._config import Options, check_transport, resolve_token, resolve_url, ssl_context
from ._connection import Connection, Mode, client_name
from ._errors import ConnectionLost, TetherError, from_code
from ._files import AsyncFiles
from ._handle import AsyncCommandHandle, OutputCallback, StdinSource, signal_name
from ._popen import AsyncPopen, popen
from ._shell import AsyncPtyHandle, AsyncShell
from ._types import ExecResult, OutputEvent

Command = Union[str, Sequence[str]]
"""A shell command line (run by ``bash -c``), or an argv run with no shell."""

# Initial stdin up to this size travels in the start frame itself.
_INLINE_STDIN = 256 << 10


def _ms(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else max(0, int(seconds * 1000))


def _lifetime_ms(seconds: Optional[float]) -> Optional[int]:
    """A lifetime option: seconds, or a negative number (-1) for never."""
    if seconds is None:
        return None
    return -1 if seconds < 0 else int(seconds * 1000)


class AsyncClient:
    """A client of one tether daemon, for asyncio code.

    ::

        async with tether.AsyncClient("http://127.0.0.1:7070", token=TOKEN) as c:
            r = await c.exec("uname -a")
            print(r.exit_code, r.stdout_text)

    ``url`` and ``token`` default to ``TETHER_URL`` / ``TETHER_TOKEN`` and
    the token file ``tether serve`` writes, as the ``tether`` CLI finds
    them. Nothing is connected until the first call. ``async with`` (or
    :meth:`aclose`) closes the WebSocket and the HTTP pool and ends every
    task the client started.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        token: Optional[str] = None,
        token_file: Union[str, Path, None] = None,
        options: Optional[Options] = None,
    ) -> None:
        self.url = resolve_url(url)
        self.options = options or Options()
        check_transport(self.url, self.options)
        self._token = resolve_token(token, token_file)
        self.name = client_name()
        self._conn = Connection(self.url, self._token, self.options, self.name)
        self._keys = itertools.count(1)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=httpx.Timeout(self.options.http_timeout, connect=self.options.connect_timeout),
            verify=ssl_context(self.options) if self.url.startswith("https:") else True,
        )
        self.files = AsyncFiles(self._http)
        """File operations: :class:`~tether.AsyncFiles`."""
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"<AsyncClient {self.url}>"

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> Optional[asyncio.Task[Any]]:
        """Runs ``coro`` in a task the client owns (cancelled by :meth:`aclose`;
        after it, not started at all)."""
        if self._closed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    @property
    def reconnects(self) -> int:
        """How many times the WebSocket was lost and remade."""
        return self._conn.reconnects

    @property
    def limits(self) -> p.Limits:
        """The limits the daemon announced (after the first call)."""
        return self._conn.limits

    async def aclose(self) -> None:
        """Closes the connection and the HTTP pool; commands keep running on
        the daemon (subject to their idle timeout and kill-on-disconnect)."""
        self._closed = True
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._conn.close()
        await self._http.aclose()

    async def close(self) -> None:
        """The same as :meth:`aclose`."""
        await self.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, t: Optional[type[BaseException]], e: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------ running

    def _spec(
        self,
        command: Command,
        *,
        cwd: Optional[str],
        env: Optional[Mapping[str, str]],
        timeout: Optional[float],
        shell: Optional[str],
        max_output_bytes: Optional[int],
        idle_timeout: Optional[float] = None,
        ttl: Optional[float] = None,
        kill_on_disconnect: bool = False,
        name: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        pty: Optional[p.PtySpec] = None,
    ) -> p.StartSpec:
        spec = p.StartSpec(
            cwd=None if cwd is None else str(cwd),
            env=dict(env or {}),
            timeout_ms=_ms(timeout),
            idle_timeout_ms=_lifetime_ms(idle_timeout),
            ttl_ms=_lifetime_ms(ttl),
            kill_on_disconnect=kill_on_disconnect,
            name=name,
            labels=dict(labels or {}),
            pty=pty,
            request_key=f"k-{self.name}-{next(self._keys)}",
        )
        if isinstance(command, str):
            spec.shell = command
            spec.shell_program = shell
        else:
            spec.argv = [str(a) for a in command]
            if not spec.argv:
                raise ValueError("an empty argv: nothing to run")
        if max_output_bytes is not None:
            spec.max_output_bytes = max_output_bytes
            spec.output_limit = "truncate"
        return spec

    async def _start(
        self,
        spec: p.StartSpec,
        *,
        stdin: Optional[StdinSource],
        pace: bool = True,
        capture: Optional[int] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        remove_on_exit: bool = False,
        keep_stdin_open: bool = False,
        handle_type: type[AsyncCommandHandle] = AsyncCommandHandle,
    ) -> AsyncCommandHandle:
        """Starts ``spec`` attached. ``stdin`` is all of stdin (then end of
        file): small bytes travel in the start frame, anything else is
        streamed; without it stdin is empty, or left open for the caller
        with ``keep_stdin_open``."""
        inline = stdin is None or (isinstance(stdin, (str, bytes)) and len(stdin) <= _INLINE_STDIN)
        if inline:
            data = stdin.encode() if isinstance(stdin, str) else stdin
            spec.stdin = bytes(data) if data else None  # type: ignore[arg-type]
            spec.close_stdin = spec.pty is None and not (stdin is None and keep_stdin_open)
        window = self.options.window_bytes
        spec.pace = pace
        spec.window_bytes = window
        spec.client = self.name if pace else None
        h = handle_type(
            self,
            capture=capture,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            window=window,
            remove_on_exit=remove_on_exit,
            ring=spec.ring_bytes,
        )
        mode = Mode(
            pace=pace,
            terminal=spec.pty is not None,
            size=p.TermSize(spec.pty.rows, spec.pty.cols) if spec.pty else None,
            window=window,
        )
        reply = await self._conn.request(p.Start(spec=spec), retry=True, sink=h, mode=mode)
        assert isinstance(reply, p.Started)
        h._started(reply.command, reply.pid)
        if not inline and stdin is not None:
            h._feed(stdin)
        return h

    async def exec(
        self,
        command: Command,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[StdinSource] = None,
        timeout: Optional[float] = None,
        max_output_bytes: Optional[int] = None,
        shell: Optional[str] = None,
        check: bool = False,
        name: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> ExecResult:
        """Runs a command to its end and returns its captured output.

        A string runs through the shell (``shell``, default ``/bin/bash``);
        a list runs as argv with no shell. ``stdin`` takes text, bytes, a
        file object or an iterable of chunks (then end of file); without it
        stdin is empty. ``timeout`` (seconds) ends it with SIGTERM then
        SIGKILL (``result.reason == "timed_out"``). ``max_output_bytes`` keeps
        at most that many bytes of output (both streams); the command runs on
        and ``result.truncated`` is set. A non-zero exit is returned, not
        raised, unless ``check=True``. No byte is lost: the command is paced
        to this client, across reconnects too.

        >>> r = await client.exec(["ls", "-l"], cwd="/srv")  # doctest: +SKIP
        >>> r = await client.exec("grep -c x", stdin=b"x\\ny\\nx\\n")  # doctest: +SKIP
        """
        spec = self._spec(
            command,
            cwd=cwd,
            env=env,
            timeout=timeout,
            shell=shell,
            max_output_bytes=max_output_bytes,
            name=name,
            labels=labels,
        )
        h = await self._start(spec, stdin=stdin, capture=max_output_bytes, remove_on_exit=True)
        result = await h.wait()
        return result.check() if check else result

    @overload
    async def run(self, command: Command, *, wait: Literal[True] = ..., **kwargs: Any) -> ExecResult: ...

    @overload
    async def run(self, command: Command, *, wait: Literal[False], **kwargs: Any) -> AsyncCommandHandle: ...

    async def run(  # type: ignore[misc]
        self,
        command: Command,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[StdinSource] = None,
        timeout: Optional[float] = None,
        pty: Union[bool, tuple[int, int]] = False,
        idle_timeout: Optional[float] = None,
        kill_on_disconnect: bool = False,
        ttl: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        wait: bool = True,
        max_output_bytes: Optional[int] = None,
        capture: bool = True,
        shell: Optional[str] = None,
        check: bool = False,
        name: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> Union[ExecResult, AsyncCommandHandle]:
        """Starts a command and streams its output.

        With ``wait=True`` (the default) it runs to its end, calling
        ``on_stdout``/``on_stderr`` with each chunk as it arrives, and
        returns the :class:`~tether.ExecResult`. With ``wait=False`` it
        returns an :class:`~tether.AsyncCommandHandle` at once: iterate it
        for output events, write its stdin, signal or kill it, then ``await
        handle.wait()``; the callbacks run as the handle is consumed.

        ``pty=True`` (or ``(rows, cols)``) runs it on a terminal.
        ``idle_timeout`` (seconds, -1 never; default 300) kills it after that
        long with no client attached; ``kill_on_disconnect`` when the last
        client goes; ``ttl`` (default 600) keeps it attachable after it ends.
        ``capture=False`` keeps no output in the result (streaming only).
        The output is paced to this client: nothing is lost, however slowly
        it is read; the command waits for the reader.

        >>> h = await client.run("tail -f /var/log/syslog", wait=False)  # doctest: +SKIP
        >>> async for ev in h: ...  # doctest: +SKIP
        """
        size = pty if isinstance(pty, tuple) else (24, 80)
        spec = self._spec(
            command,
            cwd=cwd,
            env=env,
            timeout=timeout,
            shell=shell,
            max_output_bytes=max_output_bytes,
            idle_timeout=idle_timeout,
            ttl=ttl,
            kill_on_disconnect=kill_on_disconnect,
            name=name,
            labels=labels,
            pty=p.PtySpec(rows=size[0], cols=size[1]) if pty else None,
        )
        cap = max_output_bytes if capture else 0
        h = await self._start(
            spec, stdin=stdin, capture=cap, on_stdout=on_stdout, on_stderr=on_stderr, keep_stdin_open=not wait
        )
        if not wait:
            return h
        result = await h.wait()
        return result.check() if check else result

    async def exec_detached(
        self,
        command: Command,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Union[str, bytes, None] = None,
        timeout: Optional[float] = None,
        idle_timeout: Optional[float] = -1,
        ttl: Optional[float] = None,
        ring_bytes: Optional[int] = None,
        shell: Optional[str] = None,
        name: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> AsyncCommandHandle:
        """Starts a command that runs on its own (no client needs to be
        attached; ``idle_timeout`` defaults to never) and returns a handle
        to collect it later: ``await handle.wait()`` attaches from the first
        byte and returns its result; any client can also :meth:`attach` to
        ``handle.command_id``. Output older than the daemon's ring
        (``ring_bytes`` per stream, default 1 MiB) is lost to a late reader
        (``result.lost_bytes``)."""
        spec = self._spec(
            command,
            cwd=cwd,
            env=env,
            timeout=timeout,
            shell=shell,
            max_output_bytes=None,
            idle_timeout=idle_timeout,
            ttl=ttl,
            name=name,
            labels=labels,
        )
        spec.attach = False
        spec.ring_bytes = ring_bytes
        data = stdin.encode() if isinstance(stdin, str) else stdin
        spec.stdin = data or None
        spec.close_stdin = True
        reply = await self._conn.request(p.Start(spec=spec), retry=True)
        assert isinstance(reply, p.Started)
        h = AsyncCommandHandle(self, window=self.options.window_bytes, ring=ring_bytes)
        h.command_id, h.pid, h._lazy = reply.command, reply.pid, True
        return h

    async def attach(
        self,
        command_id: str,
        *,
        stdout_offset: int = 0,
        stderr_offset: int = 0,
        tail: Optional[int] = None,
        pace: bool = False,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        capture: bool = True,
    ) -> AsyncCommandHandle:
        """Attaches to a command (started by any client) from the given
        offsets, or ``tail`` bytes before each stream's end; returns a handle
        as :meth:`run` does. Bytes the ring no longer holds come as a
        :class:`~tether.GapEvent`. ``pace=True`` holds the command back
        rather than let this reader fall behind. One client has one
        attachment per command: a second attach supersedes the first."""
        h = AsyncCommandHandle(
            self,
            capture=None if capture else 0,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            window=self.options.window_bytes,
        )
        h.command_id = command_id
        await self._attach_into(h, stdout_offset, stderr_offset, tail=tail, pace=pace)
        return h

    async def _attach_into(
        self,
        h: AsyncCommandHandle,
        stdout_offset: int,
        stderr_offset: int,
        *,
        tail: Optional[int] = None,
        pace: bool = False,
        conn: Optional[Connection] = None,
    ) -> None:
        window = self.options.window_bytes
        msg = p.Attach(
            command=h.command_id,
            stdout_offset=stdout_offset,
            stderr_offset=stderr_offset,
            tail_bytes=tail,
            pace=pace,
            window_bytes=window,
            client=self.name if pace else None,
        )
        reply = await (conn or self._conn).request(
            msg, retry=True, sink=h, mode=Mode(pace=pace, window=window)
        )
        assert isinstance(reply, p.Attached)
        h._started(reply.command, h.pid, (reply.stdout_offset, reply.stderr_offset))

    async def logs(
        self,
        command_id: str,
        *,
        follow: bool = False,
        stream: Optional[Literal["stdout", "stderr"]] = None,
        lines: bool = False,
        tail: Optional[int] = None,
    ) -> AsyncIterator[Union[bytes, str]]:
        """A command's output as an async iterator: chunks of bytes, or with
        ``lines=True`` lines of text (each with its newline). Without
        ``follow`` it ends at the output written so far; with it, when the
        command ends. ``stream`` keeps one stream only; ``tail`` starts at
        most that many bytes before the end. Read on a connection of its
        own, so it never disturbs this client's own attachment to the
        command.

        >>> async for line in client.logs(cid, follow=True, lines=True): ...  # doctest: +SKIP
        """
        side = Connection(self.url, self._token, self.options, self.name + "-logs")
        try:
            info = await self.status(command_id)
            until = None if follow else (info.stdout.end, info.stderr.end)
            h = AsyncCommandHandle(self, conn=side, capture=0, window=self.options.window_bytes)
            h.command_id = command_id
            await self._attach_into(h, 0, 0, tail=tail, conn=side)
            pending = ""
            async for ev in h:
                if isinstance(ev, OutputEvent) and (stream is None or ev.stream == stream):
                    if lines:
                        pending += ev.data.decode("utf-8", "replace")
                        *whole, pending = pending.split("\n")
                        for line in whole:
                            yield line + "\n"
                    else:
                        yield ev.data
                if until is not None and h.stdout_offset >= until[0] and h.stderr_offset >= until[1]:
                    break
            if lines and pending:
                yield pending
        finally:
            await side.close()

    async def list(self, *, labels: Optional[Mapping[str, str]] = None) -> List[p.CommandInfo]:
        """Every command the daemon holds, oldest first (all pages);
        ``labels``: only those carrying all of these labels."""
        out: List[p.CommandInfo] = []
        cursor: Optional[str] = None
        while True:
            reply = await self._conn.request(p.List(limit=1000, cursor=cursor), retry=True)
            assert isinstance(reply, p.ListReply)
            out.extend(reply.commands)
            if not reply.next:
                break
            cursor = reply.next
        if labels:
            out = [c for c in out if all(c.labels.get(k) == v for k, v in labels.items())]
        return out

    async def status(self, command_id: str) -> p.CommandInfo:
        """One command's state, offsets and (once ended) exit record.
        Raises :class:`~tether.CommandNotFound`."""
        reply = await self._conn.request(p.Status(command=command_id), retry=True)
        assert isinstance(reply, p.StatusReply)
        return reply.info

    async def remove(self, command_id: str) -> None:
        """Forgets a command, killing it first if it runs."""
        await self._conn.request(p.Remove(command=command_id), retry=True)

    async def kill(self, command_id: str) -> None:
        """Kills a command and everything it started."""
        self._conn.kill_marked(command_id)
        await self._conn.request(p.Kill(command=command_id), retry=True)

    async def signal(self, command_id: str, signal: Union[str, int]) -> None:
        """Sends a signal to a command (see :meth:`AsyncCommandHandle.signal`)."""
        await self._conn.request(p.Signal(command=command_id, signal=signal_name(signal)), retry=False)

    async def write_stdin(self, command_id: str, data: Union[str, bytes], *, close: bool = False) -> None:
        """Writes to a command's stdin by id (e.g. a shell command started
        elsewhere) and waits until it is written; ``close`` then closes
        stdin. For streams, use a handle's :meth:`~AsyncCommandHandle.write_stdin`."""
        buf = data.encode() if isinstance(data, str) else data
        if buf:
            await self._conn.request(p.Stdin(command=command_id, data=buf), retry=False)
        if close:
            await self._conn.request(p.CloseStdin(command=command_id), retry=False)

    async def _forget(self, command_id: str) -> None:
        """Removes an ended command without waiting for the answer
        (``exec``: its output is in the result)."""
        try:
            await self._conn.post(p.Remove(command=command_id))
        except TetherError:
            pass

    # ------------------------------------------------- shells and terminals

    async def shell(
        self,
        name: Optional[str] = None,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        program: Optional[str] = None,
        idle_ttl: Optional[float] = None,
    ) -> AsyncShell:
        """A named shell: one long-lived bash whose state (cwd, variables,
        functions) carries from one command to the next. Creates it, or
        returns the live shell of that name. Without a name the daemon
        makes an unguessable one.

        >>> sh = await client.shell("build", cwd="/srv")  # doctest: +SKIP
        >>> await sh.exec("cd src && export MODE=fast")  # doctest: +SKIP
        >>> (await sh.exec("pwd; echo $MODE")).stdout_text  # doctest: +SKIP
        """
        spec = p.ShellSpec(
            name=name,
            cwd=None if cwd is None else str(cwd),
            env=dict(env or {}),
            program=program,
            idle_ttl_ms=_lifetime_ms(idle_ttl),
        )
        reply = await self._conn.request(p.ShellCreate(spec=spec), retry=name is not None, shell=True)
        assert isinstance(reply, p.ShellReply)
        return AsyncShell(self, reply.info, created=reply.created)

    async def shells(self) -> List[p.ShellInfo]:
        """Every named shell the daemon holds, oldest first."""
        reply = await self._conn.request(p.ShellListReq(), retry=True)
        assert isinstance(reply, p.ShellListReply)
        return reply.shells

    async def pty(
        self,
        command: Command = "bash",
        *,
        size: tuple[int, int] = (24, 80),
        on_data: Optional[OutputCallback] = None,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        term: Optional[str] = None,
        timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        ttl: Optional[float] = None,
    ) -> AsyncPtyHandle:
        """Starts a command on a terminal of ``size`` (rows, cols) and
        returns its :class:`~tether.AsyncPtyHandle`: ``write`` keystrokes,
        ``resize``, ``screen()`` for the screen as the daemon has it,
        ``wait``, ``kill``. ``on_data`` gets the terminal's output as the
        handle is consumed (iterate it, or ``wait``).

        A string is a program name or a shell command line: ``"bash"`` runs
        bash, ``"htop -d 5"`` runs through ``bash -c``.
        """
        argv: Command = command
        if isinstance(command, str) and " " not in command.strip():
            argv = shlex.split(command)
        spec = self._spec(
            argv,
            cwd=cwd,
            env=env,
            timeout=timeout,
            shell=None,
            max_output_bytes=None,
            idle_timeout=idle_timeout,
            ttl=ttl,
            pty=p.PtySpec(rows=size[0], cols=size[1], term=term),
        )
        h = await self._start(
            spec, stdin=None, pace=False, capture=0, on_stdout=on_data, handle_type=AsyncPtyHandle
        )
        assert isinstance(h, AsyncPtyHandle)
        return h

    async def _screen(self, command_id: str) -> tuple[p.TermSize, bytes, int]:
        """A PTY command's screen, read on a connection of its own."""
        side = Connection(self.url, self._token, self.options, self.name + "-screen")
        try:
            h = AsyncCommandHandle(self, conn=side, capture=0)
            h.command_id = command_id
            msg = p.Attach(command=command_id, screen=True)
            got: asyncio.Future[tuple[p.TermSize, bytes, int]] = asyncio.get_running_loop().create_future()

            class _Sink:
                def _on_event(self, ev: Any) -> None:
                    if hasattr(ev, "size") and hasattr(ev, "data") and not got.done():
                        got.set_result((ev.size, ev.data, ev.offset))

                def _on_exit(self, status: p.ExitStatus) -> None:
                    if not got.done():
                        got.set_exception(TetherError("the command ended before its screen was sent"))

                def _on_end(self, err: TetherError, *, killed: bool) -> None:
                    if not got.done():
                        got.set_exception(err)

            await side.request(msg, retry=True, sink=_Sink(), mode=Mode(terminal=True))
            return await asyncio.wait_for(got, 30)
        finally:
            await side.close()

    async def popen(self, args: Command, **kw: Any) -> AsyncPopen[Any]:
        """A command the way :class:`subprocess.Popen` runs one: ``stdin``,
        ``stdout``, ``stderr`` as :data:`~tether.PIPE`, :data:`~tether.DEVNULL`,
        :data:`~tether.STDOUT` or a file object (``io.StringIO``, an open
        file), ``text``, ``shell``, ``cwd``, ``env``, ``timeout``, and
        ``files=`` (local paths, or ``{remote: local path or bytes}``) uploaded
        before it starts. Returns an :class:`~tether.AsyncPopen` with
        ``communicate``, ``wait``, ``poll``, ``returncode``, ``send_signal``,
        ``terminate``, ``kill`` and async ``stdin``/``stdout``/``stderr``.

        >>> p = await client.popen(["sort"], stdin=PIPE, stdout=PIPE, text=True)  # doctest: +SKIP
        >>> out, _ = await p.communicate("b\\na\\n")  # doctest: +SKIP
        """
        return await popen(self, args, **kw)

    # --------------------------------------------------------------- code

    async def code_run(
        self,
        code: str,
        *,
        language: str = "python3",
        argv: Optional[Sequence[str]] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Union[str, bytes, None] = None,
        timeout: Optional[float] = None,
        check: bool = False,
    ) -> ExecResult:
        """Runs ``code`` with the language's interpreter (``python3``,
        ``node``, ``bash``, ``sh``, or any the daemon was given with
        ``--interpreter``), followed by ``argv``. The code goes to a private
        file, so it needs no quoting and has no size limit but the daemon's.

        >>> r = await client.code_run("import sys; print(sys.argv[1:])", argv=["a"])  # doctest: +SKIP
        """
        body: dict[str, Any] = {"language": language, "code": code, "args": list(argv or [])}
        if env:
            body["env"] = dict(env)
        if cwd is not None:
            body["cwd"] = str(cwd)
        if timeout is not None:
            body["timeout_ms"] = _ms(timeout)
        if isinstance(stdin, str):
            body["stdin_text"] = stdin
        elif stdin is not None:
            body["stdin"] = base64.b64encode(stdin).decode()
        try:
            r = await self._http.post(
                "/v1/code", json=body, timeout=None if timeout is None else timeout + 60
            )
        except httpx.TransportError as e:
            raise ConnectionLost(f"code run: {e}") from e
        data = _json(r)
        if r.status_code != 200:
            raise from_code(data.get("code", "internal"), data.get("message", r.text), data.get("errno"))
        result = _exec_response(data)
        return result.check() if check else result


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        return {"code": "internal", "message": f"HTTP {r.status_code}: {r.text[:200]}"}
    return data if isinstance(data, dict) else {}


def _field_bytes(data: dict[str, Any], name: str) -> bytes:
    """A byte field of an ``ExecResponse``: bytes in MessagePack; in JSON
    the text itself or base64, as ``<name>_encoding`` says."""
    value = data.get(name) or ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if data.get(name + "_encoding") == "base64":
        return base64.b64decode(value)
    return str(value).encode()


def _exec_response(data: dict[str, Any]) -> ExecResult:
    """An ``ExecResponse`` (``POST /v1/exec``, ``/v1/code``) as a result."""
    status = p.ExitStatus(
        code=data.get("exit_code"),
        signal=data.get("signal"),
        reason=data.get("reason", "exited"),
        wall_ms=data.get("duration_ms", 0),
        truncated=bool(data.get("truncated")),
    )
    out, err = _field_bytes(data, "stdout"), _field_bytes(data, "stderr")
    return ExecResult.from_status(data.get("command", ""), status, stdout=out, stderr=err, output=out + err)
