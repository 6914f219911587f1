"""One exception hierarchy for everything the SDK raises.

Every error the daemon answers carries its machine-readable `code` (section
10 of PROTOCOL.md, or a files route's code) and, when the OS was behind it,
`errno`. :func:`from_code` maps a code to the most specific class, so callers
catch what they mean (``except CommandNotFound``) rather than compare
strings.
"""

from __future__ import annotations

import os
from typing import Optional

__all__ = [
    "AuthError",
    "BadRequest",
    "CommandFailed",
    "CommandNotFound",
    "CommandTimeout",
    "ConnectionLost",
    "FileError",
    "FileExists",
    "FileNotFound",
    "FilePermissionError",
    "LimitExceeded",
    "NotFound",
    "NotRunning",
    "OutsideRoot",
    "ServerError",
    "ShellClosed",
    "ShellNotFound",
    "ShuttingDown",
    "SpawnError",
    "StdinClosed",
    "TetherError",
]


class TetherError(Exception):
    """The base of every error this package raises.

    Attributes:
        code: the daemon's error code (``"not_found"``, ``"spawn_failed"``,
            ...), or a client-side code (``"connection_lost"``,
            ``"timeout"``, ``"failed"``).
        message: the human-readable explanation.
        errno: the OS error number behind it, when there is one.
    """

    code: str = "internal"

    def __init__(self, message: str, *, code: Optional[str] = None, errno: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.errno = errno

    def __str__(self) -> str:
        return self.message


class ConnectionLost(TetherError):
    """The connection to the daemon was lost and reconnecting gave up (or a
    request that is not safe to repeat, such as a signal, was in flight)."""

    code = "connection_lost"


class AuthError(TetherError):
    """The daemon refused the token (HTTP 401, or close code 1008 after the
    token was rotated), or refused the request's Origin (403)."""

    code = "unauthorized"


class InsecureTransport(AuthError):
    """The token would travel in clear text (``http://``) to another host;
    use ``https://``, or allow it (``Options(allow_insecure_token=True)``)."""

    code = "insecure_transport"


class BadRequest(TetherError, ValueError):
    """The daemon found the request malformed or out of range
    (``bad_request``, ``bad_frame``)."""

    code = "bad_request"


class NotFound(TetherError):
    """No such command or shell (it never existed, was removed, or expired)."""

    code = "not_found"


class CommandNotFound(NotFound):
    """No such command: never started, removed, or past its TTL."""


class ShellNotFound(NotFound):
    """No such named shell."""


class NotRunning(TetherError):
    """The command has already exited (or, for a signal, is still queued)."""

    code = "not_running"


class StdinClosed(TetherError):
    """The command's stdin is closed."""

    code = "stdin_closed"


class SpawnError(TetherError):
    """The process could not be started; ``errno`` and ``reason`` say why
    (``reason`` is the OS's text for the errno, e.g. "No such file or
    directory")."""

    code = "spawn_failed"

    @property
    def reason(self) -> str:
        """The OS's description of ``errno``, or the daemon's message."""
        return os.strerror(self.errno) if self.errno is not None else self.message


class LimitExceeded(TetherError):
    """A daemon limit was reached: commands, shells, ring memory, the stdin
    window or the request-body budget."""

    code = "limit_exceeded"


class ShuttingDown(TetherError):
    """The daemon is shutting down and accepts no new commands."""

    code = "shutting_down"


class ShellClosed(TetherError):
    """The named shell has closed; the message says why."""

    code = "shell_closed"


class ServerError(TetherError):
    """A daemon-side failure (``internal``), or a code this client does not
    know (treated as ``internal``, as the protocol asks)."""

    code = "internal"


class CommandTimeout(TetherError, TimeoutError):
    """A command ran past its timeout (``check=True``), or a client-side wait
    (``wait(timeout=...)``, ``communicate(timeout=...)``) ran out. Carries
    the result so far when there is one."""

    code = "timeout"

    def __init__(self, message: str, *, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class CommandFailed(TetherError):
    """Raised by ``check=True`` when a command exits non-zero (or by a
    signal). ``result`` is the :class:`~tether.ExecResult`."""

    code = "failed"

    def __init__(self, message: str, *, result: object) -> None:
        super().__init__(message)
        self.result = result


class FileError(TetherError):
    """A files route failed. ``kind`` is the daemon's code: ``not_found``,
    ``exists``, ``permission_denied``, ``outside_root`` (the path leads out
    of ``--files-root``), ``is_a_directory``, ``not_a_directory``,
    ``bad_path``, ``bad_archive``, ``special_file``, ``too_large``,
    ``no_space``, ``busy``, ``io``. ``path`` is the path asked for."""

    code = "io"

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        errno: Optional[int] = None,
        path: Optional[str] = None,
        status: Optional[int] = None,
    ) -> None:
        super().__init__(message, code=code, errno=errno)
        self.path = path
        self.status = status

    @property
    def kind(self) -> str:
        """The daemon's code for what went wrong (see the class doc)."""
        return self.code


class FileNotFound(FileError, FileNotFoundError):
    """Nothing at that path (or a missing parent)."""

    code = "not_found"


class FileExists(FileError, FileExistsError):
    """The path already exists, or a directory to remove is not empty."""

    code = "exists"


class FilePermissionError(FileError, PermissionError):
    """The OS refused (``permission_denied``)."""

    code = "permission_denied"


class OutsideRoot(FilePermissionError):
    """The path leads outside the daemon's ``--files-root``."""

    code = "outside_root"


_BY_CODE: dict[str, type[TetherError]] = {
    "bad_request": BadRequest,
    "bad_frame": BadRequest,
    "not_found": CommandNotFound,
    "spawn_failed": SpawnError,
    "not_running": NotRunning,
    "stdin_closed": StdinClosed,
    "limit_exceeded": LimitExceeded,
    "shutting_down": ShuttingDown,
    "internal": ServerError,
    "shell_closed": ShellClosed,
    "unauthorized": AuthError,
    "forbidden": AuthError,
}

_FILES_BY_CODE: dict[str, type[FileError]] = {
    "not_found": FileNotFound,
    "exists": FileExists,
    "permission_denied": FilePermissionError,
    "outside_root": OutsideRoot,
}


def from_code(code: str, message: str, errno: Optional[int] = None, *, shell: bool = False) -> TetherError:
    """The exception for a daemon error ``code``. ``shell``: the request named
    a shell, so ``not_found`` means :class:`ShellNotFound`."""
    if code == "not_found" and shell:
        return ShellNotFound(message, code=code, errno=errno)
    cls = _BY_CODE.get(code, ServerError)
    return cls(message, code=code, errno=errno)


def file_error(
    code: str, message: str, errno: Optional[int] = None, *, path: Optional[str] = None, status: int = 0
) -> TetherError:
    """The exception for a files route's error answer."""
    if code in ("unauthorized", "forbidden"):
        return AuthError(message, code=code)
    if code in ("bad_request", "limit_exceeded", "shutting_down"):
        return from_code(code, message, errno)
    cls = _FILES_BY_CODE.get(code, FileError)
    return cls(message, code=code, errno=errno, path=path, status=status)
