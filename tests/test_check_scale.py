"""`check` does no quadratic work and prints in proportion to its input, whatever the layout.

Hostile shapes: ranges that each overlap every later one (a staircase), thousands of devices on
one page, a big device over thousands of regions, many ucall pages over many small devices,
thousands of reserved ranges. Work is counted where it can be (region lookups, names listed);
the one end-to-end run has a wall-clock guard that a quadratic version exceeds many times over.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import SupportsIndex, overload

import pytest
from click.testing import CliRunner

from gpa_plan.arch import ARCHES
from gpa_plan.check.findings import ERROR, MAX_FINDINGS_PER_OBJECT, WARNING, Finding, cap_per_object
from gpa_plan.check.partition import MAX_REGION_NAMES, Region, partition
from gpa_plan.check.rules import RULES, RuleContext
from gpa_plan.check.run import check_file, load_layout
from gpa_plan.cli import cli

HEADER = "layout: 1\narch: x86_64\npa_bits: 48\npage_size: 4K\n"
PAGE = 0x1000


def write(tmp_path: Path, *sections: tuple[str, list[str]]) -> Path:
    text = HEADER + "".join(
        f"{name}:\n" + "".join(f"  - {{{entry}}}\n" for entry in entries)
        for name, entries in sections
    )
    path = tmp_path / "layout.yaml"
    path.write_text(text)
    return path


def one_page_devices(n: int) -> list[str]:
    return [f"name: d{i}, type: mmio, base: 0x1000, size: 4K" for i in range(n)]


RAM = ("memslots", ["name: ram, base: 0x0, size: 1G"])


# --- a region names at most MAX_REGION_NAMES objects --------------------------------------------


def test_a_region_lists_the_first_names_and_counts_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, RAM, ("devices", one_page_devices(25)))
    document = json.loads(CliRunner().invoke(cli, ["check", str(path), "--format", "json"]).output)
    crowded = [r for r in document["results"][0]["regions"] if r["start"] == PAGE]
    assert crowded[0]["names"] == ["ram", *(f"d{i}" for i in range(MAX_REGION_NAMES - 1))]
    assert crowded[0]["more_names"] == 26 - MAX_REGION_NAMES
    # Regions with few names keep the document's usual shape.
    assert all("more_names" not in r for r in document["results"][0]["regions"] if r != crowded[0])
    text = CliRunner().invoke(cli, ["check", str(path)]).output
    assert f"d{MAX_REGION_NAMES - 2} and {26 - MAX_REGION_NAMES} more" in text


def test_a_staircase_lists_names_in_proportion_to_its_ranges(tmp_path: Path) -> None:
    n = 1_500  # each device overlaps every later one: n * n / 2 claims in all
    staircase = [
        f"name: d{i}, type: mmio, base: {(i + 1) * PAGE:#x}, size: {n * PAGE:#x}" for i in range(n)
    ]
    path = write(tmp_path, ("devices", staircase))
    (result,) = check_file(path)
    assert len(result.regions) <= 2 * n + 1
    assert max(len(r.names) for r in result.regions) == MAX_REGION_NAMES
    assert max(r.more_names for r in result.regions) == n - MAX_REGION_NAMES
    # Listed names plus counted ones give every claim: nothing is lost, only not listed.
    middle = next(r for r in result.regions if r.start == n * PAGE)
    assert len(middle.names) + middle.more_names == n
    assert middle.names == tuple(f"d{i}" for i in range(MAX_REGION_NAMES))
    output = CliRunner().invoke(cli, ["check", str(path), "--format", "json"]).output
    assert len(output) < 20 * path.stat().st_size


# --- findings that name one object are capped -----------------------------------------------------


def _finding(rule: str, line: int, objects: tuple[str, ...], severity: str = ERROR) -> Finding:
    return Finding(rule, severity, f"finding at {line}", "f.yaml", line, 1, objects)


def test_after_the_cap_one_finding_counts_the_rest_at_the_first_left_out() -> None:
    cap = MAX_FINDINGS_PER_OBJECT
    found = [_finding("r", i + 1, (f"x{i}", "hub"), WARNING) for i in range(cap + 5)]
    found[-1] = _finding("r", cap + 5, ("x", "hub"), ERROR)
    kept = cap_per_object(found)
    assert kept[:cap] == found[:cap]
    (summary,) = kept[cap:]
    assert (summary.rule, summary.line, summary.objects) == ("r", cap + 1, ("hub",))
    # An error among those left out keeps the result an error.
    assert summary.severity == ERROR
    assert summary.message.startswith("5 more r findings naming 'hub'")


def test_the_cap_counts_each_rule_and_object_on_its_own() -> None:
    cap = MAX_FINDINGS_PER_OBJECT
    found = sorted(
        [_finding("a", i, ("hub",)) for i in range(cap)]
        + [_finding("b", i, ("hub",)) for i in range(cap)]
        + [_finding("a", cap + i, (f"x{i}",)) for i in range(cap)],
        key=Finding.sort_key,
    )
    assert cap_per_object(found) == found


@pytest.mark.parametrize("form", ["text", "json", "github", "sarif"])
def test_every_format_shows_the_same_capped_findings(tmp_path: Path, form: str) -> None:
    n = 40
    path = write(tmp_path, RAM, ("devices", one_page_devices(n)))
    result = CliRunner().invoke(cli, ["check", str(path), "--format", form])
    assert result.exit_code == 1
    cap = MAX_FINDINGS_PER_OBJECT
    # device-overlap: d1.. each name d0; device-shadowed: d0.. each name ram.
    left_out = ((n - 1 - cap, "device-overlap", "d0"), (n - cap, "device-shadowed", "ram"))
    for count, rule, name in left_out:
        assert f"{count} more {rule} findings naming '{name}'" in result.output
    if form == "json":
        findings = json.loads(result.output)["results"][0]["findings"]
    elif form == "sarif":
        findings = json.loads(result.output)["runs"][0]["results"]
    else:
        lines = result.output.splitlines()
        findings = [x for x in lines if "device-overlap" in x or "device-shadowed" in x]
    assert len(findings) == 2 * cap + 2


# --- overlap rules report what KVM would refuse --------------------------------------------------


def test_a_memslot_overlapping_only_a_refused_one_is_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        (
            "memslots",
            [
                "name: a, base: 0x0, size: 64K",
                "name: b, base: 0x8000, size: 128K",  # overlaps a: refused
                "name: c, base: 0x18000, size: 64K",  # overlaps only b, which KVM never took
                "name: d, base: 0x4000, size: 4K",  # overlaps a
                "name: e, base: 0x20000, size: 4K",  # overlaps c, accepted
            ],
        ),
    )
    (result,) = check_file(path)
    assert [(f.rule, f.objects) for f in result.findings] == [
        ("memslot-overlap", ("b", "a")),
        ("memslot-overlap", ("d", "a")),
        ("memslot-overlap", ("e", "c")),
    ]


def test_each_device_overlapping_an_earlier_one_is_reported_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        (
            "devices",
            [
                "name: late-big, type: mmio, base: 0x0, size: 1M",
                *(f"name: s{i}, type: mmio, base: {i * PAGE:#x}, size: 4K" for i in range(3)),
                "name: apart, type: mmio, base: 0x20_0000, size: 4K",
            ],
        ),
    )
    (result,) = check_file(path)
    assert [(f.rule, f.objects) for f in result.findings] == [
        ("device-overlap", (f"s{i}", "late-big")) for i in range(3)
    ]


# --- rules look up regions in O(log n) ------------------------------------------------------------


class CountingRegions(list[Region]):
    """The partition, counting every region a rule reads."""

    reads = 0

    @overload
    def __getitem__(self, index: SupportsIndex) -> Region: ...
    @overload
    def __getitem__(self, index: slice) -> list[Region]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> Region | list[Region]:
        CountingRegions.reads += 1
        return super().__getitem__(index)

    def __iter__(self) -> Iterator[Region]:
        for region in super().__iter__():
            CountingRegions.reads += 1
            yield region


def region_reads(path: Path, rule: str) -> tuple[int, int, list[Finding]]:
    loaded = load_layout(path)
    arch = ARCHES["x86_64"]
    regions = CountingRegions(partition(loaded.resolved, arch))
    ctx = RuleContext(str(path), loaded.doc, loaded.resolved, arch, regions)
    CountingRegions.reads = 0
    check = RULES[rule].check
    assert check is not None
    found = list(check(ctx))
    return CountingRegions.reads, len(regions), found


def test_device_shadowed_reads_each_region_a_few_times(tmp_path: Path) -> None:
    n = 2_000
    # n small devices make 2n regions inside the RAM memslot; n big devices cover them all.
    small = [f"name: s{i}, type: mmio, base: {(2 * i + 1) * PAGE:#x}, size: 4K" for i in range(n)]
    big = [f"name: b{i}, type: mmio, base: 0x0, size: {4 * n * PAGE:#x}" for i in range(n)]
    path = write(tmp_path, RAM, ("devices", small + big))
    reads, regions, found = region_reads(path, "device-shadowed")
    assert len(found) == 2 * n
    # A scan of every region under each big device would read n * 2n regions.
    assert reads < 4 * regions + 2 * n * 30


def test_ucall_not_io_reads_each_region_a_few_times(tmp_path: Path) -> None:
    n = 1_000
    # Byte-sized devices cut the ucall page into 2n regions, all of them exits for writes but
    # the last, which RAM backs; n ucall pages share the page.
    tiny = [f"name: t{i}, type: mmio, base: {0x10_0000 + 2 * i:#x}, size: 1" for i in range(n)]
    ucalls = [f"name: u{i}, type: ucall, base: 0x10_0000" for i in range(n)]
    memslot = ("memslots", ["name: ram, base: 0x10_0ff0, size: 16"])
    path = write(tmp_path, memslot, ("devices", tiny + ucalls))
    loaded_reads, regions, found = region_reads(path, "ucall-not-io")
    assert len(found) == n
    assert loaded_reads < 4 * regions + n * 30


# --- end to end: every hostile shape at once, under a guard --------------------------------------


def test_hostile_shapes_together_are_checked_in_bounded_time(tmp_path: Path) -> None:
    n = 15_000
    low = 1 << 40
    # A huge reserved range, then n small ones inside it below the devices: each device's
    # lookup used to walk back over every small one before it reached the huge one.
    reserved = [f"name: huge, base: {low:#x}, size: {low:#x}"] + [
        f"name: r{i}, base: {low + i * 2 * PAGE:#x}, size: 4K" for i in range(n)
    ]
    # Staircases: each range overlaps every later one.
    devices = [
        f"name: d{i}, type: mmio, base: {low + (1 << 30) + i * PAGE:#x}, size: {n * PAGE:#x}"
        for i in range(n)
    ]
    memslots = [
        f"name: m{i}, base: {2 * low + i * PAGE:#x}, size: {n * PAGE:#x}" for i in range(n)
    ]
    path = write(tmp_path, ("memslots", memslots), ("devices", devices), ("reserved", reserved))
    # About 3 s here; a quadratic step took minutes at this size.
    done = subprocess.run(
        [sys.executable, "-m", "gpa_plan", "check", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert len(done.stdout) < 20 * path.stat().st_size
    rules = {f["rule"] for f in json.loads(done.stdout)["results"][0]["findings"]}
    assert rules == {"memslot-overlap", "device-overlap", "reserved-overlap"}


# --- the planner ----------------------------------------------------------------------------------


def test_auto_ucall_pages_find_the_code_memslot_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpa_plan.plan import place

    calls = []
    numbered = place.assign_slot_ids
    monkeypatch.setattr(
        place, "assign_slot_ids", lambda layout: calls.append(1) or numbered(layout)
    )
    n = 300
    memslots = [f"name: m{i}, base: {i * 2 * PAGE:#x}, size: 4K" for i in range(n)]
    ucalls = [f"name: u{i}, type: ucall, base: auto" for i in range(n)]
    path = write(tmp_path, ("memslots", memslots), ("devices", ucalls))
    (result,) = check_file(path)
    assert result.findings == ()
    # Numbering every memslot for each ucall page made the plan quadratic.
    assert len(calls) == 1


# --- guest programs -------------------------------------------------------------------------------


def test_segments_sharing_pages_are_found_without_comparing_every_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gpa_plan.check.program_rules import _loader_refusals
    from gpa_plan.elf.program import Program, Segment
    from gpa_plan.ranges import Range

    calls = []
    intersection = Range.intersection
    monkeypatch.setattr(
        Range, "intersection", lambda self, other: calls.append(1) or intersection(self, other)
    )
    n = 2_000
    # Each segment runs one page into the next one's first page.
    segments = tuple(Segment(i, i * PAGE, i * PAGE, 2 * PAGE, 0, 4) for i in range(n))
    refusals = list(_loader_refusals(Program("guest.elf", "EM_AARCH64", segments), PAGE))
    assert len(refusals) == n - 1
    assert f"with segment {n - 2}, mapped before it" in refusals[-1]
    # Comparing each segment with every earlier one made n * n / 2 comparisons.
    assert len(calls) < 4 * n


def test_elf_rules_look_up_regions_without_scanning_them_per_segment(tmp_path: Path) -> None:
    from gpa_plan.elf import PHYSICAL
    from gpa_plan.elf.program import Program, Segment

    n = 1_000
    # Alternating read-only and read-write memslots with holes between: 2n regions and more.
    memslots = [
        f"name: m{i}, base: {2 * i * PAGE:#x}, size: 4K" + (", readonly: true" if i % 2 else "")
        for i in range(n)
    ]
    device = "name: u, type: mmio, base: 0x1000, size: 4K"
    path = write(tmp_path, ("memslots", memslots), ("devices", [device]))
    loaded = load_layout(path)
    arch = ARCHES["x86_64"]
    regions = CountingRegions(partition(loaded.resolved, arch))
    # n writable segments, each over every region.
    segments = tuple(Segment(i, 0, 0, 2 * n * PAGE, 0, 6) for i in range(n))
    program = Program("guest.elf", arch.elf_machine, segments)
    ctx = RuleContext(
        str(path), loaded.doc, loaded.resolved, arch, regions, (), (program,), (), PHYSICAL
    )
    messages = {}
    for rule in ("elf-unbacked", "elf-readonly", "elf-over-device"):
        CountingRegions.reads = 0
        check = RULES[rule].check
        assert check is not None
        found = list(check(ctx))
        # elf-over-device caps its findings as it makes them: ten for the device, then one.
        capped = MAX_FINDINGS_PER_OBJECT + 1 if rule == "elf-over-device" else n
        assert len(found) == capped, rule
        # Reading every region for each segment would be n * len(regions).
        assert CountingRegions.reads < 6 * len(regions) + 100 * n, rule
        messages[rule] = found[0].message
    message = messages["elf-unbacked"]
    # n - 1 holes (the device takes one): ten listed, the rest counted.
    assert f"and {n - 11} more unbacked ranges are outside every memslot" in message


# --- validation -----------------------------------------------------------------------------------


def test_unknown_keys_of_a_huge_mapping_are_located_without_rescanning_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpa_plan.layout import loader
    from gpa_plan.layout.errors import LayoutError
    from gpa_plan.layout.validate import validate_layout

    n = 3_000
    path = tmp_path / "layout.yaml"
    extra = "".join(f"    k{i}: 1\n" for i in range(n))
    path.write_text(
        "layout: 1\narch: arm64\ndevices:\n  - name: d\n    type: mmio\n    base: 0\n"
        f"    size: 4K\n{extra}"
    )
    document = loader.load_file(path)
    calls = []
    scalar = loader._scalar_or_none
    monkeypatch.setattr(loader, "_scalar_or_none", lambda node: calls.append(1) or scalar(node))
    with pytest.raises(LayoutError) as caught:
        validate_layout(document)
    problems = caught.value.problems
    assert len(problems) == n
    assert (problems[-1].line, problems[-1].column) == (7 + n, 5)
    # Scanning the mapping's keys for each unknown key read n * n / 2 of them.
    assert len(calls) < 10 * n
