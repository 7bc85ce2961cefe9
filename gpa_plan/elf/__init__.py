"""Guest programs (ELF executables) and where their loadable segments land in a layout.

``program`` reads an ELF file into a `Program`; ``placement`` maps its segments onto a
partitioned layout the way a VMM kernel loader (at ``p_paddr``) or KVM selftests'
``kvm_vm_elf_load`` (at ``p_vaddr``, backed by the code memslot) would. Both are imported only
when a program is given: a check without `--elf` does not load them.
"""

from __future__ import annotations

PHYSICAL = "physical"
SELFTESTS = "selftests"
ELF_MODES = (PHYSICAL, SELFTESTS)
# sizeof(Elf64_Phdr), sizeof(Elf64_Shdr): the e_phentsize and e_shentsize KVM selftests'
# elfhdr_get() asserts.
ELF64_HEADER_SIZES = (56, 64)
