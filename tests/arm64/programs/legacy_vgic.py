"""A small VMM the arm64 machine runs under `gpa-plan record`: the legacy vGICv2 calls, which
the probe never makes.

    python3.11 legacy_vgic.py SPEC.json

KVM_CREATE_VM of the spec's IPA size (KVM_VM_TYPE_ARM_IPA_SIZE), its memslots,
KVM_CREATE_IRQCHIP (arm64: kvm_vgic_create(KVM_DEV_TYPE_ARM_VGIC_V2), arch/arm64/kvm/arm.c),
its vCPUs, then each frame's address with KVM_ARM_SET_DEVICE_ADDR (kvm_set_legacy_vgic_v2_addr(),
arch/arm64/kvm/vgic/vgic-kvm-device.c). Prints, as JSON, every call's errno name (null when
KVM took it), in order: ``{"calls": [{"id", "call", "errno"}]}``. Runs on the probe's KVM layer
(``probe.kvm``), so it needs ``/`` on its path (PYTHONPATH=/).
"""

import json
import struct
import sys

from probe import kvm

KVM_CREATE_IRQCHIP = kvm.io(0x60)
ARM_DEVICE_ADDR = struct.Struct("<QQ")  # struct kvm_arm_device_addr: id, addr
KVM_ARM_SET_DEVICE_ADDR = kvm.iow(0xAB, ARM_DEVICE_ADDR.size)
KVM_ARM_DEVICE_VGIC_V2 = 0  # the id's device, bits 31:16 (KVM_ARM_DEVICE_ID_SHIFT)
ADDR_TYPES = {"dist": 0, "cpu": 1}  # KVM_VGIC_V2_ADDR_TYPE_DIST, _CPU: the id's bits 15:0


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    calls = []

    def record(step_id: str, call: str, refused: str | None) -> None:
        calls.append({"id": step_id, "call": call, "errno": refused})

    handle = kvm.Kvm()
    vm_fd = kvm.create_vm(handle, spec["pa_bits"])
    memory = []
    for slot in spec["memslots"]:
        memory.append(kvm.Memory(slot["size"]))
        refused = kvm.set_memslot(
            vm_fd, slot["slot"], 0, slot["base"], slot["size"], memory[-1].addr, False
        )
        record(slot["id"], "KVM_SET_USER_MEMORY_REGION", refused)
    record("irqchip", "KVM_CREATE_IRQCHIP", kvm.try_ioctl(vm_fd, KVM_CREATE_IRQCHIP))
    for n in range(spec["vcpus"]):
        record(f"vcpu{n}", "KVM_CREATE_VCPU", kvm.try_ioctl(vm_fd, kvm.KVM_CREATE_VCPU, n))
    for frame in spec["frames"]:
        device_id = (KVM_ARM_DEVICE_VGIC_V2 << 16) | ADDR_TYPES[frame["frame"]]
        request = ARM_DEVICE_ADDR.pack(device_id, frame["base"])
        refused = kvm.try_ioctl(vm_fd, KVM_ARM_SET_DEVICE_ADDR, request)
        record(frame["id"], "KVM_ARM_SET_DEVICE_ADDR", refused)
    json.dump({"calls": calls}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
