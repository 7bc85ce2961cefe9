"""`gpa-plan host`: what the running kernel's KVM reports (gpa_plan/probe/host.py).

The x86_64 branch runs against this machine's /dev/kvm and is compared with what KVM answers
when asked directly; the arm64 branch, which only an arm64 host runs, is checked here through
a stand-in for /dev/kvm that answers as the kernel source says an arm64 KVM does.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from kvm_probe import kvm_usable

from gpa_plan.arch import ARCHES
from gpa_plan.cli import cli
from gpa_plan.probe import host, kvm

needs_kvm = pytest.mark.skipif(not kvm_usable(), reason="needs a usable /dev/kvm")


@pytest.fixture(scope="module")
def this_host() -> dict[str, object]:
    result = CliRunner().invoke(cli, ["host", "--format", "json"])
    assert result.exit_code == 0, result.output
    facts: dict[str, object] = json.loads(result.stdout)
    return facts


@needs_kvm
def test_host_json_has_every_key_and_a_fact_or_a_reason_for_each(
    this_host: dict[str, object],
) -> None:
    assert set(this_host) == {
        "format", "kernel", "page_size", "arch", "capabilities", "facts", "sources", "unknown",
        "parameters",
    }
    assert this_host["format"] == 1
    assert this_host["page_size"] == mmap.PAGESIZE
    assert this_host["kernel"] == {"release": os.uname().release, "machine": os.uname().machine}
    facts = this_host["facts"]
    assert isinstance(facts, dict)
    if this_host["arch"] is not None:
        assert list(facts) == [f.name for f in ARCHES[str(this_host["arch"])].host_facts]
    for name, value in facts.items():
        where = this_host["unknown"] if value is None else this_host["sources"]
        assert isinstance(where, dict) and where[name], name


@needs_kvm
def test_host_capabilities_are_what_kvm_answers_when_asked(
    this_host: dict[str, object],
) -> None:
    handle = kvm.Kvm()
    try:
        asked = {name: handle.check_extension(cap) for name, cap in kvm.CAPS.items()}
    finally:
        handle.close()
    assert this_host["capabilities"] == asked


@needs_kvm
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the x86_64 facts need an x86_64 host")
def test_x86_host_facts_agree_with_kvm_asked_directly(this_host: dict[str, object]) -> None:
    facts = this_host["facts"]
    assert isinstance(facts, dict)
    handle = kvm.Kvm()
    vm = kvm.create_vm(handle)
    try:
        spaces = handle.check_extension(kvm.CAPS["KVM_CAP_MULTI_ADDRESS_SPACE"], vm)
        smm = handle.check_extension(kvm.CAPS["KVM_CAP_X86_SMM"])
        smaller = handle.check_extension(kvm.CAPS["KVM_CAP_SMALLER_MAXPHYADDR"])
        memory = kvm.Memory(kvm.PAGE_SIZE)
        # as_id 1 exists exactly when the host has two address spaces (kvm_set_memory_region()).
        as_id_1 = kvm.set_memslot(vm, 0, 1, 0x10_0000, kvm.PAGE_SIZE, memory.addr, False)
        # A memslot ending at 2**memslot_pa_bits is accepted, one page further is not.
        top = 1 << facts["memslot_pa_bits"]
        last = kvm.set_memslot(vm, 1, 0, top - kvm.PAGE_SIZE, kvm.PAGE_SIZE, memory.addr, False)
        beyond = kvm.set_memslot(vm, 2, 0, top, kvm.PAGE_SIZE, memory.addr, False)
        memory.close()
    finally:
        os.close(vm)
        handle.close()
    assert facts["address_spaces"] == max(spaces, 1)
    assert (as_id_1 is None) == (facts["address_spaces"] >= 2)
    assert facts["smm"] == (smm != 0)
    assert facts["smaller_maxphyaddr"] == (smaller != 0)
    # Without TDP, KVM's own walker enforces the guest's MAXPHYADDR, and both vendors say so
    # (vmx_hardware_setup(), svm_hardware_setup(): allow_smaller_maxphyaddr).
    assert facts["tdp"] or facts["smaller_maxphyaddr"]
    assert (last, beyond) == (None, "EINVAL")


@needs_kvm
def test_host_text_lists_every_fact_and_capability(this_host: dict[str, object]) -> None:
    result = CliRunner().invoke(cli, ["host"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"kernel   {os.uname().release} ({os.uname().machine})"
    facts = this_host["facts"]
    assert isinstance(facts, dict) and isinstance(this_host["capabilities"], dict)
    for name, value in facts.items():
        shown = "unknown" if value is None else json.dumps(value)
        assert any(line.split()[:2] == [name, shown] for line in lines), name
    for name, value in this_host["capabilities"].items():
        assert f"{name}  " in result.stdout and any(
            line.split() == [name, str(value)] for line in lines
        )


def test_host_without_dev_kvm_exits_2_saying_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kvm, "KVM_DEVICE", str(tmp_path / "kvm"))
    result = CliRunner().invoke(cli, ["host"])
    assert result.exit_code == 2
    assert f"cannot open {tmp_path / 'kvm'}: No such file or directory" in result.stderr
    assert "modprobe kvm_intel" in result.stderr and "modprobe kvm_amd" in result.stderr
    assert "Traceback" not in result.output


def test_host_that_may_not_open_dev_kvm_is_told_to_join_group_kvm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(*_: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(kvm.os, "open", refused)
    result = CliRunner().invoke(cli, ["host", "--format", "json"])
    assert result.exit_code == 2
    assert "Permission denied" in result.stderr and "usermod -aG kvm" in result.stderr
    assert result.stdout == ""


# -- the decoding, with stand-ins ------------------------------------------------------------


class FakeKvm:
    """Answers KVM_CHECK_EXTENSION from a table, on /dev/kvm and on a VM alike."""

    fd = -1

    def __init__(self, caps: dict[str, int]) -> None:
        self.caps = {kvm.CAPS[name]: value for name, value in caps.items()}

    def check_extension(self, cap: int, fd: int | None = None) -> int:
        return self.caps.get(cap, 0)

    def close(self) -> None:
        pass


@pytest.fixture
def scratch_vms(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """kvm.create_vm stands in as a file descriptor of /dev/null; yields the types asked."""
    asked: list[int] = []

    def create_vm(_: object, vm_type: int = 0) -> int:
        asked.append(vm_type)
        return os.open(os.devnull, os.O_RDONLY)

    monkeypatch.setattr(host.kvm, "create_vm", create_vm)
    yield asked


def arm64_facts(caps: dict[str, int], devices: dict[int, str | None]) -> dict[str, object]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(host, "device_creatable", lambda _fd, device: devices[device])
        return host.host_facts(FakeKvm(caps), machine="aarch64")  # type: ignore[arg-type]


def test_arm64_facts_of_a_gicv3_host_without_gicv2(scratch_vms: list[int]) -> None:
    found = arm64_facts(
        {"KVM_CAP_ARM_VM_IPA_SIZE": 44, "KVM_CAP_ARM_NISV_TO_USER": 1},
        {host.KVM_DEV_TYPE_ARM_VGIC_V2: "ENODEV", host.KVM_DEV_TYPE_ARM_VGIC_V3: None,
         host.KVM_DEV_TYPE_ARM_VGIC_ITS: None},
    )
    assert found["arch"] == "arm64"
    assert found["facts"] == {
        "ipa_limit": 44, "ipa_above_48": False, "vgic_v2": False, "vgic_v3": True,
        "vgic_its": True, "nisv_to_user": True,
    }
    assert found["unknown"] == {}
    assert scratch_vms == [44]  # KVM_VM_TYPE_ARM_IPA_SIZE(44): a VM the host can make
    sources = found["sources"]
    assert isinstance(sources, dict)
    assert sources["vgic_v2"].endswith(": ENODEV")
    assert list(found["facts"]) == [f.name for f in ARCHES["arm64"].host_facts]


def test_arm64_facts_of_a_52_bit_host_and_an_unexpected_errno(scratch_vms: list[int]) -> None:
    found = arm64_facts(
        {"KVM_CAP_ARM_VM_IPA_SIZE": 52},
        {host.KVM_DEV_TYPE_ARM_VGIC_V2: None, host.KVM_DEV_TYPE_ARM_VGIC_V3: None,
         host.KVM_DEV_TYPE_ARM_VGIC_ITS: "EINVAL"},
    )
    facts = found["facts"]
    assert isinstance(facts, dict)
    assert (facts["ipa_limit"], facts["ipa_above_48"], facts["nisv_to_user"]) == (52, True, False)
    assert facts["vgic_its"] is None
    assert found["unknown"] == {
        "vgic_its": "KVM_CREATE_DEVICE_TEST of type 8 on a scratch VM failed with EINVAL"
    }


def test_arm64_without_a_configurable_ipa_size_has_40_bits(scratch_vms: list[int]) -> None:
    found = arm64_facts({}, dict.fromkeys((5, 7, 8)))
    facts = found["facts"]
    assert isinstance(facts, dict)
    assert (facts["ipa_limit"], facts["ipa_above_48"]) == (40, False)
    assert scratch_vms == [0]  # type 0: KVM_PHYS_SHIFT, the only size such a kernel has


def test_arm64_facts_are_null_with_the_reason_when_no_vm_can_be_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(*_: object) -> int:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(host.kvm, "create_vm", refused)
    found = arm64_facts({"KVM_CAP_ARM_VM_IPA_SIZE": 40}, {})
    reason = "the scratch VM could not be created: EINVAL"
    assert found["unknown"] == dict.fromkeys(("vgic_v2", "vgic_v3", "vgic_its", "nisv_to_user"),
                                             reason)
    facts = found["facts"]
    assert isinstance(facts, dict) and facts["ipa_limit"] == 40


def test_device_test_asks_kvm_create_device_with_the_test_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int, bytes]] = []

    def try_ioctl(fd: int, request: int, arg: bytes | bytearray | int = 0) -> str | None:
        assert isinstance(arg, bytearray)
        calls.append((fd, request, bytes(arg)))
        return "ENODEV"

    monkeypatch.setattr(host.kvm, "try_ioctl", try_ioctl)
    assert host.device_creatable(7, host.KVM_DEV_TYPE_ARM_VGIC_V2) == "ENODEV"
    # struct kvm_create_device {type, fd, flags}: KVM_DEV_TYPE_ARM_VGIC_V2, KVM_CREATE_DEVICE_TEST
    assert calls == [(7, kvm.KVM_CREATE_DEVICE, struct.pack("<IiI", 5, -1, 1))]


def test_a_machine_without_host_facts_reports_none() -> None:
    found = host.host_facts(FakeKvm({}), machine="riscv64")  # type: ignore[arg-type]
    assert (found["arch"], found["facts"], found["unknown"]) == (None, {}, {})


def leaf(eax: int, ebx: int = 0, ecx: int = 0, edx: int = 0) -> tuple[int, int, int, int]:
    return eax, ebx, ecx, edx


def x86_facts(leaves: dict[int, tuple[int, int, int, int]]) -> dict[str, object]:
    collected = host._Collected(host.X86_64_FACTS)
    host.x86_cpuid_facts(collected, leaves)
    return collected.facts


def test_x86_cpuid_gives_vendor_maxphyaddr_and_the_memslot_limit_with_tdp() -> None:
    vendor = struct.unpack("<III", b"AuthenticAMD")  # EBX, EDX, ECX
    facts = x86_facts({0: leaf(0x10, vendor[0], vendor[2], vendor[1]),
                       0x8000_0008: leaf(0x30_3030)})
    assert (facts["cpu_vendor"], facts["maxphyaddr"], facts["tdp"]) == ("AuthenticAMD", 48, True)
    assert facts["memslot_pa_bits"] == 48


def test_x86_without_tdp_takes_memslots_up_to_52_bits() -> None:
    # __do_cpuid_func(): GuestPhysAddrSize (EAX[23:16]) is 0 exactly when TDP is off.
    facts = x86_facts({0x8000_0008: leaf(0x3027)})
    assert (facts["maxphyaddr"], facts["tdp"], facts["memslot_pa_bits"]) == (39, False, 52)


def sys_module(tmp_path: Path, module: str, **parameters: str) -> None:
    directory = tmp_path / module / "parameters"
    directory.mkdir(parents=True)
    for name, value in parameters.items():
        (directory / name).write_text(value + "\n")


@pytest.mark.parametrize(
    ("module", "parameters", "expected"),
    [
        ("kvm_intel", {"unrestricted_guest": "N", "ept": "Y", "flexpriority": "Y"},
         {"real_mode_tss": True, "ept_identity_map": True, "apic_access_page": True}),
        ("kvm_intel", {"unrestricted_guest": "N", "ept": "N", "flexpriority": "N"},
         {"real_mode_tss": True, "ept_identity_map": False, "apic_access_page": False}),
        # flexpriority, not enable_apicv, decides (vmx.c cpu_need_virtualize_apic_accesses()).
        ("kvm_intel",
         {"unrestricted_guest": "Y", "ept": "Y", "flexpriority": "Y", "enable_apicv": "N"},
         {"real_mode_tss": False, "ept_identity_map": False, "apic_access_page": True}),
        ("kvm_amd", {"avic": "Y"},
         {"real_mode_tss": False, "ept_identity_map": False, "apic_access_page": True}),
        ("kvm_amd", {"avic": "N"},
         {"real_mode_tss": False, "ept_identity_map": False, "apic_access_page": False}),
    ],
)
def test_x86_private_memslots_from_the_vendor_module_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str,
    parameters: dict[str, str], expected: dict[str, bool],
) -> None:
    sys_module(tmp_path, module, **parameters)
    monkeypatch.setattr(host, "SYS_MODULE", str(tmp_path))
    collected = host._Collected(host.X86_64_FACTS)
    host.private_memslots_from_parameters(collected, host.vendor_module())
    assert {name: collected.facts[name] for name in expected} == expected


def test_x86_private_memslots_of_another_vendor_module_are_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    sys_module(tmp_path, "kvm_other")
    monkeypatch.setattr(host, "SYS_MODULE", str(tmp_path))
    collected = host._Collected(host.X86_64_FACTS)
    host.private_memslots_from_parameters(collected, host.vendor_module())
    assert set(collected.unknown) == set(host.PRIVATE_MEMSLOTS)
    assert "kvm_other, neither kvm_intel nor kvm_amd" in collected.unknown["real_mode_tss"]


def test_probe_host_facts_names_are_those_the_arch_modules_declare() -> None:
    for kind in host.HOSTS.values():
        assert kind.facts == tuple(f.name for f in ARCHES[kind.arch].host_facts)


def test_scratch_vm_reads_a_private_memslot_from_eexist(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that keeps the APIC-access page and the identity map, not the TSS (an Intel host
    with flexpriority and EPT whose unrestricted guest is off would keep all three)."""
    calls: list[int] = []
    kept_pages = {host.APIC_ACCESS_PAGE, host.IDENTITY_MAP_PAGE}

    def ioctl(fd: int, request: int, arg: int | bytes | bytearray = 0) -> int:
        calls.append(request)
        return os.open(os.devnull, os.O_RDONLY) if request == kvm.KVM_CREATE_VCPU else 0

    def set_memslot(vm: int, slot: int, as_id: int, base: int, size: int, hva: int,
                    readonly: bool) -> str | None:
        return "EEXIST" if size and base in kept_pages else None

    monkeypatch.setattr(host.kvm, "ioctl", ioctl)
    monkeypatch.setattr(host.kvm, "set_memslot", set_memslot)
    assert host.probe_private_memslots(-1) == {
        "real_mode_tss": False, "ept_identity_map": True, "apic_access_page": True
    }
    assert calls == [host.KVM_CREATE_IRQCHIP, host.KVM_SET_TSS_ADDR, kvm.KVM_CREATE_VCPU]


def test_scratch_vm_that_refuses_otherwise_falls_back_to_the_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys_module(tmp_path, "kvm_intel", unrestricted_guest="Y", ept="Y", flexpriority="Y")
    monkeypatch.setattr(host, "SYS_MODULE", str(tmp_path))
    monkeypatch.setattr(host.kvm, "create_vm", lambda *_: os.open(os.devnull, os.O_RDONLY))

    def no_irqchip(fd: int, request: int, arg: int | bytes | bytearray = 0) -> int:
        raise OSError(25, "Inappropriate ioctl for device")

    monkeypatch.setattr(host.kvm, "ioctl", no_irqchip)
    collected = host._Collected(host.X86_64_FACTS)
    host.x86_64_facts(FakeKvm({"KVM_CAP_MULTI_ADDRESS_SPACE": 2}), collected)  # type: ignore[arg-type]
    facts, sources = collected.facts, collected.sources
    assert (facts["address_spaces"], facts["vendor_module"]) == (2, "kvm_intel")
    assert (facts["real_mode_tss"], facts["apic_access_page"]) == (False, True)
    assert sources["apic_access_page"] == "kvm_intel.flexpriority"
    assert collected.parameters == {
        "kvm_intel.ept": "Y", "kvm_intel.unrestricted_guest": "Y", "kvm_intel.flexpriority": "Y"
    }
    # KVM_GET_SUPPORTED_CPUID failed too: what /proc/cpuinfo says stands in, TDP stays unknown.
    assert collected.unknown["tdp"] == "KVM_GET_SUPPORTED_CPUID failed: ENOTTY"
    if "vendor_id" in Path("/proc/cpuinfo").read_text():
        assert sources["cpu_vendor"] == "/proc/cpuinfo vendor_id"


@needs_kvm
def test_the_probe_reads_the_facts_where_gpa_plan_is_not_installed(tmp_path: Path) -> None:
    """A copy of gpa_plan/probe alone, run as ``python3 -m probe.host`` with no gpa-plan on the
    path, prints the facts `gpa-plan host --format json` prints."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(Path(host.__file__).parent, tmp_path / "probe")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-E", "-s", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    done = run("-m", "probe.host")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["facts"] == host.host_facts()["facts"]
    imported = run("-c", "import sys, probe.host; print(sorted(m for m in sys.modules "
                         "if m.startswith('gpa_plan')))")
    assert imported.stdout == "[]\n", imported.stderr
