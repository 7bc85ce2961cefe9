"""Behaviour of the guest-physical address allocator, checked against a brute-force model."""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpa_plan.plan.allocator import (
    AddressAllocator,
    AllocationError,
    Occupant,
    Policy,
    _Gap,
)
from gpa_plan.ranges import Range

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


# -- exact examples ---------------------------------------------------------------------


def test_first_policy_returns_lowest_fitting_address() -> None:
    alloc = AddressAllocator(1 << 32)
    assert alloc.allocate(4 * KiB, 4 * KiB, label="a") == Range(0, 0x1000)
    assert alloc.allocate(4 * KiB, 4 * KiB, label="b") == Range(0x1000, 0x2000)


def test_last_policy_returns_highest_fitting_address() -> None:
    alloc = AddressAllocator(1 << 20)
    assert alloc.allocate(4 * KiB, 4 * KiB, policy=Policy.LAST, label="a") == Range(
        0xF_F000, 0x10_0000
    )
    assert alloc.allocate(0x800, 4 * KiB, policy=Policy.LAST, label="b") == Range(
        0xF_E000, 0xF_E800
    )


def test_first_policy_skips_the_unaligned_head_of_a_gap() -> None:
    alloc = AddressAllocator(1 << 20)
    alloc.occupy(Range(0, 0x1001), "boot")
    assert alloc.allocate(4 * KiB, 4 * KiB, label="a") == Range(0x2000, 0x3000)
    # The skipped head [0x1001, 0x2000) stays free for a request that fits it.
    assert alloc.allocate(16, 16, label="b") == Range(0x1010, 0x1020)


def test_last_policy_skips_the_unaligned_tail_of_a_gap() -> None:
    alloc = AddressAllocator(1 << 20)
    alloc.occupy(Range(0xF_FFFF, 0x10_0000), "tail")
    assert alloc.allocate(64 * KiB, 64 * KiB, policy=Policy.LAST, label="a") == Range(
        0xE_0000, 0xF_0000
    )


def test_large_alignment_passes_over_long_but_misaligned_gaps() -> None:
    alloc = AddressAllocator(1 << 24)
    # Gaps of 96 KiB starting 32 KiB past every 128 KiB boundary: none holds a 64 KiB
    # range at a 128 KiB boundary, except the open space above the last one.
    for base in range(0, 0x40_0000, 0x2_0000):
        alloc.occupy(Range(base, base + 0x8000), f"pad{base:x}")
    assert alloc.allocate(64 * KiB, 128 * KiB, label="big") == Range(0x40_0000, 0x41_0000)
    assert alloc.allocate(64 * KiB, 32 * KiB, label="small") == Range(0x8000, 0x1_8000)


def test_alignment_beyond_the_limit_only_admits_address_zero() -> None:
    alloc = AddressAllocator(0x1_0000)
    assert alloc.allocate(16, 1 << 50, label="a") == Range(0, 16)
    with pytest.raises(AllocationError):
        alloc.allocate(16, 1 << 17, label="b")
    assert alloc.allocate(16, 1 << 15, label="c") == Range(0x8000, 0x8010)


def test_window_limits_where_the_range_goes() -> None:
    alloc = AddressAllocator(1 << 32)
    window = Range(0x1_0000, 0x2_0000)
    assert alloc.allocate(4 * KiB, 4 * KiB, window=window, label="a") == Range(0x1_0000, 0x1_1000)
    assert alloc.allocate(4 * KiB, 4 * KiB, window=window, policy=Policy.LAST, label="b") == Range(
        0x1_F000, 0x2_0000
    )


def test_unaligned_window_edges_are_rounded_inwards() -> None:
    alloc = AddressAllocator(1 << 32)
    window = Range(0x1_0001, 0x2_0FFF)
    assert alloc.allocate(4 * KiB, 4 * KiB, window=window, label="a") == Range(0x1_1000, 0x1_2000)
    assert alloc.allocate(4 * KiB, 4 * KiB, window=window, policy=Policy.LAST, label="b") == Range(
        0x1_F000, 0x2_0000
    )


def test_window_reaching_past_the_limit_is_cut_at_the_limit() -> None:
    alloc = AddressAllocator(1 << 20)
    got = alloc.allocate(
        4 * KiB, 4 * KiB, window=Range(0xF_0000, 0x20_0000), policy=Policy.LAST, label="a"
    )
    assert got == Range(0xF_F000, 0x10_0000)


def test_free_space_is_the_complement_of_overlapping_occupied_ranges() -> None:
    alloc = AddressAllocator(0x1_0000)
    alloc.occupy(Range(0x1000, 0x3000), "ram")
    alloc.occupy(Range(0x2000, 0x5000), "flash")  # overlaps ram: allowed
    alloc.occupy(Range(0x2800, 0x2900), "inside")  # wholly inside both
    alloc.occupy(Range(0x8000, 0x9000), "uart")
    alloc.occupy(Range(0x9000, 0xA000), "rtc")  # touches uart
    assert list(alloc.free_ranges()) == [
        Range(0, 0x1000),
        Range(0x5000, 0x8000),
        Range(0xA000, 0x1_0000),
    ]
    assert alloc.allocate(0x2000, 0x1000, label="dev") == Range(0x5000, 0x7000)


def test_occupy_spanning_several_gaps_removes_them_all() -> None:
    alloc = AddressAllocator(0x1_0000)
    for base in range(0x1000, 0x9000, 0x2000):
        alloc.occupy(Range(base, base + 0x1000), f"r{base:x}")
    alloc.occupy(Range(0x800, 0x8800), "wide")
    assert list(alloc.free_ranges()) == [Range(0, 0x800), Range(0x8800, 0x1_0000)]


def test_occupied_range_outside_the_space_is_recorded_but_frees_nothing() -> None:
    alloc = AddressAllocator(0x1_0000)
    alloc.occupy(Range(0xF000, 0x2_0000), "high")
    alloc.occupy(Range(0x3_0000, 0x4_0000), "beyond")
    assert list(alloc.free_ranges()) == [Range(0, 0xF000)]
    assert alloc.occupied() == [
        Occupant(Range(0xF000, 0x2_0000), "high"),
        Occupant(Range(0x3_0000, 0x4_0000), "beyond"),
    ]


def test_allocated_range_is_occupied_under_its_label() -> None:
    alloc = AddressAllocator(1 << 20)
    got = alloc.allocate(8 * KiB, 4 * KiB, label="virtio0")
    assert not alloc.is_free(got)
    assert alloc.is_free(Range(got.end, got.end + 1))
    assert alloc.occupied() == [Occupant(got, "virtio0")]


def test_is_free_is_false_outside_the_space() -> None:
    alloc = AddressAllocator(0x1000)
    assert alloc.is_free(Range(0, 0x1000))
    assert not alloc.is_free(Range(0, 0x1001))
    assert not alloc.is_free(Range(-1, 0x10))
    assert not alloc.is_free(Range(0x1000, 0x2000))


def test_filling_the_space_exactly_then_failing() -> None:
    alloc = AddressAllocator(0x4000)
    got = [alloc.allocate(0x1000, 0x1000, label=f"p{i}") for i in range(4)]
    assert got == [Range(i * 0x1000, (i + 1) * 0x1000) for i in range(4)]
    assert list(alloc.free_ranges()) == []
    with pytest.raises(AllocationError):
        alloc.allocate(1, 1, label="none")


@pytest.mark.parametrize(
    ("size", "align"),
    [(0, 1), (-4096, 4096), (4096, 0), (4096, 3), (4096, -4096), (4096, 0x3000)],
)
def test_invalid_size_or_alignment_is_a_value_error(size: int, align: int) -> None:
    with pytest.raises(ValueError):
        AddressAllocator(1 << 20).allocate(size, align, label="x")


def test_invalid_limit_window_and_ranges_are_value_errors() -> None:
    with pytest.raises(ValueError):
        AddressAllocator(0)
    alloc = AddressAllocator(1 << 20)
    with pytest.raises(ValueError):
        alloc.allocate(16, 16, window=Range(0x100, 0x100), label="x")
    with pytest.raises(ValueError):
        alloc.occupy(Range(0x200, 0x100), "backwards")
    with pytest.raises(ValueError):
        alloc.is_free(Range(0x100, 0x100))


# -- failure messages -------------------------------------------------------------------


def _three_occupant_layout() -> AddressAllocator:
    alloc = AddressAllocator(1 << 32)
    alloc.occupy(Range(0, 0x0800_0000), "ram")
    alloc.occupy(Range(0x0801_0000, 0x0900_0000), "gic")
    alloc.occupy(Range(0x0900_0000, 0x1000_0000), "uart")
    return alloc


def test_failure_names_size_alignment_window_occupants_and_largest_gap() -> None:
    alloc = _three_occupant_layout()
    window = Range(0, 0x1000_0000)
    with pytest.raises(AllocationError) as caught:
        alloc.allocate(128 * KiB, 64 * KiB, window=window, label="pcie")
    err = caught.value
    assert str(err) == (
        "no free 64 KiB-aligned range of 128 KiB in [0x0000_0000, 0x1000_0000): "
        "3 occupied ranges cover it: ram [0x0000_0000, 0x0800_0000), "
        "gic [0x0801_0000, 0x0900_0000), uart [0x0900_0000, 0x1000_0000); "
        "largest free gap 64 KiB at 0x0800_0000"
    )
    assert err.message == str(err)
    assert (err.size, err.align, err.window, err.policy) == (
        128 * KiB,
        64 * KiB,
        window,
        Policy.FIRST,
    )
    assert [o.label for o in err.occupants] == ["ram", "gic", "uart"]
    assert err.largest_gap == Range(0x0800_0000, 0x0801_0000)


def test_failure_does_not_occupy_anything() -> None:
    alloc = _three_occupant_layout()
    before = list(alloc.free_ranges())
    with pytest.raises(AllocationError):
        alloc.allocate(128 * KiB, 64 * KiB, window=Range(0, 0x1000_0000), label="pcie")
    assert list(alloc.free_ranges()) == before
    assert "pcie" not in [o.label for o in alloc.occupied()]


def test_failure_lists_three_occupants_by_address_and_counts_the_rest() -> None:
    alloc = AddressAllocator(1 << 20)
    for i in reversed(range(5)):
        alloc.occupy(Range(i * 0x1000, i * 0x1000 + 0xF00), f"dev{i}")
    with pytest.raises(AllocationError) as caught:
        alloc.allocate(0x200, 0x100, window=Range(0, 0x5000), policy=Policy.LAST, label="x")
    message = str(caught.value)
    assert "5 occupied ranges cover it: dev0 [" in message
    assert "dev1 [" in message and "dev2 [" in message
    assert "dev3" not in message and "dev4" not in message
    assert "and 2 more" in message
    assert "largest free gap 256 bytes at 0x0000_0f00" in message
    assert caught.value.policy is Policy.LAST


def test_failure_blames_alignment_when_a_long_enough_gap_exists() -> None:
    alloc = AddressAllocator(1 << 20)
    alloc.occupy(Range(0, 0x8000), "low")
    alloc.occupy(Range(0x3_0000, 0x10_0000), "high")
    with pytest.raises(AllocationError) as caught:
        alloc.allocate(128 * KiB, 128 * KiB, label="x")
    message = str(caught.value)
    assert "largest free gap 160 KiB at 0x0000_8000" in message
    assert "no free gap holds 128 KiB at a 128 KiB-aligned start" in message


def test_failure_blames_a_window_smaller_than_the_request() -> None:
    alloc = AddressAllocator(1 << 20)
    with pytest.raises(AllocationError) as caught:
        alloc.allocate(128 * KiB, 4 * KiB, window=Range(0, 0x1_0000), label="x")
    assert str(caught.value) == (
        "no free 4 KiB-aligned range of 128 KiB in [0x0000_0000, 0x0001_0000): "
        "the window is only 64 KiB"
    )


def test_failure_blames_a_window_outside_the_space() -> None:
    alloc = AddressAllocator(1 << 20)
    with pytest.raises(AllocationError) as caught:
        alloc.allocate(16, 16, window=Range(0x20_0000, 0x30_0000), label="x")
    message = str(caught.value)
    assert "in [0x0020_0000, 0x0030_0000)" in message
    assert "outside the address space [0x0000_0000, 0x0010_0000)" in message
    assert caught.value.largest_gap is None


def test_failure_mentions_clipping_and_a_full_window() -> None:
    alloc = AddressAllocator(1 << 20)
    alloc.occupy(Range(0xF_0000, 0x10_0000), "top")
    with pytest.raises(AllocationError) as caught:
        alloc.allocate(16, 16, window=Range(0xF_0000, 0x20_0000), label="x")
    message = str(caught.value)
    assert "clipped to the address space: [0x000f_0000, 0x0010_0000)" in message
    assert "1 occupied range covers it: top [0x000f_0000, 0x0010_0000)" in message
    assert "nothing in it is free" in message


def test_unaligned_request_message_has_no_alignment_qualifier() -> None:
    alloc = AddressAllocator(16)
    alloc.occupy(Range(0, 16), "all")
    with pytest.raises(AllocationError) as caught:
        alloc.allocate(4, 1, label="x")
    assert str(caught.value).startswith("no free range of 4 bytes in ")


# -- properties against a brute-force model -----------------------------------------------


@dataclass(frozen=True)
class Occupy:
    start: int
    end: int


@dataclass(frozen=True)
class Allocate:
    size: int
    align: int
    window: Range | None
    policy: Policy


class Model:
    """Byte map of the space: 1 where occupied. Searches try every aligned start."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = bytearray(limit)

    def occupy(self, start: int, end: int) -> None:
        start, end = max(start, 0), min(end, self.limit)
        if start < end:
            self.taken[start:end] = b"\x01" * (end - start)

    def fits(self, start: int, size: int) -> bool:
        return self.taken.find(1, start, start + size) == -1

    def search(self, op: Allocate) -> int | None:
        lo, hi = 0, self.limit
        if op.window is not None:
            lo, hi = max(lo, op.window.start), min(hi, op.window.end)
        first = (lo + op.align - 1) // op.align * op.align
        starts = range(first, hi - op.size + 1, op.align)
        ordered = starts if op.policy is Policy.FIRST else reversed(starts)
        return next((s for s in ordered if self.fits(s, op.size)), None)

    def free_runs(self) -> list[Range]:
        runs: list[Range] = []
        pos = self.taken.find(0)
        while pos != -1:
            end = self.taken.find(1, pos)
            end = self.limit if end == -1 else end
            runs.append(Range(pos, end))
            pos = self.taken.find(0, end)
        return runs


def _addresses(limit: int, grain: int) -> st.SearchStrategy[int]:
    """Mostly multiples of ``grain``, sometimes any address, sometimes just outside."""
    return st.one_of(
        st.integers(0, limit // grain).map(lambda x: x * grain),
        st.integers(-grain, limit + grain),
    )


@st.composite
def _occupy_ops(draw: st.DrawFn, limit: int, grain: int, max_len: int) -> Occupy:
    start = draw(_addresses(limit, grain))
    length = draw(
        st.one_of(
            st.integers(1, max_len // grain).map(lambda x: x * grain), st.integers(1, max_len)
        )
    )
    return Occupy(start, start + length)


@st.composite
def _allocate_ops(
    draw: st.DrawFn, limit: int, grain: int, max_size: int, aligns: list[int]
) -> Allocate:
    size = draw(st.integers(1, max_size // grain)) * grain
    align = draw(st.sampled_from(aligns))
    window: Range | None = None
    if draw(st.booleans()):
        a, b = draw(_addresses(limit, grain)), draw(_addresses(limit, grain))
        if a != b:
            window = Range(min(a, b), max(a, b))
    return Allocate(size, align, window, draw(st.sampled_from(Policy)))


def _run_against_model(
    limit: int, ops: list[Occupy | Allocate], probes: list[tuple[int, int]]
) -> AddressAllocator:
    alloc = AddressAllocator(limit)
    model = Model(limit)
    placed: list[Range] = []
    for i, op in enumerate(ops):
        if isinstance(op, Occupy):
            alloc.occupy(Range(op.start, op.end), f"fixed{i}")
            model.occupy(op.start, op.end)
            continue
        expected = model.search(op)
        if expected is None:
            with pytest.raises(AllocationError) as caught:
                alloc.allocate(op.size, op.align, window=op.window, policy=op.policy, label="x")
            assert caught.value.size == op.size and caught.value.align == op.align
            continue
        got = alloc.allocate(
            op.size, op.align, window=op.window, policy=op.policy, label=f"auto{i}"
        )
        assert got == Range(expected, expected + op.size)
        # Independent of the model's search: the range is aligned, in the window and
        # the space, and touches nothing occupied or handed out before.
        assert got.start % op.align == 0
        assert got.start >= 0 and got.end <= limit
        if op.window is not None:
            assert op.window.covers(got)
        assert model.fits(got.start, got.size)
        assert not any(got.overlaps(other) for other in placed)
        placed.append(got)
        model.occupy(got.start, got.end)
    assert list(alloc.free_ranges()) == model.free_runs()
    for start, length in probes:
        expected_free = start >= 0 and start + length <= limit and model.fits(start, length)
        assert alloc.is_free(Range(start, start + length)) == expected_free
    return alloc


LIMIT = 1 << 16
GRAIN = 16


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(
        st.one_of(
            _occupy_ops(LIMIT, GRAIN, 0x2000),
            _allocate_ops(LIMIT, GRAIN, 0x1000, [1 << k for k in range(4, 18)]),
        ),
        max_size=60,
    ),
    probes=st.lists(st.tuples(st.integers(-16, LIMIT), st.integers(1, 0x1000)), max_size=10),
)
def test_allocations_match_brute_force_search(
    ops: list[Occupy | Allocate], probes: list[tuple[int, int]]
) -> None:
    _run_against_model(LIMIT, ops, probes)


@settings(max_examples=250, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            _occupy_ops(256, 1, 64),
            _allocate_ops(256, 1, 64, [1, 2, 4, 8, 16, 32, 64, 128]),
        ),
        max_size=40,
    ),
    probes=st.lists(st.tuples(st.integers(-2, 258), st.integers(1, 64)), max_size=10),
)
def test_byte_granular_allocations_match_brute_force_search(
    ops: list[Occupy | Allocate], probes: list[tuple[int, int]]
) -> None:
    _run_against_model(256, ops, probes)


def _check_tree(alloc: AddressAllocator) -> None:
    """The gap tree is a treap in address order whose cached per-alignment maxima are
    what a direct computation over each subtree gives."""
    root = alloc._root
    if root is None:
        return
    assert root.parent is None
    aligns = alloc._aligns
    in_order: list[_Gap] = []
    stack: list[tuple[_Gap, bool]] = [(root, False)]
    room: dict[int, list[int]] = {}
    while stack:
        node, children_done = stack.pop()
        if children_done:
            # Room after the first aligned address, computed without the tree's formula.
            best = []
            for a in aligns:
                first_aligned = node.start + (a - node.start % a) % a
                best.append(node.end - first_aligned)
            for child in (node.left, node.right):
                if child is not None:
                    assert child.parent is node
                    assert child.priority <= node.priority
                    best = [max(x, y) for x, y in zip(best, room[id(child)], strict=True)]
            room[id(node)] = best
            assert node.room == best
            continue
        stack.append((node, True))
        for child in (node.left, node.right):
            if child is not None:
                stack.append((child, False))
    node_or_none: _Gap | None = root
    walk: list[_Gap] = []
    while walk or node_or_none is not None:
        while node_or_none is not None:
            walk.append(node_or_none)
            node_or_none = node_or_none.left
        top = walk.pop()
        in_order.append(top)
        node_or_none = top.right
    for gap in in_order:
        assert gap.start < gap.end
    for before, after in itertools.pairwise(in_order):
        assert before.end < after.start  # disjoint and never touching: gaps are maximal


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            _occupy_ops(LIMIT, GRAIN, 0x800),
            _allocate_ops(LIMIT, GRAIN, 0x400, [16, 64, 256, 1024]),
        ),
        max_size=80,
    )
)
def test_gap_tree_stays_ordered_heap_shaped_and_annotated(
    ops: list[Occupy | Allocate],
) -> None:
    alloc = AddressAllocator(LIMIT)
    for i, op in enumerate(ops):
        if isinstance(op, Occupy):
            alloc.occupy(Range(op.start, op.end), f"fixed{i}")
        else:
            with contextlib.suppress(AllocationError):
                alloc.allocate(op.size, op.align, window=op.window, policy=op.policy, label="x")
        _check_tree(alloc)


def test_many_scattered_allocations_keep_the_tree_shallow() -> None:
    # 4000 allocations in separate 1 MiB windows leave about 4000 gaps; a treap over
    # them should stay within a small multiple of log2(4000) ~ 12 levels.
    alloc = AddressAllocator(1 << 40)
    for i in range(4000):
        base = (i * 7919 % 4000) * MiB
        alloc.allocate(4 * KiB, 4 * KiB, window=Range(base + 64 * KiB, base + MiB), label="p")
    assert sum(1 for _ in alloc.free_ranges()) == 4001
    _check_tree(alloc)
    depth = 0
    frontier = [alloc._root]
    while frontier:
        depth += 1
        frontier = [c for n in frontier if n is not None for c in (n.left, n.right) if c]
    assert depth <= 48
    assert alloc.allocate(GiB, GiB, policy=Policy.LAST, label="top") == Range(
        (1 << 40) - GiB, 1 << 40
    )
