"""The x86_64 probe's guest on this host's /dev/kvm: what each access at each kind of address
becomes, as `gpa-plan verify` will read it."""

from __future__ import annotations

from typing import Any

import pytest
from probe_plans import MARKER, GiB, MiB, memslot, needs_kvm, observe, observed, probe, step

from gpa_plan.probe import x86_64
from gpa_plan.probe.run import run_plan

pytestmark = needs_kvm

RAM = memslot(0, 0, 16 * MiB)
ROM = memslot(1, 0x0100_0000, MiB, readonly=True)
UNBACKED = 0x3000_0000
WIDTHS = (1, 2, 4, 8)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("access", ["read", "write"])
def test_ram_data_access_reaches_memory(access: str, width: int) -> None:
    results = observe([RAM], probe(0x2000, access, width), probe(0x2FFD, access, width))
    seen = MARKER & ((1 << (8 * width)) - 1)
    assert (
        results
        == [
            (
                "memory",
                f"read the marker {seen:#x}" if access == "read" else f"memory holds {seen:#x}",
            )
        ]
        * 2
    )


def test_ram_fetch_runs_the_seeded_instruction() -> None:
    assert observe([RAM], probe(0x5000, "fetch", 1)) == [("memory", "the fetch ran the seeded out")]


def test_readonly_memslot_reads_and_fetches_memory_and_exits_on_write() -> None:
    assert observe([RAM, ROM], *(probe(0x0100_0010, a) for a in ("read", "write", "fetch"))) == [
        ("memory", f"read the marker {MARKER & 0xFFFF_FFFF:#x}"),
        ("mmio-exit", f"KVM_EXIT_MMIO write len 4 at 0x1000010 data {MARKER & 0xFFFF_FFFF:#x}"),
        ("memory", "the fetch ran the seeded out"),
    ]


@pytest.mark.parametrize("width", WIDTHS)
def test_unbacked_data_access_exits_with_its_width(width: int) -> None:
    value = MARKER & ((1 << (8 * width)) - 1)
    assert observe([RAM], probe(UNBACKED, "read", width), probe(UNBACKED, "write", width)) == [
        ("mmio-exit", f"KVM_EXIT_MMIO read len {width} at {UNBACKED:#x}"),
        ("mmio-exit", f"KVM_EXIT_MMIO write len {width} at {UNBACKED:#x} data {value:#x}"),
    ]


def test_unbacked_fetch_is_an_emulation_failure_and_the_vcpu_serves_on() -> None:
    assert observe([RAM], probe(UNBACKED, "fetch", 1), probe(0x2000, "read", 8)) == [
        ("internal-error", "suberror 1 (emulation failure)"),
        ("memory", f"read the marker {MARKER:#x}"),
    ]


@pytest.mark.parametrize(
    ("base", "pa_bits"),
    [(4 * GiB + 2 * MiB, 40), ((1 << 47) + 2 * MiB, 48)],
    ids=["above-4GiB", "above-2**47"],
)
def test_addresses_high_in_the_space_are_reached(base: int, pa_bits: int) -> None:
    results = run_plan(
        {
            "format": 1,
            "arch": "x86_64",
            "vm": {"pa_bits": pa_bits},
            "steps": [memslot(0, base)],
            "probe_area": {"base": 0x1000_0000, "size": 0x10000},
            "probes": [
                probe(base + 8, "read", 8),
                {**probe(base + 8, "write", 8), "id": "w"},
                probe(base + MiB - 1, "fetch", 1),
                probe(base + MiB, "read", 2),
                probe(base + MiB, "write", 2),
            ],
        }
    )
    if results["guest"]["maxphyaddr"] < pa_bits:
        pytest.skip(f"this host's MAXPHYADDR is {results['guest']['maxphyaddr']}")
    assert [r["observed"] for r in results["probes"]] == ["memory"] * 3 + ["mmio-exit"] * 2
    assert results["probes"][3]["detail"] == f"KVM_EXIT_MMIO read len 2 at {base + MiB:#x}"


def _beyond_maxphyaddr(pa_bits: int) -> dict[str, Any]:
    """Results of probes on both sides of 2**pa_bits, with that MAXPHYADDR asked for."""
    return run_plan(
        {
            "format": 1,
            "arch": "x86_64",
            "vm": {"pa_bits": pa_bits},
            "steps": [RAM],
            "probe_area": {"base": 0x1000_0000, "size": 0x10000},
            "probes": [
                probe((1 << pa_bits) - 4, "read"),
                probe(1 << pa_bits, "read"),
                probe(1 << pa_bits, "write"),
                probe(1 << pa_bits, "fetch", 1),
            ],
        }
    )


def _host_maxphyaddr() -> int:
    guest: dict[str, int] = _beyond_maxphyaddr(36)["guest"]
    return guest["host_maxphyaddr"]


def _assert_reserved_bit_faults(results: dict[str, Any], pa_bits: int) -> None:
    got = [(r["observed"], r["detail"]) for r in results["probes"]]
    assert got[0] == ("mmio-exit", f"KVM_EXIT_MMIO read len 4 at {(1 << pa_bits) - 4:#x}")
    # P and RSVD, plus W/R for the write.
    for (seen, detail), error_code in zip(got[1:3], (0x9, 0xB), strict=True):
        assert seen == "guest-exception"
        assert detail.startswith(f"vector 14 (#PF) error code {error_code:#x} at rip ")
        assert detail.endswith(f" cr2 {x86_64.WINDOW_VA:#x} (RSVD)")
    assert got[3][0] == "guest-exception"
    assert got[3][1].startswith("vector 14 (#PF)") and got[3][1].endswith("(RSVD)")


def test_an_address_beyond_the_hosts_maxphyaddr_takes_a_reserved_bit_page_fault() -> None:
    host = _host_maxphyaddr()
    if host >= 52:
        pytest.skip("a 52-bit host has no page-table bit beyond its MAXPHYADDR")
    results = _beyond_maxphyaddr(host)
    assert results["guest"]["maxphyaddr"] == host
    _assert_reserved_bit_faults(results, host)


def test_a_smaller_guest_maxphyaddr_faults_where_kvm_says_it_enforces_one() -> None:
    results = _beyond_maxphyaddr(36)
    guest = results["guest"]
    if guest["host_maxphyaddr"] <= 36:
        pytest.skip("the host's MAXPHYADDR is not above 36")
    assert guest["maxphyaddr"] == 36
    if guest["smaller_maxphyaddr"]:
        _assert_reserved_bit_faults(results, 36)
    else:
        # The CPU walks with the host's MAXPHYADDR: the GPA is just unbacked.
        assert [r["observed"] for r in results["probes"]] == ["mmio-exit"] * 3 + ["internal-error"]


def test_pa_bits_above_the_hosts_give_the_guest_the_hosts_maxphyaddr() -> None:
    results = run_plan(
        {
            "format": 1,
            "arch": "x86_64",
            "vm": {"pa_bits": 52},
            "steps": [RAM],
            "probe_area": {"base": 0x1000_0000, "size": 0x10000},
            "probes": [probe(0x2000, "read")],
        }
    )
    host = results["guest"]["host_maxphyaddr"]
    assert results["guest"]["maxphyaddr"] == min(52, host)


def test_an_address_beyond_52_bits_is_not_reachable_by_paging() -> None:
    assert observe([RAM], probe(1 << 52, "read")) == [
        ("other", "x86_64 paging reaches guest-physical addresses below 2**52 only")
    ]


DOORBELL = 0xE000_0000


@pytest.mark.parametrize(
    ("datamatch", "access", "expected"),
    [
        (0x1234, probe(DOORBELL, "write", 4, 0x1234), "eventfd"),
        (0x1234, probe(DOORBELL, "write", 4, 0x1235), "mmio-exit"),
        (0x1234, probe(DOORBELL, "write", 2, 0x1234), "mmio-exit"),
        (None, probe(DOORBELL, "write", 4, 0x9999), "eventfd"),
        (None, probe(DOORBELL, "write", 8, 0x1234), "mmio-exit"),
        (None, probe(DOORBELL, "read", 4), "mmio-exit"),
    ],
    ids=["match", "other-value", "other-width", "any-value", "no-match-width", "read"],
)
def test_ioeventfd_is_signalled_only_by_a_matching_write(
    datamatch: int | None, access: dict[str, object], expected: str
) -> None:
    bell = step("ioeventfd", base=DOORBELL, length=4, datamatch=datamatch)
    assert observed([RAM, bell], access) == [expected]


def test_a_write_to_a_coalesced_zone_lands_in_the_ring_and_a_read_exits() -> None:
    zone = step("coalesced", base=0xE100_0000, size=0x1000)
    assert observe([RAM, zone], probe(0xE100_0010, "write"), probe(0xE100_0010, "read")) == [
        ("coalesced", "ring entry at 0xe1000010 len 4"),
        ("mmio-exit", "KVM_EXIT_MMIO read len 4 at 0xe1000010"),
    ]


@pytest.mark.parametrize(("irqchip", "expected"), [(True, "kernel"), (False, "mmio-exit")])
def test_the_ioapic_answers_in_the_kernel_only_with_an_irqchip(
    irqchip: bool, expected: str
) -> None:
    steps = [RAM, step("irqchip")] if irqchip else [RAM]
    assert observed(steps, probe(0xFEC0_0000, "read")) == [expected]


def test_an_access_into_the_probes_own_memslot_is_not_made() -> None:
    assert observe([RAM], probe(0x1000_0000 + 0x10, "write")) == [
        ("other", "the address is in the probe's own memslot")
    ]


def test_a_probe_area_above_the_canonical_half_still_runs_the_guest() -> None:
    """Identity mapping cannot place such an area: the guest maps it at a fixed low VA."""
    area = (1 << 47) + GiB
    results = run_plan(
        {
            "format": 1,
            "arch": "x86_64",
            "vm": {"pa_bits": 48},
            "steps": [RAM],
            "probe_area": {"base": area, "size": x86_64.AREA_SIZE},
            "probes": [probe(0x2000, "read"), probe(1 << 47, "write")],
        }
    )
    if results.get("guest", {}).get("maxphyaddr", 0) < 48:
        pytest.skip("this host's MAXPHYADDR is below 48")
    assert [p["observed"] for p in results["probes"]] == ["memory", "mmio-exit"]
