"""A recorded layout (`gpa-plan record`) held to the layout its program was meant to build
(`check RECORDING --layout DECLARED`, docs/record.md).

KVM never hears of a device the VMM emulates, so a recording cannot hold the ucall page or a
UART: the declared layout's user devices, user port ranges and reserved ranges are merged into
the recording before the rules run, and every rule judges them as usual (a recorded memslot
over the declared ucall page is `ucall-not-io`). A finding about a merged entry points at its
place in the declared file. Two rules of their own compare the two layouts: `declared-missing`
(a declared memslot, in-kernel device, ioeventfd or coalesced zone the recording lacks) and
`stray-access` (recorded traffic that no device of either layout claims).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, NamedTuple

from gpa_plan.arch.base import Handler
from gpa_plan.check.findings import Finding
from gpa_plan.check.rules import WARNING, RuleContext, rule
from gpa_plan.layout.models import Device, Port, Reserved, Traffic
from gpa_plan.layout.resolved import (
    DeviceEntry,
    EntryPath,
    MemslotEntry,
    PortEntry,
    ResolvedLayout,
    resolve,
)
from gpa_plan.progress import Progress, unwatched
from gpa_plan.ranges import Range, hex_addr, human_size

if TYPE_CHECKING:
    from gpa_plan.check.run import CheckResult, LoadedLayout
    from gpa_plan.host_profile import HostProfile

Path = tuple[str | int, ...]


class ArchMismatch(ValueError):
    """A declared layout of another architecture than the recording: nothing to compare."""

    def __init__(self, recorded: LoadedLayout, declared: LoadedLayout) -> None:
        super().__init__(
            f"{declared.doc.path} describes an {declared.layout.arch} VM but "
            f"{recorded.doc.path} was recorded on {recorded.layout.arch}: --layout takes a "
            f"declared layout of the recording's own architecture; give an "
            f"{recorded.layout.arch} layout"
        )


class Declared(NamedTuple):
    """The declared layout a recording is checked against, and where each entry merged into
    the recording comes from."""

    loaded: LoadedLayout
    # the path of each merged entry in the merged layout -> its path in the declared file
    origins: Mapping[EntryPath, EntryPath]

    @property
    def file(self) -> str:
        return self.loaded.doc.path

    def place(self, path: Path) -> tuple[str, int, int] | None:
        """(file, line, column) of ``path`` of the merged layout when it is a merged entry
        (or a field of one); None for the recording's own."""
        if len(path) < 2 or not isinstance(path[1], int):
            return None
        origin = self.origins.get((str(path[0]), path[1]))
        if origin is None:
            return None
        line, column = self.loaded.doc.position((*origin, *path[2:]))
        return self.file, line, column


class Merged(NamedTuple):
    """A recording with the declared user devices, user ports and reserved ranges in it."""

    loaded: LoadedLayout
    declared: Declared


def merge_declared(recorded: LoadedLayout, declared: LoadedLayout) -> Merged:
    """``recorded`` with ``declared``'s user devices (`ucall`, `mmio` with handler user), user
    port ranges and reserved ranges appended, each at the address the declared layout gives it
    (an `auto` one where its planner put it), less those the recording holds already (the
    same type, handler and range). Nothing recorded is dropped or changed; a declared entry
    whose name the recording already uses is merged as ``NAME (declared)``.
    Raises ArchMismatch when the two are of different architectures."""
    if recorded.layout.arch != declared.layout.arch:
        raise ArchMismatch(recorded, declared)
    source = recorded.layout
    names = {m.name for m in source.memslots} | {d.name for d in source.devices}
    names |= {r.name for r in source.reserved} | {p.name for p in source.ports}
    origins: dict[EntryPath, EntryPath] = {}
    # What the recording holds already (a layout written by hand may have user devices) is
    # not merged a second time.
    held: set[tuple[str, Handler | None, Range]] = {
        (d.type.name, d.handler, d.range) for d in recorded.resolved.devices
    }
    held |= {("port", p.handler, p.range) for p in recorded.resolved.ports}
    held |= {("reserved", None, r.range) for r in recorded.resolved.reserved}
    devices: list[Device] = list(source.devices)
    for d in declared.resolved.devices:
        if d.handler is Handler.USER and (d.type.name, d.handler, d.range) not in held:
            given = declared.layout.devices[d.path[1]]
            origins[("devices", len(devices))] = d.path
            devices.append(given._replace(name=_free_name(given.name, names), base=d.range.start))
    ports: list[Port] = list(source.ports)
    for p in declared.resolved.ports:
        if p.handler is Handler.USER and ("port", p.handler, p.range) not in held:
            given_port = declared.layout.ports[p.path[1]]
            origins[("ports", len(ports))] = p.path
            ports.append(given_port._replace(name=_free_name(given_port.name, names)))
    reserved: list[Reserved] = list(source.reserved)
    for r in declared.resolved.reserved:
        if ("reserved", None, r.range) in held:
            continue
        given_range = declared.layout.reserved[r.path[1]]
        origins[("reserved", len(reserved))] = r.path
        reserved.append(given_range._replace(name=_free_name(given_range.name, names)))
    layout = source._replace(devices=tuple(devices), ports=tuple(ports), reserved=tuple(reserved))
    resolved = resolve(layout, _placements(recorded.resolved))
    from gpa_plan.check.run import LoadedLayout

    merged = LoadedLayout(recorded.doc, layout, resolved, recorded.placement_errors)
    return Merged(merged, Declared(declared, origins))


def _free_name(name: str, taken: set[str]) -> str:
    candidate, n = f"{name}", 1
    while candidate in taken:
        candidate = f"{name} (declared)" if n == 1 else f"{name} (declared {n})"
        n += 1
    taken.add(candidate)
    return candidate


def _placements(resolved: ResolvedLayout) -> dict[str, int]:
    """Where the recording's own `auto` entries were placed (a recording has none; a layout
    written by hand may)."""
    placed = {m.name: m.range.start for m in resolved.memslots}
    return placed | {d.name: d.range.start for d in resolved.devices}


def against_declared(
    recorded: LoadedLayout,
    declared: LoadedLayout,
    *,
    progress: Progress = unwatched,
    host: HostProfile | None = None,
) -> CheckResult:
    """The check of ``recorded`` (under its own architecture) with ``declared`` merged in:
    every rule, `declared-missing` and `stray-access` among them. Raises ArchMismatch."""
    from gpa_plan.check.run import check_loaded

    merged = merge_declared(recorded, declared)
    return check_loaded(
        merged.loaded, recorded.layout.arch, progress=progress, host=host, declared=merged.declared
    )


class _Reach:
    """Ranges sorted by start, each prefix with the range that reaches furthest: one that
    overlaps a range is found in O(log n) (the one reaching furthest, if any does)."""

    def __init__(self, ranges: list[tuple[Range, int]]) -> None:
        ordered = sorted(ranges)
        self._starts = [r.start for r, _ in ordered]
        self._furthest: list[tuple[Range, int]] = []
        for item in ordered:
            if not self._furthest or item[0].end > self._furthest[-1][0].end:
                self._furthest.append(item)
            else:
                self._furthest.append(self._furthest[-1])

    def overlapping(self, rng: Range) -> int | None:
        """The tag of a range that overlaps ``rng``, or None."""
        k = bisect.bisect_left(self._starts, rng.end) - 1
        if k < 0:
            return None
        found, tag = self._furthest[k]
        return tag if found.end > rng.start else None


# --- declared-missing -------------------------------------------------------------------------


class _Entry(NamedTuple):
    """A memslot, device or port range as the two layouts are compared."""

    kind: str  # "memslot (address space 0)", "ioeventfd", "vgic-v3-dist", "port ioeventfd"
    name: str
    range: Range
    path: EntryPath
    detail: str = ""  # what else must match: read-only or not


def _memslot(m: MemslotEntry) -> _Entry:
    kind = f"memslot of address space {m.as_id}" if m.as_id else "memslot"
    return _Entry(kind, m.name, m.range, m.path, "read-only" if m.readonly else "read-write")


# What an `mmio` device or a port range of each handler KVM holds is called in messages.
_KINDS = {
    Handler.KERNEL: "in-kernel device",
    Handler.IOEVENTFD: "ioeventfd",
    Handler.COALESCED: "coalesced zone",
}


def _device(d: DeviceEntry) -> _Entry:
    kind = d.type.name if d.type.handler is not None else _KINDS[d.handler]
    return _Entry(kind, d.name, d.range, d.path)


def _port(p: PortEntry) -> _Entry:
    return _Entry(f"port {_KINDS[p.handler]}", p.name, p.range, p.path)


# The handlers of what KVM itself holds, and so what a recording shows.
_IN_KVM = (Handler.KERNEL, Handler.IOEVENTFD, Handler.COALESCED)


def _created_by_kvm(layout: ResolvedLayout) -> list[_Entry]:
    entries = [_memslot(m) for m in layout.memslots]
    entries += [_device(d) for d in layout.devices if d.handler in _IN_KVM]
    entries += [_port(p) for p in layout.ports if p.handler in _IN_KVM]
    return entries


def _shown(e: _Entry) -> str:
    """"memslot 'ram' at [0x0, 0x100000) (1 MiB, read-write)", "port ioeventfd 'bell' at
    ports 0x510-0x511 (2 ports)"."""
    if e.kind.startswith("port"):
        where, size = f"ports {e.range.start:#x}-{e.range.end - 1:#x}", f"{e.range.size} ports"
    else:
        where, size = str(e.range), human_size(e.range.size)
    detail = f", {e.detail}" if e.detail else ""
    kind, _, of = e.kind.partition(" of ")  # "memslot of address space 1"
    return f"{kind} {e.name!r}{f' of {of}' if of else ''} at {where} ({size}{detail})"


@rule(
    "declared-missing",
    WARNING,
    "with --layout: a declared memslot, in-kernel device, ioeventfd or coalesced zone the "
    "recording does not have",
)
def declared_missing(ctx: RuleContext) -> Iterator[Finding]:
    """`check RECORDING --layout DECLARED` compares what KVM held in the recording with what
    the declared layout says the program creates: every declared memslot, in-kernel device
    (the vGIC, the IOAPIC, an `mmio` device with handler kernel), ioeventfd and coalesced
    zone, in the memory or the port space, needs a recorded one of the same kind at the same
    base with the same size (a memslot also in the same address space and equally read-only).
    One that has none is reported at its entry in DECLARED, with what differs when a recorded
    entry of that kind overlaps it. Devices the VMM emulates are not compared: KVM never sees
    them, they are merged into the recording instead. Fix: make the program create what the
    layout declares, or correct the declared layout."""
    declared = ctx.declared
    if declared is None:
        return
    recorded = _recorded_only(ctx.layout, declared)
    exact = {(e.kind, e.range, e.detail) for e in recorded}
    by_kind: dict[str, list[tuple[Range, int]]] = {}
    at_base: dict[tuple[str, int], int] = {}
    for k, e in enumerate(recorded):
        if e.range.size > 0:
            by_kind.setdefault(e.kind, []).append((e.range, k))
        at_base.setdefault((e.kind, e.range.start), k)
    reach = {kind: _Reach(ranges) for kind, ranges in by_kind.items()}
    for want in _created_by_kvm(declared.loaded.resolved):
        if (want.kind, want.range, want.detail) in exact:
            continue
        # A recorded entry of that kind at its base, and one over it (at most these two).
        found = reach[want.kind].overlapping(want.range) if want.kind in reach else None
        tags = dict.fromkeys(t for t in (at_base.get((want.kind, want.range.start)), found)
                             if t is not None)
        near = [recorded[t] for t in tags]
        if near:
            said = "; the recording has " + ", ".join(_difference(want, e) for e in near)
        else:
            said = f"; the recording has no {want.kind} there"
        line, column = declared.loaded.doc.position((*want.path, "base"))
        yield ctx.running.finding_at(
            declared.file,
            line,
            column,
            f"declared {_shown(want)} was not created by the recorded program{said}; make the "
            "program create it, or correct the declared layout",
            (want.name, *(e.name for e in near)),
        )


def _recorded_only(merged: ResolvedLayout, declared: Declared) -> list[_Entry]:
    """What KVM held in the recording: the merged layout less the merged-in entries (which are
    all user devices, so none of them is compared anyway)."""
    return [e for e in _created_by_kvm(merged) if e.path not in declared.origins]


def _difference(want: _Entry, got: _Entry) -> str:
    differs = []
    if got.range.start != want.range.start:
        differs.append(f"base {hex_addr(got.range.start)}, not {hex_addr(want.range.start)}")
    if got.range.size != want.range.size:
        differs.append(f"size {got.range.size:#x}, not {want.range.size:#x}")
    if got.detail != want.detail:
        differs.append(f"{got.detail}, not {want.detail}")
    return f"{got.kind} {got.name!r} ({', '.join(differs)})"


# --- stray-access -----------------------------------------------------------------------------


@rule(
    "stray-access",
    WARNING,
    "with --layout: recorded exits to the VMM at an address no device of either layout claims",
)
def stray_access(ctx: RuleContext) -> Iterator[Finding]:
    """With `--layout DECLARED`, each recorded exit to the VMM (`observed.traffic`) should be at
    an address some device claims: a device or port range of the declared layout or of the
    recording (an MMIO exit inside a read-only memslot is claimed too: that is how writes to
    flash reach the VMM). One no device claims is a stray access: the guest reached an address
    nothing was meant to be at (a wrong pointer, a device the layout forgot), and the VMM
    answered it with whatever its default is. Unclaimed entries of one space whose accesses
    touch or overlap (a guest walking through a missing device byte by byte) are one finding,
    reported at the first of them in the file, with the range they cover, their reads and
    writes summed and their widths. Fix: declare the device the guest meant, or fix the
    guest's address."""
    declared = ctx.declared
    observed = ctx.layout.source.observed
    if declared is None or observed is None:
        return
    both = (ctx.layout, declared.loaded.resolved)
    devices = [d.range for layout in both for d in layout.devices]
    devices += [m.range for layout in both for m in layout.memslots if m.readonly]
    ports = [p.range for layout in both for p in layout.ports]
    claims = {
        "mmio": _Reach([(r, 0) for r in devices if r.size > 0]),
        "port": _Reach([(r, 0) for r in ports if r.size > 0]),
    }
    stray = [
        (i, t) for i, t in enumerate(observed.traffic)
        if claims[t.space].overlapping(Range(t.address, t.address + 1)) is None
    ]
    for run in sorted(_runs(stray), key=lambda run: run[0][0]):
        first = run[0][1]
        what = "device" if first.space == "mmio" else "port range"
        where = _stray_where(run)
        reads = sum(t.reads for _, t in run)
        writes = sum(t.writes for _, t in run)
        widths = sorted({t.width for _, t in run})
        said = ", ".join(map(str, widths[:-1])) + (" and " if len(widths) > 1 else "")
        yield ctx.finding(
            f"{reads} reads and {writes} writes of {said}{widths[-1]} byte"
            f"{'s' if widths != [1] else ''} exited to the VMM at {where}, where no {what} of "
            f"{declared.file} or of the recording is: a stray access; declare the device the "
            "guest meant, or fix the guest's address",
            ("observed", "traffic", run[0][0]),
            objects=(where,),
        )


def _runs(stray: list[tuple[int, Traffic]]) -> list[list[tuple[int, Traffic]]]:
    """``stray`` (index, entry) in runs of one space whose accesses touch or overlap; each run
    in file order."""
    runs: list[list[tuple[int, Traffic]]] = []
    end = -1
    space = ""
    for i, t in sorted(stray, key=lambda it: (it[1].space, it[1].address, it[0])):
        if runs and t.space == space and t.address <= end:
            runs[-1].append((i, t))
            end = max(end, t.address + t.width)
        else:
            runs.append([(i, t)])
            space, end = t.space, t.address + t.width
    return [sorted(run, key=lambda it: it[0]) for run in runs]


def _stray_where(run: list[tuple[int, Traffic]]) -> str:
    """Where a run of stray entries is: one address as before, or the range its accesses
    cover."""
    first = run[0][1]
    port = first.space == "port"
    if len(run) == 1:
        return f"port {first.address:#x}" if port else hex_addr(first.address)
    start = min(t.address for _, t in run)
    end = max(t.address + t.width for _, t in run)
    if port:
        return f"ports {start:#x}-{end - 1:#x} ({end - start} ports, {len(run)} entries)"
    return f"{hex_addr(start)}-{hex_addr(end - 1)} ({end - start} bytes, {len(run)} entries)"
