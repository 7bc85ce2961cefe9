"""`explain` says beside every IO outcome which instructions it holds for, where KVM does
something else for the others (arm64: no valid syndrome; riscv64 and loongarch64: an
instruction KVM does not decode). The note is the architecture module's own."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from gpa_plan.arch import ARCHES
from gpa_plan.cli import cli

LAYOUT = """\
layout: 1
arch: {arch}
page_size: {page}
memslots:
  - {{name: ram, base: 0x4000_0000, size: 1M}}
  - {{name: flash, base: 0x0, size: 1M, readonly: true}}
devices:
  - {{name: uart, type: mmio, base: 0x0900_0000, size: 4K}}
  - {{name: bell, type: mmio, base: 0x0a00_0000, size: 4, handler: ioeventfd}}
  - {{name: ring, type: mmio, base: 0x0b00_0000, size: 4K, handler: coalesced}}
"""
ADDRESSES = ("0x100", "0x0900_0000", "0x0a00_0000", "0x0b00_0000", "0x4000_0000", "0x5000_0000")


def explain(tmp_path: Path, arch: str, *args: str) -> Result:
    page = "16K" if arch == "loongarch64" else "4K"
    path = tmp_path / f"{arch}.yaml"
    path.write_text(LAYOUT.format(arch=arch, page=page))
    return CliRunner(env={"COLUMNS": "500"}).invoke(
        cli, ["explain", str(path), *ADDRESSES, *args]
    )


def json_answers(tmp_path: Path, arch: str) -> list[dict[str, object]]:
    result = explain(tmp_path, arch, "--format", "json")
    assert result.exit_code == 0, result.output
    answers: list[dict[str, object]] = json.loads(result.stdout)["answers"]
    return answers


IO = {"io-exit", "io-kernel", "io-coalesced"}


def test_every_arm64_io_answer_says_no_valid_syndrome_fails_kvm_run(tmp_path: Path) -> None:
    answers = json_answers(tmp_path, "arm64")
    io = [a for a in answers if a["outcome"] in IO]
    # the flash write, and reads and writes of the uart, the ioeventfd, the zone, unbacked
    assert len(io) == 9
    for a in io:
        note = a["notes"][-1]  # type: ignore[index]  # after an ioeventfd's condition
        assert "ENOSYS" in note and "KVM_EXIT_ARM_NISV" in note
        assert "KVM_CAP_ARM_NISV_TO_USER" in note and "load/store pair" in note
    assert all(a["notes"] == [] for a in answers if a["outcome"] not in IO)


def test_the_arm64_text_answer_prints_the_note_under_the_kernel_path(tmp_path: Path) -> None:
    result = explain(tmp_path, "arm64", "--access", "write")
    lines = result.stdout.splitlines()
    flash = lines.index("0x0000_0100 write on arm64: io-exit [rom (flash)]")
    assert lines[flash + 1].startswith("  read-only memslot (flash): kvm_handle_guest_abort()")
    assert lines[flash + 2] == "  note: " + ARCHES["arm64"].io_instruction_note
    ram = lines.index("0x4000_0000 write on arm64: memory [ram (ram)]")
    assert not lines[ram + 2].startswith("  note:")


def test_riscv64_io_answers_say_an_undecoded_instruction_fails_kvm_run(tmp_path: Path) -> None:
    answers = json_answers(tmp_path, "riscv64")
    io = [a for a in answers if a["outcome"] in IO]
    assert len(io) == 9
    for a in io:
        note = a["notes"][-1]  # type: ignore[index]  # after an ioeventfd's condition
        assert "EOPNOTSUPP" in note and "EIO" in note and "kvm_riscv_vcpu_mmio_load()" in note


def test_riscv64_beyond_the_g_stage_is_io_and_carries_the_note(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("layout: 1\narch: riscv64\n")
    result = CliRunner().invoke(
        cli, ["explain", str(path), str(1 << 41), "--access", "read", "--format", "json"]
    )
    (answer,) = json.loads(result.stdout)["answers"]
    assert (answer["outcome"], answer["kind"]) == ("io-exit", "beyond")
    assert answer["notes"] == [ARCHES["riscv64"].io_instruction_note]


def test_loongarch64_io_answers_say_an_undecoded_instruction_is_a_guest_fault(
    tmp_path: Path,
) -> None:
    answers = json_answers(tmp_path, "loongarch64")
    io = [a for a in answers if a["outcome"] in IO]
    assert len(io) == 9
    for a in io:
        note = a["notes"][-1]  # type: ignore[index]  # after an ioeventfd's condition
        assert "ADEM" in note and "KVM_RUN does not fail" in note


def test_x86_64_answers_carry_no_instruction_note(tmp_path: Path) -> None:
    answers = json_answers(tmp_path, "x86_64")
    assert any(a["outcome"] in IO for a in answers)
    notes = [n for a in answers for n in a["notes"]]  # type: ignore[attr-defined]
    assert not any("this outcome holds" in n for n in notes)
    assert len(notes) == 1 and "ioeventfd 'bell'" in notes[0]  # the doorbell's condition
