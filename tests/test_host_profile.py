"""Host profiles (`--host FILE`): the facts of one host make host-dependent findings exact, and
a file that is not a profile is an error at its line and column."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from kvm_probe import kvm_usable

from gpa_plan.cli import cli
from gpa_plan.host_profile import (
    HostProfileError,
    host_profile_of,
    load_host_profile,
    positions,
)
from gpa_plan.probe import kvm

PLAIN_ENV = {"COLUMNS": "400", "NO_COLOR": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None}


def profile(tmp_path: Path, arch: str = "x86_64", name: str = "host.json", **facts: Any) -> Path:
    """A host profile as `gpa-plan host --format json` writes one, with ``facts``."""
    path = tmp_path / name
    document = {
        "format": 1,
        "kernel": {"release": "7.2.13-test", "machine": "x86_64"},
        "arch": arch,
        "capabilities": {"KVM_CAP_X86_SMM": 0},
        "facts": facts,
        "sources": {},
        "unknown": {},
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def layout(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "layout.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def check(path: Path, *args: str) -> Result:
    return CliRunner(env=PLAIN_ENV).invoke(cli, ["check", "-q", str(path), *args])


def findings(result: Result, rule: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if f"[{rule}]" in line]


SMRAM = """\
    layout: 1
    arch: x86_64
    memslots:
      - {name: ram, base: 0x0, size: 640K}
      - {name: smram, as_id: 1, base: 0xa_0000, size: 128K}
    """


def test_as_id_1_memslot_on_a_host_with_one_address_space_is_einval(tmp_path: Path) -> None:
    path = layout(tmp_path, SMRAM)
    assert findings(check(path), "slot-id-conflict") == []
    result = check(path, "--host", str(profile(tmp_path, address_spaces=1)))
    assert result.exit_code == 1
    (line,) = findings(result, "slot-id-conflict")
    assert line.startswith(f"{path}:5:26: error[slot-id-conflict] memslot 'smram' uses as_id 1")
    assert "this host has 1 address space (address_spaces 1 in host profile" in line
    assert "returns EINVAL (kvm_set_memory_region(): as_id >= kvm_arch_nr_memslot_as_ids())" in line


def test_as_id_1_memslot_on_a_host_with_smm_is_accepted(tmp_path: Path) -> None:
    result = check(layout(tmp_path, SMRAM), "--host", str(profile(tmp_path, address_spaces=2)))
    assert result.exit_code == 0, result.output
    assert findings(result, "slot-id-conflict") == []


def test_text_output_ends_naming_the_host_profile(tmp_path: Path) -> None:
    host = profile(tmp_path, address_spaces=2)
    result = check(layout(tmp_path, SMRAM), "--host", str(host))
    assert result.stdout.splitlines()[-2:] == [
        "1 file checked: 0 errors, 0 warnings",
        f"host profile {host}: an x86_64 host, kernel 7.2.13-test",
    ]


def test_a_null_fact_is_treated_as_without_a_profile(tmp_path: Path) -> None:
    result = check(layout(tmp_path, SMRAM), "--host", str(profile(tmp_path, address_spaces=None)))
    assert result.exit_code == 0, result.output


TSS = """\
    layout: 1
    arch: x86_64
    kvm_private: {tss: 0xfeff_d000}
    memslots:
      - {name: ram, base: 0xfeff_e000, size: 4K}
    """


def test_tss_conflict_is_a_warning_without_a_profile(tmp_path: Path) -> None:
    result = check(layout(tmp_path, TSS))
    assert result.exit_code == 0
    (line,) = findings(result, "private-slot-conflict")
    assert "warning[private-slot-conflict]" in line and "Intel (VMX) hosts" in line


def test_tss_conflict_is_an_error_on_a_host_that_keeps_the_tss(tmp_path: Path) -> None:
    host = profile(tmp_path, real_mode_tss=True)
    result = check(layout(tmp_path, TSS), "--host", str(host))
    assert result.exit_code == 1
    (line,) = findings(result, "private-slot-conflict")
    assert "error[private-slot-conflict]" in line
    assert f"This host keeps it (real_mode_tss true in host profile {host})" in line


def test_tss_conflict_is_gone_on_a_host_that_keeps_no_tss(tmp_path: Path) -> None:
    result = check(layout(tmp_path, TSS), "--host", str(profile(tmp_path, real_mode_tss=False)))
    assert result.exit_code == 0
    assert findings(result, "private-slot-conflict") == []


APIC = """\
    layout: 1
    arch: x86_64
    memslots:
      - {name: ram, base: 0xfee0_0000, size: 1M}
    devices:
      - {name: lapic, type: lapic}
    """


@pytest.mark.parametrize(("kept", "status", "count"), [(True, 1, 1), (False, 0, 0)])
def test_apic_access_page_conflict_follows_the_profile(
    tmp_path: Path, kept: bool, status: int, count: int
) -> None:
    # The memslot hides the LAPIC from the guest too (device-shadowed): not the point here.
    path = layout(tmp_path, APIC)
    assert len(findings(check(path), "private-slot-conflict")) == 1
    host = profile(tmp_path, apic_access_page=kept)
    result = check(path, "--host", str(host), "--ignore", "device-shadowed")
    assert result.exit_code == status, result.output
    assert len(findings(result, "private-slot-conflict")) == count


HIGH = """\
    layout: 1
    arch: x86_64
    pa_bits: 52
    memslots:
      - {name: high, base: 0x1_0000_0000_0000, size: 4K}
    """


def test_memslot_beyond_the_host_memslot_limit_is_einval(tmp_path: Path) -> None:
    path = layout(tmp_path, HIGH)
    assert findings(check(path), "memslot-out-of-range") == []
    result = check(path, "--host", str(profile(tmp_path, memslot_pa_bits=48)))
    (line,) = findings(result, "memslot-out-of-range")
    assert "ends beyond this host's limit of 0x1_0000_0000_0000 (memslot_pa_bits 48" in line
    assert "KVM_SET_USER_MEMORY_REGION refuses it with EINVAL" in line
    assert "(kvm_arch_prepare_memory_region(): beyond kvm_mmu_max_gfn())" in line
    ok = check(path, "--host", str(profile(tmp_path, memslot_pa_bits=52)))
    assert ok.exit_code == 0, ok.output


def test_memslot_beyond_pa_bits_but_below_the_host_limit_is_accepted_by_kvm(
    tmp_path: Path,
) -> None:
    path = layout(tmp_path, HIGH.replace("pa_bits: 52", "pa_bits: 48"))
    (without,) = findings(check(path), "memslot-out-of-range")
    assert "KVM refuses the slot (EINVAL) if it also ends beyond the host's MAXPHYADDR" in without
    host = profile(tmp_path, memslot_pa_bits=52)
    (line,) = findings(check(path, "--host", str(host)), "memslot-out-of-range")
    assert "the guest cannot reach what lies above it (but on hosts with EPT/NPT that leave a " \
        "smaller guest MAXPHYADDR unenforced, KVM_CAP_SMALLER_MAXPHYADDR 0), though this " \
        f"host's KVM accepts the memslot (memslot_pa_bits 52 in host profile {host})" in line


def test_a_memslot_beyond_pa_bits_is_reached_where_the_host_leaves_maxphyaddr_unenforced(
    tmp_path: Path,
) -> None:
    """With TDP and KVM_CAP_SMALLER_MAXPHYADDR 0 the guest's MAXPHYADDR is not enforced: the
    memslot above it is accepted and the guest reaches it; shadow paging enforces it."""
    path = layout(tmp_path, HIGH.replace("pa_bits: 52", "pa_bits: 40"))
    tdp = profile(tmp_path, "x86_64", "tdp.json", memslot_pa_bits=52, maxphyaddr=52, tdp=True,
                  smaller_maxphyaddr=False)
    (line,) = findings(check(path, "--host", str(tdp)), "memslot-out-of-range")
    assert f"this host's KVM accepts the memslot (memslot_pa_bits 52 in host profile {tdp}), " \
        "and the guest reaches it all the same: this host leaves a guest MAXPHYADDR below its " \
        "own unenforced" in line
    assert f"(tdp true, smaller_maxphyaddr false in host profile {tdp})" in line
    shadow = profile(tmp_path, "x86_64", "shadow.json", memslot_pa_bits=52, maxphyaddr=52,
                     tdp=False, smaller_maxphyaddr=True)
    (line,) = findings(check(path, "--host", str(shadow)), "memslot-out-of-range")
    assert "the guest cannot reach what lies above it (this host's KVM enforces the guest's " \
        f"MAXPHYADDR: tdp false, smaller_maxphyaddr true in host profile {shadow}), though " \
        "this host's KVM accepts the memslot" in line


ARM = """\
    layout: 1
    arch: arm64
    pa_bits: 48
    memslots:
      - {name: ram, base: 0x4000_0000, size: 1G}
    devices:
      - {name: gicd, type: vgic-v2-dist, base: 0x0800_0000}
      - {name: gicc, type: vgic-v2-cpu, base: 0x0801_0000}
    """


def test_arm64_pa_bits_above_the_host_ipa_limit_fails_create_vm(tmp_path: Path) -> None:
    path = layout(tmp_path, ARM)
    assert check(path).exit_code == 0
    result = check(path, "--host", str(profile(tmp_path, "arm64", ipa_limit=40)))
    assert result.exit_code == 1
    (line,) = findings(result, "host-limits")[:1]
    assert line.startswith(f"{path}:3:10: error[host-limits] pa_bits 48 is above this host's")
    assert "KVM_CREATE_VM fails with EINVAL (kvm_init_ipa_range()" in line


def test_arm64_gicv2_on_a_host_without_one_is_enodev(tmp_path: Path) -> None:
    path = layout(tmp_path, ARM)
    result = check(path, "--host", str(profile(tmp_path, "arm64", vgic_v2=False, vgic_v3=True)))
    assert result.exit_code == 1
    lines = findings(result, "host-limits")
    assert [line.split(": error")[0] for line in lines] == [f"{path}:7:24", f"{path}:8:24"]
    assert "KVM_CREATE_DEVICE fails with ENODEV (kvm_ioctl_create_device(): no GICv2" in lines[0]
    ok = check(path, "--host", str(profile(tmp_path, "arm64", vgic_v2=True, ipa_limit=48)))
    assert ok.exit_code == 0, ok.output


def test_a_profile_of_another_arch_changes_nothing(tmp_path: Path) -> None:
    path = layout(tmp_path, ARM)
    host = profile(tmp_path, "x86_64", address_spaces=1)
    result = check(path, "--host", str(host))
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"note: host profile {host} is of an x86_64 host and nothing was "
                             "evaluated under x86_64: it changed nothing\n")
    assert check(path, "--host", str(host), "--arch", "x86_64", "--arch", "arm64").stderr == ""


def test_json_outputs_name_the_host_profile(tmp_path: Path) -> None:
    host = profile(tmp_path, address_spaces=1)
    path = layout(tmp_path, SMRAM)
    runner = CliRunner()
    checked = json.loads(runner.invoke(cli, ["check", str(path), "--format", "json",
                                             "--host", str(host)]).stdout)
    named = {"file": str(host), "arch": "x86_64", "kernel_release": "7.2.13-test"}
    assert checked["host"] == named
    assert "host" not in json.loads(runner.invoke(cli, ["check", str(path), "--format",
                                                        "json"]).stdout)
    explained = json.loads(runner.invoke(cli, ["explain", str(path), "0x0", "--format", "json",
                                               "--host", str(host)]).stdout)
    assert explained["host"] == named


@pytest.mark.parametrize("kept", [True, False])
def test_explain_says_what_the_tss_is_on_the_host(tmp_path: Path, kept: bool) -> None:
    path = layout(tmp_path, TSS)
    host = profile(tmp_path, real_mode_tss=kept)
    result = CliRunner().invoke(cli, ["explain", str(path), "0xfeff_d000", "--access", "read",
                                      "--format", "json", "--host", str(host)])
    (answer,) = json.loads(result.stdout)["answers"]
    if kept:
        assert (answer["outcome"], answer["kind"]) == ("memory", "private")
        assert f"this host keeps it (real_mode_tss true in host profile {host})" in answer["detail"]
    else:
        assert (answer["outcome"], answer["kind"]) == ("io-exit", "unbacked")
        assert "TSS" not in answer["detail"]
    without = CliRunner().invoke(cli, ["explain", str(path), "0xfeff_d000", "--access", "read",
                                       "--format", "json"])
    assert "only on Intel (VMX) hosts" in json.loads(without.stdout)["answers"][0]["detail"]


def test_explain_at_the_apic_access_page_is_the_lapic_on_a_host_that_keeps_it(
    tmp_path: Path,
) -> None:
    path = layout(tmp_path, APIC)
    host = profile(tmp_path, apic_access_page=True)
    result = CliRunner().invoke(cli, ["explain", str(path), "0xfee0_0000", "--access", "write",
                                      "--format", "json", "--host", str(host)])
    (answer,) = json.loads(result.stdout)["answers"]
    assert answer["kind"] != "private" and answer["names"] == ["ram", "lapic"]


# -- this host's own profile -------------------------------------------------------------------


@pytest.mark.skipif(
    not kvm_usable() or os.uname().machine != "x86_64", reason="needs an x86_64 host's /dev/kvm"
)
def test_this_hosts_profile_predicts_what_kvm_does_with_an_smram_memslot(tmp_path: Path) -> None:
    made = CliRunner().invoke(cli, ["host", "--format", "json"])
    host = tmp_path / "host.json"
    host.write_text(made.stdout)
    result = check(layout(tmp_path, SMRAM), "--host", str(host))
    handle = kvm.Kvm()
    vm = kvm.create_vm(handle)
    memory = kvm.Memory(128 * 1024)
    try:
        refused = kvm.set_memslot(vm, 0, 1, 0xA_0000, 128 * 1024, memory.addr, False)
    finally:
        memory.close()
        os.close(vm)
        handle.close()
    predicted = findings(result, "slot-id-conflict")
    assert bool(predicted) == (refused == "EINVAL")
    assert result.exit_code == (1 if refused else 0)


def test_the_probes_facts_are_a_profile_without_a_file() -> None:
    facts = {"format": 1, "kernel": {"release": "6.12.0", "machine": "aarch64"},
             "arch": "arm64", "facts": {"ipa_limit": 40, "vgic_v2": False}}
    made = host_profile_of(facts, "the probed host")
    assert (made.arch, made.kernel_release, made.fact("vgic_v2")) == ("arm64", "6.12.0", False)
    assert made.cite("ipa_limit") == "ipa_limit 40 in host profile the probed host"
    with pytest.raises(HostProfileError) as raised:
        host_profile_of({**facts, "facts": {"ipa_limit": "40"}})
    assert (raised.value.path, raised.value.line, raised.value.column) == ("this host", 1, 1)


@pytest.mark.skipif(not kvm_usable(), reason="needs a usable /dev/kvm")
def test_this_hosts_facts_are_a_profile() -> None:
    from gpa_plan.probe.host import host_facts

    facts = host_facts()
    if facts["arch"] is None:
        pytest.skip(f"no host facts on {facts['kernel']['machine']}")
    made = host_profile_of(facts)
    assert dict(made.facts) == facts["facts"]


# -- files that are not host profiles ----------------------------------------------------------


def bad(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(text)
    return path


def valid_text(**facts: Any) -> str:
    return json.dumps({"format": 1, "kernel": {"release": "7.2.13"}, "arch": "x86_64",
                       "facts": facts}, indent=2)


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ('{\n  "format": 1,\n  "arch": "x86_64"\n  "facts": {}\n}\n', 4, 3,
         "not valid JSON (Expecting ',' delimiter)"),
        (valid_text(address_spaces="2"), 8, 23, "`address_spaces` must be an integer or null"),
        (valid_text(smm=1), 8, 12, "`smm` must be true or false or null"),
        (valid_text(address_spaces=True), 8, 23, "not true"),
        (valid_text(ipa_limit=40), 8, 5, "unknown x86_64 host fact `ipa_limit`"),
        (valid_text().replace('"x86_64"', '"riscv64"'), 6, 11,
         '`arch` is "riscv64": host profiles exist for arm64, x86_64'),
        (valid_text().replace('"format": 1', '"format": 2'), 2, 13,
         '`"format": 1` is the only host profile format; this file has 2'),
        (valid_text().replace('"format": 1', '"format": true'), 2, 13,
         '`"format": 1` is the only host profile format; this file has true'),
        ('{"format": 1, "arch": "x86_64", "kernel": {}, "facts": {}}', 1, 43,
         "`kernel.release` must be a string"),
        ('[1, 2]', 1, 1, "a host profile is a JSON object, not an array"),
    ],
)
def test_bad_profile_is_an_error_at_its_line_and_column(
    tmp_path: Path, text: str, line: int, column: int, words: str
) -> None:
    path = bad(tmp_path, text)
    with pytest.raises(HostProfileError) as raised:
        load_host_profile(path)
    assert (raised.value.line, raised.value.column) == (line, column), raised.value.message
    assert words in raised.value.message
    result = CliRunner().invoke(cli, ["check", str(layout(tmp_path, SMRAM)), "--host", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{path}:{line}:{column}: error[host-profile] ")
    assert result.stdout == "" and "Traceback" not in result.output


def test_bad_profile_given_to_explain_json_is_a_findings_document(tmp_path: Path) -> None:
    path = bad(tmp_path, valid_text(smm="yes"))
    result = CliRunner().invoke(cli, ["explain", str(layout(tmp_path, SMRAM)), "0x0",
                                      "--format", "json", "--host", str(path)])
    assert result.exit_code == 1
    (finding,) = json.loads(result.stdout)["findings"]
    assert (finding["rule"], finding["file"], finding["line"], finding["column"]) == (
        "host-profile", str(path), 8, 12)


def test_profile_that_is_not_utf8_is_an_error_at_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b'{\n  "format": \xff1}\n')
    with pytest.raises(HostProfileError) as raised:
        load_host_profile(path)
    assert (raised.value.line, raised.value.column) == (2, 13)


def test_profile_that_cannot_be_read_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    result = CliRunner().invoke(cli, ["check", str(layout(tmp_path, SMRAM)), "--host",
                                      str(missing)])
    assert result.exit_code == 2
    assert f"cannot read {missing}: no such file or directory" in result.stderr


def test_deeply_nested_profile_is_refused_quickly(tmp_path: Path) -> None:
    path = bad(tmp_path, '{"format": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(HostProfileError):
        load_host_profile(path)


def test_positions_name_every_object_value() -> None:
    text = '{\n "a": 1,\n "b": {"c": [1, {"d": 2}],\n       "e": "x"}}'
    values, keys = positions(text)
    assert values == {
        (): (1, 1), ("a",): (2, 7), ("b",): (3, 7), ("b", "c"): (3, 13), ("b", "e"): (4, 13)
    }
    assert keys == {("a",): (2, 2), ("b",): (3, 2), ("b", "c"): (3, 8), ("b", "e"): (4, 8)}


_SCALARS = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=5)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _JSON, max_size=4), st.sampled_from([None, 0, 2, "\t"]),
       st.booleans())
def test_positions_point_at_each_value_and_key(
    document: dict[str, Any], indent: int | str | None, ascii_only: bool
) -> None:
    text = json.dumps(document, indent=indent, ensure_ascii=ascii_only)
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    decoder = json.JSONDecoder()

    def at(position: tuple[int, int]) -> Any:
        line, column = position
        return decoder.raw_decode(text, starts[line - 1] + column - 1)[0]

    values, keys = positions(text)
    for path, position in values.items():
        expected: Any = document
        for key in path:
            expected = expected[key]
        assert at(position) == expected
    for path, position in keys.items():
        assert at(position) == path[-1]
    assert set(keys) == set(values) - {()}


@pytest.mark.parametrize(
    ("layout", "field", "says"),
    [
        ("layout: 1\narch: x86_64\npa_bits: 40\nmemslots:\n"
         "  - {name: ram, base: 0, size: 1M}\n  - {name: smram, base: 0xa0000, size: 128K, "
         "as_id: 1}\n", "as_id", "in as_id 1 (SMM): a host whose KVM has fewer address spaces"),
        ("layout: 1\narch: arm64\npa_bits: 44\nmemslots:\n  - {name: ram, base: 0, size: 1M}\n",
         "pa_bits", "on hosts whose IPA limit (the CPU's PARange, KVM_CAP_ARM_VM_IPA_SIZE) is "
         "below 44 bits, KVM_CREATE_VM fails with EINVAL"),
        ("layout: 1\narch: arm64\npa_bits: 40\ndevices:\n"
         "  - {name: gicd, type: vgic-v2-dist, base: 0x0800_0000}\n"
         "  - {name: gicc, type: vgic-v2-cpu, base: 0x0801_0000}\n",
         "type", "on GICv3 hosts without GICv2 compatibility"),
    ],
)
def test_without_a_profile_a_note_says_on_which_hosts_the_layout_is_refused(
    tmp_path: Path, layout: str, field: str, says: str
) -> None:
    from gpa_plan.check.run import check_file

    path = tmp_path / "layout.yaml"
    path.write_text(layout)
    (result,) = check_file(path)
    notes = [f for f in result.findings if f.rule == "host-limits"]
    assert [(f.severity, says in f.message) for f in notes] == [("note", True)]
    assert "`gpa-plan host`" in notes[0].message
    assert notes[0].column > 0 and field in layout.splitlines()[notes[0].line - 1]
    # A note counts for nothing.
    assert result.errors == result.warnings == 0
