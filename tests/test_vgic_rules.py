"""The vGIC as a whole: a frame the first KVM_RUN needs (`vgic-incomplete`), and GICv3
redistributors given as one legacy address or as regions (`vgic-redist`).

Facts from Linux 7.2.13: arch/arm64/kvm/vgic/vgic-init.c kvm_vgic_map_resources(),
vgic-v3.c vgic_v3_map_resources(), vgic-v2.c vgic_v2_map_resources() (ENXIO, then the VM is
dead); vgic-mmio-v3.c vgic_v3_alloc_redist_region() (EEXIST for a second legacy address,
EINVAL for mixing); vgic.h KVM_VGIC_V3_RDIST_COUNT_MASK (a 12-bit count)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from layout_files import position

from gpa_plan.check.rules import RULES
from gpa_plan.cli import cli

HEAD = "layout: 1\narch: arm64\ndevices:\n"


def findings(tmp_path: Path, devices: str, *args: str) -> tuple[Path, list[dict[str, object]]]:
    path = tmp_path / "gic.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(devices), "  "))
    result = CliRunner().invoke(cli, ["check", str(path), "--format", "json", *args])
    assert result.exit_code in (0, 1), result.output
    found: list[dict[str, object]] = json.loads(result.stdout)["results"][0]["findings"]
    # The note that some hosts have no GICv2 (host-limits) is tests/test_host_profile.py's.
    return path, [f for f in found if f["severity"] != "note"]



def only(found: list[dict[str, object]], rule: str) -> list[dict[str, object]]:
    return [f for f in found if f["rule"] == rule]


# --- vgic-incomplete ---------------------------------------------------------------------------


def test_a_gicv3_distributor_without_redistributors_fails_the_first_kvm_run(
    tmp_path: Path,
) -> None:
    path, found = findings(tmp_path, "- {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}\n")
    (f,) = found
    assert (f["rule"], f["severity"], f["objects"]) == ("vgic-incomplete", "error", ["gicd"])
    assert (f["line"], f["column"]) == position(path, "vgic-v3-dist")
    assert f["message"] == (
        "vgic-v3-dist 'gicd' [0x0800_0000, 0x0801_0000) is a GICv3 frame, but the layout has "
        "no vgic-v3-redist: the first KVM_RUN fails with ENXIO (vgic_v3_map_resources(), from "
        "kvm_vgic_map_resources(): no vCPU has a redistributor) and KVM marks the VM dead, so "
        "every later ioctl on it fails with EIO; add a vgic-v3-redist device"
    )


def test_redistributors_without_a_distributor_fail_the_first_kvm_run(tmp_path: Path) -> None:
    _, found = findings(
        tmp_path, "- {name: gicr, type: vgic-v3-redist, base: 0x080a_0000, vcpus: 2}\n"
    )
    (f,) = found
    assert f["rule"] == "vgic-incomplete"
    assert "no vgic-v3-dist: the first KVM_RUN fails with ENXIO" in str(f["message"])
    assert "the distributor address is not set" in str(f["message"])


@pytest.mark.parametrize(
    ("present", "missing"),
    [("vgic-v2-dist", "vgic-v2-cpu"), ("vgic-v2-cpu", "vgic-v2-dist")],
)
def test_a_gicv2_needs_its_distributor_and_cpu_interface(
    tmp_path: Path, present: str, missing: str
) -> None:
    _, found = findings(tmp_path, f"- {{name: half, type: {present}, base: 0x0800_0000}}\n")
    (f,) = found
    assert f["rule"] == "vgic-incomplete"
    assert f"no {missing}: the first KVM_RUN fails with ENXIO (vgic_v2_map_resources()" in str(
        f["message"]
    )


def test_complete_vgics_and_a_vm_without_one_are_clean(tmp_path: Path) -> None:
    for devices in (
        "- {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}\n"
        "- {name: gicr, type: vgic-v3-redist, base: 0x080a_0000}\n",
        "- {name: gicd, type: vgic-v2-dist, base: 0x0800_0000}\n"
        "- {name: gicc, type: vgic-v2-cpu, base: 0x0801_0000}\n",
        "- {name: uart, type: mmio, base: 0x0900_0000, size: 4K}\n",
    ):
        _, found = findings(tmp_path, devices)
        assert found == []


def test_under_another_arch_a_left_out_vgic_is_not_incomplete(tmp_path: Path) -> None:
    _, found = findings(
        tmp_path, "- {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}\n", "--arch", "x86_64"
    )
    assert only(found, "vgic-incomplete") == []


def test_frames_of_a_second_model_do_not_complete_the_first(tmp_path: Path) -> None:
    _, found = findings(
        tmp_path,
        "- {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}\n"
        "- {name: gicc, type: vgic-v2-cpu, base: 0x0801_0000}\n",
    )
    assert [f["objects"] for f in only(found, "vgic-incomplete")] == [["gicd"]]
    assert [f["objects"] for f in only(found, "vgic-conflict")] == [["gicc", "gicd"]]


# --- vgic-redist -------------------------------------------------------------------------------

DIST = "- {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}\n"


def test_regions_are_the_default_and_several_are_fine(tmp_path: Path) -> None:
    _, found = findings(
        tmp_path,
        DIST + "- {name: gicr0, type: vgic-v3-redist, base: 0x080a_0000, vcpus: 2}\n"
        "- {name: gicr1, type: vgic-v3-redist, base: 0x1000_0000, vcpus: 4, redist: regions}\n",
    )
    assert found == []


def test_a_second_legacy_redistributor_is_refused_with_eexist(tmp_path: Path) -> None:
    path, found = findings(
        tmp_path,
        DIST + "- {name: gicr0, type: vgic-v3-redist, base: 0x080a_0000, redist: legacy}\n"
        "- {name: gicr1, type: vgic-v3-redist, base: 0x1000_0000, redist: legacy}\n",
    )
    (f,) = found
    assert (f["rule"], f["objects"]) == ("vgic-redist", ["gicr1", "gicr0"])
    line = position(path, "gicr1")[0]
    column = path.read_text().splitlines()[line - 1].index("legacy") + 1
    assert (f["line"], f["column"]) == (line, column)
    assert "second legacy redistributor address after 'gicr0'" in str(f["message"])
    assert "KVM_SET_DEVICE_ATTR(KVM_VGIC_V3_ADDR_TYPE_REDIST) fails with EEXIST" in str(
        f["message"]
    )
    assert "`redist: regions`" in str(f["message"])


def test_a_legacy_redistributor_after_a_region_is_refused_with_einval(tmp_path: Path) -> None:
    _, found = findings(
        tmp_path,
        DIST + "- {name: gicr0, type: vgic-v3-redist, base: 0x080a_0000}\n"
        "- {name: gicr1, type: vgic-v3-redist, base: 0x1000_0000, redist: legacy}\n",
    )
    (f,) = found
    assert (f["rule"], f["objects"]) == ("vgic-redist", ["gicr1", "gicr0"])
    assert "KVM does not mix the two" in str(f["message"])
    assert "(KVM_VGIC_V3_ADDR_TYPE_REDIST) fails with EINVAL" in str(f["message"])


def test_a_region_after_the_legacy_address_is_refused_with_einval(tmp_path: Path) -> None:
    path, found = findings(
        tmp_path,
        DIST + "- {name: gicr0, type: vgic-v3-redist, base: 0x080a_0000, redist: legacy}\n"
        "- {name: gicr1, type: vgic-v3-redist, base: 0x1000_0000}\n",
    )
    (f,) = found
    assert (f["rule"], f["objects"]) == ("vgic-redist", ["gicr1", "gicr0"])
    assert (f["line"], f["column"]) == position(path, "0x1000_0000")
    assert "(KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION) fails with EINVAL" in str(f["message"])
    assert "vCPUs fill the legacy address first" in str(f["message"])


def test_a_region_count_beyond_12_bits_cannot_be_said(tmp_path: Path) -> None:
    big = "- {name: gicr, type: vgic-v3-redist, base: 0x1_0000_0000, vcpus: %d}\n"
    _, found = findings(tmp_path, DIST + big % 4096)
    (f,) = only(found, "vgic-redist")  # (4096 frames also fill the io bus: iobus-full)
    assert "has 4096 redistributors" in str(f["message"])
    assert "at most 4095" in str(f["message"])
    _, found = findings(tmp_path, DIST + big % 4095)
    assert only(found, "vgic-redist") == []


def test_redist_belongs_to_redistributors_only(tmp_path: Path) -> None:
    path = tmp_path / "gic.yaml"
    path.write_text(HEAD + "  - {name: d, type: vgic-v3-dist, base: 0x0800_0000, redist: legacy}\n")
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 1
    assert "error[schema] `redist` is only for vgic-v3-redist" in result.stdout


def test_rules_lists_both_vgic_rules() -> None:
    result = CliRunner().invoke(cli, ["rules"])
    for slug in ("vgic-incomplete", "vgic-redist"):
        assert slug in RULES
        assert f"{slug} (error): {RULES[slug].summary}" in result.stdout


def test_overlapping_legacy_redistributors_get_one_errno_from_both_rules(tmp_path: Path) -> None:
    # vgic_v3_alloc_redist_region() refuses a second legacy address (EEXIST) before it looks
    # at any overlap, so device-overlap names the same errno as vgic-redist.
    _, found = findings(
        tmp_path,
        DIST + "- {name: gicr0, type: vgic-v3-redist, base: 0x080a_0000, redist: legacy}\n"
        "- {name: gicr1, type: vgic-v3-redist, base: 0x080b_0000, redist: legacy}\n",
    )
    assert sorted(str(f["rule"]) for f in found) == ["device-overlap", "vgic-redist"]
    for f in found:
        assert "fails with EEXIST" in str(f["message"]) and "EINVAL" not in str(f["message"])
