"""The arm64 probe's host-independent parts; tests/test_arm64_vm.py runs it on arm64 kernels."""

from __future__ import annotations

import pytest

from gpa_plan.probe import arm64
from gpa_plan.probe.run import PlanError


class FakeVm:
    """Stands for run.VmState where no ioctl is reached."""

    def __init__(self) -> None:
        self.vm_fd = -1
        self.vcpu_fds: list[int] = []


def test_an_unknown_vgic_frame_stops_the_plan_naming_the_known_ones() -> None:
    step = {"id": "gicx", "op": "vgic_addr", "frame": "redistributor", "base": 0x0800_0000}
    with pytest.raises(PlanError, match=r"'gicx'.*'redistributor'.*dist, cpu, redist"):
        arm64.arch_step(FakeVm(), step)  # type: ignore[arg-type]


def test_an_address_attribute_without_its_device_is_refused_with_ebadf() -> None:
    step = {"id": "gicd", "op": "vgic_addr", "frame": "dist", "base": 0x0800_0000}
    assert arm64.arch_step(FakeVm(), step) == "EBADF"  # type: ignore[arg-type]


def test_steps_of_other_kinds_are_left_to_the_runner() -> None:
    assert arm64.arch_step(FakeVm(), {"id": "m", "op": "memslot"}) is NotImplemented  # type: ignore[arg-type]


def test_every_access_has_a_routine_and_pairs_exist_for_words_and_doublewords() -> None:
    routines = arm64._routines()
    for in_memory in (False, True):
        assert ("fetch", 0, "single", in_memory) in routines
        for access in ("read", "write"):
            for width in (1, 2, 4, 8):
                assert (access, width, "single", in_memory) in routines
                assert (access, width, "writeback", in_memory) in routines
                assert ((access, width, "pair", in_memory) in routines) == (width >= 4)


def test_a_routine_in_memory_cleans_the_cache_around_the_access_and_one_outside_does_not() -> None:
    routines = arm64._routines()
    assert arm64.DC_CIVAC_X0 in routines[("write", 8, "single", True)]
    assert arm64.DC_CIVAC_X0 not in routines[("write", 8, "single", False)]


def test_the_exception_class_is_read_from_bits_31_to_26_whatever_the_upper_half() -> None:
    # 6.1 injects the instruction abort with ESR_EL1's upper 32 bits set.
    text = arm64.describe_esr(0xFFFF_FFFF_8600_0010, 0x9000_0000, 0x200)
    assert "(EC 0x21: instruction abort)" in text
    assert "FAR_EL1 0x90000000" in text
