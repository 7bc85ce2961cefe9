"""The pre-commit hook: the manifest's fields, and the hook run end to end in a throwaway git
repository, both as other repositories install it (`language: python`, through `try-repo`)
and as a local hook that needs no package index."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parent.parent
MANIFEST = ROOT / ".pre-commit-hooks.yaml"
FIXTURES = Path(__file__).parent / "data" / "ci" / "layouts"
CLEAN = (FIXTURES / "clean.yaml").read_text()
OVERLAP = (FIXTURES / "overlap.yaml").read_text()
OVERLAP_FINDING = "layouts/overlap.yaml:11:11: error[memslot-overlap]"
# pre-commit's exit status when it could not even set up the hook (e.g. no package index).
PRE_COMMIT_SETUP_FAILED = 3


def hook() -> dict[str, Any]:
    hooks = yaml.safe_load(MANIFEST.read_text())
    assert isinstance(hooks, list) and len(hooks) == 1
    found: dict[str, Any] = hooks[0]
    return found


# -- the manifest ------------------------------------------------------------------------------


def test_manifest_declares_the_gpa_plan_hook() -> None:
    declared = hook()
    assert declared["id"] == "gpa-plan"
    assert declared["name"] == "gpa-plan check"
    assert declared["entry"] == "gpa-plan check --quiet"  # linters print findings, not tables
    assert declared["language"] == "python"
    assert declared["types"] == ["yaml"]
    assert declared["pass_filenames"] is True
    assert declared["require_serial"] is False


def test_manifest_entry_is_a_console_script_of_the_package() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    script = hook()["entry"].split()[0]
    assert re.search(rf'^{re.escape(script)} = "gpa_plan\.launch:main"$', pyproject, re.MULTILINE)


@pytest.mark.parametrize(
    "path",
    [
        "layouts/qemu-virt-arm64.yaml",
        "layout/board.yml",
        "vmm/layouts/arm64/virt.yaml",
        "gpa-plan/selftests.yaml",
        "gpa-plan.yaml",
        "tools/vmm/gpa-plan.yml",
    ],
)
def test_files_pattern_matches_usual_layout_paths(path: str) -> None:
    assert re.search(hook()["files"], path)


@pytest.mark.parametrize(
    "path",
    [
        ".gpa-plan.yaml",
        ".github/workflows/ci.yaml",
        "mylayouts/x.yaml",
        "layouts/README.md",
        "config/gpa-plan.yaml.bak",
        "docker-compose.yml",
    ],
)
def test_files_pattern_leaves_other_yaml_alone(path: str) -> None:
    assert not re.search(hook()["files"], path)


def test_manifest_is_valid_for_pre_commit(tmp_path: Path) -> None:
    pytest.importorskip("pre_commit")
    result = run_pre_commit(["validate-manifest", str(MANIFEST)], tmp_path, tmp_path / "home")
    assert result.returncode == 0, result.stdout + result.stderr


# -- end to end --------------------------------------------------------------------------------


def run_pre_commit(
    args: list[str], cwd: Path, home: Path, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    """pre-commit with its own cache in ``home``, no colour, and ``path`` as PATH if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRE_COMMIT", "GIT_"))}
    env["PRE_COMMIT_HOME"] = str(home)
    env["PRE_COMMIT_COLOR"] = "never"
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=gpa-plan tests",
            "-c",
            "user.email=tests@gpa-plan.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def consumer(tmp_path: Path) -> Path:
    """A repository with layouts the hook should check, and YAML it should leave alone."""
    pytest.importorskip("pre_commit")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "consumer"
    files = {
        "layouts/clean.yaml": CLEAN,
        "layouts/overlap.yaml": OVERLAP,
        "gpa-plan.yaml": CLEAN,
        "ci/not-a-layout.yaml": "jobs: [\n",  # broken YAML, but not a layout path
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "init", "-q")
    return repo


def assert_hook_fails_on_the_overlap_only(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "gpa-plan check" in output and "Failed" in output
    assert OVERLAP_FINDING in output
    assert "not-a-layout" not in output
    assert "end (incl.)" not in output  # findings, not region tables (check --quiet)


def test_local_hook_mirroring_the_manifest_checks_only_layout_files(
    consumer: Path, tmp_path: Path
) -> None:
    local = {**hook(), "language": "system"}
    command = hook()["entry"].split()[1:]  # `check --quiet`, after the console script
    local["entry"] = shlex.join([sys.executable, "-m", "gpa_plan", *command])
    config = {"repos": [{"repo": "local", "hooks": [local]}]}
    (consumer / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    git(consumer, "add", "-A")
    home = tmp_path / "pre-commit-home"

    assert_hook_fails_on_the_overlap_only(run_pre_commit(["run", "--all-files"], consumer, home))

    (consumer / ".gpa-plan.yaml").write_text("ignore: [memslot-overlap, ucall-not-io]\n")
    git(consumer, "add", "-A")
    result = run_pre_commit(["run", "--all-files"], consumer, home)
    assert result.returncode == 0, result.stdout + result.stderr


def hook_repository(tmp_path: Path) -> Path:
    """A committed copy of this project, as pre-commit would clone it from its remote."""
    repo = tmp_path / "hook-repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "gpa_plan", repo / "gpa_plan", ignore=ignore)
    for name in ("pyproject.toml", ".pre-commit-hooks.yaml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, repo / name)
    if not (repo / "README.md").exists():  # pyproject.toml names it as the long description
        (repo / "README.md").write_text("# gpa-plan\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "hook repository")
    return repo


def test_installed_hook_checks_only_layout_files(consumer: Path, tmp_path: Path) -> None:
    repo = hook_repository(tmp_path)
    git(consumer, "add", "-A")
    home = tmp_path / "pre-commit-home"
    args = ["try-repo", str(repo), "gpa-plan", "--all-files"]

    result = run_pre_commit(args, consumer, home)
    if result.returncode == PRE_COMMIT_SETUP_FAILED:
        pytest.skip(f"pre-commit could not install the hook here:\n{result.stdout[-2000:]}")
    assert_hook_fails_on_the_overlap_only(result)

    (consumer / "layouts" / "overlap.yaml").unlink()
    git(consumer, "add", "-A")
    result = run_pre_commit(args, consumer, home)
    assert result.returncode == 0, result.stdout + result.stderr
