"""The sanitiser every human-readable output goes through."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gpa_plan.printable import printable


def test_controls_and_bidi_overrides_become_escapes() -> None:
    assert printable("a\x1b[31mb") == "a\\x1b[31mb"
    assert printable("x\n::error file=a::b") == "x\\n::error file=a::b"
    assert printable("cr\rnul\x00nel\x85") == "cr\\rnul\\x00nel\\x85"
    assert printable("\u202eevil\u2066") == "\\u202eevil\\u2066"


def test_ordinary_text_is_unchanged() -> None:
    for text in ("ram", "0x4000_0000", "Zürich flash", "C:\\path", "gicr [8 vCPUs]"):
        assert printable(text) == text


@given(st.text())
def test_no_control_character_survives(text: str) -> None:
    out = printable(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)
    assert not any(c in out for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
