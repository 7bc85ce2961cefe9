"""`import qemu-mtree` reads what QEMU prints: `info mtree -f`, `-f -d`, `-f -d -o`.

The samples here are not typed out by hand: they are printed by the functions below, each of
which mirrors a QEMU printf format string by string, so that every byte of them (the TABs of
the dispatch tree included) is what QEMU writes. The formats are those of QEMU 7.2's
softmmu/memory.c and softmmu/physmem.c (system/memory.c and system/physmem.c since QEMU 8.1),
read in qemu/qemu at softmmu/memory.c 0021c4765a6b and softmmu/physmem.c 06bb74985f42, trees
between QEMU 6.0 and 8.0 (they print with TARGET_FMT_plx, which 8.0 renamed HWADDR_FMT_plx,
and have the RamDiscardManager of 6.0):

- include/exec/hwaddr.h: TARGET_FMT_plx is "%016" PRIx64 (HWADDR_FMT_plx since QEMU 8.0).
- memory.c: MTREE_INDENT is "  ".
- memory.c mtree_print_flatview(): "FlatView #%d\\n"; per address space
  " AS \\"%s\\", root: %s" [", alias %s"] "\\n"; " Root memory region: %s\\n"; then
  MTREE_INDENT "No rendered FlatView\\n\\n" and nothing more when it has no ranges, or per range
  MTREE_INDENT TARGET_FMT_plx "-" TARGET_FMT_plx " (prio %d, %s%s): %s" [" @" TARGET_FMT_plx],
  the owner (with -o), " %s" with the accelerator's name for each address space it holds the
  range in ("KVM"), "\\n"; then with -d mtree_print_dispatch(); then "\\n".
- memory.c mtree_print_mr_owner() / mtree_expand_owner() (-o): " orphan", or
  " %s:{%s" ("owner" or "parent", "dev" or "obj") then " id=%s", " path=%s" or " type=%s",
  then "}".
- physmem.c mtree_print_dispatch(): "  Dispatch\\n", "    Physical sections\\n", per section
  "      #%d @" TARGET_FMT_plx ".." TARGET_FMT_plx " %s%s%s%s%s" [" alias=%s"] "\\n" (name, then
  " [unassigned]", " [not dirty]", " [ROM]" or " [watch]" for sections 0 to 3, " [ROOT]",
  " [MRU]", " [iommu]"), "    Nodes (%d bits per level, %d levels) ptr=[%d] skip=%d\\n", per
  node "      [%d]\\n" and its entries from mtree_print_phys_entries(): "\\t%3d      " or
  "\\t%3d..%-3d ", then " skip=%d ", then " ptr=NIL", " ptr=#%d" or " ptr=[%d]", then "\\n".

The machine is QEMU's isapc (`-M isapc -accel kvm -m 32M`, QEMU 7.2): hw/i386/pc_piix.c
pc_init1() with pci_enabled false creates no IOAPIC device (ioapic_init_gsi() is for PCI
machines only), so the memory tree has no kvm-ioapic region, while pc_i8259_create() puts
QEMU's in-kernel PIC (hw/i386/kvm/i8259.c kvm_pic_realize(): "kvm-pic", 2 ports, and
"kvm-elcr", 1) on the I/O ports because KVM_CREATE_IRQCHIP was made (accel/kvm/kvm-all.c
kvm_irqchip_create()). Memory: hw/i386/pc.c pc_memory_init() (pc.ram; "pc.rom" at 0xc0000,
PC_ROM_SIZE 0x20000, read-write when PCI is off), hw/i386/pc_sysfw.c
pc_system_firmware_init() and x86_bios_rom_init(..., "bios.bin", ..., isapc_ram_fw true):
pc.bios, the 128 KiB of bios.bin (isapc sets no firmware=bios-256k.bin), in RAM below 4 GiB
and aliased at 0xe0000 with priority 1, both read-write; hw/display/vga-isa.c ("vga-lowmem",
priority 1). The dispatch tree's section and node numbers
are examples of the format, not a claim about this machine's dispatch.
"""

# The samples are printed with %-formats on purpose: they are QEMU's printf formats, verbatim.
# ruff: noqa: UP031

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gpa_plan.check.run import check_file
from gpa_plan.cli import cli
from gpa_plan.importers import ImportFailure
from gpa_plan.importers.qemu_mtree import import_qemu_mtree

MTREE_INDENT = "  "
HOW = "run `info mtree -f` in the QEMU monitor (HMP) and save everything it prints"


def plx(value: int) -> str:
    return "%016x" % value  # TARGET_FMT_plx


# --- QEMU's formats -------------------------------------------------------------------------


def flatview_header(counter: int, spaces: list[str], root: str) -> str:
    text = "FlatView #%d\n" % counter
    for name in spaces:
        text += ' AS "%s", root: %s' % (name, root) + "\n"
    return text + " Root memory region: %s\n" % root


def flat_range(
    start: int,
    last: int,
    prio: int,
    kind: str,
    name: str,
    *,
    offset: int = 0,
    owner: str = "",
    kvm: bool = False,
) -> str:
    text = MTREE_INDENT + plx(start) + "-" + plx(last) + " (prio %d, %s%s): %s" % (
        prio,
        "",
        kind,
        name,
    )
    if offset:
        text += " @" + plx(offset)
    text += owner  # mtree_print_mr_owner(), with -o
    if kvm:
        text += " %s" % "KVM"  # AccelClass name, once per address space holding the range
    return text + "\n"


def expand_owner(label: str, is_dev: bool, key: str, value: str) -> str:
    # mtree_expand_owner(): key is "id", "path" or "type".
    return " %s:{%s" % (label, "dev" if is_dev else "obj") + " %s=%s" % (key, value) + "}"


ORPHAN = " orphan"
SECTION_FLAGS = (" [unassigned]", " [not dirty]", " [ROM]", " [watch]")


def dispatch(
    sections: list[tuple[int, int, str, str]], nodes: list[list[tuple[int, int, int, str]]]
) -> str:
    """mtree_print_dispatch(): ``sections`` as (start, last, name, extra flags), ``nodes`` as
    lists of (first, end, skip, ptr) entries, ``ptr`` printed as given ("NIL", "#N", "[N]")."""
    text = "  Dispatch\n" + "    Physical sections\n"
    for i, (start, last, name, flags) in enumerate(sections):
        named = SECTION_FLAGS[i] if i < len(SECTION_FLAGS) else ""
        text += "      #%d @" % i + plx(start) + ".." + plx(last) + " %s%s%s" % (name, named, flags)
        text += "\n"
    text += "    Nodes (%d bits per level, %d levels) ptr=[%d] skip=%d\n" % (9, 6, 0, 1)
    for i, entries in enumerate(nodes):
        text += "      [%d]\n" % i
        for first, end, skip, ptr in entries:
            # mtree_print_phys_entries()
            if first == end - 1:
                text += "\t%3d      " % first
            else:
                text += "\t%3d..%-3d " % (first, end - 1)
            text += " skip=%d " % skip
            text += " ptr=%s" % ptr
            text += "\n"
    return text


# --- the isapc machine ----------------------------------------------------------------------

MiB = 1 << 20


def isapc(*, dispatch_tree: bool, owners: bool, kvm_pic: bool = True) -> str:
    """`info mtree -f` of isapc, with -d and -o as asked (``kvm_pic`` False: the PIC QEMU
    emulates itself, "pic", as without an in-kernel irqchip)."""

    def owner(text: str) -> str:
        return text if owners else ""

    ram_owner = owner(expand_owner("owner", False, "path", "/objects/pc.ram"))
    vga_owner = owner(expand_owner("owner", True, "path", "/machine/unattached/device[3]"))
    bios_owner = owner(expand_owner("parent", False, "path", "/machine/unattached"))
    memory = flatview_header(0, ["memory", "cpu-memory-0"], "system")
    memory += flat_range(0, 0x9_FFFF, 0, "ram", "pc.ram", owner=ram_owner, kvm=True)
    memory += flat_range(0xA_0000, 0xB_FFFF, 1, "i/o", "vga-lowmem", owner=vga_owner)
    memory += flat_range(0xC_0000, 0xD_FFFF, 1, "ram", "pc.rom", owner=bios_owner, kvm=True)
    memory += flat_range(0xE_0000, 0xF_FFFF, 1, "ram", "pc.bios", owner=bios_owner, kvm=True)
    memory += flat_range(
        0x10_0000, 32 * MiB - 1, 0, "ram", "pc.ram", offset=0x10_0000, owner=ram_owner, kvm=True
    )
    memory += flat_range(
        0xFFFE_0000, 0xFFFF_FFFF, 0, "ram", "pc.bios", owner=bios_owner, kvm=True
    )
    if dispatch_tree:
        memory += dispatch(
            [
                (0, 2**64 - 1, "unassigned", ""),
                (0, 32 * MiB - 1, "pc.ram", ""),
                (0xA_0000, 0xB_FFFF, "vga-lowmem", ""),
                (0xC_0000, 0xD_FFFF, "pc.rom", ""),
                (0xE_0000, 0xF_FFFF, "pc.bios", ""),
                (0x10_0000, 0x20F_FFFF, "pc.ram", " [MRU]"),
                (0xFFFE_0000, 0xFFFF_FFFF, "pc.bios", ""),
            ],
            [
                [(0, 1, 1, "[1]"), (1, 512, 1, "NIL")],
                [(0, 1, 1, "[2]"), (1, 3, 0, "#0"), (3, 4, 1, "[3]"), (4, 512, 1, "NIL")],
                [(0, 160, 0, "#1"), (160, 192, 0, "#2"), (192, 224, 0, "#3"), (224, 256, 0, "#4"),
                 (256, 512, 0, "#5")],
                [(0, 480, 0, "#0"), (480, 512, 0, "#6")],
            ],
        )
    memory += "\n"
    pic = "kvm-pic" if kvm_pic else "pic"
    io = flatview_header(1, ["I/O"], "io")
    io_owner = owner(ORPHAN)
    for start, last, name in [
        (0x00, 0x07, "dma-chan"),
        (0x08, 0x0F, "dma-cont"),
        (0x20, 0x21, pic),
        (0x40, 0x43, "kvm-pit" if kvm_pic else "pit"),
        (0x60, 0x60, "i8042-data"),
        (0x61, 0x61, "pcspk"),
        (0x64, 0x64, "i8042-cmd"),
        (0x70, 0x71, "rtc"),
        (0xA0, 0xA1, pic),
        (0x3F8, 0x3FF, "serial"),
        (0x4D0, 0x4D0, "kvm-elcr" if kvm_pic else "elcr"),
        (0x4D1, 0x4D1, "kvm-elcr" if kvm_pic else "elcr"),
        (0x510, 0x511, "fwcfg"),
    ]:
        io += flat_range(start, last, 0, "i/o", name, owner=owner(expand_owner(
            "owner", True, "path", "/machine/unattached/device[0]")))
    io += flat_range(0x512, 0xFFFF, 0, "i/o", "io", offset=0x512, owner=io_owner)
    if dispatch_tree:
        io += dispatch(
            [(0, 2**64 - 1, "unassigned", ""), (0, 0xFFFF, "io", " [ROOT] [MRU]")],
            [[(0, 1, 1, "[1]"), (1, 512, 1, "NIL")], [(0, 16, 0, "#1"), (16, 512, 1, "NIL")]],
        )
    io += "\n"
    return memory + io


ISAPC_DEVICES = [
    {"name": "vga-lowmem", "type": "mmio", "base": 0xA_0000, "size": 0x2_0000},
    {"name": "ioapic", "type": "ioapic", "base": 0xFEC0_0000},
]
ISAPC_MEMSLOTS = [
    {"name": "pc.ram-0x0", "base": 0, "size": 0xA_0000},
    {"name": "pc.rom", "base": 0xC_0000, "size": 0x2_0000},
    {"name": "pc.bios-0xe0000", "base": 0xE_0000, "size": 0x2_0000},
    {"name": "pc.ram-0x100000", "base": 0x10_0000, "size": 32 * MiB - 0x10_0000},
    {"name": "pc.bios-0xfffe0000", "base": 0xFFFE_0000, "size": 0x2_0000},
]


FIXTURE = Path(__file__).parent / "data" / "import" / "qemu-mtree" / "isapc-kvm-flat-d-o.txt"


def test_the_isapc_fixture_is_what_the_formats_print() -> None:
    # The saved sample (read by the fixture tests of test_import_qemu_mtree.py) is this
    # module's output under its comment header: it cannot drift from QEMU's formats here.
    body = [line for line in FIXTURE.read_text().split("\n") if not line.startswith("#")]
    assert "\n".join(body) == isapc(dispatch_tree=True, owners=True)


def test_the_samples_hold_what_makes_them_qemus_output() -> None:
    text = isapc(dispatch_tree=True, owners=True)
    assert "\n\t  0       skip=1  ptr=[1]\n" in text
    assert "\n\t  1..511  skip=1  ptr=NIL\n" in text
    assert "\n      #5 @0000000000100000..00000000020fffff pc.ram [MRU]\n" in text
    assert (
        "\n  0000000000100000-0000000001ffffff (prio 0, ram): pc.ram @0000000000100000"
        " owner:{obj path=/objects/pc.ram} KVM\n" in text
    )
    assert "\n  0000000000000512-000000000000ffff (prio 0, i/o): io @0000000000000512 orphan\n" in (
        text
    )


# --- items: every form QEMU prints reads the same ---------------------------------------


@pytest.mark.parametrize(
    ("dispatch_tree", "owners"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["-f", "-f -d", "-f -o", "-f -d -o"],
)
def test_isapc_reads_the_same_with_dispatch_trees_and_owners(
    dispatch_tree: bool, owners: bool
) -> None:
    document = import_qemu_mtree(isapc(dispatch_tree=dispatch_tree, owners=owners)).document
    assert document["arch"] == "x86_64"
    assert document["memslots"] == ISAPC_MEMSLOTS
    assert document["devices"] == ISAPC_DEVICES


def test_a_dispatch_tree_whose_tabs_an_editor_expanded_is_read_too() -> None:
    text = isapc(dispatch_tree=True, owners=False)
    expanded = text.replace("\t", " " * 8)
    assert import_qemu_mtree(expanded).document == import_qemu_mtree(text).document


# --- the in-kernel IOAPIC -------------------------------------------------------------------

IOAPIC_NOTE = (
    "Device ioapic added at 0xfec0_0000 though no region shows it: the I/O address space has "
    "QEMU's in-kernel PIC (kvm-pic, at line {line} of the input), so QEMU made "
    "KVM_CREATE_IRQCHIP, which also creates KVM's IOAPIC there (kvm_ioapic_init()); QEMU maps "
    "no kvm-ioapic region on a machine without PCI, such as isapc."
)


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.split("\n"), 1) if needle in line)


def test_isapc_with_kvm_pic_gets_the_in_kernel_ioapic_and_says_why() -> None:
    text = isapc(dispatch_tree=False, owners=False)
    result = import_qemu_mtree(text)
    assert IOAPIC_NOTE.format(line=_line_of(text, ": kvm-pic")) in result.notes


def test_without_an_in_kernel_pic_no_ioapic_is_added() -> None:
    result = import_qemu_mtree(isapc(dispatch_tree=False, owners=False, kvm_pic=False))
    assert [d for d in result.document["devices"] if d["type"] == "ioapic"] == []
    assert not any("KVM_CREATE_IRQCHIP" in note for note in result.notes)


def test_a_machine_that_shows_its_kvm_ioapic_keeps_that_one_only() -> None:
    q35 = Path(__file__).parent / "data" / "import" / "qemu-mtree" / "q35-kvm-flat.txt"
    result = import_qemu_mtree(q35.read_text())
    ioapics = [d for d in result.document["devices"] if d["type"] == "ioapic"]
    assert ioapics == [{"name": "kvm-ioapic", "type": "ioapic", "base": 0xFEC0_0000}]
    assert not any("KVM_CREATE_IRQCHIP" in note for note in result.notes)


def test_the_tree_view_of_the_io_ports_tells_the_in_kernel_pic_too() -> None:
    text = (
        "address-space: memory\n"
        "  0000000000000000-ffffffffffffffff (prio 0, i/o): system\n"
        "    0000000000000000-0000000001ffffff (prio 0, ram): pc.ram\n"
        "\n"
        "address-space: I/O\n"
        "  0000000000000000-000000000000ffff (prio 0, i/o): io\n"
        "    0000000000000020-0000000000000021 (prio 0, i/o): kvm-pic"
        " owner:{dev path=/machine/unattached/device[1]}\n"
    )
    result = import_qemu_mtree(text, "x86_64")
    assert {"name": "ioapic", "type": "ioapic", "base": 0xFEC0_0000} in result.document["devices"]
    assert IOAPIC_NOTE.format(line=7) in result.notes


def test_an_arm64_import_gets_no_ioapic_whatever_its_io_ports_hold() -> None:
    text = (
        'FlatView #0\n AS "memory", root: system\n Root memory region: system\n'
        "  0000000040000000-000000007fffffff (prio 0, ram): mach-virt.ram KVM\n\n"
        'FlatView #1\n AS "I/O", root: io\n Root memory region: io\n'
        "  0000000000000020-0000000000000021 (prio 0, i/o): kvm-pic\n"
    )
    document = import_qemu_mtree(text).document
    assert document["arch"] == "arm64"
    assert all(d["type"] != "ioapic" for d in document["devices"])


def test_the_isapc_import_checks_clean_and_its_yaml_says_why_the_ioapic_is_there(
    tmp_path: Path,
) -> None:
    source = tmp_path / "isapc.txt"
    source.write_text(isapc(dispatch_tree=True, owners=True))
    out = tmp_path / "isapc.yaml"
    result = CliRunner().invoke(cli, ["import", "qemu-mtree", str(source), "-o", str(out)])
    assert (result.exit_code, result.stderr) == (0, "")
    comments = [line for line in out.read_text().splitlines() if line.startswith("# ")]
    line = _line_of(source.read_text(), ": kvm-pic")
    assert "# " + IOAPIC_NOTE.format(line=line) in comments
    (checked,) = check_file(out)
    assert checked.valid
    assert checked.findings == ()


# --- what is not QEMU's is refused, at its line ---------------------------------------------

HEADER = 'FlatView #0\n AS "memory", root: system\n Root memory region: system\n'
RAM = "  0000000000000000-000000000009ffff (prio 0, ram): pc.ram KVM\n"


def failure(text: str) -> ImportFailure:
    with pytest.raises(ImportFailure) as caught:
        import_qemu_mtree(text, "x86_64")
    return caught.value


AFTER_HEADER = (
    "expected ' AS \"NAME\", root: ROOT' and ' Root memory region: NAME' lines, then range "
    "lines '  START-END (prio P, TYPE): NAME' (or '  No rendered FlatView')"
)
AFTER_RANGES = (
    "expected more range lines '  START-END (prio P, TYPE): NAME' or, with -d, the "
    "'  Dispatch' tree"
)
AFTER_EMPTY = "expected the next 'FlatView #N' after '  No rendered FlatView'"
IN_DISPATCH = (
    "in the dispatch tree of a FlatView (`info mtree -f -d`): expected 'Physical sections', "
    "'#N @START..END NAME', 'Nodes (...)', '[N]' or a TAB-indented node entry, as QEMU's "
    "mtree_print_dispatch() prints them; " + HOW
)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        # A line QEMU does not print between the header and the ranges.
        (HEADER.replace(" Root", " Rooot") + RAM, 3, "' Rooot memory region: system' in a "
         f"FlatView: {AFTER_HEADER}"),
        # Lines among the ranges that were once dropped without a word.
        (HEADER + RAM + "  pc.ram resized to 640K\n" + RAM, 5,
         f"'  pc.ram resized to 640K' in a FlatView: {AFTER_RANGES}"),
        (HEADER + RAM + '\tAS "memory"\n', 5, f"'\\tAS \"memory\"' in a FlatView: {AFTER_RANGES}"),
        (HEADER + RAM + ' AS "late", root: system\n', 5,
         f"' AS \"late\", root: system' in a FlatView: {AFTER_RANGES}"),
        # Cut at 60 characters, as every quoted line is.
        (HEADER + "  No rendered FlatView\n" + RAM, 5,
         f"'  0000000000000000-000000000009ffff (prio 0, ram): pc.ram KV' in a FlatView: "
         f"{AFTER_EMPTY}"),
    ],
    ids=["header", "among ranges", "tab among ranges", "AS after ranges", "after no view"],
)
def test_an_unexpected_line_in_a_flat_view_is_refused_at_its_line(
    text: str, line: int, message: str
) -> None:
    error = failure(text)
    assert (error.line, error.column) == (line, 1)
    assert error.message == (
        f"unexpected line {message}, as `info mtree -f` prints them; " + HOW
    )


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        ("\tgarbage", "'\\tgarbage'"),
        ("\t  0      skip=1  ptr=[1]", "'\\t  0      skip=1  ptr=[1]'"),  # one space short
        (RAM.rstrip("\n"), repr(RAM.rstrip("\n")[:60])),  # a range after the dispatch tree
        ("    Physical section", "'    Physical section'"),
    ],
    ids=["tab garbage", "entry misprinted", "range after dispatch", "misspelt heading"],
)
def test_an_unexpected_line_in_a_dispatch_tree_is_refused_at_its_line(
    bad: str, shown: str
) -> None:
    text = HEADER + RAM + dispatch([(0, 2**64 - 1, "unassigned", "")], [[(0, 512, 1, "NIL")]])
    lines = text.split("\n")
    lines.insert(8, bad)
    error = failure("\n".join(lines))
    assert (error.line, error.column) == (9, 1)
    assert error.message == f"unexpected line {shown} {IN_DISPATCH}"


def test_an_unexpected_line_in_a_tree_view_is_refused_at_its_line() -> None:
    text = (
        "address-space: memory\n"
        "  0000000000000000-ffffffffffffffff (prio 0, i/o): system\n"
        "\tDispatch\n"
    )
    error = failure(text)
    assert (error.line, error.column, error.message) == (
        3,
        1,
        "unexpected line '\\tDispatch' in the tree of address space 'memory': `info mtree` "
        "prints only range lines 'START-END (prio P, TYPE): NAME' there, indented two spaces "
        "a level; " + HOW,
    )


def test_the_cli_says_file_line_and_column_of_a_dispatch_tree_error(tmp_path: Path) -> None:
    source = tmp_path / "mtree.txt"
    text = isapc(dispatch_tree=True, owners=False)
    source.write_text(text.replace("\t  1..511  skip=1  ptr=NIL", "\t  1..511 skip=1 ptr=NIL", 1))
    result = CliRunner().invoke(cli, ["import", "qemu-mtree", str(source)])
    line = _line_of(text, "\t  1..511  skip=1  ptr=NIL")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"{source}:{line}:1: error[import] unexpected line ")
