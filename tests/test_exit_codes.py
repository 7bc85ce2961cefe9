"""Exit statuses when the world around a run fails: Ctrl-C (130), a reader that went away (141),
a standard output that cannot be written or a working directory that no longer exists (2).
Never 1, which CI reads as findings; never a traceback. Real processes, as a shell runs them."""

from __future__ import annotations

import array
import fcntl
import os
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from gpa_plan.cli import main

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ROOT / "layouts" / "qemu-virt-arm64.yaml"
# No PYTHONUNBUFFERED: an unbuffered standard output drops the rest of a short write to a
# closed pipe without an error (CPython's TextIOWrapper over a raw file), so the test would
# not see the closed pipe it sets up; gpa-plan is normally run buffered.
ENV = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
GPA_PLAN = [sys.executable, "-m", "gpa_plan"]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory whose configuration lookup ends at once (an empty `.gpa-plan.yaml`)."""
    (tmp_path / ".gpa-plan.yaml").write_text("")
    return tmp_path


def big_layout(directory: Path, devices: int = 3000) -> Path:
    """A valid layout whose text report is some 250 KB, several times a pipe's buffer."""
    lines = [
        "layout: 1",
        "arch: arm64",
        "memslots:",
        "  - {name: ram, base: 0x4000_0000, size: 1G}",
        "devices:",
    ]
    lines += [
        f"  - {{name: d{i}, type: mmio, base: {0x1000_0000 + i * 0x1000:#x}, size: 0x1000}}"
        for i in range(devices)
    ]
    path = directory / "big.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def no_traceback(stderr: bytes) -> None:
    assert b"Traceback" not in stderr
    assert b"Exception ignored" not in stderr
    assert b"internal error" not in stderr


# -- Ctrl-C ------------------------------------------------------------------------------------


def bytes_waiting(fd: int) -> int:
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


def test_ctrl_c_while_waiting_for_standard_input_exits_130(workdir: Path) -> None:
    run = subprocess.Popen(
        [*GPA_PLAN, "import", "qemu-mtree", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=workdir,
        env=ENV,
    )
    assert run.stdin is not None
    run.stdin.write(b"address-space: memory\n")
    run.stdin.flush()
    # Once gpa-plan has read what was written it is running (its Ctrl-C handling in place) and
    # waits for the rest of standard input.
    deadline = time.monotonic() + 60
    while bytes_waiting(run.stdin.fileno()) and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert (run.returncode, out) == (130, b"")
    assert err.strip() == b"gpa-plan: interrupted"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_ctrl_c_during_a_long_check_exits_130(workdir: Path) -> None:
    memslots = 32_000  # some seconds of work; the interpreter and imports take a tenth of that
    lines = ["layout: 1", "arch: arm64", "memslots:"] + [
        f"  - {{name: m{i}, base: {0x1_0000_0000 + i * 0x20_0000:#x}, size: 1M}}"
        for i in range(memslots)
    ]
    layout = workdir / "many-memslots.yaml"
    layout.write_text("\n".join(lines) + "\n")
    run = subprocess.Popen(
        [*GPA_PLAN, "check", str(layout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=workdir,
        env=ENV,
    )
    deadline = time.monotonic() + 60
    while run.poll() is None and cpu_seconds(run.pid) < 0.4 and time.monotonic() < deadline:
        time.sleep(0.01)
    if run.poll() is not None:
        pytest.skip("the check ended before it could be interrupted")
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert (run.returncode, out) == (130, b"")
    assert err.strip() == b"gpa-plan: interrupted"


def test_ctrl_c_in_a_caller_process_is_130_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("gpa_plan.check.batch.check_file", interrupted)
    assert main(["check", str(LAYOUT)]) == 130
    assert capsys.readouterr().err.strip() == "gpa-plan: interrupted"


def test_ctrl_c_while_the_command_line_is_still_loading_is_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpa_plan import launch

    class InterruptedImport:
        def find_spec(self, name: str, *args: object) -> None:
            if name == "gpa_plan.cli":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "gpa_plan.cli")
    monkeypatch.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
    with pytest.raises(SystemExit) as done:
        launch.main()
    assert done.value.code == 130
    assert capsys.readouterr().err.strip() == "gpa-plan: interrupted"


# -- a reader that went away -------------------------------------------------------------------


def test_a_reader_that_stops_after_one_line_gets_141_quietly(workdir: Path) -> None:
    layout = big_layout(workdir)
    run = subprocess.Popen(
        [*GPA_PLAN, "check", str(layout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=workdir,
        env=ENV,
    )
    assert run.stdout is not None and run.stderr is not None
    assert run.stdout.readline() == f"{layout} (arm64, 40-bit)\n".encode()
    run.stdout.close()  # as `| head -1` does
    assert run.wait(timeout=60) == 141
    assert run.stderr.read() == b""


@pytest.mark.parametrize(
    "args", [["rules"], ["check", "--format", "json", str(LAYOUT)], ["schema"]]
)
def test_a_pipe_closed_before_any_output_gives_141_quietly(
    workdir: Path, args: list[str]
) -> None:
    run = subprocess.Popen(
        [*GPA_PLAN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir, env=ENV
    )
    assert run.stdout is not None and run.stderr is not None
    run.stdout.close()
    assert run.wait(timeout=60) == 141
    assert run.stderr.read() == b""


# -- a standard output that cannot be written --------------------------------------------------


@pytest.mark.parametrize(
    ("redirect", "expected"),
    [
        (">&-", "cannot write the output (Bad file descriptor): standard output is closed"),
        ("1</dev/null", "cannot write the output (Bad file descriptor): standard output is"),
        (">/dev/full", "cannot write the output (No space left on device): check the file"),
    ],
)
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_an_unwritable_standard_output_is_exit_2_with_one_line(
    workdir: Path, redirect: str, expected: str, fmt: str
) -> None:
    if redirect == ">/dev/full" and not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    done = subprocess.run(
        ["sh", "-c", f'exec "$@" {redirect}', "sh", *GPA_PLAN, "check", "--format", fmt,
         str(LAYOUT)],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=ENV,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"gpa-plan: {expected}")
    assert done.stderr.count("\n") == 1
    no_traceback(done.stderr.encode())


def test_a_closed_standard_output_does_not_stop_a_command_that_writes_a_file(
    workdir: Path,
) -> None:
    out = workdir / "selftests.yaml"
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *GPA_PLAN, "allocate", "-o", str(out)],
        capture_output=True,
        cwd=workdir,
        env=ENV,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert out.read_text().count("memslots:") == 1


# -- a working directory that no longer exists -------------------------------------------------


def test_a_deleted_working_directory_is_exit_2_saying_to_cd(workdir: Path) -> None:
    gone = workdir / "gone"
    gone.mkdir()
    done = subprocess.run(
        ["sh", "-c", 'cd "$1" && rmdir "$1" && shift && exec "$@"', "sh", str(gone), *GPA_PLAN,
         "check", str(LAYOUT)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.endswith(
        "Error: the working directory no longer exists, so no configuration can be looked up "
        "from it; cd to an existing directory and run gpa-plan again\n"
    )
    no_traceback(done.stderr.encode())


# -- a standard error that cannot be written ---------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["check", "missing.yaml"],  # exit 2: an input that cannot be read
        ["check", "--select", "no-such-rule", str(LAYOUT)],  # exit 2: a usage error
        ["allocate", "--arch", "arm64", "-o", "/dev/full"],  # exit 2: an output that fails
    ],
)
def test_an_unwritable_standard_error_keeps_the_status_2(workdir: Path, args: list[str]) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" 2>/dev/full', "sh", *GPA_PLAN, *args],
        capture_output=True,
        cwd=workdir,
        env=ENV,
        timeout=60,
    )
    assert done.returncode == 2


def test_an_output_relative_to_a_deleted_working_directory_is_exit_2_saying_to_cd(
    workdir: Path,
) -> None:
    gone = workdir / "gone"
    gone.mkdir()
    done = subprocess.run(
        ["sh", "-c", 'cd "$1" && rmdir "$1" && shift && exec "$@"', "sh", str(gone), *GPA_PLAN,
         "allocate", str(LAYOUT), "-o", "out.yaml"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.endswith(
        "Error: cannot write out.yaml: the working directory no longer exists; cd to an "
        "existing directory, or give the output as an absolute path\n"
    )
    no_traceback(done.stderr.encode())
