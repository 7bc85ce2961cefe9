"""Layouts from QEMU's memory tree: what the monitor (HMP) prints for `info mtree -f`.

Input read:

- The flat view, ``info mtree -f`` (also with ``-o`` owners and ``-d`` dispatch trees, which are
  skipped): the ``FlatView #N`` block whose ``AS`` lines include ``"memory"``, the system memory
  address space; every other FlatView (``I/O``, bus-master spaces of other devices,
  ``cpu-secure-memory-N``, x86 ``KVM-SMRAM``) is skipped with a note. This is the reliable form:
  QEMU has resolved priorities, aliases and containers already, and with KVM it marks each range
  KVM holds as a memslot.
- The tree view, plain ``info mtree``: the ``address-space:`` block of ``"memory"`` is flattened
  the way QEMU's render_memory_region() does (higher priority first, what is already rendered
  stays on top, aliases followed into their ``memory-region:`` blocks). The tree does not say
  which regions terminate, so a leaf ``i/o`` region is taken as a device and an ``i/o`` region
  with subregions as a container; an empty container (a PCI window with no BARs yet) therefore
  becomes a device, which the flat view would not show. Overlapping siblings of equal priority
  are layered in printed order (QEMU does not print which was added last). A line whose start
  equals its end is skipped as zero-size (the tree prints a one-byte region the same way). The
  notes say when any of this happened. A region whose range is already painted over is not
  descended into (nothing below it can show), and flattening stops with an error after a
  million steps: aliases that fan out could otherwise multiply the work without bound.
- Monitor prompts (``(qemu) ...``), lines starting with ``#`` (notes kept with a saved dump;
  QEMU prints none at the start of a line), blank lines and Windows line ends are ignored.

Refused (ImportFailure with the 1-based line, 0 when the input is empty or the ``arch``
argument is wrong): text that is not mtree output, a malformed range line, a region type
QEMU's memory_region_type() does not print, an end below the start, the overflow mark in a
flat view (only the tree view prints it), output without the ``"memory"`` address space or
with nothing in it, a tree line indented below no parent, an alias whose target block is
missing, aliases that lead back into a region they lie in (a loop) or more than 64 deep, a
tree that takes more than a million steps to flatten, region names that name no architecture
(or both) when ``arch`` is not given, and ranges no layout entry can hold. Those are a range
covering the whole 64-bit space, 2**64 bytes (a layout's sizes stop at 2**64-1), refused
rather than skipped: such a range leaves room for nothing else, so the input maps no guest
(in a tree view it is typically an empty root container); and an in-kernel device whose
KVM size would run past 2**64, where KVM could not have placed it. Every entry therefore ends
at 2**64 at the highest.

What each range becomes (KVM's view of it; each rule's code cites the QEMU function):

- ``ram`` and ``ramd`` (a RAM device: a VFIO BAR mapped into the guest): a read-write memslot.
- ``rom`` and ``romd`` (a ROM device in romd mode, such as pflash in read-array mode): a
  read-only memslot (KVM_MEM_READONLY), except a ``rom`` range of a region shown elsewhere as
  ``ram``: read-only only through an alias (the x86 PAM registers), it is a read-write memslot.
- A memory range KVM cannot map whole: its page-aligned interior (4 KiB, the layout's
  page_size) is the memslot and the unaligned head and tail are ``mmio`` devices named
  ``NAME.head`` / ``NAME.tail``; QEMU emulates accesses there. QEMU trims to the host's page
  size, which is 16 or 64 KiB on many arm64 hosts; the import assumes 4 KiB host pages, and the
  notes of an arm64 import with memory ranges say so. A page-aligned memory range without the
  ``KVM`` mark in a flat view that has marks is not a memslot: an ``mmio`` device.
- ``i/o`` (and ``container``, which a flat view shows only for a terminating root): a device.
  In-kernel devices are recognised by QEMU's region names under KVM, per architecture (sizes
  from the device catalog, gpa_plan.arch.devices):
  arm64 ``gicv3_dist`` (vgic-v3-dist), ``gicv3_redist_region[N]`` (vgic-v3-redist, vcpus =
  size / 128 KiB), ``gic_dist`` / ``gic_cpu`` and the older ``kvm-gic_dist`` / ``kvm-gic_cpu``
  (vgic-v2-dist / vgic-v2-cpu), and an ITS: ``control`` directly followed by ``translation``,
  64 KiB each, becomes one vgic-its named ``gicv3_its``; x86_64 ``kvm-apic-msi`` (lapic) and
  ``kvm-ioapic`` (ioapic). Where QEMU's region is larger than the kernel's device (1 MiB
  APIC/MSI window against the 4 KiB LAPIC, 4 KiB against the IOAPIC's 0x100 bytes), the rest is
  an ``mmio`` device ``NAME.rest``: KVM exits there and QEMU answers (MSI writes, for the APIC
  window). Everything else is ``type: mmio`` with its size and the default handler (user);
  ioeventfds and coalesced MMIO do not show in mtree output.
- Zero-size, disabled and overflowing regions of the tree view are skipped, and so are its
  regions with subregions (containers), whose gaps show what lies below.

Names: QEMU's region names. A name used by more than one entry (``pc.ram`` pieces, 32
``virtio-mmio`` transports) gets its base address as a suffix on every use, ``pc.ram-0x100000``;
should that collide with another name, ``-2``, ``-3``... follow, in document order (memslots,
then devices, each sorted by base). ``pa_bits`` is written only when an entry ends above the
architecture's default (arm64 40, x86_64 48), by the importers' shared pa_bits_needed().
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections import Counter
from typing import Any, NamedTuple

from gpa_plan.arch import ARCHES
from gpa_plan.arch.devices import CATALOG
from gpa_plan.importers import (
    GUEST_PAGE,
    U64_LIMIT,
    Imported,
    ImportFailure,
    pa_bits_needed,
)

KiB = 1024
# The host page kvm_align_section() trims memslots to (qemu_real_host_page_size()): assumed.
_PAGE = 4 * KiB
_HOW = "run `info mtree -f` in the QEMU monitor (HMP) and save everything it prints"
_MAX_LISTED = 6
# Flattening a tree view: regions visited plus painted intervals stepped over. Real trees
# need a few per range line; aliases that fan out (each rendering its target again) could
# need 2**depth.
_WORK_BUDGET = 1_000_000
# Alias hops on one path; QEMU's machines nest two or three.
_MAX_ALIAS_HOPS = 64

# system/memory.c memory_region_type(); the flat view prints "rom" for any read-only range.
_TYPES = frozenset({"ram", "rom", "romd", "ramd", "i/o", "container"})
_MEMORY_TYPES = frozenset({"ram", "rom", "romd", "ramd"})

# system/memory.c mtree_info_flatview() / mtree_print_flatview(), mtree_info_as() /
# mtree_print_mr(): headers, then one line per range with HWADDR_FMT_plx (16 hex digits,
# inclusive end), indented by MTREE_INDENT per level.
_FLATVIEW = re.compile(r"FlatView #\d+")
_FLAT_AS = re.compile(r' AS "(?P<name>.*)", root: .*')
_TREE_AS = re.compile(r"address-space: (?P<name>.*)")
_TREE_MR = re.compile(r"memory-region: (?P<name>.*)")
_RANGE = re.compile(
    r"(?P<overflow>\[DETECTED OVERFLOW!\] )?(?P<indent> *)"
    r"(?P<start>[0-9a-f]{16})-(?P<end>[0-9a-f]{16}) "
    r"\(prio (?P<prio>-?\d+), (?:nv-)?(?P<type>[^)]*)\): (?P<rest>.*)"
)
_RANGE_LIKE = re.compile(r"(?:\[DETECTED OVERFLOW!\] )?\s*[0-9a-fA-F]+-")
# mtree_print_mr_owner(), printed with -o
_OWNER = r"(?: orphan| (?:owner|parent):\{[^{}]*\})*"
# mtree_print_flatview(): NAME, " @OFFSET" when offset_in_region is not 0, the owner, then the
# accelerator's name for each address space it holds the range as memory in (AccelClass
# has_memory(); accel/kvm/kvm-all.c kvm_accel_has_memory(), ac->name "KVM").
_FLAT_REST = re.compile(
    rf"(?P<name>.*?)(?: @(?P<offset>[0-9a-f]{{16}}))?{_OWNER}(?P<kvm>(?: KVM)*)"
)
# mtree_print_mr(): "alias NAME @TARGET START-END" with the offsets into TARGET.
_TREE_ALIAS = re.compile(
    rf"alias (?P<name>.*?) @(?P<target>.*) (?P<start>[0-9a-f]{{16}})-(?P<end>[0-9a-f]{{16}})"
    rf"(?P<disabled> \[disabled\])?{_OWNER}"
)
_TREE_REST = re.compile(rf"(?P<name>.*?)(?P<disabled> \[disabled\])?{_OWNER}")

# Region names only one architecture's QEMU machines use: hw/arm/virt.c (mach-virt.ram,
# virt.flash0/1), hw/char/pl011.c, hw/intc/arm_gic*_common.c; hw/i386/pc.c (pc.ram, pc.bios,
# pc.rom, isa-bios), hw/i386/kvm/apic.c, ioapic.c, hw/intc/apic.c, ioapic.c.
_ARCH_NAMES = {
    "arm64": re.compile(
        r"gicv3_dist|gicv3_redist_region\[\d+\]|(?:kvm-)?gic_(?:dist|cpu)"
        r"|mach-virt\.ram|virt\.flash[01]|pl011"
    ),
    "x86_64": re.compile(r"(?:kvm-)?apic-msi|(?:kvm-)?ioapic|pc\.(?:ram|bios|rom)|isa-bios"),
}


class _Region(NamedTuple):
    """One range of the flat view: [start, end), QEMU's region name and type."""

    start: int
    end: int
    name: str
    type: str
    offset: int = 0
    kvm: bool = False
    line: int = 0


def import_qemu_mtree(text: str, arch: str | None = None) -> Imported:
    """The layout of the guest's system memory that QEMU's `info mtree -f` output describes
    (or, flattened here, plain `info mtree`), with notes; ``arch`` (arm64 or x86_64) wins over
    what the region names suggest. Raises ImportFailure."""
    if arch is not None and arch not in ARCHES:
        raise ImportFailure(f"unknown architecture {arch!r}: expected arm64 or x86_64")
    notes: list[str] = []
    regions, header_line = _memory_regions(_scan(text), notes)
    arch = _architecture(regions, arch, header_line, notes)
    mapping = _Mapping(arch, regions)
    for region in _with_its(regions, arch):
        mapping.add(region)
    notes += mapping.notes()
    return Imported(_document(mapping, arch, notes), notes)


# --- reading the text -----------------------------------------------------------------------


class _Line(NamedTuple):
    number: int
    match: re.Match[str]


class _Block(NamedTuple):
    """``flat``: a FlatView; ``as``: a tree view address space; ``mr``: a tree view alias
    target. ``names``: the address spaces (flat, as) or the region (mr)."""

    kind: str
    names: list[str]
    line: int
    ranges: list[_Line]


def _scan(text: str) -> list[_Block]:
    blocks: list[_Block] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line or line.startswith(("(qemu)", "#")):
            continue
        current = blocks[-1] if blocks else None
        header = _header(line, number, current)
        if header is None:
            _body_line(current, line, number)
        elif header is not current:
            blocks.append(header)
    return blocks


def _header(line: str, number: int, current: _Block | None) -> _Block | None:
    if _FLATVIEW.fullmatch(line):
        return _Block("flat", [], number, [])
    if match := _TREE_AS.fullmatch(line):
        # mtree_print_as(): every address space sharing a root is listed before its tree.
        if current is not None and current.kind == "as" and not current.ranges:
            current.names.append(match["name"])
            return current
        return _Block("as", [match["name"]], number, [])
    if match := _TREE_MR.fullmatch(line):
        return _Block("mr", [match["name"]], number, [])
    return None


def _body_line(block: _Block | None, line: str, number: int) -> None:
    if block is None:
        raise ImportFailure(
            f"this is not QEMU memory tree output: expected a 'FlatView #0' line (`info mtree "
            f"-f`) or an 'address-space: memory' line (`info mtree`), found {line[:60]!r}; " + _HOW,
            number,
        )
    if match := _RANGE.fullmatch(line):
        _check_range(match, number, block.kind)
        block.ranges.append(_Line(number, match))
    elif _RANGE_LIKE.match(line):
        raise ImportFailure(_malformed(line), number)
    elif block.kind == "flat" and line.startswith(" "):
        as_line = _FLAT_AS.fullmatch(line)
        if as_line and not block.ranges:
            block.names.append(as_line["name"])
        # else the root line, "No rendered FlatView" or a dispatch tree (-d): nothing to read
    else:
        raise ImportFailure(
            f"unexpected line in QEMU memory tree output: {line[:60]!r}; " + _HOW, number
        )


def _malformed(line: str) -> str:
    return (
        f"malformed range line {line.strip()[:80]!r}: expected "
        "'START-END (prio P, TYPE): NAME' with 16-digit hex addresses, as "
        "`info mtree -f` prints it; " + _HOW
    )


def _check_range(match: re.Match[str], number: int, kind: str) -> None:
    if match["overflow"] and kind == "flat":
        # mtree_print_mr() marks overflows; mtree_print_flatview() prints none.
        raise ImportFailure(
            "'[DETECTED OVERFLOW!]' in a flat view, where QEMU never prints it; " + _HOW, number
        )
    if match["type"] not in _TYPES:
        raise ImportFailure(
            f"unknown region type {match['type']!r}: expected one of "
            f"{', '.join(sorted(_TYPES))} (QEMU's memory_region_type()); output of a QEMU "
            "older than that is not read; " + _HOW,
            number,
        )
    if not match["overflow"] and int(match["end"], 16) < int(match["start"], 16):
        raise ImportFailure(
            f"range ends ({match['end']}) before it starts ({match['start']}); " + _HOW, number
        )


# --- choosing the system memory address space -----------------------------------------------


def _memory_regions(blocks: list[_Block], notes: list[str]) -> tuple[list[_Region], int]:
    """The ranges of address space "memory" and the line its block starts at."""
    flat = [b for b in blocks if b.kind == "flat"]
    trees = [b for b in blocks if b.kind == "as"]
    if not blocks:
        raise ImportFailure("the input holds no QEMU memory tree output; " + _HOW)
    chosen = next((b for b in flat if "memory" in b.names), None)
    if chosen is not None:
        _note_skipped([b for b in flat if b is not chosen], "FlatView", notes)
        if trees:
            notes.append(
                "The tree view (`info mtree`) in the input is ignored: the flat view is exact."
            )
        return _flat_regions(chosen, notes), chosen.line
    tree = next((b for b in trees if "memory" in b.names), None)
    if tree is None:
        raise ImportFailure(
            'no FlatView of the address space "memory" (the guest\'s system memory) in the '
            "input; " + _HOW,
            max([b.line for b in blocks] + [r.number for b in blocks for r in b.ranges]),
        )
    _note_skipped([b for b in trees if b is not tree], "address space tree", notes)
    return _tree_regions(tree, [b for b in blocks if b.kind == "mr"], notes), tree.line


def _note_skipped(blocks: list[_Block], what: str, notes: list[str]) -> None:
    if not blocks:
        return
    names = [name for b in blocks for name in b.names] or ["(none)"]
    plural = "s" if len(blocks) > 1 else ""
    smm = (
        " (x86 SMM's KVM-SMRAM, KVM address space 1, is not imported)"
        if "KVM-SMRAM" in names
        else ""
    )
    notes.append(
        f"Skipped {len(blocks)} other {what}{plural} (address spaces {_listing(names)}): a "
        f'layout holds the system memory address space "memory" only{smm}.'
    )


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _flat_regions(block: _Block, notes: list[str]) -> list[_Region]:
    if not block.ranges:
        raise ImportFailure(
            'the FlatView of "memory" has no ranges (QEMU printed "No rendered FlatView"): '
            "nothing to import; " + _HOW,
            block.line,
        )
    regions = [_flat_region(line) for line in block.ranges]
    if not any(r.kvm for r in regions):
        notes.append(
            "No range carries QEMU's KVM mark (mtree_print_flatview() prints it after every "
            "range KVM holds as a memslot): the output is from TCG or an older QEMU; it is "
            "imported as KVM would map it."
        )
    return regions


def _flat_region(line: _Line) -> _Region:
    match = line.match
    rest = _FLAT_REST.fullmatch(match["rest"])
    if rest is None or not rest["name"]:
        raise ImportFailure(_malformed(match.string), line.number)
    return _Region(
        start=int(match["start"], 16),
        end=int(match["end"], 16) + 1,
        name=rest["name"],
        type=match["type"],
        offset=int(rest["offset"], 16) if rest["offset"] else 0,
        kvm=bool(rest["kvm"]),
        line=line.number,
    )


# --- the tree view, flattened ---------------------------------------------------------------


class _Node(NamedTuple):
    start: int
    end: int  # exclusive; equal to start for the zero-size regions
    priority: int
    type: str
    name: str
    alias: tuple[str, int] | None  # target region, offset into it
    rendered: bool  # enabled and not an overflow QEMU flagged
    line: int
    children: list[_Node]


def _tree_regions(block: _Block, targets: list[_Block], notes: list[str]) -> list[_Region]:
    root = _tree(block)
    if root is None:
        raise ImportFailure(
            'the tree of address space "memory" has no regions: nothing to import; ' + _HOW,
            block.line,
        )
    regions_by_name: dict[str, _Node] = {}
    for target in targets:
        tree = _tree(target)
        if tree is not None:
            regions_by_name.setdefault(target.names[0], tree)
    painter = _Painter()
    _render(root, regions_by_name, painter)
    skipped = list(dict.fromkeys(painter.skipped))
    regions = painter.regions()
    if not regions:
        raise ImportFailure('the tree of address space "memory" maps nothing; ' + _HOW, block.line)
    notes.append(
        "Read from the tree view (`info mtree`), flattened as QEMU's render_memory_region() "
        "does: leaf i/o regions are taken as devices (an empty container looks the same), "
        "overlaps of equal priority in printed order; `info mtree -f` is exact."
    )
    if skipped:
        notes.append(f"Skipped zero-size, disabled or overflowing regions: {_listing(skipped)}.")
    return regions


def _tree(block: _Block) -> _Node | None:
    """The region tree of a tree view block, its first line the root (level 1), subregions
    in the order QEMU renders them; None when the block has no range lines."""
    stack: list[_Node] = []
    root: _Node | None = None
    nodes: list[_Node] = []
    for line in block.ranges:
        level, node = _node(line)
        if root is None:
            if level != 1:
                raise ImportFailure(_malformed(line.match.string), line.number)
            root = node
        elif level < 2 or level > len(stack) + 1:
            raise ImportFailure(
                f"range line indented to no parent: {line.match.string.strip()[:80]!r}; " + _HOW,
                line.number,
            )
        else:
            stack[level - 2].children.append(node)
        del stack[level - 1 :]
        stack.append(node)
        nodes.append(node)
    for node in nodes:
        # Printed order is address, then priority; a stable sort keeps it among equal
        # priorities (the docstring says why that is a guess).
        node.children.sort(key=lambda child: -child.priority)
    return root


def _node(line: _Line) -> tuple[int, _Node]:
    match = line.match
    indent = len(match["indent"])
    alias = _TREE_ALIAS.fullmatch(match["rest"])
    rest = alias or _TREE_REST.fullmatch(match["rest"])
    if indent % 2 or rest is None or not rest["name"]:
        raise ImportFailure(_malformed(match.string), line.number)
    start, last = int(match["start"], 16), int(match["end"], 16)
    node = _Node(
        start=start,
        # MR_SIZE(): a zero-size region prints as START-START, like a one-byte one.
        end=last + 1 if last > start else start,
        priority=int(match["prio"]),
        type=match["type"],
        name=rest["name"],
        alias=(alias["target"], int(alias["start"], 16)) if alias else None,
        rendered=not rest["disabled"] and not match["overflow"],
        line=line.number,
        children=[],
    )
    return indent // 2, node


class _Painter:
    """The flat view being built: what is painted first stays on top.

    ``_starts``/``_ends`` hold the painted space as sorted, disjoint, non-adjacent intervals:
    finding the gaps a range may fill (or that it has none) takes a bisection, and every
    interval stepped over is merged away, so painting is O(log n) per piece amortised, with
    no scan of all pieces and no re-sort (the pieces are sorted once, by regions()).
    """

    def __init__(self) -> None:
        self._pieces: list[_Region] = []
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.skipped: list[str] = []  # zero-size, disabled or overflowing regions met
        self.work = 0  # regions visited and painted intervals stepped over, for _WORK_BUDGET

    def covered(self, start: int, end: int) -> bool:
        """Whether [start, end) is painted already, all of it."""
        index = bisect_right(self._starts, start) - 1
        return index >= 0 and self._ends[index] >= end

    def paint(self, start: int, end: int, node: _Node, region_start: int) -> None:
        # system/memory.c render_memory_region(): a range only fills the gaps left between
        # the ranges rendered before it. Intervals that merely touch [start, end) are taken
        # too, so that they merge with it.
        first = bisect_left(self._ends, start)
        last = bisect_right(self._starts, end)
        cursor = start
        for low, high in zip(self._starts[first:last], self._ends[first:last], strict=True):
            if low > cursor:
                self._piece(cursor, low, node, region_start)
            cursor = max(cursor, high)
        if cursor < end:
            self._piece(cursor, end, node, region_start)
        self.work += last - first
        if first < last:
            start, end = min(start, self._starts[first]), max(end, self._ends[last - 1])
        self._starts[first:last] = [start]
        self._ends[first:last] = [end]

    def _piece(self, low: int, high: int, node: _Node, region_start: int) -> None:
        offset = low - region_start
        self._pieces.append(_Region(low, high, node.name, node.type, offset, False, node.line))

    def regions(self) -> list[_Region]:
        """The pieces by address, adjacent ones of one region merged (flatview_simplify())."""
        merged: list[_Region] = []
        for piece in sorted(self._pieces):
            last = merged[-1] if merged else None
            if (
                last is not None
                and last.end == piece.start
                and last.line == piece.line
                and last.offset + (last.end - last.start) == piece.offset
            ):
                merged[-1] = last._replace(end=piece.end)
            else:
                merged.append(piece)
        return merged


class _Visit(NamedTuple):
    """Render ``node`` at its printed addresses + ``shift``, within [clip)."""

    node: _Node
    shift: int
    clip: tuple[int, int]
    aliases: tuple[str, ...]  # the alias targets followed to reach it, outermost first


class _Fill(NamedTuple):
    """Paint a terminating region's range, once its subregions are rendered."""

    node: _Node
    start: int
    end: int
    region_start: int


def _render(root: _Node, targets: dict[str, _Node], painter: _Painter) -> None:
    """Paint the tree under ``root`` as QEMU's render_memory_region() does: subregions by
    descending priority, then the region itself if it terminates; an alias renders its
    target, shifted so that its offset lands where the alias is. A stack of tasks stands in
    for the recursion, so nesting may be as deep as the input has it."""
    todo: list[_Visit | _Fill] = [_Visit(root, 0, (0, U64_LIMIT), ())]
    while todo:
        task = todo.pop()
        painter.work += 1
        if painter.work > _WORK_BUDGET:
            raise ImportFailure(_too_much_work(task.node), task.node.line)
        if isinstance(task, _Fill):
            painter.paint(task.start, task.end, task.node, task.region_start)
        else:
            todo += reversed(_visit(task, targets, painter))


def _visit(task: _Visit, targets: dict[str, _Node], painter: _Painter) -> list[_Visit | _Fill]:
    """What rendering ``task`` takes next, in order."""
    node, shift, clip, aliases = task
    if not node.rendered or node.end == node.start:
        painter.skipped.append(node.name)
        return []
    start, end = max(node.start + shift, clip[0]), min(node.end + shift, clip[1])
    # What is painted stays on top: below a range painted all over, nothing can show.
    if start >= end or painter.covered(start, end):
        return []
    if node.alias is not None:
        return [_follow(task, node.alias, (start, end), targets)]
    tasks: list[_Visit | _Fill] = [_Visit(c, shift, (start, end), aliases) for c in node.children]
    if _terminates(node):
        tasks.append(_Fill(node, start, end, node.start + shift))
    return tasks


def _follow(
    task: _Visit, alias: tuple[str, int], clip: tuple[int, int], targets: dict[str, _Node]
) -> _Visit:
    """The alias ``task.node`` (to ``alias``: target name, offset) rendered as its target,
    within ``clip``."""
    node, shift, _, aliases = task
    name, offset = alias
    target = targets.get(name)
    if target is None:
        raise ImportFailure(
            f"alias {node.name!r} points at region {name!r}, but the input has no "
            f"'memory-region: {name}' block; save the whole `info mtree` output",
            node.line,
        )
    if name in aliases:
        loop = " -> ".join((*aliases[aliases.index(name) :], name))
        raise ImportFailure(
            f"aliases refer to each other in a loop: alias {node.name!r} leads back into "
            f"region {name!r}, which it lies in ({loop}); " + _HOW,
            node.line,
        )
    if len(aliases) >= _MAX_ALIAS_HOPS:
        raise ImportFailure(
            f"alias {node.name!r} is reached through {len(aliases)} aliases, each inside the "
            f"target of the one before ({aliases[0]} -> ... -> {name}); more than "
            f"{_MAX_ALIAS_HOPS} is not read; " + _HOW,
            node.line,
        )
    return _Visit(target, node.start + shift - offset - target.start, clip, (*aliases, name))


def _too_much_work(node: _Node) -> str:
    return (
        f"flattening the tree view took more than {_WORK_BUDGET:,} steps (stopped at region "
        f"{node.name!r}): aliases that render the same regions again and again multiply the "
        "work; " + _HOW + " (the flat view is QEMU's own flattening)"
    )


def _terminates(node: _Node) -> bool:
    # memory_region_type() says "container" for any region without a parent, such as a PCI
    # window with unassigned_io_ops: only children tell a container from a device here.
    return node.type in _MEMORY_TYPES or not node.children


# --- architecture ---------------------------------------------------------------------------


def _architecture(regions: list[_Region], arch: str | None, line: int, notes: list[str]) -> str:
    seen = {
        name: sorted({r.name for r in regions if pattern.fullmatch(r.name)})
        for name, pattern in _ARCH_NAMES.items()
    }
    if arch is not None:
        others = [n for other, names in seen.items() if other != arch for n in names]
        if others:
            notes.append(
                f"Imported as {arch}, as asked, though the region names {_listing(others)} are "
                "another architecture's: they are plain mmio devices or memslots here."
            )
        return arch
    found = [name for name, names in seen.items() if names]
    if len(found) == 1:
        notes.append(f"Architecture {found[0]}, from the region names {_listing(seen[found[0]])}.")
        return found[0]
    if found:
        raise ImportFailure(
            f"region names of two architectures: arm64 ({_listing(seen['arm64'])}) and x86_64 "
            f"({_listing(seen['x86_64'])}); say which with --arch arm64 or --arch x86_64",
            line,
        )
    raise ImportFailure(
        "cannot tell the architecture: no region name QEMU uses only on arm64 (gicv3_dist, "
        "mach-virt.ram, ...) or x86_64 (pc.ram, kvm-apic-msi, ...); say which with --arch "
        "arm64 or --arch x86_64",
        line,
    )


def _with_its(regions: list[_Region], arch: str) -> list[_Region]:
    """``regions`` by address, an arm64 ITS's two frames joined into one region."""
    ordered = sorted(regions)
    if arch != "arm64":
        return ordered
    joined: list[_Region] = []
    for region in ordered:
        last = joined[-1] if joined else None
        # hw/intc/arm_gicv3_its_common.c gicv3_its_init_mmio(): "control" (ITS_CONTROL_SIZE)
        # and "translation" (ITS_TRANS_SIZE), adjacent inside the "gicv3_its" container; KVM
        # takes the base of "control" (arm_gicv3_its_kvm.c kvm_arm_its_realize()).
        if (
            last is not None
            and (last.name, last.end - last.start, last.offset) == ("control", 64 * KiB, 0)
            and (region.name, region.end - region.start, region.offset)
            == ("translation", 64 * KiB, 0)
            and last.end == region.start
        ):
            joined[-1] = last._replace(end=region.end, name="gicv3_its")
        else:
            joined.append(region)
    return joined


# --- mapping ranges to memslots and devices -------------------------------------------------


class _Mapping:
    """The memslots and devices ranges become, and what to tell the reader about them."""

    def __init__(self, arch: str, regions: list[_Region]) -> None:
        self.arch = arch
        self.memslots: list[dict[str, Any]] = []
        self.devices: list[dict[str, Any]] = []
        self._ram_names = {r.name for r in regions if r.type in ("ram", "ramd")}
        self._marked = any(r.kvm for r in regions)
        self._alias_readonly: list[str] = []
        self._unmapped: list[str] = []
        self._unaligned: list[str] = []
        self._split: list[str] = []
        self._widened: list[str] = []
        self._ram_devices: list[str] = []
        self._memory_seen = False

    def add(self, region: _Region) -> None:
        if region.end - region.start >= U64_LIMIT:
            raise ImportFailure(
                f"range {region.name!r} covers the whole 64-bit address space (2**64 bytes), "
                "leaving room for nothing else: it cannot be a memslot or a device (a layout's "
                "sizes stop at 2**64-1), and no guest's memory is that one region; " + _HOW,
                region.line,
            )
        if region.type in _MEMORY_TYPES:
            self._memory(region)
        else:
            self._device(region)

    # memory

    def _memory(self, region: _Region) -> None:
        self._memory_seen = True
        # accel/kvm/kvm-all.c kvm_align_section(): KVM gets the page-aligned interior only.
        low = -(-region.start // _PAGE) * _PAGE
        high = region.end // _PAGE * _PAGE
        if low >= high:
            self._unmapped.append(region.name)
            self._mmio(region.name, region.start, region.end - region.start)
            return
        if (low, high) == (region.start, region.end) and self._marked and not region.kvm:
            # kvm_set_phys_mem() skips it (no KVM_CAP_READONLY_MEM, for one): QEMU answers.
            self._unmapped.append(region.name)
            self._mmio(region.name, region.start, region.end - region.start)
            return
        if (low, high) != (region.start, region.end):
            self._unaligned.append(region.name)
            self._mmio(f"{region.name}.head", region.start, low - region.start)
            self._mmio(f"{region.name}.tail", high, region.end - high)
        if region.type == "ramd":
            self._ram_devices.append(region.name)
        entry: dict[str, Any] = {"name": region.name, "base": low, "size": high - low}
        if self._readonly(region):
            entry["readonly"] = True
        self.memslots.append(entry)

    def _readonly(self, region: _Region) -> bool:
        # kvm-all.c kvm_mem_flags(): KVM_MEM_READONLY when the region itself is read-only or a
        # ROM device in romd mode; a read-only alias of RAM (x86 PAM "pam-rom", hw/pci-host/
        # pam.c init_pam()) is shown as rom but mapped read-write.
        if region.type == "rom" and region.name in self._ram_names:
            self._alias_readonly.append(f"{region.name} at {region.start:#x}")
            return False
        return region.type in ("rom", "romd")

    # devices

    def _device(self, region: _Region) -> None:
        size = region.end - region.start
        kernel = _in_kernel(self.arch, region.name, size) if region.offset == 0 else None
        if kernel is None:
            self._mmio(region.name, region.start, size)
            return
        device_type, vcpus = kernel
        kernel_size = _kernel_size(device_type, vcpus)
        _check_fits(region, kernel_size)
        entry: dict[str, Any] = {"name": region.name, "type": device_type, "base": region.start}
        if vcpus is not None:
            entry["vcpus"] = vcpus
        self.devices.append(entry)
        if size > kernel_size:
            self._split.append(f"{region.name} ({kernel_size:#x} of {size:#x})")
            self._mmio(f"{region.name}.rest", region.start + kernel_size, size - kernel_size)
        elif size < kernel_size:
            self._widened.append(f"{region.name} ({kernel_size:#x}, QEMU {size:#x})")

    def _mmio(self, name: str, base: int, size: int) -> None:
        if size:
            self.devices.append({"name": name, "type": "mmio", "base": base, "size": size})

    def notes(self) -> list[str]:
        notes: list[str] = []
        if self._alias_readonly:
            notes.append(
                f"Read-write memslots for {_listing(self._alias_readonly)}: QEMU shows them rom "
                "through a read-only alias (PAM), but kvm_mem_flags() takes KVM_MEM_READONLY "
                "from the RAM region itself."
            )
        if self._ram_devices:
            notes.append(
                f"RAM device regions ({_listing(self._ram_devices)}, e.g. VFIO BARs) are "
                "read-write memslots, as kvm_set_phys_mem() maps every RAM region."
            )
        if self._unaligned:
            notes.append(
                f"{_listing(self._unaligned)}: KVM maps the 4 KiB-aligned part only "
                "(kvm_align_section()); the unaligned head/tail are mmio devices QEMU emulates."
            )
        if self._unmapped:
            notes.append(
                f"{_listing(self._unmapped)}: memory in QEMU but no KVM memslot (sub-page, or "
                "no KVM mark), so an mmio device: accesses exit to QEMU."
            )
        if self._split:
            notes.append(
                f"In-kernel devices that answer only the start of QEMU's region: "
                f"{_listing(self._split)}; the rest is the mmio device NAME.rest, where KVM "
                "exits to QEMU (for kvm-apic-msi, QEMU turns writes there into MSIs)."
            )
        if self._widened:
            notes.append(
                f"In-kernel devices imported at KVM's size, larger than QEMU's region: "
                f"{_listing(self._widened)}."
            )
        if self.arch == "arm64" and self._memory_seen:
            notes.append(
                "Memslots were trimmed assuming 4 KiB host pages: QEMU's kvm_align_section() "
                "trims to the host's page size, so on an arm64 host with 16 or 64 KiB pages KVM "
                "maps less of memory ranges not aligned to that size."
            )
        return notes


def _in_kernel(arch: str, name: str, size: int) -> tuple[str, int | None] | None:
    """The catalog type and vCPU count of an in-kernel device QEMU names ``name`` under KVM,
    or None for a device QEMU emulates."""
    if arch == "arm64":
        return _arm64_in_kernel(name, size)
    # hw/i386/kvm/apic.c kvm_apic_realize(): "kvm-apic-msi", APIC_SPACE_SIZE (1 MiB), mapped
    # at the APIC base with priority 0x1000 (x86_cpu_apic_realize()); KVM's LAPIC answers its
    # first 4 KiB (LAPIC_MMIO_LENGTH), QEMU's kvm_apic_mem_write() the rest (MSIs).
    if name == "kvm-apic-msi":
        return "lapic", None
    # hw/i386/kvm/ioapic.c kvm_ioapic_realize(): "kvm-ioapic", 0x1000 bytes with no ops;
    # KVM's IOAPIC answers IOAPIC_MEM_LENGTH (0x100) of them.
    if name == "kvm-ioapic":
        return "ioapic", None
    return None


def _arm64_in_kernel(name: str, size: int) -> tuple[str, int | None] | None:
    # hw/intc/arm_gicv3_common.c gicv3_init_irqs_and_mmio(): "gicv3_dist" (0x10000) and
    # "gicv3_redist_region[i]" (redist_region_count[i] * gicv3_redist_size()), registered
    # with KVM by arm_gicv3_kvm.c kvm_arm_gicv3_realize().
    if name == "gicv3_dist":
        return "vgic-v3-dist", None
    per_vcpu = _kernel_size("vgic-v3-redist", 1)
    if re.fullmatch(r"gicv3_redist_region\[\d+\]", name) and size % per_vcpu == 0:
        return "vgic-v3-redist", size // per_vcpu
    # hw/intc/arm_gic_common.c gic_init_irqs_and_mmio(): "gic_dist" (0x1000), "gic_cpu"
    # (0x2000 for revision 2), registered by arm_gic_kvm.c kvm_arm_gic_realize(); older QEMU
    # reserved "kvm-gic_dist" / "kvm-gic_cpu" (0x1000) there instead.
    if name in ("gic_dist", "kvm-gic_dist"):
        return "vgic-v2-dist", None
    if name in ("gic_cpu", "kvm-gic_cpu"):
        return "vgic-v2-cpu", None
    if name == "gicv3_its" and size == _kernel_size("vgic-its", None):
        return "vgic-its", None
    return None


def _kernel_size(device_type: str, vcpus: int | None) -> int:
    return CATALOG[device_type].size_for(vcpus=vcpus, guest_page_size=GUEST_PAGE, size=None)


def _check_fits(region: _Region, kernel_size: int) -> None:
    """Refuse an in-kernel device that KVM's size would carry past the 64-bit space."""
    if region.start + kernel_size > U64_LIMIT:
        raise ImportFailure(
            f"in-kernel device {region.name!r} at {region.start:#x} would end past 2**64 at "
            f"KVM's size {kernel_size:#x}, where KVM could not have placed it; " + _HOW,
            region.line,
        )


# --- the document ---------------------------------------------------------------------------


def _document(mapping: _Mapping, arch: str, notes: list[str]) -> dict[str, Any]:
    memslots = sorted(mapping.memslots, key=lambda e: e["base"])
    devices = sorted(mapping.devices, key=lambda e: e["base"])
    renamed = _unique_names([*memslots, *devices])
    if renamed:
        listed = [f"{name} x{count}" for name, count in renamed.items()]
        notes.append(
            f"Names QEMU repeats ({_listing(listed)}) got their base address as a suffix, "
            "e.g. NAME-0x1000."
        )
    document: dict[str, Any] = {"layout": 1, "name": f"qemu-mtree-{arch}", "arch": arch}
    pa_bits = pa_bits_needed(arch, [*memslots, *devices])
    if pa_bits is not None:
        document["pa_bits"] = pa_bits
        notes.append(
            f"pa_bits {pa_bits}: the highest range ends above the {arch} default of "
            f"{ARCHES[arch].default_pa_bits} bits."
        )
    document["memslots"] = memslots
    document["devices"] = devices
    return document


def _unique_names(entries: list[dict[str, Any]]) -> Counter[str]:
    """Give every entry whose name repeats its base as a suffix; the repeated names, counted."""
    counts = Counter(e["name"] for e in entries)
    repeated = Counter({name: n for name, n in counts.items() if n > 1})
    taken = {name for name, n in counts.items() if n == 1}
    for entry in entries:
        if entry["name"] not in repeated:
            continue
        wanted = f"{entry['name']}-{entry['base']:#x}"
        unique, n = wanted, 2
        while unique in taken:
            unique, n = f"{wanted}-{n}", n + 1
        taken.add(unique)
        entry["name"] = unique
    return repeated
