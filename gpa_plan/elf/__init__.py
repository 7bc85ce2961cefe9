"""Guest programs (ELF executables) and where their loadable segments land in a layout.

``program`` reads an ELF file into a `Program`; ``placement`` maps its segments onto a
partitioned layout the way a VMM kernel loader (at ``p_paddr``) or KVM selftests'
``kvm_vm_elf_load`` (at ``p_vaddr``, backed by the code memslot) would.
"""

from __future__ import annotations

from gpa_plan.elf.program import Program, ProgramError, Segment, load_program, load_programs

__all__ = ["Program", "ProgramError", "Segment", "load_program", "load_programs"]
