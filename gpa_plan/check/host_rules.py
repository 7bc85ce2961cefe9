"""Rules that need the host: what a host profile (`--host FILE`, docs/host.md) says its KVM
cannot give. Without a profile they find nothing."""

from __future__ import annotations

from collections.abc import Iterator

from gpa_plan.check.findings import Finding
from gpa_plan.check.rules import ERROR, NOTE, RuleContext, rule


@rule(
    "host-limits",
    ERROR,
    "with a host profile: a pa_bits or an in-kernel device this host's KVM cannot give",
    also=(
        (
            NOTE,
            "without a host profile: a pa_bits, an interrupt controller or an address space "
            "some hosts refuse, and which",
        ),
    ),
)
def host_limits(ctx: RuleContext) -> Iterator[Finding]:
    """What the host in the profile (`--host`) refuses although the architecture allows it:
    on arm64, a pa_bits above the host's IPA limit (`ipa_limit`: KVM_CREATE_VM fails with
    EINVAL, arch/arm64/kvm/mmu.c kvm_init_ipa_range() from kvm_init_stage2_mmu()), and a vGIC
    model or ITS the host cannot create (`vgic_v2`, `vgic_v3`, `vgic_its` false:
    KVM_CREATE_DEVICE fails with ENODEV, virt/kvm/kvm_main.c kvm_ioctl_create_device(); a
    GICv3 host without a GICV resource has no GICv2, arch/arm64/kvm/vgic/vgic-v3.c
    vgic_v3_probe()), Linux 7.2.13. The other host facts refine their own rules
    (`memslot-out-of-range`, `slot-id-conflict`, `private-slot-conflict`). Without a profile,
    a note says on which hosts the layout would be refused: a pa_bits above the
    architecture's default, an interrupt controller some hosts lack, a memslot in an address
    space past the first (x86 SMM, which some hosts do not have). riscv64 and loongarch64 have
    no host facts yet, so neither a profile nor a note. Fix: lower pa_bits, use the interrupt
    controller the host has, or run the VM on another host."""
    host, arch, layout = ctx.host, ctx.arch, ctx.layout
    if host is None:
        yield from _without_profile(ctx)
        return
    condition = arch.host_pa_limit
    limit = ctx.host_fact(condition.fact) if condition is not None else None
    if condition is not None and isinstance(limit, int) and layout.pa_bits > limit:
        yield ctx.finding(
            f"pa_bits {layout.pa_bits} is above this host's largest {arch.pa_name} of {limit} "
            f"bits ({host.cite(condition.fact)}): {condition.refusal}; lower pa_bits to "
            f"{limit} or less, or run the VM on a host that allows {layout.pa_bits} bits",
            (),
            "pa_bits",
        )
    for d in layout.devices:
        needs = d.type.host_needs
        if needs is None or ctx.host_fact(needs.fact) is not False:
            continue
        yield ctx.finding(
            f"device {d.name!r} ({d.type.name}) needs what this host's KVM cannot create "
            f"({host.cite(needs.fact)}): {needs.refusal}; use the interrupt controller the "
            "host has, or another host",
            d.path,
            "type",
            (d.name,),
        )


def _without_profile(ctx: RuleContext) -> Iterator[Finding]:
    """Notes, not errors: what some hosts refuse, and how to know this one
    (`gpa-plan host`; `--host` makes it exact)."""
    arch, layout = ctx.arch, ctx.layout
    if arch.name != layout.arch:
        return  # under another --arch the layout is not meant for that host at all
    ask = "`gpa-plan host` says what this host has; check with --host to know"
    condition = arch.host_pa_limit
    if condition is not None and condition.hosts and layout.pa_bits > arch.default_pa_bits:
        where = condition.hosts.format(bits=layout.pa_bits)
        yield ctx.finding(
            f"pa_bits {layout.pa_bits} is above {arch.name}'s default of "
            f"{arch.default_pa_bits}: on {where}, {condition.refusal}; {ask}",
            (),
            "pa_bits",
            severity=NOTE,
        )
    said: set[str] = set()
    for d in layout.devices:
        needs = d.type.host_needs
        if needs is None or not needs.hosts or needs.fact in said:
            continue
        said.add(needs.fact)
        yield ctx.finding(
            f"device {d.name!r} ({d.type.name}): on {needs.hosts}, {needs.refusal}; {ask}",
            d.path,
            "type",
            (d.name,),
            severity=NOTE,
        )
    if arch.host_address_spaces is None:
        return
    for m in layout.memslots:
        if 0 < m.as_id < arch.address_spaces:
            space = arch.other_address_spaces[m.as_id - 1] if m.as_id <= len(
                arch.other_address_spaces
            ) else f"address space {m.as_id}"
            yield ctx.finding(
                f"memslot {m.name!r} is in as_id {m.as_id} ({space}): a host whose KVM has "
                f"fewer address spaces (a kernel without {space}, a VM with private memory) "
                "refuses it with EINVAL (kvm_set_memory_region()); " + ask,
                m.path,
                "as_id",
                (m.name,),
                severity=NOTE,
            )
            return
