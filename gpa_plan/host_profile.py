"""A host profile: what `gpa-plan host` printed on a host, read back for `check --host FILE`.

The file is the JSON document of `gpa-plan host --format json` (docs/host.md). gpa-plan reads
its ``format`` (1), ``arch``, ``kernel.release`` and ``facts``: the facts the architecture's
module declares (``ArchSpec.host_facts``), each of its type or ``null`` (not known on that
host: the rules then say on which condition the outcome depends, as without a profile). Other
keys (``capabilities``, ``sources``, ``unknown``) are for people and are not read. A fact the
architecture does not declare is refused, so that a misspelt one is not silently ignored.

A profile applies to the results of its own architecture only: an arm64 layout checked with
an x86_64 host's profile is checked as without one.

Every mistake raises HostProfileError with the file, line and column of the value at fault.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from gpa_plan.arch import ARCHES
from gpa_plan.arch.base import ArchSpec
from gpa_plan.inputs import read_input

if TYPE_CHECKING:
    from gpa_plan.check.findings import Finding

FORMAT = 1

Path = tuple[str, ...]
Position = tuple[int, int]


class HostProfileError(Exception):
    """A host profile that cannot be used, with where in the file."""

    def __init__(self, path: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{path}:{line}:{column}: {message}")
        self.path = path
        self.line = line
        self.column = column
        self.message = message

    def finding(self) -> Finding:
        """The error as a finding, for every output format."""
        from gpa_plan.check.findings import ERROR, HOST_PROFILE, Finding

        return Finding(HOST_PROFILE, ERROR, self.message, self.path, self.line, self.column)


class HostProfile(NamedTuple):
    """The facts of one host's KVM, as the rules ask them."""

    file: str
    arch: str
    kernel_release: str
    facts: Mapping[str, Any]

    def fact(self, name: str) -> Any:
        """The fact's value; None when the profile does not know it."""
        return self.facts.get(name)

    def cite(self, *names: str) -> str:
        """How a message names facts: ``address_spaces 1 in host profile host.json``,
        ``tdp true, smaller_maxphyaddr false in host profile host.json``."""
        facts = ", ".join(f"{name} {json.dumps(self.fact(name))}" for name in names)
        return f"{facts} in host profile {self.file}"

    def describe(self) -> dict[str, str]:
        """What the JSON outputs say of the profile used."""
        return {"file": self.file, "arch": self.arch, "kernel_release": self.kernel_release}


def load_host_profile(path: str | os.PathLike[str]) -> HostProfile:
    """Read and check a host profile; raises HostProfileError (and InputError, from
    gpa_plan.inputs, when the file cannot be read at all)."""
    name = os.fspath(path)
    raw = read_input(name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise HostProfileError(name, line, column, "not UTF-8 text: a host profile is the "
                               "JSON `gpa-plan host --format json` prints") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise HostProfileError(
            name, err.lineno, err.colno,
            f"not valid JSON ({err.msg}); a host profile is what `gpa-plan host --format json` "
            "prints",
        ) from None
    except RecursionError:
        raise HostProfileError(name, 1, 1, "JSON nested too deeply to be a host profile") from None
    return _profile(name, data, *positions(text))


def host_profile_of(facts: Mapping[str, Any], name: str = "this host") -> HostProfile:
    """The profile of a host_facts() dict (gpa_plan.probe.host), as load_host_profile reads
    one from a file: what `verify` gets from the probe, named ``name`` in messages. Raises
    HostProfileError (at line 1, column 1) when the dict is not a profile."""
    return _profile(name, facts, {}, {})


def _profile(
    name: str, data: Any, where: Mapping[Path, Position], keys: Mapping[Path, Position]
) -> HostProfile:
    def fail(path: Path, message: str, *, key: bool = False) -> HostProfileError:
        if key and path in keys:
            return HostProfileError(name, *keys[path], message)
        # The closest value that exists in the file: a missing key points at its mapping.
        while path not in where and path:
            path = path[:-1]
        line, column = where.get(path, (1, 1))
        return HostProfileError(name, line, column, message)

    if not isinstance(data, dict):
        raise fail((), f"a host profile is a JSON object, not {_json_type(data)}")
    given = data.get("format")
    if type(given) is not int or given != FORMAT:  # true == 1 to Python, not to JSON
        raise fail(("format",), f'`"format": {FORMAT}` is the only host profile format; this '
                   f"file has {json.dumps(given)}")
    arch_name = data.get("arch")
    spec = ARCHES.get(arch_name) if isinstance(arch_name, str) else None
    if spec is None or not spec.host_facts:
        known = ", ".join(a.name for a in ARCHES.values() if a.host_facts)
        raise fail(("arch",), f"`arch` is {json.dumps(arch_name)}: host profiles exist for "
                   f"{known}; run `gpa-plan host` on such a host")
    kernel = data.get("kernel")
    release = kernel.get("release") if isinstance(kernel, dict) else None
    if not isinstance(release, str):
        raise fail(("kernel", "release"), "`kernel.release` must be a string (uname -r)")
    facts = data.get("facts")
    if not isinstance(facts, dict):
        raise fail(("facts",), f"`facts` must be an object, not {_json_type(facts)}")
    return HostProfile(name, spec.name, release, _facts(spec, facts, fail))


def _facts(
    spec: ArchSpec, facts: dict[str, Any], fail: Callable[..., HostProfileError]
) -> dict[str, Any]:
    declared = {f.name: f for f in spec.host_facts}
    checked: dict[str, Any] = {}
    for key, value in facts.items():
        fact = declared.get(key)
        if fact is None:
            names = ", ".join(declared)
            raise fail(("facts", key), f"unknown {spec.name} host fact `{key}`; the facts are "
                       f"{names}", key=True)
        # bool is an int to Python: a count given as true is still a mistake.
        if value is not None and (type(value) is not fact.kind):
            raise fail(("facts", key), f"`{key}` must be {_kind_name(fact.kind)} or null "
                       f"({fact.meaning}), not {_json_type(value)}")
        checked[key] = value
    return checked


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", str: "a string"}.get(kind, kind.__name__)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{json.dumps(value)}"
    if isinstance(value, (int, float)):
        return f"the number {json.dumps(value)}"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}"
    return "an array" if isinstance(value, list) else "an object"


_MAX_DEPTH = 16  # a profile's facts sit at depth 2; deeper objects are passed over whole


# --- where each value is ------------------------------------------------------------------------


def positions(text: str) -> tuple[dict[Path, Position], dict[Path, Position]]:
    """1-based (line, column) of every value of a valid JSON document, and of every key, by
    the value's path of object keys (array elements are not descended into: a profile has
    none worth pointing at)."""
    found: dict[Path, Position] = {}
    keys: dict[Path, Position] = {}
    decoder = json.JSONDecoder()
    line_starts = [0]
    line_starts.extend(i + 1 for i, c in enumerate(text) if c == "\n")

    def at(index: int) -> Position:
        from bisect import bisect_right

        line = bisect_right(line_starts, index)
        return line, index - line_starts[line - 1] + 1

    def skip(index: int) -> int:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        return index

    def value(index: int, path: Path) -> int:
        index = skip(index)
        found[path] = at(index)
        if text[index] != "{" or len(path) >= _MAX_DEPTH:
            return decoder.raw_decode(text, index)[1]
        index = skip(index + 1)
        if text[index] == "}":
            return index + 1
        while True:
            index = skip(index)
            start = index
            key, index = decoder.raw_decode(text, index)
            child = (*path, str(key))
            keys[child] = at(start)
            index = skip(index) + 1  # the colon
            index = skip(value(index, child))
            if text[index] == "}":
                return index + 1
            index += 1  # the comma

    value(0, ())
    return found, keys
