#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <stdint.h>
int main(void){
 int kvm=open("/dev/kvm",O_RDWR);
 int vm=ioctl(kvm,KVM_CREATE_VM,0);
 ioctl(vm,KVM_CREATE_IRQCHIP,0);
 void*m=mmap(0,0x200000,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0);
 struct kvm_userspace_memory_region r={0,0,0,0x100000,(uint64_t)m};
 ioctl(vm,KVM_SET_USER_MEMORY_REGION,&r);
 r.slot=1; r.guest_phys_addr=0x200000; r.memory_size=0x10000; ioctl(vm,KVM_SET_USER_MEMORY_REGION,&r);
 r.slot=1; r.guest_phys_addr=0x300000; ioctl(vm,KVM_SET_USER_MEMORY_REGION,&r); /* move fails EINVAL? */
 r.slot=2; r.flags=KVM_MEM_READONLY; r.guest_phys_addr=0xfff00000; r.memory_size=0x100000; ioctl(vm,KVM_SET_USER_MEMORY_REGION,&r);
 r.slot=3; r.flags=0; r.guest_phys_addr=0x80000; r.memory_size=0x1000; ioctl(vm,KVM_SET_USER_MEMORY_REGION,&r); /* overlap -> EEXIST */
 r.slot=(1<<16)|4; r.guest_phys_addr=0x80000; ioctl(vm,KVM_SET_USER_MEMORY_REGION,&r);
 int efd=eventfd(0,0);
 struct kvm_ioeventfd io={.addr=0xd0000000,.len=4,.fd=efd}; ioctl(vm,KVM_IOEVENTFD,&io);
 struct kvm_coalesced_mmio_zone z={.addr=0xa0000,.size=0x20000}; ioctl(vm,KVM_REGISTER_COALESCED_MMIO,&z);
 struct kvm_create_device d={.type=KVM_DEV_TYPE_ARM_VGIC_V3}; ioctl(vm,KVM_CREATE_DEVICE,&d);
 r.slot=0; r.flags=0; r.guest_phys_addr=0; r.memory_size=0; ioctl(vm,KVM_SET_USER_MEMORY_REGION,&r);
 int vm2=ioctl(kvm,KVM_CREATE_VM,0);
 r.slot=0; r.guest_phys_addr=0x100000; r.memory_size=0x100000; ioctl(vm2,KVM_SET_USER_MEMORY_REGION,&r);
 return 0;}
