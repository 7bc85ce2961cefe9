"""The documentation that ships with the code: it names nothing that does not exist, its install
lines work with what exists today, and its links resolve."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_precommit import run_pre_commit

ROOT = Path(__file__).resolve().parent.parent
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


# The repository is its own reference: nothing cites a document it does not contain.
UNSHIPPED_REFERENCES = re.compile(r"kvm-semantics|SPEC section|\bspec §|the contract\b", re.I)
# Their comments are being rewritten to cite the kernel functions; drop them from this set then.
CITING_TEXT = sorted(
    p
    for p in {*SHIPPED_TEXT, *(ROOT / "tests").glob("*.py"), *(ROOT / "bench").glob("*.py")}
    # The changelog's past entries are history; this file holds the pattern.
    if p.resolve() not in {ROOT / "CHANGELOG.md", Path(__file__).resolve()}
)


@pytest.mark.parametrize("path", CITING_TEXT, ids=lambda p: str(p.relative_to(ROOT)))
def test_text_cites_only_what_the_repository_holds(path: Path) -> None:
    found = UNSHIPPED_REFERENCES.search(path.read_text(encoding="utf-8", errors="replace"))
    assert found is None, f"{path.relative_to(ROOT)} cites {found[0]!r}: cite docs/ or the kernel"


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


def test_documented_precommit_configs_are_valid(tmp_path: Path) -> None:
    pytest.importorskip("pre_commit")
    for i, (_, config) in enumerate(documented_precommit_configs()):
        path = tmp_path / f"config-{i}.yaml"
        path.write_text(yaml.safe_dump(config))
        result = run_pre_commit(["validate-config", str(path)], tmp_path, tmp_path / "home")
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

    result = run_pre_commit(
        ["run", "--all-files"], repo, tmp_path / "home", f"{bin_dir}:{os.environ['PATH']}"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "layouts/overlap.yaml:11:11: error[memslot-overlap]" in output
    assert "notes.yaml" not in output and "end (incl.)" not in output


# -- the docs hold to the code -----------------------------------------------------------------


def section(path: Path, heading: str) -> str:
    """The text of ``path`` from the line ``heading`` to the next heading of any level."""
    text = path.read_text()
    start = text.index(f"\n{heading}\n") + 1
    end = re.search(r"^#{1,6} ", text[start + len(heading) :], re.MULTILINE)
    return text[start : start + len(heading) + end.start()] if end else text[start:]


def documented_keys(text: str) -> set[str]:
    """Keys a Markdown table documents: backticked names in a row's first cell
    (`segments[].start` counts as `start`)."""
    keys: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| "):
            first = line.split("|")[1]
            keys |= {k.rsplit(".", 1)[-1] for k in re.findall(r"`([\w.\[\]]+)`", first)}
    return keys


LAYOUT_FORMAT = ROOT / "docs" / "layout-format.md"
SCHEMA_SECTIONS = {
    None: "## Top level",
    "Memslot": "## Memslots",
    "Device": "## Devices",
    "Reserved": "## Reserved ranges",
    "Port": "## Ports",
    "Observed": "## Observed",
    "Traffic": "### Observed traffic",
    "ExitCount": "### Observed exits",
    "RunFailure": "### Observed run failures",
    "InternalError": "### Observed internal errors",
    "RefusedCall": "### Observed refused calls",
}


@pytest.mark.parametrize("definition", list(SCHEMA_SECTIONS), ids=str)
def test_layout_format_documents_every_schema_property(definition: str | None) -> None:
    from gpa_plan.layout.schema import layout_schema

    schema = layout_schema()
    properties = set((schema if definition is None else schema["$defs"][definition])["properties"])
    documented = documented_keys(section(LAYOUT_FORMAT, SCHEMA_SECTIONS[definition]))
    assert properties - documented == set(), "in the schema, not in docs/layout-format.md"
    assert documented - properties == set(), "in docs/layout-format.md, not in the schema"


def json_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in json_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in json_keys(v)}
    return set()


def test_outputs_documents_every_key_of_check_json() -> None:
    from click.testing import CliRunner

    from gpa_plan.cli import cli

    broken = ROOT / "layouts" / "broken"
    runs = [
        ["check", "--format", "json", str(ROOT / "layouts")],
        [
            "check",
            "--format",
            "json",
            "--elf-mode",
            "selftests",
            "--elf",
            str(broken / "program-over-identity-map.elf"),
            str(broken / "program-over-identity-map.yaml"),
        ],
        ["check", "--format", "json", str(ROOT / "tests" / "data" / "record" / "recording.yaml")],
    ]
    emitted: set[str] = set()
    for args in runs:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, result.output  # layouts/broken/ has findings
        emitted |= json_keys(json.loads(result.stdout))
    assert {"programs", "segments", "regions", "findings", "summary", "ports", "traffic"} <= emitted
    documented = documented_keys(
        section(ROOT / "docs" / "outputs.md", "## JSON (`check --format json`)")
    )
    assert emitted - documented == set(), "emitted by check --format json, not in docs/outputs.md"


def test_outputs_documents_every_key_of_explain_json() -> None:
    from click.testing import CliRunner

    from gpa_plan.cli import cli

    layout = str(ROOT / "layouts" / "qemu-virt-arm64.yaml")
    result = CliRunner().invoke(cli, ["explain", "--format", "json", layout, "0x0800_0000"])
    assert result.exit_code == 0, result.output
    emitted = json_keys(json.loads(result.stdout)["answers"])
    documented = documented_keys(
        section(ROOT / "docs" / "outputs.md", "## JSON (`check --format json`)")
    )
    assert emitted and emitted - documented == set()


# -- links -------------------------------------------------------------------------------------

# Written alongside these docs but not in this tree yet; linked by name.
MARKDOWN = [README, *DOCS]


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``path``."""
    found: set[str] = set()
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    for heading in re.findall(r"^#{1,6} (.*)$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = 0
        candidate = slug
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def local_links(path: Path) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)\)", prose(path.read_text()))
    return [t for t in targets if not re.match(r"[a-z]+:", t)]


def test_docs_have_local_links_to_check() -> None:
    assert sum(len(local_links(p)) for p in MARKDOWN) > 20


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_resolve(path: Path) -> None:
    for link in local_links(path):
        target_text, _, anchor = link.partition("#")
        target = (path.parent / target_text).resolve() if target_text else path
        assert target.exists(), f"{path.name}: {link} names no file"
        if anchor:
            assert anchor in anchors(target), f"{path.name}: {link} names no heading"


def test_readme_lists_every_doc() -> None:
    listed = set(local_links(README))
    for doc in DOCS:
        assert f"docs/{doc.name}" in listed, doc.name


def layout_format_examples() -> list[str]:
    return fenced_blocks(LAYOUT_FORMAT, "yaml")


def test_layout_format_has_examples_of_every_section() -> None:
    text = "".join(layout_format_examples())
    for section_key in ("memslots:", "devices:", "reserved:", "within:", "as_id:", "handler:"):
        assert section_key in text


@pytest.mark.parametrize("index", range(len(layout_format_examples())))
def test_layout_format_examples_load(tmp_path: Path, index: int) -> None:
    """Each example is a layout, or a section of one, that loads (what `check` then says of
    it, a vGIC beside a LAPIC say, is not the point of a field's example)."""
    from gpa_plan import load_layout

    example = layout_format_examples()[index]
    if not example.startswith("layout:"):
        example = "layout: 1\narch: x86_64\n" + example
    path = tmp_path / "example.yaml"
    path.write_text(example)
    load_layout(str(path))  # raises LayoutError, naming the line, if the example is wrong


# -- docs/exit-codes.md and docs/outputs.md against what the tool does ----------------------------


def test_exit_codes_has_a_row_for_every_command() -> None:
    from gpa_plan.cli import cli

    text = (ROOT / "docs" / "exit-codes.md").read_text()
    rows = {name for cell in re.findall(r"^\| ([^|]+) \|", text, re.MULTILINE)
            for name in re.findall(r"`([a-z-]+)`", cell)}
    assert set(cli.commands) - rows == set(), "commands docs/exit-codes.md leaves out"


def test_outputs_json_example_shows_real_regions_and_findings() -> None:
    from click.testing import CliRunner

    from gpa_plan.cli import cli

    example = fenced_blocks(ROOT / "docs" / "outputs.md", "json")[0]
    (file,) = set(re.findall(r'"file": "([^"]+)"', example))
    result = CliRunner().invoke(cli, ["check", "--format", "json", str(ROOT / file)])
    (real,) = json.loads(result.stdout)["results"]
    regions = re.findall(r'\{"start": \d+.*?\}', example, re.DOTALL)
    assert regions
    for shown in regions:
        assert json.loads(shown) in real["regions"], shown
    line, column = (int(n) for n in re.findall(r'"line": (\d+),\s*"column": (\d+)', example)[0])
    assert (line, column) in {(f["line"], f["column"]) for f in real["findings"]}
    errors = sum(f["severity"] == "error" for f in real["findings"])
    assert f'"errors": {errors}' in example


def test_outputs_has_a_section_for_every_command() -> None:
    from gpa_plan.cli import cli

    headings = re.findall(r"^## (.*)$", (ROOT / "docs" / "outputs.md").read_text(), re.MULTILINE)
    named = {name for heading in headings for name in re.findall(r"`([a-z-]+)", heading)}
    assert set(cli.commands) - named == set(), "commands docs/outputs.md does not describe"


def test_docs_call_device_wrong_arch_under_another_arch_a_note() -> None:
    """Under a foreign --arch a layout's own devices give a note, never an error: every doc
    sentence about device-wrong-arch under another architecture says so."""
    from click.testing import CliRunner

    from gpa_plan.cli import cli

    layout = str(ROOT / "layouts" / "qemu-virt-arm64.yaml")
    result = CliRunner().invoke(cli, ["check", "--format", "json", "--arch", "x86_64", layout])
    (found,) = [f for r in json.loads(result.stdout)["results"] for f in r["findings"]]
    assert (found["rule"], found["severity"]) == ("device-wrong-arch", "note")
    sentences = 0
    for path in MARKDOWN:
        text = re.sub(r"\s+", " ", path.read_text())
        for sentence in re.split(r"(?<=[.;:])\s+(?=[A-Z`(])", text):
            if "device-wrong-arch" in sentence and re.search(
                r"other (one|arch)|another|foreign|--arch", sentence
            ):
                sentences += 1
                assert "note" in sentence, f"{path.name}: {sentence}"
    assert sentences >= 2
