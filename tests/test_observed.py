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

from layout_files import at, finding_lines, run

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


# -- findings --------------------------------------------------------------------------------


def test_a_refused_call_is_a_warning_naming_call_errno_count_detail_and_fix(
    tmp_path: Path,
) -> None:
    path = recording(tmp_path, """\
        refused:
          - {call: KVM_SET_USER_MEMORY_REGION, errno: EEXIST, count: 2,
             detail: "slot 1 at 0x100000, 0x1000 bytes"}
          - {call: KVM_IOEVENTFD, errno: EINVAL}
          - {call: KVM_CHECK_EXTENSION, errno: EPERM}
        """)
    result = run("check", path)
    assert result.exit_code == 0  # warnings
    assert finding_lines(result) == [
        f"{at(path, '{call: KVM_SET')}: warning[refused-call] KVM refused "
        "KVM_SET_USER_MEMORY_REGION (slot 1 at 0x100000, 0x1000 bytes) with EEXIST, 2 times: "
        "the call changed nothing in KVM, so the VM ran without it; the memslot overlaps one "
        "KVM already holds in that address space (kvm_set_memory_region() -> "
        "kvm_check_memslot_overlap()); move it, or delete the other memslot first",
        f"{at(path, '{call: KVM_IOEVENTFD')}: warning[refused-call] KVM refused KVM_IOEVENTFD "
        "with EINVAL, 1 time: the call changed nothing in KVM, so the VM ran without it; a "
        "length other than 0, 1, 2, 4 or 8, a datamatch with length 0, or an address range "
        "that wraps (eventfd.c kvm_assign_ioeventfd()); fix the length or datamatch",
        f"{at(path, '{call: KVM_CHECK')}: warning[refused-call] KVM refused KVM_CHECK_EXTENSION "
        "with EPERM, 1 time: the call changed nothing in KVM, so the VM ran without it; look "
        "up where the kernel returns EPERM for KVM_CHECK_EXTENSION and fix the call's "
        "arguments",
    ]
    assert run("check", "--strict", path).exit_code == 1


def test_run_failures_are_errors_that_say_what_the_errno_means(tmp_path: Path) -> None:
    path = recording(tmp_path, """\
        run_failures:
          - {errno: EFAULT, count: 1}
          - {errno: ENXIO, count: 3}
          - {errno: ENOMEM, count: 2}
        """)
    result = run("check", path)
    assert result.exit_code == 1
    assert finding_lines(result) == [
        f"{at(path, '{errno: EFAULT')}: error[run-failed] KVM_RUN failed with EFAULT, 1 time: "
        "the vCPU stopped there; KVM could not reach the host memory behind a memslot the guest "
        "touched: the memslot's userspace memory is gone or was never mapped (x86 mmu.c "
        "kvm_handle_error_pfn(), arm64 mmu.c user_mem_abort()); keep the mapping for as long "
        "as the memslot exists, or delete the memslot first",
        f"{at(path, '{errno: ENXIO')}: error[run-failed] KVM_RUN failed with ENXIO, 3 times: "
        "the vCPU stopped there; an in-kernel interrupt controller is incomplete: on arm64 the "
        "vGIC's distributor or a redistributor address was never set (vgic-v2.c "
        "vgic_v2_map_resources(), vgic-v3.c vgic_v3_map_resources() at the first KVM_RUN); set "
        "every frame's address before running a vCPU",
        f"{at(path, '{errno: ENOMEM')}: error[run-failed] KVM_RUN failed with ENOMEM, 2 times: "
        "the vCPU stopped there; look up where this kernel's KVM_RUN returns ENOMEM "
        "(kvm_vcpu_ioctl() and the architecture's kvm_arch_vcpu_ioctl_run())",
    ]


def test_internal_errors_name_their_suberror(tmp_path: Path) -> None:
    path = recording(tmp_path, """\
        internal_errors:
          - {suberror: 1, count: 2}
          - {suberror: 3}
          - {suberror: 77}
          - {count: 4}
        """)
    result = run("check", path)
    assert result.exit_code == 1
    lines = finding_lines(result)
    assert lines[0] == (
        f"{at(path, '{suberror: 1')}: error[internal-error] KVM_EXIT_INTERNAL_ERROR, 2 times, "
        "suberror 1 (KVM_INTERNAL_ERROR_EMULATION): an instruction KVM could not emulate (x86 "
        "handle_emulation_failure()), most often a guest access to MMIO with an instruction the "
        "emulator lacks (AVX, a string instruction on some paths) or an access KVM expected to "
        "find memory at: KVM could not go on with the vCPU; make the guest reach that MMIO with "
        "plain loads and stores, or back the address with a memslot if it was meant to be "
        "memory"
    )
    assert lines[1].startswith(
        f"{at(path, '{suberror: 3')}: error[internal-error] KVM_EXIT_INTERNAL_ERROR, 1 time, "
        "suberror 3 (KVM_INTERNAL_ERROR_DELIVERY_EV): an exit while delivering an event"
    )
    assert lines[2] == (
        f"{at(path, '{suberror: 77')}: error[internal-error] KVM_EXIT_INTERNAL_ERROR, 1 time, "
        "suberror 77, which include/uapi/linux/kvm.h of Linux 7.2.13 does not name: see the "
        "kernel the recording ran on: KVM could not go on with the vCPU; the kernel log and "
        "kvm_run->internal.data say where"
    )
    assert lines[3] == (
        f"{at(path, '{count: 4')}: error[internal-error] KVM_EXIT_INTERNAL_ERROR, 4 times, "
        "suberror not recorded: KVM could not go on with the vCPU; the kernel log and "
        "kvm_run->internal.data say where"
    )


def test_traffic_alone_gives_no_finding_and_a_summary(tmp_path: Path) -> None:
    path = recording(tmp_path, """\
        traffic_path: ptrace
        traffic:
          - {space: mmio, address: 0xd000_0000, width: 4, reads: 12, writes: 3}
          - {space: mmio, address: 0xd000_0000, width: 1, reads: 1}
          - {space: mmio, address: 0xe000_0000, width: 8, writes: 2}
          - {space: port, address: 0x3f8, width: 1, writes: 40}
        exits:
          - {reason: KVM_EXIT_MMIO, count: 18}
          - {reason: KVM_EXIT_IO, count: 40}
        """)
    result = run("check", path)
    assert result.exit_code == 0
    assert finding_lines(result) == []
    said = [line for line in result.stdout.splitlines()
            if line.startswith(("mmio traffic", "port traffic", "exits"))]
    assert said == [
        "mmio traffic (ptrace): 18 accesses (13 reads, 5 writes) at 2 addresses, widths "
        "1/4/8; busiest: 0xd000_0000 16, 0xe000_0000 2",
        "port traffic (ptrace): 40 accesses (0 reads, 40 writes) at 1 port, width 1; busiest: "
        "0x3f8 40",
        "exits: KVM_EXIT_IO 40, KVM_EXIT_MMIO 18",
    ]
    document = json.loads(run("check", path, "--format", "json").stdout)
    assert document["results"][0]["traffic"] == {
        "path": "ptrace",
        "spaces": [
            {"space": "mmio", "addresses": 2, "reads": 13, "writes": 5, "widths": [1, 4, 8],
             "busiest": [{"address": 0xD000_0000, "accesses": 16},
                         {"address": 0xE000_0000, "accesses": 2}]},
            {"space": "port", "addresses": 1, "reads": 0, "writes": 40, "widths": [1],
             "busiest": [{"address": 0x3F8, "accesses": 40}]},
        ],
        "exits": [{"reason": "KVM_EXIT_IO", "count": 40},
                  {"reason": "KVM_EXIT_MMIO", "count": 18}],
    }


def test_rules_lists_the_observed_rules() -> None:
    listed = run("rules").stdout
    for slug in ("refused-call", "run-failed", "internal-error"):
        assert slug in listed


def test_allocate_writes_a_recording_whose_run_failed_back_out(tmp_path: Path) -> None:
    # What happened when the recording ran says nothing of the plan: allocate is not refused.
    recorded = Path(__file__).parent / "data" / "record" / "recording.yaml"
    out = tmp_path / "out.yaml"
    result = run("allocate", recorded, "-o", out)
    assert result.exit_code == 0, result.output
    assert run("check", out).exit_code == 1  # check still reports run-failed
    import yaml

    assert yaml.safe_load(out.read_text())["observed"] == yaml.safe_load(
        recorded.read_text()
    )["observed"]
