"""`gpa-plan verify --export DIR` where DIR, or a path in it, is not what export writes: exit 2
with the path and what it is, nothing written, never a traceback, never a hang on a FIFO."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gpa_plan.cli import cli

LAYOUT = Path(__file__).parent.parent / "layouts" / "qemu-q35-x86_64.yaml"


def export(directory: str) -> Result:
    return CliRunner().invoke(cli, ["verify", str(LAYOUT), "--export", directory])


def test_a_fifo_named_plan_json_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    fifo = tmp_path / "plan.json"
    os.mkfifo(fifo)
    # Writing into the FIFO would wait for a reader forever: one comes after 10 s, so that a
    # version that writes there fails rather than hangs.
    guard = threading.Timer(10, lambda: os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)))
    guard.start()
    try:
        result = export(str(tmp_path))
    finally:
        guard.cancel()
    assert result.exit_code == 2
    assert result.stderr == (
        f"gpa-plan: verify: {tmp_path / 'plan.json'} is a FIFO (named pipe), where --export "
        "writes a regular file; nothing was written: give --export another directory\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_a_directory_named_plan_json_is_refused_before_the_probe_is_written(
    tmp_path: Path,
) -> None:
    (tmp_path / "plan.json").mkdir()
    result = export(str(tmp_path))
    assert result.exit_code == 2
    assert f"{tmp_path / 'plan.json'} is a directory, where --export writes a regular file" in (
        result.stderr
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_a_file_named_probe_is_refused(tmp_path: Path) -> None:
    (tmp_path / "probe").write_text("keep me\n")
    result = export(str(tmp_path))
    assert result.exit_code == 2
    assert f"{tmp_path / 'probe'} is a regular file, where --export writes a directory" in (
        result.stderr
    )
    assert (tmp_path / "probe").read_text() == "keep me\n"


def test_a_directory_under_a_file_is_refused_with_the_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("keep me\n")
    result = export(str(tmp_path / "file" / "out"))
    assert result.exit_code == 2
    assert result.stderr == (
        f"gpa-plan: verify: {tmp_path / 'file' / 'out'}: not a directory; give --export a "
        "directory you may write\n"
    )


def test_missing_parents_are_made(tmp_path: Path) -> None:
    result = export(str(tmp_path / "a" / "b"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a" / "b" / "plan.json").read_text())["arch"] == "x86_64"


def test_an_empty_export_path_is_refused_rather_than_running_the_probe_here() -> None:
    result = export("")
    assert result.exit_code == 2
    assert result.stderr == (
        "gpa-plan: verify: --export needs a directory; give one (. for this one)\n"
    )


def test_a_file_export_cannot_write_exits_2_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpa_plan import files

    def refuse(path: str, text: str, stdout: object) -> list[str]:
        raise files.OutputError(path, "the disk is full")

    monkeypatch.setattr(files, "write_output", refuse)
    result = export(str(tmp_path))
    assert result.exit_code == 2
    assert "gpa-plan: verify: cannot write " in result.stderr
    assert "the disk is full; nothing else was written after it" in result.stderr


def test_the_readme_quotes_paths_for_the_shell(tmp_path: Path) -> None:
    out = tmp_path / "a dir; rm -rf x"
    assert export(str(out)).exit_code == 0
    assert f"cd '{out}' && python3 -m probe plan.json" in (out / "README").read_text()


def test_written_paths_are_printed_escaped(tmp_path: Path) -> None:
    out = tmp_path / "x\x1b[2Jy"
    result = export(str(out))
    assert result.exit_code == 0
    assert "\x1b" not in result.stdout and "x\\x1b[2Jy" in result.stdout


def test_a_plan_larger_than_the_probe_reads_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpa_plan.probe import __main__ as probe_main

    # As a layout of some ten thousand regions would be at the real 16 MiB.
    monkeypatch.setattr(probe_main, "MAX_PLAN_BYTES", 4096)
    result = export(str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "more than the 4 KiB the probe reads; nothing was written" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_plan_is_written_compact_where_indenting_would_make_it_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpa_plan.probe import __main__ as probe_main

    assert export(str(tmp_path / "a")).exit_code == 0
    indented = (tmp_path / "a" / "plan.json").read_text()
    compact = json.dumps(json.loads(indented), separators=(",", ":")) + "\n"
    monkeypatch.setattr(probe_main, "MAX_PLAN_BYTES", len(compact))
    assert export(str(tmp_path / "b")).exit_code == 0
    assert (tmp_path / "b" / "plan.json").read_text() == compact


def test_a_host_profile_of_another_architecture_is_said_to_change_nothing(
    tmp_path: Path,
) -> None:
    profile = tmp_path / "host.json"
    profile.write_text(json.dumps(
        {"format": 1, "arch": "x86_64", "kernel": {"release": "6.1"}, "facts": {}}
    ))
    arm64 = LAYOUT.parent / "qemu-virt-arm64.yaml"
    result = CliRunner().invoke(
        cli, ["verify", str(arm64), "--host", str(profile), "--export", str(tmp_path / "out")]
    )
    assert result.exit_code == 0
    assert result.stderr == (
        f"note: host profile {profile} is of an x86_64 host and nothing was evaluated under "
        "x86_64: it changed nothing\n"
    )
