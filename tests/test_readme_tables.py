"""The README's device-type and outcome tables are rendered from the architecture registry.

A new architecture module (or a changed cell) makes these tests fail until the README shows
it: the expected text is built here from gpa_plan.arch, and the README must hold it verbatim.
"""

from __future__ import annotations

from pathlib import Path

from gpa_plan.arch import ACCESSES, ARCHES
from gpa_plan.arch.base import Backing, DeviceType, Effect, Handler
from gpa_plan.arch.devices import ANY_ARCH, CATALOG

README = Path(__file__).resolve().parent.parent / "README.md"
KiB = 1024


def _size(n: int) -> str:
    return f"{n // KiB} KiB" if n % KiB == 0 else f"{n:#x}"


def _device_row(d: DeviceType) -> str:
    arch = "any" if d.arches == ANY_ARCH else ", ".join(a for a in ARCHES if a in d.arches)
    if d.size_is_guest_page:
        size = "one guest page"
    elif d.per_vcpu is not None:
        size = f"{_size(d.per_vcpu)} \u00d7 `vcpus`"  # the README's multiplication sign
    elif d.size is not None:
        size = _size(d.size) + (f" at {d.default_base:#x}" if d.default_base is not None else "")
    else:
        size = "`size`"
    align = "guest page" if d.align_is_guest_page else _size(d.align) if d.align else "—"
    handled = {
        Handler.KERNEL: "kernel",
        Handler.USER: "VMM (`KVM_EXIT_MMIO`)",
        None: "`handler`: user, kernel, ioeventfd or coalesced",
    }[d.handler]
    return f"| `{d.name}` | {arch} | {size} | {align} | {handled} |"


def device_table() -> str:
    rows = [_device_row(d) for d in CATALOG.values()]
    header = ["| type | arch | size | alignment | handled by |", "| --- | --- | --- | --- | --- |"]
    return "\n".join([*header, *rows])


def _cell(effects: dict[str, list[Effect]]) -> str:
    """One outcome when every architecture agrees, else each outcome with its architectures;
    several effects per architecture (ioeventfd / coalesced) are joined with ` / `."""
    by_text: dict[str, list[str]] = {}
    for arch, cell in effects.items():
        text = " / ".join(dict.fromkeys(e.outcome.value for e in cell))
        by_text.setdefault(text, []).append(arch)
    if len(by_text) == 1:
        return next(iter(by_text))
    return "; ".join(f"{text} ({', '.join(arches)})" for text, arches in by_text.items())


def _row(name: str, cells: dict[str, dict[str, list[Effect]]]) -> str:
    return f"| {name} | " + " | ".join(_cell(cells[a]) for a in ACCESSES) + " |"


def _region(backing: Backing, *handlers: Handler) -> dict[str, dict[str, list[Effect]]]:
    return {
        access: {
            name: [spec.effects(backing, h).of(access) for h in handlers]
            for name, spec in ARCHES.items()
        }
        for access in ACCESSES
    }


def outcome_table() -> str:
    readonly = _region(Backing.ROM, Handler.NONE)
    # A write to a read-only memslot takes the path of a write outside memslots, whatever the
    # device there: the row says so rather than repeat the rows below.
    for spec in ARCHES.values():
        for h in Handler:
            assert (
                spec.effects(Backing.ROM, h).write.outcome
                == spec.effects(Backing.NONE, h).write.outcome
            )
    rom = _row("read-only memslot", readonly).split(" | ")
    rom[2] = "as outside memslots (below)"
    beyond = {
        access: {name: [spec.beyond(access)] for name, spec in ARCHES.items()}
        for access in ACCESSES
    }
    rows = [
        _row("read-write memslot", _region(Backing.RAM, Handler.NONE)),
        " | ".join(rom),
        _row("in-kernel device, no memslot", _region(Backing.NONE, Handler.KERNEL)),
        _row(
            "ioeventfd / coalesced zone",
            _region(Backing.NONE, Handler.IOEVENTFD, Handler.COALESCED),
        ),
        _row("VMM device or nothing", _region(Backing.NONE, Handler.USER, Handler.NONE)),
        _row("at or beyond 2\\*\\*pa_bits", beyond),
    ]
    return "\n".join(["| region | read | write | fetch |", "| --- | --- | --- | --- |", *rows])


def test_the_readme_device_table_is_the_catalogs() -> None:
    expected = device_table()
    assert expected in README.read_text(), "README device types differ; expected:\n" + expected


def test_the_readme_outcome_table_is_the_registrys() -> None:
    expected = outcome_table()
    assert expected in README.read_text(), "README outcome table differs; expected:\n" + expected


def test_the_tables_name_every_architecture() -> None:
    text = device_table() + outcome_table()
    for name in ARCHES:
        assert name in text
