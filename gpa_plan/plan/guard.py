"""The planner checks its own plan: a plan that `check` would reject is refused, never emitted.

The input is checked as `check` checks it (its `auto` entries placed by the planner's own
rules); the plan is checked with every address fixed and every entry it added. An error
finding of the plan that the input does not have (same rule, same message) is new: the plan
made it, so the plan is refused with it. Errors the input already has refuse the plan too, named
as the input's (allocate fills in `auto` values; it does not repair fixed entries). Warnings
pass, and so do a recording's observations (a KVM_RUN that failed when it was recorded says
nothing of the plan).
"""

from __future__ import annotations

from collections import Counter

from yaml.error import Mark
from yaml.nodes import MappingNode

from gpa_plan.arch import ARCHES
from gpa_plan.check.findings import ERROR, Finding
from gpa_plan.check.observed import OBSERVATION_RULES
from gpa_plan.check.partition import partition
from gpa_plan.check.rules import RuleContext
from gpa_plan.check.run import run_rules
from gpa_plan.layout.loader import Document
from gpa_plan.layout.resolved import EntryPath, ResolvedLayout

_NAME = "<plan>"


Located = tuple[Finding, "EntryPath | None"]


def errors_of(layout: ResolvedLayout) -> list[Located]:
    """The error findings `check` reports on ``layout``, each with the entry it names first
    (None when it names no entry)."""
    return [(f, _entry_path(layout, f.objects)) for f in _errors(layout)]


def split_new(before: list[Located], after: list[Located]) -> tuple[list[Located], list[Located]]:
    """``after``'s errors split into those ``before`` lacks (same rule and message: the plan
    made them) and those it has."""
    had = Counter((f.rule, f.message) for f, _ in before)
    made, kept = [], []
    for found in after:
        key = (found[0].rule, found[0].message)
        if had[key]:
            had[key] -= 1
            kept.append(found)
        else:
            made.append(found)
    return made, kept


def _errors(layout: ResolvedLayout) -> list[Finding]:
    arch = ARCHES[layout.arch]
    ctx = RuleContext(_NAME, _NOWHERE, layout, arch, partition(layout, arch))
    return [
        f for f in run_rules(ctx) if f.severity == ERROR and f.rule not in OBSERVATION_RULES
    ]


def _entry_path(layout: ResolvedLayout, names: tuple[str, ...]) -> EntryPath | None:
    paths = {m.name: m.path for m in layout.memslots}
    paths.update({d.name: d.path for d in layout.devices})
    paths.update({r.name: r.path for r in layout.reserved})
    return next((paths[name] for name in names if name in paths), None)


# Findings made here are compared by rule and message, never shown with their positions: an
# empty document stands in for the file.
_NOWHERE = Document(
    _NAME, {}, MappingNode("tag:yaml.org,2002:map", [], start_mark=Mark(_NAME, 0, 0, 0, "", 0))
)
