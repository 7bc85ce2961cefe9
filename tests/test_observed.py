"""The `observed` section of a recording: what the format takes and refuses (with line and
column), and the findings and summary `check` makes of it.

Kernel facts (Linux 7.2.13): include/uapi/linux/kvm.h names the exit reasons (KVM_EXIT_*) and
the internal-error suberrors (KVM_INTERNAL_ERROR_*); kvm_run->mmio.len is at most 8
(arch/x86/kvm/x86.c complete_emulated_mmio()), kvm_run->io.size 1, 2 or 4
(emulator_pio_in_out())."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from click.testing import CliRunner, Result

from gpa_plan.cli import cli

HEAD = """\
layout: 1
arch: x86_64
memslots:
  - {name: ram, base: 0, size: 1G}
observed:
"""


def recording(tmp_path: Path, observed: str) -> Path:
    path = tmp_path / "rec.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(observed), "  "))
    return path


def position(path: Path, needle: str) -> tuple[int, int]:
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if needle in text:
            return number, text.index(needle) + 1
    raise AssertionError(needle)


def run(*args: str | Path) -> Result:
    return CliRunner(env={"COLUMNS": "400"}).invoke(cli, [str(a) for a in args])


def finding_lines(result: Result) -> list[str]:
    return [line for line in result.stdout.splitlines() if ": error[" in line
            or ": warning[" in line]


def at(path: Path, needle: str, offset: int = 0) -> str:
    line, column = position(path, needle)
    return f"{path}:{line}:{column + offset}"


# -- the format ------------------------------------------------------------------------------


def test_the_designs_example_loads_clean_of_schema_errors(tmp_path: Path) -> None:
    path = recording(tmp_path, """\
        traffic_path: tracefs
        traffic:
          - {space: mmio, address: 0xd0000000, width: 4, reads: 12, writes: 3}
          - {space: port, address: 0x3f8, width: 1, reads: 0, writes: 40}
        exits:
          - {reason: KVM_EXIT_MMIO, count: 15}
        """)
    result = run("check", path)
    assert result.exit_code == 0, result.output


def test_each_bad_observed_value_is_reported_at_its_line_and_column(tmp_path: Path) -> None:
    path = recording(tmp_path, """\
        traffic_path: strace
        traffic:
          - {space: disk, address: 0x3f8, width: 1}
          - {space: mmio, address: 0x1000, width: 16}
          - {space: port, address: 0x3f8, width: 8}
        exits:
          - {reason: KVM_EXIT_MMMIO, count: 15}
        run_failures:
          - {errno: EFAULTY, count: 1}
        internal_errors:
          - {suberror: 1, count: -1}
        refused:
          - {call: KVM_IOEVENTFD, errno: EEXIST, colour: red}
        """)
    result = run("check", path)
    assert result.exit_code == 1
    assert finding_lines(result) == [
        f"{at(path, 'strace')}: error[schema] `traffic_path` must be tracefs or ptrace, not "
        "'strace'",
        f"{at(path, 'disk')}: error[schema] `space` of `observed` traffic entry #1 must be mmio "
        "or port, not 'disk'",
        f"{at(path, '16}')}: error[schema] `width` of `observed` traffic entry #2 must be less "
        "than or equal to 8",
        f"{at(path, 'KVM_EXIT_MMMIO')}: error[schema] `reason` of `observed` exit count #1: "
        "'KVM_EXIT_MMMIO' is not a KVM_EXIT_ name of include/uapi/linux/kvm.h (KVM_EXIT_MMIO, "
        "KVM_EXIT_IO, ...); did you mean `KVM_EXIT_MMIO`?",
        f"{at(path, 'EFAULTY')}: error[schema] `errno` of `observed` run failure #1: 'EFAULTY' "
        "is not an errno name (EFAULT, EINVAL, EEXIST, ...); did you mean `EFAULT`?",
        f"{at(path, '-1')}: error[schema] `count` of `observed` internal error #1: '-1' has a "
        "sign: addresses, sizes and counts are unsigned, written without '-' or '+'",
        f"{at(path, 'colour')}: error[schema] unknown key `colour` in an `observed` refused "
        "call (allowed: call, errno, count, detail)",
    ]


def test_a_port_access_of_eight_bytes_is_refused_once_the_rest_is_valid(tmp_path: Path) -> None:
    path = recording(tmp_path, """\
        traffic:
          - {space: port, address: 0x3f8, width: 8}
        """)
    result = run("check", path)
    assert finding_lines(result) == [
        f"{at(path, '8}')}: error[schema] a port access of width 8: `in` and `out` move 1, 2 "
        "or 4 bytes (KVM_EXIT_IO's io.size); give the width of one element"
    ]


def test_a_traffic_entry_needs_space_address_and_width(tmp_path: Path) -> None:
    path = recording(tmp_path, """\
        traffic:
          - {space: mmio, address: 0x1000}
        """)
    result = run("check", path)
    assert finding_lines(result) == [
        f"{at(path, '{space')}: error[schema] `observed` traffic entry #1 has no `width`, which "
        "is required"
    ]


def test_schema_command_describes_the_new_keys() -> None:
    result = run("schema")
    schema = json.loads(result.stdout)
    assert {"ports", "observed"} <= set(schema["properties"])
    assert "guest_memfd" in schema["$defs"]["Memslot"]["properties"]
    observed = schema["$defs"]["Observed"]["properties"]
    assert set(observed) == {
        "traffic_path", "traffic", "exits", "run_failures", "internal_errors", "refused"
    }
    assert "KVM_EXIT_MMIO" in schema["$defs"]["ExitCount"]["properties"]["reason"]["enum"]
    assert schema["$defs"]["Port"]["properties"]["handler"]["default"] == "user"
