"""`import dtb` on hostile trees: no quadratic work however many nodes share a name or a bus
has ranges. The work is counted, and the fast lookups are held to the plain scans they replace.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpa_plan.importers.dtb import import_dtb, mapping
from gpa_plan.importers.dtb.fdt import Node
from gpa_plan.importers.dtb.mapping import _LayoutBuilder, _Windows

WRITER = runpy.run_path(str(Path(__file__).parent / "data" / "import" / "dtb" / "make_dtbs.py"))
fdt_blob, u64s = WRITER["fdt_blob"], WRITER["u64s"]
ARM_CPUS = {
    "#address-cells": 1,
    "#size-cells": 0,
    "cpu@0": {"device_type": "cpu", "compatible": "arm,cortex-a57", "reg": 0},
}


def _first_match(entries: list[tuple[int, ...]], address: int) -> int | None:
    for child_base, parent_base, size in entries:
        if child_base <= address < child_base + size:
            return parent_base + (address - child_base)
    return None


_ENTRIES = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 1000), st.integers(0, 12)), max_size=8
)


@settings(max_examples=400, deadline=None)
@given(_ENTRIES)
def test_ranges_translate_through_the_first_entry_that_holds_the_address(
    entries: list[tuple[int, ...]],
) -> None:
    windows = _Windows(entries)
    for address in range(0, 56):
        assert windows.translate(address) == _first_match(entries, address), address


class _CountingSet(set[str]):
    lookups = 0

    def __contains__(self, item: object) -> bool:
        _CountingSet.lookups += 1
        return super().__contains__(item)


def test_nodes_of_one_name_get_suffixes_without_trying_every_taken_one() -> None:
    node = Node("uart@0", "/soc/uart@0", {}, [])
    builder = _LayoutBuilder(Node("", "/", {}, [node]))
    builder.names = _CountingSet()
    n = 2_000
    names = [builder._claim(node, None) for _ in range(n)]
    assert names[:3] == ["uart@0", "soc/uart@0", "soc/uart@0-2"]
    assert names[-1] == f"soc/uart@0-{n - 1}"
    # Trying "-2", "-3" ... again for each node made n * n / 2 lookups.
    assert _CountingSet.lookups < 4 * n


def test_children_of_a_bus_with_many_ranges_are_translated_without_rereading_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 1_000
    windows = [v for i in range(n) for v in (i * 0x1000, 0x1_0000_0000 + i * 0x1000, 0x1000)]
    bus: dict[str, object] = {
        "compatible": "simple-bus",
        "#address-cells": 2,
        "#size-cells": 2,
        "ranges": u64s(*windows),
    }
    for i in range(n):
        bus[f"dev@{i:x}"] = {"compatible": "ns16550a", "reg": u64s(i * 0x1000, 0x1000)}
    blob = fdt_blob({"#address-cells": 2, "#size-cells": 2, "cpus": ARM_CPUS, "soc": bus})
    records = []
    split = mapping._split

    def counting(value: bytes, cells: tuple[int, ...]) -> list[tuple[int, ...]] | None:
        found = split(value, cells)
        records.append(len(found or ()))
        return found

    monkeypatch.setattr(mapping, "_split", counting)
    devices = import_dtb(blob).document["devices"]
    assert [d["base"] for d in devices] == [0x1_0000_0000 + i * 0x1000 for i in range(n)]
    # Reading the bus's n ranges again for each of its n children read n * n records.
    assert sum(records) < 4 * n
