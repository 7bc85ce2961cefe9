"""Which set-up step `verify` predicts a finding refuses, and with which errno, for every rule
that names an errno: the step is found by reading the finding's message (the ioctl it says
fails, else the finding's first object), so each such rule keeps a case here, and a rule that
names an errno without one fails `test_every_rule_naming_an_errno_has_a_step_case`."""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from gpa_plan.check.findings import ERROR, WARNING
from gpa_plan.check.rules import RULES
from gpa_plan.host_profile import host_profile_of
from gpa_plan.verify.driver import plan_layout

ARM64 = "layout: 1\narch: arm64\npa_bits: 40\npage_size: 4K\n"
X86 = "layout: 1\narch: x86_64\npa_bits: 40\npage_size: 4K\n"
ARM_RAM = "memslots:\n  - {name: ram, base: 0x4000_0000, size: 1G}\n"
X86_RAM = "memslots:\n  - {name: ram, base: 0, size: 1G}\n"
GIC = (
    "  - {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}\n"
    "  - {name: gicr, type: vgic-v3-redist, base: 0x080a_0000}\n"
)


class Case(NamedTuple):
    rule: str
    layout: str
    # every step whose prediction is not "ok", with what it is
    refused: dict[str, tuple[str, ...]]
    host: dict[str, Any] | None = None  # a host profile's facts


def _host(arch: str, **facts: Any) -> dict[str, Any]:
    return {"format": 1, "arch": arch, "kernel": {"release": "test"}, "facts": facts}


def _coalesced(n: int) -> str:
    return "".join(
        f"  - {{name: z{i}, type: mmio, base: {0x1_0000_0000 + i * 0x1000:#x}, size: 4K, "
        "handler: coalesced}\n"
        for i in range(n)
    )


def _memslots(n: int) -> str:
    return "".join(f"  - {{name: m{i}, base: {i * 0x1000:#x}, size: 4K}}\n" for i in range(n))


CASES = [
    Case("memslot-overlap", X86 + X86_RAM + "  - {name: fb, base: 0x1000_0000, size: 16M}\n",
         {"memslot:fb": ("EEXIST",)}),
    Case("memslot-misaligned", X86 + X86_RAM + "  - {name: odd, base: 0x8000_0800, size: 4K}\n",
         {"memslot:odd": ("EINVAL",)}),
    Case("memslot-out-of-range", X86 + X86_RAM + "  - {name: empty, base: 0x8000_0000, size: 0}\n",
         {"memslot:empty": ("EINVAL",)}),
    Case("memslot-out-of-range",
         ARM64 + ARM_RAM + "  - {name: high, base: 0xff_ffff_0000, size: 128K}\n",
         {"memslot:high": ("EFAULT",)}),
    Case("slot-id-conflict",
         X86 + X86_RAM + "  - {name: far, base: 0x8000_0000, size: 4K, slot: 40000}\n",
         {"memslot:far": ("EINVAL",)}),
    Case("slot-id-conflict",
         X86 + X86_RAM + "  - {name: smram, base: 0xa0000, size: 64K, as_id: 1}\n",
         {"memslot:smram": ("EINVAL",)}, _host("x86_64", address_spaces=1)),
    Case("too-many-memslots", X86.replace("40", "48", 1) + "memslots:\n" + _memslots(32765),
         {"memslot:m32764": ("EINVAL",)}),
    # KVM makes the APIC-access page at KVM_CREATE_VCPU (vmx_vcpu_create() ->
    # kvm_alloc_apic_access_page()): after the memslot, so the vCPU is refused.
    Case("private-slot-conflict",
         X86 + "memslots:\n  - {name: low, base: 0, size: 4G}\ndevices:\n"
         "  - {name: lapic, type: lapic}\n  - {name: ioapic, type: ioapic}\n",
         {"vcpus": ("EEXIST",)},
         _host("x86_64", apic_access_page=True, real_mode_tss=False, ept_identity_map=False)),
    # KVM_SET_TSS_ADDR comes first (kvm_private): the memslot over it is the one refused, on
    # the hosts that keep the TSS; the EPT identity map is made with the vCPU, after it.
    Case("private-slot-conflict",
         X86.replace("memslots", "") + "kvm_private: {tss: 0xfffb_d000}\n" + X86_RAM
         + "  - {name: top, base: 0xfff0_0000, size: 1M}\n",
         {"memslot:top": ("ok", "EEXIST"), "vcpus": ("ok", "EEXIST")}),
    Case("private-slot-conflict",
         X86 + "kvm_private: {tss: 0xfffb_d000}\n" + X86_RAM
         + "  - {name: top, base: 0xfff0_0000, size: 1M}\n",
         {"memslot:top": ("EEXIST",)},
         _host("x86_64", real_mode_tss=True, ept_identity_map=False, apic_access_page=False)),
    # A finding about `kvm_private`, no object: the step making the call it names.
    Case("private-slot-conflict",
         X86 + "kvm_private: {tss: 0xfffb_d800}\n" + X86_RAM, {"tss": ("EINVAL",)},
         _host("x86_64", real_mode_tss=True, ept_identity_map=False, apic_access_page=False)),
    Case("private-slot-conflict",
         X86 + "kvm_private: {identity_map: 0xfffb_c800}\n" + X86_RAM,
         {"vcpus": ("ok", "EINVAL")}),
    # The TSS (KVM_SET_TSS_ADDR, a step of its own) and the EPT identity map over it (made
    # with the first vCPU): the vCPU comes second and is refused, on the hosts keeping both.
    Case("private-slot-conflict",
         X86 + "kvm_private: {tss: 0xfffb_d000, identity_map: 0xfffb_e000}\n" + X86_RAM,
         {"vcpus": ("ok", "EEXIST")}),
    Case("device-misaligned",
         ARM64 + ARM_RAM + "devices:\n" + GIC.replace("0x0800_0000", "0x0800_8000"),
         {"vgic_addr:gicd": ("EINVAL",)}),
    Case("device-out-of-range",
         ARM64 + ARM_RAM + "devices:\n" + GIC.replace("0x0800_0000", "0x100_0000_0000"),
         {"vgic_addr:gicd": ("E2BIG",)}),
    Case("device-overlap",
         X86 + X86_RAM + "devices:\n"
         "  - {name: bell, type: mmio, base: 0xd000_0000, size: 4, handler: ioeventfd}\n"
         "  - {name: bell2, type: mmio, base: 0xd000_0000, size: 4, handler: ioeventfd}\n",
         {"ioeventfd:bell2": ("EEXIST",)}),
    # Set after the distributor, with the vCPUs made: the redistributor's address is refused.
    Case("device-overlap",
         ARM64 + ARM_RAM + "devices:\n" + GIC.replace("0x080a_0000", "0x0800_0000"),
         {"vgic_addr:gicr": ("EINVAL",)}),
    Case("iobus-full", ARM64 + ARM_RAM + "devices:\n" + _coalesced(1001),
         {"coalesced:z1000": ("ENOSPC",)}),
    # The second address of a frame is the one refused, whichever the message names first.
    Case("vgic-conflict",
         ARM64 + ARM_RAM + "devices:\n" + GIC
         + "  - {name: gicd2, type: vgic-v3-dist, base: 0x0900_0000}\n",
         {"vgic_addr:gicd2": ("EEXIST",)}),
    Case("vgic-redist",
         ARM64 + ARM_RAM + "devices:\n  - {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}\n"
         "  - {name: gicr, type: vgic-v3-redist, base: 0x080a_0000, redist: legacy}\n"
         "  - {name: gicr2, type: vgic-v3-redist, base: 0x0a00_0000, redist: legacy}\n",
         {"vgic_addr:gicr2": ("EEXIST",)}),
    # KVM_RUN fails, not a set-up step: every step succeeds, and the probes say vm-error.
    Case("vgic-incomplete",
         ARM64 + ARM_RAM + "devices:\n  - {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}\n",
         {}),
    Case("ioeventfd-invalid",
         X86 + X86_RAM + "devices:\n"
         "  - {name: bell, type: mmio, base: 0xd000_0000, size: 4, handler: ioeventfd, "
         "length: 3}\n",
         {"ioeventfd:bell": ("EINVAL",)}),
    # No vGIC device: the steps made on it have no file descriptor (EBADF).
    Case("host-limits", ARM64 + ARM_RAM + "devices:\n" + GIC,
         {"vgic": ("ENODEV",), "vgic_addr:gicd": ("EBADF",), "vgic_addr:gicr": ("EBADF",),
          "vgic_init": ("EBADF",)},
         _host("arm64", vgic_v3=False)),
    # KVM_CREATE_VM fails: no set-up step is reached (the probe reports the VM's errno).
    Case("host-limits", ARM64 + ARM_RAM, {}, _host("arm64", ipa_limit=36)),
]


def _names_errno(text: str) -> bool:
    known = set(errno.errorcode.values())
    return any(w in known for w in re.findall(r"\bE[A-Z0-9]{2,}\b", text))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule}-{k}" for k, c in enumerate(CASES)])
def test_verify_predicts_the_step_each_rule_refuses(case: Case, tmp_path: Path) -> None:
    layout = tmp_path / "layout.yaml"
    layout.write_text(case.layout)
    host = host_profile_of(case.host, "host.json") if case.host else None
    vp = plan_layout(str(layout), None, host)
    from gpa_plan.check.run import check_file

    (result,) = check_file(str(layout), host=host)
    mine = [f for f in result.findings if f.rule == case.rule and f.severity in (ERROR, WARNING)]
    assert any(_names_errno(f.message) for f in mine), [f.message for f in result.findings]
    refused = {s.id: s.expected for s in vp.steps if s.expected != ("ok",)}
    assert refused == case.refused
    for step in vp.steps:
        if step.id in case.refused:
            assert case.rule in step.why


def test_every_rule_naming_an_errno_has_a_step_case() -> None:
    naming = {
        rule.slug for rule in RULES.values() if _names_errno(f"{rule.summary} {rule.description}")
    }
    assert naming - {c.rule for c in CASES} == set()


def test_without_its_vgic_the_frames_are_predicted_to_exit_to_the_vmm(tmp_path: Path) -> None:
    layout = tmp_path / "layout.yaml"
    layout.write_text(ARM64 + ARM_RAM + "devices:\n" + GIC)
    with_gic = plan_layout(str(layout), None, None)
    without = plan_layout(
        str(layout), None, host_profile_of(_host("arm64", vgic_v3=False), "host.json")
    )
    at_gicd = {(p.id, p.outcome.value) for p in with_gic.probes if p.address == 0x0800_0000}
    assert at_gicd == {("read@0x0800_0000/1", "io-kernel"), ("write@0x0800_0000/1", "io-kernel"),
                       ("fetch@0x0800_0000/1", "guest-fault")}
    at_gicd = {(p.id, p.outcome.value) for p in without.probes if p.address == 0x0800_0000}
    assert at_gicd == {("read@0x0800_0000/1", "io-exit"), ("write@0x0800_0000/1", "io-exit"),
                       ("fetch@0x0800_0000/1", "guest-fault")}
