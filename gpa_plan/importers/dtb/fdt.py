"""Read a flattened device tree blob into nodes and properties.

The format is the Devicetree Specification v0.4, chapter 5 (the layout dtc, libfdt and every
VMM write): a big-endian header, the memory reservation block, the structure block (a token
stream: FDT_BEGIN_NODE name, FDT_PROP len nameoff value, FDT_END_NODE, FDT_NOP, FDT_END) and
the strings block holding property names. Every offset and length is checked against the
blob before it is used; anything that does not fit raises `FdtError` saying what and where.

Versions 16 and 17 are read (17 is what dtc and VMMs write; 16 lacks ``size_dt_struct``).
Older versions name nodes by full path and are refused.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

FDT_MAGIC = 0xD00D_FEED
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9

# Devicetree Specification v0.4 section 5.2: magic, totalsize, off_dt_struct, off_dt_strings,
# off_mem_rsvmap, version, last_comp_version, boot_cpuid_phys, size_dt_strings (v3+),
# size_dt_struct (v17+).
_HEADER = struct.Struct(">10I")
_HEADER_V16_SIZE = 36
_RESERVE_ENTRY = struct.Struct(">QQ")
_U32 = struct.Struct(">I")
# Real trees nest a handful of levels; a bound keeps a hostile blob from exhausting anything.
# A node MAX_DEPTH levels below the root is read, one level deeper is refused.
MAX_DEPTH = 64


class FdtError(Exception):
    """The blob is not a device tree gpa-plan can read; the message says what is wrong."""


class Node(NamedTuple):
    """One device tree node: ``name`` with its unit address (``pl011@9000000``; the root's
    is empty), its ``path`` from the root, its properties (raw values) and its children."""

    name: str
    path: str
    props: dict[str, bytes]
    children: list[Node]

    def string(self, prop: str) -> str | None:
        """The property as one string, or None when absent or not a string."""
        values = self.strings(prop)
        return values[0] if values else None

    def strings(self, prop: str) -> list[str]:
        """The property as a string list (``compatible``), empty when absent or not text."""
        value = self.props.get(prop)
        if not value or not value.endswith(b"\0"):
            return []
        return [s.decode("utf-8", "replace") for s in value[:-1].split(b"\0")]


class DeviceTree(NamedTuple):
    root: Node
    # /memreserve/ entries: (address, size)
    reservations: tuple[tuple[int, int], ...]
    version: int


class _Header(NamedTuple):
    totalsize: int
    off_struct: int
    off_strings: int
    off_rsvmap: int
    version: int
    size_strings: int
    size_struct: int


def read_fdt(blob: bytes) -> DeviceTree:
    """The device tree in ``blob``; raises FdtError."""
    header = _read_header(blob)
    strings = _Strings(blob, header.off_strings, header.size_strings)
    root = _read_structure(blob, header.off_struct, header.size_struct, strings)
    reservations = _read_reservations(blob, header.off_rsvmap, header.totalsize)
    return DeviceTree(root, reservations, header.version)


def _read_header(blob: bytes) -> _Header:
    _check_magic(blob)
    if len(blob) < _HEADER_V16_SIZE:
        raise FdtError(f"truncated: {len(blob)} bytes, shorter than the FDT header")
    fields = _HEADER.unpack_from(blob.ljust(_HEADER.size, b"\0"))
    _, totalsize, off_struct, off_strings, off_rsvmap, version, last_comp = fields[:7]
    size_strings, size_struct = fields[8], fields[9]
    if version < 16 or last_comp > 17:
        raise FdtError(
            f"FDT version {version} (compatible with {last_comp}): gpa-plan reads versions 16 "
            "and 17, what dtc and VMMs write"
        )
    header_size = _HEADER.size if version >= 17 else _HEADER_V16_SIZE
    if totalsize < header_size:
        raise FdtError(f"the header's totalsize {totalsize} is smaller than the header itself")
    if totalsize > len(blob):
        raise FdtError(f"truncated: the header says {totalsize} bytes, the file has {len(blob)}")
    if version < 17:
        size_struct = totalsize - off_struct if off_struct <= totalsize else 0
    _check_block("structure block", off_struct, size_struct, header_size, totalsize)
    _check_block("strings block", off_strings, size_strings, header_size, totalsize)
    _check_block("memory reservation block", off_rsvmap, 0, header_size, totalsize)
    # Devicetree Specification v0.4 chapter 5: the structure block is 4-byte aligned, the memory
    # reservation block 8-byte aligned (its entries are pairs of 64-bit integers).
    if off_struct % 4 or off_rsvmap % 8:
        raise FdtError(
            f"misaligned blocks: structure at {off_struct:#x} (needs 4-byte alignment), "
            f"memory reservation at {off_rsvmap:#x} (needs 8-byte alignment)"
        )
    return _Header(
        totalsize, off_struct, off_strings, off_rsvmap, version, size_strings, size_struct
    )


def _check_magic(blob: bytes) -> None:
    if len(blob) < 4:
        raise FdtError(f"truncated: {len(blob)} bytes, too short for a device tree blob")
    (magic,) = _U32.unpack_from(blob)
    if magic == FDT_MAGIC:
        return
    if magic == int.from_bytes(FDT_MAGIC.to_bytes(4, "big"), "little"):
        raise FdtError("the magic is byte-swapped: the blob is little-endian, FDT is big-endian")
    if _looks_like_source(blob):
        raise FdtError(
            "this is device tree source (.dts text), not a blob: compile it first with "
            "`dtc -I dts -O dtb -o FILE.dtb FILE.dts`"
        )
    raise FdtError(
        f"not a device tree blob: magic {magic:#010x}, expected {FDT_MAGIC:#010x}; give the "
        "flattened tree the VMM writes (QEMU: `-machine virt,dumpdtb=FILE`)"
    )


def _looks_like_source(blob: bytes) -> bool:
    head = blob[:4096].lstrip()
    if head.startswith((b"/dts-v1/", b"/plugin/", b"/ {", b"/{", b"#include", b"//", b"/*")):
        return True
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return "{" in text and "};" in text


def _check_block(what: str, offset: int, size: int, start: int, totalsize: int) -> None:
    if offset < start or offset > totalsize or size > totalsize - offset:
        raise FdtError(
            f"the {what} ({offset:#x}, {size} bytes) is out of range: the blob's blocks lie "
            f"between {start:#x} and {totalsize:#x}"
        )


def _read_reservations(blob: bytes, offset: int, totalsize: int) -> tuple[tuple[int, int], ...]:
    entries: list[tuple[int, int]] = []
    while True:
        if offset + _RESERVE_ENTRY.size > totalsize:
            raise FdtError(
                "the memory reservation block runs past the end of the blob "
                "(no terminating empty entry)"
            )
        address, size = _RESERVE_ENTRY.unpack_from(blob, offset)
        if address == 0 and size == 0:
            return tuple(entries)
        entries.append((address, size))
        offset += _RESERVE_ENTRY.size


class _Strings:
    """Property names, looked up by their offset in the strings block."""

    def __init__(self, blob: bytes, offset: int, size: int) -> None:
        self._data = blob[offset : offset + size]
        self._cache: dict[int, str] = {}

    def name(self, nameoff: int, at: int) -> str:
        cached = self._cache.get(nameoff)
        if cached is not None:
            return cached
        if nameoff >= len(self._data):
            raise FdtError(
                f"property at offset {at:#x}: name offset {nameoff} is beyond the strings "
                f"block ({len(self._data)} bytes)"
            )
        end = self._data.find(b"\0", nameoff)
        if end < 0:
            raise FdtError(
                f"property at offset {at:#x}: its name at strings offset {nameoff} is "
                "unterminated (no NUL before the end of the strings block)"
            )
        name = self._data[nameoff:end].decode("utf-8", "replace")
        self._cache[nameoff] = name
        return name


class _Open(NamedTuple):
    """A node whose FDT_END_NODE has not been read yet, with the names of its children so far
    (a set, so that the duplicate check keeps a wide tree linear to read)."""

    node: Node
    offset: int
    child_names: set[str]


def _read_structure(blob: bytes, offset: int, size: int, strings: _Strings) -> Node:
    cursor = _Cursor(blob, offset, offset + size)
    stack: list[_Open] = []
    root: Node | None = None
    while True:
        at = cursor.pos
        token = cursor.u32("a token")
        if token == FDT_BEGIN_NODE:
            if root is not None:
                raise FdtError(f"a second root node at offset {at:#x}")
            stack.append(_Open(_begin_node(cursor, stack, at), at, set()))
        elif token == FDT_END_NODE:
            if not stack:
                raise FdtError(f"FDT_END_NODE at offset {at:#x} closes no node")
            done = stack.pop().node
            if not stack:
                root = done
        elif token == FDT_PROP:
            if not stack:
                raise FdtError(f"a property outside any node at offset {at:#x}")
            _read_property(cursor, stack[-1].node, strings, at)
        elif token == FDT_END:
            if stack:
                raise FdtError(
                    f"FDT_END at offset {at:#x} with {len(stack)} node(s) still open "
                    f"(innermost {stack[-1].node.path})"
                )
            if root is None:
                raise FdtError("the structure block has no root node")
            return root
        elif token != FDT_NOP:
            raise FdtError(f"unknown structure token {token:#x} at offset {at:#x}")


def _begin_node(cursor: _Cursor, stack: list[_Open], at: int) -> Node:
    name = cursor.cstring(f"the name of the node at offset {at:#x}")
    cursor.align4()
    if not stack:
        return Node("", "/", {}, [])
    parent, siblings = stack[-1].node, stack[-1].child_names
    if not name:
        raise FdtError(f"a node without a name at offset {at:#x} inside {parent.path}")
    # The stack holds the root and the node's ancestors: its length is the new node's depth
    # below the root.
    if len(stack) > MAX_DEPTH:
        raise FdtError(
            f"nodes nested deeper than {MAX_DEPTH} levels below the root at offset {at:#x}"
        )
    path = f"{parent.path.rstrip('/')}/{name}"
    if name in siblings:
        raise FdtError(f"node {path} appears twice (second at offset {at:#x})")
    siblings.add(name)
    node = Node(name, path, {}, [])
    parent.children.append(node)
    return node


def _read_property(cursor: _Cursor, node: Node, strings: _Strings, at: int) -> None:
    length = cursor.u32(f"the length of the property at offset {at:#x}")
    nameoff = cursor.u32(f"the name offset of the property at offset {at:#x}")
    name = strings.name(nameoff, at)
    value = cursor.take(length, f"the value of property {name!r} of {node.path}")
    cursor.align4()
    if name in node.props:
        raise FdtError(f"property {name!r} appears twice in {node.path}")
    node.props[name] = value


class _Cursor:
    """Reads the structure block, never past its end."""

    def __init__(self, blob: bytes, start: int, end: int) -> None:
        self.blob = blob
        self.pos = start
        self.end = end

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big")

    def take(self, length: int, what: str) -> bytes:
        if length > self.end - self.pos:
            raise FdtError(
                f"{what} runs past the end of the structure block "
                f"({length} bytes at offset {self.pos:#x}, block ends at {self.end:#x})"
            )
        data = self.blob[self.pos : self.pos + length]
        self.pos += length
        return data

    def cstring(self, what: str) -> str:
        end = self.blob.find(b"\0", self.pos, self.end)
        if end < 0:
            raise FdtError(f"{what} is unterminated (no NUL before the end of the block)")
        text = self.blob[self.pos : end].decode("utf-8", "replace")
        self.pos = end + 1
        return text

    def align4(self) -> None:
        self.pos = min(self.end, -(-self.pos // 4) * 4)
