"""The blocking API: `Client` and what it returns, with the names and
semantics of `AsyncClient` and its objects. Each call runs the async
implementation on the client's private loop thread (`_portal.Portal`), so
there is one implementation, a `Client` can be shared between threads, and
closing it leaves no thread, task or socket behind. Callbacks
(``on_stdout``, ...) run in the thread that consumes the output (the one
calling ``wait`` or iterating), never on the loop thread.
"""

from __future__ import annotations

import collections
import concurrent.futures
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, List, Literal, Optional, Union, overload

from . import _proto as p
from ._client import AsyncClient, Command
from ._config import Options
from ._errors import CommandTimeout
from ._files import Files
from ._handle import AsyncCommandHandle, OutputCallback
from ._popen import Popen, popen_sync
from ._portal import Portal, Twin
from ._shell import AsyncPtyHandle, AsyncShell
from ._types import Event, ExecResult, OutputEvent


class CommandHandle(Twin[AsyncCommandHandle]):
    """A command started or attached by a :class:`Client`: iterate it for
    output events in arrival order, write its stdin, signal or kill it, and
    :meth:`wait` for its :class:`~tether.ExecResult`. See
    :class:`~tether.AsyncCommandHandle`, whose blocking twin it is.

    ::

        h = client.run("make -j8", wait=False)
        for ev in h:
            if isinstance(ev, tether.OutputEvent):
                sys.stdout.buffer.write(ev.data)
        print(h.wait().exit_code)
    """

    def __init__(
        self,
        portal: Portal,
        inner: AsyncCommandHandle,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> None:
        super().__init__(portal, inner)
        self._callbacks = (on_stdout, on_stderr)
        # Events taken from the daemon in a batch but not yet handed out:
        # a loop left early (``break``) leaves them here for the next one.
        self._pending: collections.deque[Event] = collections.deque()

    @property
    def command_id(self) -> str:
        """The daemon's id of the command."""
        return self._a.command_id

    @property
    def pid(self) -> Optional[int]:
        """Its process id (a shell command's: the shell's)."""
        return self._a.pid

    @property
    def done(self) -> bool:
        """Its end has been consumed."""
        return self._a.done

    @property
    def stdout_offset(self) -> int:
        """stdout consumed so far (an absolute offset)."""
        return self._a.stdout_offset

    @property
    def stderr_offset(self) -> int:
        """stderr consumed so far (an absolute offset)."""
        return self._a.stderr_offset

    @property
    def exit_status(self) -> Optional[p.ExitStatus]:
        """The daemon's exit record, once the end is consumed."""
        return self._a.exit_status

    def __iter__(self) -> Iterator[Event]:
        """The output events in arrival order, until the command ends
        (callbacks run as each is taken)."""
        return self._events(None, None)

    def _events(self, deadline: Optional[float], timeout: Optional[float]) -> Iterator[Event]:
        """The events, queued ones taken in batches (one hand-off between
        threads for many), each called back as it is taken; past
        ``deadline`` (monotonic) :class:`~tether.CommandTimeout`."""
        while True:
            while self._pending:
                ev = self._pending.popleft()
                self._call_back(ev)
                yield ev
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise CommandTimeout(f"command {self.command_id} still running after {timeout:g} s")
            try:
                batch = self._portal.call(self._a._next_batch(), left)
            except concurrent.futures.TimeoutError:  # not the builtin before 3.11
                continue
            if not batch:
                return
            self._pending.extend(batch)

    def _call_back(self, ev: Event) -> None:
        if isinstance(ev, OutputEvent):
            cb = self._callbacks[0 if ev.stream == "stdout" else 1]
            if cb is not None:
                cb(ev.data)

    def wait(self, timeout: Optional[float] = None) -> ExecResult:
        """Waits for the end, consuming the rest of the output; raises
        :class:`~tether.CommandTimeout` after ``timeout`` seconds (the
        command keeps running)."""
        if not any(self._callbacks):
            return self._portal.call(self._a.wait(timeout))
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in self._events(deadline, timeout):
            pass
        return self._portal.call(self._a.wait())

    @property
    def result(self) -> ExecResult:
        """The same as :meth:`wait` (blocks until the command ends)."""
        return self.wait()

    def write_stdin(self, data: Union[str, bytes, bytearray, memoryview]) -> None:
        """Writes to stdin (see :meth:`AsyncCommandHandle.write_stdin`)."""
        self._portal.call(self._a.write_stdin(data))

    def close_stdin(self) -> None:
        """Closes stdin after everything written so far."""
        self._portal.call(self._a.close_stdin())

    def signal(self, signal: Union[str, int]) -> None:
        """Sends a signal (``"TERM"``, ``"INT"``, ``9``)."""
        self._portal.call(self._a.signal(signal))

    def kill(self) -> None:
        """Kills the command and everything it started."""
        self._portal.call(self._a.kill())

    def terminate(self) -> None:
        """Sends SIGTERM."""
        self._portal.call(self._a.terminate())

    def resize(self, rows: int, cols: int) -> None:
        """Sets a PTY command's terminal size."""
        self._portal.call(self._a.resize(rows, cols))

    def detach(self) -> None:
        """Stops receiving output; the command keeps running."""
        self._portal.call(self._a.detach())

    def status(self) -> p.CommandInfo:
        """The daemon's view of the command now."""
        return self._portal.call(self._a.status())


class PtyHandle(CommandHandle):
    """A command on a terminal (:meth:`Client.pty`)."""

    _a: AsyncPtyHandle

    def write(self, data: Union[str, bytes]) -> None:
        """Types ``data`` at the terminal."""
        self._portal.call(self._a.write(data))

    def screen(self) -> bytes:
        """The screen as the daemon's terminal emulator has it now."""
        return self._portal.call(self._a.screen())

    def screen_size(self) -> tuple[int, int]:
        """The terminal's size now, (rows, cols)."""
        return self._portal.call(self._a.screen_size())


class Shell(Twin[AsyncShell]):
    """A named shell (:meth:`Client.shell`); see :class:`~tether.AsyncShell`."""

    def __init__(self, portal: Portal, inner: AsyncShell) -> None:
        super().__init__(portal, inner)
        self.name = inner.name
        self.info = inner.info
        self.created = inner.created

    def __repr__(self) -> str:
        return f"<Shell {self.name}>"

    @overload
    def exec(self, script: str, *, wait: Literal[True] = ..., **kw: Any) -> ExecResult: ...

    @overload
    def exec(self, script: str, *, wait: Literal[False], **kw: Any) -> CommandHandle: ...

    def exec(
        self,
        script: str,
        *,
        wait: bool = True,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        check: bool = False,
        **kw: Any,
    ) -> Union[ExecResult, CommandHandle]:
        """Runs ``script`` in the shell; see :meth:`AsyncShell.exec`."""
        h = self._portal.call(self._a.exec(script, wait=False, **kw))
        handle = CommandHandle(self._portal, h, on_stdout, on_stderr)
        if not wait:
            return handle
        result = handle.wait()
        return result.check() if check else result

    def history(self) -> list[p.HistoryEntry]:
        """The shell's last 1000 commands, oldest first."""
        return self._portal.call(self._a.history())

    def status(self) -> p.ShellInfo:
        """The shell now."""
        return self._portal.call(self._a.status())

    def close(self) -> None:
        """Closes the shell and forgets it."""
        self._portal.call(self._a.close())

    def __enter__(self) -> Shell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """A client of one tether daemon, for blocking code; safe to share
    between threads. The same API as :class:`~tether.AsyncClient`.

    ::

        with tether.Client("http://127.0.0.1:7070", token=TOKEN) as c:
            r = c.exec(["python3", "-c", "print(6 * 7)"])
            assert r.stdout == b"42\\n"
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        token: Optional[str] = None,
        token_file: Union[str, Path, None] = None,
        options: Optional[Options] = None,
    ) -> None:
        self._portal = Portal()
        try:
            self._a = self._portal.call(_make(url, token, token_file, options))
        except BaseException:
            self._portal.close()
            raise
        self.url = self._a.url
        self.files = Files(self._portal, self._a.files)
        """File operations: :class:`~tether.Files`."""

    def __repr__(self) -> str:
        return f"<Client {self.url}>"

    @property
    def reconnects(self) -> int:
        """How many times the WebSocket was lost and remade."""
        return self._a.reconnects

    @property
    def limits(self) -> p.Limits:
        """The limits the daemon announced (after the first call)."""
        return self._a.limits

    def close(self) -> None:
        """Closes the connection and stops the client's thread."""
        try:
            self._portal.call(self._a.aclose())
        finally:
            self._portal.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, t: Optional[type[BaseException]], e: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    def exec(self, command: Command, **kw: Any) -> ExecResult:
        """Runs a command to its end; see :meth:`AsyncClient.exec` for the
        options (``cwd``, ``env``, ``stdin``, ``timeout``,
        ``max_output_bytes``, ``shell``, ``check``, ``name``, ``labels``)."""
        return self._portal.call(self._a.exec(command, **kw))

    @overload
    def run(self, command: Command, *, wait: Literal[True] = ..., **kw: Any) -> ExecResult: ...

    @overload
    def run(self, command: Command, *, wait: Literal[False], **kw: Any) -> CommandHandle: ...

    def run(
        self,
        command: Command,
        *,
        wait: bool = True,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        check: bool = False,
        **kw: Any,
    ) -> Union[ExecResult, CommandHandle]:
        """Starts a command and streams its output; see
        :meth:`AsyncClient.run`. Callbacks run in the calling thread."""
        h = self._portal.call(self._a.run(command, wait=False, **kw))
        handle = CommandHandle(self._portal, h, on_stdout, on_stderr)
        if not wait:
            return handle
        result = handle.wait()
        return result.check() if check else result

    def exec_detached(self, command: Command, **kw: Any) -> CommandHandle:
        """Starts a command that runs on its own; see
        :meth:`AsyncClient.exec_detached`."""
        return CommandHandle(self._portal, self._portal.call(self._a.exec_detached(command, **kw)))

    def attach(
        self,
        command_id: str,
        *,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        **kw: Any,
    ) -> CommandHandle:
        """Attaches to a command; see :meth:`AsyncClient.attach`."""
        h = self._portal.call(self._a.attach(command_id, **kw))
        return CommandHandle(self._portal, h, on_stdout, on_stderr)

    def logs(self, command_id: str, **kw: Any) -> Iterator[Union[bytes, str]]:
        """A command's output as an iterator of chunks or lines; see
        :meth:`AsyncClient.logs`."""
        return self._portal.iterate(self._a.logs(command_id, **kw))

    def list(self, *, labels: Optional[Mapping[str, str]] = None) -> List[p.CommandInfo]:
        """Every command the daemon holds, oldest first."""
        return self._portal.call(self._a.list(labels=labels))

    def status(self, command_id: str) -> p.CommandInfo:
        """One command's state, offsets and exit record."""
        return self._portal.call(self._a.status(command_id))

    def remove(self, command_id: str) -> None:
        """Forgets a command, killing it first if it runs."""
        self._portal.call(self._a.remove(command_id))

    def kill(self, command_id: str) -> None:
        """Kills a command and everything it started."""
        self._portal.call(self._a.kill(command_id))

    def signal(self, command_id: str, signal: Union[str, int]) -> None:
        """Sends a signal to a command."""
        self._portal.call(self._a.signal(command_id, signal))

    def write_stdin(self, command_id: str, data: Union[str, bytes], *, close: bool = False) -> None:
        """Writes to a command's stdin by id; see :meth:`AsyncClient.write_stdin`."""
        self._portal.call(self._a.write_stdin(command_id, data, close=close))

    def shell(self, name: Optional[str] = None, **kw: Any) -> Shell:
        """A named shell; see :meth:`AsyncClient.shell`."""
        return Shell(self._portal, self._portal.call(self._a.shell(name, **kw)))

    def shells(self) -> List[p.ShellInfo]:
        """Every named shell the daemon holds."""
        return self._portal.call(self._a.shells())

    def pty(
        self, command: Command = "bash", *, on_data: Optional[OutputCallback] = None, **kw: Any
    ) -> PtyHandle:
        """A command on a terminal; see :meth:`AsyncClient.pty`. ``on_data``
        runs in the thread that consumes the output."""
        h = self._portal.call(self._a.pty(command, **kw))
        return PtyHandle(self._portal, h, on_data)

    def popen(self, args: Command, **kw: Any) -> Popen[Any]:
        """A command the way :class:`subprocess.Popen` runs one; see
        :meth:`AsyncClient.popen`. ``stdin``/``stdout``/``stderr`` are
        file-like.

        >>> p = client.popen(["sort"], stdin=tether.PIPE, stdout=tether.PIPE, text=True)  # doctest: +SKIP
        >>> out, _ = p.communicate("b\\na\\n")  # doctest: +SKIP
        """
        return popen_sync(self, args, **kw)

    def code_run(self, code: str, **kw: Any) -> ExecResult:
        """Runs code with an interpreter; see :meth:`AsyncClient.code_run`."""
        return self._portal.call(self._a.code_run(code, **kw))


async def _make(
    url: Optional[str], token: Optional[str], token_file: Union[str, Path, None], options: Optional[Options]
) -> AsyncClient:
    return AsyncClient(url, token=token, token_file=token_file, options=options)


__all__ = ["Client", "CommandHandle", "PtyHandle", "Shell"]
