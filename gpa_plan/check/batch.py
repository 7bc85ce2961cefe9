"""`check` over many paths: files, directories of layouts, standard input, and what cannot be
read among them.

Every path is tried, so one bad path does not hide what the others would report:

* A file is read as given (a symbolic link to a file is followed). A path that is missing,
  unreadable, not a regular file, or larger than MAX_INPUT_BYTES cannot be read.
* A directory stands for every ``*.yaml`` and ``*.yml`` file below it, in sorted order; other
  files are ignored. Symbolic links to files inside it are followed; symbolic links to
  directories inside it are not descended into (a tree cannot loop, and no file is checked
  twice through two names): name such a directory on the command line to check it. A
  subdirectory that cannot be listed, and a directory with no layout file below it, cannot be
  read: a check that silently covered nothing would pass in CI.
* Inside a directory, what linters skip is skipped too: hidden files and directories (their
  names start with ``.``: ``.git``, ``.venv``, ``.gpa-plan.yaml``, which is configuration),
  ``node_modules``, ``__pycache__`` and any directory holding a ``pyvenv.cfg`` (a Python
  virtual environment, whatever its name). A directory named on the command line is walked
  even if it would be skipped inside another.
* ``exclude`` patterns (``--exclude``) are shell globs (``*`` also matches ``/``) tried against
  a path as it would be reported (``layouts/broken/x.yaml``) and against its last part
  (``broken``, ``x.yaml``). A matching directory is not walked, and a matching file is not
  checked, also when it is named on the command line.
* ``-`` is standard input, read once, and named ``<stdin>`` in findings.
* A file named more than once (twice on the command line, inside a directory also given, or
  through a symbolic or hard link) is checked once, under the first of its names; so is an
  ``--elf`` program.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from gpa_plan.check.run import CheckResult, LoadedLayout, check_file
from gpa_plan.elf import PHYSICAL
from gpa_plan.inputs import STDIN, InputError, os_reason
from gpa_plan.progress import Progress, unwatched

if TYPE_CHECKING:
    from gpa_plan.elf.program import Program, ProgramError
    from gpa_plan.host_profile import HostProfile

LAYOUT_SUFFIXES = (".yaml", ".yml")


class CheckRun(NamedTuple):
    """The results of the paths that could be read, and an InputError for each that could not
    (a `check` with any of those exits 2)."""

    results: list[CheckResult]
    unreadable: list[InputError]


def check_paths(
    paths: Sequence[str],
    arches: Sequence[str] = (),
    *,
    elf_files: Sequence[str] = (),
    elf_mode: str = PHYSICAL,
    exclude: Sequence[str] = (),
    progress: Progress = unwatched,
    host: HostProfile | None = None,
    declared: LoadedLayout | None = None,
) -> CheckRun:
    """Check every layout ``paths`` name, less what ``exclude`` matches, against every
    program of ``elf_files`` (and on the ``host`` of a host profile, if given; against the
    ``declared`` layout, each a recording, with `--layout`: ArchMismatch when one is of
    another architecture)."""
    unreadable: list[InputError] = []
    programs = _programs(elf_files, unreadable)
    results: list[CheckResult] = []
    stdin_read = False
    seen: set[tuple[int, int]] = set()
    for item in layout_files(paths, exclude):
        if isinstance(item, InputError):
            unreadable.append(item)
            continue
        if item != STDIN and _seen_before(item, seen):
            continue
        if item == STDIN:
            if stdin_read:
                unreadable.append(InputError(STDIN, "standard input can be read only once"))
                continue
            stdin_read = True
        try:
            results.extend(
                check_file(item, arches, programs=programs, elf_mode=elf_mode, allow_stdin=True,
                           progress=progress, host=host, declared=declared)
            )
        except InputError as err:
            unreadable.append(err)
    return CheckRun(results, unreadable)


def input_bytes(paths: Sequence[str], exclude: Sequence[str] = ()) -> int:
    """How many bytes the layouts ``paths`` stand for hold, as `check_paths` would read them
    (standard input counts when it is a file); what cannot be looked up counts 0."""
    total = 0
    for item in layout_files(paths, exclude):
        if isinstance(item, InputError):
            continue
        try:
            found = os.fstat(0) if item == STDIN else os.stat(item)
        except (OSError, ValueError):
            continue
        total += found.st_size if stat.S_ISREG(found.st_mode) else 0
    return total


def _seen_before(path: str, seen: set[tuple[int, int]]) -> bool:
    """Whether ``path`` is a file already checked in this run, under this name or another
    (a symbolic or hard link, a directory that holds it); a path that cannot be looked up is
    left for the reader to report."""
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        return False
    identity = (found.st_dev, found.st_ino)
    if identity in seen:
        return True
    seen.add(identity)
    return False


def layout_files(
    paths: Sequence[str], exclude: Sequence[str] = ()
) -> Iterator[str | InputError]:
    """Each path, a directory replaced by the layout files below it (sorted), in order, less
    what ``exclude`` matches; an InputError in place of a directory, or part of one, that
    cannot be listed or holds no layout file. Files themselves are not opened here."""
    for path in paths:
        if path != STDIN and excluded(path, exclude):
            continue
        if path != STDIN and os.path.isdir(path):
            yield from _directory(path, exclude)
        else:
            yield path


# Directories that hold other tools' files, never layouts of this project.
_SKIPPED_DIRECTORIES = frozenset({"node_modules", "__pycache__"})


def excluded(path: str, patterns: Sequence[str]) -> bool:
    """Whether ``path`` (or its last part) matches one of the ``patterns``."""
    if not patterns:
        return False
    from fnmatch import fnmatchcase

    normal = os.path.normpath(path)
    name = os.path.basename(normal)
    return any(fnmatchcase(normal, p) or fnmatchcase(name, p) for p in patterns)


def _walked(root: str, name: str) -> bool:
    """Whether the walk enters directory ``name`` of ``root``: not hidden, not a tool's."""
    if name.startswith(".") or name in _SKIPPED_DIRECTORIES:
        return False
    return not os.path.isfile(os.path.join(root, name, "pyvenv.cfg"))


def _directory(top: str, exclude: Sequence[str]) -> Iterator[str | InputError]:
    errors: list[InputError] = []

    def refuse(err: OSError) -> None:
        where = err.filename if isinstance(err.filename, str) else top
        errors.append(InputError(os.path.normpath(where), _listing_reason(err)))

    found: list[str] = []
    for root, directories, names in os.walk(top, onerror=refuse):
        directories[:] = [
            d
            for d in directories
            if _walked(root, d) and not excluded(os.path.join(root, d), exclude)
        ]
        found.extend(
            path
            for path in (os.path.normpath(os.path.join(root, n)) for n in names)
            if path.endswith(LAYOUT_SUFFIXES)
            and not os.path.basename(path).startswith(".")
            and not excluded(path, exclude)
        )
    found.sort()
    yield from found
    yield from errors
    if not found and not errors:
        yield InputError(
            top,
            "no *.yaml or *.yml file below this directory, so nothing was checked (hidden and "
            "excluded paths are skipped); give the directory that holds the layouts",
        )


def _listing_reason(err: OSError) -> str:
    reason = os_reason(err)
    return (
        f"cannot list this directory ({reason}), so the layouts below it were not checked; "
        "make it readable, or leave it out"
    )


def _programs(
    elf_files: Sequence[str], unreadable: list[InputError]
) -> tuple[Program | ProgramError, ...]:
    if not elf_files:
        return ()
    from gpa_plan.elf.program import ProgramError, load_program

    programs: list[Program | ProgramError] = []
    seen: set[tuple[int, int]] = set()
    for path in elf_files:
        if _seen_before(path, seen):
            continue
        try:
            programs.append(load_program(path))
        except ProgramError as err:
            programs.append(err)
        except InputError as err:
            unreadable.append(err)
    return tuple(programs)
