"""Where `gpa-plan record -o OUT` puts the layouts of a recording.

- One VM, and OUT not a directory: OUT is the layout file.
- OUT an existing directory, or a path ending in ``/``, or several VMs: OUT is a directory
  (made when missing; its parent must exist) that receives ``vm1.yaml``, ``vm2.yaml``, ... in
  the VMs' creation order (``.json`` with ``--format json``).
- Several VMs and OUT an existing file: the file is left alone, and the layouts go to a new
  directory beside it, ``OUT.d`` (``OUT.d2``, ... when that exists too), so that nothing
  recorded is lost; the caller says where.

Each file is written as every gpa-plan output is (gpa_plan.files.write_output): atomically,
never replacing anything that is not a regular file. ``-`` is standard output, whatever the
number of VMs. ``writable()`` is asked before the command runs, so that a recording is not
lost to a path that could never be written; should a write fail all the same, ``rescue()``
puts the layouts in a new directory under the system's temporary directory.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from typing import TextIO

from gpa_plan.files import OutputError, write_output


def targets(output: str, count: int, suffix: str) -> tuple[list[str], str | None]:
    """The paths the ``count`` layouts go to, and the directory used instead of ``output``
    when ``output`` is a file that cannot take several (else None). Makes the directory."""
    directory = output.endswith(os.sep) or os.path.isdir(output)
    if count == 1 and not directory:
        return [output], None
    moved = None
    if not directory and os.path.lexists(output):
        moved = _fresh_directory(output)
        output = moved
    if not os.path.isdir(output):
        try:
            os.mkdir(output)
        except OSError as err:
            raise OutputError(output, f"cannot make the directory: {err.strerror}") from None
    return [os.path.join(output, f"vm{number}.{suffix}") for number in
            range(1, count + 1)], moved


def writable(output: str) -> str | None:
    """Why ``output`` cannot take a recording, or None: its directory (the parent of a file,
    or the path itself when it names a directory) must exist and be writable, and an
    existing file must be one gpa-plan may replace."""
    if output == "-":
        return None
    directory = output if os.path.isdir(output) else (
        os.path.dirname(output.rstrip(os.sep)) or ".")
    if not os.path.isdir(directory):
        return f"the directory {directory} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"the directory {directory} cannot be written to"
    return None


def stale(paths: Sequence[str]) -> list[str]:
    """Layouts ``vmN.*`` beside ``paths`` (in a directory) with a higher N: an earlier
    recording's, not this one's."""
    if len(paths) < 1 or os.path.dirname(paths[0]) == "":
        return []
    directory = os.path.dirname(paths[0])
    ours = {os.path.basename(p) for p in paths}
    found = []
    for name in sorted(os.listdir(directory)):
        match = re.fullmatch(r"vm(\d+)\.(yaml|json)", name)
        if match and name not in ours and int(match.group(1)) > len(paths):
            found.append(os.path.join(directory, name))
    return found


def rescue(texts: Sequence[str], suffix: str, stdout: TextIO, stderr: TextIO) -> list[str]:
    """Write ``texts`` as vm1, vm2, ... into a new directory of the system's temporary
    directory; the paths."""
    directory = tempfile.mkdtemp(prefix="gpa-plan-record-")
    paths = [os.path.join(directory, f"vm{n}.{suffix}") for n in range(1, len(texts) + 1)]
    write_all(paths, texts, stdout, stderr)
    return paths


def _fresh_directory(output: str) -> str:
    number = 1
    while True:
        candidate = f"{output}.d" if number == 1 else f"{output}.d{number}"
        if not os.path.lexists(candidate):
            return candidate
        number += 1


def write_all(paths: Sequence[str], texts: Sequence[str], stdout: TextIO,
              stderr: TextIO) -> list[str]:
    """Write each text to its path; the notes write_output returns."""
    said: list[str] = []
    for path, text in zip(paths, texts, strict=True):
        said += write_output(path, text, stdout, stderr)
    return said
