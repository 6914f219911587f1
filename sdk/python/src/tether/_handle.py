"""`AsyncCommandHandle`: one running (or finished) command as this client
sees it: its output events, its stdin, its signals and its result.

Output arrives from the connection's reader into a queue; the handle's
consumer (iteration, or :meth:`wait`) takes it from there, captures it,
calls the callbacks and acknowledges it, so the daemon sends at most a
window ahead of what the consumer has taken (flow control, section 9).

Stdin is numbered (a ``writer`` name and byte offsets, section 9, *Resuming
stdin*): every frame is kept until the daemon says it is written, and sent
again after a reconnect, so no byte is lost or doubled.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable
from typing import IO, TYPE_CHECKING, Any, Callable, Optional, Union

from . import _proto as p
from ._connection import Connection
from ._errors import CommandNotFound, CommandTimeout, ConnectionLost, StdinClosed, TetherError
from ._types import Event, ExecResult, GapEvent, OutputEvent, ScreenEvent

if TYPE_CHECKING:
    from ._client import AsyncClient

OutputCallback = Callable[[bytes], Optional[Awaitable[None]]]
"""Called with each chunk of a stream, in order; may be a coroutine
function."""

StdinSource = Union[
    str, bytes, bytearray, memoryview, IO[bytes], IO[str], Iterable[bytes], AsyncIterable[bytes]
]
"""What ``stdin=`` takes: text, bytes, a file object, or an (async) iterable
of chunks."""

_STREAMS = ("stdout", "stderr")


class _End:
    __slots__ = ("error", "killed", "status")

    def __init__(
        self, status: Optional[p.ExitStatus], error: Optional[TetherError] = None, killed: bool = False
    ) -> None:
        self.status = status
        self.error = error
        self.killed = killed


class AsyncCommandHandle:
    """A command started or attached by an :class:`~tether.AsyncClient`.

    Iterate it for output events in arrival order (:class:`~tether.OutputEvent`,
    and :class:`~tether.GapEvent` where bytes were lost), or ``await
    handle.wait()`` for the :class:`~tether.ExecResult`::

        h = await client.run("make -j8", wait=False)
        async for ev in h:
            if isinstance(ev, tether.OutputEvent):
                print(ev.stream, ev.data.decode(errors="replace"), end="")
        result = await h.wait()

    The handle survives network loss: the client reconnects and resumes the
    output from the last byte delivered and the stdin from the last byte
    the daemon confirmed.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        conn: Optional[Connection] = None,
        capture: Optional[int] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        window: Optional[int] = None,
        remove_on_exit: bool = False,
        ring: Optional[int] = None,
    ) -> None:
        self._client = client
        self._conn: Connection = conn or client._conn
        self.command_id = ""
        self.pid: Optional[int] = None
        self._queue: collections.deque[Union[Event, _End]] = collections.deque()
        # The reader's wake-up, made only while it waits (cheaper than an
        # Event per handle: a client may hold thousands of idle handles).
        self._waiter: Optional[asyncio.Future[None]] = None
        self._ack_timer: Optional[asyncio.TimerHandle] = None
        self._end: Optional[_End] = None
        self._final: Optional[ExecResult] = None
        self._failed: Optional[TetherError] = None
        # exec_detached: attached on first use, from offset 0, paced.
        self._lazy = False
        self._capture = capture  # None: everything; 0: nothing
        self._captured = 0
        self._out: list[bytearray] = [bytearray(), bytearray()]
        self._both = bytearray()
        self._lost = 0
        self._callbacks = (on_stdout, on_stderr)
        self._window = window
        self._ring = ring
        self._consumed = [0, 0]
        self._acked = [0, 0]
        self._remove_on_exit = remove_on_exit
        self._killed = False
        self._attached = False
        # Numbered stdin.
        self._writer = "w-" + secrets.token_hex(8)
        self._stdin_offset = 0
        self._stdin_inflight = 0
        self._stdin_room: Optional[asyncio.Event] = None
        self._stdin_error: Optional[TetherError] = None
        self._stdin_closed = False
        self._stdin_task: Optional[asyncio.Task[None]] = None

    def __repr__(self) -> str:
        state = "done" if self.done else "running"
        return f"<{type(self).__name__} {self.command_id} pid={self.pid} {state}>"

    # ------------------------------------------------ the connection's side

    def _on_event(self, ev: Event) -> None:
        self._queue.append(ev)
        self._wake()

    def _on_exit(self, status: p.ExitStatus) -> None:
        self._queue.append(_End(status))
        self._wake()

    def _on_end(self, err: TetherError, *, killed: bool) -> None:
        self._queue.append(_End(None, err, killed))
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _started(self, command_id: str, pid: Optional[int], at: tuple[int, int] = (0, 0)) -> None:
        self.command_id = command_id
        self.pid = pid
        self._consumed = list(at)
        self._acked = list(at)
        self._attached = True

    # ------------------------------------------------------------- output

    @property
    def done(self) -> bool:
        """The consumer has taken the command's end (its result is known)."""
        return self._final is not None

    @property
    def stdout_offset(self) -> int:
        """The stdout offset one past the last byte taken by the consumer."""
        return self._consumed[0]

    @property
    def stderr_offset(self) -> int:
        """The stderr offset one past the last byte taken by the consumer."""
        return self._consumed[1]

    def __aiter__(self) -> AsyncIterator[Event]:
        """The output events in arrival order, until the command ends."""
        return self

    async def __anext__(self) -> Event:
        if self._lazy:
            self._lazy = False
            await self._client._attach_into(self, 0, 0, pace=True)
        while True:
            if self._queue:
                item = self._queue.popleft()
                if isinstance(item, _End):
                    await self._finish(item)
                    raise StopAsyncIteration
                await self._take(item)
                return item
            if self._final is not None:
                raise StopAsyncIteration
            if self._failed is not None:
                raise self._failed
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def _next_batch(self, most: int = 64) -> list[Event]:
        """The next event and those queued behind it (at most ``most``),
        each taken as iteration takes it; empty at the end. For the blocking
        twin: one hand-off between threads for many events."""
        try:
            batch = [await self.__anext__()]
        except StopAsyncIteration:
            return []
        while len(batch) < most and self._queue and not isinstance(self._queue[0], _End):
            ev = self._queue.popleft()
            assert not isinstance(ev, _End)
            await self._take(ev)
            batch.append(ev)
        return batch

    async def _take(self, ev: Event) -> None:
        """The consumer takes ``ev``: capture, callbacks, acknowledgement."""
        if isinstance(ev, OutputEvent):
            i = _STREAMS.index(ev.stream)
            self._consumed[i] = ev.end
            self._keep(i, ev.data)
            cb = self._callbacks[i]
            if cb is not None:
                r = cb(ev.data)
                if inspect.isawaitable(r):
                    await r
        elif isinstance(ev, GapEvent):
            i = _STREAMS.index(ev.stream)
            self._consumed[i] = ev.end
            self._lost += ev.lost
            await self._ack(force=True)
            return
        elif isinstance(ev, ScreenEvent):
            self._consumed[0] = ev.offset
        await self._ack()

    def _keep(self, i: int, data: bytes) -> None:
        if self._capture is not None:
            room = self._capture - self._captured
            if room <= 0:
                return
            data = data[:room]
        self._captured += len(data)
        self._out[i] += data
        self._both += data

    async def _ack(self, force: bool = False) -> None:
        """Acknowledges what the consumer took: at once every quarter window
        (and after a gap); otherwise, once the reader has caught up and no
        more output came for a moment, since a paced command may be held back
        at less than a quarter window (half its ring) past the acknowledged
        offsets. A fast stream thus costs one ack per quarter window."""
        if not self._window or not self.command_id:
            return
        behind = (self._consumed[0] - self._acked[0]) + (self._consumed[1] - self._acked[1])
        if behind <= 0:
            return
        if force or behind >= self._ack_every():
            await self._send_ack()
        elif not self._queue and self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(0.002, self._ack_later)

    def _ack_every(self) -> int:
        """Bytes taken between acknowledgements: a quarter window, and at
        most a quarter of the command's ring, since a paced command is held
        half a ring past what was acknowledged (the daemon's default ring
        when this one's is not known)."""
        ring = self._ring or self._conn.limits.default_ring_bytes
        return max(4096, min(self._window or 0, ring) // 4)

    def _ack_later(self) -> None:
        self._ack_timer = None
        if self._final is None and self._failed is None:
            self._client._spawn(self._send_ack())

    async def _send_ack(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._acked == self._consumed:
            return
        self._acked = list(self._consumed)
        await self._conn.send(
            p.Ack(command=self.command_id, stdout_offset=self._acked[0], stderr_offset=self._acked[1])
        )

    async def _finish(self, end: _End) -> None:
        self._end = end
        status = end.status
        if status is None and end.killed:
            status = await self._status_after_kill()
        if status is None:
            assert end.error is not None
            self._failed = end.error
            raise end.error
        self._final = ExecResult.from_status(
            self.command_id,
            status,
            pid=self.pid,
            stdout=bytes(self._out[0]),
            stderr=bytes(self._out[1]),
            output=bytes(self._both),
            lost_bytes=self._lost,
        )
        if self._remove_on_exit:
            await self._client._forget(self.command_id)

    async def _status_after_kill(self) -> Optional[p.ExitStatus]:
        """After a kill whose attachment was lost: how it ended, asked
        once the connection is back (the attachment is not remade)."""
        for _ in range(200):
            try:
                info = await self._client.status(self.command_id)
            except CommandNotFound:
                return p.ExitStatus(reason="killed", signal=9)
            except ConnectionLost:
                return None
            if info.exit is not None:
                return info.exit
            await asyncio.sleep(0.05)
        return None

    async def wait(self, timeout: Optional[float] = None) -> ExecResult:
        """Waits for the command to end, consuming (and capturing) the rest of
        its output, and returns its :class:`~tether.ExecResult`. Raises
        :class:`~tether.CommandTimeout` after ``timeout`` seconds (the
        command keeps running; wait again or kill it), and
        :class:`~tether.ConnectionLost` if reconnecting gave up."""
        if self._final is not None:
            return self._final
        if self._failed is not None:
            raise self._failed
        try:
            await asyncio.wait_for(self._drain(), timeout)
        except asyncio.TimeoutError:
            raise CommandTimeout(f"command {self.command_id} still running after {timeout:g} s") from None
        assert self._final is not None
        return self._final

    async def _drain(self) -> None:
        async for _ in self:
            pass

    @property
    def result(self) -> Awaitable[ExecResult]:
        """``await handle.result``: the same as ``await handle.wait()``."""
        return self.wait()

    @property
    def exit_status(self) -> Optional[p.ExitStatus]:
        """The daemon's exit record, once the end is consumed."""
        return self._final.status if self._final is not None else None

    # -------------------------------------------------------------- stdin

    async def write_stdin(self, data: Union[str, bytes, bytearray, memoryview]) -> None:
        """Writes ``data`` to the command's stdin (text as UTF-8). Returns once
        it is sent; at most ``Options.stdin_window_bytes`` are in flight, so
        a command that does not read slows its writer, never memory. Errors
        of earlier writes (the command ended, stdin closed) are raised by the
        next write or by :meth:`close_stdin`."""
        buf = data.encode() if isinstance(data, str) else bytes(data)
        if self._stdin_closed:
            raise StdinClosed(f"stdin of command {self.command_id} is closed")
        limit = self._conn.options.stdin_window_bytes
        chunk = max(4096, min(256 << 10, self._conn.limits.max_frame_bytes - 4096))
        for start in range(0, len(buf), chunk):
            part = buf[start : start + chunk]
            while self._stdin_inflight > 0 and self._stdin_inflight + len(part) > limit:
                await self._stdin_wait()
            if self._stdin_error is not None:
                raise self._stdin_error
            msg = p.Stdin(command=self.command_id, data=part, writer=self._writer, offset=self._stdin_offset)
            self._stdin_offset += len(part)
            self._stdin_inflight += len(part)
            fut = await self._conn.submit(msg, retry=True)
            fut.add_done_callback(functools.partial(self._stdin_done, n=len(part)))

    def _stdin_done(self, fut: asyncio.Future[p.Message], n: int) -> None:
        self._stdin_inflight -= n
        if not fut.cancelled() and fut.exception() is not None and self._stdin_error is None:
            e = fut.exception()
            self._stdin_error = e if isinstance(e, TetherError) else TetherError(str(e))
        if self._stdin_room is not None:
            self._stdin_room.set()

    async def _stdin_wait(self) -> None:
        """Waits for a stdin frame to be confirmed."""
        if self._stdin_room is None:
            self._stdin_room = asyncio.Event()
        self._stdin_room.clear()
        await self._stdin_room.wait()

    async def close_stdin(self) -> None:
        """Closes stdin after everything written so far is in (the command
        reads end of file; on a terminal, the end-of-file character)."""
        if self._stdin_task is not None and asyncio.current_task() is not self._stdin_task:
            await asyncio.gather(self._stdin_task, return_exceptions=True)
        while self._stdin_inflight > 0:
            await self._stdin_wait()
        if self._stdin_error is not None:
            raise self._stdin_error
        if self._stdin_closed:
            return
        self._stdin_closed = True
        msg = p.CloseStdin(command=self.command_id, writer=self._writer, offset=self._stdin_offset)
        await self._conn.request(msg, retry=True)

    def _feed(self, source: StdinSource) -> None:
        """Streams ``source`` to stdin in a task, then closes stdin."""
        self._stdin_task = self._client._spawn(self._feed_all(source))

    async def _feed_all(self, source: StdinSource) -> None:
        try:
            async for chunk in _chunks(source):
                await self.write_stdin(chunk)
            await self.close_stdin()
        except TetherError:
            pass  # the command ended before reading it all: its result says how

    # ------------------------------------------------------------ control

    async def signal(self, signal: Union[str, int]) -> None:
        """Sends a signal (``"TERM"``, ``"SIGINT"``, ``9``) to the command's
        process group (a terminal's foreground group for a PTY)."""
        await self._conn.request(p.Signal(command=self.command_id, signal=signal_name(signal)), retry=False)

    async def kill(self) -> None:
        """Kills the command and everything it started (SIGKILL). Its end
        (reason ``killed``) still comes through :meth:`wait`; a kill during a
        network cut does not remake the attachment: the handle asks the
        daemon how the command ended instead."""
        self._killed = True
        self._conn.kill_marked(self.command_id)
        await self._conn.request(p.Kill(command=self.command_id), retry=True)

    async def terminate(self) -> None:
        """Sends SIGTERM."""
        await self.signal("TERM")

    async def resize(self, rows: int, cols: int) -> None:
        """Sets a PTY command's terminal size."""
        size = p.TermSize(rows, cols)
        self._conn.set_size(self.command_id, size)
        await self._conn.request(p.Resize(command=self.command_id, size=size), retry=True)

    async def detach(self) -> None:
        """Stops receiving this command's output; the command keeps running
        (attach again with :meth:`AsyncClient.attach`)."""
        if self._conn.unwatch(self.command_id, self):
            try:
                await self._conn.request(p.Detach(command=self.command_id), retry=True)
            except TetherError:
                pass
        self._on_end(TetherError("detached"), killed=False)

    async def status(self) -> p.CommandInfo:
        """The daemon's view of the command now (state, offsets, exit)."""
        return await self._client.status(self.command_id)


def signal_name(signal: Union[str, int]) -> str:
    """A signal as the protocol takes it: a name, or a number as a string
    (``signal.SIGINT`` is an int enum whose ``str`` differs by version)."""
    return signal if isinstance(signal, str) else str(int(signal))


async def _chunks(source: StdinSource, size: int = 256 << 10) -> AsyncIterator[bytes]:
    """The chunks of a stdin source, reading files on a worker thread."""
    if isinstance(source, str):
        yield source.encode()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        yield bytes(source)
    elif hasattr(source, "read"):
        f: Any = source
        while True:
            chunk = await asyncio.to_thread(f.read, size)
            if not chunk:
                return
            yield chunk.encode() if isinstance(chunk, str) else bytes(chunk)
    elif hasattr(source, "__aiter__"):
        async for chunk in source:
            yield chunk.encode() if isinstance(chunk, str) else bytes(chunk)
    else:
        it = iter(source)
        done = object()
        while True:
            chunk = await asyncio.to_thread(next, it, done)
            if chunk is done:
                return
            yield chunk.encode() if isinstance(chunk, str) else bytes(chunk)
