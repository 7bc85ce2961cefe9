"""The probe's input (a plan) and output (results), as JSON-ready dicts (format 1).

A plan says which VM to build and which accesses to make; results say what KVM did at each
step. Neither holds a prediction: gpa_plan.verify keeps those and compares. docs/verify.md
describes both formats for users who run an exported probe.

Plan::

    {"format": 1, "arch": "x86_64" | "arm64",
     "vm": {"pa_bits": 40, "vcpus": 1,
            "nisv_to_user": false},     # arm64: KVM_ENABLE_CAP(KVM_CAP_ARM_NISV_TO_USER) first
     "steps": [Step, ...],          # set-up, in order
     "probe_area": {"base": ..., "size": ...},   # free GPA range for the probe's own memslot
     "report": ...,                  # arm64: a free, unbacked GPA the guest writes its reports to
     "probes": [Probe, ...]}

Step (``op`` and its fields; every step has an ``id``, a string unique in the plan)::

    memslot      slot, as_id, base, size, readonly
    irqchip      (x86 KVM_CREATE_IRQCHIP)
    split_irqchip routes (x86 KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP): in-kernel LAPICs only)
    tss          addr (x86 KVM_SET_TSS_ADDR)
    identity_map addr (x86 KVM_SET_IDENTITY_MAP_ADDR)
    vgic         version (2 or 3), its: bool -- KVM_CREATE_DEVICE only
    vgic_addr    frame ("dist", "cpu", "redist", "redist_region", "its"), base, [count]
    its          base (arm64: KVM_CREATE_DEVICE of an ITS, then its address)
    vgic_init    (arm64 KVM_DEV_ARM_VGIC_CTRL_INIT; optional: without it the guest makes it
                 once the vCPUs exist, and results["guest"]["vgic_init"] holds its errno)
    ioeventfd    base, length, datamatch (int or null)
    coalesced    base, size
    vcpus        (creates the layout's vCPUs; KVM_CREATE_VCPU errors show here)

Probe::

    {"id": "...", "address": ..., "access": "read" | "write" | "fetch", "width": 1|2|4|8,
     "value": int (the value a write stores; the marker a read expects from memory),
     "form": "single" | "pair" | "writeback"}   # arm64, optional (default "single")

On arm64 ``form`` picks the instruction: "single" a single-register LDR/STR, whose syndrome
is valid (an access outside memory exits as MMIO); "pair" LDP/STP (widths 4 and 8: two
registers, twice the width) and "writeback" a post-index LDR/STR, neither of which reports a
valid syndrome (outside memory KVM_RUN fails with ENOSYS, or exits with KVM_EXIT_ARM_NISV
when the plan's vm.nisv_to_user is true).

Results::

    {"format": 1, "host": {...gpa_plan.probe.host facts...},
     "steps": [{"id": ..., "errno": null | "EEXIST"}, ...],
     "probes": [{"id": ..., "observed": Observed, "detail": "..."}, ...],
     "guest": {...what the probe's guest was given: x86_64 "maxphyaddr", "host_maxphyaddr",
               "smaller_maxphyaddr" (KVM_CAP_SMALLER_MAXPHYADDR)},
     "error": null | "why the plan could not run at all",
     "vm_errno": "EINVAL"}              # only when KVM_CREATE_VM itself failed

Observed is one of OBSERVED: ``memory`` (the access reached the memslot's memory),
``mmio-exit`` (KVM_EXIT_MMIO at the address, direction and width as made), ``kernel`` (no exit
and no memory: an in-kernel device answered), ``eventfd`` (an ioeventfd was signalled),
``coalesced`` (an entry appeared in the coalesced MMIO ring), ``guest-exception`` (an exception
was injected into the guest; detail names it), ``run-error`` (KVM_RUN failed; detail has the
errno), ``internal-error`` (KVM_EXIT_INTERNAL_ERROR), ``nisv`` (KVM_EXIT_ARM_NISV), ``other``
(anything else; detail says what), ``not-run`` (a step the probe needs failed).
"""

from __future__ import annotations

from typing import TypedDict

FORMAT = 1
ACCESSES = ("read", "write", "fetch")
OBSERVED = (
    "memory",
    "mmio-exit",
    "kernel",
    "eventfd",
    "coalesced",
    "guest-exception",
    "run-error",
    "internal-error",
    "nisv",
    "other",
    "not-run",
)


class Probe(TypedDict):
    id: str
    address: int
    access: str
    width: int
    value: int


class StepResult(TypedDict):
    id: str
    errno: str | None


class ProbeResult(TypedDict):
    id: str
    observed: str
    detail: str
