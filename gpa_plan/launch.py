"""The `gpa-plan` program's entry point.

It is the smallest module that can be: Ctrl-C while the command line itself is still being
imported (the first tenth of a second) ends with status 130 like Ctrl-C at any later moment,
not with a traceback and status 1.
"""

from __future__ import annotations

from typing import Any


def main() -> Any:
    try:
        from gpa_plan.cli import main as run
    except KeyboardInterrupt:
        from gpa_plan.exits import interrupted

        interrupted()
    return run()
