"""Read a layout file into plain Python data without losing where each value came from.

The text is composed into a YAML node graph once (libyaml's C composer when PyYAML has it), then
turned into dicts, lists and scalars by our own strict constructor. The node graph stays with the
data, so any later finding can be placed at the line and column of the value it is about.

Refused, each with its position: bytes that are not UTF-8, empty files, documents that are not a
mapping, several documents, explicit YAML tags, merge keys, duplicate keys (compared after
resolution, so ``0x10`` and ``16`` collide), non-scalar keys, aliases that expand out of
proportion or into themselves, nesting deeper than ``MAX_DEPTH``, characters YAML does not allow
(NUL, ESC, ...: at their own line and column), and integers gpa-plan's number grammar refuses
(``010``, ``1:30``, ``-0``, beyond 64 bits), which reach validation as RejectedNumber so that
the field they sit in reports them.
"""

from __future__ import annotations

import codecs
import os
import re
from typing import Any, NamedTuple

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gpa_plan.inputs import STDIN, STDIN_NAME, read_input
from gpa_plan.layout.errors import SCHEMA, YAML_SYNTAX, LayoutError, Problem
from gpa_plan.layout.numbers import NumberError, RejectedNumber, parse_number
from gpa_plan.layout.yaml_errors import plain_syntax

Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_DEPTH = 64
# libyaml's composer recurses in C and overflows the stack on deep nesting (it crashes near
# 100,000 levels); when the text could nest anywhere near that deep, measure depth first with
# the parser's event stream, which is iterative.
_SAFE_C_DEPTH = 1000
# Aliases may re-use a node; they may not make the document this many times bigger.
_MAX_ALIAS_FACTOR = 10
_MAX_ALIAS_NODES = 10_000

_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_TRUE = frozenset({"yes", "true", "on", "y"})


class Document(NamedTuple):
    """A loaded layout file: its data and the node graph that knows every value's position.

    ``problems`` are mistakes found while loading that leave the rest of the file readable
    (a duplicate key: the first value is kept), for validation to report with its own, so
    that one does not hide the others."""

    path: str
    data: dict[str, Any]
    root: MappingNode
    problems: tuple[Problem, ...] = ()

    def position(self, path: tuple[str | int, ...], *, key: bool = False) -> tuple[int, int]:
        """1-based (line, column) of the value at ``path``, or of its key with ``key=True``.

        A path that does not exist in the file (a missing key) resolves to the closest
        ancestor that does, so "missing field" errors point at the mapping that lacks it.
        """
        node: Node = self.root
        key_node: Node | None = None
        for segment in path:
            found = _child(node, segment)
            if found is None:
                key_node = None
                break
            key_node, node = found
        mark = (key_node if key and key_node is not None else node).start_mark
        return mark.line + 1, mark.column + 1


def _child(node: Node, segment: str | int) -> tuple[Node | None, Node] | None:
    if isinstance(node, SequenceNode) and isinstance(segment, int):
        if 0 <= segment < len(node.value):
            return None, node.value[segment]
        return None
    if isinstance(node, MappingNode):
        if len(node.value) <= _SCAN_KEYS:
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and _scalar_or_none(key_node) == segment:
                    return key_node, value_node
            return None
        return _key_index(node).get(segment)
    return None


# A mapping with more keys is looked up through an index, built on first use and kept on the
# node: one position per unknown key of a mapping of 20,000 keys scanned it 20,000 times.
_SCAN_KEYS = 16


def _key_index(node: MappingNode) -> dict[Any, tuple[Node, Node]]:
    index: dict[Any, tuple[Node, Node]] | None = getattr(node, "_gpa_plan_keys", None)
    if index is None:
        index = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode):
                # The first of equal keys, as the scan finds it.
                index.setdefault(_scalar_or_none(key_node), (key_node, value_node))
        node._gpa_plan_keys = index  # type: ignore[attr-defined]
    return index


def load_file(path: str | os.PathLike[str], *, allow_stdin: bool = False) -> Document:
    """Load and structurally check a layout file; raises LayoutError with every position.

    The file is read by ``gpa_plan.inputs.read_input``: a path that is missing, unreadable,
    not a regular file or larger than MAX_INPUT_BYTES raises InputError, which is not a
    problem of the layout. With ``allow_stdin``, ``-`` reads standard input, named ``<stdin>``.
    """
    name = str(path)
    raw = read_input(name, allow_stdin=allow_stdin)
    return load_bytes(raw, STDIN_NAME if allow_stdin and name == STDIN else name)


def load_bytes(raw: bytes, name: str) -> Document:
    """Like load_file, for bytes already read; ``name`` is used in messages."""
    return load_text(_decode(raw, name), name)


def load_text(text: str, name: str) -> Document:
    try:
        root = _compose(text)
        constructor = _Constructor()
        data = constructor.mapping(root)
    except _Located as err:
        raise LayoutError(name, [Problem(err.rule, err.message, err.line, err.column)]) from None
    except yaml.MarkedYAMLError as err:
        plain = plain_syntax(err, text)
        if plain is not None:
            raise LayoutError(name, [Problem(YAML_SYNTAX, *plain)]) from None
        mark = err.problem_mark or err.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = Problem(YAML_SYNTAX, _syntax_message(err), line, column)
        raise LayoutError(name, [problem]) from None
    except yaml.reader.ReaderError as err:
        raise LayoutError(name, [_unacceptable_character(text, err)]) from None
    except yaml.YAMLError as err:
        raise LayoutError(name, [Problem(YAML_SYNTAX, str(err), 1, 1)]) from None
    # An aliased mapping is constructed once per alias: say each of its problems once.
    return Document(name, data, root, tuple(dict.fromkeys(constructor.problems)))


# What YAML 1.1 lets a stream hold (PyYAML's Reader.NON_PRINTABLE, libyaml's check alike).
_NOT_YAML = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def _unacceptable_character(text: str, err: yaml.reader.ReaderError) -> Problem:
    """The character YAML refused, at its line and column.

    A reader error carries an offset, not a mark (and libyaml counts it in UTF-8 bytes), so
    the character is found again in the text, where lines count as the YAML reader counts them.
    """
    found = _NOT_YAML.search(text)
    index = found.start() if found else min(err.position, len(text))
    char = found.group() if found else chr(err.character)
    lines = _BREAK.split(text[:index])
    escape = ascii(char)[1:-1]
    message = (
        f"character U+{ord(char):04X} ({escape}) is not allowed in YAML text; "
        f'remove it, or write it as the escape "{escape}" inside a double-quoted string'
    )
    return Problem(YAML_SYNTAX, message, len(lines), len(lines[-1]) + 1)
def load_mapping(raw: bytes, name: str, what: str) -> Document | None:
    """A YAML file that holds one mapping of any kind (``what`` names it in messages: "the
    configuration"), loaded with every guard a layout gets: UTF-8 only, one document, no tags,
    merge keys or duplicate keys, bounded alias expansion and depth. None for a file without a
    value (empty, only comments, or an empty ``---`` document). Raises LayoutError."""
    text = _decode(raw, name, what)
    # The first events tell what the document holds without composing it (lazily parsed).
    events = yaml.parse(text, Loader=Loader)
    try:
        first = next(e for e in events if not isinstance(e, _PREAMBLE))
        if isinstance(first, yaml.ScalarEvent) and first.implicit[0] and first.value == "":
            following = next(e for e in events if not isinstance(e, yaml.DocumentEndEvent))
            if isinstance(following, yaml.StreamEndEvent):
                return None
            first = following  # another document follows: load_text says so
        if isinstance(first, (yaml.ScalarEvent, yaml.SequenceStartEvent)):
            for _ in events:  # a syntax error further on is the better message
                pass
    except yaml.YAMLError:
        first = None  # not well-formed: load_text says where
    if isinstance(first, yaml.StreamEndEvent):
        return None
    if isinstance(first, (yaml.ScalarEvent, yaml.SequenceStartEvent)):
        kind = "list" if isinstance(first, yaml.SequenceStartEvent) else "scalar value"
        message = f"{what} must be a mapping of keys to values, not a {kind}"
        mark = first.start_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise LayoutError(name, [Problem(SCHEMA, message, line, column)])
    document = load_text(text, name)
    if document.problems:
        raise LayoutError(name, list(document.problems))
    return document


_PREAMBLE = (yaml.StreamStartEvent, yaml.DocumentStartEvent)


def _syntax_message(err: yaml.MarkedYAMLError) -> str:
    problem, context, mark = err.problem, err.context, err.context_mark
    if problem and "maximum nesting depth" in problem:
        # Newer libyaml stops at its own depth limit while scanning ahead, before our event
        # walk sees level MAX_DEPTH + 1; say it the same way whichever limit fires first.
        return f"nesting deeper than {MAX_DEPTH} levels"
    if not (problem and context):
        return problem or context or "not well-formed YAML"
    if problem.startswith("but "):
        # "expected a single document in the stream, but found another document"
        return f"{context}, {problem}"
    # The context says where the construct that went wrong started ("while parsing a flow
    # sequence" at its `[`), which the problem's own position does not show.
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{problem} ({context}{where})"


class _Located(Exception):
    def __init__(self, message: str, node_or_mark: Any, rule: str = YAML_SYNTAX) -> None:
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        self.message = message
        self.rule = rule
        self.line = mark.line + 1 if mark is not None else 1
        self.column = mark.column + 1 if mark is not None else 1
        super().__init__(message)


def _decode(raw: bytes, name: str, what: str = "layout files") -> str:
    # The byte-order mark is dropped before decoding, so that the offset of a bad byte and
    # the position said for it count in the text the YAML positions count in.
    text = raw[len(codecs.BOM_UTF8) :] if raw.startswith(codecs.BOM_UTF8) else raw
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as err:
        # Lines count as the YAML reader counts them (CR and NEL end a line too).
        lines = _BREAK.split(text[: err.start].decode("utf-8", "replace"))
        message = f"byte 0x{text[err.start]:02x} is not UTF-8; {what} must be UTF-8 text"
        problem = Problem(YAML_SYNTAX, message, len(lines), len(lines[-1]) + 1)
        raise LayoutError(name, [problem]) from None


def _compose(text: str) -> MappingNode:
    _refuse_explicit_tags(text)
    if _may_nest_deeper_than(text, _SAFE_C_DEPTH):
        _check_depth_with_events(text)
    loader = Loader(text)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    if root is None:
        raise _Located("the file is empty; a layout starts with `layout: 1`", None, SCHEMA)
    if not isinstance(root, MappingNode):
        raise _Located(
            "a layout is a mapping (`layout: 1`, `arch: ...`, `memslots: [...]`), "
            f"not a {_node_kind(root)}",
            root,
            SCHEMA,
        )
    if "*" in text and "&" in text:
        _check_alias_expansion(root)
    return root


def _refuse_explicit_tags(text: str) -> None:
    if "!" not in text:
        return
    for event in yaml.parse(text, Loader=Loader):
        tag = getattr(event, "tag", None)
        if tag is not None and not isinstance(event, yaml.DocumentStartEvent):
            raise _Located(
                f"YAML tag {tag!r} is not allowed in a layout; write the plain value", event
            )


def _may_nest_deeper_than(text: str, depth: int) -> bool:
    # Block collections nest only by indenting further (at most two levels per column,
    # counting `- - x` forms), flow collections only by opening brackets.
    flow = text.count("[") + text.count("{")
    if flow >= depth:
        return True
    longest_allowed = (depth - flow) // 2 - 1
    return re.search(rf"[^\n]{{{longest_allowed}}}", text) is not None


def _check_depth_with_events(text: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Located(f"nesting deeper than {MAX_DEPTH} levels", event)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_alias_expansion(root: Node) -> None:
    unique: set[int] = set()
    expanded: dict[int, int] = {}
    on_path: set[int] = set()
    # Iterative post-order walk; sizes are memoised per node, so a "billion laughs" document
    # costs time linear in its composed size.
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        ident = id(node)
        if done:
            on_path.discard(ident)
            expanded[ident] = 1 + sum(expanded[id(child)] for child in _children(node))
            continue
        if ident in expanded:
            continue
        if ident in on_path:
            raise _Located("an alias refers to the collection that contains it", node)
        unique.add(ident)
        on_path.add(ident)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise _Located("an alias refers to the collection that contains it", child)
            if id(child) not in expanded:
                stack.append((child, False))
    total = expanded[id(root)]
    limit = max(_MAX_ALIAS_FACTOR * len(unique), _MAX_ALIAS_NODES)
    if total > limit:
        # Point at the innermost value that is too big by itself: where the nesting blows up.
        node = root
        while True:
            bigger = next((c for c in _children(node) if expanded[id(c)] > limit), None)
            if bigger is None:
                break
            node = bigger
        raise _Located(
            f"aliases expand this value to {expanded[id(node)]} nodes and the document to "
            f"{total} from the {len(unique)} written; write the values out instead of "
            "nesting aliases",
            node,
        )


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _node_kind(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "list"
    return "scalar value"


def _scalar_or_none(node: ScalarNode) -> Any:
    try:
        return _scalar(node)
    except _Located:
        return None


def _scalar(node: ScalarNode) -> Any:
    tag = node.tag
    value: str = node.value
    if tag == _INT:
        # A sign is refused here as on the command line (parse_number says so), so `-0`
        # is not quietly 0 and `-1` names the sign rather than a range.
        try:
            return parse_number(value)
        except NumberError as err:
            return RejectedNumber(value, str(err))
    if tag == _BOOL:
        return value.lower() in _TRUE
    if tag == _NULL:
        return None
    if tag == _MERGE:
        raise _Located("merge keys (`<<`) are not supported; write the keys out", node)
    # Floats and timestamps stay as their source text: the fields that take numbers parse
    # them strictly (whole bytes only), the others are free text.
    return value


class _Constructor:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def value(self, node: Node, depth: int) -> Any:
        if isinstance(node, ScalarNode):
            return _scalar(node)
        if depth >= MAX_DEPTH:
            raise _Located(f"nesting deeper than {MAX_DEPTH} levels", node)
        if isinstance(node, SequenceNode):
            return [self.value(child, depth + 1) for child in node.value]
        assert isinstance(node, MappingNode)
        return self.mapping(node, depth)

    def mapping(self, node: MappingNode, depth: int = 0) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise _Located("keys must be plain scalars, not collections", key_node)
            key = _scalar(key_node)
            if key in result:
                mark = key_node.start_mark
                message = (
                    f"duplicate key {key_node.value!r} (first defined on line "
                    f"{first_line[key]}); YAML would silently keep only the last one"
                )
                self.problems.append(Problem(SCHEMA, message, mark.line + 1, mark.column + 1))
                continue
            first_line[key] = key_node.start_mark.line + 1
            result[key] = self.value(value_node, depth + 1)
        return result
