"""Architecture facts live under gpa_plan/arch/: code elsewhere does not branch on an
architecture's name.

The scan walks the syntax tree of every module outside gpa_plan/arch/ and counts the places
that name an architecture as data: a comparison or membership test against a name
(``arch == "x86_64"``, ``arch in ("arm64", ...)``), a table keyed by one (``{"arm64": ...}``)
and a literal list, tuple or set holding one (``Choice(["arm64", ...])``). Docstrings,
messages and default values may name architectures; they are not counted.

Some modules still do. Each is listed below with its count, which may only go down: a new
place fails the test, and so does a module that lost one without its count being lowered, so
the list always says where the work is left.
"""

from __future__ import annotations

import ast
from pathlib import Path

from gpa_plan.arch import ARCHES

PACKAGE = Path(__file__).parent.parent / "gpa_plan"

# Readers of another program's format, where an architecture's name is part of that format.
FORMAT_READERS = {
    # QEMU names its regions and devices per target.
    "importers/qemu_mtree/mapping.py": 3,
    "importers/qemu_mtree/__init__.py": 1,
    # strace names the requests of the host it was built for; what KVM_CREATE_IRQCHIP makes
    # and what KVM_CREATE_VM's type means differ per architecture.
    "importers/strace/__init__.py": 2,
    # The kernel's own name of the host's machine (uname -m), which picks the facts to read.
    "probe/host.py": 1,
}
# The standalone probe runs without the rest of gpa_plan, so it cannot ask gpa_plan.arch: it
# finds each architecture's probe module through one table.
PROBE_DISPATCH = {"probe/run.py": 1}
# Architecture facts still outside gpa_plan/arch/, to move there.
NOT_YET_MOVED: dict[str, int] = {}


def places_naming_an_arch(tree: ast.AST) -> list[int]:
    """Line numbers where ``tree`` uses an architecture's name as data."""
    names = set(ARCHES)

    def named(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(named(e) for e in node.elts)
        return False

    lines = []
    counted: set[int] = set()  # a literal counted as part of a comparison or a table's key
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            parts = (node.left, *node.comparators)
            counted.update(id(part) for part in parts)
            hit = any(named(part) for part in parts)
        elif isinstance(node, ast.Dict):
            counted.update(id(key) for key in node.keys if key is not None)
            hit = any(key is not None and named(key) for key in node.keys)
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            hit = id(node) not in counted and named(node)
        else:
            continue
        if hit:
            lines.append(node.lineno)
    return lines


def counts() -> dict[str, list[int]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name.startswith("arch/"):
            continue
        lines = places_naming_an_arch(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            found[name] = lines
    return found


def test_no_module_outside_arch_branches_on_an_architecture_name() -> None:
    allowed = {**FORMAT_READERS, **PROBE_DISPATCH, **NOT_YET_MOVED}
    found = counts()
    for name, lines in found.items():
        assert name in allowed, f"gpa_plan/{name} names an architecture at lines {lines}"
        assert len(lines) <= allowed[name], (
            f"gpa_plan/{name} names an architecture at lines {lines}, more than the "
            f"{allowed[name]} places listed: ask gpa_plan.arch instead"
        )
        assert len(lines) == allowed[name], (
            f"gpa_plan/{name} now names an architecture in {len(lines)} places: lower its count"
        )
    gone = sorted(set(allowed) - set(found))
    assert not gone, f"no longer names an architecture, drop from the list: {gone}"


def test_the_scan_finds_each_form_it_looks_for() -> None:
    text = (
        '"""Docstrings name arm64 freely."""\n'
        'def f(arch, d, a="x86_64"):\n'
        '    message = f"KVM on {arch}: arm64 only"\n'
        '    if arch == "x86_64":\n'
        "        pass\n"
        '    if arch in ("arm64", "riscv"):\n'
        "        pass\n"
        '    table = {"arm64": 1}\n'
        '    choices = ["arm64", "x86_64"]\n'
    )
    assert places_naming_an_arch(ast.parse(text)) == [4, 6, 8, 9]
