"""What `gpa-plan verify` does with a layout: plan it, run the probe here or export it, read
the results back, compare.

Three ways to get results, one comparison: the probe runs in this process (the host must be
of the layout's architecture, with ``/dev/kvm``); or `export` writes the probe package and the
plan to a directory for a machine without gpa-plan, whose ``results.json`` `load_results`
reads back. The plan is rebuilt from the layout each time, so the results of an exported plan
are compared with the predictions of the same layout (and gpa-plan version).
"""

from __future__ import annotations

import json
import mmap
import os
import shlex
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from gpa_plan.arch import ARCHES
from gpa_plan.check.run import LoadedLayout, check_loaded, load_layout
from gpa_plan.host_profile import HostProfile
from gpa_plan.inputs import file_kind, os_reason
from gpa_plan.probe import plan as probe_plan
from gpa_plan.ranges import human_size
from gpa_plan.verify.build import VerifyError, VerifyPlan, build_plan, no_guest
from gpa_plan.verify.compare import ResultsError, Verdict, compare

PROBE_PACKAGE = Path(__file__).resolve().parent.parent / "probe"
EXPORT_README = """\
gpa-plan probe for {file} ({arch})

Run on the machine to verify (Python 3.10 or later, standard library only; root, or a user
who may open /dev/kvm):

    cd {dir} && python3 -m probe plan.json > results.json

then, where gpa-plan is installed:

    gpa-plan verify {file} --arch {arch} --results results.json
"""


class CannotRun(Exception):
    """Verification cannot run here (exit 2): the message says why and how to fix it."""


class ResultsFileError(Exception):
    """A results file that is not JSON, with the position of the fault."""

    def __init__(self, path: str, line: int, column: int, reason: str) -> None:
        super().__init__(f"{path}:{line}:{column}: {reason}")
        self.path, self.line, self.column, self.reason = path, line, column, reason


def plan_layout(path: str, arch_name: str | None, host: HostProfile | None = None) -> VerifyPlan:
    """Load and check ``path`` (LayoutError, InputError propagate) and build its plan under
    ``arch_name`` (the layout's own by default), its predictions made for ``host``. The plan
    itself (steps, probe points, the probe's room) does not depend on ``host``."""
    return plan_loaded(load_layout(path), arch_name, host)


def plan_loaded(
    loaded: LoadedLayout, arch_name: str | None, host: HostProfile | None = None
) -> VerifyPlan:
    arch = ARCHES[arch_name or loaded.layout.arch]
    return build_plan(loaded, check_loaded(loaded, arch.name, host=host), arch, host)


def verify_here(path: str, arch_name: str | None, host: HostProfile | None) -> Verdict:
    """Verify ``path`` on this host's /dev/kvm, predicting for ``host`` (default: this host's
    own facts); raises CannotRun where it cannot run here."""
    loaded = load_layout(path)
    arch = arch_name or loaded.layout.arch
    if ARCHES[arch].probe_steps is None:
        raise VerifyError(no_guest(arch))
    here = host_machine_arch()
    if here != arch:
        raise CannotRun(
            f"this host is {os.uname().machine}, and KVM runs only guests of its own "
            f"architecture: run verify on a {arch} host, or write the probe with "
            "--export DIR and run it there"
        )
    _, own = this_host()
    return run_here(plan_loaded(loaded, arch, host or own))


def verify_results(
    path: str, arch_name: str | None, results_path: str, host: HostProfile | None
) -> Verdict:
    """Compare the results an exported probe printed with ``path``'s predictions, made for
    ``host`` (default: the host the probe reported)."""
    results = load_results(results_path)
    vp = plan_layout(path, arch_name, host or profile_of(results.get("host")))
    try:
        return compare_results(vp, results)
    except ResultsError as err:
        raise ResultsError(f"{_shown_path(results_path)}: {err}") from None


def this_host() -> tuple[dict[str, Any], HostProfile | None]:
    """This host's facts (gpa_plan.probe.host) and the profile they make, for predictions
    exact for the kernel the probe runs on; raises CannotRun without a usable /dev/kvm."""
    from gpa_plan.probe import kvm
    from gpa_plan.probe.host import host_facts

    try:
        facts = host_facts()
    except kvm.KvmError as err:
        raise CannotRun(f"{err}: {_kvm_fix()}") from None
    return facts, profile_of(facts)


def profile_of(facts: Any) -> HostProfile | None:
    """The host profile of facts a probe reported; None when they are not a profile (an
    architecture gpa-plan has no host facts for, facts of an older probe)."""
    from gpa_plan.host_profile import HostProfileError, host_profile_of

    if not isinstance(facts, dict):
        return None
    try:
        return host_profile_of(facts)
    except HostProfileError:
        return None


def host_machine_arch() -> str | None:
    """The architecture this host runs, as gpa-plan names it; None for one it does not model."""
    machine = os.uname().machine
    return next((a.name for a in ARCHES.values() if a.machine == machine), None)


def run_here(vp: VerifyPlan) -> Verdict:
    """Run the probe on this host's ``/dev/kvm`` and compare; raises CannotRun."""
    from gpa_plan.probe.run import run_plan

    same_page_size(vp, mmap.PAGESIZE)
    results = run_plan(vp.plan)
    _refuse_unrun(results)
    return compare(vp, results)


def _refuse_unrun(results: Mapping[str, Any]) -> None:
    """Results of a plan the probe could not run (its ``error``) compare nothing: CannotRun;
    but a VM KVM_CREATE_VM refused (``vm_errno``) is a result like any other."""
    error = results.get("error")
    if error and results.get("vm_errno") is None:
        said = error if isinstance(error, str) else json.dumps(error)
        raise CannotRun(f"the probe could not run the plan: {said}")


def same_page_size(vp: VerifyPlan, host_page: int | None) -> None:
    """Refuse (CannotRun) a host whose page size is not the layout's `page_size`: KVM checks
    memslots against the host's PAGE_SIZE, so the predictions are another host's."""
    if host_page is None or host_page == vp.page_size:
        return
    raise CannotRun(
        f"the layout's page_size is {human_size(vp.page_size)} and this host's pages are "
        f"{human_size(host_page)}: KVM checks memslots against the host's page size, so the "
        f"predictions are for another host; verify on a host with {human_size(vp.page_size)} "
        f"pages, or set page_size: {human_size(host_page).replace(' KiB', 'K')} in the layout"
    )


def _kvm_fix() -> str:
    if not os.path.exists("/dev/kvm"):
        return (
            "KVM is not available here; load the module (modprobe kvm_intel or kvm_amd) or "
            "enable virtualization in the firmware, or run in a VM with nested virtualization"
        )
    return "run as root or add your user to the group that owns /dev/kvm (usually kvm)"


def export(vp: VerifyPlan, directory: str, stdout: TextIO) -> list[str]:
    """Write the probe package, ``plan.json`` and a ``README`` into ``directory`` (made, with
    its parents, if absent); returns the paths written. Raises CannotRun, having written
    nothing, when a path there is not a regular file (a FIFO or a directory named
    ``plan.json``, a file named ``probe``) or the directory cannot be made; each file is then
    replaced whole or not at all (gpa_plan.files)."""
    from gpa_plan.files import OutputError, write_output

    if not directory:
        raise CannotRun("--export needs a directory; give one (. for this one)")
    root = Path(directory)
    files = {
        str(root / "probe" / source.name): source.read_text(encoding="utf-8")
        for source in sorted(PROBE_PACKAGE.glob("*.py"))
    }
    files[str(root / "plan.json")] = _plan_text(vp)
    files[str(root / "README")] = EXPORT_README.format(
        file=shlex.quote(vp.file), arch=vp.arch, dir=shlex.quote(directory)
    )
    _refuse_what_is_not_replaceable(root, files)
    try:
        (root / "probe").mkdir(parents=True, exist_ok=True)
        for path, text in files.items():
            write_output(path, text, stdout)
    except OutputError as err:
        raise CannotRun(f"{err}; nothing else was written after it") from None
    except OSError as err:
        raise CannotRun(
            f"cannot make the directory {directory}: {os_reason(err)}; give --export a "
            "directory you may create or write"
        ) from None
    return list(files)


def _plan_text(vp: VerifyPlan) -> str:
    """The plan as the exported probe reads it; CannotRun when it is larger than the probe
    reads (a layout of some ten thousand regions), before anything is written."""
    from gpa_plan.probe.__main__ import MAX_PLAN_BYTES

    text = json.dumps(vp.plan, indent=1) + "\n"
    if len(text) > MAX_PLAN_BYTES:
        text = json.dumps(vp.plan, separators=(",", ":")) + "\n"
    if len(text.encode("utf-8")) > MAX_PLAN_BYTES:
        raise CannotRun(
            f"the plan of {vp.file} ({len(vp.plan['probes'])} probes) is "
            f"{human_size(len(text))}, more than the {human_size(MAX_PLAN_BYTES)} the probe "
            "reads; nothing was written: verify the layout in parts, or run verify on the "
            "target itself"
        )
    return text


def _refuse_what_is_not_replaceable(root: Path, files: Mapping[str, str]) -> None:
    """CannotRun when ``root``, ``root/probe`` or one of ``files`` is there and is not what
    export writes: a directory, a directory, a regular file (links followed)."""
    wanted = [(root, stat.S_ISDIR, "a directory"), (root / "probe", stat.S_ISDIR, "a directory")]
    wanted += [(Path(path), stat.S_ISREG, "a regular file") for path in files]
    for path, kind_of, kind in wanted:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            continue
        except OSError as err:
            raise CannotRun(
                f"{path}: {os_reason(err)}; give --export a directory you may write"
            ) from None
        if not kind_of(mode):
            what = "a regular file" if stat.S_ISREG(mode) else file_kind(mode)
            raise CannotRun(
                f"{path} is {what}, where --export writes {kind}; nothing was written: give "
                "--export another directory"
            )


def compare_results(vp: VerifyPlan, results: Mapping[str, Any]) -> Verdict:
    """Compare an exported probe's results with ``vp``; raises ResultsError for results of
    another format or a damaged file, CannotRun for results of a plan the probe could not run
    or of a host of another page size."""
    given = results.get("format")
    if type(given) is not int or given != probe_plan.FORMAT:  # true == 1 to Python
        raise ResultsError(
            f"format is {json.dumps(given)}: this gpa-plan reads results of format "
            f"{probe_plan.FORMAT}; run the probe `--export` wrote with this gpa-plan"
        )
    _refuse_unrun(results)
    host = results.get("host")
    page = host.get("page_size") if isinstance(host, dict) else None
    if page is not None and (type(page) is not int or page <= 0):
        raise ResultsError(
            f"host.page_size is {json.dumps(page)}, where the host's page size in bytes is "
            "needed: give the results file the probe printed, unedited"
        )
    same_page_size(vp, page)
    return compare(vp, results)


def load_results(path: str) -> Mapping[str, Any]:
    """A results file as the probe printed it; raises ResultsFileError with its position, and
    InputError (gpa_plan.inputs) when it cannot be read."""
    from gpa_plan.inputs import read_input

    data = read_input(path, allow_stdin=True)
    name = _shown_path(path)
    try:
        results = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ResultsFileError(name, line, column, "not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ResultsFileError(
            name, err.lineno, err.colno, f"not JSON: {err.msg}; give the file the probe printed"
        ) from None
    except RecursionError:
        raise ResultsFileError(
            name, 1, 1, "JSON nested too deeply to be probe results; give the file the probe "
            "printed"
        ) from None
    if not isinstance(results, dict):
        raise ResultsFileError(name, 1, 1, "not a JSON object of probe results")
    return results


def _shown_path(path: str) -> str:
    from gpa_plan.inputs import STDIN, STDIN_NAME

    return STDIN_NAME if path == STDIN else path


__all__ = [
    "CannotRun",
    "ResultsFileError",
    "VerifyError",
    "compare_results",
    "export",
    "host_machine_arch",
    "load_results",
    "plan_layout",
    "plan_loaded",
    "run_here",
    "verify_here",
    "verify_results",
]
