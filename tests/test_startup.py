"""What a plain `gpa-plan check` loads: only what its path needs.

The start-up target (README, Performance; bench/bench_check.py measures it) depends on a
one-file check not importing pydantic's model layer, rich (off a terminal), the planner (no
`auto` entry), the ELF reader (no `--elf`) or pyelftools. A fresh interpreter tells.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import io, json, sys
before = set(sys.modules)  # what the interpreter and its site loaded is not ours
from gpa_plan.cli import main
out, sys.stdout = sys.stdout, io.StringIO()
code = main(sys.argv[1:])
sys.stdout = out
print(json.dumps({"exit": code, "modules": sorted(set(sys.modules) - before)}))
"""
NEVER_ON_A_PLAIN_CHECK = (
    "pydantic.main",
    "pydantic.json_schema",
    "rich",
    "elftools",
    "gpa_plan.elf.program",
    "gpa_plan.elf.placement",
    "gpa_plan.plan.place",
    "gpa_plan.plan.allocator",
    "difflib",
    "pathlib",  # only once a configuration file exists
    "tomllib",  # only for a pyproject.toml that may hold [tool.gpa-plan]
)


def modules_after(*args: str, cwd: Path = ROOT) -> tuple[int, set[str]]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=True,
    )
    report = json.loads(done.stdout)
    return report["exit"], set(report["modules"])


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_plain_check_loads_nothing_it_does_not_use(fmt: str) -> None:
    code, modules = modules_after("check", "--format", fmt, "layouts/qemu-virt-arm64.yaml")
    assert code == 0
    assert "gpa_plan.check.run" in modules  # the probe did run a check
    assert sorted(m for m in NEVER_ON_A_PLAIN_CHECK if m in modules) == []


def test_auto_entries_and_elf_programs_do_load_the_planner_and_the_reader() -> None:
    elf = ROOT / "tests" / "data" / "elf"
    program = next(p for p in sorted(elf.iterdir()) if p.suffix == ".elf")
    _, modules = modules_after(
        "check", "--elf", str(program), "tests/data/schema/valid/auto-placement.yaml"
    )
    assert {"gpa_plan.plan.place", "gpa_plan.elf.program", "elftools"} <= modules


FREEZE_PROBE = """
import gc, sys
from gpa_plan.cli import main
as_program = sys.argv[1] == "program"
sys.argv = ["gpa-plan", "rules"]
main() if as_program else main(["rules"])
sys.stderr.write(str(gc.get_freeze_count()))
"""


@pytest.mark.parametrize(("how", "frozen"), [("program", True), ("caller", False)])
def test_only_the_program_itself_spares_the_final_collection(how: str, frozen: bool) -> None:
    # At exit CPython collects once more; frozen objects are skipped. A caller that runs
    # main() inside its own process keeps its collector as it was.
    done = subprocess.run(
        [sys.executable, "-c", FREEZE_PROBE, how],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert (int(done.stderr) > 0) is frozen
