"""The `gpa-plan` command line: options in, core calls, a reporter out, exit codes.

Exit codes (docs/exit-codes.md): 0 nothing at error severity (with --strict, no warning either);
1 findings at error severity, files that fail to load, or no room to allocate; 2 usage errors
(bad options, unknown rules, bad configuration) and internal errors; 130 and 141 when
interrupted or when the output's reader went away (gpa_plan.exits). Modules are imported
inside each command so that a command pays only for what it uses.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from gpa_plan.arch import ARCHES, SELFTESTS_DEFAULT_ARCH
from gpa_plan.formats import (
    ALLOCATE_FORMATS,
    CHECK_FORMATS,
    EXPLAIN_FORMATS,
    VERIFY_FORMATS,
    Formats,
)
from gpa_plan.importers.registry import ARCH, COUNT, IMPORTERS, SIZE

if TYPE_CHECKING:
    from gpa_plan.check.batch import CheckRun
    from gpa_plan.check.findings import Finding
    from gpa_plan.check.run import LoadedLayout
    from gpa_plan.config import Config
    from gpa_plan.host_profile import HostProfile
    from gpa_plan.inputs import InputError


class _ArchChoice(click.Choice):  # type: ignore[type-arg]
    """The architectures by our names, telling a user of another name (aarch64) which."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as err:
            from gpa_plan.arch import name_hint

            hint = name_hint(value, "--arch {}")
            if hint:
                raise click.BadParameter(
                    err.message.rstrip(".") + hint, ctx=err.ctx, param=err.param
                ) from None
            raise


HOST_HELP = (
    "A host profile (what `gpa-plan host --format json` printed on the host the VM runs on): "
    "the findings that depend on the host become exact for layouts of its architecture."
)


ARCH_CHOICE = _ArchChoice(list(ARCHES))
ACCESS_CHOICE = click.Choice(["read", "write", "fetch"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gpa-plan")
def cli() -> None:
    """Check and plan KVM guest-physical address layouts."""


@cli.result_callback()
def _exit_with(status: int | None, **_: Any) -> None:
    """Each command returns its exit status; click's own exit carries it, so that it is the
    process's status under click's standalone mode (CliRunner) and main()'s return value."""
    click.get_current_context().exit(status or 0)


# Checks nothing itself: the reader refuses what it cannot read, so one bad path does not stop
# a run (click.Path(exists=True) would) and a FIFO is never opened for reading.
INPUT_PATH = click.Path(readable=False, allow_dash=True)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=INPUT_PATH)
@click.option(
    "--arch",
    "arches",
    multiple=True,
    type=ARCH_CHOICE,
    help="Evaluate under this architecture (repeatable; default: the layout's).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(CHECK_FORMATS.names),
    default="text",
    show_default=True,
    help=CHECK_FORMATS.help(),
)
@click.option(
    "--select",
    multiple=True,
    metavar="RULE[,RULE...]",
    help="Report only these rules (repeatable; replaces the configured `select`). "
    "Files that fail to load are always reported.",
)
@click.option(
    "--ignore",
    multiple=True,
    metavar="RULE[,RULE...]",
    help="Drop these rules' findings before the exit status is decided (repeatable).",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Skip paths matching this shell glob, tried against the path and its last part "
    "(repeatable). Hidden directories, node_modules and virtual environments are always "
    "skipped inside a directory.",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Text format: print only the findings and the summary line, not the region tables "
    "(what pre-commit and other lint steps want). Other formats are unchanged.",
)
@click.option(
    "--strict/--no-strict",
    default=None,
    help="Fail (exit 1) on warnings too (default: the configured `strict`, else off).",
)
@click.option(
    "--elf",
    "elf_files",
    multiple=True,
    type=INPUT_PATH,
    help="Also check this guest program (ELF) against each layout (repeatable).",
)
@click.option(
    "--elf-mode",
    type=click.Choice(["physical", "selftests"]),
    default="physical",
    show_default=True,
    help="How --elf programs are loaded: segments at p_paddr (VMM kernel loaders) or at "
    "p_vaddr backed by the code memslot (KVM selftests' kvm_vm_elf_load).",
)
@click.option("--host", "host_file", type=INPUT_PATH, default=None, metavar="FILE",
              help=HOST_HELP)
@click.option("--layout", "declared_file", type=INPUT_PATH, default=None, metavar="DECLARED",
              help="Each FILE is a recording (gpa-plan record): merge DECLARED's user devices "
              "and reserved ranges in, and report what it declares that the recording lacks "
              "and traffic no device claims (docs/record.md).")
def check(
    files: tuple[str, ...],
    arches: tuple[str, ...],
    fmt: str,
    select: tuple[str, ...],
    ignore: tuple[str, ...],
    exclude: tuple[str, ...],
    quiet: bool,
    strict: bool | None,
    elf_files: tuple[str, ...],
    elf_mode: str,
    host_file: str | None,
    declared_file: str | None,
) -> int:
    """Check layout files (or directories of them) and report every IO range and finding.

    A FILE of - is standard input. A path that cannot be read (missing, unreadable, not a
    regular file, a directory without layouts) is reported on stderr and makes the exit
    status 2; the other files are still checked and reported.
    """
    from gpa_plan.check.batch import check_paths, input_bytes
    from gpa_plan.report.progress_bar import watched

    config = _check_config(select, ignore, strict)
    host = _host_profile(host_file)
    if isinstance(host, int):
        return host
    declared = _declared_layout(declared_file, arches)
    if isinstance(declared, int):
        return declared
    size = None if fmt != "text" or quiet else lambda: input_bytes(files, exclude)
    from gpa_plan.check.declared import ArchMismatch

    try:
        with watched(size) as progress:
            run = check_paths(files, arches, elf_files=elf_files, elf_mode=elf_mode,
                              exclude=exclude, progress=progress, host=host, declared=declared)
    except ArchMismatch as mismatch:
        raise click.UsageError(str(mismatch)) from None
    return _reported(run, config, fmt, quiet, host)


def _reported(run: CheckRun, config: Config, fmt: str, quiet: bool,
              host: HostProfile | None = None) -> int:
    """A check run reported as `check` reports it: the results in ``fmt`` on stdout, each
    path that could not be read on stderr; the exit status."""
    from gpa_plan.formats import CheckReport

    results = config.apply_to(run.results)
    CHECK_FORMATS.writer(fmt)(CheckReport(results, run.unreadable, quiet, host), sys.stdout)
    _note_unused_host(host, [r.arch for r in results])
    for err in run.unreadable:
        _say_findings([_unreadable_finding(err)])
    return 2 if run.unreadable else 1 if config.fails(results) else 0


def _declared_layout(path: str | None, arches: Sequence[str]) -> LoadedLayout | int | None:
    """The declared layout of `check --layout` (None without one), or the exit status after
    saying why it cannot be used: 1 for one that does not load, 2 for one that cannot be
    read."""
    if path is None:
        return None
    if arches:
        raise click.UsageError("--layout checks recordings under their own architecture; "
                               "leave out --arch")
    from gpa_plan.check.findings import problem_findings
    from gpa_plan.check.run import load_layout
    from gpa_plan.inputs import InputError
    from gpa_plan.layout.errors import LayoutError

    try:
        return load_layout(path)
    except InputError as err:
        return _unreadable(err)
    except LayoutError as err:
        _say_findings(problem_findings(err.path, err.problems))
        return 1


def _host_profile(path: str | None, formats: Formats[Any] | None = None,
                  fmt: str = "text") -> HostProfile | int | None:
    """The profile at ``path`` (None without one), or the exit status after saying why it
    cannot be used: 1 for a file that is not a host profile, 2 for one that cannot be read.
    The findings go to ``formats``' failure writer when given, else to stderr."""
    if path is None:
        return None
    from gpa_plan.host_profile import HostProfileError, load_host_profile
    from gpa_plan.inputs import InputError

    try:
        return load_host_profile(path)
    except InputError as err:
        finding, status = _unreadable_finding(err), 2
    except HostProfileError as err:
        finding, status = err.finding(), 1
    if formats is not None:
        return _failed(formats, fmt, [finding], status)
    _say_findings([finding])
    return status


def _note_unused_host(host: HostProfile | None, arches: Sequence[str | None]) -> None:
    """Say so on stderr when a host profile applied to no result (another architecture's)."""
    if host is not None and arches and host.arch not in arches:
        _echo_stderr(f"note: host profile {host.file} is of an {host.arch} host and nothing "
                     f"was evaluated under {host.arch}: it changed nothing")


def _unreadable_finding(err: InputError) -> Finding:
    from gpa_plan.check.findings import unreadable_finding

    return unreadable_finding(err)


def _say_findings(findings: Sequence[Finding]) -> None:
    """Finding lines on stderr, as gpa_plan.report.text words them."""
    from gpa_plan.report.text import write_failure

    write_failure(findings, sys.stdout, sys.stderr)


def _unreadable(err: InputError) -> int:
    """A command's one input cannot be read: say so; the status, 2."""
    _say_findings([_unreadable_finding(err)])
    return 2


def _failed(formats: Formats[Any], fmt: str, findings: Sequence[Finding], status: int = 1) -> int:
    """A command that has nothing to print but ``findings``: in format ``fmt``'s way (finding
    lines on stderr, or a JSON document of them on stdout); the status, ``status``."""
    formats.failure_writer(fmt)(findings, sys.stdout, sys.stderr)
    return status


class _ConfigError(click.ClickException):
    exit_code = 2


def _check_config(
    select: Sequence[str], ignore: Sequence[str], strict: bool | None
) -> Config:
    from gpa_plan.config import ConfigError, find_config

    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        raise _ConfigError(
            "the working directory no longer exists, so no configuration can be looked up "
            "from it; cd to an existing directory and run gpa-plan again"
        ) from None
    try:
        return find_config(cwd).override(select, ignore, strict)
    except ConfigError as err:
        raise _ConfigError(str(err)) from None


def _echo_stderr(line: str) -> None:
    """One line on stderr, with control and bidi characters from names and paths escaped."""
    from gpa_plan.printable import printable

    click.echo(printable(line), err=True)


def _address(value: str) -> int:
    return _size(value, "ADDR")


def _size(value: str, hint: str) -> int:
    from gpa_plan.layout.numbers import NumberError, parse_number

    try:
        return parse_number(value)
    except NumberError as err:
        raise click.BadParameter(str(err), param_hint=hint) from None


@cli.command()
@click.argument("file", type=INPUT_PATH)
@click.argument("addresses", metavar="ADDR...", nargs=-1, required=True)
@click.option(
    "--access",
    "accesses",
    multiple=True,
    type=ACCESS_CHOICE,
    help="Access kind (repeatable; default: read, write and fetch).",
)
@click.option(
    "--arch",
    "arches",
    multiple=True,
    type=ARCH_CHOICE,
    help="Architecture (repeatable; default: the layout's).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPLAIN_FORMATS.names),
    default="text",
    show_default=True,
    help=EXPLAIN_FORMATS.help("A FILE that does not load gives its findings."),
)
@click.option("--host", "host_file", type=INPUT_PATH, default=None, metavar="FILE",
              help=HOST_HELP)
def explain(
    file: str,
    addresses: tuple[str, ...],
    accesses: tuple[str, ...],
    arches: tuple[str, ...],
    fmt: str,
    host_file: str | None,
) -> int:
    """Say what a guest access at each ADDR becomes, and through which kernel path."""
    from gpa_plan.check.explain import explain_layout
    from gpa_plan.check.findings import problem_findings
    from gpa_plan.check.run import load_layout
    from gpa_plan.inputs import InputError
    from gpa_plan.layout.errors import LayoutError

    parsed = [_address(a) for a in addresses]
    host = _host_profile(host_file, EXPLAIN_FORMATS, fmt)
    if isinstance(host, int):
        return host
    try:
        loaded = load_layout(file)
    except InputError as err:
        return _failed(EXPLAIN_FORMATS, fmt, [_unreadable_finding(err)], 2)
    except LayoutError as err:
        return _failed(EXPLAIN_FORMATS, fmt, problem_findings(err.path, err.problems))
    answers = explain_layout(
        loaded, parsed, accesses or ("read", "write", "fetch"), arches, host=host
    )
    EXPLAIN_FORMATS.writer(fmt)(answers, sys.stdout, host=host)
    _note_unused_host(host, [a.arch for a in answers])
    return 0


class _HostUnavailable(click.ClickException):
    exit_code = 2


@cli.command("host")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="Output format: text (a table), json (the host profile `--host` reads).")
def host_command(fmt: str) -> int:
    """Print what this host's KVM reports: the kernel release, the capabilities, and the
    facts on which some outcomes depend (docs/host.md). Save the JSON as a host profile for
    `check --host` and `explain --host`."""
    from gpa_plan.probe.host import host_facts, kvm_unavailable
    from gpa_plan.probe.kvm import KvmError

    try:
        facts = host_facts()
    except KvmError as err:
        raise _HostUnavailable(kvm_unavailable(err)) from None
    from gpa_plan.report.host import HOST_FORMATS

    sys.stdout.write(HOST_FORMATS[fmt](facts))
    return 0


@cli.command()
@click.argument("files", metavar="LAYOUT...", nargs=-1, required=True, type=INPUT_PATH)
@click.option("--arch", type=ARCH_CHOICE, help="Architecture (default: the layout's).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(VERIFY_FORMATS.names),
    default="text",
    show_default=True,
    help=VERIFY_FORMATS.help("A LAYOUT that does not load gives its findings."),
)
@click.option(
    "--export",
    "export_dir",
    metavar="DIR",
    help="Write the probe (standard library only) and its plan to DIR, to run elsewhere.",
)
@click.option(
    "--results",
    "results_file",
    metavar="FILE",
    help="Compare the results an exported probe printed, instead of running it here.",
)
@click.option("--host", "host_file", type=INPUT_PATH, default=None, metavar="FILE",
              help="Predict for the host in this profile (`gpa-plan host --format json`) "
                   "rather than the one the probe runs on.")
def verify(
    files: tuple[str, ...],
    arch: str | None,
    fmt: str,
    export_dir: str | None,
    results_file: str | None,
    host_file: str | None,
) -> int:
    """Build the VM each LAYOUT describes on this host's /dev/kvm, make guest accesses at
    every boundary, and compare what KVM does with what gpa-plan predicts (exit 1 on any
    disagreement, 2 when verification cannot run here)."""
    from gpa_plan.check.findings import problem_findings
    from gpa_plan.inputs import InputError
    from gpa_plan.layout.errors import LayoutError
    from gpa_plan.printable import printable
    from gpa_plan.verify import driver
    from gpa_plan.verify.compare import ResultsError

    if (export_dir is not None or results_file is not None) and len(files) > 1:
        raise click.UsageError("--export and --results take one LAYOUT")
    if export_dir is not None and results_file is not None:
        raise click.UsageError("--export and --results cannot be combined")
    host = _host_profile(host_file, VERIFY_FORMATS, fmt)
    if isinstance(host, int):
        return host
    verdicts = []
    try:
        for path in files:
            if export_dir is not None:
                vp = driver.plan_layout(path, arch, host)
                for written in driver.export(vp, export_dir, sys.stdout):
                    click.echo(printable(f"wrote {written}"))
                _note_unused_host(host, [vp.arch])
                return 0
            if results_file is not None:
                verdicts.append(driver.verify_results(path, arch, results_file, host))
            else:
                verdicts.append(driver.verify_here(path, arch, host))
    except InputError as err:
        return _failed(VERIFY_FORMATS, fmt, [_unreadable_finding(err)], 2)
    except LayoutError as err:
        return _failed(VERIFY_FORMATS, fmt, problem_findings(err.path, err.problems))
    except (driver.CannotRun, driver.VerifyError) as err:
        return _verify_failed(fmt, str(err), (path, 1, 1), 2)
    except driver.ResultsFileError as err:
        return _verify_failed(fmt, str(err), (err.path, err.line, err.column), 1, err.reason)
    except ResultsError as err:
        return _verify_failed(fmt, str(err), (results_file or path, 1, 1), 1)
    VERIFY_FORMATS.writer(fmt)(verdicts, sys.stdout)
    _note_unused_host(host, [v.arch for v in verdicts])
    return 0 if all(v.agrees for v in verdicts) else 1


def _verify_failed(
    fmt: str, said: str, where: tuple[str, int, int], status: int, reason: str = ""
) -> int:
    """A verify that cannot run, or results it cannot use: one line on stderr in text; in
    JSON the failure document on stdout (docs/outputs.md), its finding at ``where``."""
    if fmt == "text":
        _echo_stderr(f"gpa-plan: verify: {said}")
        return status
    from gpa_plan.check.findings import ERROR, VERIFY, Finding

    finding = Finding(VERIFY, ERROR, reason or said, *where)
    return _failed(VERIFY_FORMATS, fmt, [finding], status)


@cli.command("map")
@click.argument("file", type=INPUT_PATH)
@click.option(
    "--arch", type=ARCH_CHOICE, default=None, help="Architecture (default: the layout's)."
)
@click.option(
    "--svg", "svg_out", type=click.Path(dir_okay=False), help="Write the SVG drawing here."
)
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False),
    help="Write an HTML page (drawing, region table, findings) here.",
)
def map_command(file: str, arch: str | None, svg_out: str | None, html_out: str | None) -> int:
    """Draw the address map of FILE: every region with its read, write and fetch outcome.

    Without --svg or --html the SVG goes to stdout. Files are written atomically.
    """
    if svg_out and html_out:
        raise click.UsageError("give --svg or --html, not both")
    option = "--html" if html_out else "--svg"
    _refuse_input_as_output(html_out or svg_out, file, option, "give it another file")
    config = _check_config((), (), None)
    if config.source is not None:
        _refuse_input_as_output(html_out or svg_out, str(config.source), option,
                                "give it another file", "the configuration map reads")
    from gpa_plan.check.batch import input_bytes
    from gpa_plan.check.run import check_file
    from gpa_plan.inputs import InputError
    from gpa_plan.report import svg
    from gpa_plan.report.progress_bar import watched

    try:
        # Nothing is printed while the bar is up: it is erased first.
        with watched(lambda: input_bytes((file,))) as progress:
            (result,) = config.apply_to(
                check_file(file, (arch,) if arch else (), progress=progress)
            )
            draw = svg.page if html_out else svg.drawing
            text = draw(result, progress) if result.valid else None
    except InputError as err:
        return _unreadable(err)
    if text is None:
        _say_findings(result.findings)
        return 1
    _emit(text, html_out or svg_out)
    return 0


@cli.command()
@click.argument("file", required=False, type=INPUT_PATH)
@click.option("--ucall", is_flag=True, help="Place the ucall MMIO page (adds a `ucall` device).")
@click.option("--ucall-memslot", is_flag=True,
              help="Also cover the ucall page with a read-only memslot (implies --ucall).")
@click.option("--arch", type=ARCH_CHOICE, default=None,
              help="Built-in KVM selftests layout to start from when there is no FILE "
              f"and no ./gpa-plan.yaml (default {SELFTESTS_DEFAULT_ARCH}).")
@click.option("--format", "fmt", type=click.Choice(ALLOCATE_FORMATS.names),
              default="yaml", show_default=True,
              help=ALLOCATE_FORMATS.help("A failure gives its findings: on stderr, or as a "
                                         "JSON document on stdout for json."))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write here (atomically) instead of stdout.")
@click.option("--in-place", is_flag=True, help="Rewrite only the `auto` values in FILE.")
def allocate(
    file: str | None, ucall: bool, ucall_memslot: bool, arch: str | None, fmt: str,
    output: str | None, in_place: bool,
) -> int:
    """Give every `auto` base and slot an address, and print the resolved layout."""
    from gpa_plan.inputs import InputError
    from gpa_plan.plan import allocate_file as job

    try:
        source = job.pick_source(file, arch)
    except InputError as err:
        return _failed(ALLOCATE_FORMATS, fmt, [_unreadable_finding(err)], 2)
    if in_place and (output or source.builtin):
        raise click.UsageError("--in-place rewrites a layout FILE and takes no -o")
    if in_place and fmt != "yaml":
        raise click.UsageError(f"--in-place keeps FILE a YAML layout; --format {fmt} is for "
                               "what allocate prints or writes with -o")
    if arch is not None and file is not None:
        raise click.UsageError(f"--arch chooses the built-in layout; {file} names its own arch")
    if not source.builtin:
        _refuse_input_as_output(output, source.path, "-o", "use --in-place to fill in its "
                                "`auto` values and keep its comments, or give -o another file")
    if arch is not None and not source.builtin:
        click.echo(f"note: using ./{source.path}; --arch only chooses the built-in layout",
                   err=True)
    from gpa_plan.files import OutputError

    text: str | None = None
    try:
        if in_place:
            notes = job.allocate_in_place(source.path, ucall or ucall_memslot, ucall_memslot)
        else:
            text, notes = job.allocate_text(source, ucall or ucall_memslot, ucall_memslot,
                                               fmt, False)
    except job.AllocateFailure as err:
        return _failed(ALLOCATE_FORMATS, fmt, err.findings)
    except OutputError as err:
        raise click.UsageError(str(err)) from None
    for note in notes:
        _echo_stderr(f"note: {note}")
    if text is not None:
        _emit(text, output)
    return 0


def _refuse_input_as_output(output: str | None, source: str | int, option: str,
                            hint: str, what: str = "the input") -> None:
    """A usage error if ``output`` is the input file itself (``source``: a path, or a file
    descriptor for standard input)."""
    from gpa_plan.files import STDOUT, overwrites

    if output is not None and output != STDOUT and overwrites(output, source):
        name = "standard input" if isinstance(source, int) else source
        raise click.UsageError(f"{option} {output} is {name}, {what}; {hint}")


def _emit(text: str, destination: str | None) -> None:
    """``text`` on stdout, or written to ``destination`` as gpa_plan.files says (a failed
    write is exit 2 and leaves any old file as it was)."""
    if destination is None:
        sys.stdout.write(text)
        return
    from gpa_plan.files import OutputError, write_output

    try:
        notes = write_output(destination, text, sys.stdout, sys.stderr)
    except OutputError as err:
        raise click.UsageError(str(err)) from None
    for note in notes:
        _echo_stderr(f"note: {note}")


class _SizeType(click.ParamType):  # type: ignore[type-arg]
    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return _size(value, param.opts[0] if param is not None else "SIZE")


_IMPORT_OPTION_TYPES: dict[str, Any] = {
    ARCH: ARCH_CHOICE, SIZE: _SizeType(), COUNT: click.IntRange(min=1)
}


def _importer_options(command: Any) -> Any:
    """The options every importer declares (gpa_plan.importers.registry), each once."""
    for option in reversed(IMPORTERS.options()):
        takers = " and ".join(IMPORTERS.takers(option.flag))
        command = click.option(option.flag, option.key, type=_IMPORT_OPTION_TYPES[option.value],
                               default=None, metavar=option.metavar,
                               help=f"{takers}: {option.help}")(command)
    return command


_IMPORT_HELP = (
    "Make a layout from what a VMM reports.\n\nKIND is "
    + " or ".join(f"{i.name} ({i.help})" for i in (IMPORTERS[n] for n in IMPORTERS.names))
    + ". FILE may be - for standard input."
)


@cli.command("import", help=_IMPORT_HELP)
@click.argument("kind", type=click.Choice(IMPORTERS.names))
@click.argument("file", type=INPUT_PATH)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write here (atomically), not stdout."
)
@_importer_options
def import_command(kind: str, file: str, output: str | None, **options: Any) -> int:
    refusal = IMPORTERS.refusal(kind, options)
    if refusal:
        raise click.UsageError(refusal)
    problem = IMPORTERS[kind].option_problem(options)
    if problem:
        raise click.BadParameter(problem[1], param_hint=problem[0])
    _refuse_input_as_output(output, 0 if file == "-" else file, "-o", "give -o another file")
    from gpa_plan.importers import ImportFailure
    from gpa_plan.importers.convert import import_yaml
    from gpa_plan.inputs import STDIN_NAME, InputError, read_input

    try:
        data = read_input(file, allow_stdin=True)
    except InputError as err:
        return _unreadable(err)
    source = "standard input" if file == "-" else file
    try:
        text = import_yaml(kind, data, source, options)
    except ImportFailure as err:
        # Located as `check` locates it: <stdin>:LINE:COL, a name editors and CI read as a path.
        _say_findings([err.finding(STDIN_NAME if file == "-" else file)])
        return 1
    _emit(text, output)
    return 0


def _selftests_pages(sizes: str, default: str) -> str:
    """Each architecture's KVM selftests page sizes, its default first ("arm64 4K, 16K or 64K;
    x86_64 4K; ..."), from the registry."""
    parts = []
    for spec in ARCHES.values():
        if spec.selftests is None:
            continue
        first = getattr(spec.selftests, default)
        ordered = [first, *(p for p in getattr(spec.selftests, sizes) if p != first)]
        *most, last = [f"{p // 1024}K" for p in ordered]
        parts.append(f"{spec.name} " + (f"{', '.join(most)} or {last}" if most else last))
    return "; ".join(parts)


@cli.command("selftests-layout")
@click.option("--arch", type=ARCH_CHOICE, default=SELFTESTS_DEFAULT_ARCH, show_default=True)
@click.option("--vcpus", type=int, default=1, show_default=True,
              help="nr_runnable_vcpus given to __vm_create() (1 to 512).")
@click.option("--extra-pages", type=int, default=0, show_default=True,
              help="The test's extra_mem_pages (they size slot 0's page tables).")
@click.option("--guest-page-size", "guest_page_text", metavar="SIZE",
              help="The VM mode's page size, the default first: "
              + _selftests_pages("guest_page_sizes", "default_guest_page") + ".")
@click.option("--host-page-size", "host_page_text", metavar="SIZE",
              help="The host's page size (slot 0 is whole host pages), that of the kernel's "
              "default configuration first: "
              + _selftests_pages("host_page_sizes", "default_host_page") + ".")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write here (atomically) instead of stdout.")
def selftests_layout(
    arch: str, vcpus: int, extra_pages: int, guest_page_text: str | None,
    host_page_text: str | None, output: str | None,
) -> int:
    """Print the layout of a KVM selftests VM, with the ucall address selftests compute.

    Slot 0's size, and so the ucall address past it, follows vm_nr_pages_required() for the
    vCPU count, extra pages and page sizes given; the layout's comments show the sum. It
    follows the selftests library of Linux 7.2.13 (docs/kernel.md, "KVM selftests").
    """
    from gpa_plan.selftests import SelftestsParameterError, selftests_layout, selftests_vm

    guest_page = None if guest_page_text is None else _size(guest_page_text, "--guest-page-size")
    host_page = None if host_page_text is None else _size(host_page_text, "--host-page-size")
    try:
        vm = selftests_vm(arch, vcpus, extra_pages, guest_page, host_page)
    except SelftestsParameterError as err:
        raise click.UsageError(str(err)) from None
    _emit(selftests_layout(vm), output)
    return 0


@cli.command(context_settings={"ignore_unknown_options": True,
                              "allow_interspersed_args": False})
@click.option("-o", "--output", metavar="OUT",
              help="Write here: a file for one VM, a directory (vm1.yaml, ...) for several.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True, help="Format of the layouts.")
@click.option("--traffic", is_flag=True,
              help="Also record the guest's exits to the VMM (observed.traffic).")
@click.option("--layout", "declared_file", type=INPUT_PATH, default=None, metavar="DECLARED",
              help="Then check each recording against DECLARED, as `check RECORDING --layout "
              "DECLARED` does (needs -o).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED,
                metavar="-- COMMAND [ARGS]...")
def record(output: str | None, fmt: str, traffic: bool, declared_file: str | None,
           command: tuple[str, ...]) -> int:
    """Run COMMAND under ptrace and write the layout of every VM it creates: memslots,
    in-kernel devices, ioeventfds and coalesced zones as KVM held them at the end, and every
    call KVM refused (docs/record.md). With --layout, exit 1 when the check finds an error."""
    from gpa_plan.files import OutputError
    from gpa_plan.printable import printable
    from gpa_plan.record import output as outputs
    from gpa_plan.record.ptrace import TraceError
    from gpa_plan.record.session import record_command
    from gpa_plan.record.tracefs import TraceError as TracefsError

    if declared_file is not None and output in (None, "-"):
        raise click.UsageError("--layout needs -o FILE or DIR: the findings point at lines of "
                               "the recorded files")
    if output is not None and (unwritable := outputs.writable(output)):
        raise click.UsageError(printable(f"-o {output}: {unwritable}"))
    declared = _declared_layout(declared_file, ())
    if isinstance(declared, int):
        return declared
    try:
        recording = record_command(command, traffic=traffic)
    except (TraceError, TracefsError) as err:
        _echo_stderr(printable(f"gpa-plan: record: {err}"))
        return 2
    ending = recording.ending()
    if ending:
        _echo_stderr(printable(f"note: {ending}"))
    if not recording.layouts:
        for note in recording.notes:
            _echo_stderr(printable(f"note: {note}"))
        _echo_stderr(printable(f"gpa-plan: record: {shlex.join(command)} created no KVM VM "
                               "(no KVM_CREATE_VM that returned one): nothing recorded"))
        return 1
    texts = [layout.text(fmt) for layout in recording.layouts]
    if fmt == "json":  # JSON has no comments: what the YAML would say goes to stderr
        for layout in recording.layouts:
            for comment in layout.comments[2:]:
                _echo_stderr(printable(f"note: {comment}"))
    if output is None or output == "-":
        sys.stdout.write(_joined(texts, fmt))
        return 0
    try:
        paths, moved = outputs.targets(output, len(texts), fmt)
        if moved:
            _echo_stderr(printable(f"note: {output} is a file and the command created "
                                   f"{len(texts)} VMs: the layouts are in {moved}"))
        notes = outputs.write_all(paths, texts, sys.stdout, sys.stderr)
    except OutputError as err:
        saved = outputs.rescue(texts, fmt, sys.stdout, sys.stderr)
        _echo_stderr(printable(f"gpa-plan: record: {err}; the recording is saved in "
                               f"{os.path.dirname(saved[0])}"))
        return 2
    for note in notes:
        _echo_stderr(f"note: {note}")
    for path in outputs.stale(paths):
        _echo_stderr(printable(f"note: {path} is from an earlier recording: this one created "
                               f"{len(paths)} VM{'s' * (len(paths) != 1)}"))
    if len(paths) > 1 or paths[0] != output:
        for path, layout in zip(paths, recording.layouts, strict=True):
            _echo_stderr(printable(f"{path}: {layout.summary()}"))
    return 0 if declared is None else _check_recordings(paths, declared)


def _check_recordings(paths: Sequence[str], declared: LoadedLayout) -> int:
    """`check PATHS --layout DECLARED -q` on the recordings just written: the findings on
    stdout, 1 when one is an error."""
    from gpa_plan.check.batch import check_paths
    from gpa_plan.check.declared import ArchMismatch

    config = _check_config((), (), None)
    try:
        run = check_paths(paths, declared=declared)
    except ArchMismatch as mismatch:
        raise click.UsageError(str(mismatch)) from None
    return _reported(run, config, "text", quiet=True)


def _joined(texts: list[str], fmt: str) -> str:
    """Several layouts on standard output: YAML documents, or a JSON array."""
    if len(texts) == 1:
        return texts[0]
    if fmt == "json":
        return "[\n" + ",\n".join(t.rstrip("\n") for t in texts) + "\n]\n"
    return "---\n".join(texts)


@cli.command()
def rules() -> None:
    """List every finding rule, its severity and what it means."""
    from gpa_plan.check.run import RULES  # the import registers every rule

    for rule in RULES.values():
        click.echo(f"{rule.slug} ({rule.severity_text}): {rule.summary}")
        click.echo(f"    {rule.description}")


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the layout format (for editors and YAML validators)."""
    from gpa_plan.layout.schema import schema_json

    sys.stdout.write(schema_json())


def main(argv: Sequence[str] | None = None) -> int:
    """Run gpa-plan on ``argv`` (default: the program's own arguments) and return the exit
    status docs/exit-codes.md gives, or 130 on Ctrl-C and 141 when the reader of standard
    output went away (see gpa_plan.exits); internal errors and an unwritable standard output
    are 2 with a one-line message, never a traceback. Nothing is raised: the console script
    (gpa_plan.launch) exits with what this returns.

    Without ``argv`` (the program itself, not a caller in the same process) the exiting
    interpreter is spared its final garbage collection.
    """
    from gpa_plan import exits

    exits.stand_in_for_closed_stdout()
    try:
        return _run(argv)
    except SystemExit as done:
        # How gpa_plan.exits ends a run (Ctrl-C, a closed pipe, an unwritable output).
        return exits.status_of(done.code)
    finally:
        if argv is None:
            from gpa_plan.collector import spare_final_collection

            spare_final_collection()


def _run(argv: Sequence[str] | None) -> int:
    from gpa_plan import exits

    try:
        try:
            args = list(argv) if argv is not None else None
            result = cli.main(args=args, prog_name="gpa-plan", standalone_mode=False)
        finally:
            exits.flush_stdout()
        return result if isinstance(result, int) else 0
    except SystemExit:
        if exits.click_met_a_closed_pipe():
            exits.output_failed(BrokenPipeError(), as_program=argv is None)
        raise
    except click.ClickException as err:
        # Messages quote paths and values from the command line: never print them raw.
        from gpa_plan.printable import printable

        # click 8.5 declares `message` Final; it is still a plain attribute.
        setattr(err, "message", printable(err.message))  # noqa: B010
        exits.say_with(err.show)
        return err.exit_code
    except (click.Abort, KeyboardInterrupt) as err:
        if isinstance(err, KeyboardInterrupt) or isinstance(err.__cause__, KeyboardInterrupt):
            exits.interrupted()
        return _internal_error(err)
    except Exception as err:
        if isinstance(err, OSError) and exits.is_output_failure(err):
            exits.output_failed(err, as_program=argv is None)
        return _internal_error(err)


def _internal_error(err: BaseException) -> int:
    # A bug, not bad input: say so without a traceback.
    from gpa_plan.exits import say
    from gpa_plan.printable import printable

    say(f"gpa-plan: internal error: {type(err).__name__}: {printable(str(err))}")
    return 2
