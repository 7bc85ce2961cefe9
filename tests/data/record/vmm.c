/* A small x86_64 VMM whose KVM state is known exactly: `gpa-plan record` of it must give
 * vmm-expected.yaml (beside it). It builds one VM, runs a real-mode guest that makes MMIO
 * and port accesses of known widths at known addresses, counts the exits it sees and prints
 * them, one `exit ...` line per kind, then what it set up.
 *
 *   cc -O1 -o vmm vmm.c && ./vmm
 *
 * Guest-physical layout (KVM_SET_USER_MEMORY_REGION):
 *   slot 0   0x00000-0x7ffff  RAM, the guest's code at 0x1000
 *   slot 3   0xe0000-0xeffff  read-only: reads come from memory, writes exit as MMIO
 *   slot 1   0x200000, 64 KiB, dirty logging, then moved to 0x300000
 *   slot 2   0x400000, 4 KiB, then deleted
 *   slot 4   0x1000, 4 KiB: over slot 0, refused with EEXIST
 *   0x90000  ioeventfd, 4 bytes, datamatch 0x1234
 *   0x90010  ioeventfd, 2 bytes
 *   0x90020  ioeventfd, 4 bytes, deassigned again
 *   port 0x510  ioeventfd, 1 byte
 *   0xa0000  coalesced zone, 4 KiB; 0xb0000 one registered and unregistered again
 *   KVM_CREATE_IRQCHIP: IOAPIC, LAPIC, the PICs and ELCR ports
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define DONE_PORT 0xf4

static void die(const char *what)
{
	fprintf(stderr, "vmm: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int set_slot(int vm, uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size,
		    void *hva)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot, .flags = flags, .guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = (uint64_t)(uintptr_t)hva,
	};
	return ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r);
}

static void must_set_slot(int vm, uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size,
			  void *hva)
{
	if (set_slot(vm, slot, flags, gpa, size, hva) < 0)
		die("KVM_SET_USER_MEMORY_REGION");
}

static void *anon(size_t size)
{
	void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		die("mmap");
	return m;
}

static void ioeventfd(int vm, uint64_t addr, uint32_t len, int datamatch, uint64_t value,
		      int pio, int deassign, int efd)
{
	struct kvm_ioeventfd io = {
		.datamatch = value, .addr = addr, .len = len, .fd = efd,
		.flags = (datamatch ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0) |
			 (pio ? KVM_IOEVENTFD_FLAG_PIO : 0) |
			 (deassign ? KVM_IOEVENTFD_FLAG_DEASSIGN : 0),
	};
	if (ioctl(vm, KVM_IOEVENTFD, &io) < 0)
		die("KVM_IOEVENTFD");
}

static void zone(int vm, unsigned long request, uint64_t addr, uint32_t size)
{
	struct kvm_coalesced_mmio_zone z = { .addr = addr, .size = size };
	if (ioctl(vm, request, &z) < 0)
		die("KVM_(UN)REGISTER_COALESCED_MMIO");
}

/* Real mode, at 0x1000. Each access is commented with what KVM makes of it. */
static const uint8_t guest[] = {
	0xb8, 0x00, 0x90,                   /* mov ax, 0x9000                           */
	0x8e, 0xd8,                         /* mov ds, ax                               */
	0x66, 0xc7, 0x06, 0x00, 0x00, 0x34, 0x12, 0x00, 0x00, /* mov dword [0], 0x1234: ioeventfd */
	0x66, 0xc7, 0x06, 0x00, 0x00, 0x78, 0x56, 0x00, 0x00, /* mov dword [0], 0x5678: MMIO write 4 */
	0xc7, 0x06, 0x10, 0x00, 0xef, 0xbe, /* mov word [0x10], 0xbeef: ioeventfd       */
	0x66, 0xc7, 0x06, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, /* mov dword [0x20], 1: MMIO write 4 */
	0xc6, 0x06, 0x00, 0x01, 0x42,       /* mov byte [0x100], 0x42: MMIO write 1     */
	0xa1, 0x00, 0x01,                   /* mov ax, [0x100]: MMIO read 2             */
	0x66, 0xa1, 0x04, 0x01,             /* mov eax, [0x104]: MMIO read 4            */
	0xb8, 0x00, 0xa0,                   /* mov ax, 0xa000                           */
	0x8e, 0xd8,                         /* mov ds, ax                               */
	0xc7, 0x06, 0x00, 0x00, 0x11, 0x11, /* mov word [0], 0x1111: coalesced          */
	0xc7, 0x06, 0x02, 0x00, 0x22, 0x22, /* mov word [2], 0x2222: coalesced          */
	0xa0, 0x00, 0x00,                   /* mov al, [0]: MMIO read 1                 */
	0xb8, 0x00, 0xb0,                   /* mov ax, 0xb000                           */
	0x8e, 0xd8,                         /* mov ds, ax                               */
	0xc6, 0x06, 0x00, 0x00, 0x33,       /* mov byte [0], 0x33: MMIO write 1         */
	0xb8, 0x00, 0xe0,                   /* mov ax, 0xe000                           */
	0x8e, 0xd8,                         /* mov ds, ax                               */
	0xa0, 0x00, 0x00,                   /* mov al, [0]: read-only memory, no exit   */
	0xa2, 0x00, 0x00,                   /* mov [0], al: MMIO write 1 (read-only)    */
	0xba, 0x10, 0x05,                   /* mov dx, 0x510                            */
	0xee,                               /* out dx, al: ioeventfd                    */
	0xba, 0xf8, 0x03,                   /* mov dx, 0x3f8                            */
	0xee,                               /* out dx, al: port write 1                 */
	0xec,                               /* in al, dx: port read 1                   */
	0xe6, DONE_PORT,                    /* out DONE_PORT, al: the end               */
	0xf4,                               /* hlt (never reached)                      */
};

int main(void)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
		die("KVM_CREATE_IRQCHIP");
	/* KVM's private pages, where QEMU puts them (0xfeffd000, 0xfeffc000). */
	if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfeffd000UL) < 0)
		die("KVM_SET_TSS_ADDR");
	uint64_t identity_map = 0xfeffc000;
	if (ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &identity_map) < 0)
		die("KVM_SET_IDENTITY_MAP_ADDR");
	/* Refused: above (unsigned int)(-3 * PAGE_SIZE), kvm_vm_ioctl_set_tss_addr(). */
	if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffff000UL) == 0)
		die("KVM_SET_TSS_ADDR 0xfffff000 was accepted");
	/* Refused on /dev/kvm itself: no VM to add a vCPU to (kvm_arch_dev_ioctl()). */
	if (ioctl(kvm, KVM_CREATE_VCPU, 0) >= 0)
		die("KVM_CREATE_VCPU on /dev/kvm was accepted");

	uint8_t *ram = anon(0x80000), *rom = anon(0x10000), *moved = anon(0x10000);
	uint8_t *gone = anon(0x1000);
	memcpy(ram + 0x1000, guest, sizeof(guest));
	memset(rom, 0xaa, 0x10000);
	must_set_slot(vm, 0, 0, 0x0, 0x80000, ram);
	must_set_slot(vm, 3, KVM_MEM_READONLY, 0xe0000, 0x10000, rom);
	must_set_slot(vm, 1, KVM_MEM_LOG_DIRTY_PAGES, 0x200000, 0x10000, moved);
	must_set_slot(vm, 1, KVM_MEM_LOG_DIRTY_PAGES, 0x300000, 0x10000, moved); /* move */
	must_set_slot(vm, 2, 0, 0x400000, 0x1000, gone);
	must_set_slot(vm, 2, 0, 0x400000, 0, gone); /* delete */
	int refused = set_slot(vm, 4, 0, 0x1000, 0x1000, gone) < 0 ? errno : 0;

	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int efd2 = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int efd3 = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int efd4 = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ioeventfd(vm, 0x90000, 4, 1, 0x1234, 0, 0, efd);
	ioeventfd(vm, 0x90010, 2, 0, 0, 0, 0, efd2);
	ioeventfd(vm, 0x90020, 4, 0, 0, 0, 0, efd3);
	ioeventfd(vm, 0x510, 1, 0, 0, 1, 0, efd4);
	ioeventfd(vm, 0x90020, 4, 0, 0, 0, 1, efd3); /* deassign */
	zone(vm, KVM_REGISTER_COALESCED_MMIO, 0xa0000, 0x1000);
	zone(vm, KVM_REGISTER_COALESCED_MMIO, 0xb0000, 0x1000);
	zone(vm, KVM_UNREGISTER_COALESCED_MMIO, 0xb0000, 0x1000);

	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		die("KVM_CREATE_VCPU");
	/* Refused on the vCPU: more entries than KVM_MAX_CPUID_ENTRIES (E2BIG). */
	struct kvm_cpuid2 too_many = { .nent = 0x10000 };
	if (ioctl(vcpu, KVM_SET_CPUID2, &too_many) == 0)
		die("KVM_SET_CPUID2 of 0x10000 entries was accepted");
	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");
	struct kvm_sregs sregs;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		die("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		die("KVM_SET_SREGS");
	struct kvm_regs regs = { .rip = 0x1000, .rflags = 2 };
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		die("KVM_SET_REGS");

	/* Counted exits: [is_write][width] for MMIO, [out][size] for ports. */
	unsigned mmio[2][9] = { { 0 } }, port[2][5] = { { 0 } };
	uint64_t mmio_at[16];
	unsigned mmio_seen = 0;
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0)
			die("KVM_RUN");
		if (run->exit_reason == KVM_EXIT_MMIO) {
			mmio[run->mmio.is_write][run->mmio.len]++;
			if (mmio_seen < 16)
				mmio_at[mmio_seen++] = run->mmio.phys_addr;
			if (!run->mmio.is_write)
				memset(run->mmio.data, 0x5a, sizeof(run->mmio.data));
		} else if (run->exit_reason == KVM_EXIT_IO) {
			if (run->io.port == DONE_PORT)
				break;
			port[run->io.direction == KVM_EXIT_IO_OUT][run->io.size]++;
		} else {
			fprintf(stderr, "vmm: unexpected exit %u\n", run->exit_reason);
			return 1;
		}
	}
	for (int w = 0; w < 2; w++)
		for (int len = 1; len <= 8; len++)
			if (mmio[w][len])
				printf("exit mmio %s width %d: %u\n", w ? "write" : "read", len,
				       mmio[w][len]);
	for (int out = 0; out < 2; out++)
		for (int size = 1; size <= 4; size++)
			if (port[out][size])
				printf("exit port %s width %d: %u\n", out ? "write" : "read", size,
				       port[out][size]);
	printf("mmio addresses:");
	for (unsigned i = 0; i < mmio_seen; i++)
		printf(" %#llx", (unsigned long long)mmio_at[i]);
	printf("\n");
	uint64_t count;
	int fds[] = { efd, efd2, efd4 };
	const char *names[] = { "0x90000", "0x90010", "port 0x510" };
	for (int i = 0; i < 3; i++)
		printf("ioeventfd %s: %llu\n", names[i],
		       read(fds[i], &count, 8) == 8 ? (unsigned long long)count : 0ULL);
	struct kvm_coalesced_mmio_ring *ring =
		(void *)((char *)run + KVM_COALESCED_MMIO_PAGE_OFFSET * getpagesize());
	printf("coalesced writes: %u\n", ring->last - ring->first);
	printf("refused slot 4: %s\n", refused == EEXIST ? "EEXIST" : strerror(refused));
	return 0;
}
