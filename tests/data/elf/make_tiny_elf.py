"""Write tiny-aarch64.elf: a minimal, deterministic AArch64 guest executable.

No compiler needed: the ELF64 header, two PT_LOAD program headers and eight bytes of code are
packed with struct. Run ``python3 tests/data/elf/make_tiny_elf.py`` to regenerate it; the test
suite checks that the committed file equals what this script builds.

Layout of the program (virtual addresses at a typical KVM selftests link address, physical
ones in QEMU virt's RAM at 1 GiB):

    phdr 0  PT_LOAD R+X  p_vaddr 0x0040_0000  p_paddr 0x4000_0000  filesz = memsz = 0xb8
            (the headers, then `wfi; b .-4` at the entry point 0x0040_00b0)
    phdr 1  PT_LOAD R+W  p_vaddr 0x0041_00b8  p_paddr 0x4001_00b8  filesz 8, memsz 0x2000
            (an 8-byte counter, then bss)
"""

from __future__ import annotations

import struct
from pathlib import Path

EM_AARCH64 = 183
ET_EXEC = 2
PT_LOAD = 1
PF_X, PF_W, PF_R = 1, 2, 4

EHDR_SIZE = 64
PHDR_SIZE = 56
ALIGN = 0x1_0000

TEXT_VADDR = 0x0040_0000
TEXT_PADDR = 0x4000_0000
DATA_VADDR = 0x0041_0000
DATA_PADDR = 0x4001_0000
DATA_MEMSZ = 0x2000

# A64: wfi; b .-4  (wait for an interrupt, forever)
CODE = struct.pack("<II", 0xD503207F, 0x17FFFFFF)
DATA = struct.pack("<Q", 0)


def _ehdr(entry: int, phnum: int) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # ELFCLASS64, LSB, EV_CURRENT, SYSV
    return ident + struct.pack(
        "<HHIQQQIHHHHHH",
        ET_EXEC,
        EM_AARCH64,
        1,  # e_version
        entry,
        EHDR_SIZE,  # e_phoff
        0,  # e_shoff: no section headers
        0,  # e_flags
        EHDR_SIZE,
        PHDR_SIZE,
        phnum,
        64,  # e_shentsize: sizeof(Elf64_Shdr), which kvm_vm_elf_load's elfhdr_get() asserts
        0,  # e_shnum
        0,  # e_shstrndx
    )


def _phdr(flags: int, offset: int, vaddr: int, paddr: int, filesz: int, memsz: int) -> bytes:
    return struct.pack("<IIQQQQQQ", PT_LOAD, flags, offset, vaddr, paddr, filesz, memsz, ALIGN)


def build() -> bytes:
    code_offset = EHDR_SIZE + 2 * PHDR_SIZE
    data_offset = code_offset + len(CODE)
    text_size = data_offset  # the text segment starts at file offset 0, headers included
    text = _phdr(PF_R | PF_X, 0, TEXT_VADDR, TEXT_PADDR, text_size, text_size)
    data = _phdr(
        PF_R | PF_W,
        data_offset,
        DATA_VADDR + data_offset,  # p_vaddr = p_offset modulo p_align
        DATA_PADDR + data_offset,
        len(DATA),
        DATA_MEMSZ,
    )
    return _ehdr(TEXT_VADDR + code_offset, 2) + text + data + CODE + DATA


def main() -> None:
    Path(__file__).with_name("tiny-aarch64.elf").write_bytes(build())


if __name__ == "__main__":
    main()
