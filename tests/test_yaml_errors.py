"""YAML syntax mistakes are said in plain words with their fix, at their line and column, the
same with libyaml and with PyYAML's pure-Python loader (what a system without libyaml uses).

The golden files of tests/data/layouts/bad/syntax-*.yaml hold the full messages through the
command line; here each mistake is checked through both loaders."""

from __future__ import annotations

import pytest
import yaml

from gpa_plan.layout import loader
from gpa_plan.layout.errors import LayoutError

HEAD = "layout: 1\narch: arm64\n"

CASES = [
    pytest.param(
        HEAD + "memslots:\n\t- {name: ram, base: 0, size: 1G}\n",
        (4, 1),
        "a tab is not allowed for indentation in YAML (line 4, column 1); indent with spaces",
        id="tab-indent",
    ),
    pytest.param(
        HEAD + "memslots:\n  - name: ram\n\tbase: 0\n",
        (5, 1),
        "a tab is not allowed for indentation in YAML (line 5, column 1); indent with spaces",
        id="tab-indent-in-an-item",
    ),
    pytest.param(
        HEAD + 'name: "my vm\nmemslots: []\n',
        (3, 7),
        "the double-quoted string that starts here is never closed (the file ends inside it); "
        'add the closing " where the value ends',
        id="unclosed-double-quote",
    ),
    pytest.param(
        HEAD + "name: 'my vm\nmemslots: []\n",
        (3, 7),
        "the single-quoted string that starts here is never closed (the file ends inside it); "
        "add the closing ' where the value ends",
        id="unclosed-single-quote",
    ),
    pytest.param(
        HEAD + "memslots:\n  - name: ram\n      base: 0\n",
        (5, 7),
        "this key is indented more than line 4, so YAML reads it as part of a value, where a "
        "`key:` is not allowed; line it up with the other keys of its mapping",
        id="mapping-key-indented-too-far",
    ),
    pytest.param(
        "layout: 1\n  arch: arm64\n",
        (2, 3),
        "this key is indented more than line 1, so YAML reads it as part of a value, where a "
        "`key:` is not allowed; line it up with the other keys of its mapping",
        id="top-level-key-indented",
    ),
    pytest.param(
        HEAD + "memslots:\n  - name: ram\n    base: 0\n   size: 1G\n",
        (6, 4),
        "this line is indented to column 4, which does not fit the list that starts at line 4, "
        "column 3: a key of an item lines up with the first key after its `- `, and a new item "
        "starts with `- ` at column 3; indent it to one of those",
        id="list-item-key-indented-too-little",
    ),
    pytest.param(
        "layout: 1\narch: arm64: x86_64\n",
        (2, 12),
        "a second `: ` on this line: YAML does not allow `key: value: value`; quote a value that "
        'holds ": " (name: "a: b"), or put each key on a line of its own',
        id="key-value-value",
    ),
    pytest.param(
        "layout\narch: arm64\n",
        (2, 5),
        "line 1 has no `key:`, so YAML reads it and this line as one value, where a `key:` is "
        "not allowed; give line 1 its `:` (`name: value`), or remove it",
        id="line-without-colon",
    ),
    pytest.param(
        HEAD + "memslots: [{name: ram, base: 0, size: 1G}\n",
        (4, 1),
        "the list opened with `[` at line 3, column 11 is not closed: add the closing `]`, and "
        "separate its items with `,`",
        id="unclosed-bracket",
    ),
    pytest.param(
        HEAD + "memslots: [\n",
        (4, 1),
        "the file ends inside a `[...]` list or `{...}` mapping that is not closed: add its "
        "closing `]` or `}` (an empty list is `[]`)",
        id="unclosed-bracket-at-the-end",
    ),
    pytest.param(
        HEAD + "memslots:\n  - {name: ram, base: 0, size: 1G,\n\n",
        (6, 1),
        "the file ends inside a `[...]` list or `{...}` mapping that is not closed: add its "
        "closing `]` or `}` (an empty list is `[]`)",
        id="unclosed-brace-after-a-comma-at-the-end",
    ),
    pytest.param(
        HEAD + 'name: "a" b\n',
        (3, 11),
        "text after a value that is already complete (a quoted string, or a `[...]` or "
        "`{...}`); quote the whole value, or start a comment with ` #`",
        id="text-after-a-quoted-value",
    ),
    pytest.param(
        HEAD + "name: @vm\n",
        (3, 7),
        "'@' cannot start a value in YAML (it is reserved); put the value in quotes "
        "(\"@...\"), or remove the '@'",
        id="reserved-character",
    ),
    pytest.param(
        HEAD + 'name: "C:\\qemu"\n',
        (3, 10),
        "`\\q` is not an escape YAML knows in a double-quoted string; write `\\\\` for a "
        "backslash, or use single quotes, where a backslash is just a backslash",
        id="unknown-escape",
    ),
]


def problem(text: str) -> tuple[int, int, str, str]:
    with pytest.raises(LayoutError) as raised:
        loader.load_text(text, "vm.yaml")
    (found,) = raised.value.problems
    return found.line, found.column, found.rule, found.message


@pytest.mark.parametrize("text, position, message", CASES)
def test_syntax_mistake_is_said_plainly_with_its_fix(
    text: str, position: tuple[int, int], message: str
) -> None:
    assert problem(text) == (*position, "yaml-syntax", message)


@pytest.mark.parametrize("text, position, message", CASES)
def test_the_pure_python_loader_says_the_same(
    text: str, position: tuple[int, int], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "Loader", yaml.SafeLoader)
    assert problem(text) == (*position, "yaml-syntax", message)


def test_a_mistake_not_recognised_keeps_pyyamls_words() -> None:
    # Two documents: not one of the mistakes reworded, so PyYAML's message stands.
    line, column, rule, message = problem(HEAD + "---\n" + HEAD)
    assert (line, column, rule) == (3, 1, "yaml-syntax")
    assert message.startswith("expected a single document in the stream")
