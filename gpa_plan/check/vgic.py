"""Rules for the arm64 vGIC as a whole: frames a VM cannot run without, and how its GICv3
redistributors are given to KVM (gpa_plan.arch.arm64 declares the frames)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from gpa_plan.arch.devices import CATALOG, DeviceType
from gpa_plan.check.findings import Finding
from gpa_plan.check.rules import ERROR, RuleContext, rule
from gpa_plan.layout.models import REDIST_DEFAULT
from gpa_plan.layout.resolved import DeviceEntry

# arch/arm64/kvm/vgic/vgic.h KVM_VGIC_V3_RDIST_COUNT_MASK, GENMASK_ULL(63, 52): the count of a
# KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION has 12 bits (Linux 7.2.13).
MAX_REGION_COUNT = (1 << 12) - 1


def _describe(d: DeviceEntry) -> str:
    return f"{d.type.name} {d.name!r} {d.range}"


def _made(ctx: RuleContext, d: DeviceEntry) -> bool:
    """Whether a VMM creates ``d`` in KVM: its type exists on the architecture checked and on
    the layout's own (a vGIC in an x86_64 layout is `device-wrong-arch`, nothing more)."""
    return ctx.arch.name in d.type.arches and ctx.layout.arch in d.type.arches


@rule(
    "vgic-incomplete",
    ERROR,
    "a vGIC without a frame it needs (a GICv3 distributor without redistributors, a GICv2 "
    "distributor without its CPU interface, or the reverse): the first KVM_RUN fails",
)
def vgic_incomplete(ctx: RuleContext) -> Iterator[Finding]:
    """KVM checks the vGIC's addresses at the first KVM_RUN (arch/arm64/kvm/arm.c
    kvm_arch_vcpu_run_pid_change() -> vgic-init.c kvm_vgic_map_resources(), Linux 7.2.13):
    vgic_v3_map_resources() (vgic-v3.c) wants a redistributor for every vCPU and the
    distributor, vgic_v2_map_resources() (vgic-v2.c) the distributor and the CPU interface.
    A missing one makes KVM_RUN fail with ENXIO, and kvm_vgic_map_resources() then marks the
    VM dead (kvm_vm_dead(): every later ioctl on it fails with EIO). Each frame a layout's
    vGIC lacks is reported once, at its first frame. Fix: add the missing frame."""
    frames = [d for d in ctx.layout.devices if d.type.irqchip_model is not None and _made(ctx, d)]
    for first, needed in missing_frames(frames):
        model = first.type.irqchip_model
        yield ctx.finding(
            f"{_describe(first)} is a {model} frame, but the layout has no {needed.name}: "
            f"{needed.missing_refusal}; add a {needed.name} device",
            first.path,
            "type",
            (first.name,),
        )


def missing_frames(frames: Sequence[DeviceEntry]) -> list[tuple[DeviceEntry, DeviceType]]:
    """The frames a VM whose interrupt-controller frames are ``frames`` (in the order the VMM
    sets them) lacks for its first KVM_RUN, each with the first frame: the first frame's model
    is the vGIC KVM creates; frames of another model are refused (vgic-conflict) and cannot
    complete it."""
    if not frames:
        return []
    first = frames[0]
    model = first.type.irqchip_model
    present = {d.type.name for d in frames if d.type.irqchip_model == model}
    return [
        (first, needed)
        for needed in CATALOG.values()
        if needed.irqchip_model == model and needed.missing_refusal and needed.name not in present
    ]


@rule(
    "vgic-redist",
    ERROR,
    "GICv3 redistributors KVM refuses: a second legacy address, legacy and regions mixed, or "
    "a region of more frames than its count can say",
)
def vgic_redist(ctx: RuleContext) -> Iterator[Finding]:
    """A VMM gives KVM the GICv3 redistributors either as one legacy address
    (KVM_VGIC_V3_ADDR_TYPE_REDIST, sized by the VM's vCPUs) or as numbered regions
    (KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION: base, index, count), as each `vgic-v3-redist`
    device's `redist` says (default: regions, with indexes in file order from 0, as QEMU
    numbers them). arch/arm64/kvm/vgic/vgic-mmio-v3.c vgic_v3_alloc_redist_region() (Linux
    7.2.13), from kvm_vgic_addr() (vgic-kvm-device.c): a second legacy address is refused
    with EEXIST; a legacy address after a region with EINVAL ("Don't mix single region and
    discrete redist regions"); a region after the legacy address with EINVAL when its index is
    not the next one (and given that index it holds no vCPU's frame: vCPUs fill the legacy
    region first, vgic_v3_rdist_free_slot()). A region's count has 12 bits
    (KVM_VGIC_V3_RDIST_COUNT_MASK): more than 4095 frames cannot be said. Fix: give every
    redistributor as a region, or one legacy address covering every vCPU."""
    legacy: DeviceEntry | None = None
    region: DeviceEntry | None = None
    for d in ctx.layout.devices:
        if not d.type.frame_may_repeat or not _made(ctx, d):
            continue
        given = ctx.layout.source.devices[d.path[1]]
        mode = given.redist or REDIST_DEFAULT
        field = "redist" if given.redist is not None else "base"
        if mode == "legacy" and legacy is not None:
            yield ctx.finding(
                f"{_describe(d)} is a second legacy redistributor address after {legacy.name!r}: "
                "KVM takes one (vgic_v3_alloc_redist_region()), so KVM_SET_DEVICE_ATTR"
                "(KVM_VGIC_V3_ADDR_TYPE_REDIST) fails with EEXIST; give the redistributors as "
                "`redist: regions`, or one legacy device whose `vcpus` covers every vCPU",
                d.path,
                field,
                (d.name, legacy.name),
            )
        elif mode == "legacy" and region is not None:
            yield ctx.finding(
                f"{_describe(d)} is a legacy redistributor address after the region "
                f"{region.name!r}: KVM does not mix the two (vgic_v3_alloc_redist_region()), so "
                "KVM_SET_DEVICE_ATTR(KVM_VGIC_V3_ADDR_TYPE_REDIST) fails with EINVAL; make it "
                "`redist: regions`",
                d.path,
                field,
                (d.name, region.name),
            )
        elif mode == "legacy":
            legacy = d
        elif legacy is not None:
            yield ctx.finding(
                f"{_describe(d)} is a redistributor region after the legacy address of "
                f"{legacy.name!r}: KVM_SET_DEVICE_ATTR(KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION) "
                "fails with EINVAL (vgic_v3_alloc_redist_region() wants the index after the "
                "legacy one's, and even with it the region would hold no vCPU's frame, since "
                f"vCPUs fill the legacy address first); make {legacy.name!r} `redist: regions` "
                "too",
                d.path,
                field,
                (d.name, legacy.name),
            )
        else:
            region = region or d
            count = d.range.size // (d.type.per_vcpu or 1)
            if count > MAX_REGION_COUNT:
                yield ctx.finding(
                    f"{_describe(d)} has {count} redistributors, but the count of a "
                    "KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION has 12 bits "
                    f"(KVM_VGIC_V3_RDIST_COUNT_MASK): at most {MAX_REGION_COUNT}; split it into "
                    f"regions of at most {MAX_REGION_COUNT} vCPUs",
                    d.path,
                    "vcpus",
                    (d.name,),
                )
