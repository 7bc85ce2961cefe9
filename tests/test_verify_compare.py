"""gpa_plan.verify.compare on hand-made predictions and results: what a results file that is
JSON but wrong inside gets, and that pairing results with a plan does no quadratic work."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gpa_plan.arch.base import Outcome
from gpa_plan.cli import cli
from gpa_plan.verify.build import ProbePrediction, StepPrediction, VerifyPlan
from gpa_plan.verify.compare import compare


class CountedId(str):
    """A probe id that counts how often it is hashed: each set or dict look-up is one."""

    hashes = 0

    def __hash__(self) -> int:
        CountedId.hashes += 1
        return str.__hash__(self)


def plan_of(ids: list[str]) -> VerifyPlan:
    probes = tuple(
        ProbePrediction(i, 0x1000 * k, "read", 1, 0xA5, "ram", Outcome.MEMORY, ("memory",),
                        "memory")
        for k, i in enumerate(ids)
    )
    steps = (StepPrediction("memslot:ram", "KVM_SET_USER_MEMORY_REGION", ("ok",), ""),)
    vm = StepPrediction("vm", "KVM_CREATE_VM", ("ok",), "")
    return VerifyPlan({}, steps, probes, "layout.yaml", "x86_64", 4096, vm)


def results_of(vp: VerifyPlan, **probe: Any) -> dict[str, Any]:
    return {
        "format": 1,
        "host": {},
        "steps": [{"id": s.id, "errno": None} for s in vp.steps],
        "probes": [{"id": p.id, "observed": "memory", "detail": "", **probe} for p in vp.probes],
    }


def test_pairing_results_with_the_plan_looks_each_id_up_a_few_times() -> None:
    n = 500
    vp = plan_of([CountedId(f"read@{k:#x}/1") for k in range(n)])
    results = results_of(vp)
    CountedId.hashes = 0
    verdict = compare(vp, results)
    assert verdict.agrees and len(verdict.probes) == n
    # A look-up per id and per use; a set of every id built once per id would be n * n.
    assert CountedId.hashes <= 10 * n


# --- results that are JSON but wrong inside ----------------------------------------------------

LAYOUT = Path(__file__).parent.parent / "layouts" / "qemu-q35-x86_64.yaml"
PLAIN_ENV = {"COLUMNS": "200", "NO_COLOR": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None}


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner(env=PLAIN_ENV).invoke(cli, list(args), input=stdin)


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("export")
    assert run("verify", str(LAYOUT), "--export", str(out)).exit_code == 0
    exported: dict[str, Any] = json.loads((out / "plan.json").read_text())
    return exported


def results_for(plan: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "host": {"page_size": 4096},
        "steps": [{"id": s["id"], "errno": None} for s in plan["steps"]],
        "probes": [{"id": p["id"], "observed": "memory", "detail": ""} for p in plan["probes"]],
    }


def _set(*path: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(results: dict[str, Any]) -> None:
        target: Any = results
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _drop_observed(results: dict[str, Any]) -> None:
    del results["probes"][0]["observed"]


def _twice(results: dict[str, Any]) -> None:
    results["probes"].append(dict(results["probes"][0]))


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (_drop_observed, "observed is null, where one of memory, mmio-exit"),
        (_set("probes", 0, "observed", value=[1, 2]), "observed is [1, 2], where one of"),
        (_set("probes", 0, "observed", value="x\x1b[2J"), 'observed is "x\\u001b[2J"'),
        (_set("probes", 0, "detail", value={"a": 1}), 'detail is {"a": 1}, where a string'),
        (_set("steps", 0, "errno", value=17), "errno is 17, where null (accepted) or an errno"),
        (_set("steps", 0, "errno", value={}), "errno is {}, where null"),
        (_set("steps", value={}), "`steps` must be a list of objects"),
        (_set("host", "page_size", value=True), "host.page_size is true, where the host's"),
        (_set("host", "page_size", value=0), "host.page_size is 0, where"),
        (_set("format", value=2), "format is 2: this gpa-plan reads results of format 1"),
        (_set("format", value=True), "format is true: this gpa-plan reads results of format 1"),
        (_twice, "is given twice"),
    ],
)
def test_results_wrong_inside_exit_1_naming_file_and_value(
    plan: dict[str, Any], tmp_path: Path, change: Callable[[dict[str, Any]], None], said: str
) -> None:
    results = results_for(plan)
    change(results)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    result = run("verify", str(LAYOUT), "--results", str(path))
    assert (result.exit_code, result.stdout) == (1, ""), result.output
    assert result.stderr.startswith(f"gpa-plan: verify: {path}: ")
    assert said in result.stderr
    assert "\x1b" not in result.stderr and "Traceback" not in result.stderr


def test_the_checks_refuse_nothing_the_probe_prints(plan: dict[str, Any], tmp_path: Path) -> None:
    """Results of the shape the probe prints are compared, not refused."""
    results = results_for(plan)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    result = run("verify", str(LAYOUT), "--results", str(path), "--format", "json")
    assert result.exit_code == 1  # every probe says memory, which is not every prediction
    assert json.loads(result.stdout)["verdicts"][0]["summary"]["steps_agree"] > 0


def test_results_nested_too_deeply_are_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    result = run("verify", str(LAYOUT), "--results", str(path))
    assert result.exit_code == 1
    assert result.stderr == (
        f"gpa-plan: verify: {path}:1:1: JSON nested too deeply to be probe results; give the "
        "file the probe printed\n"
    )


def test_results_from_standard_input_are_named_stdin() -> None:
    result = run("verify", str(LAYOUT), "--results", "-", stdin='{"format": 1,\n ]')
    assert result.exit_code == 1
    assert result.stderr.startswith("gpa-plan: verify: <stdin>:2:2: not JSON")


def test_results_of_a_plan_the_probe_could_not_run_exit_2_as_a_native_run_does(
    plan: dict[str, Any], tmp_path: Path
) -> None:
    results = results_for(plan)
    results["error"] = "KVM_CREATE_VCPU was refused with EEXIST"
    for probe in results["probes"]:
        probe["observed"] = "not-run"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    result = run("verify", str(LAYOUT), "--results", str(path))
    assert result.exit_code == 2
    assert result.stderr == (
        "gpa-plan: verify: the probe could not run the plan: KVM_CREATE_VCPU was refused with "
        "EEXIST\n"
    )


def test_a_line_break_in_a_name_or_a_detail_stays_in_its_line(tmp_path: Path) -> None:
    layout = tmp_path / "layout.yaml"
    layout.write_text(
        "layout: 1\narch: x86_64\npa_bits: 40\npage_size: 4K\nmemslots:\n"
        '  - {name: "ram\\nFAKE 0 probes, 0 agree", base: 0, size: 1G}\n'
    )
    out = tmp_path / "out"
    assert run("verify", str(layout), "--export", str(out)).exit_code == 0
    exported = json.loads((out / "plan.json").read_text())
    results = results_for(exported)
    for probe in results["probes"]:
        probe.update(observed="other", detail="KVM_EXIT_SHUTDOWN\nFAKE all agree")
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    result = run("verify", str(layout), "--results", str(path))
    assert result.exit_code == 1
    assert not [line for line in result.stdout.splitlines() if line.startswith("FAKE")]
    assert "memslot:ram\\nFAKE 0 probes, 0 agree " in result.stdout
    assert "(KVM_EXIT_SHUTDOWN\\nFAKE all agree)" in result.stdout


def test_the_json_verdict_has_the_fields_docs_outputs_md_lists(
    plan: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results_for(plan)))
    result = run("verify", str(LAYOUT), "--results", str(path), "--format", "json")
    document = json.loads(result.stdout)
    assert set(document) == {"format", "verdicts"}
    (verdict,) = document["verdicts"]
    assert set(verdict) == {"file", "arch", "host", "steps", "probes", "summary"}
    assert {frozenset(s) for s in verdict["steps"]} == {
        frozenset({"id", "call", "expected", "observed", "agrees", "why"})
    }
    assert {frozenset(p) for p in verdict["probes"]} == {
        frozenset({"id", "address", "access", "width", "where", "predicted", "expected",
                   "observed", "detail", "path", "agrees"})
    }
    assert set(verdict["summary"]) == {"probes", "probes_agree", "steps", "steps_agree", "agrees"}
    docs = (Path(__file__).parent.parent / "docs" / "outputs.md").read_text()
    section = docs.split("## `verify`")[1].split("\n## ")[0]
    assert '`{"format": 1, "verdicts": [...]}`' in section
    fields = {*verdict, *verdict["steps"][0], *verdict["probes"][0], *verdict["summary"]}
    assert [f for f in sorted(fields) if f"`{f}`" not in section] == []
