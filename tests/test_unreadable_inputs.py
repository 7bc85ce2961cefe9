"""Inputs every command cannot read: missing, unreadable, FIFOs, devices, directories, files
past the 16 MiB bound. Each is a usage error (exit 2) with ``gpa-plan: cannot read PATH: ...``
on stderr; `check` still checks and reports every other file it was given.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gpa_plan.check.batch import check_paths, layout_files
from gpa_plan.cli import cli
from gpa_plan.elf.program import load_program
from gpa_plan.inputs import MAX_INPUT_BYTES, InputError

ROOT = Path(__file__).parent.parent
TINY_ELF = Path(__file__).parent / "data" / "elf" / "tiny-aarch64.elf"
PLAIN_ENV = {"COLUMNS": "160", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}

CLEAN = "layout: 1\narch: arm64\nmemslots:\n  - {name: ram, base: 0x4000_0000, size: 1G}\n"
OVERLAP = CLEAN + "  - {name: ram2, base: 0x4000_0000, size: 1G}\n"
OVERLAP_LINE = "b.yaml:5:24: error[memslot-overlap] memslot 'ram2' (slot 1)"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def run(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner(env=PLAIN_ENV).invoke(cli, list(args), input=stdin)


def write(name: str, text: str = CLEAN) -> Path:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def checked(result: Result) -> list[str]:
    """The files a text check reported, from the titles of their tables."""
    return [line.split(" (")[0] for line in result.stdout.splitlines() if " (arm64, " in line]


@pytest.fixture
def fifo() -> Iterator[Callable[[str], None]]:
    """Make FIFOs that cannot hang the suite: a writer waits on each and closes it at once, so
    a reader that opened it blocking would get an empty file, not wait forever."""
    writers: list[tuple[str, threading.Thread]] = []

    def make(name: str) -> None:
        os.mkfifo(name)
        path = os.path.abspath(name)
        writer = threading.Thread(target=lambda: open(path, "wb").close(), daemon=True)
        writer.start()
        writers.append((path, writer))

    yield make
    for path, writer in writers:
        # Be its reader until the writer is done, so that a writer still waiting can finish.
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        writer.join(timeout=10)
        os.close(reader)


def refuse_to_open(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make the reader's open() of ``names`` fail as an unreadable file does (root reads
    anything, so chmod alone cannot show this)."""
    real_open = os.open

    def fake_open(path: str, flags: int, *args: int) -> int:
        if os.path.basename(path) in names:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr("gpa_plan.inputs.os.open", fake_open)


# -- check: every path is tried, the worst status wins ----------------------------------------


def test_check_reports_a_missing_file_and_still_checks_the_others() -> None:
    write("a.yaml")
    write("b.yaml", OVERLAP)
    result = run("check", "a.yaml", "missing.yaml", "b.yaml")
    assert result.exit_code == 2  # 2 (missing) beats 1 (b.yaml's error)
    assert checked(result) == ["a.yaml", "b.yaml"]
    assert OVERLAP_LINE in result.stdout
    assert result.stderr == "gpa-plan: cannot read missing.yaml: no such file or directory\n"
    summary = result.stdout.splitlines()[-1]
    assert summary == "2 files checked, 1 could not be read: 1 error, 0 warnings"


def test_check_exits_1_when_every_file_was_read_and_one_has_an_error() -> None:
    write("a.yaml")
    write("b.yaml", OVERLAP)
    assert run("check", "a.yaml", "b.yaml").exit_code == 1


def test_check_refuses_a_fifo_and_a_device_without_reading_them(
    fifo: Callable[[str], None],
) -> None:
    write("a.yaml")
    fifo("pipe.yaml")
    result = run("check", "pipe.yaml", "/dev/null", "a.yaml")
    assert result.exit_code == 2
    assert checked(result) == ["a.yaml"]
    assert result.stderr == (
        "gpa-plan: cannot read pipe.yaml: it is a FIFO (named pipe), not a regular file; "
        "give the path of a file (or - for standard input)\n"
        "gpa-plan: cannot read /dev/null: it is a character device, not a regular file; "
        "give the path of a file (or - for standard input)\n"
    )


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_check_of_a_fifo_or_dev_zero_ends_in_bounded_time_and_memory(
    tmp_path: Path, kind: str
) -> None:
    # A real process, so that a reader that waited on the FIFO or read /dev/zero to the end
    # fails this test by its timeout or memory limit instead of hanging the suite.
    target = "/dev/zero"
    if kind == "fifo":
        os.mkfifo(tmp_path / "pipe.yaml")
        target = str(tmp_path / "pipe.yaml")

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    done = subprocess.run(
        [sys.executable, "-m", "gpa_plan", "check", target, "--elf", target],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_memory,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2
    assert done.stderr.count(f"gpa-plan: cannot read {target}: it is a ") == 2


def test_check_refuses_a_file_past_the_input_bound(tmp_path: Path) -> None:
    write("a.yaml")
    with open("big.yaml", "wb") as big:
        big.truncate(MAX_INPUT_BYTES + 1)  # sparse: costs no disk
    result = run("check", "big.yaml", "a.yaml")
    assert result.exit_code == 2
    assert checked(result) == ["a.yaml"]
    assert result.stderr.startswith(
        "gpa-plan: cannot read big.yaml: it is larger than 16 MiB, the most gpa-plan reads "
        "from one input"
    )


def test_check_reads_a_file_at_the_input_bound(tmp_path: Path) -> None:
    # Exactly MAX_INPUT_BYTES is read: padding with a YAML comment keeps it a clean layout.
    text = CLEAN.encode()
    Path("edge.yaml").write_bytes(text + b"#" * (MAX_INPUT_BYTES - len(text) - 1) + b"\n")
    assert run("check", "edge.yaml").exit_code == 0


def test_check_reports_an_unreadable_file_and_checks_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write("a.yaml")
    write("secret.yaml")
    refuse_to_open(monkeypatch, "secret.yaml")
    result = run("check", "secret.yaml", "a.yaml")
    assert result.exit_code == 2
    assert checked(result) == ["a.yaml"]
    assert result.stderr == "gpa-plan: cannot read secret.yaml: permission denied\n"


def test_check_follows_a_symlink_to_a_shipped_layout() -> None:
    linked = ROOT / "tests" / "data" / "links" / "selftests-arm64.yaml"
    assert linked.is_symlink()
    result = run("check", str(linked))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""


def test_a_path_with_control_characters_is_printed_escaped() -> None:
    result = run("check", "evil\x1b[2J.yaml")
    assert result.exit_code == 2
    assert result.stderr == ("gpa-plan: cannot read evil\\x1b[2J.yaml: no such file or directory\n")


# -- check -: standard input ---------------------------------------------------------------


def test_check_dash_reads_standard_input_and_names_it_stdin() -> None:
    result = run("check", "-", stdin=OVERLAP.encode())
    assert result.exit_code == 1
    assert "<stdin>:5:24: error[memslot-overlap] memslot 'ram2'" in result.stdout


def test_an_imported_layout_is_checked_through_a_pipe() -> None:
    dtb = Path(__file__).parent / "data" / "import" / "dtb" / "firecracker-aarch64.dtb"
    imported = run("import", "dtb", str(dtb))
    assert imported.exit_code == 0, imported.stderr
    result = run("check", "-", stdin=imported.stdout.encode())
    assert (result.exit_code, result.stderr) == (0, "")
    assert checked(result) == ["<stdin>"]


def test_check_dash_twice_reads_standard_input_once() -> None:
    result = run("check", "-", "-", stdin=CLEAN.encode())
    assert result.exit_code == 2
    assert checked(result) == ["<stdin>"]
    assert result.stderr == "gpa-plan: cannot read -: standard input can be read only once\n"


def test_check_dash_refuses_standard_input_past_the_bound() -> None:
    result = run("check", "-", stdin=b"#" * (MAX_INPUT_BYTES + 1))
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "gpa-plan: cannot read standard input: it is larger than 16 MiB"
    )


@pytest.mark.parametrize("args", [["check", "-", "a.yaml"], ["import", "dtb", "-"]])
def test_a_closed_standard_input_is_reported_as_closed(args: list[str]) -> None:
    write("a.yaml")
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", sys.executable, "-m", "gpa_plan", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "gpa-plan: cannot read standard input: it is closed; give a file, or redirect "
        "standard input from one\n"
    )


# -- check DIR ------------------------------------------------------------------------------


def test_check_dir_reports_an_unlistable_subdirectory_and_checks_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write("tree/a.yaml")
    write("tree/locked/b.yaml")
    real_scandir = os.scandir

    def fake_scandir(path: str) -> Iterator[os.DirEntry[str]]:
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", fake_scandir)
    result = run("check", "tree")
    assert result.exit_code == 2
    assert checked(result) == ["tree/a.yaml"]
    assert result.stderr == (
        "gpa-plan: cannot read tree/locked: cannot list this directory (permission denied), "
        "so the layouts below it were not checked; make it readable, or leave it out\n"
    )


@pytest.mark.parametrize("contents", [[], ["README.md", "notes.txt"]])
def test_check_dir_without_layouts_is_an_error(contents: list[str]) -> None:
    write("a.yaml")
    Path("empty").mkdir()
    for name in contents:
        write(f"empty/{name}", "not a layout\n")
    result = run("check", "empty", "a.yaml")
    assert result.exit_code == 2
    assert checked(result) == ["a.yaml"]
    assert result.stderr == (
        "gpa-plan: cannot read empty: no *.yaml or *.yml file below this directory, so "
        "nothing was checked (hidden and excluded paths are skipped); give the directory that "
        "holds the layouts\n"
    )


def test_check_dir_skips_hidden_paths_tool_folders_and_virtual_environments() -> None:
    write("tree/a.yaml")
    write("tree/sub/b.yaml")
    for skipped in (
        "tree/.git/objects/x.yaml",
        "tree/.venv/lib/site.yaml",
        "tree/.gpa-plan.yaml",  # configuration, not a layout
        "tree/node_modules/pkg/c.yaml",
        "tree/sub/__pycache__/d.yaml",
        "tree/python-env/lib/e.yaml",  # a virtual environment by its pyvenv.cfg
    ):
        write(skipped, OVERLAP)
    write("tree/python-env/pyvenv.cfg", "home = /usr/bin\n")
    result = run("check", "tree")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert checked(result) == ["tree/a.yaml", "tree/sub/b.yaml"]


def test_a_hidden_directory_named_on_the_command_line_is_walked() -> None:
    write(".layouts/a.yaml")
    write(".layouts/.hidden/b.yaml")
    assert checked(run("check", ".layouts")) == [".layouts/a.yaml"]


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["broken"], ["tree/a.yaml", "tree/sub/b.yaml"]),
        (["tree/sub"], ["tree/a.yaml", "tree/broken/x.yaml"]),
        (["*/b.yaml", "x.yaml"], ["tree/a.yaml"]),
        (["*.yml"], ["tree/a.yaml", "tree/broken/x.yaml", "tree/sub/b.yaml"]),
    ],
)
def test_exclude_skips_matching_directories_and_files(
    patterns: list[str], expected: list[str]
) -> None:
    for name in ("tree/a.yaml", "tree/sub/b.yaml", "tree/broken/x.yaml"):
        write(name)
    args = [arg for p in patterns for arg in ("--exclude", p)]
    result = run("check", "tree", *args)
    assert result.exit_code == 0, result.stderr
    assert checked(result) == expected


def test_exclude_applies_to_a_file_named_on_the_command_line_too() -> None:
    write("a.yaml")
    write("b.yaml", OVERLAP)
    result = run("check", "a.yaml", "b.yaml", "--exclude", "b.yaml")
    assert result.exit_code == 0
    assert checked(result) == ["a.yaml"]


def test_a_directory_whose_layouts_are_all_excluded_is_an_error() -> None:
    write("tree/a.yaml")
    result = run("check", "tree", "--exclude", "a.yaml")
    assert result.exit_code == 2
    assert "nothing was checked (hidden and excluded paths are skipped)" in result.stderr


def test_check_dir_follows_file_symlinks_skips_directory_symlinks_and_other_files(
    tmp_path: Path,
) -> None:
    write("elsewhere/outside.yaml")
    write("tree/a.yml")
    write("tree/notes.txt", "not a layout\n")
    Path("tree/linked.yaml").symlink_to(tmp_path / "elsewhere" / "outside.yaml")
    Path("tree/linked-dir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    Path("tree/loop").symlink_to(tmp_path / "tree", target_is_directory=True)
    assert list(layout_files(["tree"])) == ["tree/a.yml", "tree/linked.yaml"]
    result = run("check", "tree")
    assert result.exit_code == 0, result.stderr
    assert checked(result) == ["tree/a.yml", "tree/linked.yaml"]


def test_check_dir_named_through_a_symlink_is_walked(tmp_path: Path) -> None:
    write("real/a.yaml")
    Path("alias").symlink_to(tmp_path / "real", target_is_directory=True)
    assert list(layout_files(["alias"])) == ["alias/a.yaml"]


def test_check_dir_reports_a_dangling_layout_link_and_a_fifo_inside_it(
    fifo: Callable[[str], None],
) -> None:
    write("tree/a.yaml")
    Path("tree/gone.yaml").symlink_to("nowhere.yaml")
    fifo("tree/pipe.yml")
    result = run("check", "tree")
    assert result.exit_code == 2
    assert checked(result) == ["tree/a.yaml"]
    assert result.stderr.splitlines() == [
        "gpa-plan: cannot read tree/gone.yaml: no such file or directory",
        "gpa-plan: cannot read tree/pipe.yml: it is a FIFO (named pipe), not a regular file; "
        "give the path of a file (or - for standard input)",
    ]


# -- --elf ---------------------------------------------------------------------------------


def test_an_unreadable_elf_is_exit_2_and_the_layout_is_still_checked() -> None:
    write("b.yaml", OVERLAP)
    result = run("check", "b.yaml", "--elf", "nope.elf", "--elf", str(TINY_ELF))
    assert result.exit_code == 2
    assert checked(result) == ["b.yaml"]
    assert OVERLAP_LINE in result.stdout
    assert result.stderr == "gpa-plan: cannot read nope.elf: no such file or directory\n"


def test_load_program_reads_through_the_bounded_reader(fifo: Callable[[str], None]) -> None:
    fifo("guest.elf")
    with pytest.raises(InputError, match="a FIFO"):
        load_program("guest.elf")
    assert load_program(TINY_ELF).machine == "EM_AARCH64"


def test_an_elf_past_the_input_bound_is_read_for_its_headers_only() -> None:
    # A kernel with its debug information is hundreds of MiB; only its headers are read.
    big = Path("vmlinux")
    big.write_bytes(TINY_ELF.read_bytes())
    with open(big, "r+b") as stream:
        stream.truncate(2 * MAX_INPUT_BYTES)  # sparse: costs no disk
    assert load_program(big).segments == load_program(TINY_ELF).segments


def test_check_paths_gives_results_and_what_could_not_be_read() -> None:
    write("a.yaml")
    run_ = check_paths(["a.yaml", "gone.yaml"], elf_files=["gone.elf"])
    assert [r.file for r in run_.results] == ["a.yaml"]
    assert [(e.path, e.reason) for e in run_.unreadable] == [
        ("gone.elf", "no such file or directory"),
        ("gone.yaml", "no such file or directory"),
    ]


def test_a_file_named_twice_is_checked_once_under_its_first_name() -> None:
    write("d/a.yaml", OVERLAP)
    os.symlink("a.yaml", "d/link.yml")
    os.link("d/a.yaml", "hard.yaml")
    result = run("check", "--format", "json", "d/a.yaml", "d", "./d/a.yaml", "hard.yaml")
    document = json.loads(result.stdout)
    assert [r["file"] for r in document["results"]] == ["d/a.yaml"]
    assert document["summary"] == {"files": 1, "errors": 1, "warnings": 0}
    assert result.exit_code == 1


def test_a_program_named_twice_is_checked_once() -> None:
    write("a.yaml")
    shutil.copyfile(TINY_ELF, "guest.elf")
    os.symlink("guest.elf", "link.elf")
    run_ = check_paths(["a.yaml"], elf_files=["guest.elf", "./guest.elf", "link.elf"])
    (result,) = run_.results
    assert [p.file for p in result.programs or ()] == ["guest.elf"]


def test_an_arch_named_twice_is_checked_once() -> None:
    write("b.yaml", OVERLAP)
    result = run("check", "b.yaml", "--arch", "x86_64", "--arch", "arm64", "--arch", "x86_64")
    assert result.stdout.count(OVERLAP_LINE) == 2  # once per architecture
    assert "x86_64 and x86_64" not in result.stdout
    document = json.loads(run("check", "--format", "json", "b.yaml", "--arch", "x86_64",
                              "--arch", "x86_64").stdout)
    assert [r["arch"] for r in document["results"]] == ["x86_64"]


# -- the commands that read one FILE --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["explain", "{}", "0x0"],
        ["map", "{}"],
        ["allocate", "{}"],
        ["import", "qemu-mtree", "{}"],
        ["import", "dtb", "{}"],
    ],
)
@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("missing.yaml", "no such file or directory"),
        ("pipe.yaml", "it is a FIFO (named pipe), not a regular file; give the path of a file"),
        ("dir.yaml", "it is a directory, not a regular file; give the path of a file"),
        ("/dev/null", "it is a character device, not a regular file; give the path of a file"),
    ],
)
def test_a_command_refuses_a_file_it_cannot_read(
    args: list[str], target: str, reason: str, fifo: Callable[[str], None]
) -> None:
    fifo("pipe.yaml")
    Path("dir.yaml").mkdir()
    result = run(*(a.replace("{}", target) for a in args))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"gpa-plan: cannot read {target}: {reason}")


@pytest.mark.parametrize(
    "args",
    [["explain", "-", "0x0"], ["map", "-"], ["allocate", "-"], ["check", "a.yaml", "--elf", "-"]],
)
def test_a_command_that_takes_no_standard_input_says_so_for_dash(args: list[str]) -> None:
    write("a.yaml")
    result = run(*args, stdin=CLEAN.encode())
    assert result.exit_code == 2
    assert result.stderr == (
        "gpa-plan: cannot read -: standard input is not read here; give the path of a file "
        "(./- for a file named -)\n"
    )


def test_import_refuses_standard_input_past_the_bound() -> None:
    result = run("import", "qemu-mtree", "-", stdin=b"\n" * (MAX_INPUT_BYTES + 1))
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "gpa-plan: cannot read standard input: it is larger than 16 MiB"
    )


def test_explain_reports_an_unreadable_file(monkeypatch: pytest.MonkeyPatch) -> None:
    write("a.yaml")
    refuse_to_open(monkeypatch, "a.yaml")
    result = run("explain", "a.yaml", "0x0")
    assert (result.exit_code, result.stderr) == (
        2,
        "gpa-plan: cannot read a.yaml: permission denied\n",
    )


# -- allocate without FILE: ./gpa-plan.yaml -------------------------------------------------

ADVICE = (
    "; it is the layout allocate reads when no FILE is given: pass FILE, or remove or rename "
    "./gpa-plan.yaml to start from the built-in layout\n"
)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda: Path("gpa-plan.yaml").mkdir(),
            "it is a directory, not a regular file; give the path of a file",
        ),
        ("fifo", "it is a FIFO (named pipe), not a regular file; give the path of a file"),
        (lambda: Path("gpa-plan.yaml").symlink_to("gone.yaml"), "no such file or directory"),
    ],
)
def test_allocate_refuses_a_default_layout_it_cannot_read(
    make: Callable[[], object] | str, reason: str, fifo: Callable[[str], None]
) -> None:
    if callable(make):
        make()
    else:
        fifo("gpa-plan.yaml")
    result = run("allocate")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"gpa-plan: cannot read ./gpa-plan.yaml: {reason}{ADVICE}"


def test_allocate_refuses_an_unreadable_default_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    write("gpa-plan.yaml")
    refuse_to_open(monkeypatch, "gpa-plan.yaml")
    result = run("allocate")
    assert (result.exit_code, result.stderr) == (
        2,
        f"gpa-plan: cannot read ./gpa-plan.yaml: permission denied{ADVICE}",
    )


def test_allocate_without_a_default_layout_uses_the_built_in_one() -> None:
    result = run("allocate", "--format", "env")
    assert result.exit_code == 0, result.stderr
    assert "<built-in selftests-arm64>" in result.stdout


# -- a real process without the privilege to read everything --------------------------------


def unprivileged(command: list[str]) -> list[str]:
    """``command`` run by a process that file permissions apply to. As root, drop the two
    capabilities that bypass them; root still owns the files, whose mode 000 then refuses it."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without util-linux setpriv to drop CAP_DAC_OVERRIDE")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]


def test_unreadable_files_and_directories_for_a_real_unprivileged_process(
    tmp_path: Path,
) -> None:
    write("tree/a.yaml")
    write("tree/secret.yaml").chmod(0)
    write("tree/locked/b.yaml")
    Path("tree/locked").chmod(0)
    write("gpa-plan.yaml").chmod(0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        checked_tree = subprocess.run(
            unprivileged([sys.executable, "-m", "gpa_plan", "check", "tree"]),
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        allocated = subprocess.run(
            unprivileged([sys.executable, "-m", "gpa_plan", "allocate"]),
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    finally:
        Path("tree/locked").chmod(0o755)
    assert checked_tree.returncode == 2
    assert "tree/a.yaml (arm64, 40-bit)" in checked_tree.stdout
    assert checked_tree.stderr.splitlines() == [
        "gpa-plan: cannot read tree/secret.yaml: permission denied",
        "gpa-plan: cannot read tree/locked: cannot list this directory (permission denied), "
        "so the layouts below it were not checked; make it readable, or leave it out",
    ]
    assert (allocated.returncode, allocated.stderr) == (
        2,
        f"gpa-plan: cannot read ./gpa-plan.yaml: permission denied{ADVICE}",
    )
