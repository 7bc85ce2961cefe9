"""``python3 -m probe PLAN.json`` (or ``-`` for standard input): run a plan, print its results.

Exit 0 when the plan ran, whatever KVM did (the results say it); 2, with one line on standard
error, when it could not run here: the plan cannot be read, it is for another architecture
than this host's, or ``/dev/kvm`` cannot be opened; 130 when interrupted (Ctrl-C), with no
results.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from .kvm import KvmError
from .run import PlanError, check_plan, host_arch, run_plan

USAGE = "usage: python3 -m probe PLAN.json (or - to read the plan from standard input)"
MAX_PLAN_BYTES = 16 << 20


class _Refused(Exception):
    """The plan cannot run here; the message says why and how to fix it."""


def _read_plan(path: str) -> dict[str, Any]:
    try:
        if path == "-":
            text = sys.stdin.buffer.read(MAX_PLAN_BYTES + 1)
        else:
            # A FIFO or device would block or never end: refuse it before opening.
            if os.path.exists(path) and not os.path.isfile(path):
                raise _Refused(f"{path}: not a regular file; give the plan's JSON file")
            with open(path, "rb") as stream:
                text = stream.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise _Refused(f"{path}: cannot read the plan: {exc.strerror}") from exc
    if len(text) > MAX_PLAN_BYTES:
        raise _Refused(f"{path}: the plan is larger than {MAX_PLAN_BYTES} bytes")
    try:
        plan = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Refused(f"{path}: not a JSON plan: {exc}") from exc
    if not isinstance(plan, dict):
        raise _Refused(f"{path}: the plan is a JSON object, not {_json_kind(plan)}")
    return plan


def _json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words (not Python's ``list`` or ``NoneType``)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return "a number"
    return "a string" if isinstance(value, str) else "an array"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        plan = _read_plan(args[0])
        arch, here = plan.get("arch"), host_arch()
        if arch != here:
            machine = os.uname().machine
            raise _Refused(
                f"{args[0]}: the plan is for {arch}, this host is {machine}: "
                "run it on a host of that architecture with /dev/kvm"
            )
        try:
            check_plan(plan)
        except PlanError as exc:
            raise _Refused(f"{args[0]}: {exc}") from exc
        results = run_plan(plan)
    except _Refused as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 2
    except KvmError as exc:
        print(
            f"probe: {exc}; run it where /dev/kvm exists and this user may open it", file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        # The VM and its memory are the process's: they go with it. 130 is what a shell
        # reports for a process killed by SIGINT, so a script tells it from a refusal.
        print("probe: interrupted; no results were printed", file=sys.stderr)
        return 130
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
