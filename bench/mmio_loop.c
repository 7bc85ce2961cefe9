/* A guest that makes N MMIO writes, each one an exit to this VMM: the workload of
 * bench_record.py. Usage: mmio_loop N (1..65535). Prints the exits it saw. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

static int check(int ret, const char *what)
{
	if (ret < 0) {
		perror(what);
		exit(1);
	}
	return ret;
}

int main(int argc, char **argv)
{
	unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 0) : 10000;
	/* Real mode at 0x1000: ds = 0x1000; cx = n; 1: mov [0], al; loop 1b; hlt. The write at
	 * 0x10000 is outside the memslot, so KVM exits with KVM_EXIT_MMIO each time. */
	uint8_t code[] = { 0xb8, 0x00, 0x10, 0x8e, 0xd8, 0xb9, n & 0xff, (n >> 8) & 0xff,
			   0xa2, 0x00, 0x00, 0xe2, 0xfb, 0xf4 };
	int kvm = check(open("/dev/kvm", O_RDWR | O_CLOEXEC), "/dev/kvm");
	int vm = check(ioctl(kvm, KVM_CREATE_VM, 0), "KVM_CREATE_VM");
	uint8_t *mem = mmap(NULL, 0x2000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = 0x2000,
		.userspace_addr = (uintptr_t)mem,
	};
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = 0x1000, .rflags = 2 };
	unsigned long exits = 0;

	if (n == 0 || n > 0xffff) {
		fprintf(stderr, "N must be 1 to 65535\n");
		return 2;
	}
	memcpy(mem + 0x1000, code, sizeof(code));
	check(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region), "KVM_SET_USER_MEMORY_REGION");
	int vcpu = check(ioctl(vm, KVM_CREATE_VCPU, 0), "KVM_CREATE_VCPU");
	int size = check(ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), "KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);

	check(ioctl(vcpu, KVM_GET_SREGS, &sregs), "KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	check(ioctl(vcpu, KVM_SET_SREGS, &sregs), "KVM_SET_SREGS");
	check(ioctl(vcpu, KVM_SET_REGS, &regs), "KVM_SET_REGS");
	for (;;) {
		check(ioctl(vcpu, KVM_RUN, 0), "KVM_RUN");
		if (run->exit_reason == KVM_EXIT_HLT)
			break;
		if (run->exit_reason != KVM_EXIT_MMIO) {
			fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
			return 1;
		}
		exits++;
	}
	printf("%lu MMIO exits\n", exits);
	return exits == n ? 0 : 1;
}
