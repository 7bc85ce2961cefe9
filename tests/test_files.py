"""Where outputs go: regular files replaced whole, FIFOs and devices written into, standard
output recognised, inputs never overwritten, and temporaries of killed runs cleaned up."""

from __future__ import annotations

import io
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from gpa_plan.cli import cli
from gpa_plan.files import NAME_MAX, OutputError, remove_leftovers, temp_name, write_output

DATA = Path(__file__).resolve().parent / "data"
PLANNER = DATA / "allocate" / "planner-arm64.yaml"
PLANNED = (DATA / "allocate" / "planner-arm64.out.yaml").read_text()
DTB = DATA / "import" / "dtb" / "qemu-virt-gicv3.dtb"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(PLANNER, "planner-arm64.yaml")
    yield tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def gpa_plan(*args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """gpa-plan as its own process (this tree's, through PYTHONPATH), with a time limit."""
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "gpa_plan", *args], timeout=60, **kwargs
    )


def mknod(path: Path, kind: int, device: tuple[int, int]) -> None:
    try:
        os.mknod(path, kind | 0o666, os.makedev(*device))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")


# -- what the output path names ------------------------------------------------------------


def test_a_character_device_is_written_into_and_stays_a_device(workdir: Path) -> None:
    mknod(workdir / "null", stat.S_IFCHR, (1, 3))  # a /dev/null of our own
    result = invoke("allocate", "planner-arm64.yaml", "-o", "null")
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.stat("null").st_mode)
    assert sorted(os.listdir()) == ["null", "planner-arm64.yaml"]


def test_a_fifo_gets_the_text_and_stays_a_fifo(workdir: Path) -> None:
    os.mkfifo("pipe")
    # A reader that is already there, so opening for writing does not wait; the output is
    # far smaller than a pipe's buffer.
    reader = os.open("pipe", os.O_RDONLY | os.O_NONBLOCK)
    try:
        result = invoke("allocate", "planner-arm64.yaml", "-o", "pipe")
        assert result.exit_code == 0, result.output
        received = os.read(reader, 1 << 20)
    finally:
        os.close(reader)
    assert received.decode() == PLANNED
    assert stat.S_ISFIFO(os.stat("pipe").st_mode)


@pytest.mark.parametrize("kind", ["a directory", "a socket", "a block device"])
def test_a_directory_socket_or_block_device_is_refused_and_kept(
    workdir: Path, kind: str
) -> None:
    path = workdir / "out"
    if kind == "a directory":
        path.mkdir()
    elif kind == "a socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
    else:
        mknod(path, stat.S_IFBLK, (7, 200))  # a loop device number; never opened here
    before = os.stat(path)
    with pytest.raises(OutputError) as refused:
        write_output(str(path), "text\n", io.StringIO())
    assert str(refused.value) == (
        f"cannot write {path}: it is {kind}, not a regular file; gpa-plan replaces only "
        "regular files and writes into FIFOs and character devices: give the path of a file"
    )
    after = os.stat(path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("new/out.yaml", "the directory new does not exist; create it first, or give a path "
         "in an existing directory"),
        ("planner-arm64.yaml/out.yaml", "planner-arm64.yaml is not a directory; give a path "
         "in an existing directory"),
    ],
)
def test_an_output_in_a_directory_that_is_not_there_says_which(
    workdir: Path, output: str, reason: str
) -> None:
    result = invoke("allocate", "planner-arm64.yaml", "-o", output)
    assert result.exit_code == 2
    assert result.stderr.endswith(f"Error: cannot write {output}: {reason}\n")
    assert sorted(os.listdir()) == ["planner-arm64.yaml"]


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("maps/", "a path ending in / names a directory; give the path of a file"),
        ("", "the path is empty; give the path of a file"),
    ],
)
def test_an_output_ending_in_a_slash_or_empty_is_refused_not_made_a_file(
    workdir: Path, output: str, reason: str
) -> None:
    result = invoke("allocate", "planner-arm64.yaml", "-o", output)
    assert result.exit_code == 2
    assert result.stderr.endswith(f"Error: cannot write {output}: {reason}\n")
    assert sorted(os.listdir()) == ["planner-arm64.yaml"]


def test_a_socket_output_is_exit_2_naming_what_it_is(workdir: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind("out.sock")
    server.close()
    result = invoke("allocate", "planner-arm64.yaml", "-o", "out.sock")
    assert result.exit_code == 2
    assert "cannot write out.sock: it is a socket, not a regular file" in result.stderr
    assert stat.S_ISSOCK(os.stat("out.sock").st_mode)


def test_dash_is_standard_output(workdir: Path) -> None:
    result = invoke("allocate", "planner-arm64.yaml", "-o", "-")
    assert result.exit_code == 0
    assert result.stdout == PLANNED
    assert not Path("-").exists()


@pytest.mark.parametrize("output", ["/dev/stdout", "out.txt"])
def test_the_file_stdout_is_redirected_to_is_written_not_replaced(
    workdir: Path, output: str
) -> None:
    # `gpa-plan allocate -o /dev/stdout > out.txt`, and `-o out.txt > out.txt`.
    with open("out.txt", "wb") as redirected:
        inode = os.fstat(redirected.fileno()).st_ino
        done = gpa_plan("allocate", "planner-arm64.yaml", "-o", output, stdout=redirected)
    assert done.returncode == 0
    assert os.stat("out.txt").st_ino == inode
    assert Path("out.txt").read_text() == PLANNED
    assert sorted(os.listdir()) == ["out.txt", "planner-arm64.yaml"]


def test_the_file_stderr_is_redirected_to_is_written_not_replaced(workdir: Path) -> None:
    with open("err.txt", "wb") as redirected:
        inode = os.fstat(redirected.fileno()).st_ino
        done = gpa_plan("allocate", "planner-arm64.yaml", "-o", "/dev/stderr", stderr=redirected)
    assert done.returncode == 0
    assert os.stat("err.txt").st_ino == inode
    assert Path("err.txt").read_text() == PLANNED


def test_a_symlinked_output_replaces_the_file_it_points_to(workdir: Path) -> None:
    Path("real.yaml").write_text("old\n")
    Path("link.yaml").symlink_to("real.yaml")
    assert invoke("allocate", "planner-arm64.yaml", "-o", "link.yaml").exit_code == 0
    assert Path("link.yaml").is_symlink()
    assert Path("real.yaml").read_text() == PLANNED


def test_a_replaced_file_keeps_its_owner_group_and_mode(workdir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    Path("out.yaml").write_text("old\n")
    os.chown("out.yaml", 65534, 65534)
    os.chmod("out.yaml", 0o640)
    assert invoke("allocate", "planner-arm64.yaml", "-o", "out.yaml").exit_code == 0
    after = os.stat("out.yaml")
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (65534, 65534, 0o640)
    assert Path("out.yaml").read_text() == PLANNED


def test_a_user_who_may_not_keep_the_owner_still_gets_the_file_written() -> None:
    # Only root may give a file away: for anyone else the replaced file becomes theirs.
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    shared = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's own directories are root-only
    try:
        shared.chmod(0o777)
        out = shared / "out.yaml"
        out.write_text("old\n")
        out.chmod(0o666)
        child = os.fork()
        if child == 0:  # an unprivileged writer, with gpa-plan already imported
            try:
                os.setgid(65534)
                os.setuid(65534)
                write_output(str(out), PLANNED, io.StringIO())
            finally:
                os._exit(0 if out.stat().st_uid == 65534 else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        after = out.stat()
        assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (65534, 65534, 0o666)
        assert out.read_text() == PLANNED
    finally:
        shutil.rmtree(shared)


def test_a_file_its_writer_may_not_write_is_refused_not_replaced() -> None:
    # A rename needs only a writable directory; a read-only file is refused all the same.
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    shared = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        shared.chmod(0o777)
        out = shared / "out.yaml"
        out.write_text("old\n")
        out.chmod(0o444)
        os.chown(out, 65534, 65534)
        child = os.fork()
        if child == 0:
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                write_output(str(out), PLANNED, io.StringIO())
            except OutputError as err:
                code = 0 if "read-only for you" in err.reason else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert out.read_text() == "old\n"
        assert stat.S_IMODE(out.stat().st_mode) == 0o444
    finally:
        shutil.rmtree(shared)


def test_a_hard_linked_output_is_detached_with_a_note(workdir: Path) -> None:
    Path("out.yaml").write_text("old\n")
    os.link("out.yaml", "other-name.yaml")
    result = invoke("allocate", "planner-arm64.yaml", "-o", "out.yaml")
    assert result.exit_code == 0
    assert result.stderr == (
        "note: out.yaml had 1 other hard link(s); they keep the old content, out.yaml is now "
        "a file of its own\n"
    )
    assert Path("out.yaml").read_text() == PLANNED
    assert Path("other-name.yaml").read_text() == "old\n"


# -- an output that is an input ------------------------------------------------------------


@pytest.mark.parametrize("alias", ["same", "symlink", "hard link"])
def test_allocate_refuses_to_write_over_its_input_and_points_to_in_place(
    workdir: Path, alias: str
) -> None:
    output = {"same": "planner-arm64.yaml", "symlink": "link.yaml", "hard link": "twin.yaml"}[alias]
    if alias == "symlink":
        Path("link.yaml").symlink_to("planner-arm64.yaml")
    elif alias == "hard link":
        os.link("planner-arm64.yaml", "twin.yaml")
    before = Path("planner-arm64.yaml").read_bytes()
    result = CliRunner().invoke(cli, ["allocate", "planner-arm64.yaml", "-o", output])
    assert result.exit_code == 2
    assert (
        f"Error: -o {output} is planner-arm64.yaml, the input; use --in-place to fill in its "
        "`auto` values and keep its comments, or give -o another file\n"
    ) in result.stderr
    assert Path("planner-arm64.yaml").read_bytes() == before


def test_allocate_refuses_to_write_over_the_gpa_plan_yaml_it_picked(workdir: Path) -> None:
    os.rename("planner-arm64.yaml", "gpa-plan.yaml")
    before = Path("gpa-plan.yaml").read_bytes()
    result = CliRunner().invoke(cli, ["allocate", "-o", "./gpa-plan.yaml"])
    assert result.exit_code == 2
    assert "-o ./gpa-plan.yaml is gpa-plan.yaml, the input" in result.stderr
    assert Path("gpa-plan.yaml").read_bytes() == before


@pytest.mark.parametrize("option", ["--svg", "--html"])
def test_map_refuses_to_draw_over_its_layout(workdir: Path, option: str) -> None:
    os.link("planner-arm64.yaml", "twin.yaml")
    before = Path("planner-arm64.yaml").read_bytes()
    result = CliRunner().invoke(cli, ["map", "planner-arm64.yaml", option, "twin.yaml"])
    assert result.exit_code == 2
    assert (
        f"Error: {option} twin.yaml is planner-arm64.yaml, the input; give it another file\n"
    ) in result.stderr
    assert Path("planner-arm64.yaml").read_bytes() == before


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (".gpa-plan.yaml", "strict: false\n"),
        ("pyproject.toml", "[tool.gpa-plan]\nstrict = false\n"),
    ],
)
def test_map_refuses_to_draw_over_the_configuration_it_reads(
    workdir: Path, name: str, text: str
) -> None:
    Path(name).write_text(text)
    result = CliRunner().invoke(cli, ["map", "planner-arm64.yaml", "--html", name])
    assert result.exit_code == 2
    assert result.stderr.endswith(
        f"Error: --html {name} is {workdir / name}, the configuration map reads; give it "
        "another file\n"
    )
    assert Path(name).read_text() == text


def test_import_refuses_to_write_over_its_input_file_or_standard_input(workdir: Path) -> None:
    shutil.copyfile(DTB, "virt.dtb")
    before = Path("virt.dtb").read_bytes()
    result = CliRunner().invoke(cli, ["import", "dtb", "virt.dtb", "-o", "virt.dtb"])
    assert result.exit_code == 2
    assert "Error: -o virt.dtb is virt.dtb, the input; give -o another file\n" in result.stderr
    with open("virt.dtb", "rb") as stdin:
        done = gpa_plan("import", "dtb", "-", "-o", "virt.dtb", stdin=stdin, capture_output=True)
    assert done.returncode == 2
    assert b"-o virt.dtb is standard input, the input" in done.stderr
    assert Path("virt.dtb").read_bytes() == before


def test_a_device_that_is_both_input_and_output_is_not_refused(workdir: Path) -> None:
    # `gpa-plan import dtb - -o /dev/null < /dev/null`: nothing would be replaced.
    with open(os.devnull, "rb") as stdin:
        done = gpa_plan("import", "dtb", "-", "-o", os.devnull, stdin=stdin, capture_output=True)
    assert done.returncode == 1  # an empty device tree, not a usage error
    assert b"the input" not in done.stderr


def test_a_new_output_beside_the_input_is_fine(workdir: Path) -> None:
    assert invoke("map", "planner-arm64.yaml", "--svg", "planner-arm64.svg").exit_code == 0
    assert Path("planner-arm64.svg").read_text().startswith("<svg ")


# -- temporaries ---------------------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_dead_writers_are_removed_and_a_live_runs_are_kept(
    workdir: Path,
) -> None:
    dead = dead_pid()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            stale = temp_name("out.yaml", dead, "0123abcd")
            running = temp_name("out.yaml", live.pid, "4567cdef")
            other_target = temp_name("other.yaml", dead, "89abcdef")
            for name in (stale, running, other_target):
                Path(name).write_text("half a plan")
            result = invoke("allocate", "planner-arm64.yaml", "-o", "out.yaml")
            assert result.exit_code == 0
            remaining = sorted(os.listdir())
        finally:
            live.kill()
    assert remaining == sorted(["out.yaml", "planner-arm64.yaml", running, other_target])


@pytest.mark.parametrize("name", ["a\nb.yaml", "\r.yaml", "a\x85\u2028.yaml", "x" * 300])
def test_a_leftover_is_recognised_whatever_the_target_is_named(tmp_path: Path, name: str) -> None:
    leftover = temp_name(name, dead_pid(), "0123abcd")
    (tmp_path / leftover).write_text("half a plan")
    assert remove_leftovers(str(tmp_path), name) == [leftover]
    assert os.listdir(tmp_path) == []


def test_a_leftover_that_is_not_a_regular_file_is_left_alone(tmp_path: Path) -> None:
    odd = tmp_path / temp_name("out.yaml", dead_pid(), "0123abcd")
    odd.mkdir()
    assert remove_leftovers(str(tmp_path), "out.yaml") == []
    assert odd.is_dir()


@pytest.mark.parametrize("name", ["a" * 250 + ".yaml", "é" * 125 + ".yaml"])
def test_a_name_of_255_bytes_is_written(workdir: Path, name: str) -> None:
    assert len(name.encode()) == NAME_MAX
    result = invoke("allocate", "planner-arm64.yaml", "-o", name)
    assert result.exit_code == 0, result.output
    assert Path(name).read_text() == PLANNED
    assert sorted(os.listdir()) == sorted([name, "planner-arm64.yaml"])


@given(
    name=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
                 min_size=1, max_size=300),
    pid=st.integers(1, 2**22),
)
def test_temporary_names_fit_in_name_max_and_start_with_the_target(name: str, pid: int) -> None:
    made = temp_name(name, pid, "0123abcd")
    assert len(made.encode()) <= NAME_MAX
    assert made.endswith(f".gpa-plan-{pid}-0123abcd.tmp")
    kept = made[1 : -len(f".gpa-plan-{pid}-0123abcd.tmp")]
    assert name.startswith(kept)
    assert kept == name or len(made.encode()) > NAME_MAX - 4  # cut only when it had to be
