"""The arm64 test machine's initramfs: Debian's arm64 Python, the probe and the plans to run.

The archive is an uncompressed cpio in the kernel's "newc" format
(Documentation/driver-api/early-userspace/buffer-format.rst), written here so that no cpio
tool is needed. It holds:

- ``/init``: ``init.py`` beside this file, a Python script run by ``/usr/bin/python3.11``;
- the interpreter, the shared libraries it and ``_ctypes`` load, and the part of the standard
  library the init and the probe import (found by reading their import statements);
- ``/probe``: a copy of ``gpa_plan/probe``, and ``/plans.json``: the plans to run, in order;
- with recordings asked for, ``/records.json`` (the plans to run under ``gpa-plan record``)
  and ``/gpa_plan``: the package's modules ``gpa_plan.record.session`` loads (found by reading
  their import statements, as the standard library's are), and nothing else of it, and
  ``/programs``: the small VMMs beside this file (``programs/*.py``) a recording may run;
- ``/dev/console`` (5, 1) so that the init has a console before it mounts devtmpfs, and
  ``/dev/kvm`` (10, 232) for a kernel whose devtmpfs cannot be mounted.

Left uncompressed on purpose: under TCG the kernel would spend longer inflating it than QEMU
spends loading the bytes. For the same reason every module comes with its bytecode
(``__pycache__/*.cpython-311.pyc``, unchecked hash-based, PEP 552) when the builder itself runs
on CPython 3.11, whose bytecode is the guest's: compiling them under TCG costs seconds a boot.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import marshal
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

PYTHON = "usr/bin/python3.11"
STDLIB = "usr/lib/python3.11"
DYNLOAD = f"{STDLIB}/lib-dynload"
EXT_SUFFIX = ".cpython-311-aarch64-linux-gnu.so"
CACHE_TAG = "cpython-311"
LIB_DIRS = ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu")
# The interpreter's DT_NEEDED, and _ctypes's libffi.
SONAMES = (
    "ld-linux-aarch64.so.1",
    "libc.so.6",
    "libm.so.6",
    "libz.so.1",
    "libexpat.so.1",
    "libffi.so.8",
)
# Imported at interpreter start-up (encodings and the codecs of a C or UTF-8 locale), and the
# landmark getpath looks for to find the standard library.
STARTUP_MODULES = (
    "encodings",
    "encodings.aliases",
    "encodings.utf_8",
    "encodings.ascii",
    "encodings.latin_1",
    "os",
)
INIT = Path(__file__).with_name("init.py")
PACKAGE = Path(__file__).resolve().parents[2] / "gpa_plan"
PROBE = PACKAGE / "probe"
PROGRAMS = Path(__file__).with_name("programs")
RECORD_MODULE = "gpa_plan.record.session"
# The recorded command is ``python3.11 -S -m probe PLAN``: ``-m`` runs the module through runpy.
RECORD_STARTUP = "import runpy\n"

_S_IFCHR = stat.S_IFCHR


class Cpio:
    """A "newc" cpio archive being written to a byte buffer."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._ino = 0
        self._seen: set[str] = set()

    def _entry(
        self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        if name in self._seen:
            return
        self._seen.add(name)
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.data += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        self._pad()
        self.data += body
        self._pad()

    def _pad(self) -> None:
        self.data += b"\0" * (-len(self.data) % 4)

    def directory(self, name: str) -> None:
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | 0o755)

    def _parent(self, name: str) -> None:
        if "/" in name:
            self.directory(name.rsplit("/", 1)[0])

    def file(self, name: str, body: bytes, mode: int = 0o644) -> None:
        self._parent(name)
        self._entry(name, stat.S_IFREG | mode, body)

    def symlink(self, name: str, target: str) -> None:
        self._parent(name)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._parent(name)
        self._entry(name, _S_IFCHR | 0o600, rdev=(major, minor))

    def module(self, name: str, source: bytes) -> None:
        """A Python module's source and, when this interpreter's bytecode is the guest's, its
        compiled form beside it."""
        self.file(name, source)
        if sys.implementation.cache_tag != CACHE_TAG:
            return
        code = compile(source, f"/{name}", "exec", dont_inherit=True)
        header = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")  # hash-based, unchecked
        pyc = header + importlib.util.source_hash(source) + marshal.dumps(code)
        folder, _, filename = name.rpartition("/")
        self.file(f"{folder}/__pycache__/{filename[:-3]}.{CACHE_TAG}.pyc", pyc)

    def copy(self, root: Path, name: str) -> None:
        """Add ``root/name`` (a file or a symlink, and what the symlink points to)."""
        path = root / name
        if path.is_symlink():
            target = str(path.readlink())
            self.symlink(name, target)
            resolved = (path.parent / target).resolve().relative_to(root.resolve())
            self.copy(root, resolved.as_posix())
        elif name.endswith(".py"):
            self.module(name, path.read_bytes())
        else:
            self.file(name, path.read_bytes(), path.stat().st_mode & 0o777)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self.data)


def module_file(root: Path, module: str) -> str | None:
    """The file (relative to ``root``) of a standard-library module, or None (built in)."""
    base = f"{STDLIB}/{module.replace('.', '/')}"
    for candidate in (f"{base}/__init__.py", f"{base}.py"):
        if (root / candidate).is_file():
            return candidate
    if "." not in module and (root / f"{DYNLOAD}/{module}{EXT_SUFFIX}").is_file():
        return f"{DYNLOAD}/{module}{EXT_SUFFIX}"
    return None


class _Imports(ast.NodeVisitor):
    def __init__(self, package: str, lazy: bool, typing: bool = True) -> None:
        self.package = package
        self.lazy = lazy
        self.typing = typing
        self.names: list[str] = []

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING" and not self.typing:
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if self.lazy:
            self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Import(self, node: ast.Import) -> None:
        self.names += [alias.name for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parent = self.package.rsplit(".", node.level - 1)[0]
            base = f"{parent}.{base}" if base else parent
        self.names.append(base)
        self.names += [f"{base}.{alias.name}" for alias in node.names]  # submodules, if any


def imports_of(source: str, package: str, lazy: bool = False, typing: bool = True) -> list[str]:
    """Modules a module imports when it is loaded, and with ``lazy`` inside functions too;
    without ``typing``, leaving out those only a type checker imports (``if TYPE_CHECKING:``).

    ``package`` is the module's package, for relative imports.
    """
    visitor = _Imports(package, lazy, typing)
    visitor.visit(ast.parse(source))
    return visitor.names


def stdlib_closure(root: Path, sources: Iterable[tuple[str, str]]) -> list[str]:
    """The standard-library files that ``sources`` (module text, its package) need, transitively."""
    wanted: list[str] = []
    seen: set[str] = set()
    queue = list(STARTUP_MODULES)
    for text, package in sources:
        queue += imports_of(text, package, lazy=True)
    while queue:
        module = queue.pop()
        if not module or module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        for i in range(1, len(parts)):
            queue.append(".".join(parts[:i]))
        path = module_file(root, module)
        if path is None:
            continue
        wanted.append(path)
        if path.endswith(".py"):
            package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
            queue += imports_of((root / path).read_text(encoding="utf-8"), package)
    return sorted(set(wanted))


def _package_of(name: str) -> str:
    """The package a module file belongs to, for its relative imports."""
    folder = name.rpartition("/")[0]
    return folder.replace("/", ".")


def probe_sources(probe: Path = PROBE) -> dict[str, bytes]:
    return {f"probe/{p.name}": p.read_bytes() for p in sorted(probe.glob("*.py"))}


def package_file(package: Path, module: str) -> str | None:
    """The file (relative to the package's parent) of ``module`` of the package, or None."""
    base = package.parent / module.replace(".", "/")
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate.relative_to(package.parent).as_posix()
    return None


def package_closure(module: str, package: Path = PACKAGE) -> dict[str, bytes]:
    """The package's modules that loading ``module`` loads (imports at module level, the
    packages around each included), by file name relative to the package's parent."""
    found: dict[str, bytes] = {}
    queue = [module]
    seen: set[str] = set()
    while queue:
        name = queue.pop()
        if name in seen or name.split(".")[0] != package.name:
            continue
        seen.add(name)
        parts = name.split(".")
        queue += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = package_file(package, name)
        if path is None:
            continue
        found[path] = (package.parent / path).read_bytes()
        parent = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        queue += imports_of(found[path].decode(), parent, typing=False)
    return dict(sorted(found.items()))


def build(
    root: Path,
    plans: list[dict[str, object]],
    probe: Path = PROBE,
    records: list[dict[str, object]] | None = None,
) -> bytes:
    """The initramfs for ``plans``, and ``records`` to run under ``gpa-plan record`` when
    given, from the userland extracted at ``root``."""
    archive = Cpio()
    for name in ("dev", "proc", "sys", "tmp"):
        archive.directory(name)
    archive.char_device("dev/console", 5, 1)
    archive.char_device("dev/kvm", 10, 232)
    archive.file("init", INIT.read_bytes(), 0o755)
    archive.file("plans.json", json.dumps(plans).encode())
    sources = probe_sources(probe)
    if records:
        archive.file("records.json", json.dumps(records).encode())
        programs = {f"programs/{p.name}": p.read_bytes() for p in sorted(PROGRAMS.glob("*.py"))}
        sources = {**sources, **package_closure(RECORD_MODULE, probe.parent), **programs}
    for name, body in sources.items():
        archive.module(name, body)
    texts = [
        (INIT.read_text(encoding="utf-8"), ""),
        *((b.decode(), _package_of(n)) for n, b in sources.items()),
    ]
    if records:
        texts.append((RECORD_STARTUP, ""))
    for name in stdlib_closure(root, texts):
        archive.copy(root, name)
    archive.copy(root, PYTHON)
    archive.copy(root, "lib/ld-linux-aarch64.so.1")
    for soname in SONAMES:
        found = [d for d in LIB_DIRS if (root / d / soname).exists()]
        if not found:
            raise FileNotFoundError(f"{soname} is not under {root}: run tests/arm64/fetch.py")
        archive.copy(root, f"{found[0]}/{soname}")
    return archive.finish()
