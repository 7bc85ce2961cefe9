"""A rule's slug is written once in the package, where the rule is registered: its findings,
and the code outside rules that names a rule, take the slug from the ``Rule``."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from gpa_plan.arch import ARCHES
from gpa_plan.check.layout_rules import no_room
from gpa_plan.check.partition import partition
from gpa_plan.check.rules import RULES, RuleContext
from gpa_plan.check.run import LoadedLayout, load_layout

PACKAGE = Path(__file__).parent.parent / "gpa_plan"
# Words a rule's slug shares with another vocabulary, and the folders that use them there:
# `internal-error` is also what the probe observes at a KVM_EXIT_INTERNAL_ERROR.
OTHER_VOCABULARY = {"internal-error": ("probe", "verify")}


def slug_literals(package: Path = PACKAGE) -> dict[str, list[str]]:
    """Every string literal under ``package`` that is a rule's slug, with where it is."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in RULES:
                if path.relative_to(package).parts[0] in OTHER_VOCABULARY.get(node.value, ()):
                    continue
                found[node.value].append(f"{path.relative_to(package.parent)}:{node.lineno}")
    return dict(found)


def test_every_rule_slug_is_written_once_in_the_package() -> None:
    written = slug_literals()
    again = {slug: places for slug, places in written.items() if len(places) > 1}
    assert again == {}, "name the Rule (ctx.finding, rule.slug), not a copy of its slug"
    assert set(written) == set(RULES)


def test_the_scan_finds_a_slug_written_twice(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "twice.py").write_text(
        '@rule("no-room", ERROR, "")\ndef f(ctx):\n    yield ctx.finding("no-room", "m", ())\n'
        '"""no-room in a docstring is text, not a slug"""\n'
    )
    assert slug_literals(tmp_path / "pkg") == {"no-room": ["pkg/twice.py:1", "pkg/twice.py:3"]}


def context(loaded: LoadedLayout) -> RuleContext:
    arch = ARCHES[loaded.resolved.arch]
    regions = partition(loaded.resolved, arch)
    return RuleContext(
        loaded.doc.path, loaded.doc, loaded.resolved, arch, regions, loaded.placement_errors
    )


def test_a_finding_takes_the_slug_and_severity_of_the_rule_that_makes_it(tmp_path: Path) -> None:
    path = tmp_path / "full.yaml"
    path.write_text(
        "layout: 1\narch: arm64\npa_bits: 32\nmemslots:\n"
        "  - {name: ram, base: 0x0, size: 4G}\n"
        "  - {name: more, base: auto, size: 4K}\n"
    )
    assert no_room is RULES["no-room"] and no_room.check is not None
    findings = list(no_room.check(context(load_layout(path))))
    assert [(f.rule, f.severity, f.line) for f in findings] == [("no-room", no_room.severity, 6)]


def test_a_finding_made_outside_a_rule_is_a_mistake_in_the_code(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text("layout: 1\narch: arm64\n")
    ctx = context(load_layout(path))
    with pytest.raises(RuntimeError, match="outside a rule"):
        ctx.finding("a message", ())
