"""The partition of ``[0, 2**pa_bits)``: exact regions, precedence and each access's outcome.

The expected outcomes here are written by hand from docs/kernel.md ("What an access becomes": arm64
kvm_handle_guest_abort() -> io_mem_abort(), x86 kvm_handle_noslot_fault() ->
vcpu_mmio_read()/vcpu_mmio_write()), not taken from gpa_plan.arch: a memslot wins over every device,
an in-kernel device over an ioeventfd, coalesced zone or user device; a read-only memslot serves
reads and fetches and sends writes to the device layer; outside memslots, reads and writes go to the
device layer and a fetch is a guest fault on arm64 (instruction abort) and a VM error on x86
(emulation failure).
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpa_plan.arch import ARCHES, Handler
from gpa_plan.arch.devices import CATALOG
from gpa_plan.check.explain import explain_address
from gpa_plan.check.partition import MAX_REGION_NAMES, Region, partition
from gpa_plan.check.run import load_layout
from gpa_plan.layout.models import parse_layout
from gpa_plan.layout.resolved import DeviceEntry, MemslotEntry, ReservedEntry, ResolvedLayout
from gpa_plan.ranges import Range

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# docs/kernel.md's table, by hand. Keys: (memslot backing, strongest device handler at the address).
WRITE_TO_DEVICE_LAYER = {
    None: "io-exit",
    "user": "io-exit",
    "kernel": "io-kernel",
    "ioeventfd": "io-kernel",
    "coalesced": "io-coalesced",
}
READ_FROM_DEVICE_LAYER = {
    None: "io-exit",
    "user": "io-exit",
    "kernel": "io-kernel",
    "ioeventfd": "io-exit",
    "coalesced": "io-exit",
}
FETCH_OUTSIDE_MEMORY = {"arm64": "guest-fault", "x86_64": "vm-error"}
HANDLER_RANK = {"kernel": 3, "ioeventfd": 2, "coalesced": 1, "user": 0}


def expected_outcomes(arch: str, backing: str | None, handler: str | None) -> tuple[str, ...]:
    if backing == "ram":
        return ("memory", "memory", "memory")
    if backing == "rom":
        return ("memory", WRITE_TO_DEVICE_LAYER[handler], "memory")
    return (
        READ_FROM_DEVICE_LAYER[handler],
        WRITE_TO_DEVICE_LAYER[handler],
        FETCH_OUTSIDE_MEMORY[arch],
    )


def summary(regions: list[Region]) -> list[tuple[int, int, str, tuple[str, ...], str, str, str]]:
    return [
        (r.start, r.end, r.kind, r.names, r.read.value, r.write.value, r.fetch.value)
        for r in regions
    ]


def regions_of(tmp_path: Path, text: str, arch: str | None = None) -> list[Region]:
    path = tmp_path / "layout.yaml"
    path.write_text(textwrap.dedent(text))
    loaded = load_layout(path)
    return partition(loaded.resolved, ARCHES[arch or loaded.layout.arch])


SMALL_ARM64 = """\
    layout: 1
    arch: arm64
    pa_bits: 32
    memslots:
      - name: flash
        base: 0x0
        size: 64M
        readonly: true
      - name: ram
        base: 0x4000_0000
        size: 1G
    devices:
      - name: gicd
        type: vgic-v3-dist
        base: 0x0800_0000
      - name: uart
        type: mmio
        base: 0x0900_0000
        size: 4K
    """


def test_small_arm64_layout_partitions_into_these_regions(tmp_path: Path) -> None:
    FAULT = "guest-fault"
    assert summary(regions_of(tmp_path, SMALL_ARM64)) == [
        (0x0, 0x0400_0000, "rom", ("flash",), "memory", "io-exit", "memory"),
        (0x0400_0000, 0x0800_0000, "unbacked", (), "io-exit", "io-exit", FAULT),
        (0x0800_0000, 0x0801_0000, "device", ("gicd",), "io-kernel", "io-kernel", FAULT),
        (0x0801_0000, 0x0900_0000, "unbacked", (), "io-exit", "io-exit", FAULT),
        (0x0900_0000, 0x0900_1000, "device", ("uart",), "io-exit", "io-exit", FAULT),
        (0x0900_1000, 0x4000_0000, "unbacked", (), "io-exit", "io-exit", FAULT),
        (0x4000_0000, 0x8000_0000, "ram", ("ram",), "memory", "memory", "memory"),
        (0x8000_0000, 0x1_0000_0000, "unbacked", (), "io-exit", "io-exit", FAULT),
    ]


def test_same_layout_under_x86_has_no_vgic_and_fetches_outside_memory_fail(
    tmp_path: Path,
) -> None:
    ERR = "vm-error"
    assert summary(regions_of(tmp_path, SMALL_ARM64, "x86_64")) == [
        (0x0, 0x0400_0000, "rom", ("flash",), "memory", "io-exit", "memory"),
        (0x0400_0000, 0x0800_0000, "unbacked", (), "io-exit", "io-exit", ERR),
        # No vGIC on x86: the range is a device that only the VMM can answer.
        (0x0800_0000, 0x0801_0000, "device", ("gicd",), "io-exit", "io-exit", ERR),
        (0x0801_0000, 0x0900_0000, "unbacked", (), "io-exit", "io-exit", ERR),
        (0x0900_0000, 0x0900_1000, "device", ("uart",), "io-exit", "io-exit", ERR),
        (0x0900_1000, 0x4000_0000, "unbacked", (), "io-exit", "io-exit", ERR),
        (0x4000_0000, 0x8000_0000, "ram", ("ram",), "memory", "memory", "memory"),
        (0x8000_0000, 0x1_0000_0000, "unbacked", (), "io-exit", "io-exit", ERR),
    ]


def test_empty_layout_is_one_unbacked_region_over_the_whole_space(tmp_path: Path) -> None:
    regions = regions_of(tmp_path, "layout: 1\narch: x86_64\n")
    assert summary(regions) == [(0, 1 << 48, "unbacked", (), "io-exit", "io-exit", "vm-error")]


@pytest.mark.parametrize(
    ("first", "second", "middle_kind"),
    [("readonly: true", "readonly: false", "rom"), ("readonly: false", "readonly: true", "ram")],
)
def test_first_memslot_in_file_order_wins_where_memslots_overlap(
    tmp_path: Path, first: str, second: str, middle_kind: str
) -> None:
    regions = regions_of(
        tmp_path,
        f"""\
        layout: 1
        arch: arm64
        pa_bits: 32
        memslots:
          - name: a
            base: 0x1000
            size: 8K
            {first}
          - name: b
            base: 0x2000
            size: 8K
            {second}
        """,
    )
    kinds = {"readonly: true": "rom", "readonly: false": "ram"}
    assert [(r.start, r.end, r.kind, r.names) for r in regions[:4]] == [
        (0x0, 0x1000, "unbacked", ()),
        (0x1000, 0x2000, kinds[first], ("a",)),
        (0x2000, 0x3000, middle_kind, ("a", "b")),
        (0x3000, 0x4000, kinds[second], ("b",)),
    ]


def test_memslot_of_the_smm_address_space_does_not_back_anything(tmp_path: Path) -> None:
    regions = regions_of(
        tmp_path,
        """\
        layout: 1
        arch: x86_64
        pa_bits: 32
        memslots:
          - name: smram
            as_id: 1
            base: 0x0
            size: 1M
        """,
    )
    assert summary(regions) == [(0, 1 << 32, "unbacked", (), "io-exit", "io-exit", "vm-error")]


# --- precedence and the outcome tables, one address at a time -------------------------------

CASES = [
    # (memslot at 0x1000_0000, device handler there or None)
    (None, None),
    ("ram", None),
    ("rom", None),
    (None, "user"),
    (None, "kernel"),
    (None, "ioeventfd"),
    (None, "coalesced"),
    ("ram", "kernel"),
    ("ram", "user"),
    ("rom", "kernel"),
    ("rom", "ioeventfd"),
    ("rom", "coalesced"),
    ("rom", "user"),
]


def layout_with(backing: str | None, handler: str | None, arch: str) -> str:
    text = f"layout: 1\narch: {arch}\npa_bits: 32\n"
    if backing:
        text += (
            "memslots:\n  - name: slot\n    base: 0x1000_0000\n    size: 64K\n"
            f"    readonly: {'true' if backing == 'rom' else 'false'}\n"
        )
    if handler:
        text += (
            "devices:\n  - name: dev\n    type: mmio\n    base: 0x1000_0000\n    size: 64K\n"
            f"    handler: {handler}\n"
        )
    return text


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
@pytest.mark.parametrize(("backing", "handler"), CASES)
def test_outcomes_follow_the_kernel_table(
    tmp_path: Path, arch: str, backing: str | None, handler: str | None
) -> None:
    regions = regions_of(tmp_path, layout_with(backing, handler, arch))
    got = tuple(
        explain_address(regions, arch, 0x1000_8000, access).outcome
        for access in ("read", "write", "fetch")
    )
    assert got == expected_outcomes(arch, backing, handler)
    kind = backing or ("device" if handler else "unbacked")
    assert explain_address(regions, arch, 0x1000_8000, "read").kind == kind


def test_write_to_readonly_slot_exits_on_arm64(tmp_path: Path) -> None:
    regions = regions_of(tmp_path, layout_with("rom", None, "arm64"))
    assert explain_address(regions, "arm64", 0x1000_0000, "write").outcome == "io-exit"


def test_unbacked_fetch_is_a_guest_fault_on_arm64_and_a_vm_error_on_x86(tmp_path: Path) -> None:
    for arch, outcome in (("arm64", "guest-fault"), ("x86_64", "vm-error")):
        regions = regions_of(tmp_path, layout_with(None, None, arch))
        assert explain_address(regions, arch, 0x2000_0000, "fetch").outcome == outcome


def test_ioeventfd_takes_writes_in_the_kernel_and_reads_exit(tmp_path: Path) -> None:
    regions = regions_of(tmp_path, layout_with(None, "ioeventfd", "arm64"))
    assert explain_address(regions, "arm64", 0x1000_0000, "write").outcome == "io-kernel"
    assert explain_address(regions, "arm64", 0x1000_0000, "read").outcome == "io-exit"


def test_coalesced_write_is_buffered(tmp_path: Path) -> None:
    regions = regions_of(tmp_path, layout_with(None, "coalesced", "x86_64"))
    assert explain_address(regions, "x86_64", 0x1000_0000, "write").outcome == "io-coalesced"


def test_kernel_device_wins_over_a_user_device_it_overlaps(tmp_path: Path) -> None:
    regions = regions_of(
        tmp_path,
        """\
        layout: 1
        arch: arm64
        pa_bits: 32
        devices:
          - name: user-window
            type: mmio
            base: 0x0800_0000
            size: 1M
          - name: gicd
            type: vgic-v3-dist
            base: 0x0808_0000
        """,
    )
    assert summary(regions)[1:4] == [
        (0x0800_0000, 0x0808_0000, "device", ("user-window",), "io-exit", "io-exit", "guest-fault"),
        (
            0x0808_0000,
            0x0809_0000,
            "device",
            ("user-window", "gicd"),
            "io-kernel",
            "io-kernel",
            "guest-fault",
        ),
        (0x0809_0000, 0x0810_0000, "device", ("user-window",), "io-exit", "io-exit", "guest-fault"),
    ]


def test_shadowed_device_is_named_beside_its_memslot(tmp_path: Path) -> None:
    regions = regions_of(
        tmp_path,
        """\
        layout: 1
        arch: arm64
        pa_bits: 32
        memslots:
          - name: ram
            base: 0x0
            size: 1M
        devices:
          - name: uart
            type: mmio
            base: 0x1000
            size: 4K
        """,
    )
    assert summary(regions)[:3] == [
        (0x0, 0x1000, "ram", ("ram",), "memory", "memory", "memory"),
        (0x1000, 0x2000, "ram", ("ram", "uart"), "memory", "memory", "memory"),
        (0x2000, 0x10_0000, "ram", ("ram",), "memory", "memory", "memory"),
    ]


def test_ranges_beyond_pa_bits_are_cut_at_the_end_of_the_space(tmp_path: Path) -> None:
    regions = regions_of(
        tmp_path,
        """\
        layout: 1
        arch: arm64
        pa_bits: 32
        memslots:
          - name: ram
            base: 0xffff_0000
            size: 1M
          - name: far
            base: 0x2_0000_0000
            size: 1M
        """,
    )
    assert summary(regions)[-1] == (
        0xFFFF_0000,
        1 << 32,
        "ram",
        ("ram",),
        "memory",
        "memory",
        "memory",
    )
    assert explain_address(regions, "arm64", 1 << 32, "read").kind == "beyond"


# --- merging -----------------------------------------------------------------------------------

LAYOUT_STUB = parse_layout({"layout": 1, "arch": "arm64"})


def resolved(
    pa_bits: int,
    memslots: Sequence[MemslotEntry],
    devices: Sequence[DeviceEntry] = (),
    reserved: Sequence[ReservedEntry] = (),
) -> ResolvedLayout:
    return ResolvedLayout(
        source=LAYOUT_STUB,
        arch="arm64",
        pa_bits=pa_bits,
        page_size=4096,
        guest_page_size=4096,
        memslots=tuple(memslots),
        devices=tuple(devices),
        reserved=tuple(reserved),
    )


def memslot(
    name: str, start: int, end: int, readonly: bool = False, as_id: int = 0
) -> MemslotEntry:
    return MemslotEntry(name, ("memslots", 0), Range(start, end), 0, as_id, readonly, True)


def device(name: str, start: int, end: int, type_name: str, handler: str) -> DeviceEntry:
    return DeviceEntry(
        name, ("devices", 0), Range(start, end), CATALOG[type_name], Handler(handler), False
    )


def test_adjacent_ranges_that_claim_the_same_names_merge_into_one_region() -> None:
    # Two back-to-back memslots under one name (validation keeps names unique in a file, but
    # partition() takes any resolved layout): nothing differs at the boundary, so no region
    # boundary either.
    layout = resolved(16, [memslot("ram", 0x0, 0x1000), memslot("ram", 0x1000, 0x3000)])
    assert summary(partition(layout, ARCHES["arm64"])) == [
        (0x0, 0x3000, "ram", ("ram",), "memory", "memory", "memory"),
        (0x3000, 0x1_0000, "unbacked", (), "io-exit", "io-exit", "guest-fault"),
    ]


def test_adjacent_ranges_with_different_names_stay_apart() -> None:
    layout = resolved(16, [memslot("a", 0x0, 0x1000), memslot("b", 0x1000, 0x2000)])
    assert [(r.start, r.end, r.names) for r in partition(layout, ARCHES["arm64"])] == [
        (0x0, 0x1000, ("a",)),
        (0x1000, 0x2000, ("b",)),
        (0x2000, 0x1_0000, ()),
    ]


# --- property: the sweep equals a page-by-page evaluation ------------------------------------

PA_BITS = 20
PAGE = 0x1000
PAGES = (1 << PA_BITS) // PAGE
# (catalog type, handler): generic devices of every handler, plus kernel devices that exist on
# one architecture only (a vGIC evaluated as x86 is not in the kernel).
DEVICE_KINDS = [
    ("mmio", "user"),
    ("mmio", "kernel"),
    ("mmio", "ioeventfd"),
    ("mmio", "coalesced"),
    ("vgic-v3-dist", "kernel"),
    ("lapic", "kernel"),
]

# Start and length in pages; ranges may run past the end of the space or be empty. Starts and
# lengths on a 16-page grid make ranges meet end to start often.
page_range = st.tuples(
    st.one_of(st.integers(0, PAGES // 16).map(lambda k: k * 16), st.integers(0, PAGES + 4)),
    st.one_of(st.sampled_from((16, 32)), st.integers(0, 48)),
)


@st.composite
def random_layouts(draw: st.DrawFn) -> ResolvedLayout:
    # Names say what an entry is ("rom", "mmio:ioeventfd"), so entries of one kind share a name:
    # ranges of equal objects that meet end to start must then merge into one region. (Names
    # within a section are never reused for different kinds of entry, as in a real layout.)
    memslots = []
    for i, (start, length) in enumerate(draw(st.lists(page_range, max_size=6))):
        readonly = draw(st.booleans())
        memslots.append(
            MemslotEntry(
                "rom" if readonly else "ram",
                ("memslots", i),
                Range(start * PAGE, (start + length) * PAGE),
                i,
                draw(st.sampled_from((0, 0, 0, 1))),
                readonly,
                True,
            )
        )
    devices = []
    for i, (start, length) in enumerate(draw(st.lists(page_range, max_size=6))):
        type_name, handler = draw(st.sampled_from(DEVICE_KINDS))
        devices.append(
            DeviceEntry(
                f"{type_name}:{handler}",
                ("devices", i),
                Range(start * PAGE, (start + length) * PAGE),
                CATALOG[type_name],
                Handler(handler),
                False,
            )
        )
    reserved = [
        ReservedEntry("hole", ("reserved", i), Range(start * PAGE, (start + length) * PAGE))
        for i, (start, length) in enumerate(draw(st.lists(page_range, max_size=3)))
    ]
    return resolved(PA_BITS, memslots, devices, reserved)


def page_by_page(
    layout: ResolvedLayout, arch: str
) -> list[tuple[str, tuple[str, ...], int, tuple[str, ...]]]:
    """(kind, names, more names, outcomes) of every page, straight from the precedence rules;
    the names are cut at the documented MAX_REGION_NAMES and the rest counted."""
    pages = []
    for page in range(PAGES):
        address = page * PAGE
        slots = [m for m in layout.memslots if m.as_id == 0 and m.range.contains(address)]
        devs = [d for d in layout.devices if d.range.contains(address)]
        holes = [r for r in layout.reserved if r.range.contains(address)]
        backing = None
        if slots:
            backing = "rom" if slots[0].readonly else "ram"
        handlers = []
        for d in devs:
            own = d.handler.value
            handlers.append("user" if own == "kernel" and arch not in d.type.arches else own)
        handler = max(handlers, key=HANDLER_RANK.__getitem__) if handlers else None
        kind = backing or ("device" if handler else "unbacked")
        names = (*(m.name for m in slots), *(d.name for d in devs), *(r.name for r in holes))
        shown, more = names[:MAX_REGION_NAMES], max(0, len(names) - MAX_REGION_NAMES)
        pages.append((kind, shown, more, expected_outcomes(arch, backing, handler)))
    return pages


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=random_layouts(), arch=st.sampled_from(["arm64", "x86_64"]))
def test_partition_equals_a_page_by_page_evaluation(layout: ResolvedLayout, arch: str) -> None:
    regions = partition(layout, ARCHES[arch])

    # Sorted, contiguous, covering [0, 2**pa_bits) exactly, adjacent regions different.
    assert regions[0].start == 0
    assert regions[-1].end == 1 << PA_BITS
    for left, right in itertools.pairwise(regions):
        assert left.end == right.start
        assert (left.kind, left.names, left.more_names, left.read, left.write, left.fetch) != (
            right.kind,
            right.names,
            right.more_names,
            right.read,
            right.write,
            right.fetch,
        )

    expected = page_by_page(layout, arch)
    for region in regions:
        assert region.start < region.end
        assert region.start % PAGE == 0 and region.end % PAGE == 0
        outcomes = (region.read.value, region.write.value, region.fetch.value)
        for page in range(region.start // PAGE, region.end // PAGE):
            got = (region.kind, region.names, region.more_names, outcomes)
            assert expected[page] == got, hex(page * PAGE)


def test_a_page_claimed_by_more_objects_than_a_region_names_matches_the_reference() -> None:
    # Six memslots, six devices and three reserved ranges over one page: the region names the
    # first MAX_REGION_NAMES in the documented order and counts the rest, as the reference does.
    whole = Range(0, PAGE)
    memslots = [MemslotEntry(f"m{i}", ("memslots", i), whole, i, 0, False, True) for i in range(6)]
    devices = [
        DeviceEntry(f"d{i}", ("devices", i), whole, CATALOG["mmio"], Handler("user"), False)
        for i in range(6)
    ]
    reserved = [ReservedEntry(f"r{i}", ("reserved", i), whole) for i in range(3)]
    layout = resolved(PA_BITS, memslots, devices, reserved)
    first = partition(layout, ARCHES["arm64"])[0]
    assert first.names == ("m0", "m1", "m2", "m3", "m4", "m5", "d0", "d1", "d2", "d3")
    assert first.more_names == 5
    outcomes = (first.read.value, first.write.value, first.fetch.value)
    assert page_by_page(layout, "arm64")[0] == (first.kind, first.names, 5, outcomes)
