"""What the API hands back: output events in arrival order, and the result
of a command (:class:`ExecResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from ._errors import CommandFailed, CommandTimeout
from ._proto import ExitStatus, TermSize

StreamName = Literal["stdout", "stderr"]


@dataclass(frozen=True)
class OutputEvent:
    """Bytes a command wrote: ``data`` starts at absolute ``offset`` of
    ``stream``. Output is bytes, not text: a chunk may end inside a UTF-8
    sequence."""

    stream: StreamName
    offset: int
    data: bytes

    @property
    def end(self) -> int:
        """The offset one past this chunk."""
        return self.offset + len(self.data)


@dataclass(frozen=True)
class GapEvent:
    """Bytes ``[start, end)`` of ``stream`` are lost for this reader: the
    daemon's ring no longer held them (a reader that fell a whole ring
    behind without pacing, or attached late). Output continues at ``end``."""

    stream: StreamName
    start: int
    end: int

    @property
    def lost(self) -> int:
        """How many bytes were lost."""
        return self.end - self.start


@dataclass(frozen=True)
class ScreenEvent:
    """A terminal command's whole screen as of stdout ``offset``: ``data``
    written to a freshly reset terminal of ``size`` redraws it."""

    offset: int
    size: TermSize
    data: bytes


@dataclass(frozen=True)
class ResizedEvent:
    """A terminal command's size changed (any client may resize it)."""

    size: TermSize


Event = Union[OutputEvent, GapEvent, ScreenEvent, ResizedEvent]
"""What iterating a :class:`~tether.CommandHandle` yields."""


@dataclass
class ExecResult:
    """How a command ended, with its captured output.

    Attributes:
        command_id: the daemon's id of the command.
        exit_code: the conventional shell exit code: the code it exited
            with, else 128 + the signal that ended it (255 when neither).
        signal: the signal number that ended it, or None.
        reason: why it ended: ``exited``, ``timed_out``, ``idle_timeout``,
            ``killed``, ``disconnected``, ``output_limit``,
            ``spawn_failed``, ``shell_closed``.
        stdout: what it wrote to stdout (captured part).
        stderr: what it wrote to stderr (captured part).
        output: both streams' bytes in the order they arrived.
        truncated: output was dropped: past ``max_output_bytes``, or lost
            in a gap (see ``lost_bytes``).
        lost_bytes: bytes lost in gaps (0 for paced runs).
        duration: seconds from spawn to exit.
        pid: the process id (for a shell command, the shell's).
        status: the daemon's full exit record (resource usage, offsets).
    """

    command_id: str
    exit_code: int
    signal: Optional[int]
    reason: str
    stdout: bytes = b""
    stderr: bytes = b""
    output: bytes = b""
    truncated: bool = False
    lost_bytes: int = 0
    duration: float = 0.0
    pid: Optional[int] = None
    status: Optional[ExitStatus] = field(default=None, repr=False)

    @property
    def stdout_text(self) -> str:
        """stdout decoded as UTF-8 (invalid bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        """stderr decoded as UTF-8 (invalid bytes replaced)."""
        return self.stderr.decode("utf-8", "replace")

    @property
    def output_text(self) -> str:
        """Both streams interleaved, decoded as UTF-8."""
        return self.output.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        """It exited by itself with code 0."""
        return self.exit_code == 0 and self.reason == "exited"

    @property
    def timed_out(self) -> bool:
        """Its ``timeout`` fired."""
        return self.reason == "timed_out"

    def check(self) -> ExecResult:
        """Raises :class:`~tether.CommandTimeout` if it timed out,
        :class:`~tether.CommandFailed` if it did not exit 0; else returns
        itself.

        >>> client.exec("make test").check().stdout_text  # doctest: +SKIP
        """
        if self.timed_out:
            raise CommandTimeout(f"command {self.command_id} timed out", result=self)
        if not self.ok:
            how = f"signal {self.signal}" if self.signal is not None else f"code {self.exit_code}"
            raise CommandFailed(
                f"command {self.command_id} failed ({self.reason}, {how}): {_tail(self.stderr)}", result=self
            )
        return self

    @classmethod
    def from_status(
        cls,
        command_id: str,
        status: ExitStatus,
        *,
        pid: Optional[int] = None,
        stdout: bytes = b"",
        stderr: bytes = b"",
        output: bytes = b"",
        lost_bytes: int = 0,
    ) -> ExecResult:
        """A result from the daemon's exit record and the captured bytes."""
        return cls(
            command_id=command_id,
            exit_code=status.shell_code,
            signal=status.signal,
            reason=status.reason,
            stdout=stdout,
            stderr=stderr,
            output=output,
            truncated=status.truncated or lost_bytes > 0,
            lost_bytes=lost_bytes,
            duration=status.wall_ms / 1000,
            pid=pid,
            status=status,
        )


def _tail(b: bytes, n: int = 300) -> str:
    text = b[-n:].decode("utf-8", "replace").strip()
    return text or "(no stderr)"
