"""`gpa-plan record --traffic` of the small VMM (tests/data/record/vmm.c) on this host's
/dev/kvm: the exits its guest makes (vmm-expected-traffic.yaml, written from its code) come
out exactly, through tracefs where it can be used and through the vCPUs' kvm_run pages where
it cannot, and the recording says which path it took."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from kvm_probe import kvm_available

from gpa_plan.cli import cli
from gpa_plan.record import tracefs

DATA = Path(__file__).resolve().parent / "data" / "record"
pytestmark = [
    pytest.mark.skipif(not kvm_available(), reason="needs an x86_64 host with /dev/kvm"),
]



def recorded(vmm: Path, tmp_path: Path) -> tuple[dict, str]:
    out = tmp_path / "vmm.yaml"
    result = CliRunner().invoke(cli, ["record", "--traffic", "-o", str(out), "--", str(vmm)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    return yaml.safe_load(text), text


def expected() -> dict:
    return yaml.safe_load((DATA / "vmm-expected-traffic.yaml").read_text())


def check_traffic(observed: dict) -> None:
    want = expected()
    def key(row: dict) -> tuple:
        return row["space"], row["address"], row["width"]

    assert sorted(observed["traffic"], key=key) == sorted(want["traffic"], key=key)
    assert sorted(observed["exits"], key=str) == sorted(want["exits"], key=str)
    assert [entry["errno"] for entry in observed["refused"]
            if entry["call"] == "KVM_SET_USER_MEMORY_REGION"] == ["EEXIST"]


@pytest.mark.skipif(tracefs.available() is not None, reason=str(tracefs.available()))
def test_traffic_through_tracefs(vmm: Path, tmp_path: Path) -> None:
    layout, text = recorded(vmm, tmp_path)
    assert layout["observed"]["traffic_path"] == "tracefs"
    check_traffic(layout["observed"])
    assert "# Traffic from KVM's tracepoints (tracefs)" in text
    assert "address: 0x0009_0000" in text


def test_traffic_from_the_kvm_run_pages_where_tracefs_cannot_be_used(
        vmm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracefs, "available", lambda: "tracing KVM's exits needs root")
    layout, text = recorded(vmm, tmp_path)
    assert layout["observed"]["traffic_path"] == "ptrace"
    check_traffic(layout["observed"])
    assert ("stopping on every KVM_RUN (ptrace): tracefs cannot be used here: tracing KVM's "
            "exits needs root.") in text


def test_without_traffic_nothing_is_observed_but_the_refusals(vmm: Path, tmp_path: Path) -> None:
    out = tmp_path / "vmm.yaml"
    result = CliRunner().invoke(cli, ["record", "-o", str(out), "--", str(vmm)])
    assert result.exit_code == 0, result.output
    assert set(yaml.safe_load(out.read_text())["observed"]) == {"refused"}


@pytest.mark.skipif(tracefs.available() is not None, reason=str(tracefs.available()))
def test_an_instance_that_cannot_be_made_falls_back_to_the_kvm_run_pages(
        vmm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: tracefs.KvmTrace) -> tracefs.KvmTrace:
        raise tracefs.TraceError("cannot make the tracefs instance: read-only file system")

    monkeypatch.setattr(tracefs.KvmTrace, "__enter__", refused)
    layout, text = recorded(vmm, tmp_path)
    assert layout["observed"]["traffic_path"] == "ptrace"
    check_traffic(layout["observed"])
    assert "tracefs cannot be used here: cannot make the tracefs instance: read-only" in text
