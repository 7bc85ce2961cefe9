"""What every architecture module provides: limits, and the table of access outcomes."""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from gpa_plan.ranges import Range, hex_addr

ACCESSES = ("read", "write", "fetch")


class Outcome(str, enum.Enum):
    """What one guest access turns into (docs/kernel.md, "What an access becomes")."""

    MEMORY = "memory"
    IO_EXIT = "io-exit"
    IO_KERNEL = "io-kernel"
    IO_COALESCED = "io-coalesced"
    GUEST_FAULT = "guest-fault"
    VM_ERROR = "vm-error"

    @property
    def is_io(self) -> bool:
        return self in (Outcome.IO_EXIT, Outcome.IO_KERNEL, Outcome.IO_COALESCED)


class Backing(enum.Enum):
    """The memslot (of address space 0) that wins at an address, if any."""

    RAM = "ram"
    ROM = "rom"
    NONE = "none"


class Handler(str, enum.Enum):
    """Who answers an MMIO access that reaches the device layer, strongest first.

    IOEVENTFD and COALESCED answer writes only: virt/kvm/eventfd.c ioeventfd_ops and
    virt/kvm/coalesced_mmio.c coalesced_mmio_ops register no .read, so a read of their range
    finds no io-bus device and exits to the VMM (Linux 7.2.13). An ioeventfd takes a write only
    at its exact base and length (eventfd.c ioeventfd_in_range()); the table counts its whole
    range as that one doorbell.
    """

    KERNEL = "kernel"
    IOEVENTFD = "ioeventfd"
    COALESCED = "coalesced"
    USER = "user"
    NONE = "none"

    @property
    def strength(self) -> int:
        return _STRENGTH[self]


_STRENGTH = {h: i for i, h in enumerate(reversed(list(Handler)))}


class Effect(NamedTuple):
    """One cell of an outcome table: the outcome and the kernel path that produces it."""

    outcome: Outcome
    path: str


class AccessEffects(NamedTuple):
    read: Effect
    write: Effect
    fetch: Effect

    def of(self, access: str) -> Effect:
        effect: Effect = getattr(self, access)
        return effect


OutcomeTable = Mapping[tuple[Backing, Handler], AccessEffects]


class Setting(NamedTuple):
    """How a VMM tells KVM where to put a private range, and what KVM does when it does not.

    A layout states the address its VMM gives as ``kvm_private: {KEY: ADDRESS}``; the keys a
    layout may give are those its architecture declares (docs/layout-format.md)."""

    key: str  # the key under a layout's `kvm_private`: "tss"
    ioctl: str  # "KVM_SET_TSS_ADDR"
    created_by: str  # the call that creates the memslot (and fails when it cannot)
    default: int | None  # where KVM puts the range when the VMM never says; None: nowhere
    unset: str  # what KVM does when the VMM never calls ``ioctl``, for the docs and the schema
    highest: int | None = None  # the highest address ``ioctl`` accepts, on every host
    above_highest: str = ""  # what KVM does with a higher one


class HostFact(NamedTuple):
    """A fact of a host's KVM that a host profile (`gpa-plan host`, `--host FILE`) states and
    the rules read: its name in the profile's ``facts``, its JSON type, what it means."""

    name: str
    kind: type  # int, bool or str
    meaning: str


class HostCondition(NamedTuple):
    """What KVM refuses on a host whose profile states ``fact`` (a limit, or False for a
    device it cannot create), and how: ``refusal`` names the call, the errno and the kernel
    function."""

    fact: str
    refusal: str
    # Without a host profile: on which hosts the refusal happens, said in a note ("" for no
    # note: hosts that refuse are too rare to mention on every layout).
    hosts: str = ""


class HostFacts(Protocol):
    """What the arch asks of a host profile (gpa_plan.host_profile.HostProfile)."""

    def fact(self, name: str) -> Any: ...

    def cite(self, *names: str) -> str: ...


class HostReach(NamedTuple):
    """Where a host lets the guest reach guest-physical addresses at and beyond 2**pa_bits.

    On a host whose profile states every fact of ``when`` with its value, the guest reaches
    what lies in [2**pa_bits, 2**(fact ``bits``)) as the layout holds it: a memslot's memory,
    a device, else what an unbacked address becomes; only an instruction fetch there outside
    memory has ``fetch_outside`` instead of the table's cell. Where the profile states another
    value, ``ArchSpec.beyond_pa`` holds; without a profile, or where it does not know, the
    answer says ``condition``."""

    bits: str  # the host fact of the host's own limit: "maxphyaddr"
    when: tuple[tuple[str, object], ...]  # (fact, value) pairs that must all hold
    condition: str  # on which condition the guest reaches beyond 2**pa_bits, in words
    reached: str  # why it does on a host that the profile says lets it
    enforced: str  # why it does not on a host that the profile says does not
    unless: str  # the hosts where the guest reaches beyond 2**pa_bits, in a few words
    fetch_outside: Effect


class PrivateRange(NamedTuple):
    """A guest-physical range KVM takes for itself, as a private memslot.

    It exists when the layout has a ``with_device`` (``None``: whatever its devices). Its base
    is ``start``, fixed by KVM, unless ``setting`` lets the VMM choose it: then ``start`` is
    unused, and the range is where the layout's ``kvm_private`` says, else at
    ``setting.default``, else nowhere. ``hosts``, when set, says which hosts keep the range and
    which keep none; ``most_hosts`` is False when only a minority of hosts keep it, so that a
    memslot over it is a warning rather than an error (the layout cannot say the host).
    """

    name: str  # "KVM's APIC-access page"
    start: int
    size: int
    with_device: str | None  # a device type name: the range exists when the layout has one
    what: str  # what KVM keeps there, for messages
    refusal: str  # what KVM does to a user memslot over it
    setting: Setting | None = None
    hosts: str | None = None
    most_hosts: bool = True
    # The host fact (ArchSpec.host_facts) that says whether KVM keeps the range: with a host
    # profile stating it, a memslot over the range is an error, or no finding at all.
    host_fact: str | None = None

    @property
    def end(self) -> int:
        return self.start + self.size


class Ucall(enum.Enum):
    """How KVM selftests' guest code hands a ucall to the host."""

    MMIO = "an MMIO write"  # to a page past slot 0, which must stay IO
    PORT_IO = "port I/O"
    SBI = "an SBI call"

    @property
    def is_mmio(self) -> bool:
        return self is Ucall.MMIO


class SelftestsVMFacts(Protocol):
    """What an architecture's selftests layout text needs of the VM (gpa_plan.selftests)."""

    @property
    def vcpus(self) -> int: ...

    @property
    def ucall_gpa(self) -> int: ...
class KeptRange(NamedTuple):
    """A private range as KVM keeps it for one layout: where, and whether the layout said so."""

    private: PrivateRange
    start: int
    set_by_layout: bool = False

    @property
    def end(self) -> int:
        return self.start + self.private.size

    @property
    def name(self) -> str:
        return self.private.name

    @property
    def placed_by(self) -> str:
        """How its base was chosen, for messages: ``""`` for a base KVM fixes."""
        setting = self.private.setting
        if setting is None:
            return ""
        if self.set_by_layout:
            return f"`kvm_private: {setting.key}`"
        return f"KVM's default without `kvm_private: {setting.key}`"


def mmio_ucall_yaml(vm: SelftestsVMFacts, ucall_base: str, arch: str, lib: str) -> str:
    """The `ucall` device entry of a selftests layout where ucalls are MMIO writes past slot
    0 (kvm_util.c __vm_create() -> ucall_init(), then tools/testing/selftests/kvm/lib/``lib``/
    ucall.c), at its fixed address or ``auto`` (gpa_plan.selftests.selftests_layout)."""
    if ucall_base == "fixed":
        return (
            "  # ucall MMIO page: the first GPA past slot 0, fixed when the VM is created\n"
            f"  # (kvm_util.c __vm_create() -> ucall_init(); lib/{lib}/ucall.c\n"
            "  # ucall_arch_init() maps it at an unused GVA, and the host waits for a\n"
            "  # KVM_EXIT_MMIO write of 8 bytes there). A memslot a test adds over it later takes\n"
            "  # the guest's ucall writes and the test hangs: check reports it (ucall-not-io).\n"
            "  - name: ucall\n"
            "    type: ucall\n"
            f"    base: {hex_addr(vm.ucall_gpa)}\n"
        )
    return (
        "  # ucall MMIO page: selftests put it at the first GPA past slot 0\n"
        f"  # ({hex_addr(vm.ucall_gpa)}; kvm_util.c __vm_create() -> ucall_init()). `auto` here\n"
        "  # lets `gpa-plan allocate --ucall` follow that convention for a new layout;\n"
        f"  # layouts/selftests-{arch}.yaml states the address itself.\n"
        "  - name: ucall\n"
        "    type: ucall\n"
        "    base: auto\n"
    )


class SelftestsDefaults(NamedTuple):
    """How KVM selftests build this architecture's default VM (tools/testing/selftests/kvm)."""

    guest_page_sizes: tuple[int, ...]  # the page sizes of its VM modes
    host_page_sizes: tuple[int, ...]
    pa_bits: int  # the layout's pa_bits (selftests pick the mode from the host at run time)
    ucall: Ucall
    first_device: int  # slot 0, and an MMIO ucall page past it, must end at or below this
    first_device_name: str
    # Comment lines of the layout before `layout: 1`: what pa_bits stands for, how ucalls go.
    preamble: str
    # The layout's `devices:` (and `reserved:`) sections for a VM, with a ucall base of
    # "fixed" or "auto" (gpa_plan.selftests.selftests_layout).
    sections: Callable[[SelftestsVMFacts, str], str]
    # The page sizes `gpa-plan selftests-layout` assumes when none is given: the default VM
    # mode's, and the host's of the kernel's default configuration.
    default_guest_page: int = 0x1000
    default_host_page: int = 0x1000


class DeviceType(NamedTuple):
    """A catalog entry. ``size``/``handler`` of None mean the layout gives them (``mmio``).

    An architecture module lists its own types (``ArchSpec.devices``); ``arches`` is filled in
    when gpa_plan.arch.devices builds the catalog from the registry.
    """

    name: str
    summary: str
    handler: Handler | None
    size: int | None = None
    per_vcpu: int | None = None
    # Alignment the kernel enforces on the base (KVM refuses the device otherwise); None: none.
    align: int | None = None
    align_is_guest_page: bool = False
    size_is_guest_page: bool = False
    default_base: int | None = None
    # How the VMM hands the address to KVM, for messages.
    kvm_api: str = ""
    # A frame of the VM's one in-kernel interrupt controller of this model ("GICv2"): a VM
    # has one model, and each frame one address unless ``frame_may_repeat``.
    irqchip_model: str | None = None
    # KVM takes several addresses of this frame (GICv3 KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION).
    frame_may_repeat: bool = False
    # What KVM does to a VM whose interrupt controller of ``irqchip_model`` lacks this frame
    # ("" where the frame may be left out); the vgic-incomplete rule says it.
    missing_refusal: str = ""
    # What KVM_SET_DEVICE_ATTR returns for a base beyond 2**pa_bits, where KVM checks it (the
    # vGIC's E2BIG); None where it checks nothing (the riscv AIA) or takes no address.
    beyond_pa_errno: str | None = None
    # The width of the write a guest makes to it, where one access is its whole protocol
    # (the selftests ucall); `gpa-plan verify` probes the base with it.
    guest_write_width: int | None = None
    # The host fact that says whether KVM can create this device at all (False: refused).
    host_needs: HostCondition | None = None
    arches: frozenset[str] = frozenset()

    def size_for(self, *, vcpus: int | None, guest_page_size: int, size: int | None) -> int:
        if self.size_is_guest_page:
            return guest_page_size
        if self.per_vcpu is not None:
            return self.per_vcpu * (vcpus or 1)
        if self.size is not None:
            return self.size
        assert size is not None, "the layout validation requires a size for this type"
        return size

    def align_for(self, guest_page_size: int) -> int | None:
        return guest_page_size if self.align_is_guest_page else self.align


class ProbeDevice(NamedTuple):
    """A device of the layout as `gpa-plan verify` asks the architecture to create it."""

    name: str
    type: str
    range: Range
    # The layout's own entry (gpa_plan.layout.models.Device), for the keys of its type.
    entry: Any = None


# The set-up steps (gpa_plan.probe.plan) that create a layout's in-kernel devices, given those
# devices (in file order) and the VM's vCPU count.
ProbeSteps = Callable[[Sequence[ProbeDevice], int], list[dict[str, Any]]]


class Fixed(NamedTuple):
    """An in-kernel device at an address KVM fixes: a layout device (``type``) or, where
    ``type`` is None, a range of the port I/O space (``size`` ports)."""

    name: str
    type: str | None
    base: int
    size: int = 0


class RecordFacts(NamedTuple):
    """What a recording (`gpa-plan record`, gpa_plan.record.document) knows of an
    architecture's KVM calls: what its in-kernel irqchip calls make, and what KVM_CREATE_VM's
    type says of the address space."""

    # What KVM_CREATE_IRQCHIP makes at fixed addresses.
    irqchip: tuple[Fixed, ...] = ()
    # What KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP) makes.
    split_irqchip: tuple[Fixed, ...] = ()
    # What KVM_CREATE_PIT(2) makes, and the speaker port it adds with KVM_PIT_SPEAKER_DUMMY.
    pit: tuple[Fixed, ...] = ()
    pit_speaker: tuple[Fixed, ...] = ()
    # The layout's pa_bits from KVM_CREATE_VM's type, where the type sets it; None elsewhere.
    pa_bits_of_vm_type: Callable[[int], int | None] = lambda vm_type: None
    # Said in the layout's comments after a KVM_CREATE_IRQCHIP that makes nothing at a fixed
    # address.
    irqchip_note: str = ""


class SyscallAbi(NamedTuple):
    """How a host's system calls look to a tracer (`gpa-plan record`): the audit architecture
    that seccomp_data.arch and struct ptrace_syscall_info.arch carry for its native calls
    (include/uapi/linux/audit.h, Linux 7.2.13), the numbers of the calls by name, and the
    byte order of seccomp_data. Calls of another ABI of the same machine (32-bit compat, x32)
    carry another audit architecture or number and are not traced."""

    audit_arch: int
    numbers: Mapping[str, int]
    byteorder: str = "little"

    def name_of(self, nr: int) -> str | None:
        """The call's name, or None for a number this table does not list."""
        for name, number in self.numbers.items():
            if number == nr:
                return name
        return None


class UnsupportedHostError(Exception):
    """The running machine has no ``SyscallAbi``: `record` cannot trace on it."""


class ArchSpec(NamedTuple):
    """An architecture's KVM limits, its access-outcome table and the facts the rules, the
    planner and the messages ask of it (none of them names an architecture)."""

    name: str
    elf_machine: str
    default_pa_bits: int
    min_pa_bits: int
    max_pa_bits: int
    page_sizes: tuple[int, ...]
    address_spaces: int
    user_memslots: int
    # errno KVM returns for a memslot that ends beyond the address space
    beyond_pa_errno: str
    beyond_pa_check: str
    outcomes: OutcomeTable
    beyond_pa: Effect
    pa_name: str
    # What KVM does to a memslot ending beyond ``pa_name``, when it is not simply a refusal
    # with ``beyond_pa_errno`` in ``beyond_pa_check``.
    beyond_pa_outcome: str | None = None
    private_ranges: tuple[PrivateRange, ...] = ()
    # Said by `allocate --ucall` where KVM selftests deliver ucalls some other way than MMIO.
    ucall_note: str | None = None
    selftests: SelftestsDefaults | None = None
    # The MMIO device types of this architecture (gpa_plan.arch.devices adds the generic ones).
    devices: tuple[DeviceType, ...] = ()
    # What each address space past 0 holds, by as_id - 1 (x86: ("SMM",)), for messages.
    other_address_spaces: tuple[str, ...] = ()
    # What KVM does with a pa_bits outside [min_pa_bits, max_pa_bits] (or not in
    # ``pa_bits_choices``), for the arch-limits message.
    pa_bits_refusal: str = ""
    # The only pa_bits KVM gives a VM, when not every value in [min, max] exists; () for all.
    pa_bits_choices: tuple[int, ...] = ()
    # False where KVM refuses a memslot that ends exactly at 2**pa_bits (riscv's `>=` test).
    memslot_may_end_at_limit: bool = True
    # The outcome of an instruction fetch beyond 2**pa_bits, when it is not ``beyond_pa``.
    beyond_pa_fetch: Effect | None = None
    # What `uname -m` says on a host of this architecture (KVM runs guests of its own only).
    machine: str = ""
    # Where an instruction may start: a fetch probe is made at an address aligned to this.
    instruction_align: int = 1
    # How many ports the guest's port I/O instructions reach (a layout's `ports:`); 0 where
    # the architecture has no port I/O: KVM still registers a KVM_IOEVENTFD_FLAG_PIO ioeventfd
    # or a pio coalesced zone on KVM_PIO_BUS there, but no guest access ever reaches that bus.
    port_space: int = 0
    # How `gpa-plan verify` creates this architecture's in-kernel devices; None where the
    # probe cannot run (gpa_plan.probe has no guest for it).
    probe_steps: ProbeSteps | None = None
    # The KVM capabilities a `verify` report shows, as KVM_CHECK_EXTENSION names them.
    verify_caps: tuple[str, ...] = ()
    # What KVM does instead of an IO outcome (io-exit, io-kernel, io-coalesced) when the
    # guest's instruction is not one the table assumes (arm64: no valid syndrome); said beside
    # every IO answer of `explain`. "" where the table holds for every instruction.
    io_instruction_note: str = ""
    # What else happens at the base of an ioeventfd of length 0, where the architecture has a
    # fast path for it (x86: KVM_FAST_MMIO_BUS); said beside every access there.
    any_length_ioeventfd_note: str = ""
    # What a host profile of this architecture states (`gpa-plan host`), and what the rules
    # read of it: the bits below which the host accepts a memslot, the largest pa_bits a VM
    # may have, the number of memslot address spaces.
    host_facts: tuple[HostFact, ...] = ()
    host_memslot_limit: HostCondition | None = None
    host_pa_limit: HostCondition | None = None
    host_address_spaces: str | None = None
    # Where a host lets the guest reach beyond 2**pa_bits (x86: a guest MAXPHYADDR below
    # the host's, where KVM does not enforce it); None where ``beyond_pa`` holds on every host.
    host_reach: HostReach | None = None
    # How a tracer reads this machine's system calls (`gpa-plan record`); None where it
    # cannot trace them.
    syscall_abi: SyscallAbi | None = None
    # What the VM calls a recording replays make at fixed addresses (`gpa-plan record`).
    record: RecordFacts = RecordFacts()

    def address_space_ids(self) -> str:
        """The as_id values a memslot may take, in words: "only 0", "0 or 1 (SMM)"."""
        if self.address_spaces == 1:
            return "only 0"
        named = [f"{i} ({n})" for i, n in enumerate(self.other_address_spaces, start=1)]
        named += [str(i) for i in range(len(named) + 1, self.address_spaces)]
        return "0" + "".join(f", {n}" for n in named[:-1]) + f" or {named[-1]}"

    def effects(self, backing: Backing, handler: Handler) -> AccessEffects:
        return self.outcomes[(backing, handler)]

    @property
    def settings(self) -> dict[str, Setting]:
        """How a layout may place private ranges, by their `kvm_private` key."""
        return {p.setting.key: p.setting for p in self.private_ranges if p.setting is not None}

    def kept_ranges(
        self, device_types: Collection[str], settings: Mapping[str, int]
    ) -> tuple[KeptRange, ...]:
        """The private ranges KVM keeps for a VM with these device types and `kvm_private`
        ``settings`` (on the hosts each range names: see ``PrivateRange.hosts``)."""
        kept: list[KeptRange] = []
        for private in self.private_ranges:
            if private.with_device is not None and private.with_device not in device_types:
                continue
            setting = private.setting
            if setting is None:
                kept.append(KeptRange(private, private.start))
            elif setting.key in settings:
                kept.append(KeptRange(private, settings[setting.key], set_by_layout=True))
            elif setting.default is not None:
                kept.append(KeptRange(private, setting.default))
        return tuple(kept)

    def notes_for(self, effect: Effect) -> tuple[str, ...]:
        """What an answer with ``effect`` must also say: the instruction condition of an IO
        outcome, where the architecture has one."""
        if effect.outcome.is_io and self.io_instruction_note:
            return (self.io_instruction_note,)
        return ()

    def beyond(self, access: str, host: HostFacts | None = None) -> Effect:
        """The effect of ``access`` (read, write, fetch) at or beyond 2**pa_bits where the
        guest does not reach the address (``reach_end``): with the condition on which it
        would, when ``host`` (a profile of this architecture) does not say."""
        effect = self.beyond_pa
        if access == "fetch" and self.beyond_pa_fetch is not None:
            effect = self.beyond_pa_fetch
        reach = self.host_reach
        if reach is None:
            return effect
        decided = self.reach_decided(host)
        if decided is None:
            return effect._replace(path=f"{effect.path}; {reach.condition}")
        assert host is not None
        if decided:  # where the guest does not reach it: beyond the host's own limit
            if type(host.fact(reach.bits)) is not int:
                return effect._replace(path=f"{effect.path}; {reach.condition}")
            own = f"at or beyond this host's own {self.pa_name} ({host.cite(reach.bits)})"
            return effect._replace(path=f"{effect.path}; {own}")
        cited = host.cite(*self.reach_denied_by(host))
        return effect._replace(path=f"{effect.path}; {reach.enforced} ({cited})")

    def reach_end(self, pa_bits: int, host: HostFacts | None) -> int | None:
        """The end of what the guest reaches beyond 2**pa_bits on ``host`` (``host_reach``):
        2**(the host's limit), when the profile says the guest reaches past 2**pa_bits; None
        where ``beyond`` holds from 2**pa_bits on, or the profile does not say."""
        reach = self.host_reach
        if reach is None or not self.reach_decided(host):
            return None
        assert host is not None
        bits = host.fact(reach.bits)
        if type(bits) is not int or bits <= pa_bits:
            return None
        return 1 << bits

    def reached(self, backing: Backing, handler: Handler, access: str) -> Effect:
        """The effect of ``access`` at or beyond 2**pa_bits where the host lets the guest
        reach it (``reach_end``), in a place of that backing and handler: the table's cell,
        but ``host_reach.fetch_outside`` for a fetch the cell does not serve from memory."""
        effect = self.effects(backing, handler).of(access)
        reach = self.host_reach
        if reach is not None and access == "fetch" and effect.outcome is not Outcome.MEMORY:
            return reach.fetch_outside
        return effect

    def reached_why(self, host: HostFacts) -> str:
        """Why the guest reaches past 2**pa_bits on ``host`` (where ``reach_end`` says it
        does), citing the profile's facts."""
        assert self.host_reach is not None
        cited = host.cite(*(name for name, _ in self.host_reach.when))
        return f"{self.host_reach.reached} ({cited})"

    def reach_decided(self, host: HostFacts | None) -> bool | None:
        """Whether ``host`` lets the guest reach past 2**pa_bits (``host_reach``); None when
        it does not say, or the architecture has no such hosts."""
        reach = self.host_reach
        if reach is None or host is None:
            return None
        if self.reach_denied_by(host):
            return False
        if any(host.fact(name) is None for name, _ in reach.when):
            return None
        return True

    def reach_denied_by(self, host: HostFacts) -> list[str]:
        """The facts of ``host_reach.when`` that ``host`` states with another value."""
        assert self.host_reach is not None
        return [
            name for name, wanted in self.host_reach.when
            if host.fact(name) is not None and host.fact(name) != wanted
        ]  # fmt: skip

    def pa_bits_for(self, end: int) -> int:
        """The smallest pa_bits this architecture takes whose space holds a memslot or
        device ending at ``end`` (the default when that already does)."""
        bits = max(self.default_pa_bits, (end - 1).bit_length() if end > 0 else 0)
        if not self.memslot_may_end_at_limit and end == 1 << bits:
            bits += 1
        for choice in self.pa_bits_choices:
            if choice >= bits:
                return choice
        return bits


BusCells = Mapping[Handler, tuple[Outcome, str]]

# virt/kvm/eventfd.c ioeventfd_in_range() / ioeventfd_write() (Linux 7.2.13): what the write
# cell of an ioeventfd's range assumes, and what becomes of the other writes there.
IOEVENTFD_CONDITION = (
    " when the write is at exactly its base, with exactly its length (any, for length 0) and "
    "its datamatch value, if any (ioeventfd_in_range()); any other write there is declined "
    "and goes on down the bus, else exits as KVM_EXIT_MMIO"
)


def io_bus_cells(read_via: str, write_via: str) -> tuple[BusCells, BusCells]:
    """``(bus_read, bus_write)`` for an architecture whose MMIO accesses reach the
    KVM_MMIO_BUS through one function per direction (``read_via``/``write_via``, each written
    " -> fn()"; empty where the fault handler calls the bus itself), as virt/kvm answers them:
    kvm_io_bus_read()/kvm_io_bus_write() in kvm_main.c, ioeventfds and coalesced zones for
    writes only (see Handler), KVM_EXIT_MMIO where no bus device answers (Linux 7.2.13)."""

    def after(via: str) -> str:
        return f"{via}:" if via else " ->"

    no_device = " no io-bus device -> KVM_EXIT_MMIO (is_write={})"
    bus_write: BusCells = {
        Handler.KERNEL: (
            Outcome.IO_KERNEL,
            f"{write_via} -> kvm_io_bus_write() reaches the in-kernel device",
        ),
        Handler.IOEVENTFD: (
            Outcome.IO_KERNEL,
            f"{write_via} -> kvm_io_bus_write() signals the ioeventfd{IOEVENTFD_CONDITION}",
        ),
        Handler.COALESCED: (
            Outcome.IO_COALESCED,
            f"{write_via} -> kvm_io_bus_write() -> coalesced_mmio_write() queues it in the ring",
        ),
        Handler.USER: (Outcome.IO_EXIT, after(write_via) + no_device.format(1)),
        Handler.NONE: (Outcome.IO_EXIT, after(write_via) + no_device.format(1)),
    }
    bus_read: BusCells = {
        Handler.KERNEL: (
            Outcome.IO_KERNEL,
            f"{read_via} -> kvm_io_bus_read() reaches the in-kernel device",
        ),
        Handler.IOEVENTFD: (
            Outcome.IO_EXIT,
            after(read_via) + " ioeventfds take only writes -> KVM_EXIT_MMIO (is_write=0)",
        ),
        Handler.COALESCED: (
            Outcome.IO_EXIT,
            after(read_via) + " coalesced zones buffer only writes -> KVM_EXIT_MMIO (is_write=0)",
        ),
        Handler.USER: (Outcome.IO_EXIT, after(read_via) + no_device.format(0)),
        Handler.NONE: (Outcome.IO_EXIT, after(read_via) + no_device.format(0)),
    }
    return bus_read, bus_write


def outcome_table(
    *,
    mapped: str,
    mapped_ro: str,
    noslot: str,
    roslot: str,
    bus_read: BusCells,
    bus_write: BusCells,
    fetch_outside: Effect,
) -> dict[tuple[Backing, Handler], AccessEffects]:
    """The full table from an architecture's kernel paths.

    Every architecture shares the shape: a read-write memslot is mapped for all accesses; a
    read-only one is mapped for reads and fetches while writes take the no-memslot write path;
    outside memslots reads and writes go to the device layer (``bus_read``/``bus_write``, keyed
    by the strongest handler there) and fetches end as ``fetch_outside``.
    """
    table: dict[tuple[Backing, Handler], AccessEffects] = {}
    for handler in Handler:
        ram = Effect(Outcome.MEMORY, mapped)
        rom = Effect(Outcome.MEMORY, mapped_ro)
        write_outcome, write_path = bus_write[handler]
        read_outcome, read_path = bus_read[handler]
        table[(Backing.RAM, handler)] = AccessEffects(ram, ram, ram)
        table[(Backing.ROM, handler)] = AccessEffects(
            rom, Effect(write_outcome, roslot + write_path), rom
        )
        table[(Backing.NONE, handler)] = AccessEffects(
            Effect(read_outcome, noslot + read_path),
            Effect(write_outcome, noslot + write_path),
            fetch_outside,
        )
    return table
