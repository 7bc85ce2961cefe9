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


# What printable() escapes that json.dumps(..., ensure_ascii=False) writes as it is: DEL, the
# C1 controls, the line and paragraph separators and the bidi formatting characters. Such a
# character only ever stands inside a JSON string, where \uXXXX means the same.
_RAW_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable_json(text: str) -> str:
    """``text``, a JSON document written with ``ensure_ascii=False``, with the characters
    ``printable`` escapes written as ``\\uXXXX``: the same document, safe to print."""
    if _RAW_IN_JSON.search(text) is None:
        return text
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
