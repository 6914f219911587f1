"""The connection: one WebSocket to the daemon, multiplexing every request
and attachment of a client, that reconnects and resumes by itself.

It follows PROTOCOL.md section 9 as the Rust client does:

- every request gets a fresh id and waits in ``_pending`` for its reply;
- every attached command has a ``_Watch`` holding ``next``, the offset
  per stream one past the last byte handed to its reader; output below it
  is dropped or trimmed, so a byte is never delivered twice;
- on a drop (any close but a normal one), it reconnects (at once after
  1001, the daemon restarting; else with doubling backoff, for at most
  ``Options.reconnect_for``), re-attaches every watch from ``next``, then
  sends again, in their original order, the requests that were in flight
  and are safe to repeat: keyed starts, numbered stdin, attaches, kills,
  lookups. The others (a signal, a detach) fail with
  :class:`~tether.ConnectionLost` rather than risk happening twice.

Readers (handles) implement ``Sink``; the connection calls them from its
reader task and never waits for them: the daemon sends at most a window of
unacknowledged output per attachment, so what waits in a reader is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Optional, Protocol

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from . import _proto as p
from ._config import Options, ssl_context, ws_url
from ._errors import AuthError, ConnectionLost, TetherError, from_code
from ._types import Event, GapEvent, OutputEvent, ResizedEvent, ScreenEvent

log = logging.getLogger("tether")

_STREAMS = ("stdout", "stderr")


class Sink(Protocol):
    """Where an attachment's events go (a command handle)."""

    def _on_event(self, ev: Event) -> None: ...

    def _on_exit(self, status: p.ExitStatus) -> None: ...

    def _on_end(self, err: TetherError, *, killed: bool) -> None: ...


@dataclass
class Mode:
    """How an attachment is made, and remade after a reconnect."""

    pace: bool = False
    terminal: bool = False
    size: Optional[p.TermSize] = None
    window: Optional[int] = None


@dataclass
class _Watch:
    sink: Sink
    next: list[int]
    mode: Mode
    killed: bool = False


@dataclass
class _Pending:
    msg: p.Message
    fut: asyncio.Future[p.Message]
    retry: bool
    sent: bool = False
    sink: Optional[Sink] = None
    mode: Mode = field(default_factory=Mode)
    # Set on the connection's own re-attach after a drop.
    resume: Optional[str] = None
    # Sent again after a drop: a kill finding the command ended, or a
    # remove finding it gone, did what was asked the first time.
    repeated: bool = False
    shell: bool = False


class Connection:
    """One multiplexed, self-healing WebSocket. Opened lazily by the first
    request; closed by :meth:`close`."""

    def __init__(self, base_url: str, token: str, options: Options, name: str) -> None:
        self._url = ws_url(base_url)
        self._token = token
        self.options = options
        self.name = name
        self.limits = p.Limits()
        self.reconnects = 0
        self._ws: Optional[ClientConnection] = None
        self._ready = False
        self._pending: dict[int, _Pending] = {}
        self._watches: dict[str, _Watch] = {}
        self._next_id = 1
        self._task: Optional[asyncio.Task[None]] = None
        self._opening: Optional[asyncio.Lock] = None
        self._closed = False
        self._dead: Optional[TetherError] = None
        self._changed = asyncio.Event()

    # ------------------------------------------------------------ public

    async def request(
        self,
        msg: p.Message,
        *,
        retry: bool,
        sink: Optional[Sink] = None,
        mode: Optional[Mode] = None,
        shell: bool = False,
    ) -> p.Message:
        """Sends ``msg`` (its id assigned here) and returns the reply; an
        ``error`` reply is raised as its exception. ``retry``: safe to send
        again after a drop. ``sink``: for a start or attach, where the
        attachment's events go (registered before any output can arrive)."""
        fut = await self.submit(msg, retry=retry, sink=sink, mode=mode, shell=shell)
        return await fut

    async def submit(
        self,
        msg: p.Message,
        *,
        retry: bool,
        sink: Optional[Sink] = None,
        mode: Optional[Mode] = None,
        shell: bool = False,
    ) -> asyncio.Future[p.Message]:
        """:meth:`request` without waiting for the reply: returns its
        future once the request is sent (or queued until a reconnect)."""
        await self._ensure_open()
        if self._dead is not None:
            raise self._dead
        msg.id = self._next_id  # type: ignore[attr-defined]
        self._next_id += 1
        fut: asyncio.Future[p.Message] = asyncio.get_running_loop().create_future()
        pend = _Pending(msg, fut, retry, sink=sink, mode=mode or Mode(), shell=shell)
        self._pending[msg.id] = pend  # type: ignore[attr-defined]
        if self._ready and self._ws is not None:
            pend.sent = True
            await self._send(self._ws, msg)
        return fut

    async def post(self, msg: p.Message) -> None:
        """Sends a request whose answer nobody waits for (an error is
        dropped)."""
        fut = await self.submit(msg, retry=False)
        fut.add_done_callback(_consume)

    async def send(self, msg: p.Message) -> None:
        """Sends a message that has no reply (``ack``) if connected; dropped
        otherwise (a re-attach starts a new window)."""
        if self._ready and self._ws is not None:
            await self._send(self._ws, msg)

    def kill_marked(self, command: str) -> None:
        """The caller killed ``command``: after a drop, its attachment is
        not remade (its reader learns how it ended by asking ``status``)."""
        w = self._watches.get(command)
        if w is not None:
            w.killed = True

    def unwatch(self, command: str, sink: Sink) -> bool:
        """Forgets ``sink``'s attachment to ``command``; True if it was the
        current one (then the caller detaches it at the daemon)."""
        w = self._watches.get(command)
        if w is not None and w.sink is sink:
            del self._watches[command]
            return True
        return False

    def set_size(self, command: str, size: p.TermSize) -> None:
        """A terminal's size, re-asserted when its attachment is remade."""
        w = self._watches.get(command)
        if w is not None:
            w.mode.size = size

    async def close(self) -> None:
        """Closes the WebSocket and ends the reader task; waiting calls get
        :class:`~tether.ConnectionLost`. Idempotent."""
        self._closed = True
        err = ConnectionLost("the client is closed")
        if self._dead is None:
            self._dead = err
        task, self._task = self._task, None
        ws, self._ws = self._ws, None
        self._ready = False
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:
                pass
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._fail_all(err)

    # ----------------------------------------------------------- opening

    async def _ensure_open(self) -> None:
        if self._task is not None or self._dead is not None:
            return
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._task is not None or self._dead is not None:
                return
            ws = await self._open()
            self._ws = ws
            self._ready = True
            self._task = asyncio.get_running_loop().create_task(self._drive(ws), name="tether-connection")

    async def _open(self) -> ClientConnection:
        try:
            return await websockets.connect(
                self._url,
                additional_headers={"Authorization": f"Bearer {self._token}"},
                subprotocols=[websockets.Subprotocol("tether.v1")],
                compression=None,
                open_timeout=self.options.connect_timeout,
                ping_interval=self.options.keepalive,
                ping_timeout=self.options.keepalive * 2,
                close_timeout=2,
                max_size=16 << 20,
                max_queue=64,
                user_agent_header="tether-sdk-python",
                ssl=ssl_context(self.options) if self._url.startswith("wss:") else None,
            )
        except InvalidStatus as e:
            status = e.response.status_code
            if status in (401, 403):
                raise AuthError(
                    f"the daemon refused the connection: HTTP {status}", code="unauthorized"
                ) from e
            raise ConnectionLost(f"cannot connect to {self._url}: HTTP {status}") from e
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
            raise ConnectionLost(f"cannot connect to {self._url}: {e}") from e

    @staticmethod
    async def _send(ws: ClientConnection, msg: p.Message) -> None:
        try:
            await ws.send(p.encode(msg))
        except ConnectionClosed:
            pass  # the reader notices and resends what is safe to resend

    # ------------------------------------------------------------ driver

    async def _drive(self, ws: ClientConnection) -> None:
        """Reads frames; after a drop, reconnects and resumes. Ends when the
        client closes or reconnecting gives up."""
        while True:
            code = await self._read(ws)
            self._ready = False
            self._ws = None
            if self._closed:
                return
            log.info("tether: connection lost (close code %s); reconnecting", code)
            self._on_lost()
            try:
                ws = await self._reconnect(code)
            except TetherError as e:
                # Everything waiting fails; the next request opens a new
                # connection (and fails at once if the daemon is still away).
                self._fail_all(e)
                self._task = None
                return
            self.reconnects += 1
            self._ws = ws
            await self._resume(ws)

    async def _read(self, ws: ClientConnection) -> Optional[int]:
        try:
            async for frame in ws:
                if isinstance(frame, str):
                    continue  # never sent on tether.v1
                try:
                    msg = p.decode(frame)
                except ValueError as e:
                    log.debug("tether: ignoring an undecodable frame: %s", e)
                    continue
                if msg is not None:
                    self._on_frame(msg)
        except ConnectionClosed:
            pass
        except Exception as e:
            log.debug("tether: reader failed: %r", e)
        rcvd = ws.close_code
        return rcvd

    async def _reconnect(self, code: Optional[int]) -> ClientConnection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.reconnect_for
        delay = 0.0 if code == 1001 else self.options.backoff_initial
        last: Optional[BaseException] = None
        while True:
            if delay:
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            try:
                return await self._open()
            except AuthError:
                raise
            except ConnectionLost as e:
                last = e
            if loop.time() >= deadline:
                raise ConnectionLost(
                    f"lost the connection to the daemon and could not reconnect within "
                    f"{self.options.reconnect_for:g} s: {last}"
                )
            delay = min(max(delay * 2, self.options.backoff_initial), self.options.backoff_max)

    def _on_lost(self) -> None:
        """What a drop does to requests and attachments in flight."""
        for rid, pend in list(self._pending.items()):
            if pend.resume is not None:
                del self._pending[rid]  # remade by _resume
            elif pend.sent and not pend.retry:
                del self._pending[rid]
                _fail(pend.fut, ConnectionLost("the connection dropped before the daemon answered"))
            elif pend.sent:
                pend.sent = False
                pend.repeated = True
        for command, w in list(self._watches.items()):
            if w.killed:
                del self._watches[command]
                w.sink._on_end(ConnectionLost("the connection dropped after a kill"), killed=True)

    async def _resume(self, ws: ClientConnection) -> None:
        """Re-attaches every watch from the offsets delivered, then sends
        again, in order, every request not answered; then the connection
        is ready for new requests."""
        for command, w in list(self._watches.items()):
            if w.killed:
                # Killed during the cut: not remade; its reader asks how it ended.
                del self._watches[command]
                w.sink._on_end(ConnectionLost("the connection dropped after a kill"), killed=True)
                continue
            msg = p.Attach(
                id=self._next_id,
                command=command,
                stdout_offset=w.next[0],
                stderr_offset=w.next[1],
                pace=w.mode.pace,
                screen=w.mode.terminal,
                size=w.mode.size,
                window_bytes=w.mode.window,
                client=self.name if w.mode.pace else None,
            )
            self._next_id += 1
            fut: asyncio.Future[p.Message] = asyncio.get_running_loop().create_future()
            fut.add_done_callback(_consume)
            self._pending[msg.id] = _Pending(msg, fut, True, sent=True, resume=command)
            await self._send(ws, msg)
        # New requests made meanwhile wait unsent in _pending: send until none is left.
        while True:
            unsent = sorted((rid for rid, q in self._pending.items() if not q.sent))
            if not unsent:
                break
            for rid in unsent:
                pend = self._pending.get(rid)
                if pend is None or pend.sent:
                    continue
                pend.sent = True
                await self._send(ws, pend.msg)
        if self._ws is ws:
            self._ready = True

    def _fail_all(self, err: TetherError) -> None:
        for pend in self._pending.values():
            _fail(pend.fut, err)
        self._pending.clear()
        watches, self._watches = self._watches, {}
        for w in watches.values():
            w.sink._on_end(err, killed=w.killed)

    # ------------------------------------------------------------ frames

    def _on_frame(self, msg: p.Message) -> None:
        if isinstance(msg, p.Output):
            self._on_output(msg)
        elif isinstance(msg, p.Gap):
            w = self._watches.get(msg.command)
            if w is not None:
                i = _STREAMS.index(msg.stream)
                if msg.first_held > w.next[i]:
                    start = max(w.next[i], msg.requested)
                    w.next[i] = msg.first_held
                    w.sink._on_event(GapEvent(msg.stream, start, msg.first_held))  # type: ignore[arg-type]
        elif isinstance(msg, p.Exit):
            w = self._watches.pop(msg.command, None)
            if w is not None:
                w.sink._on_exit(msg.status)
        elif isinstance(msg, p.Started):
            pend = self._pending.pop(msg.id, None)
            if pend is not None:
                if pend.sink is not None:
                    self._watch(msg.command, _Watch(pend.sink, [0, 0], pend.mode))
                _resolve(pend.fut, msg)
        elif isinstance(msg, p.Attached):
            pend = self._pending.pop(msg.id, None)
            if pend is not None:
                if pend.sink is not None:
                    w = _Watch(pend.sink, [msg.stdout_offset, msg.stderr_offset], pend.mode)
                    self._watch(msg.command, w)
                _resolve(pend.fut, msg)
        elif isinstance(msg, p.Screen):
            w = self._watches.get(msg.command)
            if w is not None:
                # The screen replaces what the viewer showed; output goes on at its offset.
                w.next[0] = msg.offset
                w.sink._on_event(ScreenEvent(msg.offset, msg.size, msg.data))
        elif isinstance(msg, p.Resized):
            w = self._watches.get(msg.command)
            if w is not None:
                w.sink._on_event(ResizedEvent(msg.size))
        elif isinstance(msg, p.Error):
            self._on_error(msg)
        elif isinstance(msg, p.Hello):
            self.limits = msg.limits
        else:
            rid = getattr(msg, "id", None)
            pend = self._pending.pop(rid, None) if rid is not None else None
            if pend is not None:
                _resolve(pend.fut, msg)

    def _on_output(self, msg: p.Output) -> None:
        w = self._watches.get(msg.command)
        if w is None:
            return
        i = _STREAMS.index(msg.stream)
        data, offset = msg.data, msg.offset
        end = offset + len(data)
        if end <= w.next[i]:
            return  # delivered before a reconnect
        if offset > w.next[i]:
            # Bytes missing without a gap frame: say so rather than hide it.
            w.sink._on_event(GapEvent(msg.stream, w.next[i], offset))  # type: ignore[arg-type]
        elif offset < w.next[i]:
            data = data[w.next[i] - offset :]
            offset = w.next[i]
        w.next[i] = end
        w.sink._on_event(OutputEvent(msg.stream, offset, data))  # type: ignore[arg-type]

    def _watch(self, command: str, w: _Watch) -> None:
        old = self._watches.get(command)
        self._watches[command] = w
        if old is not None and old.sink is not w.sink:
            old.sink._on_end(
                TetherError("superseded by a newer attach to the same command on this client"), killed=False
            )

    def _on_error(self, msg: p.Error) -> None:
        err = None
        pend = self._pending.pop(msg.id, None) if msg.id is not None else None
        if pend is None:
            if msg.code != "not_found":
                log.warning("tether: daemon error: %s: %s", msg.code, msg.message)
            return
        err = from_code(msg.code, msg.message, msg.errno, shell=pend.shell)
        if pend.resume is not None:
            # The command did not survive (removed, expired, a daemon that
            # restarted without it).
            w = self._watches.pop(pend.resume, None)
            if w is not None:
                w.sink._on_end(err, killed=w.killed)
            return
        done_before = pend.repeated and (
            (isinstance(pend.msg, p.Kill) and msg.code == "not_running")
            or (isinstance(pend.msg, (p.Remove, p.ShellClose)) and msg.code == "not_found")
        )
        if done_before:
            _resolve(pend.fut, p.Ok(id=msg.id or 0))
            return
        _fail(pend.fut, err)


def _resolve(fut: asyncio.Future[p.Message], msg: p.Message) -> None:
    if not fut.done():
        fut.set_result(msg)


def _fail(fut: asyncio.Future[p.Message], err: BaseException) -> None:
    if not fut.done():
        fut.set_exception(err)


def _consume(fut: asyncio.Future[p.Message]) -> None:
    if not fut.cancelled():
        fut.exception()


def client_name() -> str:
    """A random client name: pacing attachments carry it, so a re-attach
    replaces the pacing of the lost connection's attachment at once."""
    return "py-" + secrets.token_hex(8)
