"""The importers `gpa-plan import KIND` knows: each one's name, help, options and reader.

An importer is one entry here plus the package that reads its format. Its reader is named as
``"module:function"`` and imported on first use, so the command line builds KIND's choices and
the options from this table without loading any importer. Every reader has one signature:

    read(data: bytes, options: Mapping[str, Any]) -> Imported

``data`` is the input's bytes; ``options`` maps the ``key`` of each option the importer
declares to its value, None when not given. A reader raises ImportFailure for input it cannot
read. An option may name a check (``"module:function"``, ``check(value, options) -> str |
None``) run on the command line's value before the input is read: what it returns is the
problem, a usage error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from gpa_plan.formats import resolve

if TYPE_CHECKING:
    from gpa_plan.importers import Imported

ARCH = "arch"  # the value is an architecture's name (gpa_plan.arch.ARCHES)
SIZE = "size"  # the value is a size, written as layouts write them (4K, 0x1000)
COUNT = "count"  # the value is a whole number from 1


class ImporterOption(NamedTuple):
    flag: str  # on the command line: --page-size
    key: str  # in the options the reader gets: page_size
    value: str  # ARCH, SIZE or COUNT: how the command line reads it
    help: str
    metavar: str | None = None
    check: str | None = None  # "module:function", see the module's docstring


class Importer(NamedTuple):
    name: str
    help: str  # what the input is and how to get it, for `gpa-plan import --help`
    reader: str  # "module:function", see the module's docstring
    options: tuple[ImporterOption, ...] = ()

    def read(self, data: bytes, options: Mapping[str, Any]) -> Imported:
        """The layout ``data`` describes; ``options`` beyond this importer's are left out."""
        mine = {o.key: options.get(o.key) for o in self.options}
        result: Imported = resolve(self.reader)(data, mine)
        return result

    def option_problem(self, options: Mapping[str, Any]) -> tuple[str, str] | None:
        """The first of this importer's options whose value its check refuses, as (flag,
        problem), or None."""
        for option in self.options:
            value = options.get(option.key)
            if value is not None and option.check is not None:
                problem: str | None = resolve(option.check)(value, options)
                if problem:
                    return option.flag, problem
        return None


class Importers:
    """Every importer, in the order `gpa-plan import --help` lists them."""

    def __init__(self, *importers: Importer) -> None:
        self._importers = {i.name: i for i in importers}

    def __getitem__(self, name: str) -> Importer:
        return self._importers[name]

    @property
    def names(self) -> list[str]:
        return list(self._importers)

    def options(self) -> list[ImporterOption]:
        """Every importer's options, once each (by flag), in order."""
        seen: dict[str, ImporterOption] = {}
        for importer in self._importers.values():
            for option in importer.options:
                seen.setdefault(option.flag, option)
        return list(seen.values())

    def takers(self, flag: str) -> list[str]:
        """The importers that take ``flag``."""
        return [i.name for i in self._importers.values() if any(o.flag == flag for o in i.options)]

    def refusal(self, name: str, options: Mapping[str, Any]) -> str | None:
        """Why importer ``name`` cannot be given ``options`` (by key; None is not given): the
        first option it does not declare, and which importers take it. None if it takes
        them all."""
        taken = {o.key for o in self[name].options}
        for option in self.options():
            if options.get(option.key) is not None and option.key not in taken:
                takers = " and ".join(self.takers(option.flag))
                return (f"{option.flag} is for {takers}; `import {name}` takes no "
                        f"{option.flag}: leave it out")
        return None


# Each importer that may not tell the architecture from its input takes it from the user.
_ARCH_OPTION = ImporterOption(
    "--arch", "arch", ARCH, "the guest's architecture, when the input does not tell."
)

IMPORTERS = Importers(
    Importer(
        "qemu-mtree",
        "the QEMU monitor's `info mtree -f`, also with -d and -o",
        "gpa_plan.importers.qemu_mtree:read",
        (
            _ARCH_OPTION,
            ImporterOption("--page-size", "page_size", SIZE,
                           "the host page size KVM memslots are trimmed to (default 4K; 64K "
                           "for many arm64 hosts).", "SIZE",
                           "gpa_plan.importers.qemu_mtree:page_size_option_problem"),
        ),
    ),
    Importer(
        "dtb",
        "a flattened device tree, e.g. from `-machine virt,dumpdtb=FILE`",
        "gpa_plan.importers.dtb:read",
    ),
    Importer(
        "strace",
        "a log of `strace -f -e trace=ioctl -o LOG COMMAND` run on a VMM or a KVM selftest",
        "gpa_plan.importers.strace:read",
        (
            _ARCH_OPTION,
            ImporterOption("--vm", "vm", COUNT,
                           "which VM of the log, 1 for the first created (needed when the "
                           "log creates several).", "N"),
        ),
    ),
)
