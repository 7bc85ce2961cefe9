"""device-overlap through the CLI: for each class of pairs in gpa_plan/arch/device_pairs.py,
the severity and the words of what KVM does (the errno that refuses it, or who answers)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import assume, given
from hypothesis import strategies as st

from gpa_plan.arch.device_pairs import PAIRS, Kind, Party, _bus_order
from gpa_plan.cli import cli
from gpa_plan.ranges import Range

DOCS = Path(__file__).parent.parent / "docs" / "device-overlaps.md"

# (entry, arch, devices, severity, words the message says)
CASES = [
    (
        "vgic-frame-twice",
        "arm64",
        """\
        - {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}
        - {name: gicd2, type: vgic-v3-dist, base: 0x0800_0000}
        """,
        "error",
        ("KVM_SET_DEVICE_ATTR", "EEXIST", "'gicd2'"),
    ),
    (
        "vgic-two-models",
        "arm64",
        """\
        - {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}
        - {name: gicd2, type: vgic-v2-dist, base: 0x0800_0000}
        """,
        "error",
        ("KVM_CREATE_DEVICE", "EEXIST"),
    ),
    (
        "vgic-v2-dist-cpu",
        "arm64",
        """\
        - {name: gicd, type: vgic-v2-dist, base: 0x0800_0000}
        - {name: gicc, type: vgic-v2-cpu, base: 0x0800_0000}
        """,
        "error",
        ("first KVM_RUN fails with EINVAL",),
    ),
    (
        "vgic-v3-dist-redist",
        "arm64",
        """\
        - {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}
        - {name: gicr, type: vgic-v3-redist, base: 0x0800_0000, vcpus: 2}
        """,
        "error",
        ("EINVAL", "KVM_SET_DEVICE_ATTR", "'gicr'", "first KVM_RUN"),
    ),
    (
        "vgic-v3-redist-redist",
        "arm64",
        """\
        - {name: gicr, type: vgic-v3-redist, base: 0x080a_0000, vcpus: 2}
        - {name: gicr2, type: vgic-v3-redist, base: 0x080c_0000, vcpus: 2}
        """,
        "error",
        ("REDIST_REGION", "EINVAL", "'gicr2'"),
    ),
    (
        "irqchip-twice",
        "x86_64",
        """\
        - {name: ioapic, type: ioapic}
        - {name: ioapic2, type: ioapic, base: 0xfec0_0000}
        """,
        "error",
        ("KVM_CREATE_IRQCHIP", "EEXIST"),
    ),
    (
        # Linux 7.2.13 kvm_pch_pic_create(): "pch pic should not has been created".
        "pch-pic-twice",
        "loongarch64",
        """\
        - {name: pchpic, type: loongarch-pch-pic, base: 0x1000_0000}
        - {name: pchpic2, type: loongarch-pch-pic, base: 0x1000_0100}
        """,
        "error",
        ("one PCH-PIC per VM", "KVM_CREATE_DEVICE", "EINVAL", "'pchpic2'"),
    ),
    (
        "ioeventfd-same-range",
        "x86_64",
        """\
        - {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 4}
        - {name: kick2, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 4}
        """,
        "error",
        ("KVM_IOEVENTFD", "EEXIST", "'kick2'"),
    ),
    (
        "gicv2-cpu-first",
        "arm64",
        """\
        - {name: gicc, type: vgic-v2-cpu, base: 0x0801_0000}
        - {name: uart, type: mmio, base: 0x0801_0000, size: 4K}
        """,
        "error",
        ("stage 2", "'uart' never sees"),
    ),
    (
        # Linux 7.2.13 vgic_v2_map_resources(): only the first 4 KiB are mapped at stage 2; the
        # whole 8 KiB frame is also an MMIO bus device, which answers GICC_DIR.
        "gicv2-cpu-first",
        "arm64",
        """\
        - {name: gicc, type: vgic-v2-cpu, base: 0x0801_0000}
        - {name: uart, type: mmio, base: 0x0801_1000, size: 4K}
        """,
        "error",
        ("second 4 KiB (GICC_DIR, from 0x0801_1000)", "'gicc' answers them", "'uart' never"),
    ),
    (
        "lapic-first",
        "x86_64",
        """\
        - {name: lapic, type: lapic}
        - {name: dev, type: mmio, base: 0xfee0_0000, size: 4K, handler: kernel}
        """,
        "error",
        ("LAPIC before the MMIO bus", "'lapic' answers", "'dev' never sees"),
    ),
    (
        "bus-bus",
        "arm64",
        """\
        - {name: its, type: vgic-its, base: 0x0808_0000}
        - {name: gicd, type: vgic-v3-dist, base: 0x0808_0000}
        """,
        "error",
        ("checks no overlap", "'gicd' answers", "'its' never sees"),
    ),
    (
        # Linux 7.2.13 kvm_io_bus_register_dev(): a range inside another that starts after it
        # keeps its place in registration order, so the layout cannot say which answers.
        "bus-bus",
        "arm64",
        """\
        - {name: its, type: vgic-its, base: 0x0808_0000}
        - {name: gicd, type: vgic-v3-dist, base: 0x0809_0000}
        """,
        "error",
        ("'gicd' lies inside 'its'", "the one the VMM registers first"),
    ),
    (
        "writes-bus",
        "arm64",
        """\
        - {name: gicd, type: vgic-v3-dist, base: 0x0801_0000}
        - {name: kick, type: mmio, handler: ioeventfd, base: 0x0800_0000, size: 68K}
        """,
        "warning",
        ("'kick' comes first", "takes the writes", "signals its eventfd", "reads still reach"),
    ),
    (
        "writes-bus",
        "arm64",
        """\
        - {name: gicd, type: vgic-v3-dist, base: 0x0801_0000}
        - {name: kick, type: mmio, handler: ioeventfd, base: 0x0800_0000, size: 128K}
        """,
        "error",
        ("'gicd' lies inside 'kick'", "whether 'kick' or 'gicd' takes the writes", "reach 'gicd'"),
    ),
    (
        "writes-bus",
        "arm64",
        """\
        - {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}
        - {name: ring, type: mmio, handler: coalesced, base: 0x0800_f000, size: 8K}
        """,
        "error",
        ("'gicd' comes first", "'ring' never sees"),
    ),
    (
        # Registered after 'gicd', 'ring' is the bsearch() pivot that sends an access to
        # 'gicd' past 0x0800_2000 the wrong way: kvm_io_bus_get_first_dev() finds nothing.
        "writes-bus",
        "arm64",
        """\
        - {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}
        - {name: ring, type: mmio, handler: coalesced, base: 0x0800_1000, size: 4K}
        """,
        "error",
        ("the one the VMM registers first", "hide the part of 'gicd' past its end"),
    ),
    (
        "writes-writes",
        "x86_64",
        """\
        - {name: vga, type: mmio, handler: coalesced, base: 0xa_0000, size: 128K}
        - {name: vga2, type: mmio, handler: coalesced, base: 0xb_0000, size: 128K}
        """,
        "warning",
        ("'vga' takes the writes", "same ring", "reads exit to the VMM"),
    ),
    (
        "writes-writes",
        "x86_64",
        """\
        - {name: kick4, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 4}
        - {name: kick8, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 8}
        """,
        "warning",
        ("accepts both", "matches exactly", "each keeps its own doorbell"),
    ),
    (
        "writes-writes",
        "x86_64",
        """\
        - {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 4}
        - {name: ring, type: mmio, handler: coalesced, base: 0xd000_0000, size: 4K}
        """,
        "warning",
        ("'kick' comes first", "exactly its base and length", "'ring' the other writes"),
    ),
    (
        "writes-writes",
        "x86_64",
        """\
        - {name: ring, type: mmio, handler: coalesced, base: 0xcfff_f000, size: 0x1004}
        - {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 8}
        """,
        "warning",
        ("'ring' comes first", "wholly inside it", "goes on to 'kick'"),
    ),
    (
        "writes-writes",
        "x86_64",
        """\
        - {name: ring, type: mmio, handler: coalesced, base: 0xcfff_f000, size: 0x1008}
        - {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 8}
        """,
        # Inside the zone, the doorbell goes to whichever the VMM registers first.
        "error",
        ("'kick' lies inside 'ring'", "the one the VMM registers first"),
    ),
    (
        "bus-vmm",
        "arm64",
        """\
        - {name: gicr, type: vgic-v3-redist, base: 0x080a_0000, vcpus: 2}
        - {name: uart, type: mmio, base: 0x080b_0000, size: 4K}
        """,
        "error",
        ("unknown to KVM", "'gicr' answers", "'uart' never sees"),
    ),
    (
        # The PCH-PIC is on KVM_MMIO_BUS (kvm_pch_pic_init()): it answers before any exit.
        "bus-vmm",
        "loongarch64",
        """\
        - {name: pchpic, type: loongarch-pch-pic, base: 0x1000_0000}
        - {name: uart, type: mmio, base: 0x1000_0000, size: 4K}
        """,
        "error",
        ("unknown to KVM", "'pchpic' answers", "'uart' never sees"),
    ),
    (
        # PCH_PIC_SIZE is 0x3e8: a device from 0x1000_03e8 on is past it.
        "bus-bus",
        "loongarch64",
        """\
        - {name: pchpic, type: loongarch-pch-pic, base: 0x1000_0000}
        - {name: dev, type: mmio, handler: kernel, base: 0x1000_03e0, size: 0x20}
        """,
        "error",
        ("checks no overlap", "'pchpic' answers", "'dev' never sees"),
    ),
    (
        "writes-bus",
        "loongarch64",
        """\
        - {name: pchpic, type: loongarch-pch-pic, base: 0x1000_0000}
        - {name: kick, type: mmio, handler: ioeventfd, base: 0x0fff_fffc, size: 8}
        """,
        "warning",
        ("'kick' comes first", "takes the writes", "reads still reach 'pchpic'"),
    ),
    (
        "writes-vmm",
        "x86_64",
        """\
        - {name: virtio, type: mmio, base: 0xd000_0000, size: 8K}
        - {name: notify, type: mmio, handler: ioeventfd, base: 0xd000_1000, size: 4}
        """,
        "warning",
        ("matches 'notify'", "signals the eventfd of 'notify'", "reads still exit", "'virtio'"),
    ),
    (
        "writes-vmm",
        "arm64",
        """\
        - {name: ucall, type: ucall, base: 0x1000_0000}
        - {name: ring, type: mmio, handler: coalesced, base: 0x1000_0000, size: 4K}
        """,
        "error",
        ("queued in the ring", "ucall write never exits"),
    ),
    (
        "vmm-vmm",
        "arm64",
        """\
        - {name: uart, type: mmio, base: 0x0900_0000, size: 8K}
        - {name: rtc, type: mmio, base: 0x0900_1000, size: 4K}
        """,
        "error",
        ("KVM knows neither", "KVM_EXIT_MMIO", "VMM's own dispatch"),
    ),
    (
        # Linux 7.2.13 aia_aplic_addr(): the address attribute is simply overwritten.
        "aia-address-twice",
        "riscv64",
        """\
        - {name: aplic, type: riscv-aplic, base: 0x0d00_0000}
        - {name: aplic2, type: riscv-aplic, base: 0x0d00_2000}
        """,
        "error",
        ("replaces the first without an error", "one device", "'aplic2'"),
    ),
    (
        # aia_imsic.c kvm_riscv_vcpu_aia_imsic_update(): a VS-file page mapped at the G-stage.
        "imsic-first",
        "riscv64",
        """\
        - {name: imsic, type: riscv-imsic, base: 0x2800_0000, vcpus: 2}
        - {name: uart, type: mmio, base: 0x2800_1000, size: 4K}
        """,
        "error",
        ("checks only alignment", "mapped into the G-stage", "'uart' never sees", "emul mode"),
    ),
    (
        # Two AIA devices meet on the MMIO bus like any two kernel devices: no overlap check.
        "bus-bus",
        "riscv64",
        """\
        - {name: aplic, type: riscv-aplic, base: 0x0d00_0000}
        - {name: dev, type: mmio, handler: kernel, base: 0x0d00_3000, size: 8K}
        """,
        "error",
        ("checks no overlap", "'aplic' answers", "'dev' never sees"),
    ),
]

_LINE = re.compile(r"^\S+:\d+:\d+: (error|warning)\[device-overlap\] (.*)$", re.MULTILINE)


def _overlaps(tmp_path: Path, arch: str, devices: str) -> list[tuple[str, str]]:
    path = tmp_path / "layout.yaml"
    path.write_text(
        f"layout: 1\narch: {arch}\ndevices:\n" + textwrap.indent(textwrap.dedent(devices), "  ")
    )
    result = CliRunner().invoke(cli, ["check", "-q", "--select", "device-overlap", str(path)])
    assert result.exit_code in (0, 1), result.output
    return _LINE.findall(result.stdout)


@pytest.mark.parametrize(
    ("entry", "arch", "devices", "severity", "words"), CASES, ids=[c[0] for c in CASES]
)
def test_each_pair_class_says_what_kvm_does(
    tmp_path: Path, entry: str, arch: str, devices: str, severity: str, words: tuple[str, ...]
) -> None:
    ((found_severity, message),) = _overlaps(tmp_path, arch, devices)
    assert found_severity == severity, message
    for word in words:
        assert word in message, (word, message)


def test_a_user_device_over_a_redistributor_refuses_nothing(tmp_path: Path) -> None:
    bus_vmm = next(c for c in CASES if c[0] == "bus-vmm")
    ((_, message),) = _overlaps(tmp_path, bus_vmm[1], bus_vmm[2])
    assert "EINVAL" not in message and "fails" not in message


def test_the_cases_cover_every_entry_and_the_docs_name_each() -> None:
    entries = {pair.entry for pair in PAIRS}
    assert {c[0] for c in CASES} == entries
    docs = DOCS.read_text()
    assert {e for e in entries if f"`{e}`" not in docs} == set()


def test_a_device_just_past_the_pch_pic_does_not_overlap_it(tmp_path: Path) -> None:
    devices = """\
        - {name: pchpic, type: loongarch-pch-pic, base: 0x1000_0000}
        - {name: dev, type: mmio, base: 0x1000_03e8, size: 4}
        """
    assert _overlaps(tmp_path, "loongarch64", devices) == []


@pytest.mark.parametrize(
    ("readonly", "severity", "words"),
    [
        (False, "error", ("checks no device range", "reads and writes there hit memory")),
        (True, "warning", ("reads return the memslot's memory", "only writes reach the device")),
    ],
)
def test_a_memslot_over_the_pch_pic_wins_and_kvm_refuses_neither(
    tmp_path: Path, readonly: bool, severity: str, words: tuple[str, ...]
) -> None:
    path = tmp_path / "layout.yaml"
    path.write_text(
        "layout: 1\narch: loongarch64\npage_size: 16K\n"
        f"memslots:\n  - {{name: ram, base: 0x0, size: 1G, readonly: {str(readonly).lower()}}}\n"
        "devices:\n  - {name: pchpic, type: loongarch-pch-pic, base: 0x1000_0000}\n"
    )
    result = CliRunner().invoke(cli, ["check", "-q", "--select", "device-shadowed", str(path)])
    (line,) = [x for x in result.stdout.splitlines() if "[device-shadowed]" in x]
    assert f": {severity}[device-shadowed] " in line
    for word in words:
        assert word in line, (word, line)


def test_every_entry_cites_a_kernel_function_and_the_source_read() -> None:
    for pair in PAIRS:
        assert "()" in pair.kernel and pair.read.startswith("Linux "), pair.entry


@pytest.mark.parametrize(
    ("readonly", "severity", "words"),
    [
        (False, "error", ("checks no device range", "reads and writes there hit memory")),
        (True, "warning", ("reads return the memslot's memory", "only writes reach the device")),
    ],
)
def test_a_memslot_over_a_device_wins_and_kvm_refuses_neither(
    tmp_path: Path, readonly: bool, severity: str, words: tuple[str, ...]
) -> None:
    path = tmp_path / "layout.yaml"
    path.write_text(
        "layout: 1\narch: arm64\n"
        f"memslots:\n  - {{name: ram, base: 0x0, size: 2G, readonly: {str(readonly).lower()}}}\n"
        "devices:\n  - {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}\n"
    )
    result = CliRunner().invoke(cli, ["check", "-q", "--select", "device-shadowed", str(path)])
    (line,) = [x for x in result.stdout.splitlines() if "[device-shadowed]" in x]
    assert f": {severity}[device-shadowed] " in line
    for word in words:
        assert word in line, (word, line)


# --- the MMIO bus order, against Linux 7.2.13 virt/kvm/kvm_main.c ------------------------------


def _kvm_io_bus_cmp(r1: tuple[int, int], r2: tuple[int, int]) -> int:
    """kvm_io_bus_cmp() on (addr, len)."""
    addr1, addr2 = r1[0], r2[0]
    if addr1 < addr2:
        return -1
    if r2[1]:
        addr1, addr2 = addr1 + r1[1], addr2 + r2[1]
    return 1 if addr1 > addr2 else 0


def _kernel_first(registered: list[tuple[int, int]], addr: int) -> tuple[int, int] | None:
    """The device kvm_io_bus_get_first_dev() offers a 1-byte access to first, after
    kvm_io_bus_register_dev() of each range in turn (lib bsearch() included)."""
    bus: list[tuple[int, int]] = []
    for new in registered:
        i = next((i for i, r in enumerate(bus) if _kvm_io_bus_cmp(r, new) > 0), len(bus))
        bus.insert(i, new)
    key, base, num = (addr, 1), 0, len(bus)
    while num > 0:
        pivot = base + (num >> 1)
        result = _kvm_io_bus_cmp(key, bus[pivot])
        if result == 0:
            while pivot > 0 and _kvm_io_bus_cmp(key, bus[pivot - 1]) == 0:
                pivot -= 1
            return bus[pivot]
        if result > 0:
            base, num = pivot + 1, num - 1
        num >>= 1
    return None


_SPAN = st.integers(0, 6)


@given(_SPAN, st.integers(1, 6), _SPAN, st.integers(1, 6))
def test_bus_order_is_the_kernels_or_left_to_registration(
    start_a: int, size_a: int, start_b: int, size_b: int
) -> None:
    a = Party(Kind.KERNEL_MMIO, "a", Range(start_a, start_a + size_a))
    b = Party(Kind.KERNEL_MMIO, "b", Range(start_b, start_b + size_b))
    shared = range(max(start_a, start_b), min(start_a + size_a, start_b + size_b))
    assume(len(shared) > 0)
    ra, rb = (start_a, size_a), (start_b, size_b)
    firsts = {(_kernel_first([ra, rb], x), _kernel_first([rb, ra], x)) for x in shared}
    order = _bus_order(a, b)
    if order is None:
        assert any(one != other for one, other in firsts) or ra == rb
    else:
        first = (order[0].range.start, order[0].range.size)
        assert firsts == {(first, first)}
