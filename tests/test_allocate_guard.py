"""`allocate` never emits a plan that `check` rejects for a reason its input did not have."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpa_plan.arch import ARCHES
from gpa_plan.check.run import check_file
from gpa_plan.cli import cli
from gpa_plan.layout.errors import LayoutError
from gpa_plan.layout.loader import load_text
from gpa_plan.layout.validate import validate_layout
from gpa_plan.plan import emit
from gpa_plan.plan.allocate import PlanError, allocate

UCALL_IN_RAM = """\
layout: 1
arch: arm64
memslots:
  - {name: ram, base: 0, size: 4M}
devices:
  - name: ucall
    type: ucall
    base: 0x29_1000
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def error_keys(path: Path) -> Counter[tuple[str, str]]:
    (result,) = check_file(path)
    assert result.valid
    return Counter((f.rule, f.message) for f in result.findings if f.severity == "error")


def test_ucall_memslot_refuses_a_fixed_ucall_inside_a_memslot(workdir: Path) -> None:
    Path("vm.yaml").write_text(UCALL_IN_RAM)
    result = run("allocate", "vm.yaml", "--ucall-memslot", "-o", "out.yaml")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "vm.yaml:8:11: error[memslot-overlap] ucall 'ucall' at 0x0029_1000 lies in memslot "
        "'ram' [0x0000_0000, 0x0040_0000): the read-only memslot --ucall-memslot adds over the "
        "ucall page would overlap it, and KVM_SET_USER_MEMORY_REGION refuses that with EEXIST "
        "(kvm_check_memslot_overlap()); move the ucall page to a free address (0x0040_0000 is "
        "free) or set its base to auto\n"
    )
    assert not Path("out.yaml").exists()


def test_the_free_address_it_names_works(workdir: Path) -> None:
    Path("vm.yaml").write_text(UCALL_IN_RAM.replace("0x29_1000", "0x40_0000"))
    result = run("allocate", "vm.yaml", "--ucall-memslot", "-o", "out.yaml")
    assert result.exit_code == 0, result.stderr
    assert error_keys(Path("out.yaml")) == Counter()
    assert "  - name: ucall-slot\n    slot: 1\n    base: 0x0040_0000\n" in Path(
        "out.yaml"
    ).read_text()


def test_so_does_base_auto(workdir: Path) -> None:
    Path("vm.yaml").write_text(UCALL_IN_RAM.replace("0x29_1000", "auto"))
    assert run("allocate", "vm.yaml", "--ucall-memslot", "-o", "out.yaml").exit_code == 0
    assert error_keys(Path("out.yaml")) == Counter()


def test_the_library_refuses_it_too() -> None:
    layout = validate_layout(load_text(UCALL_IN_RAM, "vm.yaml"))
    with pytest.raises(PlanError) as caught:
        allocate(layout, ucall_memslot=True)
    assert caught.value.rules == ["memslot-overlap"]
    assert caught.value.problems[0][1] == ("devices", 0)


def test_a_ucall_already_under_a_read_only_memslot_is_left_alone(workdir: Path) -> None:
    Path("vm.yaml").write_text(
        UCALL_IN_RAM.replace(
            "size: 4M}\n", "size: 2M}\n  - {name: guard, base: 0x29_1000, size: 4K, "
            "readonly: true}\n"
        )
    )
    assert run("allocate", "vm.yaml", "--ucall-memslot", "-o", "out.yaml").exit_code == 0
    assert error_keys(Path("out.yaml")) == Counter()


def test_any_new_error_refuses_the_plan_not_only_the_known_ones(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # KVM allows 32764 memslots per address space on x86; with a limit of 2 the memslot
    # --ucall-memslot adds is one too many: no rule of the planner knows it, check does.
    monkeypatch.setitem(ARCHES, "x86_64", ARCHES["x86_64"]._replace(user_memslots=2))
    Path("vm.yaml").write_text(
        "layout: 1\narch: x86_64\nmemslots:\n  - {name: low, base: 0, size: 1M}\n"
        "  - {name: high, base: 0x1_0000_0000, size: 1G}\n"
    )
    result = run("allocate", "vm.yaml", "--ucall-memslot", "-o", "out.yaml")
    assert result.exit_code == 1
    error_lines = [line for line in result.stderr.splitlines() if "error[" in line]
    assert error_lines == [
        "vm.yaml:4:3: error[too-many-memslots] the plan would fail check: address space 0 has "
        "3 memslots; x86_64 allows 2 (KVM_CAP_NR_MEMSLOTS), so 'ucall-slot' and the ones "
        "after it get EINVAL; merge adjacent memslots; nothing was written"
    ]
    assert not Path("out.yaml").exists()
    # Without the added memslot the plan is fine.
    assert run("allocate", "vm.yaml", "--ucall", "-o", "out.yaml").exit_code == 0


def test_errors_the_input_already_has_refuse_the_plan_and_say_whose_they_are(
    workdir: Path,
) -> None:
    # allocate fills in `auto` values; it does not repair fixed entries check complains of, and
    # it does not hand out addresses for a layout KVM would refuse either.
    Path("vm.yaml").write_text(
        "layout: 1\narch: arm64\nmemslots:\n  - {name: a, base: 0, size: 1M}\n"
        "  - {name: b, base: 0x8_0000, size: 1M}\ndevices:\n"
        "  - {name: uart, type: mmio, base: auto, size: 4K}\n"
    )
    assert error_keys(Path("vm.yaml"))  # check rejects the input itself
    for flags in ([], ["--ucall"], ["--ucall-memslot"]):
        result = run("allocate", "vm.yaml", *flags, "-o", "out.yaml")
        assert result.exit_code == 1, flags
        assert result.stderr.startswith("vm.yaml:5:21: error[memslot-overlap] the layout already "
                                        "fails check: memslot 'b' (slot 1)")
        assert "fix this entry first" in result.stderr
        assert not Path("out.yaml").exists()


# -- the property: exit 0 => check finds no error the input did not have --------------------

BASES = ["auto", "0x0", "0x1000", "0x29_1000", "0x10_0000", "0x40_0000", "0x80_0000"]
SIZES = ["4K", "64K", "1M", "4M"]


@st.composite
def layouts(draw: st.DrawFn) -> str:
    arch = draw(st.sampled_from(["arm64", "x86_64"]))
    lines = [f"layout: 1\narch: {arch}\npa_bits: 36\nmemslots:"]
    for i in range(draw(st.integers(0, 3))):
        base, size = draw(st.sampled_from(BASES)), draw(st.sampled_from(SIZES))
        readonly = ", readonly: true" if draw(st.booleans()) else ""
        lines.append(f"  - {{name: m{i}, base: {base}, size: {size}{readonly}}}")
    lines.append("devices:")
    for i in range(draw(st.integers(0, 2))):
        base = draw(st.sampled_from(BASES))
        lines.append(f"  - {{name: d{i}, type: mmio, base: {base}, size: 4K}}")
    ucall = draw(st.sampled_from([None, *BASES]))
    if ucall is not None:
        lines.append(f"  - {{name: ucall, type: ucall, base: {ucall}}}")
    if arch == "x86_64" and draw(st.booleans()):
        lines.append("  - {name: lapic, type: lapic, base: 0xfee0_0000}")
    return "\n".join(lines).replace("memslots:\ndevices:", "devices:") + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts(), st.sampled_from([(True, False), (False, True), (False, False)]))
def test_a_plan_allocate_emits_has_no_error_at_all(
    text: str, flags: tuple[bool, bool]
) -> None:
    import tempfile

    ucall, ucall_memslot = flags
    try:
        layout = validate_layout(load_text(text, "in.yaml"))
    except LayoutError:
        return
    try:
        allocation = allocate(layout, ucall=ucall, ucall_memslot=ucall_memslot)
    except PlanError:
        return  # refused (exit 1): nothing emitted
    with tempfile.TemporaryDirectory() as directory:
        before, after = Path(directory) / "in.yaml", Path(directory) / "out.yaml"
        before.write_text(text)
        after.write_text(emit.to_yaml(allocation.document(), allocation.notes, "in.yaml"))
        assert error_keys(after) == Counter(), text


def test_a_memslot_over_part_of_the_ucall_page_is_named_too(workdir: Path) -> None:
    # 64 KiB guest pages: the ucall page is [0x40_0000, 0x41_0000); 'data' holds 4 KiB of it.
    Path("vm.yaml").write_text(
        "layout: 1\narch: arm64\npage_size: 4K\nguest_page_size: 64K\nmemslots:\n"
        "  - {name: ram, base: 0, size: 4M}\n  - {name: data, base: 0x40_8000, size: 4K}\n"
        "devices:\n  - {name: ucall, type: ucall, base: 0x40_0000}\n"
    )
    result = run("allocate", "vm.yaml", "--ucall-memslot", "-o", "out.yaml")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "vm.yaml:9:38: error[memslot-overlap] ucall 'ucall' at 0x0040_0000 overlaps memslot "
        "'data' [0x0040_8000, 0x0040_9000): "
    )
    assert "(0x0041_0000 is free)" in result.stderr
