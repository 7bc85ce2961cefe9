"""A segment's line and its JSON entry list the first names of the regions under it and count
the rest, as a region does, found without walking the regions under each segment."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from unittest import mock

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from gpa_plan.arch import ARCHES
from gpa_plan.check.partition import partition, regions_within
from gpa_plan.check.run import load_layout
from gpa_plan.elf import placement
from gpa_plan.elf.program import Program, Segment
from tests.test_check_scale import CountingRegions
from tests.test_elf_over_device_cap import HEADER, PAGE, layouts, programs


@settings(max_examples=300, deadline=None)
@given(layouts(), programs(), st.sampled_from([1, 2, 3, 10]))
def test_segments_list_what_walking_their_regions_lists_up_to_the_cap(
    layout_text: str, found: tuple[Program, ...], cap: int
) -> None:
    with tempfile.TemporaryDirectory() as directory, mock.patch.object(
        placement, "MAX_REGION_NAMES", cap
    ):
        path = Path(directory) / "layout.yaml"
        path.write_text(layout_text)
        layout = load_layout(path).resolved
        regions = partition(layout, ARCHES["x86_64"])
        placed = placement.program_placements(found, layout, regions, "physical")
    for program, where in zip(found, placed, strict=True):
        for segment, place in zip(program.segments, where.segments, strict=True):
            under = regions_within(regions, segment.physical)
            names = list(dict.fromkeys(n for r in under for n in r.names))
            kinds = list(dict.fromkeys(r.kind for r in under))
            if segment.physical.end > layout.limit and "unbacked" not in kinds:
                kinds.append("unbacked")
            assert list(place.names) == names[:cap]
            assert place.more_names == max(len(names) - cap, 0)
            assert list(place.kinds) == kinds


def test_a_segment_over_thousands_of_devices_lists_ten_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    n = 3_000
    layout = tmp_path / "layout.yaml"
    layout.write_text(
        HEADER
        + "devices:\n"
        + "".join(
            f"  - {{name: d{i}, type: mmio, base: {(2 * i + 1) * PAGE:#x}, size: 4K}}\n"
            for i in range(n)
        )
    )
    loaded = load_layout(layout).resolved
    regions = CountingRegions(partition(loaded, ARCHES["x86_64"]))
    segments = tuple(Segment(i, 0, 0, 2 * (n + 1) * PAGE, 0, 6) for i in range(n))
    program = Program("guest.elf", ARCHES["x86_64"].elf_machine, segments)
    CountingRegions.reads = 0
    (placed,) = placement.program_placements((program,), loaded, regions, "physical")
    # Walking the regions under each segment would read n * 2n of them.
    assert CountingRegions.reads < 4 * len(regions) + 100 * n
    for place in placed.segments:
        assert place.names == tuple(f"d{i}" for i in range(10))
        assert place.more_names == n - 10


def test_text_and_json_say_how_many_more_names_a_segment_has(tmp_path: Path) -> None:
    from gpa_plan.cli import cli
    from tests.test_elf import TINY

    devices = "".join(
        f"  - {{name: d{i}, type: mmio, base: {0x4000_0000 + 8 * i:#x}, size: 1}}\n"
        for i in range(12)
    )
    layout = tmp_path / "layout.yaml"
    layout.write_text(
        "layout: 1\narch: arm64\npa_bits: 40\npage_size: 4K\ndevices:\n" + devices
    )
    runner = CliRunner()
    text = runner.invoke(cli, ["check", str(layout), "--elf", str(TINY)]).output
    assert "d0, d1, d2, d3, d4, d5, d6, d7, d8, d9 and 2 more" in text
    result = runner.invoke(cli, ["check", str(layout), "--elf", str(TINY), "--format", "json"])
    segments = json.loads(result.output)["results"][0]["programs"][0]["segments"]
    over = [s for s in segments if s.get("more_names")]
    assert over and all(s["more_names"] == 2 and len(s["regions"]) == 10 for s in over)
    assert all("more_names" not in s for s in segments if s not in over)
