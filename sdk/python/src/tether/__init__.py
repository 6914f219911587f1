"""tether: run commands on a tether daemon, from Python.

Buffered (:meth:`Client.exec`), streamed (:meth:`Client.run`), detached and
re-attached (:meth:`Client.exec_detached`, :meth:`Client.attach`,
:meth:`Client.logs`), subprocess-like (:meth:`Client.popen`), in named shells
(:meth:`Client.shell`), on terminals (:meth:`Client.pty`), and files
(:attr:`Client.files`). :class:`AsyncClient` is the same API for asyncio.
Connections that drop are remade and every stream resumes from its last byte.

    >>> import tether
    >>> with tether.Client() as c:  # TETHER_URL, TETHER_TOKEN or the token file
    ...     print(c.exec("echo hello").stdout_text)  # doctest: +SKIP
    hello
"""

from ._client import AsyncClient, Command
from ._config import Options
from ._errors import (
    AuthError,
    BadRequest,
    CommandFailed,
    CommandNotFound,
    CommandTimeout,
    ConnectionLost,
    FileError,
    FileExists,
    FileNotFound,
    FilePermissionError,
    InsecureTransport,
    LimitExceeded,
    NotFound,
    NotRunning,
    OutsideRoot,
    ServerError,
    ShellClosed,
    ShellNotFound,
    ShuttingDown,
    SpawnError,
    StdinClosed,
    TetherError,
)
from ._files import AsyncFiles, Files, FileStat
from ._handle import AsyncCommandHandle
from ._popen import DEVNULL, PIPE, STDOUT, AsyncPopen, Popen
from ._proto import CommandInfo, ExitStatus, HistoryEntry, Limits, ShellInfo, StreamInfo, TermSize
from ._shell import AsyncPtyHandle, AsyncShell
from ._sync import Client, CommandHandle, PtyHandle, Shell
from ._types import Event, ExecResult, GapEvent, OutputEvent, ResizedEvent, ScreenEvent

__version__ = "0.1.0"

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "AsyncClient",
    "AsyncCommandHandle",
    "AsyncFiles",
    "AsyncPopen",
    "AsyncPtyHandle",
    "AsyncShell",
    "AuthError",
    "BadRequest",
    "Client",
    "Command",
    "CommandFailed",
    "CommandHandle",
    "CommandInfo",
    "CommandNotFound",
    "CommandTimeout",
    "ConnectionLost",
    "Event",
    "ExecResult",
    "ExitStatus",
    "FileError",
    "FileExists",
    "FileNotFound",
    "FilePermissionError",
    "FileStat",
    "Files",
    "GapEvent",
    "HistoryEntry",
    "InsecureTransport",
    "LimitExceeded",
    "Limits",
    "NotFound",
    "NotRunning",
    "Options",
    "OutputEvent",
    "OutsideRoot",
    "Popen",
    "PtyHandle",
    "ResizedEvent",
    "ScreenEvent",
    "ServerError",
    "Shell",
    "ShellClosed",
    "ShellInfo",
    "ShellNotFound",
    "ShuttingDown",
    "SpawnError",
    "StdinClosed",
    "StreamInfo",
    "TermSize",
    "TetherError",
]
