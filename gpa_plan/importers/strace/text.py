"""The lines of a `strace -f -e trace=ioctl` log, as strace 6.1 prints them, made into calls.

A call is one ``ioctl(FD, REQUEST, ARG) = RET`` with the line and column it starts at. A line
may start with the process id (``1234  `` in a file written with -o, ``[pid  1234] `` on a
terminal). A call another thread interrupted is printed in two halves, ``... <unfinished ...>``
then ``<... ioctl resumed>...`` on the same process id; the halves are joined here. Lines
starting with ``#`` (notes kept with a saved log; strace prints none) are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from gpa_plan.importers import ImportFailure
from gpa_plan.printable import printable

HOW = "expected `strace -f -e trace=ioctl` output: lines like `ioctl(4, KVM_CREATE_VM, 0) = 5`"

_PID = re.compile(r"(?:\[pid +(\d+)\] |(\d+) +)")
_UNFINISHED = " <unfinished ...>"
_RESUMED = re.compile(r"<\.\.\. (\w+) resumed>")
# The file descriptor may carry what -y prints after it: 4<anon_inode:kvm-vm>.
# A request strace has no name for is printed _IOC(DIR, TYPE, NR, SIZE), commas and all.
_CALL = re.compile(r"ioctl\((-?\d+)(?:<[^>]*>)?, (_IOC\([^)]*\)|[^,]+), (.*)\) +(= .*)$")
# include/uapi/linux/kvm.h: KVM_SET_USER_MEMORY_REGION2 is _IOW(KVMIO, 0x49, 160 bytes), which
# strace 6.1 does not name.
_UNNAMED = {"_IOC(_IOC_WRITE, 0xae, 0x49, 0xa0)": "KVM_SET_USER_MEMORY_REGION2"}
# With -T, the time spent in the call follows: <0.000012>.
_RETURN = re.compile(r"= (?:(-?\d+|0x[0-9a-f]+)(?: (E[A-Z0-9]+) \(.*\))?|\?)(?: <\d+\.\d+>)?$")
# Lines strace prints besides calls: signals, exits, its own messages.
_OTHER = re.compile(r"(?:--- .* ---|\+\+\+ .* \+\+\+|strace: .*)$")
_SYSCALL = re.compile(r"[a-z_][a-z0-9_]*\(")


class Call(NamedTuple):
    fd: int
    request: str  # KVM_SET_USER_MEMORY_REGION, or what strace printed for an unknown one
    arg: str  # as printed: 0, 0x7ffd1234, {slot=0, ...}
    ret: int | None  # None: the call did not return (the process ended: `= ?`)
    errno: str | None  # EEXIST when ret is -1
    line: int
    column: int  # of the call's first character
    arg_column: int  # of ``arg``'s first character (on the first half's line when joined)


class Scan(NamedTuple):
    calls: list[Call]
    other_syscalls: int  # calls of other system calls (a log not filtered to ioctl), skipped


def scan(text: str) -> Scan:
    """Every ioctl call of the log, in the order they returned. Raises ImportFailure at the
    first line that is not strace output."""
    calls: list[Call] = []
    other = 0
    pending: dict[str, tuple[str, int, int]] = {}  # pid -> (first half, line, column)
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip() or line.startswith("#"):
            continue
        match = _PID.match(line)
        pid = (match.group(1) or match.group(2)) if match else ""
        start = match.end() if match else 0
        body = line[start:]
        if _OTHER.match(body):
            continue
        resumed = _RESUMED.match(body)
        if resumed:
            if pid not in pending:
                raise ImportFailure(
                    f"{printable(body[:resumed.end()])} with no `<unfinished ...>` call of "
                    f"process {pid or '(none)'} before it: {HOW}",
                    number, start + 1,
                )
            first, number0, start0 = pending.pop(pid)
            if resumed.group(1) != "ioctl":
                other += 1
                continue
            joined = first + body[resumed.end():]
            calls.append(_call(joined, number0, start0, number))
            continue
        if body.endswith(_UNFINISHED):
            pending[pid] = (body[: -len(_UNFINISHED)], number, start)
            continue
        if body.startswith("ioctl("):
            calls.append(_call(body, number, start, number))
            continue
        if _SYSCALL.match(body) and " = " in body:
            other += 1
            continue
        raise ImportFailure(f"not a line strace prints: {printable(body[:60])!r}; {HOW}",
                            number, start + 1)
    return Scan(calls, other)


def _call(body: str, line: int, start: int, last_line: int) -> Call:
    """The call ``body`` (a whole ioctl, halves joined) that starts at column ``start`` + 1."""
    match = _CALL.match(body)
    if not match:
        raise ImportFailure(
            f"not an ioctl call as strace prints it: {printable(body[:60])!r}; {HOW}",
            line, start + 1,
        )
    returned = _RETURN.match(match.group(4))
    if not returned:
        raise ImportFailure(
            f"not a return value as strace prints it: {printable(match.group(4)[:40])!r}; "
            "expected `= N`, `= -1 ERRNO (text)` or `= ?`",
            last_line, 1 if last_line != line else start + match.start(4) + 1,
        )
    ret = None if returned.group(1) is None else int(returned.group(1), 0)
    request = match.group(2).strip()
    return Call(int(match.group(1)), _UNNAMED.get(request, request), match.group(3), ret,
                returned.group(2), line, start + 1, start + match.start(3) + 1)


def fields(call: Call) -> Iterator[tuple[str, str, int]]:
    """The ``key=value`` fields of a structure argument (``{slot=0, flags=0, ...}``), with
    each value's column; nothing for a bare pointer."""
    if not call.arg.startswith("{"):
        return
    for match in re.finditer(r"(\w+)=([^,}]*)", call.arg):
        yield match.group(1), match.group(2).strip(), call.arg_column + match.start(2)
