"""Reading what gpa-plan is given: one bounded reader for every input.

A path must name a regular file once symbolic links are followed (the shipped KVM selftests
layouts are symlinks); ``-`` means standard input where a command reads it. A FIFO, a device or
a directory is refused before anything is read from it, so a FIFO without a writer cannot hang
a run and ``/dev/zero`` cannot fill memory. Nothing larger than ``MAX_INPUT_BYTES`` is read: a
layout at KVM's memslot limit (32,764 memslots per address space) is about 2.4 MB, so the bound
leaves room for several times that and still keeps a run's memory within a few GiB.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import BinaryIO

from gpa_plan.ranges import human_size

MAX_INPUT_BYTES = 16 << 20
STDIN = "-"
# How a file read from standard input is named in messages and findings.
STDIN_NAME = "<stdin>"
_CHUNK = 1 << 20


class InputError(Exception):
    """An input that cannot be read; ``reason`` says why and what to do, without the path."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read {path}: {reason}")


def read_input(path: str, *, limit: int = MAX_INPUT_BYTES, allow_stdin: bool = False) -> bytes:
    """The bytes of ``path`` (or of standard input for ``-`` with ``allow_stdin``).

    Raises InputError for a missing or unreadable path, anything that is not a regular file,
    content beyond ``limit`` bytes, and ``-`` without ``allow_stdin``.
    """
    if path == STDIN and allow_stdin:
        return _read_stdin(limit)
    fd = _open_regular(path, allow_stdin)
    try:
        if os.fstat(fd).st_size > limit:
            raise InputError(path, _too_large(limit))  # refused before any of it is read
        return _read_bounded(fd, path, limit)
    finally:
        os.close(fd)


def open_input(path: str) -> BinaryIO:
    """``path`` opened for reading, refused as read_input refuses it but not bounded: for a
    reader that seeks to the few parts it needs (the headers of an ELF executable, which may
    be a kernel of hundreds of MiB) and so reads a bounded amount of any file."""
    return os.fdopen(_open_regular(path, False), "rb")


def _open_regular(path: str, allow_stdin: bool) -> int:
    """A descriptor open on ``path``, which must be a regular file once links are followed."""
    if path == STDIN and not allow_stdin:
        raise InputError(
            path,
            "standard input is not read here; give the path of a file (./- for a file named -)",
        )
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        # A socket cannot be opened at all (ENXIO): say what it is rather than why open failed.
        mode = _mode(path)
        if mode is not None and not stat.S_ISREG(mode):
            raise _not_regular(path, mode, allow_stdin) from None
        raise InputError(path, os_reason(err)) from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as err:
        os.close(fd)
        raise InputError(path, os_reason(err)) from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(path, mode, allow_stdin)
    return fd


def _mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode
    except (OSError, ValueError):
        return None


def _not_regular(path: str, mode: int, allow_stdin: bool) -> InputError:
    return InputError(
        path,
        f"it is {file_kind(mode)}, not a regular file; give the path of a file"
        + (" (or - for standard input)" if allow_stdin else ""),
    )


def _read_stdin(limit: int) -> bytes:
    if sys.stdin is None:  # the process was started with descriptor 0 closed (<&-)
        raise InputError(
            "standard input", "it is closed; give a file, or redirect standard input from one"
        )
    stream = sys.stdin.buffer
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, OSError):
        # A stand-in without a descriptor (a test runner's buffer): read it, bounded all the same.
        data: bytes = stream.read(limit + 1)
        if len(data) > limit:
            raise InputError("standard input", _too_large(limit)) from None
        return data
    return _read_bounded(fd, "standard input", limit)


def _read_bounded(fd: int, path: str, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        except BlockingIOError:
            # Standard input left non-blocking by whoever started us: wait for data.
            import select

            select.select([fd], [], [])
            continue
        except OSError as err:
            raise InputError(path, os_reason(err)) from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise InputError(path, _too_large(limit))


def _too_large(limit: int) -> str:
    return (
        f"it is larger than {human_size(limit)}, the most gpa-plan reads from one input "
        "(a layout at KVM's memslot limit is about 2.4 MB); split it or check that "
        "it is the file you meant"
    )


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words: ``a directory``, ``a FIFO (named pipe)``, ..."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def os_reason(err: OSError) -> str:
    """Why an operating-system call failed, in the lower case messages continue in."""
    return err.strerror.lower() if err.strerror else str(err)


def read_open_file(fd: int, path: str, *, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of the regular file open as ``fd``, from its start, bounded as read_input
    bounds them (``path`` names it in errors). For a file held open while it is read again."""
    os.lseek(fd, 0, os.SEEK_SET)
    return _read_bounded(fd, path, limit)


def utf8_error_position(raw: bytes, err: UnicodeDecodeError) -> tuple[int, int]:
    """The 1-based line and column (in characters) of the first byte of ``raw`` that is not
    UTF-8, as ``err`` from ``raw.decode("utf-8")`` reports it, with lines ending at LF as in
    TOML (YAML also ends lines at CR and NEL: the layout loader counts those itself)."""
    before = raw[: err.start]
    line = before.count(b"\n") + 1
    column = len(before.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")) + 1
    return line, column
