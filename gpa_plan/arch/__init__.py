"""Architectures gpa-plan models, by the name layouts use."""

from __future__ import annotations

from gpa_plan.arch.arm64 import ARM64
from gpa_plan.arch.base import ACCESSES, ArchSpec, Backing, Effect, Handler, Outcome
from gpa_plan.arch.x86_64 import X86_64

ARCHES: dict[str, ArchSpec] = {spec.name: spec for spec in (ARM64, X86_64)}

__all__ = ["ACCESSES", "ARCHES", "ArchSpec", "Backing", "Effect", "Handler", "Outcome"]
