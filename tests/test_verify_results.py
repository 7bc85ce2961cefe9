"""`gpa-plan verify --export` and `--results`: the plan an exported probe runs, and the
comparison of its results with the predictions, without needing /dev/kvm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gpa_plan.cli import cli
from gpa_plan.probe.plan import OBSERVED

ROOT = Path(__file__).parent.parent
LAYOUTS = ROOT / "layouts"
PLAIN_ENV = {"COLUMNS": "200", "NO_COLOR": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None}


def run(*args: str) -> Result:
    return CliRunner(env=PLAIN_ENV).invoke(cli, list(args))


def export(layout: Path, directory: Path, *extra: str) -> dict[str, Any]:
    result = run("verify", str(layout), "--export", str(directory), *extra)
    assert result.exit_code == 0, result.output
    plan: dict[str, Any] = json.loads((directory / "plan.json").read_text())
    return plan


def predictions(layout: Path, tmp_path: Path) -> dict[str, Any]:
    """The JSON report of results in which the probe observed each first expected answer."""
    plan = export(layout, tmp_path / "x")
    results = agreeing_results(layout, plan, tmp_path)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    report = run("verify", str(layout), "--results", str(path), "--format", "json")
    assert report.exit_code == 0, report.output
    verdict: dict[str, Any] = json.loads(report.stdout)["verdicts"][0]
    return verdict


def agreeing_results(layout: Path, plan: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Results observing, for every step and probe, what the JSON report says gpa-plan
    expects: found by a first comparison against deliberately wrong results."""
    wrong = {
        "format": 1,
        "host": {},
        "steps": [{"id": s["id"], "errno": "ENOTTY"} for s in plan["steps"]],
        "probes": [{"id": p["id"], "observed": "other", "detail": ""} for p in plan["probes"]],
    }
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(wrong))
    report = run("verify", str(layout), "--results", str(path), "--format", "json")
    assert report.exit_code == 1, report.output
    verdict = json.loads(report.stdout)["verdicts"][0]
    # Every step is wrong but KVM_CREATE_VM, which these results do not say failed.
    assert verdict["summary"]["probes_agree"] == 0 and verdict["summary"]["steps_agree"] == 1
    return {
        "format": 1,
        "host": {
            "kernel": {"release": "6.1.0-test", "machine": "x86_64"},
            "capabilities": {"KVM_CAP_X86_SMM": 1},
        },
        "steps": [
            {"id": s["id"], "errno": None if s["expected"][0] == "ok" else s["expected"][0]}
            for s in verdict["steps"]
            if s["id"] != "vm"  # KVM_CREATE_VM: the probe reports it only when it fails
        ],
        "probes": [
            {"id": p["id"], "observed": p["expected"][0], "detail": ""} for p in verdict["probes"]
        ],
    }


def test_export_writes_a_runnable_probe_and_its_plan(tmp_path: Path) -> None:
    plan = export(LAYOUTS / "qemu-q35-x86_64.yaml", tmp_path / "out")
    out = tmp_path / "out"
    assert {p.name for p in (out / "probe").iterdir()} >= {"__init__.py", "kvm.py", "plan.py"}
    assert "python3 -m probe plan.json" in (out / "README").read_text()
    assert plan["arch"] == "x86_64" and plan["format"] == 1
    ids = [p["id"] for p in plan["probes"]]
    assert len(ids) == len(set(ids))
    assert {p["access"] for p in plan["probes"]} == {"read", "write", "fetch"}
    # Every region boundary of the layout is probed on both sides, and so is the space's end.
    addresses = {p["address"] for p in plan["probes"]}
    assert {0x7FFF_FFFF, 0x8000_0000, 0xFEC0_0000, 0xFEBF_FFFF, (1 << 40) - 1, 1 << 40} <= addresses


def test_probe_area_is_free_and_clear_of_every_probe_point(tmp_path: Path) -> None:
    layout = LAYOUTS / "qemu-q35-x86_64.yaml"
    plan = export(layout, tmp_path / "out")
    area = plan["probe_area"]
    lo, hi = area["base"], area["base"] + area["size"]
    assert not any(lo <= p["address"] < hi for p in plan["probes"])
    for step in plan["steps"]:
        if step["op"] == "memslot":
            assert step["base"] + step["size"] <= lo or hi <= step["base"]
    explained = run("explain", str(layout), hex(lo), hex(hi - 1), "--access", "read")
    assert explained.stdout.count("unbacked") == 2, explained.stdout


def test_results_that_agree_exit_0_with_a_summary(tmp_path: Path) -> None:
    layout = LAYOUTS / "qemu-q35-x86_64.yaml"
    verdict = predictions(layout, tmp_path)
    assert verdict["summary"]["agrees"] is True
    n = verdict["summary"]["probes"]
    text = run("verify", str(layout), "--results", str(tmp_path / "results.json"))
    assert text.exit_code == 0
    assert f"{n} probes, {n} agree" in text.stdout
    assert "host: Linux 6.1.0-test x86_64" in text.stdout
    assert "X86_SMM=1" in text.stdout


def test_one_disagreement_exits_1_and_is_named(tmp_path: Path) -> None:
    layout = LAYOUTS / "qemu-q35-x86_64.yaml"
    verdict = predictions(layout, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    target = next(p for p in verdict["probes"] if p["expected"] == ["memory"])
    for probe in results["probes"]:
        if probe["id"] == target["id"]:
            probe["observed"] = "mmio-exit"
    (tmp_path / "results.json").write_text(json.dumps(results))
    text = run("verify", str(layout), "--results", str(tmp_path / "results.json"))
    assert text.exit_code == 1
    n = verdict["summary"]["probes"]
    assert f"{n} probes, {n - 1} agree" in text.stdout
    wrong = text.stdout.split("disagreements")[1]
    assert f"{target['access']} of 1 byte(s) at" in wrong
    assert "predicted memory" in wrong and "observed mmio-exit" in wrong


def test_every_observation_the_probe_can_report_is_known(tmp_path: Path) -> None:
    verdict = predictions(LAYOUTS / "qemu-virt-arm64.yaml", tmp_path)
    expected = {o for p in verdict["probes"] for o in p["expected"]}
    assert expected <= set(OBSERVED)
    # The arm64 table: a fetch outside memory is an injected abort, the GIC answers in-kernel.
    assert {"guest-exception", "kernel", "memory", "mmio-exit"} <= expected


def test_a_refused_memslot_is_predicted_with_its_errno_and_left_out_of_the_probes(
    tmp_path: Path,
) -> None:
    verdict = predictions(LAYOUTS / "broken" / "overlapping-memslots.yaml", tmp_path)
    refused = [s for s in verdict["steps"] if s["expected"] != ["ok"]]
    assert [(s["call"], s["expected"]) for s in refused] == [
        ("KVM_SET_USER_MEMORY_REGION", ["EEXIST"])
    ]
    assert "memslot-overlap" in refused[0]["why"]
    name = refused[0]["id"].split(":", 1)[1]
    assert all(name not in p["where"] for p in verdict["probes"])


def test_results_that_are_not_json_name_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "results.json"
    bad.write_text('{"format": 1,\n  "steps": [}\n')
    result = run("verify", str(LAYOUTS / "qemu-q35-x86_64.yaml"), "--results", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:2:13: not JSON" in result.stderr


def test_results_of_another_plan_are_refused(tmp_path: Path) -> None:
    plan = export(LAYOUTS / "qemu-pc-x86_64.yaml", tmp_path / "x")
    other = {
        "format": 1,
        "steps": [{"id": s["id"], "errno": None} for s in plan["steps"]],
        "probes": [{"id": p["id"], "observed": "memory", "detail": ""} for p in plan["probes"]],
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(other))
    result = run("verify", str(LAYOUTS / "qemu-q35-x86_64.yaml"), "--results", str(path))
    assert result.exit_code == 1
    assert "not this layout's plan" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a.yaml", "b.yaml", "--export", "d"], "--export and --results take one LAYOUT"),
        (["a.yaml", "--export", "d", "--results", "r"], "cannot be combined"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = run("verify", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_an_architecture_without_a_probe_guest_exits_2() -> None:
    result = run("verify", str(LAYOUTS / "selftests-riscv64.yaml"))
    assert result.exit_code == 2
    assert "verify has no guest for riscv64" in result.stderr


def test_a_layout_of_another_architecture_than_the_host_exits_2_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gpa_plan.verify import driver

    monkeypatch.setattr(driver, "host_machine_arch", lambda: "x86_64")
    result = run("verify", str(LAYOUTS / "qemu-virt-arm64.yaml"))
    assert result.exit_code == 2
    assert "run verify on a arm64 host, or write the probe with --export DIR" in result.stderr


def test_a_layout_that_does_not_load_gives_its_findings(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("layout: 1\narch: x86_64\nmemslots: [\n")
    result = run("verify", str(bad))
    assert result.exit_code == 1
    assert "yaml-syntax" in result.stderr


def test_export_refuses_a_path_that_is_not_a_directory(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("keep me\n")
    result = run("verify", str(LAYOUTS / "qemu-q35-x86_64.yaml"), "--export", str(file))
    assert result.exit_code == 2
    assert file.read_text() == "keep me\n"


def test_results_from_a_host_of_another_page_size_are_refused_with_the_fix(
    tmp_path: Path,
) -> None:
    layout = LAYOUTS / "broken" / "memslot-misaligned.yaml"
    plan = export(layout, tmp_path / "x")
    results = {
        "format": 1,
        "host": {"page_size": 4096},
        "steps": [{"id": s["id"], "errno": None} for s in plan["steps"]],
        "probes": [{"id": p["id"], "observed": "memory", "detail": ""} for p in plan["probes"]],
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    result = run("verify", str(layout), "--results", str(path))
    assert result.exit_code == 2
    assert "page_size is 64 KiB and this host's pages are 4 KiB" in result.stderr
    assert "set page_size: 4K" in result.stderr


def test_the_header_shows_the_capabilities_of_the_layouts_architecture(tmp_path: Path) -> None:
    layout = LAYOUTS / "qemu-virt-arm64.yaml"
    predictions(layout, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    results["host"]["capabilities"] = {"KVM_CAP_X86_SMM": 0, "KVM_CAP_ARM_VM_IPA_SIZE": 48}
    (tmp_path / "results.json").write_text(json.dumps(results))
    text = run("verify", str(layout), "--results", str(tmp_path / "results.json")).stdout
    (caps,) = [line for line in text.splitlines() if line.startswith("KVM: ")]
    assert caps == "KVM: ARM_VM_IPA_SIZE=48"


def test_a_vm_kvm_create_vm_refuses_is_compared_with_the_finding_that_says_so(
    tmp_path: Path,
) -> None:
    """arm64 pa_bits 44 on a host whose IPA limit is 40: host-limits predicts KVM_CREATE_VM
    EINVAL, and results saying so agree (no VM, so nothing else to compare); pa_bits 40 there
    is predicted created, and the same results disagree."""
    layout = tmp_path / "big.yaml"
    body = "arch: arm64\npage_size: 4K\nmemslots:\n  - {name: ram, base: 0, size: 1M}\n"
    facts = {
        "format": 1, "arch": "arm64", "kernel": {"release": "6.1.0-test", "machine": "aarch64"},
        "page_size": 4096, "capabilities": {}, "facts": {"ipa_limit": 40},
    }
    refused = {"format": 1, "host": facts, "steps": [], "probes": [],
               "error": "KVM_CREATE_VM failed with EINVAL", "vm_errno": "EINVAL"}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(refused))
    layout.write_text("layout: 1\npa_bits: 44\n" + body)
    found = run("verify", str(layout), "--results", str(path), "--format", "json")
    assert found.exit_code == 0, found.output
    (verdict,) = json.loads(found.stdout)["verdicts"]
    assert [(s["id"], s["call"], s["expected"], s["observed"]) for s in verdict["steps"]] == [
        ("vm", "KVM_CREATE_VM", ["EINVAL"], "EINVAL")
    ]
    assert verdict["probes"] == []
    layout.write_text("layout: 1\npa_bits: 40\n" + body)
    text = run("verify", str(layout), "--results", str(path))
    assert text.exit_code == 1
    assert "vm: KVM_CREATE_VM was predicted ok" in text.stdout
    assert "KVM answered EINVAL" in text.stdout


def test_in_json_a_verify_that_cannot_run_prints_the_failure_document(tmp_path: Path) -> None:
    layout = LAYOUTS / "selftests-riscv64.yaml"
    result = run("verify", str(layout), "--format", "json")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    (finding,) = document["findings"]
    assert (finding["rule"], finding["file"], finding["line"]) == ("verify", str(layout), 1)
    assert "no guest for riscv64" in finding["message"]
    bad = tmp_path / "results.json"
    bad.write_text('{"format": 1,\n  "steps": [}\n')
    result = run("verify", str(LAYOUTS / "qemu-q35-x86_64.yaml"), "--results", str(bad),
                 "--format", "json")
    assert result.exit_code == 1
    (finding,) = json.loads(result.stdout)["findings"]
    assert (finding["file"], finding["line"], finding["column"]) == (str(bad), 2, 13)
    assert finding["message"].startswith("not JSON")
