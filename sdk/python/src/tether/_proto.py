"""The wire protocol (``protocol/PROTOCOL.md``): every message and shared
structure as a dataclass, and their MessagePack and JSON encodings.

Each dataclass lists its fields in the order the daemon writes them; a
field's metadata says when an encoder leaves it out (``skip``: unset,
false, empty, or true for ``attach``) and how its value is nested
(``kind``: ``bytes`` for payloads, a dataclass, or a list of one). With
those two facts one generic encoder writes exactly the bytes the Rust
encoder writes (the golden frames in ``protocol/vectors`` prove it), and one
generic decoder reads fields by name, ignores unknown ones and defaults
missing optional ones, as the protocol asks.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, TypeVar, Union

import msgpack

__all__ = [
    "CLIENT_MESSAGES",
    "SERVER_MESSAGES",
    "CommandInfo",
    "ExitStatus",
    "HistoryEntry",
    "Limits",
    "PtySpec",
    "ShellClosedInfo",
    "ShellInfo",
    "ShellRunSpec",
    "ShellSpec",
    "StartSpec",
    "StreamInfo",
    "TermSize",
    "decode",
    "encode",
]

T = TypeVar("T")


def _none(v: Any) -> bool:
    return v is None


def _false(v: Any) -> bool:
    return v is False


def _true(v: Any) -> bool:
    return v is True


def _empty(v: Any) -> bool:
    return not v


def _zero(v: Any) -> bool:
    return bool(v == 0)


def _f(
    default: Any = dataclasses.MISSING,
    *,
    skip: Optional[Callable[[Any], bool]] = None,
    kind: Any = None,
    factory: Any = dataclasses.MISSING,
) -> Any:
    meta = {"skip": skip, "kind": kind}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _opt(kind: Any = None) -> Any:
    """An optional field: absent (or null) is None, and None is left out."""
    return _f(None, skip=_none, kind=kind)


def _map() -> Any:
    """A string map, left out when empty."""
    return _f(factory=dict, skip=_empty)


# ---------------------------------------------------------------- structures


@dataclass
class TermSize:
    """A terminal size, rows and columns, each 1..=500."""

    rows: int = _f()
    cols: int = _f()


@dataclass
class PtySpec:
    """Run a command on a pseudo-terminal of this size."""

    rows: int = _f(24)
    cols: int = _f(80)
    term: Optional[str] = _opt()


@dataclass
class StartSpec:
    """What to run and how (``start.spec``); see PROTOCOL.md section 8."""

    argv: list[str] = _f(factory=list, skip=_empty)
    shell: Optional[str] = _opt()
    shell_program: Optional[str] = _opt()
    cwd: Optional[str] = _opt()
    env: dict[str, str] = _map()
    env_clear: bool = _f(False, skip=_false)
    stdin: Optional[bytes] = _opt("bytes")
    close_stdin: bool = _f(False, skip=_false)
    name: Optional[str] = _opt()
    labels: dict[str, str] = _map()
    timeout_ms: Optional[int] = _opt()
    idle_timeout_ms: Optional[int] = _opt()
    ttl_ms: Optional[int] = _opt()
    kill_on_disconnect: bool = _f(False, skip=_false)
    max_output_bytes: Optional[int] = _opt()
    output_limit: Optional[str] = _opt()
    ring_bytes: Optional[int] = _opt()
    kill_grace_ms: Optional[int] = _opt()
    attach: bool = _f(True, skip=_true)
    pace: bool = _f(False, skip=_false)
    pty: Optional[PtySpec] = _opt(PtySpec)
    drain_grace_ms: Optional[int] = _opt()
    request_key: Optional[str] = _opt()
    window_bytes: Optional[int] = _opt()
    client: Optional[str] = _opt()


@dataclass
class ShellSpec:
    """How to create a named shell (``shell_create.spec``)."""

    name: Optional[str] = _opt()
    cwd: Optional[str] = _opt()
    env: dict[str, str] = _map()
    program: Optional[str] = _opt()
    idle_ttl_ms: Optional[int] = _opt()


@dataclass
class ShellRunSpec:
    """A script for a named shell (``shell_run.spec``)."""

    script: str = _f("")
    stdin: Optional[bytes] = _opt("bytes")
    close_stdin: bool = _f(False, skip=_false)
    labels: dict[str, str] = _map()
    timeout_ms: Optional[int] = _opt()
    idle_timeout_ms: Optional[int] = _opt()
    ttl_ms: Optional[int] = _opt()
    kill_on_disconnect: bool = _f(False, skip=_false)
    max_output_bytes: Optional[int] = _opt()
    output_limit: Optional[str] = _opt()
    ring_bytes: Optional[int] = _opt()
    kill_grace_ms: Optional[int] = _opt()
    attach: bool = _f(True, skip=_true)
    pace: bool = _f(False, skip=_false)
    drain_grace_ms: Optional[int] = _opt()
    request_key: Optional[str] = _opt()
    window_bytes: Optional[int] = _opt()
    client: Optional[str] = _opt()


@dataclass
class Limits:
    """The limits a daemon announces in ``hello``."""

    max_frame_bytes: int = _f(1 << 20)
    max_chunk_bytes: int = _f(256 << 10)
    max_commands: int = _f(0)
    default_ring_bytes: int = _f(1 << 20)
    max_ring_bytes: int = _f(0)
    stdin_window_bytes: int = _f(4 << 20)


@dataclass
class ExitStatus:
    """How a command ended, with its resource usage.

    ``reason`` is one of ``exited``, ``timed_out``, ``idle_timeout``,
    ``killed``, ``disconnected``, ``output_limit``, ``spawn_failed``,
    ``shell_closed`` (a newer daemon may add others). ``stdout_bytes`` and
    ``stderr_bytes`` are the streams' final end offsets.
    """

    code: Optional[int] = _f(None)
    signal: Optional[int] = _f(None)
    core_dumped: bool = _f(False)
    reason: str = _f("exited")
    wall_ms: int = _f(0)
    user_us: int = _f(0)
    sys_us: int = _f(0)
    max_rss_kb: int = _f(0)
    stdout_bytes: int = _f(0)
    stderr_bytes: int = _f(0)
    truncated: bool = _f(False)
    cwd: Optional[str] = _opt()

    @property
    def shell_code(self) -> int:
        """The conventional shell exit code: ``code``, else 128 + ``signal``,
        else 255."""
        if self.code is not None:
            return self.code
        if self.signal is not None:
            return 128 + self.signal
        return 255


@dataclass
class StreamInfo:
    """The offsets of one stream: the first still held, and the end."""

    first_held: int = _f(0)
    end: int = _f(0)


@dataclass
class CommandInfo:
    """A command as ``list`` and ``status`` show it. ``state`` is
    ``queued``, ``running`` or ``exited``."""

    command: str = _f("")
    name: Optional[str] = _opt()
    labels: dict[str, str] = _f(factory=dict)
    argv: list[str] = _f(factory=list)
    argv_truncated: bool = _f(False, skip=_false)
    pid: int = _f(0)
    state: str = _f("running")
    started_at_ms: int = _f(0)
    exit: Optional[ExitStatus] = _opt(ExitStatus)
    stdout: StreamInfo = _f(factory=StreamInfo, kind=StreamInfo)
    stderr: StreamInfo = _f(factory=StreamInfo, kind=StreamInfo)
    attached: int = _f(0)
    pty: Optional[TermSize] = _opt(TermSize)
    shell: Optional[str] = _opt()


@dataclass
class ShellClosedInfo:
    """Why a named shell closed: ``reason`` is ``closed``, ``exited``,
    ``idle_ttl``, ``stuck`` or ``shutdown``."""

    reason: str = _f("closed")
    code: Optional[int] = _opt()
    signal: Optional[int] = _opt()
    message: str = _f("")


@dataclass
class ShellInfo:
    """A named shell as ``shell_create`` and ``shell_list`` show it;
    ``state`` is ``idle``, ``busy`` or ``closed``."""

    name: str = _f("")
    program: str = _f("")
    pid: int = _f(0)
    state: str = _f("idle")
    cwd: str = _f("")
    queued: int = _f(0)
    running: Optional[str] = _opt()
    commands: int = _f(0)
    created_at_ms: int = _f(0)
    last_used_ms: int = _f(0)
    closed: Optional[ShellClosedInfo] = _opt(ShellClosedInfo)


@dataclass
class HistoryEntry:
    """One command of a named shell's history."""

    command: str = _f("")
    script: str = _f("")
    script_truncated: bool = _f(False, skip=_false)
    state: str = _f("queued")
    exit_code: Optional[int] = _opt()
    reason: Optional[str] = _opt()
    submitted_at_ms: int = _f(0)
    started_at_ms: Optional[int] = _opt()
    ended_at_ms: Optional[int] = _opt()
    cwd: Optional[str] = _opt()


# ------------------------------------------------------------------ messages


class Message:
    """A protocol message: a dataclass with its wire ``type``."""

    TYPE: ClassVar[str] = ""


@dataclass
class Start(Message):
    TYPE: ClassVar[str] = "start"
    id: int = _f(0)
    spec: StartSpec = _f(factory=StartSpec, kind=StartSpec)


@dataclass
class Attach(Message):
    TYPE: ClassVar[str] = "attach"
    id: int = _f(0)
    command: str = _f("")
    stdout_offset: int = _f(0)
    stderr_offset: int = _f(0)
    tail_bytes: Optional[int] = _opt()
    pace: bool = _f(False, skip=_false)
    screen: bool = _f(False, skip=_false)
    size: Optional[TermSize] = _opt(TermSize)
    window_bytes: Optional[int] = _opt()
    client: Optional[str] = _opt()


@dataclass
class Resize(Message):
    TYPE: ClassVar[str] = "resize"
    id: int = _f(0)
    command: str = _f("")
    size: TermSize = _f(factory=lambda: TermSize(24, 80), kind=TermSize)


@dataclass
class Detach(Message):
    TYPE: ClassVar[str] = "detach"
    id: int = _f(0)
    command: str = _f("")


@dataclass
class Stdin(Message):
    TYPE: ClassVar[str] = "stdin"
    id: int = _f(0)
    command: str = _f("")
    data: bytes = _f(b"", kind="bytes")
    writer: Optional[str] = _opt()
    offset: Optional[int] = _opt()


@dataclass
class CloseStdin(Message):
    TYPE: ClassVar[str] = "close_stdin"
    id: int = _f(0)
    command: str = _f("")
    writer: Optional[str] = _opt()
    offset: Optional[int] = _opt()


@dataclass
class Ack(Message):
    TYPE: ClassVar[str] = "ack"
    id: int = _f(0, skip=_zero)
    command: str = _f("")
    stdout_offset: int = _f(0)
    stderr_offset: int = _f(0)


@dataclass
class Signal(Message):
    TYPE: ClassVar[str] = "signal"
    id: int = _f(0)
    command: str = _f("")
    signal: str = _f("")


@dataclass
class Kill(Message):
    TYPE: ClassVar[str] = "kill"
    id: int = _f(0)
    command: str = _f("")


@dataclass
class List(Message):
    TYPE: ClassVar[str] = "list"
    id: int = _f(0)
    limit: Optional[int] = _opt()
    cursor: Optional[str] = _opt()


@dataclass
class Status(Message):
    TYPE: ClassVar[str] = "status"
    id: int = _f(0)
    command: str = _f("")


@dataclass
class Remove(Message):
    TYPE: ClassVar[str] = "remove"
    id: int = _f(0)
    command: str = _f("")


@dataclass
class ShellCreate(Message):
    TYPE: ClassVar[str] = "shell_create"
    id: int = _f(0)
    spec: ShellSpec = _f(factory=ShellSpec, kind=ShellSpec)


@dataclass
class ShellRun(Message):
    TYPE: ClassVar[str] = "shell_run"
    id: int = _f(0)
    shell: str = _f("")
    spec: ShellRunSpec = _f(factory=ShellRunSpec, kind=ShellRunSpec)


@dataclass
class ShellListReq(Message):
    TYPE: ClassVar[str] = "shell_list"
    id: int = _f(0)


@dataclass
class ShellHistoryReq(Message):
    TYPE: ClassVar[str] = "shell_history"
    id: int = _f(0)
    shell: str = _f("")


@dataclass
class ShellClose(Message):
    TYPE: ClassVar[str] = "shell_close"
    id: int = _f(0)
    shell: str = _f("")


@dataclass
class Hello(Message):
    TYPE: ClassVar[str] = "hello"
    version: int = _f(1)
    server: str = _f("")
    limits: Limits = _f(factory=Limits, kind=Limits)


@dataclass
class Started(Message):
    TYPE: ClassVar[str] = "started"
    id: int = _f(0)
    command: str = _f("")
    pid: int = _f(0)


@dataclass
class Attached(Message):
    TYPE: ClassVar[str] = "attached"
    id: int = _f(0)
    command: str = _f("")
    stdout_offset: int = _f(0)
    stderr_offset: int = _f(0)


@dataclass
class Screen(Message):
    TYPE: ClassVar[str] = "screen"
    command: str = _f("")
    offset: int = _f(0)
    size: TermSize = _f(factory=lambda: TermSize(24, 80), kind=TermSize)
    data: bytes = _f(b"", kind="bytes")


@dataclass
class Resized(Message):
    TYPE: ClassVar[str] = "resized"
    command: str = _f("")
    size: TermSize = _f(factory=lambda: TermSize(24, 80), kind=TermSize)


@dataclass
class Output(Message):
    TYPE: ClassVar[str] = "output"
    command: str = _f("")
    stream: str = _f("stdout")
    offset: int = _f(0)
    data: bytes = _f(b"", kind="bytes")


@dataclass
class Gap(Message):
    TYPE: ClassVar[str] = "gap"
    command: str = _f("")
    stream: str = _f("stdout")
    requested: int = _f(0)
    first_held: int = _f(0)


@dataclass
class Exit(Message):
    TYPE: ClassVar[str] = "exit"
    command: str = _f("")
    status: ExitStatus = _f(factory=ExitStatus, kind=ExitStatus)


@dataclass
class Ok(Message):
    TYPE: ClassVar[str] = "ok"
    id: int = _f(0)


@dataclass
class ListReply(Message):
    TYPE: ClassVar[str] = "list"
    id: int = _f(0)
    commands: list[CommandInfo] = _f(factory=list, kind=[CommandInfo])
    next: Optional[str] = _f(None)


@dataclass
class StatusReply(Message):
    TYPE: ClassVar[str] = "status"
    id: int = _f(0)
    info: CommandInfo = _f(factory=CommandInfo, kind=CommandInfo)


@dataclass
class ShellReply(Message):
    TYPE: ClassVar[str] = "shell"
    id: int = _f(0)
    info: ShellInfo = _f(factory=ShellInfo, kind=ShellInfo)
    created: bool = _f(False)


@dataclass
class ShellListReply(Message):
    TYPE: ClassVar[str] = "shell_list"
    id: int = _f(0)
    shells: list[ShellInfo] = _f(factory=list, kind=[ShellInfo])


@dataclass
class ShellHistoryReply(Message):
    TYPE: ClassVar[str] = "shell_history"
    id: int = _f(0)
    shell: str = _f("")
    entries: list[HistoryEntry] = _f(factory=list, kind=[HistoryEntry])


@dataclass
class Error(Message):
    TYPE: ClassVar[str] = "error"
    id: Optional[int] = _opt()
    code: str = _f("internal")
    message: str = _f("")
    errno: Optional[int] = _opt()


CLIENT_MESSAGES: dict[str, type[Message]] = {
    c.TYPE: c
    for c in (
        Start,
        Attach,
        Resize,
        Detach,
        Stdin,
        CloseStdin,
        Ack,
        Signal,
        Kill,
        List,
        Status,
        Remove,
        ShellCreate,
        ShellRun,
        ShellListReq,
        ShellHistoryReq,
        ShellClose,
    )
}
"""Every message a client sends, by ``type``."""

SERVER_MESSAGES: dict[str, type[Message]] = {
    c.TYPE: c
    for c in (
        Hello,
        Started,
        Attached,
        Screen,
        Resized,
        Output,
        Gap,
        Exit,
        Ok,
        ListReply,
        StatusReply,
        ShellReply,
        ShellListReply,
        ShellHistoryReply,
        Error,
    )
}
"""Every message the daemon sends, by ``type``."""


# ------------------------------------------------------------------ encoding


_FIELDS: dict[type, tuple[tuple[str, Any, Any], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, Any, Any], ...]:
    """(name, skip, kind) of each field of a wire dataclass, cached."""
    got = _FIELDS.get(cls)
    if got is None:
        got = tuple((f.name, f.metadata.get("skip"), f.metadata.get("kind")) for f in dataclasses.fields(cls))
        _FIELDS[cls] = got
    return got


def to_wire(obj: Any, *, json_bytes: bool = False) -> Any:
    """A dataclass (message or structure) as the map the protocol sends:
    fields in declaration order, skipped ones left out. ``json_bytes``:
    payloads as base64 strings (the JSON encoding) instead of bytes."""
    out: dict[str, Any] = {}
    if isinstance(obj, Message):
        out["type"] = obj.TYPE
    for name, skip, kind in _fields(type(obj)):
        v = getattr(obj, name)
        if skip is not None and skip(v):
            continue
        out[name] = _value_to_wire(v, kind, json_bytes)
    return out


def _value_to_wire(v: Any, kind: Any, json_bytes: bool) -> Any:
    if v is None:
        return None
    if kind == "bytes":
        return base64.b64encode(v).decode("ascii") if json_bytes else bytes(v)
    if isinstance(kind, list):
        return [to_wire(x, json_bytes=json_bytes) for x in v]
    if kind is not None:
        return to_wire(v, json_bytes=json_bytes)
    return v


def from_wire(cls: type[T], data: Any) -> T:
    """A dataclass of type ``cls`` read from a decoded map: fields by name,
    unknown ones ignored, missing ones defaulted."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a map, got {type(data).__name__}")
    kwargs: dict[str, Any] = {}
    for name, _skip, kind in _fields(cls):
        if name not in data:
            continue
        v = data[name]
        if v is None:
            kwargs[name] = None
        elif kind == "bytes":
            kwargs[name] = _bytes_from_wire(v)
        elif isinstance(kind, list):
            kwargs[name] = [from_wire(kind[0], x) for x in v]
        elif kind is not None:
            kwargs[name] = from_wire(kind, v)
        else:
            kwargs[name] = v
    return cls(**kwargs)


def _bytes_from_wire(v: Any) -> bytes:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        return base64.b64decode(v, validate=True)
    raise ValueError(f"expected bytes, got {type(v).__name__}")


def encode(msg: Message, *, json_encoding: bool = False) -> bytes:
    """One frame: MessagePack (``tether.v1``) or compact JSON
    (``tether.v1.json``)."""
    if json_encoding:
        return json.dumps(to_wire(msg, json_bytes=True), separators=(",", ":")).encode()
    return msgpack.packb(to_wire(msg), use_bin_type=True)  # type: ignore[no-any-return]


def decode(
    frame: Union[bytes, str], *, server: bool = True, json_encoding: bool = False
) -> Optional[Message]:
    """The message in one frame, or None for a ``type`` this client does not
    know (a newer daemon's; the protocol asks clients to ignore those).
    ``server``: a daemon's frame (else a client's). Raises ``ValueError`` on
    a frame that does not decode."""
    if json_encoding or isinstance(frame, str):
        data = json.loads(frame)
    else:
        data = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError("a frame without a string `type`")
    table = SERVER_MESSAGES if server else CLIENT_MESSAGES
    cls = table.get(data["type"])
    if cls is None:
        return None
    return from_wire(cls, data)
