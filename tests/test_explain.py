"""`gpa-plan explain` and `gpa-plan rules`: what one access becomes, through which kernel path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from stable_rules import STABLE_RULES

from gpa_plan.arch import ARCHES
from gpa_plan.check.rules import RULES
from gpa_plan.cli import cli

LAYOUTS = Path(__file__).parent / "data" / "layouts"
PLAIN_ENV = {"COLUMNS": "160", "NO_COLOR": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None}


@pytest.fixture(autouse=True)
def in_layouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(LAYOUTS)


def run(*args: str) -> Result:
    return CliRunner(env=PLAIN_ENV).invoke(cli, list(args))


def answers(*args: str) -> list[dict[str, object]]:
    result = run("explain", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["format"] == 1
    assert list(document) == ["format", "answers", "differences"]
    found: list[dict[str, object]] = document["answers"]
    return found


def test_write_to_readonly_flash_on_arm64_goes_through_io_mem_abort() -> None:
    result = run("explain", "small-arm64.yaml", "0x100", "--access", "write")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "0x0000_0100 write on arm64: io-exit [rom (flash)]",
        "  read-only memslot (flash): kvm_handle_guest_abort(): write to a read-only memslot"
        " -> io_mem_abort() -> no io-bus device -> KVM_EXIT_MMIO (is_write=1)",
        "  note: " + ARCHES["arm64"].io_instruction_note,
    ]


def test_explain_json_has_one_answer_per_address_access_and_arch() -> None:
    got = answers("small-arm64.yaml", "0x0800_0000", "1G", "--arch", "arm64", "--arch", "x86_64")
    assert [(a["arch"], a["address"], a["access"], a["outcome"], a["kind"]) for a in got] == [
        ("arm64", 0x0800_0000, "read", "io-kernel", "device"),
        ("arm64", 0x0800_0000, "write", "io-kernel", "device"),
        ("arm64", 0x0800_0000, "fetch", "guest-fault", "device"),
        ("arm64", 0x4000_0000, "read", "memory", "ram"),
        ("arm64", 0x4000_0000, "write", "memory", "ram"),
        ("arm64", 0x4000_0000, "fetch", "memory", "ram"),
        # x86_64 has no vGIC: the arm64 layout's gicd is not there, as `check` shows it.
        ("x86_64", 0x0800_0000, "read", "io-exit", "unbacked"),
        ("x86_64", 0x0800_0000, "write", "io-exit", "unbacked"),
        ("x86_64", 0x0800_0000, "fetch", "vm-error", "unbacked"),
        ("x86_64", 0x4000_0000, "read", "memory", "ram"),
        ("x86_64", 0x4000_0000, "write", "memory", "ram"),
        ("x86_64", 0x4000_0000, "fetch", "memory", "ram"),
    ]
    assert set(got[0]) == {
        "address", "arch", "access", "outcome", "kind", "names", "detail", "notes"
    }
    assert got[0]["names"] == ["gicd"]
    assert "kvm_io_bus_read()" in str(got[0]["detail"])


def test_an_answer_under_another_arch_names_the_device_left_out_there() -> None:
    got = answers("small-arm64.yaml", "0x0800_0000", "1G", "--arch", "x86_64")
    here = [a["detail"] for a in got if a["address"] == 0x0800_0000]
    elsewhere = [a["detail"] for a in got if a["address"] == 0x4000_0000]
    assert len(here) == 3
    for detail in here:
        assert str(detail).startswith(
            "vgic-v3-dist 'gicd' of this arm64 layout is left out on x86_64, where KVM has no "
            "such device; no memslot and no device: "
        )
    assert not any("left out" in str(d) for d in elsewhere)
    # Under its own arch nothing is left out.
    own = answers("small-arm64.yaml", "0x0800_0000")
    assert not any("left out" in str(a["detail"]) for a in own)


def test_x86_fetch_outside_memory_is_an_internal_error() -> None:
    (answer,) = answers("small-x86_64.yaml", "0x2000_0000", "--access", "fetch")
    assert (answer["outcome"], answer["kind"], answer["names"]) == ("vm-error", "unbacked", [])
    assert "KVM_EXIT_INTERNAL_ERROR" in str(answer["detail"])
    assert "kvm_fetch_guest_virt()" in str(answer["detail"])


def test_arm64_fetch_outside_memory_is_a_prefetch_abort() -> None:
    (answer,) = answers("small-arm64.yaml", "0x2000_0000", "--access", "fetch")
    assert answer["outcome"] == "guest-fault"
    assert "kvm_inject_sea_iabt()" in str(answer["detail"])


@pytest.mark.parametrize(
    ("address", "access", "outcome", "path"),
    [
        ("0xfe00_0000", "write", "io-kernel", "ioeventfd"),
        ("0xfe00_0000", "read", "io-exit", "KVM_EXIT_MMIO"),
        ("0xfe00_1000", "write", "io-coalesced", "coalesced_mmio_write()"),
        ("0xfec0_0000", "read", "io-kernel", "vcpu_mmio_read()"),
        ("0xf_8000", "write", "io-exit", "kvm_handle_error_pfn()"),
        ("0xf_8000", "fetch", "memory", "read-only"),
    ],
)
def test_x86_device_outcomes_name_the_kernel_path(
    address: str, access: str, outcome: str, path: str
) -> None:
    (answer,) = answers("small-x86_64.yaml", address, "--access", access)
    assert answer["outcome"] == outcome
    assert path in str(answer["detail"])


@pytest.mark.parametrize(
    ("layout", "address", "words"),
    [
        ("small-arm64.yaml", "0x1_0000_0000", "IPA"),
        ("small-x86_64.yaml", "0x10_0000_0000", "MAXPHYADDR"),
    ],
)
def test_address_beyond_pa_bits_is_a_guest_fault(layout: str, address: str, words: str) -> None:
    got = answers(layout, address)
    assert [(a["access"], a["outcome"], a["kind"], a["names"]) for a in got] == [
        (access, "guest-fault", "beyond", []) for access in ("read", "write", "fetch")
    ]
    assert words in str(got[0]["detail"])


def test_last_address_below_pa_bits_is_still_inside() -> None:
    (answer,) = answers("small-arm64.yaml", "0xffff_ffff", "--access", "read")
    assert (answer["outcome"], answer["kind"]) == ("io-exit", "unbacked")


def test_text_output_lists_every_access_when_none_is_given() -> None:
    result = run("explain", "small-x86_64.yaml", "0x1000")
    assert result.exit_code == 0
    out = result.stdout.splitlines()
    assert out[0::2] == [
        "0x0000_1000 read on x86_64: memory [ram (low)]",
        "0x0000_1000 write on x86_64: memory [ram (low)]",
        "0x0000_1000 fetch on x86_64: memory [ram (low)]",
    ]
    assert all(line.startswith("  memslot (low): ") for line in out[1::2])


@pytest.mark.parametrize("address", ["zz", "-0x1000", "0x1_0000_0000_0000_0000", "010"])
def test_bad_address_is_a_usage_error(address: str) -> None:
    # `--` so that a leading minus is read as an address, not as an option.
    result = run("explain", "small-arm64.yaml", "--", address)
    assert result.exit_code == 2
    assert "Invalid value for ADDR" in result.stderr
    assert result.stdout == ""


def test_explain_needs_an_address_and_an_existing_file() -> None:
    assert run("explain", "small-arm64.yaml").exit_code == 2
    assert run("explain", "absent.yaml", "0x0").exit_code == 2
    assert run("explain", "small-arm64.yaml", "0x0", "--access", "jump").exit_code == 2


def test_explain_on_a_bad_layout_prints_its_findings_and_exits_1() -> None:
    result = run("explain", "bad/duplicate-key.yaml", "0x0")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "bad/duplicate-key.yaml:7:5: error[schema] duplicate key 'base' (first defined on "
        "line 5); YAML would silently keep only the last one"
    ]


# --- rules --------------------------------------------------------------------------------------


def test_rules_lists_every_rule_with_its_severity_and_description() -> None:
    result = run("rules")
    assert result.exit_code == 0
    out = result.stdout.splitlines()
    headings = [line for line in out if not line.startswith("    ")]
    assert headings == [f"{r.slug} ({r.severity_text}): {r.summary}" for r in RULES.values()]
    for rule in RULES.values():
        heading = out.index(f"{rule.slug} ({rule.severity_text}): {rule.summary}")
        assert out[heading + 1] == f"    {rule.description}"


def test_rules_includes_every_stable_rule() -> None:
    out = run("rules").stdout
    for slug in STABLE_RULES:
        # Errors first; a rule that also warns says when after a semicolon.
        assert f"\n{slug} (error): " in "\n" + out or f"\n{slug} (error; " in "\n" + out
