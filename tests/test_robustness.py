"""Whatever a layout file holds, check and allocate answer with findings, never a traceback."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpa_plan.cli import cli

ENTRY_KEYS = [
    "name",
    "slot",
    "as_id",
    "base",
    "size",
    "readonly",
    "dirty_log",
    "type",
    "vcpus",
    "handler",
    "identity_map",
    "align",
    "within",
    "policy",
    "bogus",
]
WORDS = [
    "auto",
    "4K",
    "1.5G",
    "0x1000",
    "010",
    "1:30",
    "x",
    "",
    "-4K",
    "first",
    "last",
    "mmio",
    "ucall",
    "vgic-v3-dist",
    "vgic-v3-redist",
    "lapic",
    "ioapic",
    "user",
    "ioeventfd",
    "coalesced",
    "arm64",
    "x86_64",
]
scalars = st.one_of(
    st.integers(min_value=-8, max_value=2**66),
    st.sampled_from([0, 0x1000, 0x8000_0000, 0xFEE0_0000, 2**40, 2**63]),
    st.sampled_from(WORDS),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(ENTRY_KEYS), inner, max_size=3)
    ),
    max_leaves=6,
)
entries = st.fixed_dictionaries(
    {},
    optional={
        **{key: values for key in ENTRY_KEYS},
        "name": st.sampled_from(["a", "b", "ucall"]),
        "base": st.sampled_from([0, 0x1000, "auto", 0xFEE0_0000, 0x0800_0000, 2**40]),
        "size": st.sampled_from([4096, 0, "4K", "1G", 2**63]),
        "type": st.sampled_from(["mmio", "ucall", "vgic-v3-dist", "vgic-v3-redist", "lapic"]),
    },
)
layouts = st.fixed_dictionaries(
    {
        "layout": st.sampled_from([1, 1, 2, "1"]),
        "arch": st.sampled_from(["arm64", "x86_64", "riscv64", "s390x"]),
    },
    optional={
        "name": values,
        "pa_bits": st.one_of(st.integers(min_value=-1, max_value=70), values),
        "page_size": st.one_of(st.sampled_from([4096, "64K", 3000]), values),
        "guest_page_size": values,
        "memslots": st.one_of(st.lists(entries, max_size=4), values),
        "devices": st.one_of(st.lists(entries, max_size=4), values),
        "reserved": st.one_of(st.lists(entries, max_size=3), values),
        "bogus": values,
    },
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    layout=layouts,
    arch=st.sampled_from([[], ["--arch", "x86_64"], ["--arch", "arm64", "--arch", "x86_64"]]),
)
def test_check_and_allocate_never_crash(
    tmp_path: Path, layout: dict[str, object], arch: list[str]
) -> None:
    path = tmp_path / "layout.yaml"
    path.write_text(yaml.safe_dump(layout))
    runner = CliRunner()
    checked = runner.invoke(cli, ["check", "--format", "json", *arch, str(path)])
    assert checked.exit_code in (0, 1), checked.output
    assert checked.exception is None or isinstance(checked.exception, SystemExit)
    planned = runner.invoke(cli, ["allocate", "--ucall-memslot", "--format", "c", str(path)])
    assert planned.exit_code in (0, 1), planned.output
    assert planned.exception is None or isinstance(planned.exception, SystemExit)
