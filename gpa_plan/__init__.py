"""gpa-plan: check and plan KVM guest-physical address layouts.

Library use gets the same answers as the command line::

    import gpa_plan
    results = gpa_plan.check_file("layouts/qemu-virt-arm64.yaml", ["arm64", "x86_64"])
    loaded = gpa_plan.load_layout("layouts/selftests-arm64.yaml")
    vm = gpa_plan.selftests_vm("arm64", vcpus=4)   # vm.ucall_gpa == 0x2a_0000
    verdict = gpa_plan.verify_here("layouts/qemu-q35-x86_64.yaml", None, None)  # /dev/kvm
    recording = gpa_plan.record_command(["./vmm"])  # recording.layouts[0].document
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names resolve on first use, so `import gpa_plan` stays cheap for the command line.
_EXPORTS = {
    "check_file": "gpa_plan.check.run",
    "check_loaded": "gpa_plan.check.run",
    "load_layout": "gpa_plan.check.run",
    "CheckResult": "gpa_plan.check.run",
    "Finding": "gpa_plan.check.findings",
    "Region": "gpa_plan.check.partition",
    "partition": "gpa_plan.check.partition",
    "explain_address": "gpa_plan.check.explain",
    "explain_layout": "gpa_plan.check.explain",
    "allocate": "gpa_plan.plan.allocate",
    "load_programs": "gpa_plan.elf.program",
    "RULES": "gpa_plan.check.rules",
    "LayoutError": "gpa_plan.layout.errors",
    "Layout": "gpa_plan.layout.models",
    "parse_layout": "gpa_plan.layout.models",
    "ARCHES": "gpa_plan.arch",
    "Outcome": "gpa_plan.arch.base",
    "Range": "gpa_plan.ranges",
    "AddressAllocator": "gpa_plan.plan.allocator",
    "AllocationError": "gpa_plan.plan.allocator",
    "Policy": "gpa_plan.plan.allocator",
    "plan_layout": "gpa_plan.plan.place",
    "selftests_vm": "gpa_plan.selftests",
    "selftests_layout": "gpa_plan.selftests",
    "SelftestsVM": "gpa_plan.selftests",
    "SelftestsParameterError": "gpa_plan.selftests",
    "verify_here": "gpa_plan.verify.driver",
    "verify_results": "gpa_plan.verify.driver",
    "Verdict": "gpa_plan.verify.compare",
    "record_command": "gpa_plan.record.session",
    "Recording": "gpa_plan.record.session",
}

if TYPE_CHECKING:
    from gpa_plan.arch import ARCHES as ARCHES
    from gpa_plan.arch.base import Outcome as Outcome
    from gpa_plan.check.explain import explain_address as explain_address
    from gpa_plan.check.explain import explain_layout as explain_layout
    from gpa_plan.check.findings import Finding as Finding
    from gpa_plan.check.partition import Region as Region
    from gpa_plan.check.partition import partition as partition
    from gpa_plan.check.rules import RULES as RULES
    from gpa_plan.check.run import CheckResult as CheckResult
    from gpa_plan.check.run import check_file as check_file
    from gpa_plan.check.run import check_loaded as check_loaded
    from gpa_plan.check.run import load_layout as load_layout
    from gpa_plan.elf.program import load_programs as load_programs
    from gpa_plan.layout.errors import LayoutError as LayoutError
    from gpa_plan.layout.models import Layout as Layout
    from gpa_plan.layout.models import parse_layout as parse_layout
    from gpa_plan.plan.allocate import allocate as allocate
    from gpa_plan.plan.allocator import AddressAllocator as AddressAllocator
    from gpa_plan.plan.allocator import AllocationError as AllocationError
    from gpa_plan.plan.allocator import Policy as Policy
    from gpa_plan.plan.place import plan_layout as plan_layout
    from gpa_plan.ranges import Range as Range
    from gpa_plan.record.session import Recording as Recording
    from gpa_plan.record.session import record_command as record_command
    from gpa_plan.selftests import SelftestsParameterError as SelftestsParameterError
    from gpa_plan.selftests import SelftestsVM as SelftestsVM
    from gpa_plan.selftests import selftests_layout as selftests_layout
    from gpa_plan.selftests import selftests_vm as selftests_vm
    from gpa_plan.verify.compare import Verdict as Verdict
    from gpa_plan.verify.driver import verify_here as verify_here
    from gpa_plan.verify.driver import verify_results as verify_results


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpa_plan' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
