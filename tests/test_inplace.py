"""`allocate --in-place` rewrites a layout safely: the result always loads to the same plan,
runs on one file take turns, and an edit made meanwhile is never overwritten."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gpa_plan.check.run import check_file
from gpa_plan.cli import cli
from gpa_plan.layout.loader import load_text
from gpa_plan.layout.validate import validate_layout
from gpa_plan.plan import allocate_file
from gpa_plan.plan.allocate import allocate
from gpa_plan.plan.inplace import InPlaceError, verify

LAYOUT = "layout: 1\narch: arm64\nmemslots:\n  - name: ram\n    base: auto\n    size: 1G\n"
RAM = "layout: 1\narch: arm64\nmemslots:\n  - name: ram\n    base: 0x0000_0000\n    size: 1G\n"
UCALL_SLOT = (
    "  - name: ucall-slot\n    slot: 1\n    base: 0x4000_0000\n    size: 4096\n"
    "    readonly: true\n"
)
UCALL_DEVICE = "devices:\n  - name: ucall\n    type: ucall\n    base: 0x4000_0000\n"
CHANGED = (
    "layout.yaml: error[in-place] the file changed while gpa-plan worked on it (saved by an "
    "editor or another program); it was left as it is now: run gpa-plan again\n"
)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def in_place(*args: str) -> Result:
    return CliRunner().invoke(cli, ["allocate", "--in-place", *args], catch_exceptions=False)


def entries(path: str) -> list[str]:
    return sorted(os.listdir(os.path.dirname(path) or "."))


def assert_checks_clean(path: str) -> None:
    (result,) = check_file(path)
    assert result.valid
    assert result.findings == ()


# -- source shapes the rewriter handles ---------------------------------------------------


def indented(text: str) -> str:
    return "".join("  " + line for line in text.splitlines(keepends=True))


BLOCK_SCALAR = LAYOUT.replace("  - name: ram\n", "  - size: 1G\n").replace(
    "    size: 1G\n", "    name: |-\n      ram\n"
)
SHAPES = {
    # source -> what --in-place --ucall-memslot makes of it
    "cr line ends": (LAYOUT.replace("\n", "\r"), (RAM + UCALL_SLOT + UCALL_DEVICE).replace(
        "\n", "\r"
    )),
    "nel line ends": (LAYOUT.replace("\n", "\x85"), (RAM + UCALL_SLOT + UCALL_DEVICE).replace(
        "\n", "\x85"
    )),
    "last entry a block scalar": (
        BLOCK_SCALAR + "# reserved ranges\nreserved: []\n",
        BLOCK_SCALAR.replace("auto", "0x0000_0000")
        + UCALL_SLOT
        + "# reserved ranges\nreserved: []\n"
        + UCALL_DEVICE,
    ),
    "last entry a folded scalar before blank lines": (
        BLOCK_SCALAR.replace("|-", ">") + "\n\n",
        BLOCK_SCALAR.replace("|-", ">").replace("auto", "0x0000_0000")
        + UCALL_SLOT
        + "\n\n"
        + UCALL_DEVICE,
    ),
    "document end marker": (LAYOUT + "...\n", RAM + UCALL_SLOT + UCALL_DEVICE + "...\n"),
    "no line break at the end of the file": (
        LAYOUT.rstrip("\n"),
        RAM + UCALL_SLOT + UCALL_DEVICE,
    ),
    **{
        f"last entry a block scalar {header} with no line break at the end of the file": (
            BLOCK_SCALAR.replace("|-", header).rstrip("\n"),
            # "ram" stays "ram": with a line break after it, `|` would make it "ram\n"
            BLOCK_SCALAR.replace("|-", stripped).replace("auto", "0x0000_0000")
            + UCALL_SLOT
            + UCALL_DEVICE,
        )
        for header, stripped in (("|", "|-"), (">", ">-"), ("|+", "|-"), ("|2", "|2-"))
    },
    "document indented as a whole": (
        indented(LAYOUT),
        indented(RAM + UCALL_SLOT + UCALL_DEVICE),
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_in_place_rewrites_each_source_shape_into_a_file_that_checks_clean(
    workdir: Path, shape: str
) -> None:
    source, expected = SHAPES[shape]
    Path("layout.yaml").write_bytes(source.encode())
    result = in_place("--ucall-memslot", "layout.yaml")
    assert result.exit_code == 0, result.output
    assert Path("layout.yaml").read_bytes().decode() == expected
    assert_checks_clean("layout.yaml")


def test_a_kept_block_scalar_keeps_its_trailing_lines(workdir: Path) -> None:
    source = BLOCK_SCALAR.replace("|-", "|+") + "\n"
    Path("layout.yaml").write_text(source)
    assert in_place("--ucall-memslot", "layout.yaml").exit_code == 0
    after = Path("layout.yaml").read_text()
    assert after == source.replace("auto", "0x0000_0000") + UCALL_SLOT + UCALL_DEVICE
    assert_checks_clean("layout.yaml")
    assert load_text(after, "layout.yaml").data["memslots"][0]["name"] == "ram\n\n"


def test_an_empty_list_in_an_indented_document_gets_entries_at_its_indentation(
    workdir: Path,
) -> None:
    source = indented(LAYOUT + "devices: []  # none yet\n")
    Path("layout.yaml").write_text(source)
    assert in_place("--ucall", "layout.yaml").exit_code == 0
    assert Path("layout.yaml").read_text() == indented(
        RAM + UCALL_DEVICE.replace("devices:\n", "devices:   # none yet\n")
    )
    assert_checks_clean("layout.yaml")


def test_a_flow_style_document_cannot_take_new_entries(workdir: Path) -> None:
    source = "{layout: 1, arch: arm64, memslots: [{name: ram, base: auto, size: 1G}]}\n"
    Path("layout.yaml").write_text(source)
    result = in_place("--ucall", "layout.yaml")
    assert result.exit_code == 1
    assert result.stderr == (
        "layout.yaml: error[in-place] the layout is one flow-style mapping ({...}); add "
        "'ucall' by hand or write it block-style, then run again\n"
    )
    assert Path("layout.yaml").read_text() == source


# -- the guard: nothing is written that does not load to the same plan -----------------------


def test_a_shared_auto_anchor_is_refused_and_the_file_left_as_it_was(workdir: Path) -> None:
    source = (
        "layout: 1\narch: arm64\nmemslots:\n  - {name: a, base: &x auto, size: 1G}\n"
        "  - {name: b, base: *x, size: 1G}\n"
    )
    Path("layout.yaml").write_text(source)
    result = in_place("layout.yaml")
    assert result.exit_code == 1
    assert result.stderr == (
        "layout.yaml: error[in-place] cannot fill in the `auto` values of this file in place "
        "(it would not load: line 5, column 21: `*x` is an alias, and no anchor `&x` comes before "
        "it; define the anchor first, or quote the value if the `*` is meant as text); the file is "
        "left as it was: "
        "fill them in by hand, or write the resolved layout to another file with -o\n"
    )
    assert Path("layout.yaml").read_text() == source
    assert entries("layout.yaml") == ["layout.yaml"]


def test_a_rewrite_that_breaks_the_file_is_never_written(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("layout.yaml").write_text(LAYOUT)
    monkeypatch.setattr(allocate_file, "rewrite", lambda text, doc, allocation: text + "  x\n")
    result = in_place("layout.yaml")
    assert result.exit_code == 1
    assert "(it would not load: line 8, column 1:" in result.stderr
    assert Path("layout.yaml").read_text() == LAYOUT
    assert entries("layout.yaml") == ["layout.yaml"]


def planned(text: str) -> allocate_file.Allocation:
    return allocate(validate_layout(load_text(text, "layout.yaml")), ucall=True)


@pytest.mark.parametrize(
    ("rewritten", "why"),
    [
        (RAM + "devices:\n- name: ucall\n  type: ucall\n base: 0x4000_0000\n", "would not load"),
        (RAM + UCALL_DEVICE.replace("0x4000_0000", "auto"), "`auto` would be left in device "
                                                              "'ucall'"),
        (RAM + UCALL_DEVICE.replace("0x4000_0000", "0x5000_0000"), "would not resolve to the "
                                                                     "same plan"),
        (RAM.replace("base: 0x0000_0000", "slot: auto\n    base: 0x0000_0000") + UCALL_DEVICE,
         "`auto` would be left in memslot 'ram'"),
    ],
)
def test_verify_refuses_text_that_does_not_load_the_same_plan(rewritten: str, why: str) -> None:
    with pytest.raises(InPlaceError, match=why):
        verify(rewritten, "layout.yaml", planned(LAYOUT))
    verify(RAM + UCALL_DEVICE, "layout.yaml", planned(LAYOUT))  # the right text passes


# -- concurrent runs and edits -----------------------------------------------------------


def edit_during_rewrite(monkeypatch: pytest.MonkeyPatch, edit: object) -> None:
    real = allocate_file.rewrite

    def rewrite_while_edited(*args: object) -> str:
        edit()  # type: ignore[operator]
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(allocate_file, "rewrite", rewrite_while_edited)


@pytest.mark.parametrize("how", ["written in place", "saved by rename"])
def test_an_edit_saved_while_gpa_plan_works_is_kept_and_the_run_refused(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    Path("layout.yaml").write_text(LAYOUT)
    edited = LAYOUT + "# the user's edit\n"

    def edit() -> None:
        if how == "written in place":
            with open("layout.yaml", "r+") as file:
                file.write(edited)
        else:
            Path("layout.yaml.new").write_text(edited)
            os.replace("layout.yaml.new", "layout.yaml")

    edit_during_rewrite(monkeypatch, edit)
    result = in_place("layout.yaml")
    assert result.exit_code == 1
    assert result.stderr == CHANGED
    assert Path("layout.yaml").read_text() == edited
    assert entries("layout.yaml") == ["layout.yaml"]


def test_a_link_pointed_elsewhere_while_gpa_plan_works_leaves_both_files_alone(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("v1.yaml").write_text(LAYOUT)
    Path("v2.yaml").write_text(RAM)
    Path("layout.yaml").symlink_to("v1.yaml")

    def point_elsewhere() -> None:
        os.remove("layout.yaml")
        Path("layout.yaml").symlink_to("v2.yaml")

    edit_during_rewrite(monkeypatch, point_elsewhere)
    result = in_place("layout.yaml")
    assert result.exit_code == 1
    assert result.stderr == CHANGED
    assert (Path("v1.yaml").read_text(), Path("v2.yaml").read_text()) == (LAYOUT, RAM)
    assert entries("layout.yaml") == ["layout.yaml", "v1.yaml", "v2.yaml"]


def gpa_plan(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gpa_plan", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_until_blocked_on_a_lock(run: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until /proc/locks lists ``run`` as waiting for a lock (its `->` lines)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = Path("/proc/locks").read_text().splitlines()
        if any("->" in line and line.split()[-4] == str(run.pid) for line in waiting):
            return
        if run.poll() is not None:
            pytest.fail(f"gpa-plan finished without waiting for the lock: {run.communicate()}")
        time.sleep(0.02)
    run.kill()
    pytest.fail("gpa-plan never waited for the lock")


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_a_run_waits_for_the_lock_and_then_plans_on_the_file_as_it_is(workdir: Path) -> None:
    Path("layout.yaml").write_text(LAYOUT)
    with open("layout.yaml", "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        run = gpa_plan("allocate", "--in-place", "--ucall", "layout.yaml")
        try:
            wait_until_blocked_on_a_lock(run)
            # What a run holding the lock does: replace the file by rename. The waiting run
            # must notice it locked a file that is no longer there, and lock the new one.
            Path("layout.yaml.new").write_text(LAYOUT + "# written by the run before\n")
            os.replace("layout.yaml.new", "layout.yaml")
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
        _, err = run.communicate(timeout=60)
    assert (run.returncode, err) == (0, b"")
    assert Path("layout.yaml").read_text() == (
        RAM + "# written by the run before\n" + UCALL_DEVICE
    )
    assert entries("layout.yaml") == ["layout.yaml"]


def test_parallel_runs_take_turns_and_none_loses_anothers_work(workdir: Path) -> None:
    # --ucall adds the ucall device; --ucall-memslot adds it and a memslot over it. In any
    # order, one after another, the file ends with one of each; a run that planned on a
    # stale copy would drop the memslot another run added.
    Path("layout.yaml").write_text(LAYOUT)
    runs = [
        gpa_plan("allocate", "--in-place", option, "layout.yaml")
        for option in ["--ucall", "--ucall-memslot"] * 4
    ]
    results = [(run.wait(timeout=60), run.communicate()[1]) for run in runs]
    assert results == [(0, b"")] * len(runs)
    assert Path("layout.yaml").read_text() == RAM + UCALL_SLOT + UCALL_DEVICE
    assert entries("layout.yaml") == ["layout.yaml"]


# -- what the rewritten file keeps --------------------------------------------------------


def test_in_place_keeps_owner_group_and_mode(workdir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    Path("layout.yaml").write_text(LAYOUT)
    os.chown("layout.yaml", 65534, 65534)
    os.chmod("layout.yaml", 0o604)
    assert in_place("layout.yaml").exit_code == 0
    after = os.stat("layout.yaml")
    assert (after.st_uid, after.st_gid, after.st_mode & 0o7777) == (65534, 65534, 0o604)
    assert Path("layout.yaml").read_text() == RAM


def test_in_place_on_a_hard_linked_file_says_the_link_is_detached(workdir: Path) -> None:
    Path("layout.yaml").write_text(LAYOUT)
    os.link("layout.yaml", "linked.yaml")
    result = in_place("layout.yaml")
    assert result.exit_code == 0
    assert result.stderr == (
        "note: layout.yaml had 1 other hard link(s); they keep the old content, layout.yaml "
        "is now a file of its own\n"
    )
    assert Path("layout.yaml").read_text() == RAM
    assert Path("linked.yaml").read_text() == LAYOUT


def test_in_place_through_a_symlink_rewrites_its_target(workdir: Path) -> None:
    Path("real.yaml").write_text(LAYOUT)
    Path("layout.yaml").symlink_to("real.yaml")
    assert in_place("layout.yaml").exit_code == 0
    assert Path("layout.yaml").is_symlink()
    assert Path("real.yaml").read_text() == RAM


def test_thousands_of_auto_entries_are_filled_in_in_bounded_time(tmp_path: Path) -> None:
    n = 50_000
    devices = "".join(
        f"  - {{name: d{i}, type: mmio, base: auto, size: 4K}}  # d{i}\n" for i in range(n)
    )
    path = tmp_path / "many.yaml"
    path.write_text(f"layout: 1\narch: arm64\npa_bits: 48\ndevices:\n{devices}")
    # Splicing each value into the whole text copied it once per entry: 40 s and more here.
    done = subprocess.run(
        [sys.executable, "-m", "gpa_plan", "allocate", str(path), "--in-place"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # about 6 s here, the plan's self-check included; a busy 2-core machine may double it
    assert done.returncode == 0, done.stderr
    lines = path.read_text().splitlines()
    assert lines[4] == "  - {name: d0, type: mmio, base: 0x0000_0000, size: 4K}  # d0"
    last = f"  - {{name: d{n - 1}, type: mmio, base: 0x0c34_f000, size: 4K}}  # d{n - 1}"
    assert lines[-1] == last
