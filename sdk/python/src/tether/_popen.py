"""`AsyncPopen` and `Popen`: a remote command with the shape of Python's
:class:`subprocess.Popen`, for code (and people) that think in pipes.

One task per command, the *pump*, consumes the command's output events in
arrival order and routes each chunk to where that stream goes: a bounded
pipe buffer that the caller reads (``PIPE``), a file object, the local
``sys.stdout``/``sys.stderr`` (``None``, as a child inherits them), or
nowhere (``DEVNULL``). The command is paced to this client, so when a pipe
buffer is full the pump stops taking output and the daemon holds the
command back: memory stays bounded however much the command writes, and
nothing is lost however slowly it is read. As with :mod:`subprocess`, a
caller that waits for the end while never reading a ``PIPE`` the command
fills will wait forever; :meth:`AsyncPopen.communicate` reads both pipes
at once.

`Popen` is the blocking twin: each call runs the async implementation on
the client's loop thread (`_portal.Portal`).
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import io
import os
import posixpath
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import PurePath
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, AnyStr, Generic, Optional, Union, cast

from ._errors import CommandTimeout, ConnectionLost, NotRunning, StdinClosed, TetherError
from ._handle import AsyncCommandHandle
from ._portal import Twin
from ._types import ExecResult, OutputEvent

if TYPE_CHECKING:
    from ._client import AsyncClient
    from ._portal import Portal
    from ._sync import Client

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "AsyncPipeReader",
    "AsyncPipeWriter",
    "AsyncPopen",
    "PipeReader",
    "PipeWriter",
    "Popen",
    "popen",
    "popen_sync",
]

PIPE = subprocess.PIPE
"""A pipe to or from the command: ``Popen.stdin`` / ``.stdout`` / ``.stderr``."""
STDOUT = subprocess.STDOUT
"""``stderr=STDOUT``: stderr goes wherever stdout goes."""
DEVNULL = subprocess.DEVNULL
"""stdin empty (end of file at once), or output dropped."""

Args = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]
"""A program (or, with ``shell=True``, a shell command line), or an argv."""

Redirect = Union[int, IO[Any], None]
"""Where an output stream goes: ``PIPE``, ``DEVNULL``, ``STDOUT`` (stderr
only), ``None`` (this process's own stdout/stderr), a file descriptor or a
file object (``io.StringIO``, ``io.BytesIO``, an open file)."""

StdinArg = Union[int, None, str, bytes, bytearray, memoryview, IO[Any]]
"""What stdin is: ``PIPE``, ``DEVNULL`` or ``None`` (both: empty), or the
whole input as text, bytes or a file object to stream."""

FilesArg = Union[
    Sequence[Union[str, "os.PathLike[str]"]],
    Mapping[str, Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]],
]
"""``files=``: local paths (uploaded under their base names to ``cwd``), or
``{remote_path: local_path | bytes | binary file}``."""

# How much unread output one pipe holds (bytes, or characters in text mode)
# before the pump stops taking output and the command is held back.
PIPE_LIMIT = 1 << 20


class AsyncPipeReader(Generic[AnyStr]):
    """The reading end of a command's output pipe (``Popen.stdout`` /
    ``.stderr`` with ``PIPE``): bytes, or text in text mode. It reaches end
    of file when the command has ended and everything was read.

    ::

        async for line in p.stdout:
            print(line, end="")
    """

    def __init__(self, empty: AnyStr, decoder: Optional[io.IncrementalNewlineDecoder], limit: int) -> None:
        self._empty: AnyStr = empty
        self._newline: AnyStr
        if isinstance(empty, str):
            self._newline = "\n"
        else:
            self._newline = b"\n"
        self._decoder = decoder
        self._limit = limit
        self._chunks: collections.deque[AnyStr] = collections.deque()
        self._size = 0
        self._eof = False
        self._closed = False
        self._error: Optional[BaseException] = None
        self._readable = asyncio.Event()
        self._room = asyncio.Event()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} buffered={self._size} eof={self._eof}>"

    # ---------------------------------------------------- the pump's side

    async def _feed(self, data: bytes) -> None:
        if self._closed or self._error is not None:
            return
        while self._size >= self._limit and not self._closed:
            self._room.clear()
            await self._room.wait()
        if self._closed:
            return
        piece = self._decode(data, final=False)
        if piece:
            self._chunks.append(piece)
            self._size += len(piece)
        self._readable.set()

    async def _end(self) -> None:
        if not self._closed and self._error is None:
            piece = self._decode(b"", final=True)
            if piece:
                self._chunks.append(piece)
                self._size += len(piece)
        self._eof = True
        self._readable.set()

    def _unbound(self) -> None:
        self._limit = sys.maxsize
        self._room.set()

    def _fail(self, error: BaseException) -> None:
        """The output ended abnormally (the connection was lost): readers
        get what was buffered, then ``error``."""
        if self._error is None:
            self._error = error
        self._eof = True
        self._readable.set()

    def _decode(self, data: bytes, *, final: bool) -> AnyStr:
        empty = self._empty
        if isinstance(empty, bytes) or self._decoder is None:
            return data  # type: ignore[return-value]  # bytes mode (str mode always has a decoder)
        try:
            text: str = self._decoder.decode(data, final)
            return text
        except UnicodeDecodeError as e:
            # The reader gets the text before the bad bytes, then the error;
            # the rest of the stream is dropped (but still drained).
            self._error = e
            return _before_error(e, pending_cr=bool(self._decoder.getstate()[1] & 1))

    # ------------------------------------------------------ the reader's side

    @property
    def closed(self) -> bool:
        """:meth:`close` was called."""
        return self._closed

    async def _wait_readable(self) -> None:
        while not self._chunks and not self._eof:
            self._readable.clear()
            await self._readable.wait()
        if not self._chunks and self._error is not None:
            raise self._error

    def _take(self, n: int) -> AnyStr:
        out: list[AnyStr] = []
        need = n
        while self._chunks and need > 0:
            c = self._chunks[0]
            if len(c) <= need:
                out.append(self._chunks.popleft())
                need -= len(c)
            else:
                out.append(c[:need])
                self._chunks[0] = c[need:]
                need = 0
        self._size -= n - need
        self._room.set()
        return self._empty.join(out)

    async def read(self, n: int = -1) -> AnyStr:
        """With ``n < 0``: everything up to end of file. Else at most ``n``
        bytes (characters in text mode), as soon as any are there; empty at
        end of file."""
        if self._closed:
            raise ValueError("read from a closed pipe")
        if n == 0:
            return self._empty
        if n > 0:
            await self._wait_readable()
            return self._take(n)
        parts: list[AnyStr] = []
        while True:
            await self._wait_readable()
            if not self._chunks:
                return self._empty.join(parts)
            parts.append(self._take(self._size))

    async def readline(self) -> AnyStr:
        """One line with its newline; the last one may lack it; empty at end
        of file. A line longer than the pipe's buffer is read whole."""
        if self._closed:
            raise ValueError("read from a closed pipe")
        parts: list[AnyStr] = []
        while True:
            await self._wait_readable()
            if not self._chunks:
                return self._empty.join(parts)
            upto = 0
            for c in self._chunks:
                i = c.find(self._newline)
                if i >= 0:
                    parts.append(self._take(upto + i + 1))
                    return self._empty.join(parts)
                upto += len(c)
            parts.append(self._take(self._size))

    async def readlines(self) -> list[AnyStr]:
        """Every remaining line."""
        return [line async for line in self]

    def __aiter__(self) -> AsyncIterator[AnyStr]:
        return self

    async def __anext__(self) -> AnyStr:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    async def aclose(self) -> None:
        """Drops what is buffered and whatever the command still writes to
        this stream (it runs on; its output is drained, not kept)."""
        self._closed = True
        self._chunks.clear()
        self._size = 0
        self._room.set()

    async def close(self) -> None:
        """The same as :meth:`aclose`."""
        await self.aclose()


def _before_error(e: UnicodeDecodeError, *, pending_cr: bool) -> str:
    """The text that precedes a decoding error, line endings translated."""
    try:
        good = e.object[: e.start].decode(e.encoding)
    except (UnicodeDecodeError, LookupError):
        good = ""
    text: str = io.IncrementalNewlineDecoder(None, translate=True).decode(
        ("\r" if pending_cr else "") + good, True
    )
    return text


class AsyncPipeWriter(Generic[AnyStr]):
    """The writing end of a command's stdin (``Popen.stdin`` with ``PIPE``).

    ::

        await p.stdin.write(b"some input\\n")
        await p.stdin.close()   # the command reads end of file
    """

    def __init__(
        self, handle: AsyncCommandHandle, held: _HeldOpen, encoding: Optional[str], errors: str
    ) -> None:
        self._h = handle
        self._held = held
        self._encoding = encoding
        self._errors = errors
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._h.command_id} closed={self._closed}>"

    @property
    def closed(self) -> bool:
        """:meth:`close` was called."""
        return self._closed

    async def write(self, data: AnyStr) -> int:
        """Writes ``data`` (text in text mode, encoded with the Popen's
        encoding; else bytes) and returns its length once it is sent. At
        most the client's stdin window is in flight: a command that does
        not read slows its writer, never memory. Raises
        :class:`~tether.StdinClosed` (or the error of an earlier write)
        when the command no longer takes input."""
        await self._send(self._encode(data))
        return len(data)

    def _encode(self, data: AnyStr) -> bytes:
        if isinstance(data, str):
            if self._encoding is None:
                raise TypeError("stdin is a binary pipe: write bytes (or open the Popen with text=True)")
            return data.encode(self._encoding, self._errors)
        if self._encoding is not None:
            raise TypeError("stdin is a text pipe: write str")
        return bytes(data)

    async def _send(self, buf: bytes) -> None:
        if self._closed:
            raise ValueError("write to a closed pipe")
        if buf:
            await self._h.write_stdin(buf)

    async def writelines(self, lines: Sequence[AnyStr]) -> None:
        """Writes each of ``lines`` (no newlines are added)."""
        for line in lines:
            await self.write(line)

    async def drain(self) -> None:
        """For asyncio's ``StreamWriter`` shape: :meth:`write` has already
        waited for room, so there is nothing left to wait for."""

    async def aclose(self) -> None:
        """Closes stdin after everything written so far (the command reads
        end of file). Closing the stdin of a command that has ended is not
        an error."""
        if self._closed:
            return
        self._closed = True
        self._held.release()
        with contextlib.suppress(StdinClosed, NotRunning):
            await self._h.close_stdin()

    async def close(self) -> None:
        """The same as :meth:`aclose`."""
        await self.aclose()


class AsyncPopen(Generic[AnyStr]):
    """A command started by :func:`popen` (``await client.popen(...)``),
    with the names and semantics of :class:`subprocess.Popen` where they
    carry over: ``stdin``, ``stdout``, ``stderr`` (pipes, or None),
    ``pid``, ``args``, ``returncode``, :meth:`poll`, :meth:`wait`,
    :meth:`communicate`, :meth:`send_signal`, :meth:`terminate`,
    :meth:`kill`, and ``async with`` (closes the pipes, then waits).

    ::

        p = await client.popen(["sort"], stdin=tether.PIPE, stdout=tether.PIPE, text=True)
        out, _ = await p.communicate("b\\na\\n")
        assert out == "a\\nb\\n" and p.returncode == 0

    ``returncode`` is None until the command's end has been taken, then its
    exit code, or ``-N`` when signal N ended it (also for a ``timeout``:
    SIGTERM, then SIGKILL).
    """

    stdin: Optional[AsyncPipeWriter[AnyStr]]
    """stdin's writing end with ``stdin=PIPE``, else None."""
    stdout: Optional[AsyncPipeReader[AnyStr]]
    """stdout's reading end with ``stdout=PIPE``, else None."""
    stderr: Optional[AsyncPipeReader[AnyStr]]
    """stderr's reading end with ``stderr=PIPE``, else None."""

    def __init__(
        self,
        client: AsyncClient,
        handle: AsyncCommandHandle,
        args: Args,
        *,
        stdin: Optional[AsyncPipeWriter[AnyStr]],
        stdout: Optional[AsyncPipeReader[AnyStr]],
        stderr: Optional[AsyncPipeReader[AnyStr]],
        sinks: tuple[_Sink, _Sink],
    ) -> None:
        self._client = client
        self._h = handle
        self.args = args
        """The ``args`` given to :func:`popen`."""
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._sinks = sinks
        self.returncode: Optional[int] = None
        """None while the command runs, then its exit code (``-N``: signal N
        ended it)."""
        self.result: Optional[ExecResult] = None
        """How the command ended (reason, signal, duration, resource usage),
        once ``returncode`` is set. Its output fields are empty: the output
        went to the pipes and files."""
        self._failure: Optional[BaseException] = None
        self._sink_error: Optional[Exception] = None
        self._readers: Optional[tuple[Optional[asyncio.Task[AnyStr]], Optional[asyncio.Task[AnyStr]]]] = None
        self._feeder: Optional[asyncio.Task[None]] = None
        self._pump = asyncio.get_running_loop().create_task(self._run_pump())
        # The client owns the task: closing the client ends it.
        client._background.add(self._pump)
        self._pump.add_done_callback(client._background.discard)

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"returncode={self.returncode}"
        return f"<{type(self).__name__} {self.command_id} pid={self.pid} {state}>"

    @property
    def pid(self) -> Optional[int]:
        """The process id on the daemon's host (with ``shell=True``, the
        shell's)."""
        return self._h.pid

    @property
    def command_id(self) -> str:
        """The daemon's id of the command."""
        return self._h.command_id

    @property
    def handle(self) -> AsyncCommandHandle:
        """The command's handle (its output is the pump's to consume: use it
        for ``status()``, not for iteration)."""
        return self._h

    # ------------------------------------------------------------- the pump

    async def _run_pump(self) -> None:
        sinks = {"stdout": self._sinks[0], "stderr": self._sinks[1]}
        try:
            async for ev in self._h:
                if isinstance(ev, OutputEvent):
                    sink = sinks[ev.stream]
                    try:
                        await sink.feed(ev.data)
                    except Exception as e:
                        # A file that refuses writes: that stream's output is
                        # dropped from here on, the command still drained.
                        self._sink_error = self._sink_error or e
                        sinks = {k: (_Sink() if s is sink else s) for k, s in sinks.items()}
            result = await self._h.wait()
        except asyncio.CancelledError:
            self._fail(ConnectionLost("the client was closed before the command ended"))
            raise
        except Exception as e:
            self._fail(e)
            return
        for sink in dict.fromkeys(sinks.values()):
            try:
                await sink.end()
            except Exception as e:
                self._sink_error = self._sink_error or e
        # Set last: a returncode means every byte is in its pipe or file.
        self.result = result
        self.returncode = -result.signal if result.signal is not None else result.exit_code
        self._release_stdin()
        # Reaped, as subprocess reaps its child: the daemon forgets it.
        await _quietly(self._client._forget(self._h.command_id))

    def _fail(self, error: BaseException) -> None:
        self._failure = error
        for sink in dict.fromkeys(self._sinks):
            sink.fail(error)
        self._release_stdin()

    def _release_stdin(self) -> None:
        # The handle's stdin feeder need not wait for a writer any more.
        if self.stdin is not None:
            self.stdin._held.release()

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._sink_error is not None:
            raise self._sink_error

    # --------------------------------------------------------------- waiting

    def poll(self) -> Optional[int]:
        """``returncode``, without waiting: None while the command runs (or
        while its end is still behind output nobody has read)."""
        return self.returncode

    async def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for the command to end and returns ``returncode``. Raises
        :class:`~tether.CommandTimeout` (a ``TimeoutError``) after ``timeout``
        seconds; the command keeps running. Output still goes where it was
        sent meanwhile; a ``PIPE`` nobody reads holds the command back, as
        with :mod:`subprocess` (use :meth:`communicate`)."""
        if self.returncode is None:
            done, _ = await asyncio.wait({self._pump}, timeout=timeout)
            if not done:
                raise CommandTimeout(f"command {self.command_id} still running after {timeout:g} s")
        self._check()
        assert self.returncode is not None
        return self.returncode

    async def communicate(
        self, input: Optional[AnyStr] = None, timeout: Optional[float] = None
    ) -> tuple[Optional[AnyStr], Optional[AnyStr]]:
        """Writes ``input`` to stdin and closes it, reads stdout and stderr to
        their end at the same time, waits for the command and returns
        ``(stdout, stderr)`` (None for a stream that is not a ``PIPE``).
        Raises :class:`~tether.CommandTimeout` after ``timeout`` seconds; the
        command keeps running and a later call picks up where this one
        stopped, without losing output (subprocess's idiom: ``kill()``, then
        ``communicate()`` again)."""
        if self._readers is None:
            if input is not None and self.stdin is None:
                raise ValueError("communicate(input): stdin is not a PIPE")
            loop = asyncio.get_running_loop()
            if self.stdin is not None:
                data = b"" if input is None else self.stdin._encode(input)  # a wrong type raises here
                self._feeder = loop.create_task(self._feed_input(self.stdin, data))
            self._readers = (
                None if self.stdout is None else loop.create_task(self.stdout.read()),
                None if self.stderr is None else loop.create_task(self.stderr.read()),
            )
            for task in (self._readers[0], self._readers[1], self._feeder):
                if task is not None:
                    # Its error is raised by this call or a later one; if none
                    # comes (a timeout, then nothing), it is not worth a warning.
                    task.add_done_callback(_retrieve)
        elif input:
            raise ValueError("cannot send input after starting communication")
        readers = self._readers
        tasks: set[asyncio.Future[Any]] = {self._pump}
        for t in (readers[0], readers[1], self._feeder):
            if t is not None:
                tasks.add(t)
        done, pending = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            error = None if t.cancelled() else t.exception()
            if error is not None:
                raise error
        if pending:
            raise CommandTimeout(f"command {self.command_id} still running after {timeout:g} s")
        out = None if readers[0] is None else readers[0].result()
        err = None if readers[1] is None else readers[1].result()
        self._check()
        return out, err

    @staticmethod
    async def _feed_input(stdin: AsyncPipeWriter[AnyStr], data: bytes) -> None:
        try:
            if data and not stdin.closed:
                await stdin._send(data)
        except (StdinClosed, NotRunning):
            pass  # it ended without reading it all (a broken pipe): its returncode says how
        await stdin.aclose()

    # --------------------------------------------------------------- signals

    async def send_signal(self, sig: Union[int, str]) -> None:
        """Sends signal ``sig`` (``signal.SIGINT``, ``2``, ``"INT"``) to the
        command's process group. Does nothing once it has ended."""
        if self.returncode is not None:
            return
        # int(): str() of a signal.Signals is "Signals.SIGINT" before 3.11.
        with contextlib.suppress(NotRunning):
            await self._h.signal(int(sig) if isinstance(sig, int) else sig)

    async def terminate(self) -> None:
        """Sends SIGTERM."""
        await self.send_signal(15)

    async def kill(self) -> None:
        """Kills the command and everything it started (SIGKILL);
        ``returncode`` becomes -9. Does nothing once it has ended."""
        if self.returncode is not None:
            return
        # What it wrote before it died is bounded by what the daemon holds:
        # the pipes take it all, so wait() needs no reader (as subprocess's).
        for r in (self.stdout, self.stderr):
            if r is not None:
                r._unbound()
        with contextlib.suppress(NotRunning):
            await self._h.kill()

    # ---------------------------------------------------------------- closing

    async def __aenter__(self) -> AsyncPopen[AnyStr]:
        return self

    async def __aexit__(
        self, t: Optional[type[BaseException]], e: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        for r in (self.stdout, self.stderr):
            if r is not None:
                await r.aclose()
        if self.stdin is not None:
            await _quietly(self.stdin.aclose())
        try:
            await self.wait()
        finally:
            for task in (*(self._readers or ()), self._feeder):
                if task is not None and not task.done():
                    task.cancel()


# -------------------------------------------------------------- the factory


async def popen(
    client: AsyncClient,
    args: Args,
    *,
    stdin: StdinArg = None,
    stdout: Redirect = None,
    stderr: Redirect = None,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    shell: bool = False,
    text: bool = False,
    encoding: Optional[str] = None,
    errors: Optional[str] = None,
    universal_newlines: Optional[bool] = None,
    timeout: Optional[float] = None,
    files: Optional[FilesArg] = None,
) -> AsyncPopen[Any]:
    """Starts ``args`` on the daemon and returns its :class:`AsyncPopen`.

    ``args``: a list is an argv, run with no shell; a string with
    ``shell=False`` is one program name, as in :mod:`subprocess`; with
    ``shell=True`` a string is a command line for ``bash -c`` (a list's
    first item is the command line, the rest the shell's ``$0``, ``$1``...).

    ``stdin``: ``PIPE`` (write it through ``p.stdin``, or
    ``communicate(input)``), ``DEVNULL`` or ``None`` (empty: the remote
    process has no terminal of ours to inherit), or the whole input as
    text, bytes or a file object. ``stdout``/``stderr``: ``PIPE``,
    ``DEVNULL``, ``None`` (this process's ``sys.stdout``/``sys.stderr``, as
    a child inherits them), a file object (``io.StringIO``,
    ``io.BytesIO``, an open file: each chunk is written as it arrives,
    decoded for a text one), a file descriptor, and for stderr ``STDOUT``
    (merged into stdout, in arrival order).

    ``text`` (or ``universal_newlines``, or giving ``encoding`` or
    ``errors``) makes the pipes text: decoded incrementally with
    ``encoding`` (default UTF-8) and ``errors`` (default strict), line
    endings translated to ``\\n``, as :mod:`subprocess` does.

    ``env`` is added to the daemon's environment (it does not replace it,
    unlike :mod:`subprocess`). ``timeout`` (seconds) is a limit on the
    daemon's side: past it the command gets SIGTERM then SIGKILL.
    ``files``: local paths uploaded under their base names into ``cwd``
    (or the daemon's directory), or ``{remote_path: local_path | bytes |
    binary file}`` (a relative remote path is taken from ``cwd``),
    uploaded before the command starts.
    """
    command = _command(args, shell)
    text_mode = bool(text or universal_newlines or encoding is not None or errors is not None)
    enc = (encoding or "utf-8") if text_mode else None
    errs = errors or "strict"
    if stdout == STDOUT:
        raise ValueError("STDOUT is only for stderr")
    for name, value in (("stdout", stdout), ("stderr", stderr)):
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value < 0
            and value not in (PIPE, DEVNULL, STDOUT)
        ):
            raise ValueError(f"{name}={value!r}: not PIPE, DEVNULL, STDOUT, a descriptor or a file")
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    if files:
        await _upload(client, files, cwd)

    held: Optional[_HeldOpen] = None
    source: Any
    if stdin == PIPE:
        held = source = _HeldOpen()
    elif stdin is None or stdin == DEVNULL:
        source = b""  # empty, and closed at the start
    elif isinstance(stdin, int):
        raise ValueError(f"stdin={stdin!r}: not PIPE, DEVNULL, text, bytes or a file")
    elif isinstance(stdin, str):
        source = stdin.encode(enc or "utf-8", errs)
    else:
        source = stdin

    empty: Any = "" if text_mode else b""
    out_reader = _reader(empty, enc, errs) if stdout == PIPE else None
    err_reader = _reader(empty, enc, errs) if stderr == PIPE else None
    out_sink = _ReaderSink(out_reader) if out_reader is not None else _sink(stdout, sys.stdout, enc, errs)
    if stderr == STDOUT:
        err_sink = out_sink
    else:
        err_sink = _ReaderSink(err_reader) if err_reader is not None else _sink(stderr, sys.stderr, enc, errs)

    h = await client.run(command, wait=False, stdin=source, cwd=cwd, env=env, timeout=timeout, capture=False)
    writer: Optional[AsyncPipeWriter[Any]] = None
    if held is not None:
        writer = AsyncPipeWriter(h, held, enc, errs)
    return AsyncPopen(
        client, h, args, stdin=writer, stdout=out_reader, stderr=err_reader, sinks=(out_sink, err_sink)
    )


def _command(args: Args, shell: bool) -> Union[str, list[str]]:
    if isinstance(args, (str, os.PathLike)):
        one = os.fspath(args)
        return one if shell else [one]
    argv = [os.fspath(a) for a in args]
    if not argv:
        raise ValueError("an empty argv: nothing to run")
    if shell:
        return ["/bin/bash", "-c", *argv]
    return argv


async def _upload(client: AsyncClient, files: FilesArg, cwd: Optional[str]) -> None:
    def remote(path: str) -> str:
        return posixpath.join(cwd, path) if cwd else path

    if isinstance(files, Mapping):
        for dest, src in files.items():
            if isinstance(src, (bytes, bytearray, memoryview)):
                await client.files.write(remote(dest), bytes(src), parents=True)
            elif isinstance(src, (str, os.PathLike)):
                await client.files.upload(os.fspath(src), remote(dest))
            else:
                await client.files.write(remote(dest), src, parents=True)
    else:
        for local in files:
            path = os.fspath(local)
            await client.files.upload(path, remote(PurePath(path).name))


# ------------------------------------------------------------- output sinks


class _Sink:
    """Where one output stream goes."""

    async def feed(self, data: bytes) -> None:
        """Takes one chunk (the pump waits while it does)."""

    async def end(self) -> None:
        """The stream ended."""

    def fail(self, error: BaseException) -> None:
        """The stream ended abnormally."""


class _ReaderSink(_Sink):
    def __init__(self, reader: AsyncPipeReader[Any]) -> None:
        self.reader = reader

    async def feed(self, data: bytes) -> None:
        await self.reader._feed(data)

    async def end(self) -> None:
        await self.reader._end()

    def fail(self, error: BaseException) -> None:
        self.reader._fail(error)


def _reader(empty: AnyStr, encoding: Optional[str], errors: str) -> AsyncPipeReader[AnyStr]:
    decoder = None
    if encoding is not None:
        inner = codecs.getincrementaldecoder(encoding)(errors)
        decoder = io.IncrementalNewlineDecoder(inner, translate=True)
    return AsyncPipeReader(empty, decoder, PIPE_LIMIT)


class _FileSink(_Sink):
    """Writes each chunk into a file object or descriptor: decoded for a
    text one. In-memory files are written on the loop; anything else on a
    worker thread, so a slow disk or terminal never blocks the loop."""

    def __init__(self, target: Union[IO[Any], int], text: bool, encoding: str, errors: str) -> None:
        self._target = target
        self._decoder = codecs.getincrementaldecoder(encoding)(errors) if text else None
        self._inline = isinstance(target, (io.StringIO, io.BytesIO))

    async def feed(self, data: bytes) -> None:
        await self._write(self._decoder.decode(data) if self._decoder is not None else data)

    async def end(self) -> None:
        if self._decoder is not None:
            await self._write(self._decoder.decode(b"", True))
        flush = getattr(self._target, "flush", None)
        if flush is not None and not self._inline:
            await asyncio.to_thread(flush)

    async def _write(self, chunk: Union[str, bytes]) -> None:
        if not chunk:
            return
        if self._inline:
            cast(IO[Any], self._target).write(chunk)
        else:
            await asyncio.to_thread(_write_all, self._target, chunk)


class _Inherited(_Sink):
    """This process's own stdout or stderr, as a child process inherits
    them: bytes into its binary buffer (after flushing its text layer, to
    keep order with what this process printed), or text when it has no
    buffer (a ``redirect_stdout`` to a ``StringIO``). Written on a worker
    thread."""

    def __init__(self, target: IO[Any], encoding: str) -> None:
        self._text = target
        self._buffer: Optional[IO[bytes]] = getattr(target, "buffer", None)
        self._decoder = codecs.getincrementaldecoder(encoding)("replace")

    async def feed(self, data: bytes) -> None:
        await asyncio.to_thread(self._write, data, False)

    async def end(self) -> None:
        await asyncio.to_thread(self._write, b"", True)

    def _write(self, data: bytes, final: bool) -> None:
        if self._buffer is not None:
            if data:
                self._text.flush()
                self._buffer.write(data)
                self._buffer.flush()
            return
        text = self._decoder.decode(data, final)
        if text:
            self._text.write(text)
            self._text.flush()


def _write_all(target: Union[IO[Any], int], chunk: Union[str, bytes]) -> None:
    if isinstance(target, int):
        view = memoryview(cast(bytes, chunk))
        while view:
            view = view[os.write(target, view) :]
    else:
        target.write(chunk)


def _is_text(f: Any) -> bool:
    if isinstance(f, io.TextIOBase):
        return True
    if isinstance(f, (io.RawIOBase, io.BufferedIOBase)):
        return False
    mode = getattr(f, "mode", None)
    return isinstance(mode, str) and "b" not in mode


def _sink(target: Redirect, inherited: IO[Any], encoding: Optional[str], errors: str) -> _Sink:
    enc = encoding or "utf-8"
    if target is None:
        return _Inherited(inherited, enc)
    if isinstance(target, int):
        if target == DEVNULL:
            return _Sink()
        return _FileSink(target, False, enc, errors)
    if not hasattr(target, "write"):
        raise TypeError(f"cannot send output to {target!r}: not PIPE, DEVNULL, a descriptor or a file")
    return _FileSink(target, _is_text(target), enc, errors)


class _HeldOpen:
    """The stdin source of a ``PIPE``: handed to ``client.run(stdin=...)``
    it keeps stdin open (the handle's feeder waits in it) until
    :meth:`release`; the writer then writes through the handle."""

    def __init__(self) -> None:
        self._released = asyncio.Event()

    def release(self) -> None:
        self._released.set()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        await self._released.wait()
        raise StopAsyncIteration


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _quietly(aw: Any) -> None:
    with contextlib.suppress(TetherError):
        await aw


# --------------------------------------------------------- the blocking twin


class PipeReader(Twin[AsyncPipeReader[AnyStr]], Generic[AnyStr]):
    """A blocking :class:`AsyncPipeReader`: ``read``, ``readline``,
    ``readlines``, iteration over lines, ``close``."""

    @property
    def closed(self) -> bool:
        """:meth:`close` was called."""
        return self._a.closed

    def read(self, n: int = -1) -> AnyStr:
        """Everything up to end of file, or with ``n >= 0`` at most ``n``
        (as soon as any are there); empty at end of file."""
        return self._portal.call(self._a.read(n))

    def readline(self) -> AnyStr:
        """One line with its newline; empty at end of file."""
        return self._portal.call(self._a.readline())

    def readlines(self) -> list[AnyStr]:
        """Every remaining line."""
        return self._portal.call(self._a.readlines())

    def __iter__(self) -> Iterator[AnyStr]:
        return self

    def __next__(self) -> AnyStr:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        """Drops what is buffered and the rest of this stream."""
        self._portal.call(self._a.aclose())


class PipeWriter(Twin[AsyncPipeWriter[AnyStr]], Generic[AnyStr]):
    """A blocking :class:`AsyncPipeWriter`: ``write``, ``writelines``,
    ``flush``, ``close``."""

    @property
    def closed(self) -> bool:
        """:meth:`close` was called."""
        return self._a.closed

    def write(self, data: AnyStr) -> int:
        """Writes ``data``; returns its length once it is sent."""
        return self._portal.call(self._a.write(data))

    def writelines(self, lines: Sequence[AnyStr]) -> None:
        """Writes each of ``lines``."""
        self._portal.call(self._a.writelines(lines))

    def flush(self) -> None:
        """Nothing to do: :meth:`write` returns once the data is sent."""

    def close(self) -> None:
        """Closes stdin after everything written (the command reads end of
        file)."""
        self._portal.call(self._a.aclose())


class Popen(Twin[Any], Generic[AnyStr]):
    """A command started by :func:`popen_sync` (``client.popen(...)``): the
    blocking twin of :class:`AsyncPopen`, with :class:`subprocess.Popen`'s
    names.

    ::

        with client.popen(["grep", "-c", "x"], stdin=tether.PIPE, stdout=tether.PIPE) as p:
            out, _ = p.communicate(b"x\\ny\\nx\\n", timeout=30)
        assert out == b"2\\n" and p.returncode == 0
    """

    _a: AsyncPopen[AnyStr]
    stdin: Optional[PipeWriter[AnyStr]]
    stdout: Optional[PipeReader[AnyStr]]
    stderr: Optional[PipeReader[AnyStr]]

    def __init__(self, portal: Portal, inner: AsyncPopen[AnyStr]) -> None:
        super().__init__(portal, inner)
        self.args = inner.args
        """The ``args`` given to :func:`popen_sync`."""
        self.stdin = None if inner.stdin is None else PipeWriter(portal, inner.stdin)
        """stdin's writing end with ``stdin=PIPE``, else None."""
        self.stdout = None if inner.stdout is None else PipeReader(portal, inner.stdout)
        """stdout's reading end with ``stdout=PIPE``, else None."""
        self.stderr = None if inner.stderr is None else PipeReader(portal, inner.stderr)
        """stderr's reading end with ``stderr=PIPE``, else None."""

    def __repr__(self) -> str:
        return repr(self._a).replace("Async", "", 1)

    @property
    def pid(self) -> Optional[int]:
        """The process id on the daemon's host."""
        return self._a.pid

    @property
    def command_id(self) -> str:
        """The daemon's id of the command."""
        return self._a.command_id

    @property
    def returncode(self) -> Optional[int]:
        """None while it runs, then its exit code (``-N``: signal N)."""
        return self._a.returncode

    @property
    def result(self) -> Optional[ExecResult]:
        """How it ended, once ``returncode`` is set."""
        return self._a.result

    def poll(self) -> Optional[int]:
        """``returncode``, without waiting."""
        return self._a.poll()

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for the end; raises :class:`~tether.CommandTimeout` after
        ``timeout`` seconds (the command keeps running)."""
        return self._portal.call(self._a.wait(timeout))

    def communicate(
        self, input: Optional[AnyStr] = None, timeout: Optional[float] = None
    ) -> tuple[Optional[AnyStr], Optional[AnyStr]]:
        """Writes ``input``, closes stdin, reads both pipes to their end and
        waits; see :meth:`AsyncPopen.communicate`."""
        return self._portal.call(self._a.communicate(input, timeout))

    def send_signal(self, sig: Union[int, str]) -> None:
        """Sends a signal to the command's process group."""
        self._portal.call(self._a.send_signal(sig))

    def terminate(self) -> None:
        """Sends SIGTERM."""
        self._portal.call(self._a.terminate())

    def kill(self) -> None:
        """Kills the command and everything it started."""
        self._portal.call(self._a.kill())

    def __enter__(self) -> Popen[AnyStr]:
        return self

    def __exit__(
        self, t: Optional[type[BaseException]], e: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self._portal.call(self._a.__aexit__(t, e, tb))


def popen_sync(client: Client, args: Args, **kwargs: Any) -> Popen[Any]:
    """:func:`popen` for a blocking :class:`~tether.Client`: the same
    arguments, a :class:`Popen`."""
    return Popen(client._portal, client._portal.call(popen(client._a, args, **kwargs)))
