"""The documentation that ships with the code: it names nothing that does not exist, its install
lines work with what exists today, and its links resolve."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MANIFEST = ROOT / ".pre-commit-hooks.yaml"

# Everything a user gets: the README and docs, the package, the layouts, the hook manifest.
SHIPPED_TEXT = sorted(
    {README, ROOT / "CHANGELOG.md", ROOT / "pyproject.toml", MANIFEST, *DOCS}
    | {p for p in (ROOT / "gpa_plan").rglob("*") if p.is_file() and p.suffix in {".py", ".yaml"}}
    | {p for p in (ROOT / "layouts").rglob("*.yaml")}
)
# A placeholder owner, and a web site gpa-plan does not have.
NOT_REAL = ("OWNER/", "gpa-plan.dev")


def fenced_blocks(path: Path, *languages: str) -> list[str]:
    """The fenced code blocks of a Markdown file whose info string is one of ``languages``."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)
    return [body for language, body in blocks if language in languages]


def test_there_is_shipped_text_to_search() -> None:
    names = {p.name for p in SHIPPED_TEXT}
    assert {"README.md", "cli.py", "qemu-virt-arm64.yaml", ".pre-commit-hooks.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED_TEXT, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_text_names_no_placeholder_or_made_up_address(path: Path) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    for needle in NOT_REAL:
        assert needle not in text, f"{path.relative_to(ROOT)} contains {needle!r}"


# -- the README's install lines ----------------------------------------------------------------


def pip_install_targets(command: str) -> list[str]:
    """What one shell line asks `pip install` to install (options left out)."""
    targets: list[str] = []
    for part in re.split(r"&&|;|\|", command):
        words = shlex.split(part, comments=True)
        if len(words) >= 2 and words[0].endswith("pip") and words[1] == "install":
            targets += [w for w in words[2:] if not w.startswith("-")]
    return targets


def readme_install_targets() -> list[str]:
    lines = [line for block in fenced_blocks(README, "sh") for line in block.splitlines()]
    for block in fenced_blocks(README, "yaml"):
        for step in re.findall(r"run: (.*)", block):
            lines.append(step)
    return [target for line in lines for target in pip_install_targets(line)]


def test_readme_installs_from_paths_only() -> None:
    targets = readme_install_targets()
    assert "." in targets and any(target.endswith(".whl") for target in targets)
    for target in targets:
        # A bare name, a requirement or a VCS URL would be fetched from an index or a remote:
        # gpa-plan is on neither yet. A path has a slash or is `.` (extras allowed).
        assert re.fullmatch(r"\.(\[[\w,]+\])?|[\w./-]*/[\w./-]*", target), target
        assert "://" not in target and not target.startswith("git+"), target


def test_readme_wheel_name_is_the_one_pip_builds() -> None:
    version = re.search(r'^version = "(.*)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version
    wheels = {t.rsplit("/", 1)[-1] for t in readme_install_targets() if t.endswith(".whl")}
    assert wheels == {f"gpa_plan-{version[1]}-py3-none-any.whl"}


def documented_precommit_configs() -> list[tuple[Path, dict[str, Any]]]:
    configs = []
    for path in (README, ROOT / "docs" / "ci.md"):
        for block in fenced_blocks(path, "yaml"):
            if block.startswith("repos:"):
                configs.append((path, yaml.safe_load(block)))
    return configs


def test_documented_precommit_configs_use_local_hooks_like_the_manifest() -> None:
    configs = documented_precommit_configs()
    assert len(configs) >= 3  # the README's, and docs/ci.md's two
    (manifest,) = yaml.safe_load(MANIFEST.read_text())
    for path, config in configs:
        for repo in config["repos"]:
            assert repo["repo"] == "local" and "rev" not in repo, path
            for hook in repo["hooks"]:
                for key in ("id", "name", "entry", "types", "files"):
                    assert hook[key] == manifest[key], (path, key)
                assert hook["language"] in {"system", "python"}, path
                for dependency in hook.get("additional_dependencies", []):
                    assert Path(dependency).is_absolute(), (path, dependency)


def run_pre_commit(args: list[str], cwd: Path, env_path: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRE_COMMIT", "GIT_"))}
    env |= {"PRE_COMMIT_HOME": str(cwd.parent / "home"), "PRE_COMMIT_COLOR": "never"}
    env["PATH"] = env_path
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_documented_precommit_configs_are_valid(tmp_path: Path) -> None:
    pytest.importorskip("pre_commit")
    for i, (_, config) in enumerate(documented_precommit_configs()):
        path = tmp_path / f"config-{i}.yaml"
        path.write_text(yaml.safe_dump(config))
        result = run_pre_commit(["validate-config", str(path)], tmp_path, os.environ["PATH"])
        assert result.returncode == 0, result.stdout + result.stderr


def test_readme_precommit_hook_runs_the_installed_gpa_plan(tmp_path: Path) -> None:
    """The README's `repo: local` hook, with a `gpa-plan` of this tree first on the PATH."""
    pytest.importorskip("pre_commit")
    ((_, config),) = [c for c in documented_precommit_configs() if c[0] == README]
    config["repos"][0]["hooks"][0].pop("args", None)
    repo = tmp_path / "consumer"
    (repo / "layouts").mkdir(parents=True)
    fixtures = ROOT / "tests" / "data" / "ci" / "layouts"
    for name in ("clean.yaml", "overlap.yaml"):
        (repo / "layouts" / name).write_text((fixtures / name).read_text())
    (repo / "notes.yaml").write_text("jobs: [\n")  # not a layout path: left alone
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "gpa-plan"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m gpa_plan "$@"\n')
    shim.chmod(0o755)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)

    result = run_pre_commit(["run", "--all-files"], repo, f"{bin_dir}:{os.environ['PATH']}")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "layouts/overlap.yaml:11:11: error[memslot-overlap]" in output
    assert "notes.yaml" not in output and "end (incl.)" not in output
