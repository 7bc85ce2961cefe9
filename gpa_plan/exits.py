"""How `gpa-plan` ends when the world around it fails: Ctrl-C, a reader that went away, a standard
output that cannot be written.

The documented statuses (docs/exit-codes.md) are 0 (clean), 1 (findings, files that do not load) and
2 (usage and internal errors). CI reads 1 as findings, so nothing else may end with it: an
interrupted run ends with 130 and a run whose reader went away (``gpa-plan check ... | head -1``)
with 141, the statuses a shell shows for a process killed by SIGINT and SIGPIPE (128 + 2, 128 + 13).
Python ignores SIGPIPE and raises BrokenPipeError instead, so 141 is returned, quietly, rather than
the process being killed. A standard output that cannot be written (closed with ``>&-``, a full
disk) is exit 2 with a one-line message.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from collections.abc import Callable
from typing import NoReturn, TextIO

import click

INTERRUPTED = 130
READER_GONE = 141
OUTPUT_FAILED = 2

# Errors of writing standard output once it was opened; any other OSError is a bug here, as
# gpa-plan's own files report their errors where they are read or written.
_OUTPUT_ERRNOS = frozenset({errno.EBADF, errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


class _ClosedOutput(io.RawIOBase):
    """Standard output for a process started without one: every write fails with EBADF."""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


def status_of(code: object) -> int:
    """The exit status a ``SystemExit(code)`` stands for: None is 0 and an int is itself; any
    other value (never raised by gpa-plan) is said on stderr and is 2, not Python's 1, which
    CI would read as findings."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    say(f"gpa-plan: internal error: {code}")
    return OUTPUT_FAILED


def stand_in_for_closed_stdout() -> None:
    """Give a process started with file descriptor 1 closed (``>&-``; Python then sets
    sys.stdout to None) a standard output whose writes fail, so that the first write reports
    it (exit 2) and a command that writes nothing there, such as ``allocate -o FILE``, runs."""
    if sys.stdout is None:
        # write_through: no text waits in a buffer, so nothing fails again at exit.
        sys.stdout = io.TextIOWrapper(_ClosedOutput(), write_through=True)


def flush_stdout() -> None:
    """Flush standard output now, so that a closed pipe or a full disk is noticed here and
    given its exit status, not reported by the interpreter at exit."""
    if sys.stdout is not None:
        sys.stdout.flush()


def click_met_a_closed_pipe() -> bool:
    """Whether click itself caught a closed pipe: it then wraps sys.stdout (and stderr) in a
    PacifyFlushWrapper and exits 1, which CI would read as findings. Undoes the wrapping."""
    stdout = _pacified(sys.stdout)
    if stdout is None:
        return False
    sys.stdout = stdout
    sys.stderr = _pacified(sys.stderr) or sys.stderr
    return True


def _pacified(stream: object) -> TextIO | None:
    """The stream click's PacifyFlushWrapper wraps, or None for any other stream. Known by its
    class name: click 8.5 made the class private (``_PacifyFlushWrapper``)."""
    if type(stream).__name__.lstrip("_") != "PacifyFlushWrapper":
        return None
    wrapped: TextIO | None = getattr(stream, "wrapped", None)
    return wrapped


def say(line: str) -> None:
    """``line`` on standard error, if it can be written there (see ``say_with``)."""
    say_with(lambda: click.echo(line, err=True))


def say_with(show: Callable[[], None]) -> None:
    """Run ``show``, which writes to standard error, ignoring a standard error that cannot be
    written (closed, a full disk): a run that ends on an error still ends with that error's
    status, which is then all that tells it; a failed message must not turn it into 1."""
    try:
        show()
    except OSError:
        # What the failed write left in the stream's buffer would fail again as the
        # interpreter exits, turning the status into 120.
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115


def interrupted() -> NoReturn:
    """End a run stopped by Ctrl-C: a short note on stderr, status 130, no traceback."""
    say("gpa-plan: interrupted")
    sys.exit(INTERRUPTED)


def is_output_failure(err: BaseException) -> bool:
    """Whether ``err`` is standard output failing: its reader gone, or a write refused."""
    return isinstance(err, BrokenPipeError) or (
        isinstance(err, OSError) and err.filename is None and err.errno in _OUTPUT_ERRNOS
    )


def output_failed(err: OSError, as_program: bool) -> NoReturn:
    """End a run whose standard output failed: quietly with 141 when the reader went away,
    else with a one-line message and status 2. ``as_program``: this process is gpa-plan
    itself, whose standard output may be pointed at /dev/null so that the interpreter's last
    flush at exit cannot fail again ("Exception ignored ... BrokenPipeError")."""
    if as_program:
        _discard_stdout()
    if isinstance(err, BrokenPipeError):
        sys.exit(READER_GONE)
    reason = err.strerror or str(err)
    if err.errno == errno.EBADF:
        hint = "standard output is closed; redirect it to a file or to /dev/null instead"
    else:
        hint = "check the file or device it is redirected to"
    say(f"gpa-plan: cannot write the output ({reason}): {hint}")
    sys.exit(OUTPUT_FAILED)


def _discard_stdout() -> None:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file descriptor (the stand-in for a closed one): nothing to flush
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
