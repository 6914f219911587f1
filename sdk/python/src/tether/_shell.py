"""Named shells (`AsyncShell`) and terminals (`AsyncPtyHandle`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, Optional, Union, overload

from . import _proto as p
from ._connection import Mode
from ._handle import AsyncCommandHandle, OutputCallback
from ._types import ExecResult

if TYPE_CHECKING:
    from ._client import AsyncClient


class AsyncShell:
    """A named shell on the daemon: one bash process that runs every script
    given to it in turn, so ``cd``, ``export``, functions and aliases carry
    over. Commands queue in order; each is a normal tether command with an
    id (attachable, listed, its output kept for its TTL).

    ::

        sh = await client.shell("build")
        await sh.exec("cd /srv/app && export PROFILE=release")
        r = await sh.exec("pwd && echo $PROFILE")
        h = await sh.exec("make", wait=False)   # queued behind nothing
        print(h.command_id)                      # fetch its logs later by id
    """

    def __init__(self, client: AsyncClient, info: p.ShellInfo, *, created: bool) -> None:
        self._client = client
        self.name = info.name
        self.info = info
        """The shell as the daemon described it when it was opened."""
        self.created = created
        """True if this call created the shell (False: it existed)."""

    def __repr__(self) -> str:
        return f"<AsyncShell {self.name}>"

    @overload
    async def exec(self, script: str, *, wait: Literal[True] = ..., **kw: object) -> ExecResult: ...

    @overload
    async def exec(self, script: str, *, wait: Literal[False], **kw: object) -> AsyncCommandHandle: ...

    async def exec(  # type: ignore[misc]
        self,
        script: str,
        *,
        stdin: Union[str, bytes, None] = None,
        timeout: Optional[float] = None,
        wait: bool = True,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        check: bool = False,
        labels: Optional[Mapping[str, str]] = None,
        ttl: Optional[float] = None,
        max_output_bytes: Optional[int] = None,
    ) -> Union[ExecResult, AsyncCommandHandle]:
        """Runs ``script`` in the shell (after the commands queued before
        it). ``wait=False`` returns the command's handle at once: its
        ``command_id`` names it for :meth:`AsyncClient.logs`,
        :meth:`AsyncClient.attach` and :meth:`AsyncClient.write_stdin`. A
        ``timeout`` interrupts the command and leaves the shell alive."""
        c = self._client
        spec = p.ShellRunSpec(
            script=script,
            labels=dict(labels or {}),
            timeout_ms=None if timeout is None else int(timeout * 1000),
            ttl_ms=None if ttl is None else (-1 if ttl < 0 else int(ttl * 1000)),
            request_key=f"k-{c.name}-{next(c._keys)}",
            pace=True,
            window_bytes=c.options.window_bytes,
            client=c.name,
        )
        if max_output_bytes is not None:
            spec.max_output_bytes = max_output_bytes
            spec.output_limit = "truncate"
        if stdin is not None:
            spec.stdin = stdin.encode() if isinstance(stdin, str) else stdin
        if wait or stdin is not None:
            spec.close_stdin = True
        h = AsyncCommandHandle(
            c,
            capture=max_output_bytes,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            window=c.options.window_bytes,
        )
        mode = Mode(pace=True, window=c.options.window_bytes)
        reply = await c._conn.request(
            p.ShellRun(shell=self.name, spec=spec), retry=True, sink=h, mode=mode, shell=True
        )
        assert isinstance(reply, p.Started)
        h._started(reply.command, reply.pid)
        if not wait:
            return h
        result = await h.wait()
        return result.check() if check else result

    async def history(self) -> list[p.HistoryEntry]:
        """The shell's last 1000 commands, oldest first: script, state, exit
        code, times, and the directory each ended in."""
        reply = await self._client._conn.request(p.ShellHistoryReq(shell=self.name), retry=True, shell=True)
        assert isinstance(reply, p.ShellHistoryReply)
        return reply.entries

    async def status(self) -> p.ShellInfo:
        """The shell now: state, cwd, queue, why it closed."""
        for s in await self._client.shells():
            if s.name == self.name:
                return s
        from ._errors import ShellNotFound

        raise ShellNotFound(f"no shell named {self.name!r}")

    async def close(self) -> None:
        """Closes the shell: kills what it runs and its background jobs, and
        forgets it and its commands."""
        await self._client._conn.request(p.ShellClose(shell=self.name), retry=True, shell=True)

    async def __aenter__(self) -> AsyncShell:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncPtyHandle(AsyncCommandHandle):
    """A command on a terminal (:meth:`AsyncClient.pty`). Its output is one
    stream (``stdout``), with the terminal's line discipline applied."""

    async def write(self, data: Union[str, bytes]) -> None:
        """Types ``data`` at the terminal (``"\\x03"`` is Ctrl-C)."""
        await self.write_stdin(data)

    async def screen(self) -> bytes:
        """The terminal's screen as the daemon's emulator has it now: bytes
        that redraw it on a reset terminal of the current size (see
        :meth:`screen_text` for plain text)."""
        _size, data, _offset = await self._client._screen(self.command_id)
        return data

    async def screen_size(self) -> tuple[int, int]:
        """The terminal's size now, (rows, cols)."""
        size, _data, _offset = await self._client._screen(self.command_id)
        return size.rows, size.cols
