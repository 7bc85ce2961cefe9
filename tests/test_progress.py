"""A progress bar on standard error for long work, and only there.

The program runs in a real process whose standard error is a pseudo-terminal (standard output
a pipe, as when a report is redirected). The size from which a bar is shown is 1 MiB of
layout; to keep the inputs small, the process lowers ``progress_bar.MIN_BYTES`` to the size of
the generated layout (a bar is due) or one byte above it (none is) before running the program.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import pytest
from click.testing import CliRunner

from gpa_plan.cli import cli
from gpa_plan.progress import unwatched
from gpa_plan.report import progress_bar

pty = pytest.importorskip("pty")

ROOT = Path(__file__).parent.parent
LAUNCH = (
    "import sys; import gpa_plan.report.progress_bar as bar; "
    "bar.MIN_BYTES = int(sys.argv.pop(1)); from gpa_plan.launch import main; sys.exit(main())"
)


class Run(NamedTuple):
    status: int
    stdout: bytes
    stderr: bytes


def layout(tmp_path: Path, memslots: int = 64) -> Path:
    lines = ["layout: 1", "arch: x86_64", "pa_bits: 40", "memslots:"]
    lines += [f"  - {{name: m{i}, base: {hex(i << 24)}, size: 4M}}" for i in range(memslots)]
    path = tmp_path / "generated.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def program(min_bytes: int, args: list[str], *, terminal: bool, **env: str) -> Run:
    """gpa-plan with ``args``; standard error a pseudo-terminal when ``terminal``, else a
    pipe; standard output a pipe either way."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    environ.update({"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "COLUMNS": "100"},
                   **env)
    command = [sys.executable, "-c", LAUNCH, str(min_bytes), *args]
    if not terminal:
        done = subprocess.run(command, capture_output=True, env=environ, timeout=60)
        return Run(done.returncode, done.stdout, done.stderr)
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=follower,
                                   stdin=subprocess.DEVNULL, env=environ)
    finally:
        os.close(follower)
    # Standard output is read beside the terminal, or a report bigger than the pipe's buffer
    # (64 KiB: a SARIF document's rule list) would block the program and this loop forever.
    assert process.stdout is not None
    out = process.stdout
    collected: list[bytes] = []
    reader = threading.Thread(target=lambda: collected.append(out.read()))
    reader.start()
    stderr = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal's last open end
            break
        if not chunk:
            break
        stderr += chunk
    os.close(leader)
    reader.join(timeout=60)
    out.close()
    return Run(process.wait(timeout=60), b"".join(collected), stderr)


def test_a_big_enough_check_shows_progress_and_its_report_is_unchanged(tmp_path: Path) -> None:
    path = layout(tmp_path)
    size = path.stat().st_size
    shown = program(size, ["check", str(path)], terminal=True)
    assert shown.status == 0
    assert f"checking {path} (x86_64)".encode() in shown.stderr
    assert b"\x1b[" in shown.stderr  # drawn and erased with terminal controls
    piped = program(size, ["check", str(path)], terminal=False)
    assert piped.stderr == b""  # standard error is not a terminal: no bar
    assert shown.stdout == piped.stdout
    assert piped.stdout.decode().endswith("1 file checked: 0 errors, 0 warnings\n")


def test_a_smaller_input_stays_silent_on_a_terminal(tmp_path: Path) -> None:
    path = layout(tmp_path)
    quiet = program(path.stat().st_size + 1, ["check", str(path)], terminal=True)
    assert quiet.status == 0
    assert quiet.stderr == b""


def test_a_directory_counts_the_bytes_of_its_layouts(tmp_path: Path) -> None:
    path = layout(tmp_path)
    (tmp_path / "second.yaml").write_text(path.read_text())
    bigger_than_one = path.stat().st_size + 1
    shown = program(bigger_than_one, ["check", str(tmp_path)], terminal=True)
    assert b"checking" in shown.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--format", "json"], {}),
        (["--format", "sarif"], {}),
        (["--format", "github"], {}),
        (["-q"], {}),
        ([], {"TERM": "dumb"}),
        ([], {"TTY_INTERACTIVE": "0"}),
    ],
    ids=["json", "sarif", "github", "quiet", "dumb-terminal", "not-interactive"],
)
def test_no_progress_for_machine_output_quiet_runs_or_a_dumb_terminal(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    path = layout(tmp_path)
    size = path.stat().st_size
    shown = program(size, ["check", *args, str(path)], terminal=True, **env)
    assert shown.stderr == b""
    assert shown.stdout == program(size, ["check", *args, str(path)], terminal=False).stdout


def test_no_colour_still_shows_the_bar_without_colour(tmp_path: Path) -> None:
    path = layout(tmp_path)
    shown = program(path.stat().st_size, ["check", str(path)], terminal=True, NO_COLOR="1")
    assert b"checking" in shown.stderr
    assert b"\x1b[3" not in shown.stderr and b"\x1b[9" not in shown.stderr  # no colour codes


@pytest.mark.parametrize("option", ["--html", "--svg"])
def test_map_shows_progress_and_writes_the_same_file(tmp_path: Path, option: str) -> None:
    path = layout(tmp_path)
    size = path.stat().st_size
    shown = program(size, ["map", str(path), option, str(tmp_path / "shown")], terminal=True)
    piped = program(size, ["map", str(path), option, str(tmp_path / "piped")], terminal=False)
    assert shown.status == piped.status == 0
    assert b"drawing the regions" in shown.stderr or b"region table" in shown.stderr
    assert piped.stderr == b""
    assert (tmp_path / "shown").read_bytes() == (tmp_path / "piped").read_bytes()


def test_map_of_a_layout_that_does_not_load_says_why_after_the_bar(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("layout: 1\narch: x86_64\nmemslots:\n  - {name: m, base: 0x0, size: many}\n")
    shown = program(path.stat().st_size, ["map", str(path)], terminal=True)
    assert shown.status == 1
    # The bar is erased before the error is printed, so the error is the last thing shown.
    last = shown.stderr.decode().replace("\r\n", "\n").rstrip().rsplit("\n", 1)[-1]
    assert f"{path}:4:".replace("\\", "/") in last and "error[" in last


def test_in_process_runs_show_nothing_on_a_stderr_that_is_not_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress_bar, "MIN_BYTES", 0)
    result = CliRunner().invoke(cli, ["check", str(layout(tmp_path))])
    assert result.exit_code == 0
    assert result.stderr == ""


def test_without_a_terminal_the_core_gets_the_progress_nobody_watches() -> None:
    sizes: list[int] = []

    class NotATerminal:
        def isatty(self) -> bool:
            return False

    def measured() -> int:
        sizes.append(1 << 30)
        return 1 << 30

    with progress_bar.watched(measured, NotATerminal()) as got:  # type: ignore[arg-type]
        assert got is unwatched
    assert sizes == []  # the input is not even measured


def test_the_core_reports_each_step_to_a_callable_and_never_loads_rich(tmp_path: Path) -> None:
    path = layout(tmp_path)
    script = (
        "import sys\n"
        "from gpa_plan.check.run import check_file\n"
        "from gpa_plan.report.svg import page\n"
        "steps = []\n"
        "def seen(step, done=0, total=None): steps.append((step, done, total))\n"
        f"(result,) = check_file({str(path)!r}, progress=seen)\n"
        "page(result, seen)\n"
        "assert 'rich' not in sys.modules, 'the core loaded rich'\n"
        "for step, done, total in steps: print(step, done, total, sep='|')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0, done.stderr
    steps = [line.split("|") for line in done.stdout.splitlines()]
    names = [step for step, _, _ in steps]
    assert names[:3] == [f"reading {path}", f"validating {path}", f"partitioning {path} (x86_64)"]
    checking = [s for s in steps if s[0].startswith(f"checking {path} (x86_64): ")]
    assert [int(d) for _, d, _ in checking] == list(range(len(checking)))
    assert {t for _, _, t in checking} == {str(len(checking))}
    assert names[-2:] == ["drawing the regions", "writing the region table"]
