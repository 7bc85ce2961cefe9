"""Random layouts through the planner, checked against a brute-force model of placement.

Layouts are arm64 with a 32-bit IPA space (the smallest KVM accepts) and 4 KiB pages. Every
fixed entry, window edge and size is a whole number of 1 MiB cells, and each cell is wholly
free or wholly taken, so the lowest and highest fits always start on a cell boundary (an
off-cell fit slides down or up to the cell edge, which holds the same alignment when align
divides 1 MiB, and all larger aligns are whole cells). The brute force therefore tries every
aligned cell start of the window, 4,096 candidates at most, against the cells free at that
moment, in the documented order: `auto` memslots, then devices, each in file order.

Fixed entries never overlap one another, so every error `check` reports would be the planner's.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from gpa_plan.check.findings import ERROR
from gpa_plan.check.run import check_file
from gpa_plan.layout.models import parse_layout
from gpa_plan.plan.allocate import PlanError, allocate
from gpa_plan.plan.emit import to_yaml
from gpa_plan.plan.place import plan_layout

MiB = 1 << 20
CELL = MiB
PA_BITS = 32
CELLS = (1 << PA_BITS) // CELL
PAGE = 4096
ALIGNS = (None, 4096, 64 << 10, MiB, 2 * MiB, 16 * MiB, 256 * MiB)


@dataclass(frozen=True)
class AutoEntry:
    section: str  # "memslots" or "devices"
    name: str
    size_cells: int
    align: int | None
    window_cells: tuple[int, int] | None
    policy: str | None

    def as_yaml_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "base": "auto", "size": self.size_cells * CELL}
        if self.section == "devices":
            data["type"] = "mmio"
        if self.align is not None:
            data["align"] = self.align
        if self.window_cells is not None:
            data["within"] = [self.window_cells[0] * CELL, self.window_cells[1] * CELL]
        if self.policy is not None:
            data["policy"] = self.policy
        return data

    @property
    def effective_align(self) -> int:
        return self.align or PAGE


@st.composite
def fixed_entries(draw: st.DrawFn) -> dict[str, list[dict[str, Any]]]:
    """Disjoint fixed memslots, mmio devices and reserved ranges, on cell boundaries."""
    cuts = sorted(draw(st.sets(st.integers(0, CELLS), max_size=12)))
    sections: dict[str, list[dict[str, Any]]] = {"memslots": [], "devices": [], "reserved": []}
    for i, (start, end) in enumerate(itertools.pairwise(cuts)):
        if i % 2 or not draw(st.booleans()):
            continue  # leave a gap between fixed entries most of the time
        kind = draw(st.sampled_from(["memslots", "devices", "reserved"]))
        entry: dict[str, Any] = {
            "name": f"fixed{i}",
            "base": start * CELL,
            "size": (end - start) * CELL,
        }
        if kind == "memslots":
            entry["readonly"] = draw(st.booleans())
        elif kind == "devices":
            entry["type"] = "mmio"
        sections[kind].append(entry)
    return sections


@st.composite
def auto_entries(draw: st.DrawFn) -> list[AutoEntry]:
    entries = []
    for i in range(draw(st.integers(1, 8))):
        size = draw(st.one_of(st.integers(1, 16), st.integers(17, 3000)))
        window = None
        if draw(st.booleans()):
            low = draw(st.integers(0, CELLS - 1))
            high = draw(st.integers(low + 1, CELLS))
            window = (low, high)
        entries.append(
            AutoEntry(
                section=draw(st.sampled_from(["memslots", "devices"])),
                name=f"auto{i}",
                size_cells=size,
                align=draw(st.sampled_from(ALIGNS)),
                window_cells=window,
                policy=draw(st.sampled_from([None, "first", "last"])),
            )
        )
    return entries


def brute_force(free: list[bool], entry: AutoEntry) -> int | None:
    """The address `first`/`last` must return, trying every aligned cell start."""
    low, high = entry.window_cells or (0, CELLS)
    step = max(entry.effective_align // CELL, 1)
    # prefix[i] = taken cells before cell i
    prefix = [0]
    for is_free in free:
        prefix.append(prefix[-1] + (not is_free))
    first_start = -(-low // step) * step
    fits = [
        start
        for start in range(first_start, high - entry.size_cells + 1, step)
        if prefix[start + entry.size_cells] == prefix[start]
    ]
    if not fits:
        return None
    return (fits[-1] if entry.policy == "last" else fits[0]) * CELL


def layout_data(fixed: dict[str, list[dict[str, Any]]], autos: list[AutoEntry]) -> dict[str, Any]:
    data: dict[str, Any] = {"layout": 1, "arch": "arm64", "pa_bits": PA_BITS}
    for section in ("memslots", "devices", "reserved"):
        entries = list(fixed[section])
        entries += [a.as_yaml_data() for a in autos if a.section == section]
        data[section] = entries
    return data


@settings(max_examples=400, deadline=None)
@given(fixed=fixed_entries(), autos=auto_entries())
def test_plan_matches_brute_force_and_checks_clean(
    fixed: dict[str, list[dict[str, Any]]], autos: list[AutoEntry]
) -> None:
    layout = parse_layout(layout_data(fixed, autos))
    plan = plan_layout(layout)

    free = [True] * CELLS
    for section in ("memslots", "devices", "reserved"):
        for entry in fixed[section]:
            for cell in range(entry["base"] // CELL, (entry["base"] + entry["size"]) // CELL):
                free[cell] = False
    failed = {getattr(layout, section)[index].name for _, (section, index) in plan.errors}
    ordered = [a for a in autos if a.section == "memslots"] + [
        a for a in autos if a.section == "devices"
    ]
    for entry in ordered:
        expected = brute_force(free, entry)
        event(f"{entry.policy or 'first'}: {'no room' if expected is None else 'placed'}")
        if expected is None:
            assert entry.name in failed
            assert entry.name not in plan.placements
            continue
        got = plan.placements[entry.name]
        assert got == expected, entry
        # Said outright, though equality with the brute force implies it:
        assert got % entry.effective_align == 0
        low, high = entry.window_cells or (0, CELLS)
        assert low * CELL <= got and got + entry.size_cells * CELL <= high * CELL
        for cell in range(got // CELL, got // CELL + entry.size_cells):
            free[cell] = False
    assert failed == {a.name for a in autos} - set(plan.placements)

    event(f"layout {'with no-room entries' if plan.errors else 'fully placed'}")
    if plan.errors:
        try:
            allocate(layout)
        except PlanError as err:
            assert len(err.problems) == len(plan.errors)
        else:
            raise AssertionError("allocate() placed what plan_layout() could not")
        return
    allocation = allocate(layout)
    assert allocation.placements == plan.placements
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "resolved.yaml"
        out.write_text(to_yaml(allocation.document(), allocation.notes, "random"))
        (result,) = check_file(out)
    errors = [f for f in result.findings if f.severity == ERROR]
    assert result.valid and errors == []
