"""`gpa-plan import dtb` of QEMU's riscv64 `virt` device trees.

The three blobs in tests/data/import/dtb/ are real: dumped by QEMU 7.2 (Debian 12's
qemu-system-misc) with `-accel tcg -nographic` and trimmed of their padding with `dtc -I dtb -O
dtb` (the tree is unchanged):

    qemu-7.2-riscv64-virt-aia.dtb         -M virt,aia=aplic-imsic,dumpdtb=FILE -smp 2
    qemu-7.2-riscv64-virt-aia-guests.dtb  -M virt,aia=aplic-imsic,aia-guests=1,dumpdtb=FILE -smp 2
    qemu-7.2-riscv64-virt-plic.dtb        -M virt,dumpdtb=FILE

Their imports are kept beside them as golden files (.yaml); GPA_PLAN_UPDATE_GOLDEN=1
rewrites them. The AIA's supervisor-level APLIC and IMSICs become KVM's in-kernel devices
(what QEMU's KVM in-kernel irqchip uses: hw/riscv/aia.c riscv_create_aia() makes the
machine-level ones only without KVM), at KVM's sizes (arch/riscv/include/uapi/asm/kvm.h:
APLIC 0x4000, IMSIC 0x1000 per vCPU); the PLIC and CLINT stay the VMM's.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gpa_plan.check.run import check_file
from gpa_plan.cli import cli
from gpa_plan.importers import ImportFailure
from gpa_plan.importers.dtb import import_dtb

DATA = Path(__file__).resolve().parent / "data" / "import" / "dtb"
WRITER = runpy.run_path(str(DATA / "make_dtbs.py"))
fdt_blob, u64s = WRITER["fdt_blob"], WRITER["u64s"]
BLOBS = (
    "qemu-7.2-riscv64-virt-aia.dtb",
    "qemu-7.2-riscv64-virt-aia-guests.dtb",
    "qemu-7.2-riscv64-virt-plic.dtb",
)


@pytest.fixture(autouse=True)
def in_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DATA)  # the header names the blob as given: keep it relative


@pytest.mark.parametrize("blob", BLOBS)
def test_import_equals_the_golden_file(blob: str, tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    result = CliRunner().invoke(cli, ["import", "dtb", blob, "-o", str(out)])
    assert (result.exit_code, result.output) == (0, "")
    golden = DATA / blob.replace(".dtb", ".yaml")
    if os.environ.get("GPA_PLAN_UPDATE_GOLDEN"):
        golden.write_text(out.read_text())
    assert out.read_text() == golden.read_text()


@pytest.mark.parametrize("blob", BLOBS)
def test_the_import_checks_clean(blob: str) -> None:
    [result] = check_file(DATA / blob.replace(".dtb", ".yaml"))
    assert (result.valid, result.arch, result.pa_bits, result.findings) == (
        True,
        "riscv64",
        41,
        (),
    )


def devices(blob: str) -> dict[str, dict[str, Any]]:
    document, _ = import_dtb((DATA / blob).read_bytes())
    return {d["name"]: d for d in document["devices"]}


def test_aia_becomes_kvms_aplic_and_one_imsic_page_per_hart() -> None:
    found = devices("qemu-7.2-riscv64-virt-aia.dtb")
    # aplic@d000000 (S-level, msi-parent the S-level IMSIC): KVM_DEV_RISCV_APLIC_SIZE, no size.
    assert found["aplic@d000000"] == {
        "name": "aplic@d000000",
        "type": "riscv-aplic",
        "base": 0x0D00_0000,
    }
    # imsics@28000000: reg 0x2000 for two harts, 4 KiB each (no guest index bits).
    assert found["imsics@28000000"] == {
        "name": "imsics@28000000",
        "type": "riscv-imsic",
        "base": 0x2800_0000,
        "vcpus": 2,
    }
    # The machine-level APLIC (0xc000000) and IMSICs (0x24000000) are not KVM's.
    assert not any(name.startswith(("aplic@c000000", "imsics@24000000")) for name in found)


def test_a_wider_imsic_stride_gives_one_entry_per_hart() -> None:
    # aia-guests=1: riscv,guest-index-bits 1, so each hart's IMSIC spans 8 KiB.
    found = devices("qemu-7.2-riscv64-virt-aia-guests.dtb")
    imsics = [d for name, d in found.items() if name.startswith("imsics@28000000")]
    assert imsics == [
        {"name": "imsics@28000000/hart0", "type": "riscv-imsic", "base": 0x2800_0000, "vcpus": 1},
        {"name": "imsics@28000000/hart1", "type": "riscv-imsic", "base": 0x2800_2000, "vcpus": 1},
    ]


def test_plic_and_clint_are_the_vmms_with_their_tree_sizes() -> None:
    found = devices("qemu-7.2-riscv64-virt-plic.dtb")
    assert found["plic@c000000"] == {
        "name": "plic@c000000",
        "type": "mmio",
        "base": 0x0C00_0000,
        "size": 0x60_0000,
    }
    assert found["clint@2000000"]["type"] == "mmio"
    assert not any(d["type"].startswith("riscv-") for d in found.values())


def test_notes_say_what_the_aia_import_chose() -> None:
    _, notes = import_dtb((DATA / "qemu-7.2-riscv64-virt-aia.dtb").read_bytes())
    assert any("KVM's in-kernel AIA" in n and "kernel-irqchip=off" in n for n in notes)
    assert "/soc/aplic@d000000: riscv-aplic at 0x0d00_0000: the tree gives 32 KiB, KVM " \
        "handles 16 KiB; the rest of the window is not imported" in notes
    assert any(n.startswith("/soc/imsics@24000000: machine-level IMSIC") for n in notes)


# --- small trees for the rules ------------------------------------------------------------

RISCV_CPUS = {
    "#address-cells": 1,
    "#size-cells": 0,
    "cpu@0": {
        "device_type": "cpu",
        "compatible": "riscv",
        "riscv,isa": "rv64imafdch",
        "reg": 0,
        "phandle": 1,
    },
}


def riscv_tree(**nodes: Any) -> dict[str, Any]:
    return {"#address-cells": 2, "#size-cells": 2, "cpus": RISCV_CPUS, **nodes}


def test_a_riscv_cpu_makes_a_riscv64_layout() -> None:
    document, _ = import_dtb(fdt_blob(riscv_tree()))
    assert document["arch"] == "riscv64"


def test_a_direct_mode_aplic_is_the_vmms() -> None:
    # aia=aplic: no IMSIC, the APLIC delivers to the harts (interrupts-extended, IRQ_S_EXT).
    aplic = {
        "compatible": "riscv,aplic",
        "reg": u64s(0x0D00_0000, 0x8000),
        "interrupts-extended": b"\0\0\0\x01\0\0\0\x09",
    }
    document, notes = import_dtb(fdt_blob(riscv_tree(**{"aplic@d000000": aplic})))
    assert document["devices"] == [
        {"name": "aplic@d000000", "type": "mmio", "base": 0x0D00_0000, "size": 0x8000}
    ]
    assert any("direct mode" in n for n in notes)


def test_an_imsic_of_unknown_level_is_the_vmms() -> None:
    imsic = {"compatible": "riscv,imsics", "reg": u64s(0x2800_0000, 0x1000)}
    document, notes = import_dtb(fdt_blob(riscv_tree(**{"imsics@28000000": imsic})))
    assert document["devices"][0]["type"] == "mmio"
    assert any("does not tell" in n for n in notes)


def test_a_huge_imsic_region_is_bounded_by_kvms_vcpu_limit() -> None:
    # 2**40 bytes of 8 KiB harts would be 2**27 entries; KVM_MAX_VCPUS (1024) caps them.
    imsic = {
        "compatible": "riscv,imsics",
        "reg": u64s(0x1_0000_0000, 1 << 40),
        "riscv,guest-index-bits": 1,
        "interrupts-extended": b"\0\0\0\x01\0\0\0\x09",
    }
    document, notes = import_dtb(fdt_blob(riscv_tree(**{"imsics@100000000": imsic})))
    assert len(document["devices"]) == 1024
    assert any("imported for 1024 harts" in n for n in notes)


def test_a_memslot_reaching_2_to_the_41_needs_50_bits() -> None:
    # kvm_arch_prepare_memory_region() refuses a slot ending exactly at 2**41 (`>=`), and the
    # next G-stage width is 50 bits (Sv48x4).
    memory = {"device_type": "memory", "reg": u64s((1 << 41) - (1 << 30), 1 << 30)}
    document, notes = import_dtb(fdt_blob(riscv_tree(memory=memory)))
    assert document["pa_bits"] == 50
    assert notes[-1].endswith("beyond the default 41-bit G-stage GPA size: pa_bits 50")


def test_other_machines_are_still_refused() -> None:
    cpus = {"cpu@0": {"device_type": "cpu", "compatible": "ibm,power9", "reg": 0}}
    with pytest.raises(ImportFailure) as info:
        import_dtb(fdt_blob({"cpus": cpus}))
    assert info.value.message == (
        "this device tree describes a machine with CPUs compatible with 'ibm,power9': gpa-plan "
        "imports the device trees of arm64 and riscv64 guests"
    )
