"""The minimum rule set of SPEC section 5, written out from the SPEC (all errors)."""

SPEC_MINIMUM_RULES = (
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
