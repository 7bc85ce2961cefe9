"""Text that is safe to print: one sanitiser for every human-readable output.

Names, paths and values come from files and command lines that anyone may have written. Printed
raw, an ESC starts a terminal escape sequence, a CR hides what came before it on the line, a
newline lets a name start a line of its own (``::error ...::`` is a GitHub Actions workflow
command when it begins a line of a step's log), and bidirectional overrides make a terminal show
text in another order than it is stored. Such characters are shown as Python escapes instead
(``\\x1b``, ``\\n``, ``\\u202e``); every other character, backslash included, is printed as it is.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (NEL among them), the line and paragraph separators, and the
# Unicode bidirectional formatting characters (marks, embeddings, overrides, isolates).
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def printable(text: str) -> str:
    """``text`` with control and bidirectional-formatting characters escaped."""
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)
