"""Rule slugs that configurations, `--select`/`--ignore` and SARIF rule ids name: each must keep
existing, at error severity (`gpa-plan rules`; docs/outputs.md). Written out by hand, not taken
from gpa_plan.check, so that a rule renamed or dropped by mistake fails a test."""

STABLE_RULES = (
    "yaml-syntax",
    "schema",
    "memslot-overlap",
    "memslot-misaligned",
    "memslot-out-of-range",
    "slot-id-conflict",
    "device-shadowed",
    "device-overlap",
    "device-misaligned",
    "device-out-of-range",
    "device-wrong-arch",
    "reserved-overlap",
    "ucall-not-io",
    "private-slot-conflict",
)
