"""Guest programs: the loadable segments of an ELF executable, read with pyelftools."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gpa_plan.elf import ELF64_HEADER_SIZES
from gpa_plan.inputs import MAX_INPUT_BYTES, InputError, open_input, os_reason
from gpa_plan.ranges import Range, align_down, align_up, human_size

# include/uapi/linux/elf.h: p_flags bits.
PF_X = 0x1
PF_W = 0x2
PF_R = 0x4

ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True, slots=True)
class Segment:
    """One PT_LOAD program header. ``index`` is its position among all program headers, the
    number ``readelf -l`` shows and kvm_vm_elf_load() reports as "segment idx"."""

    index: int
    vaddr: int
    paddr: int
    memsz: int
    filesz: int
    flags: int

    @property
    def readable(self) -> bool:
        return bool(self.flags & PF_R)

    @property
    def writable(self) -> bool:
        return bool(self.flags & PF_W)

    @property
    def executable(self) -> bool:
        return bool(self.flags & PF_X)

    @property
    def flag_letters(self) -> str:
        """``R``, ``RW``, ``RX``, ``RWX`` ...; ``-`` for a segment with no permission bits."""
        bits = (("R", self.readable), ("W", self.writable), ("X", self.executable))
        return "".join(letter for letter, present in bits if present) or "-"

    @property
    def physical(self) -> Range:
        """``[p_paddr, p_paddr + p_memsz)``: where a VMM kernel loader writes the segment."""
        return Range(self.paddr, self.paddr + self.memsz)

    def virtual_pages(self, page_size: int) -> Range:
        """The guest pages kvm_vm_elf_load() maps for the segment: p_vaddr rounded down and
        p_vaddr + p_memsz rounded up to ``page_size`` (tools/testing/selftests/kvm/lib/elf.c,
        seg_vstart and seg_vend)."""
        return Range(
            align_down(self.vaddr, page_size), align_up(self.vaddr + self.memsz, page_size)
        )


@dataclass(frozen=True)
class Program:
    """A guest executable: its ELF machine (``EM_AARCH64``, ``EM_X86_64`` ...) and the PT_LOAD
    segments that occupy memory, in program-header order."""

    path: str
    machine: str
    segments: tuple[Segment, ...]
    # What KVM selftests' loader checks besides the segments (elfhdr_get() in lib/elf.c):
    elf_class: int = 64  # 32 or 64
    little_endian: bool = True
    # Program-header indexes of PT_LOADs with p_memsz 0, which occupy no memory.
    empty_loads: tuple[int, ...] = ()
    # e_phentsize and e_shentsize: the sizes of one program and one section header.
    header_sizes: tuple[int, int] = ELF64_HEADER_SIZES


class ProgramError(Exception):
    """A file that cannot be used as a guest program. An ELF file has no lines: the error is
    located at the file itself, line 1, column 1."""

    line = 1
    column = 1

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def load_program(path: str | Path) -> Program:
    """Read the PT_LOAD segments of an ELF executable; raises ProgramError when the file is
    not ELF, is truncated or corrupt, or has nothing to load, and InputError
    (gpa_plan.inputs) when it cannot be read: missing, unreadable, or not a regular file.

    Only the ELF header and the program headers are read, so a program of any size (a kernel
    with its debug information) is read in bounded time and memory.
    """
    name = str(path)
    with open_input(name) as stream:
        try:
            return _parse(name, stream)
        except OSError as err:
            raise InputError(name, os_reason(err)) from None


def load_programs(paths: Iterable[str | Path]) -> tuple[Program | ProgramError, ...]:
    """Each file as a Program, or the ProgramError that says why it cannot be one; raises
    InputError for the first file that cannot be read."""
    loaded: list[Program | ProgramError] = []
    for path in paths:
        try:
            loaded.append(load_program(path))
        except ProgramError as err:
            loaded.append(err)
    return tuple(loaded)


def split_programs(
    items: Sequence[Program | ProgramError],
) -> tuple[tuple[Program, ...], tuple[ProgramError, ...]]:
    """The readable programs and the load errors of ``load_programs()``'s answer."""
    programs = tuple(p for p in items if isinstance(p, Program))
    errors = tuple(p for p in items if isinstance(p, ProgramError))
    return programs, errors


def _parse(name: str, stream: BinaryIO) -> Program:
    magic = stream.read(len(ELF_MAGIC))
    if magic != ELF_MAGIC:
        raise ProgramError(name, "not an ELF file: it does not start with the ELF magic \\x7fELF")
    stream.seek(0)
    # pyelftools costs more to import than a whole small check; only --elf needs it.
    from elftools.common.exceptions import ELFError
    from elftools.construct import ConstructError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(stream)
        machine = str(elf["e_machine"])
        headers = _program_headers(name, elf)
        loads = [(i, h) for i, h in enumerate(headers) if h["p_type"] == "PT_LOAD"]
        segments = tuple(_segment(i, h) for i, h in loads if h["p_memsz"] > 0)
        empty = tuple(i for i, h in loads if h["p_memsz"] == 0)
    except (ELFError, ConstructError, ValueError) as err:
        raise ProgramError(name, f"truncated or corrupt ELF file ({err})") from None
    if not segments:
        kind = str(elf["e_type"])
        raise ProgramError(name, f"no loadable (PT_LOAD) segment in this {kind} file")
    sizes = (int(elf["e_phentsize"]), int(elf["e_shentsize"]))
    return Program(name, machine, segments, elf.elfclass, elf.little_endian, empty, sizes)


def _program_headers(name: str, elf: Any) -> list[Any]:
    """The program headers as they are in the file. Not pyelftools' segment objects: one of
    those per PT_DYNAMIC looks through every section header, which a crafted file turns into
    hours of work. The table is bounded as any input is (a sparse file can claim 2**32 - 1
    headers through PN_XNUM); Linux's own loader refuses one larger than 64 KiB."""
    count = elf.num_segments()
    size = int(elf["e_phentsize"])
    if count * size > MAX_INPUT_BYTES:
        raise ProgramError(
            name,
            f"its {count} program headers of {size} bytes each are more than the "
            f"{human_size(MAX_INPUT_BYTES)} gpa-plan reads from one input; no loader accepts "
            "such a program",
        )
    return [elf._get_segment_header(i) for i in range(count)]


def _segment(index: int, header: Any) -> Segment:
    return Segment(
        index=index,
        vaddr=int(header["p_vaddr"]),
        paddr=int(header["p_paddr"]),
        memsz=int(header["p_memsz"]),
        filesz=int(header["p_filesz"]),
        flags=int(header["p_flags"]),
    )
