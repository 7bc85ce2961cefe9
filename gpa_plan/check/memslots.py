"""Rules for memslots: what KVM_SET_USER_MEMORY_REGION would refuse (virt/kvm/kvm_main.c
kvm_vm_ioctl_set_memory_region() and kvm_set_memory_region(), confirmed in Linux 7.2.13)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from gpa_plan.arch.base import KeptRange, PrivateRange
from gpa_plan.check.findings import Finding
from gpa_plan.check.overlaps import TakenRanges, any_overlap
from gpa_plan.check.rules import ERROR, WARNING, RuleContext, rule
from gpa_plan.layout.resolved import MemslotEntry
from gpa_plan.ranges import U64_LIMIT, Range, hex_addr, human_size

# include/linux/kvm_host.h: KVM_MEM_MAX_NR_PAGES, pages per user memslot.
KVM_MEM_MAX_NR_PAGES = (1 << 31) - 1


def _describe(m: MemslotEntry) -> str:
    kind = "read-only memslot" if m.readonly else "memslot"
    space = f", as_id {m.as_id}" if m.as_id else ""
    return f"{kind} {m.name!r} (slot {m.slot}{space}) {m.range}"


@rule("memslot-overlap", ERROR, "two memslots of one address space overlap (KVM: EEXIST)")
def memslot_overlap(ctx: RuleContext) -> Iterator[Finding]:
    """kvm_set_memory_region() -> kvm_check_memslot_overlap(): a memslot that overlaps a
    memslot KVM has already accepted in the same address space is refused with EEXIST, so the
    VMM fails when it adds it. Memslots are taken in file order; a refused one is not in KVM's
    table and cannot make a later one fail, so each memslot is reported at most once, with an
    accepted memslot it overlaps. Memslots of different address spaces (x86 SMM) may overlap.
    Fix: move or shrink one of them."""
    by_space: dict[int, list[MemslotEntry]] = defaultdict(list)
    for m in ctx.layout.memslots:
        by_space[m.as_id].append(m)
    for slots in by_space.values():
        if not any_overlap([m.range for m in slots]):
            continue
        accepted = TakenRanges([m.range for m in slots])
        for k, later in enumerate(slots):
            if later.range.size <= 0:
                continue  # size 0 deletes a slot; memslot-out-of-range reports it
            hit = accepted.overlapping(later.range)
            if hit is None:
                accepted.take(k, later.range)
                continue
            first = slots[hit]
            shared = first.range.intersection(later.range)
            yield ctx.finding(
                f"{_describe(later)} overlaps {_describe(first)} at {shared}: "
                f"KVM_SET_USER_MEMORY_REGION refuses it with EEXIST "
                "(kvm_check_memslot_overlap); move or shrink one of them",
                later.path,
                "base",
                (later.name, first.name),
            )


@rule("memslot-misaligned", ERROR, "memslot base or size not a multiple of page_size (EINVAL)")
def memslot_misaligned(ctx: RuleContext) -> Iterator[Finding]:
    """kvm_set_memory_region() refuses, with EINVAL, a guest_phys_addr or memory_size that is
    not a multiple of the host PAGE_SIZE (`page_size`). Fix: round base down and size up to
    the page size (the message gives both values, and the other direction where it is valid
    too), or change page_size to the host's."""
    page = ctx.layout.page_size
    for m in ctx.layout.memslots:
        for field, value in (("base", m.range.start), ("size", m.range.size)):
            if value > 0 and value % page:
                yield ctx.finding(
                    f"{field} {hex_addr(value)} of memslot {m.name!r} is not a multiple of the "
                    f"{human_size(page)} page size: KVM_SET_USER_MEMORY_REGION returns EINVAL; "
                    + _aligned_choices(field, value, page),
                    m.path,
                    field,
                    (m.name,),
                )


def _aligned_choices(field: str, value: int, page: int) -> str:
    """What to write instead: a base rounds down (the memslot keeps its start page), a size up
    (it keeps every byte); the other direction follows where it is a valid value too. A size
    never rounds down to 0, which would delete the slot."""
    down = value - value % page
    up = down + page
    if field == "base":
        return f"round it down to {hex_addr(down)} (or up to {hex_addr(up)})"
    other = f" (or down to {hex_addr(down)})" if down else ""
    return f"round it up to {hex_addr(up)}{other}"


@rule(
    "memslot-out-of-range",
    ERROR,
    "a memslot is empty, wraps, or ends beyond 2**pa_bits (or the limit of the --host profile)",
)
def memslot_out_of_range(ctx: RuleContext) -> Iterator[Finding]:
    """A memslot of size 0 deletes a slot rather than creating one (EINVAL when there is none);
    one whose end wraps past 2**64, or with more than KVM_MEM_MAX_NR_PAGES (2**31 - 1) pages,
    gets EINVAL (kvm_set_memory_region()); one that ends beyond the guest physical address size
    is refused on arm64 with EFAULT (arch/arm64/kvm/mmu.c kvm_arch_prepare_memory_region()), on
    riscv64 with EFAULT even when it ends exactly there (arch/riscv/kvm/mmu.c, same function),
    on loongarch64 with ENOMEM (arch/loongarch/kvm/mmu.c, same function), and on x86_64 is
    unreachable by the guest beyond its MAXPHYADDR (EINVAL beyond the host's:
    arch/x86/kvm/x86.c kvm_arch_prepare_memory_region(), kvm_mmu_max_gfn()). Linux 7.2.13.
    With a host profile (`--host`) that states the host's limit (x86_64 `memslot_pa_bits`),
    a memslot ending beyond it is an error whatever pa_bits says; one beyond pa_bits that the
    host accepts is reported with whether the guest reaches it there (x86_64 `tdp` and
    `smaller_maxphyaddr`: with EPT/NPT, KVM enforces a guest MAXPHYADDR below the host's only
    under kvm_intel.allow_smaller_maxphyaddr=1). Fix the size or raise pa_bits."""
    layout, arch = ctx.layout, ctx.arch
    host_limit = _host_memslot_limit(ctx)
    for m in layout.memslots:
        size, end = m.range.size, m.range.end
        if size > 0 and end < U64_LIMIT and host_limit is not None and end > host_limit[0]:
            limit, cited, refusal = host_limit
            yield ctx.finding(
                f"memslot {m.name!r} {m.range} ends beyond this host's limit of "
                f"{hex_addr(limit)} ({cited}): {refusal}; move it below {hex_addr(limit)}",
                m.path,
                "base",
                (m.name,),
            )
        elif size == 0:
            message = (
                f"memslot {m.name!r} has size 0: to KVM_SET_USER_MEMORY_REGION that means "
                "'delete this slot' (EINVAL when it does not exist); give it a size"
            )
            yield ctx.finding(message, m.path, "size", (m.name,))
        elif end >= U64_LIMIT:
            # kvm_set_memory_region(): `guest_phys_addr + memory_size < guest_phys_addr` in
            # u64, so a slot ending exactly at 2**64 wraps to 0 and is refused too.
            message = (
                f"memslot {m.name!r} at {hex_addr(m.range.start)} with size {human_size(size)} "
                "ends at or past 2**64, so its end wraps around: KVM_SET_USER_MEMORY_REGION "
                "returns EINVAL"
            )
            yield ctx.finding(message, m.path, "size", (m.name,))
        elif end > layout.limit or (end == layout.limit and not arch.memslot_may_end_at_limit):
            outcome = arch.beyond_pa_outcome or (
                f"KVM refuses it with {arch.beyond_pa_errno} in {arch.beyond_pa_check}"
            )
            if host_limit is not None:  # and the memslot ends below it: the host takes it
                outcome = _beyond_pa_on_host(ctx, end, host_limit[1])
            where = "beyond" if end > layout.limit else "exactly at"
            message = (
                f"memslot {m.name!r} {m.range} ends {where} the {layout.pa_bits}-bit "
                f"{arch.pa_name} ({hex_addr(layout.limit)}): {outcome}; move it below "
                f"{hex_addr(layout.limit)} or raise pa_bits"
            )
            yield ctx.finding(message, m.path, "base", (m.name,))
        elif size // layout.page_size > KVM_MEM_MAX_NR_PAGES:
            message = (
                f"memslot {m.name!r} has {size // layout.page_size} pages, more than "
                f"KVM_MEM_MAX_NR_PAGES ({KVM_MEM_MAX_NR_PAGES}): EINVAL; split it in two"
            )
            yield ctx.finding(message, m.path, "size", (m.name,))


def _beyond_pa_on_host(ctx: RuleContext, end: int, accepted_by: str) -> str:
    """What becomes of a memslot ending at ``end``, beyond 2**pa_bits, on a host whose KVM
    accepts it (``accepted_by`` cites the fact): whether the guest reaches it there is the
    host's too (ArchSpec.host_reach)."""
    arch, host = ctx.arch, ctx.host
    accepted = f"this host's KVM accepts the memslot ({accepted_by})"
    reach_end = arch.reach_end(ctx.layout.pa_bits, host)
    if reach_end is not None and end <= reach_end and host is not None:
        return (
            f"{accepted}, and the guest reaches it all the same: {arch.reached_why(host)}; but "
            f"a guest that takes its {arch.pa_name} from CPUID will not look for memory there"
        )
    reach, decided = arch.host_reach, arch.reach_decided(host)
    why = ""
    if reach is not None and decided is None:
        why = f" ({reach.unless})"
    elif reach is not None and not decided and host is not None:
        why = f" ({reach.enforced}: {host.cite(*arch.reach_denied_by(host))})"
    return f"the guest cannot reach what lies above it{why}, though {accepted}"


def _host_memslot_limit(ctx: RuleContext) -> tuple[int, str, str] | None:
    """(the end beyond which the host refuses a memslot, the fact cited, the refusal), when
    the host profile states it."""
    condition = ctx.arch.host_memslot_limit
    bits = ctx.host_fact(condition.fact) if condition is not None else None
    if condition is None or ctx.host is None or not isinstance(bits, int):
        return None
    return 1 << bits, ctx.host.cite(condition.fact), condition.refusal


@rule(
    "slot-id-conflict",
    ERROR,
    "two memslots share (as_id, slot), or a slot id or as_id the arch (or the --host profile) "
    "does not allow",
)
def slot_id_conflict(ctx: RuleContext) -> Iterator[Finding]:
    """A second memslot with the same (as_id, slot) does not add a slot: KVM treats it as a
    move or resize of the first (EINVAL when the size, the host address or the read-only flag
    changes). Slot ids must be below KVM_USER_MEM_SLOTS
    (kvm_vm_ioctl_set_memory_region()) and as_id below kvm_arch_nr_memslot_as_ids(), each
    architecture's own (docs/kernel.md; 2 address spaces on x86 with SMM, where 1 is SMM),
    else EINVAL (kvm_set_memory_region(), Linux 7.2.13). A host profile (`--host`) that
    states the host's number of address spaces (x86_64 `address_spaces`, 1 on a host without
    SMM) is taken instead of the architecture's. Fix: give each memslot its own id, or omit
    `slot` to let gpa-plan number them."""
    arch = ctx.arch
    host_spaces = ctx.host_fact(arch.host_address_spaces)
    seen: dict[tuple[int, int], MemslotEntry] = {}
    for m in ctx.layout.memslots:
        if m.as_id >= arch.address_spaces:
            yield ctx.finding(
                f"memslot {m.name!r} uses as_id {m.as_id}, but {arch.name} allows "
                f"{arch.address_space_ids()}: "
                "KVM_SET_USER_MEMORY_REGION returns EINVAL",
                m.path,
                "as_id",
                (m.name,),
            )
        elif ctx.host is not None and isinstance(host_spaces, int) and m.as_id >= host_spaces:
            yield ctx.finding(
                f"memslot {m.name!r} uses as_id {m.as_id}, but this host has "
                f"{host_spaces} address space{'s' if host_spaces != 1 else ''} "
                f"({ctx.host.cite(str(arch.host_address_spaces))}): KVM_SET_USER_MEMORY_REGION "
                "returns EINVAL (kvm_set_memory_region(): as_id >= "
                "kvm_arch_nr_memslot_as_ids()); leave it out on this host, or run the VM on a "
                "host with that address space",
                m.path,
                "as_id",
                (m.name,),
            )
        if m.slot >= arch.user_memslots and not m.auto_slot:
            yield ctx.finding(
                f"memslot {m.name!r} uses slot id {m.slot}; {arch.name} user slot ids stop at "
                f"{arch.user_memslots - 1} (KVM_USER_MEM_SLOTS): EINVAL",
                m.path,
                "slot",
                (m.name,),
            )
        first = seen.get((m.as_id, m.slot))
        if first is not None:
            yield ctx.finding(
                f"memslot {m.name!r} reuses slot {m.slot} of as_id {m.as_id} from "
                f"{first.name!r}: KVM would treat it as moving or resizing that slot (EINVAL "
                "on a size change), not as a new one; give it its own slot id",
                m.path,
                "slot",
                (m.name, first.name),
            )
        else:
            seen[(m.as_id, m.slot)] = m


@rule("too-many-memslots", ERROR, "more memslots in one address space than KVM allows")
def too_many_memslots(ctx: RuleContext) -> Iterator[Finding]:
    """KVM_CAP_NR_MEMSLOTS reports KVM_USER_MEM_SLOTS per address space (32767 on arm64,
    riscv64 and loongarch64, 32764 on x86_64, which keeps 3 for itself); past that no slot id
    is left and KVM_SET_USER_MEMORY_REGION returns EINVAL. Fix: merge adjacent memslots."""
    counts: dict[int, list[MemslotEntry]] = defaultdict(list)
    for m in ctx.layout.memslots:
        counts[m.as_id].append(m)
    for as_id, slots in counts.items():
        if len(slots) > ctx.arch.user_memslots:
            extra = slots[ctx.arch.user_memslots]
            yield ctx.finding(
                f"address space {as_id} has {len(slots)} memslots; {ctx.arch.name} allows "
                f"{ctx.arch.user_memslots} (KVM_CAP_NR_MEMSLOTS), so {extra.name!r} and the "
                "ones after it get EINVAL; merge adjacent memslots",
                extra.path,
                None,
                (extra.name,),
            )


@rule(
    "private-slot-conflict",
    ERROR,
    "x86_64: a memslot covers a page KVM keeps for itself (the APIC-access page at 0xfee00000; "
    "on some Intel hosts the real-mode TSS and EPT identity map), or `kvm_private` puts one "
    "where KVM cannot create it",
    also=(
        (
            WARNING,
            "for the real-mode TSS and EPT identity-map pages, which only Intel hosts without "
            "unrestricted guest keep",
        ),
    ),
)
def private_slot_conflict(ctx: RuleContext) -> Iterator[Finding]:
    """KVM keeps private memslots, in every address space, made by __x86_set_memory_region()
    (arch/x86/kvm/x86.c); whichever of such a memslot and a user memslot over it comes second
    is refused with EEXIST (kvm_check_memslot_overlap(), Linux 7.2.13). An error for the
    APIC-access page at 0xfee00000, which KVM keeps with an in-kernel LAPIC on Intel hosts
    that virtualize APIC accesses (kvm_intel.flexpriority, vmx_vcpu_create()) and AMD hosts
    with AVIC active (avic_init_backing_page()), through arch/x86/kvm/lapic.c
    kvm_alloc_apic_access_page(): KVM_CREATE_VCPU, or the memslot added later, fails. A
    warning for the three-page real-mode TSS (at the layout's `kvm_private: tss`,
    KVM_SET_TSS_ADDR) and the EPT identity-map page (at
    `kvm_private: identity_map`, KVM_SET_IDENTITY_MAP_ADDR, else 0xfffbc000): KVM keeps them
    only on Intel (VMX) hosts without unrestricted guest (arch/x86/kvm/vmx/vmx.c
    vmx_set_tss_addr(), init_rmode_identity_map()), and the layout cannot say which host runs
    it; there KVM_SET_TSS_ADDR or KVM_CREATE_VCPU, or the memslot, fails with EEXIST, while
    AMD (SVM) hosts and Intel hosts with unrestricted guest keep no such memslot. The same
    hosts cannot create one that `kvm_private` puts off a page boundary (EINVAL,
    kvm_set_memory_region()) or over another private range (EEXIST for the second one
    created), reported at that key. With a host profile (`--host`), each range is exact: an
    error where the profile says KVM keeps it (x86_64 `apic_access_page`, `real_mode_tss`,
    `ept_identity_map` true), no finding where it says KVM does not. Fix: leave the page out
    of every memslot (split RAM around it), or move the private range with `kvm_private` and
    the VMM's ioctl."""
    source = ctx.layout.source
    types = {d.type.name for d in ctx.layout.devices}
    kept_ranges = [
        kept
        for kept in ctx.arch.kept_ranges(types, source.kvm_private)
        if ctx.host_fact(kept.private.host_fact) is not False
    ]
    for i, kept in enumerate(kept_ranges):
        yield from _over_private(ctx, kept)
        if kept.set_by_layout:
            yield from _off_page(ctx, kept)
        for other in kept_ranges[i + 1 :]:
            yield from _private_over_private(ctx, kept, other)


def _off_page(ctx: RuleContext, kept: KeptRange) -> Iterator[Finding]:
    """kvm_set_memory_region() refuses a private memslot off a page boundary with EINVAL."""
    private = kept.private
    setting = private.setting
    page = ctx.layout.page_size
    if setting is None or kept.start % page == 0:
        return
    hosts, severity = _hosts(ctx, private)
    yield ctx.finding(
        f"`kvm_private: {setting.key}` {hex_addr(kept.start)} is not a multiple of the "
        f"{human_size(page)} page: {hosts + '; ' if hosts else ''}where KVM keeps "
        f"{private.name}, {setting.created_by} fails with EINVAL (kvm_set_memory_region()); "
        "give a page-aligned address",
        ("kvm_private",),
        setting.key,
        severity=severity,
    )


def _hosts(ctx: RuleContext, private: PrivateRange) -> tuple[str, str | None]:
    """(which hosts keep ``private``, for messages; the severity of a finding about it): an
    error on most hosts, or where the host profile says this host keeps it; a warning where
    only some hosts keep it and no profile says which this is."""
    if ctx.host is not None and ctx.host_fact(private.host_fact) is True:
        return f"this host keeps it ({ctx.host.cite(str(private.host_fact))})", None
    return private.hosts or "", None if private.most_hosts else WARNING


def _private_over_private(
    ctx: RuleContext, first: KeptRange, later: KeptRange
) -> Iterator[Finding]:
    """Two private ranges that `kvm_private` puts over each other: KVM cannot keep both."""
    if not Range(first.start, first.end).overlaps(Range(later.start, later.end)):
        return
    # Reported at the key the layout gave (the later one's, when it gave both).
    moved, other = (later, first) if later.set_by_layout else (first, later)
    setting = moved.private.setting
    if setting is None or not moved.set_by_layout:
        return
    conditional = [
        (hosts, severity)
        for hosts, severity in (_hosts(ctx, k.private) for k in (moved, other))
        if severity == WARNING
    ]
    hosts = f"{conditional[0][0]}; " if conditional and conditional[0][0] else ""
    calls = sorted({k.private.setting.created_by for k in (moved, other) if k.private.setting})
    which = f" ({' or '.join(calls)} fails, whichever comes second)" if len(calls) == 2 else ""
    yield ctx.finding(
        f"`kvm_private: {setting.key}` puts {moved.name} {Range(moved.start, moved.end)} over "
        f"{other.name} {Range(other.start, other.end)}: KVM cannot keep both; {hosts}where it "
        f"keeps both, the one it creates second fails with EEXIST{which} "
        "(kvm_check_memslot_overlap()); move one of them",
        ("kvm_private",),
        setting.key,
        severity=WARNING if conditional else None,
    )


def _over_private(ctx: RuleContext, kept: KeptRange) -> Iterator[Finding]:
    private = kept.private
    page = Range(kept.start, kept.end)
    placed = f"{kept.placed_by}; " if kept.placed_by else ""
    hosts, severity = _hosts(ctx, private)
    hosts = f". {hosts[0].upper()}{hosts[1:]}" if hosts else ""
    fix = (
        f"leave it out of the memslot, or move it (`kvm_private: {private.setting.key}` and "
        f"the VMM's {private.setting.ioctl})"
        if private.setting is not None
        else "leave that page out of the memslot"
    )
    for m in ctx.layout.memslots:
        if m.range.overlaps(page):
            yield ctx.finding(
                f"memslot {m.name!r} {m.range} covers {private.name} at "
                f"{hex_addr(kept.start)} ({placed}{private.what}): {private.refusal}{hosts}; "
                f"{fix}",
                m.path,
                "base",
                (m.name,),
                severity=severity,
            )
