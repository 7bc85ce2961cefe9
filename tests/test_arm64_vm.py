"""The arm64 probe against real Debian arm64 kernels, booted under QEMU with emulated EL2.

Each machine (a kernel, a KVM mode, a GIC version) boots once and runs every plan of its GIC
version in that boot (a boot is the cost: seconds under TCG); each test reads the observations
of its probes. The machines boot two at a time, in the background, as soon as the first test
asks for one. Debian 12's 6.1 and 6.12 cloud kernels, in VHE and nVHE mode, with a GICv3; and
each with a GICv2, since a GICv3 host cannot make a vGICv2.

Needs qemu-system-aarch64 and the packages ``tests/arm64/fetch.py`` puts in its cache
($GPA_PLAN_ARM64_CACHE, default /var/cache/gpa-plan-arm64); skipped with the reason without
them, or when GPA_PLAN_ARM64=0 turns the boots off.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from arm64 import machine

from gpa_plan.arch import ARCHES
from gpa_plan.host_profile import host_profile_of
from gpa_plan.probe.host import VGIC_DEVICES
from gpa_plan.verify.build import VerifyPlan
from gpa_plan.verify.compare import compare
from gpa_plan.verify.driver import plan_layout

pytestmark = pytest.mark.arm64vm


# The guest-physical map of every plan (pa_bits 40).
RAM, RO, AREA, REPORT, HOLE = 0x4000_0000, 0x5000_0000, 0x6000_0000, 0x7000_0000, 0x9000_0000
DIST, REDIST, ITS = 0x0800_0000, 0x080A_0000, 0x0808_0000
V2_CPU = 0x0801_0000
REDIST_REGION_2 = 0x0900_0000
REDIST_FRAME = 0x2_0000  # one vCPU's redistributor: RD_base and SGI_base, 64 KiB each
MARKER = 0x1122_3344_5566_7788
UCALL = 0x29_1000


class Machine(NamedTuple):
    kernel: str  # Debian's series, fetch.KERNEL_METAPACKAGES
    vhe: bool
    gic: int

    @property
    def name(self) -> str:
        return f"{self.kernel}-{'vhe' if self.vhe else 'nvhe'}-gicv{self.gic}"


MACHINES = [
    Machine("6.1", True, 3),
    Machine("6.1", False, 3),
    Machine("6.12", True, 3),
    Machine("6.12", False, 3),
    Machine("6.1", True, 2),
    Machine("6.12", True, 2),
]
GICV3 = [m for m in MACHINES if m.gic == 3]
GICV2 = [m for m in MACHINES if m.gic == 2]


# --- plans -------------------------------------------------------------------------------------


def probe(
    pid: str, address: int, access: str, width: int = 4, form: str | None = None
) -> dict[str, Any]:
    p: dict[str, Any] = {"id": pid, "address": address, "access": access, "width": width}
    p["value"] = MARKER & ((1 << (8 * width)) - 1)
    if form:
        p["form"] = form
    return p


def memslot(sid: str, slot: int, base: int, size: int, readonly: bool = False) -> dict[str, Any]:
    return {"id": sid, "op": "memslot", "slot": slot, "as_id": 0, "base": base, "size": size,
            "readonly": readonly}  # fmt: skip


def vgic_addr(sid: str, frame: str, base: int, **extra: int) -> dict[str, Any]:
    return {"id": sid, "op": "vgic_addr", "frame": frame, "base": base, **extra}


def plan(
    name: str, steps: list[dict[str, Any]], probes: list[dict[str, Any]], **vm: Any
) -> dict[str, Any]:
    return {
        "format": 1,
        "arch": "arm64",
        "name": name,
        "vm": {"pa_bits": 40, "vcpus": 1, **vm},
        "steps": steps,
        "probe_area": {"base": AREA, "size": 0x1_0000},
        "report": REPORT,
        "probes": probes,
    }


def memory_probes() -> list[dict[str, Any]]:
    out = []
    for width in (1, 2, 4, 8):
        out += [probe(f"ram-read-{width}", RAM + 0x100, "read", width)]
        out += [probe(f"ram-write-{width}", RAM + 0x100, "write", width)]
    out += [
        probe("ram-fetch", RAM + 0x200, "fetch"),
        probe("ram-read-pair", RAM + 0x300, "read", 8, "pair"),
        probe("ram-write-writeback", RAM + 0x300, "write", 2, "writeback"),
        probe("ro-read", RO, "read"),
        probe("ro-write", RO + 8, "write", 8),
        probe("ro-fetch", RO + 0x10, "fetch"),
        probe("hole-read", HOLE, "read", 8),
        probe("hole-write", HOLE + 0x10, "write", 2),
        probe("hole-fetch", HOLE + 0x20, "fetch"),
        probe("top-read", (1 << 40) - 1, "read", 1),
        probe("beyond-read", 1 << 40, "read", 1),
        probe("beyond-fetch", 1 << 40, "fetch"),
    ]
    return out


def ram_steps() -> list[dict[str, Any]]:
    return [
        memslot("ram", 0, RAM, 0x10_0000),
        memslot("ro", 1, RO, 0x1_0000, readonly=True),
        memslot("overlap", 2, RAM + 0x8_0000, 0x10_0000),
        {"id": "vcpus", "op": "vcpus"},
    ]


def gicv3_plans() -> list[dict[str, Any]]:
    v3 = [
        {"id": "vgic", "op": "vgic", "version": 3, "its": False},
        vgic_addr("dist", "dist", DIST),
        vgic_addr("redist", "redist", REDIST),
        vgic_addr("redist-again", "redist", REDIST + 0x10_0000),
    ]
    no_syndrome = [
        probe("hole-read-pair", HOLE, "read", 8, "pair"),
        probe("hole-write-writeback", HOLE, "write", 1, "writeback"),
        probe("dist-read-pair", DIST, "read", 4, "pair"),
        probe("hole-read-after", HOLE + 0x40, "read", 4),
    ]
    dist_read = [probe("dist-read", DIST, "read", 4), probe("redist-read", REDIST, "read", 4)]
    return [
        plan("main", ram_steps() + v3, memory_probes() + dist_read + no_syndrome),
        plan("nisv", ram_steps() + v3, no_syndrome, nisv_to_user=True),
        plan(
            "regions",
            [
                memslot("ram", 0, RAM, 0x10_0000),
                {"id": "vcpus", "op": "vcpus"},
                {"id": "vgic", "op": "vgic", "version": 3, "its": True},
                vgic_addr("dist", "dist", DIST),
                vgic_addr("region0", "redist_region", REDIST, count=1),
                vgic_addr("region1", "redist_region", REDIST_REGION_2, count=1),
                vgic_addr("legacy", "redist", REDIST + 0x10_0000),
                vgic_addr("its", "its", ITS),
            ],
            [probe("redist-read", REDIST, "read"), probe("its-read", ITS, "read")],
            vcpus=2,  # one redistributor in each region
        ),
        plan(
            "memslot-over-dist",
            [
                memslot("ram", 0, RAM, 0x10_0000),
                memslot("over-dist", 1, DIST, 0x1_0000),
                {"id": "vcpus", "op": "vcpus"},
                {"id": "vgic", "op": "vgic", "version": 3, "its": False},
                vgic_addr("dist", "dist", DIST),
                vgic_addr("redist", "redist", REDIST),
            ],
            [probe("dist-read", DIST, "read"), probe("dist-write", DIST + 0x100, "write")],
        ),
        plan(
            "no-redist",
            [
                memslot("ram", 0, RAM, 0x10_0000),
                {"id": "vcpus", "op": "vcpus"},
                {"id": "vgic", "op": "vgic", "version": 3, "its": False},
                vgic_addr("dist", "dist", DIST),
                vgic_addr("redist-misaligned", "redist", REDIST + 0x1000),
            ],
            [probe("ram-read", RAM, "read")],
        ),
        plan(
            "region-past-vcpus",
            [
                memslot("ram", 0, RAM, 0x10_0000),
                {"id": "vcpus", "op": "vcpus"},
                {"id": "vgic", "op": "vgic", "version": 3, "its": False},
                vgic_addr("dist", "dist", DIST),
                vgic_addr("region", "redist_region", REDIST, count=2),
                {"id": "its", "op": "its", "base": ITS},
                {"id": "vgic_init", "op": "vgic_init"},
            ],
            [
                probe("redist-0", REDIST, "read"),
                probe("redist-1", REDIST + REDIST_FRAME, "read"),
                probe("its-read", ITS, "read"),
            ],
        ),
        plan(
            # layouts/broken/ucall-clobbered-by-memslot.yaml: the selftests' ucall page, first
            # GPA past slot 0, covered by the test-data memslot added after it was chosen.
            "ucall",
            [
                memslot("slot0", 0, 0, UCALL),
                memslot("test-data", 1, UCALL, 0x20_0000),
                {"id": "vcpus", "op": "vcpus"},
                {"id": "vgic", "op": "vgic", "version": 3, "its": False},
                vgic_addr("gicd", "dist", 0x0802_0000),
                vgic_addr("gicr", "redist", 0x0803_0000),
            ],
            [probe("ucall-write", UCALL, "write", 8), probe("unclobbered", HOLE, "write", 8)],
        ),
        plan("ipa-too-large", [memslot("ram", 0, RAM, 0x10_0000)], [], pa_bits=53),
        plan(
            "v2-on-v3",
            [
                memslot("ram", 0, RAM, 0x10_0000),
                {"id": "vgic", "op": "vgic", "version": 2, "its": False},
            ],
            [],
        ),
    ]


def gicv2_plans() -> list[dict[str, Any]]:
    return [
        plan(
            "v2",
            [
                memslot("ram", 0, RAM, 0x10_0000),
                {"id": "vcpus", "op": "vcpus"},
                {"id": "vgic", "op": "vgic", "version": 2, "its": False},
                vgic_addr("dist", "dist", DIST),
                vgic_addr("cpu", "cpu", V2_CPU),
            ],
            [
                probe("dist-read", DIST, "read"),
                probe("cpu-read", V2_CPU, "read"),
                probe("ram-read", RAM, "read", 8),
                probe("hole-read", HOLE, "read"),
            ],
        ),
        plan(
            "v3-on-v2",
            [
                memslot("ram", 0, RAM, 0x10_0000),
                {"id": "vgic", "op": "vgic", "version": 3, "its": False},
            ],
            [],
        ),
    ]


# --- plans run again under `gpa-plan record` --------------------------------------------------


# The machines whose boot runs the record plans too: the recording reads system calls and
# KVM's structures, the same whichever mode KVM runs in, so the nVHE boots are spared the time.
RECORD_ON = [m for m in MACHINES if m.vhe]


def record_plans(gic: int) -> list[dict[str, Any]]:
    """Plans whose VM the recorder must give back as the plan built it: a vGIC of the machine's
    version after the other version's refused KVM_CREATE_DEVICE, its frames (and one refused),
    memslots (a read-only one; an overlapping one refused), an IPA size other than the
    default. One probe each, so that the probe's guest (its own memslot, vCPU 0) runs too."""
    ram = [
        memslot("ram", 0, RAM, 0x10_0000),
        memslot("ro", 1, RO, 0x1_0000, readonly=True),
        memslot("overlap", 2, RAM + 0x8_0000, 0x10_0000),
        {"id": "vcpus", "op": "vcpus"},
    ]
    ram_read = probe("ram-read", RAM, "read", 8)
    if gic == 2:
        return [
            plan(
                "record-v2",
                [
                    *ram,
                    {"id": "v3-refused", "op": "vgic", "version": 3, "its": False},
                    {"id": "vgic", "op": "vgic", "version": 2, "its": False},
                    vgic_addr("dist", "dist", DIST),
                    vgic_addr("cpu", "cpu", V2_CPU),
                    vgic_addr("cpu-again", "cpu", V2_CPU + 0x10_0000),
                ],
                [ram_read, probe("cpu-read", V2_CPU, "read")],
                pa_bits=36,
                vcpus=2,
            )
        ]
    return [
        plan(
            "record-v3-regions",
            [
                *ram,
                {"id": "v2-refused", "op": "vgic", "version": 2, "its": False},
                {"id": "vgic", "op": "vgic", "version": 3, "its": True},
                vgic_addr("dist", "dist", DIST),
                vgic_addr("region0", "redist_region", REDIST, count=1),
                vgic_addr("region1", "redist_region", REDIST_REGION_2, count=1),
                vgic_addr("legacy", "redist", REDIST + 0x10_0000),
                vgic_addr("its", "its", ITS),
            ],
            [ram_read, probe("redist-read", REDIST, "read")],
            pa_bits=44,
            vcpus=2,
        ),
        plan(
            "record-v3-legacy",
            [
                *ram,
                {"id": "vgic", "op": "vgic", "version": 3, "its": False},
                vgic_addr("dist", "dist", DIST),
                vgic_addr("redist", "redist", REDIST),
                vgic_addr("redist-again", "redist", REDIST + 0x10_0000),
            ],
            [ram_read, probe("dist-read", DIST, "read")],
            pa_bits=36,
            vcpus=3,
        ),
    ]


def record_programs() -> list[dict[str, Any]]:
    """Entries for tests/arm64/programs/legacy_vgic.py: the legacy calls of a vGICv2
    (KVM_CREATE_IRQCHIP, KVM_ARM_SET_DEVICE_ADDR), made on every machine: a GICv2 host takes
    them, a GICv3 one refuses them, and the recording must say which either way."""
    return [
        {
            "name": "record-legacy-v2",
            "program": "legacy_vgic.py",
            "pa_bits": 38,
            "vcpus": 2,
            "memslots": [
                {"id": "ram", "slot": 0, "base": RAM, "size": 0x10_0000},
                {"id": "overlap", "slot": 1, "base": RAM + 0x8_0000, "size": 0x10_0000},
            ],
            "frames": [
                {"id": "dist", "frame": "dist", "base": DIST},
                {"id": "cpu", "frame": "cpu", "base": V2_CPU},
                {"id": "dist-again", "frame": "dist", "base": DIST + 0x10_0000},
            ],
        }
    ]


# --- verify's plans: every shipped arm64 layout, and every row of the arm64 table ----------------

ROOT = Path(__file__).parent.parent
# The layouts verify runs on each machine of their GIC version. memslot-misaligned assumes
# 64 KiB host pages, and Debian's arm64 kernels have 4 KiB ones: verify refuses that host.
VERIFIED = {
    3: sorted(
        str(p.relative_to(ROOT))
        for p in [*ROOT.glob("layouts/*.yaml"), *ROOT.glob("layouts/broken/*.yaml"),
                  *ROOT.glob("tests/data/verify/arm64-*.yaml")]
        if "arch: arm64" in p.read_text() and "vgic-v2" not in p.read_text()
        and p.name != "memslot-misaligned.yaml"
    ),
    2: ["layouts/qemu-virt-arm64-gicv2.yaml",
        "tests/data/verify/gicv3-layout-on-a-gicv2-host.yaml"],
}
# Host facts a layout is predicted for (as `verify --host` or the probe's own facts give them).
VERIFIED_HOSTS = {"tests/data/verify/gicv3-layout-on-a-gicv2-host.yaml": {"vgic_v3": False}}
_VERIFY_PLANS: dict[str, VerifyPlan] = {}


def verify_plan(layout: str) -> VerifyPlan:
    if layout not in _VERIFY_PLANS:
        facts = VERIFIED_HOSTS.get(layout)
        host = None if facts is None else host_profile_of(
            {"format": 1, "arch": "arm64", "kernel": {"release": "any"}, "facts": facts}
        )
        _VERIFY_PLANS[layout] = plan_layout(str(ROOT / layout), None, host)
    return _VERIFY_PLANS[layout]


def verify_plans(gic: int) -> list[dict[str, Any]]:
    return [{**verify_plan(layout).plan, "name": f"verify:{layout}"} for layout in VERIFIED[gic]]


# --- the boots ---------------------------------------------------------------------------------


class Booted(NamedTuple):
    boot: machine.Boot
    results: dict[str, dict[str, Any]]  # plan name -> its results
    recordings: dict[str, dict[str, Any]]  # record plan name -> what record made of its run


class Boots:
    """The machines' boots, started together (two at a time) and awaited one by one."""

    def __init__(self, wanted: list[Machine]) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1)))
        self.futures: dict[Machine, Future[Booted]] = {}
        for m in wanted:
            self.futures[m] = self.pool.submit(self._boot, m)

    def _boot(self, m: Machine) -> Booted:
        plans = (gicv3_plans() if m.gic == 3 else gicv2_plans()) + verify_plans(m.gic)
        records = record_plans(m.gic) + record_programs() if m in RECORD_ON else []
        boot = machine.run_plans(plans, kernel=m.kernel, vhe=m.vhe, gic=m.gic, records=records)
        return Booted(
            boot,
            {p["name"]: r for p, r in zip(plans, boot.results, strict=True)},
            {p["name"]: r for p, r in zip(records, boot.recordings or [], strict=True)},
        )

    def get(self, m: Machine) -> Booted:
        if m not in self.futures:
            self.futures[m] = self.pool.submit(self._boot, m)
        return self.futures[m].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


@pytest.fixture(scope="session")
def boots(request: pytest.FixtureRequest) -> Any:
    reason = machine.unavailable()
    if reason:
        pytest.skip(reason)
    wanted = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        m = callspec.params.get("m") if callspec else None
        if isinstance(m, Machine) and m not in wanted:
            wanted.append(m)
    all_boots = Boots(wanted)
    yield all_boots
    all_boots.close()


def ids(m: Machine) -> str:
    return m.name


@pytest.fixture
def booted(boots: Boots, m: Machine) -> Booted:
    return boots.get(m)


def observed(booted: Booted, plan_name: str) -> dict[str, str]:
    results = booted.results[plan_name]
    assert results["error"] is None, results["error"]
    return {p["id"]: p["observed"] for p in results["probes"]}


def detail(booted: Booted, plan_name: str, probe_id: str) -> str:
    return next(p["detail"] for p in booted.results[plan_name]["probes"] if p["id"] == probe_id)


def errnos(booted: Booted, plan_name: str) -> dict[str, str | None]:
    return {s["id"]: s["errno"] for s in booted.results[plan_name]["steps"]}


# --- GICv3 machines ------------------------------------------------------------------------------


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_kvm_runs_in_the_mode_the_command_line_asks(booted: Booted, m: Machine) -> None:
    log = " ".join(booted.boot.machine["kvm_log"])  # type: ignore[arg-type]
    # "VHE mode initialized successfully"; nVHE says "Hyp mode" (6.1) or "Hyp nVHE mode" (6.12).
    assert bool(re.search(r"\bVHE mode initialized", log)) == m.vhe
    assert booted.boot.machine["release"].startswith(m.kernel + ".")  # type: ignore[attr-defined]


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_ram_reads_writes_and_fetches_reach_memory(booted: Booted, m: Machine) -> None:
    seen = observed(booted, "main")
    ram = {k: v for k, v in seen.items() if k.startswith("ram-")}
    assert ram == {k: "memory" for k in ram}
    assert len(ram) == 11


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_readonly_memslot_is_read_and_fetched_but_a_write_exits_to_the_vmm(
    booted: Booted, m: Machine
) -> None:
    seen = observed(booted, "main")
    assert (seen["ro-read"], seen["ro-fetch"], seen["ro-write"]) == (
        "memory",
        "memory",
        "mmio-exit",
    )
    assert detail(booted, "main", "ro-write").startswith(
        f"KVM_EXIT_MMIO at {RO + 8:#x}: write of 8"
    )


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_unbacked_read_and_write_exit_as_mmio(booted: Booted, m: Machine) -> None:
    seen = observed(booted, "main")
    assert (seen["hole-read"], seen["hole-write"]) == ("mmio-exit", "mmio-exit")
    assert "write of 2 bytes" in detail(booted, "main", "hole-write")


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_unbacked_fetch_injects_an_instruction_abort(booted: Booted, m: Machine) -> None:
    assert observed(booted, "main")["hole-fetch"] == "guest-exception"
    text = detail(booted, "main", "hole-fetch")
    assert "(EC 0x21: instruction abort)" in text
    assert f"FAR_EL1 {HOLE + 0x20:#x}" in text


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_beyond_the_ipa_size_an_access_is_aborted_in_the_guest(booted: Booted, m: Machine) -> None:
    seen = observed(booted, "main")
    assert (seen["top-read"], seen["beyond-read"], seen["beyond-fetch"]) == (
        "mmio-exit",
        "guest-exception",
        "guest-exception",
    )
    assert "(EC 0x25: data abort)" in detail(booted, "main", "beyond-read")
    assert "(EC 0x21: instruction abort)" in detail(booted, "main", "beyond-fetch")


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_vgic_v3_distributor_and_redistributor_answer_in_the_kernel(
    booted: Booted, m: Machine
) -> None:
    seen = observed(booted, "main")
    assert (seen["dist-read"], seen["redist-read"]) == ("kernel", "kernel")


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_overlapping_memslot_and_second_legacy_redistributor_are_refused_with_eexist(
    booted: Booted, m: Machine
) -> None:
    steps = errnos(booted, "main")
    assert (steps["ram"], steps["overlap"]) == (None, "EEXIST")
    assert (steps["redist"], steps["redist-again"]) == (None, "EEXIST")


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_access_without_valid_syndrome_fails_kvm_run_with_enosys(
    booted: Booted, m: Machine
) -> None:
    seen = observed(booted, "main")
    for pid in ("hole-read-pair", "hole-write-writeback", "dist-read-pair"):
        assert seen[pid] == "run-error", pid
        assert detail(booted, "main", pid) == "KVM_RUN failed with ENOSYS"
    assert seen["hole-read-after"] == "mmio-exit"  # a fresh VM after the failed run


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_access_without_valid_syndrome_exits_as_nisv_once_userspace_asked(
    booted: Booted, m: Machine
) -> None:
    seen = observed(booted, "nisv")
    assert booted.results["nisv"]["guest"]["nisv_to_user"] is None
    for pid in ("hole-read-pair", "hole-write-writeback", "dist-read-pair"):
        assert seen[pid] == "nisv", pid
    assert f"KVM_EXIT_ARM_NISV at {DIST:#x}" in detail(booted, "nisv", "dist-read-pair")
    assert seen["hole-read-after"] == "mmio-exit"


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_redistributor_regions_refuse_a_legacy_address_after_them(
    booted: Booted, m: Machine
) -> None:
    steps = errnos(booted, "regions")
    assert (steps["region0"], steps["region1"], steps["legacy"]) == (None, None, "EINVAL")
    assert steps["its"] is None
    assert observed(booted, "regions") == {"redist-read": "kernel", "its-read": "kernel"}


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_memslot_over_the_distributor_is_accepted_and_shadows_it(
    booted: Booted, m: Machine
) -> None:
    steps = errnos(booted, "memslot-over-dist")
    assert steps["over-dist"] is None and steps["dist"] is None
    assert observed(booted, "memslot-over-dist") == {"dist-read": "memory", "dist-write": "memory"}


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_vgic_whose_redistributor_was_refused_fails_the_first_run_with_enxio(
    booted: Booted, m: Machine
) -> None:
    assert errnos(booted, "no-redist")["redist-misaligned"] == "EINVAL"
    assert observed(booted, "no-redist") == {"ram-read": "run-error"}
    assert detail(booted, "no-redist", "ram-read") == "KVM_RUN failed with ENXIO"


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_redistributor_region_past_the_vcpus_exits_to_the_vmm(booted: Booted, m: Machine) -> None:
    # Only the vCPUs' redistributors are registered on the MMIO bus
    # (vgic_register_redist_iodev()): one vCPU, a region of two.
    assert set(errnos(booted, "region-past-vcpus").values()) == {None}
    assert observed(booted, "region-past-vcpus") == {
        "redist-0": "kernel",
        "redist-1": "mmio-exit",
        "its-read": "kernel",
    }


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_the_ucall_write_lands_in_a_memslot_over_the_ucall_page_with_no_exit(
    booted: Booted, m: Machine
) -> None:
    assert observed(booted, "ucall") == {"ucall-write": "memory", "unclobbered": "mmio-exit"}


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_an_ipa_size_above_the_host_limit_is_refused(booted: Booted, m: Machine) -> None:
    # KVM_CREATE_VM(KVM_VM_TYPE_ARM_IPA_SIZE(53)): above 48 (6.1) and 52 (6.12) bits.
    error = booted.results["ipa-too-large"]["error"]
    assert error is not None
    assert "EINVAL" in error or "Invalid argument" in error


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_a_gicv3_host_cannot_make_a_vgic_v2(booted: Booted, m: Machine) -> None:
    assert errnos(booted, "v2-on-v3")["vgic"] == "ENODEV"


# --- GICv2 machines ------------------------------------------------------------------------------


@pytest.mark.parametrize("m", GICV2, ids=ids)
def test_vgic_v2_distributor_and_cpu_interface_answer_in_the_kernel(
    booted: Booted, m: Machine
) -> None:
    assert set(errnos(booted, "v2").values()) == {None}
    assert observed(booted, "v2") == {
        "dist-read": "kernel",
        "cpu-read": "kernel",
        "ram-read": "memory",
        "hole-read": "mmio-exit",
    }


@pytest.mark.parametrize("m", GICV2, ids=ids)
def test_a_gicv2_host_cannot_make_a_vgic_v3(booted: Booted, m: Machine) -> None:
    assert errnos(booted, "v3-on-v2")["vgic"] == "ENODEV"


@pytest.mark.parametrize(
    ("m", "layout"),
    [(m, layout) for m in MACHINES for layout in VERIFIED[m.gic]],
    ids=[f"{m.name}-{Path(layout).stem}" for m in MACHINES for layout in VERIFIED[m.gic]],
)
def test_verify_agrees_with_the_kernel_on_every_arm64_layout(
    booted: Booted, m: Machine, layout: str
) -> None:
    results = booted.results[f"verify:{layout}"]
    assert results["error"] is None, results["error"]
    verdict = compare(verify_plan(layout), results)
    wrong = [
        f"{r.id}: predicted {r.expected}, observed {r.observed}"
        + (f" ({r.detail})" if hasattr(r, "detail") and r.detail else "")
        for r in verdict.rows
        if not r.agrees
    ]
    assert wrong == []
    assert len(verdict.probes) > 0


@pytest.mark.parametrize("m", GICV3, ids=ids)
def test_verify_shows_the_seed_bug_ucall_write_landing_in_memory(
    booted: Booted, m: Machine
) -> None:
    """The selftests failure gpa-plan began with: a memslot over the ucall page takes the
    guest's 8-byte ucall write into RAM with no exit, as check's ucall-not-io predicts."""
    layout = "layouts/broken/ucall-clobbered-by-memslot.yaml"
    verdict = compare(verify_plan(layout), booted.results[f"verify:{layout}"])
    (ucall,) = [p for p in verdict.probes if p.id == "write@0x0029_1000/8"]
    assert (ucall.predicted, ucall.observed) == ("memory", "memory")
    assert "memory holds" in ucall.detail


# --- `gpa-plan record` on the machines -----------------------------------------------------------

# The probe's steps as the system calls the recorder names a refusal by (gpa_plan/probe/arm64.py
# and run.py make them).
STEP_CALLS = {
    "memslot": "KVM_SET_USER_MEMORY_REGION",
    "vgic": "KVM_CREATE_DEVICE",
    "vgic_addr": "KVM_SET_DEVICE_ATTR",
    "its": "KVM_SET_DEVICE_ATTR",
}


def recording(booted: Booted, m: Machine, plan_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The record plan and what the recorder made of the probe's run of it (which must have
    ended well), with ``layout``: the plan's VM, the second of two: the probe first reads the
    host's facts on a scratch VM (gpa_plan/probe/host.py arm64_facts())."""
    entry = booted.recordings[plan_name]
    assert entry["error"] is None, entry["error"]
    assert entry["status"] == 0, entry.get("output")
    assert entry["results"]["error"] is None, entry["results"]["error"]
    scratch, layout = entry["layouts"]
    plan_ = next(p for p in record_plans(m.gic) if p["name"] == plan_name)
    return plan_, {**entry, "scratch": scratch, "layout": layout}


def accepted_steps(plan_: dict[str, Any], entry: dict[str, Any]) -> list[dict[str, Any]]:
    errnos = {s["id"]: s["errno"] for s in entry["results"]["steps"]}
    return [step for step in plan_["steps"] if errnos[step["id"]] is None]


def expected_memslots(
    plan_: dict[str, Any], entry: dict[str, Any]
) -> list[tuple[int, int, int, bool]]:
    """(slot, base, size, read-only) of the plan's accepted memslots, and of the probe's own
    over its probe area, in the first slot id left free (VmState.add_own_memslot())."""
    slots = [
        (s["slot"], s["base"], s["size"], s["readonly"])
        for s in accepted_steps(plan_, entry)
        if s["op"] == "memslot"
    ]
    free = next(n for n in range(len(slots) + 1) if n not in {s[0] for s in slots})
    area = plan_["probe_area"]
    return sorted([*slots, (free, area["base"], area["size"], False)])


def expected_frames(plan_: dict[str, Any], entry: dict[str, Any]) -> list[tuple[str, int, Any]]:
    """(type, base, vCPUs) of the vGIC frames the plan set and KVM took."""
    version = next(s["version"] for s in accepted_steps(plan_, entry) if s["op"] == "vgic")
    vcpus = plan_["vm"]["vcpus"]
    frames = []
    for step in accepted_steps(plan_, entry):
        if step["op"] != "vgic_addr":
            continue
        frame, base = step["frame"], step["base"]
        if frame == "its":
            frames.append(("vgic-its", base, None))
        elif frame == "redist_region":
            frames.append(("vgic-v3-redist", base, step["count"]))
        elif frame == "redist":
            frames.append(("vgic-v3-redist", base, vcpus))
        else:
            frames.append((f"vgic-v{version}-{frame}", base, None))
    return sorted(frames)


def expected_refused(plan_: dict[str, Any], entry: dict[str, Any]) -> list[tuple[str, str]]:
    """(call, errno) of every step the probe saw refused, as the tracer must have seen it."""
    errnos = {s["id"]: s["errno"] for s in entry["results"]["steps"]}
    return sorted(
        (STEP_CALLS[s["op"]], errnos[s["id"]])
        for s in plan_["steps"]
        if errnos[s["id"]] is not None
    )


RECORDED = [(m, name) for m in RECORD_ON for name in [p["name"] for p in record_plans(m.gic)]]
RECORDED_IDS = [f"{m.name}-{name}" for m, name in RECORDED]


@pytest.mark.parametrize(("m", "plan_name"), RECORDED, ids=RECORDED_IDS)
def test_record_on_arm64_stops_through_the_seccomp_filter(
    booted: Booted, m: Machine, plan_name: str
) -> None:
    _, entry = recording(booted, m, plan_name)
    assert (entry["filtered"], entry["interrupted"], entry["arch"]) == (True, False, "arm64")
    assert entry["stops"] > 0
    assert booted.boot.machine["release"] in entry["comments"][0][1]
    assert entry["comments"][0][1].endswith("(aarch64)")


@pytest.mark.parametrize(("m", "plan_name"), RECORDED, ids=RECORDED_IDS)
def test_record_on_arm64_sees_the_probes_scratch_vm_at_the_hosts_ipa_limit(
    booted: Booted, m: Machine, plan_name: str
) -> None:
    """KVM_CREATE_VM's type read as the IPA size, and KVM_CREATE_DEVICE_TEST refused: the
    scratch VM holds nothing, and the vGIC version the host lacks shows as refused."""
    _, entry = recording(booted, m, plan_name)
    facts = entry["results"]["host"]["facts"]
    scratch = entry["scratch"]
    assert scratch["pa_bits"] == facts["ipa_limit"]
    assert (scratch["memslots"], scratch["devices"]) == ([], [])
    lacking = [f"type {kind}" for name, kind in VGIC_DEVICES if facts[name] is False]
    assert lacking
    refused = scratch["observed"]["refused"]
    assert {(r["call"], r["errno"], r["count"]) for r in refused} == {
        ("KVM_CREATE_DEVICE", "ENODEV", 1)
    }
    assert sorted(r["detail"] for r in refused) == sorted(lacking)


@pytest.mark.parametrize(("m", "plan_name"), RECORDED, ids=RECORDED_IDS)
def test_record_on_arm64_gives_the_ipa_size_and_memslots_the_plan_asked_for(
    booted: Booted, m: Machine, plan_name: str
) -> None:
    plan_, entry = recording(booted, m, plan_name)
    layout = entry["layout"]
    assert layout["pa_bits"] == plan_["vm"]["pa_bits"]
    memslots = sorted(
        (s["slot"], s["base"], s["size"], s.get("readonly", False)) for s in layout["memslots"]
    )
    assert memslots == expected_memslots(plan_, entry)
    assert any(readonly for *_, readonly in memslots)


@pytest.mark.parametrize(("m", "plan_name"), RECORDED, ids=RECORDED_IDS)
def test_record_on_arm64_gives_the_vgic_frames_read_behind_the_attribute_pointer(
    booted: Booted, m: Machine, plan_name: str
) -> None:
    plan_, entry = recording(booted, m, plan_name)
    layout = entry["layout"]
    frames = sorted((d["type"], d["base"], d.get("vcpus")) for d in layout["devices"])
    assert frames == expected_frames(plan_, entry)
    assert {d["type"] for d in layout["devices"]} >= {f"vgic-v{m.gic}-dist"}


@pytest.mark.parametrize(("m", "plan_name"), RECORDED, ids=RECORDED_IDS)
def test_record_on_arm64_lists_every_call_kvm_refused_with_its_errno(
    booted: Booted, m: Machine, plan_name: str
) -> None:
    plan_, entry = recording(booted, m, plan_name)
    layout = entry["layout"]
    refused = sorted(
        (r["call"], r["errno"]) for r in layout["observed"]["refused"] for _ in range(r["count"])
    )
    assert refused == expected_refused(plan_, entry)
    assert len(refused) >= 2  # the overlapping memslot and a vGIC call, at least


@pytest.mark.parametrize("m", RECORD_ON, ids=ids)
def test_record_on_arm64_reads_the_legacy_vgic_v2_calls(booted: Booted, m: Machine) -> None:
    """KVM_CREATE_IRQCHIP and KVM_ARM_SET_DEVICE_ADDR, which the probe never makes: taken on a
    GICv2 host, where the frames must appear where the program put them; refused on a GICv3
    one (no vGICv2 there), where the refusals must appear instead."""
    (spec,) = record_programs()
    entry = booted.recordings[spec["name"]]
    assert entry["error"] is None, entry["error"]
    assert (entry["status"], entry["filtered"]) == (0, True), entry.get("output")
    calls = entry["results"]["calls"]
    taken = {c["id"] for c in calls if c["errno"] is None}
    (layout,) = entry["layouts"]
    assert layout["pa_bits"] == spec["pa_bits"]
    assert sorted((s["slot"], s["base"], s["size"]) for s in layout["memslots"]) == sorted(
        (s["slot"], s["base"], s["size"]) for s in spec["memslots"] if s["id"] in taken
    )
    assert sorted((d["type"], d["base"]) for d in layout["devices"]) == sorted(
        (f"vgic-v2-{f['frame']}", f["base"]) for f in spec["frames"] if f["id"] in taken
    )
    refused = sorted(
        (r["call"], r["errno"]) for r in layout["observed"]["refused"] for _ in range(r["count"])
    )
    assert refused == sorted((c["call"], c["errno"]) for c in calls if c["errno"] is not None)
    irqchip = "irqchip" in taken
    assert irqchip == (m.gic == 2)
    assert (ARCHES["arm64"].record.irqchip_note in entry["comments"][0]) == irqchip
    if irqchip:
        assert {"dist", "cpu"} <= taken and "dist-again" not in taken
