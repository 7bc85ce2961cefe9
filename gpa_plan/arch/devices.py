"""The device catalog: the MMIO devices a layout may name by type.

Each architecture module declares its own device types (``ArchSpec.devices``), with the
kernel's sizes and alignments and the function that enforces them; the generic types below
(``ucall``, ``mmio``) exist on every architecture in the registry.
"""

from __future__ import annotations

from gpa_plan.arch import ARCHES
from gpa_plan.arch.base import DeviceType, Handler

__all__ = ["ANY_ARCH", "CATALOG", "DeviceType"]

ANY_ARCH = frozenset(ARCHES)

_GENERIC = (
    DeviceType(
        "ucall",
        "KVM selftests ucall MMIO page: one guest page, exits to the VMM",
        Handler.USER,
        size_is_guest_page=True,
        align_is_guest_page=True,
        # ucall() -> ucall_arch_do_ucall() (tools/testing/selftests/kvm/lib/arm64/ucall.c,
        # WRITE_ONCE(*ucall_exit_mmio_addr, uc)): one 8-byte store of the ucall's address.
        guest_write_width=8,
    ),
    DeviceType(
        "mmio",
        "generic MMIO device: size required, handler default user",
        None,
    ),
)


def _catalog() -> dict[str, DeviceType]:
    catalog: dict[str, DeviceType] = {}
    for spec in ARCHES.values():
        for dtype in spec.devices:
            known = catalog.get(dtype.name)
            arches = frozenset({spec.name}) | (known.arches if known else frozenset())
            catalog[dtype.name] = dtype._replace(arches=arches)
    for dtype in _GENERIC:
        catalog[dtype.name] = dtype._replace(arches=ANY_ARCH)
    return catalog


CATALOG: dict[str, DeviceType] = _catalog()
