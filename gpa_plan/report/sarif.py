"""SARIF 2.1.0 for GitHub code scanning and other SARIF viewers.

One run; ``tool.driver.rules`` lists every rule gpa-plan has (so a viewer can explain a rule
even when this run found nothing for it); each finding is one result with one location.
Paths below the working directory are repository-relative URIs against ``%SRCROOT%``, so the
document does not depend on where the checkout lives; other paths are absolute ``file:`` URIs.
Columns count Unicode code points, as the YAML loader does. The driver has no
``informationUri`` (optional in SARIF 2.1.0): gpa-plan has no published home page to point at.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

from gpa_plan.check.findings import ERROR, NOTE, WARNING
from gpa_plan.check.rules import Rule
from gpa_plan.check.run import RULES, CheckResult
from gpa_plan.config import ALWAYS_REPORTED
from gpa_plan.inputs import InputError
from gpa_plan.printable import printable_json
from gpa_plan.report.ci import ReportedFinding, relative_posix, unique_findings

if TYPE_CHECKING:
    from gpa_plan.formats import CheckReport

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
TOOL_NAME = "gpa-plan"
SRCROOT = "%SRCROOT%"
# Versioned as SARIF asks of partialFingerprints keys: a new recipe needs a new key.
FINGERPRINT_KEY = "gpaPlanFinding/v1"


def sarif_document(results: Sequence[CheckResult], root: Path, tool_version: str) -> dict[str, Any]:
    """The SARIF log for ``results``; ``root`` is the directory paths are made relative to."""
    rules = list(RULES.values())
    index = {rule.slug: i for i, rule in enumerate(rules)}
    items = unique_findings(results)
    fingerprints = _fingerprints(items, root)
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {"driver": _driver(rules, tool_version)},
                "columnKind": "unicodeCodePoints",
                "results": [
                    _result(item, index, root, fp)
                    for item, fp in zip(items, fingerprints, strict=True)
                ],
            }
        ],
    }


def dumps(document: dict[str, Any]) -> str:
    # Indented: SARIF files are small next to `--format json`, and get read and diffed. Text
    # stays readable (ensure_ascii=False), but no bidi override or C1 control is printed raw.
    return printable_json(json.dumps(document, indent=2, ensure_ascii=False)) + "\n"


def level(severity: str) -> str:
    """SARIF's level for a gpa-plan severity."""
    return {ERROR: "error", WARNING: "warning"}.get(severity, "note")


def artifact_location(path: str, root: Path) -> dict[str, str]:
    """A relative, percent-encoded URI against %SRCROOT%, or an absolute file: URI."""
    relative = relative_posix(path, root)
    if relative is not None:
        return {"uri": quote(relative, safe="/"), "uriBaseId": SRCROOT}
    return {"uri": (root / path).resolve().as_uri()}


def _driver(rules: Sequence[Rule], tool_version: str) -> dict[str, Any]:
    return {
        "name": TOOL_NAME,
        "version": tool_version,
        "rules": [_rule(rule) for rule in rules],
    }


def _rule(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.slug,
        "name": "".join(part.capitalize() for part in rule.slug.split("-")),
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": rule.description},
        "help": {"text": _help(rule)},
        "defaultConfiguration": {"level": level(rule.severity)},
    }


def _help(rule: Rule) -> str:
    if rule.slug in ALWAYS_REPORTED:
        return f"{rule.description}\n\nA file that does not load is always reported."
    return (
        f"{rule.description}\n\nTo turn this rule off: `gpa-plan check --ignore {rule.slug}`, "
        f'or `ignore = ["{rule.slug}"]` under [tool.gpa-plan] in pyproject.toml.'
    )


def _result(
    item: ReportedFinding, index: dict[str, int], root: Path, fingerprint: str
) -> dict[str, Any]:
    f = item.finding
    result: dict[str, Any] = {"ruleId": f.rule}
    if f.rule in index:
        result["ruleIndex"] = index[f.rule]
    if f.severity == NOTE:
        # Information, not a problem: SARIF's kind for it, whose level must be "none".
        result["kind"] = "informational"
        result["level"] = "none"
    else:
        result["level"] = level(f.severity)
    result["message"] = {"text": item.text}
    result["locations"] = [
        {
            "physicalLocation": {
                "artifactLocation": artifact_location(f.file, root),
                "region": {"startLine": f.line, "startColumn": f.column},
            }
        }
    ]
    result["partialFingerprints"] = {FINGERPRINT_KEY: fingerprint}
    properties = _properties(item)
    if properties:
        result["properties"] = properties
    return result


def _properties(item: ReportedFinding) -> dict[str, list[str]]:
    properties: dict[str, list[str]] = {}
    if item.finding.objects:
        properties["objects"] = list(item.finding.objects)
    if item.arches:
        properties["arches"] = list(item.arches)
    return properties


def _fingerprints(items: Sequence[ReportedFinding], root: Path) -> list[str]:
    """A stable identity per result that leaves out line numbers, so an alert survives
    edits elsewhere in the file: rule, path, and the objects involved (the message when a
    finding names none). Repeats within a run are told apart by their order."""
    seen: dict[str, int] = {}
    prints = []
    for item in items:
        f = item.finding
        path = relative_posix(f.file, root) or f.file
        identity = "\0".join((f.rule, path, *(f.objects or (f.message,))))
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        seen[digest] = seen.get(digest, 0) + 1
        prints.append(f"{digest}:{seen[digest]}")
    return prints


def add_unreadable(document: dict[str, Any], unreadable: Sequence[InputError], root: Path) -> None:
    """Record the paths that could not be read as the run's tool execution notifications, at
    level error, with ``executionSuccessful: false``; the results stay those of the files that
    were read. Without such paths the document is left as it is."""
    if not unreadable:
        return
    notifications = [
        {
            "level": "error",
            "message": {"text": str(err)},
            "locations": [
                {"physicalLocation": {"artifactLocation": artifact_location(err.path, root)}}
            ],
        }
        for err in unreadable
    ]
    document["runs"][0]["invocations"] = [
        {"executionSuccessful": False, "toolExecutionNotifications": notifications}
    ]


def write_check(report: CheckReport, stream: TextIO) -> None:
    """The SARIF log of a check, paths relative to the working directory."""
    from gpa_plan import __version__

    root = Path.cwd()
    document = sarif_document(report.results, root, __version__)
    add_unreadable(document, report.unreadable, root)
    stream.write(dumps(document))
