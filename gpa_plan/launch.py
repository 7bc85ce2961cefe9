"""The `gpa-plan` program's entry point: runs gpa_plan.cli.main and exits with its status.

It is the smallest module that can be: Ctrl-C while the command line itself is still being
imported (the first tenth of a second) ends with status 130 like Ctrl-C at any later moment,
not with a traceback and status 1.
"""

from __future__ import annotations

import sys
from typing import NoReturn


def main() -> NoReturn:
    try:
        from gpa_plan.cli import main as run
    except KeyboardInterrupt:
        from gpa_plan.exits import interrupted

        interrupted()
    sys.exit(run())
