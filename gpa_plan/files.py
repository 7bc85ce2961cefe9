"""Writing what gpa-plan produces without ever clobbering a file it should not.

Where an output goes depends on what its path names (symbolic links followed):

- ``-``, or the very file standard output already is (``/dev/stdout``, or the file the shell
  redirected it to): the text goes to standard output. Renaming a new file over a redirected
  standard output would detach the shell's file from what it then holds. The same goes for
  standard error (``/dev/stderr``).
- A regular file, or nothing yet: the text goes to a temporary file in the same directory,
  which is renamed over the path, so readers see the old file or the new one, never a mix,
  and a failure leaves the old file as it was. The new file keeps the old one's permission
  bits and, where the process may set them, its owner and group. A rename gives the path a
  new file: other hard links to the old one keep the old content (``write_output`` says so in
  a note).
- A FIFO or a character device (``/dev/null``, a terminal): written to directly, never
  replaced. Opening a FIFO waits, as a shell redirection does, until something reads it.
- A directory, a socket or a block device: refused with OutputError; so is a regular file
  the process may not write (mode 0444 for its owner, say), which a rename could replace as
  long as the directory is writable: gpa-plan refuses it as a shell redirection would.

Temporaries are named ``.NAME.gpa-plan-PID-RANDOM.tmp``. A run that is killed cannot remove
its own, so each write first removes those of its target whose process no longer exists;
those of a live run are left alone.

``locked_update`` serves ``allocate --in-place``: it holds an exclusive ``flock`` on the file
while gpa-plan reads, rewrites and replaces it, so runs on one file take turns, and it refuses
to replace a file whose content changed since it was read (an editor saving it meanwhile).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
from collections.abc import Callable, Iterator
from typing import TextIO

from gpa_plan.inputs import InputError, file_kind, read_open_file

STDOUT = "-"
NAME_MAX = 255  # bytes in one file name on Linux file systems (ext4, xfs, btrfs, tmpfs)
_TEMP_MARK = ".gpa-plan-"
# DOTALL: a file name may hold a line break, and its leftovers must be recognised too.
_TEMP = re.compile(
    r"\.(?P<name>.*)\.gpa-plan-(?P<pid>[1-9][0-9]*)-(?P<tag>[0-9a-f]{8})\.tmp", re.DOTALL
)


class OutputError(Exception):
    """An output that cannot be written; ``reason`` says why and what to do."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot write {path}: {reason}")


class FileChangedError(OutputError):
    """The file changed between gpa-plan reading it and replacing it; it was left as it is."""


def write_output(
    path: str, text: str, stdout: TextIO, stderr: TextIO | None = None
) -> list[str]:
    """Write ``text`` to ``path`` as the module docstring describes; ``stdout`` (and
    ``stderr``) are the streams standard output (and standard error) go to: a path that is
    the same file as one of them is written through it. Returns notes for the user (a hard
    link the write detached); raises OutputError."""
    if path == STDOUT:
        return _write_to(stdout, text)
    if not path:
        raise OutputError(path, "the path is empty; give the path of a file")
    if path.endswith(os.sep):
        # Else the rename would make a file of the name without its slash.
        raise OutputError(
            path, "a path ending in / names a directory; give the path of a file"
        )
    for stream, fd in ((stdout, 1), (stderr, 2)):
        if stream is not None and same_file(path, _fd_of(stream, fd)):
            return _write_to(stream, text)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as err:
        raise OutputError(path, _path_reason(path, err)) from None
    if mode is not None and (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        if _write_stream(path, text):
            return []
    elif mode is not None and not stat.S_ISREG(mode):
        raise _not_a_file(path, mode)
    return replace_file(path, text)


def replace_file(
    path: str,
    text: str,
    *,
    before_rename: Callable[[], None] | None = None,
    target: str | None = None,
) -> list[str]:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``, which
    must be a regular file or absent (a symlink's target is what gets replaced, or
    ``target``: where the path led when the caller read it). ``before_rename`` runs last,
    once the temporary is complete; it may raise to cancel."""
    target = target if target is not None else _real_path(path)
    directory, name = os.path.split(target)
    remove_leftovers(directory, name)
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    except OSError as err:
        raise OutputError(path, _os_reason(err)) from None
    if old is not None and not os.access(target, os.W_OK):
        # The rename needs only the directory: refuse as a shell redirection would.
        raise OutputError(
            path,
            "it is read-only for you, and gpa-plan does not replace a file you may not write; "
            "make it writable (chmod u+w) or write to another file",
        )
    try:
        fd, tmp = _create_temp(directory, name)
    except OSError as err:
        raise OutputError(path, _path_reason(path, err, directory)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        _copy_owner_and_mode(tmp, old)
        if before_rename is not None:
            before_rename()
        _check_still_replaceable(path, target)
        os.replace(tmp, target)
    except OSError as err:
        _discard(tmp)
        raise OutputError(path, _os_reason(err)) from None
    except BaseException:
        _discard(tmp)
        raise
    if old is not None and old.st_nlink > 1:
        return [
            f"{path} had {old.st_nlink - 1} other hard link(s); they keep the old content, "
            f"{path} is now a file of its own"
        ]
    return []


class LockedFile:
    """A regular file held under an exclusive ``flock`` by ``locked_update``."""

    def __init__(self, path: str, target: str, fd: int, raw: bytes) -> None:
        self.path = path
        self.raw = raw  # the content when the lock was taken
        self._target = target
        self._fd = fd
        self._identity = _identity(os.fstat(fd))

    def replace(self, text: str) -> list[str]:
        """Replace the file with ``text``; raises FileChangedError (nothing written) if the
        path no longer leads to the locked file or its content is no longer ``raw``."""
        return replace_file(
            self.path, text, before_rename=self._refuse_if_changed, target=self._target
        )

    def _refuse_if_changed(self) -> None:
        try:
            # The path may be a symbolic link, pointed at another file meanwhile.
            leads_here = os.path.realpath(self.path) == self._target
            now = _identity(os.stat(self._target))
            current = read_open_file(self._fd, self.path)
        except (OSError, InputError):
            leads_here, now, current = False, None, None
        if not leads_here or now != self._identity or current != self.raw:
            raise FileChangedError(
                self.path,
                "the file changed while gpa-plan worked on it (saved by an editor or another "
                "program); it was left as it is now: run gpa-plan again",
            )


@contextlib.contextmanager
def locked_update(path: str) -> Iterator[LockedFile]:
    """``path`` read under an exclusive ``flock`` held until the block ends.

    Other gpa-plan runs on the same file wait for the lock; a run that finds the path replaced
    by the time it holds the lock (the previous run renamed its result over it) locks the new
    file instead. Programs that do not take the lock (editors) are caught by
    ``LockedFile.replace``. Raises OutputError if the path is not a regular file or cannot be
    opened, InputError if it cannot be read.
    """
    target = _real_path(path)
    fd = _lock(path, target)
    try:
        yield LockedFile(path, target, fd, read_open_file(fd, path))
    finally:
        os.close(fd)  # releases the lock


def _lock(path: str, target: str) -> int:
    """An open descriptor of ``target`` holding its lock, once the path still names it."""
    while True:
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as err:
            raise OutputError(path, _os_reason(err)) from None
        try:
            locked = os.fstat(fd)
            if not stat.S_ISREG(locked.st_mode):
                raise _not_a_file(path, locked.st_mode)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _names(target, _identity(locked)):
                return fd
        except OSError as err:
            os.close(fd)
            raise OutputError(path, f"cannot lock it: {_os_reason(err)}") from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # replaced while this run waited: lock the file there now


def same_file(path: str, other: str | int) -> bool:
    """Whether ``path`` and ``other`` (a path, or an open file descriptor) are one file:
    the same device and inode, so symbolic and hard links count. A missing path is not."""
    try:
        mine = os.stat(path)
        theirs = os.fstat(other) if isinstance(other, int) else os.stat(other)
    except (OSError, ValueError):
        return False
    return _identity(mine) == _identity(theirs)


def overwrites(output: str, source: str | int) -> bool:
    """Whether writing ``output`` would replace the regular file ``source`` (a path, or an
    open file descriptor such as standard input's) that a command reads. A device or FIFO
    that is both (``/dev/null``) is written into, not replaced, so it does not count."""
    try:
        mode = os.stat(output).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(mode) and same_file(output, source)


def remove_leftovers(directory: str, name: str) -> list[str]:
    """Remove the temporaries of ``name`` in ``directory`` whose writing process is gone;
    returns the names removed. Those of a live process (a parallel run) stay."""
    removed = []
    try:
        entries = os.listdir(directory or ".")
    except OSError:
        return []
    for entry in entries:
        match = _TEMP.fullmatch(entry)
        if match is None:
            continue
        pid, tag = int(match["pid"]), match["tag"]
        if entry != temp_name(name, pid, tag) or _process_exists(pid):
            continue
        leftover = os.path.join(directory, entry)
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(leftover).st_mode):
                os.unlink(leftover)
                removed.append(entry)
    return removed


def temp_name(name: str, pid: int, tag: str) -> str:
    """The temporary file name for target ``name``, within NAME_MAX bytes: as much of the
    name as fits (cut at a character boundary), then the writer's pid and a random tag."""
    suffix = f"{_TEMP_MARK}{pid}-{tag}.tmp"
    room = NAME_MAX - 1 - len(suffix.encode())
    short = name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return f".{short}{suffix}"


def _real_path(path: str) -> str:
    """``path`` with symbolic links resolved, where the temporary file goes beside."""
    try:
        return os.path.realpath(path)
    except FileNotFoundError:  # os.getcwd(): the working directory was removed
        raise OutputError(
            path,
            "the working directory no longer exists; cd to an existing directory, or give "
            "the output as an absolute path",
        ) from None


def _create_temp(directory: str, name: str) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        tmp = os.path.join(directory, temp_name(name, os.getpid(), os.urandom(4).hex()))
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue


def _copy_owner_and_mode(tmp: str, old: os.stat_result | None) -> None:
    if old is None:
        os.chmod(tmp, 0o666 & ~_umask())  # what open() would give a new file
        return
    # Only a privileged process may give a file away; otherwise the new file is the writer's.
    with contextlib.suppress(PermissionError):
        os.chown(tmp, old.st_uid, old.st_gid)
    # After chown, which may clear set-user-ID and set-group-ID bits.
    os.chmod(tmp, stat.S_IMODE(old.st_mode))


def _check_still_replaceable(path: str, target: str) -> None:
    """Refuse if something that is not a regular file took the target's place meanwhile."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise _not_a_file(path, mode)


def _write_stream(path: str, text: str) -> bool:
    """Write to a FIFO or device in place; False if the path turned out to be a regular file
    by the time it was opened (it is then replaced as one)."""
    try:
        # No O_CREAT: if the FIFO or device vanished, this fails instead of making a file.
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise OutputError(path, _os_reason(err)) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return False
        if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
            raise _not_a_file(path, mode)
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data) :]
    except OSError as err:
        raise OutputError(path, _os_reason(err)) from None
    finally:
        os.close(fd)
    return True


def _write_to(stream: TextIO, text: str) -> list[str]:
    stream.write(text)
    stream.flush()
    return []


def _fd_of(stream: TextIO, default: int) -> int:
    try:
        return stream.fileno()
    except (OSError, ValueError):
        return default  # a stream in memory (a test runner's): the process's own descriptor


def _names(target: str, identity: tuple[int, int]) -> bool:
    try:
        return _identity(os.stat(target)) == identity
    except OSError:
        return False


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists, under another user
    return True


def _not_a_file(path: str, mode: int) -> OutputError:
    return OutputError(
        path,
        f"it is {file_kind(mode)}, not a regular file; gpa-plan replaces only regular files "
        "and writes into FIFOs and character devices: give the path of a file",
    )


def _discard(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _path_reason(path: str, err: OSError, real_directory: str = "") -> str:
    """Why ``path`` cannot be written, naming the directory on its way that is missing or
    is not a directory (looked for in the path as given, then where its links lead)."""
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        for directory in (os.path.dirname(path), real_directory):
            for prefix in _prefixes(directory):
                try:
                    is_directory = stat.S_ISDIR(os.stat(prefix).st_mode)
                except FileNotFoundError:
                    return (
                        f"the directory {prefix} does not exist; create it first, or give a "
                        "path in an existing directory"
                    )
                except OSError:
                    break
                if not is_directory:
                    return f"{prefix} is not a directory; give a path in an existing directory"
    return _os_reason(err)


def _prefixes(directory: str) -> Iterator[str]:
    """``a``, ``a/b``, ``a/b/c`` for ``a/b/c`` (``/``-rooted ones for an absolute path)."""
    parts = directory.split(os.sep)
    for end in range(1, len(parts) + 1):
        prefix = os.sep.join(parts[:end])
        if prefix and parts[end - 1]:
            yield prefix


def _os_reason(err: OSError) -> str:
    if err.errno == errno.ENAMETOOLONG:
        return "the file name is too long for the file system"
    return err.strerror or str(err)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
