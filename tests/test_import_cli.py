"""`gpa-plan import qemu-mtree|dtb FILE [-o OUT]`: a layout from what a VMM reports, which
`check` then accepts. The importers themselves are tested in test_import_qemu_mtree.py and
test_import_dtb.py; this is the command around them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from gpa_plan.cli import cli

IMPORT_DATA = Path(__file__).parent / "data" / "import"
MTREE = IMPORT_DATA / "qemu-mtree"
DTB = IMPORT_DATA / "dtb"
FIXTURES = [
    ("qemu-mtree", MTREE / "virt-gicv3-kvm-flat.txt"),
    ("qemu-mtree", MTREE / "q35-kvm-flat.txt"),
    ("qemu-mtree", MTREE / "pc-aliases-tree.txt"),
    ("qemu-mtree", MTREE / "isapc-kvm-flat-d-o.txt"),
    ("dtb", DTB / "qemu-virt-gicv3.dtb"),
    ("dtb", DTB / "qemu-virt-gicv2.dtb"),
    ("dtb", DTB / "firecracker-aarch64.dtb"),
]


def invoke(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin)


def errors_of(path: Path) -> list[str]:
    result = invoke("check", "--format", "json", str(path))
    document = json.loads(result.stdout)
    return [
        f["rule"] for r in document["results"] for f in r["findings"] if f["severity"] == "error"
    ]


@pytest.mark.parametrize(("kind", "source"), FIXTURES, ids=lambda v: getattr(v, "name", v))
def test_an_imported_layout_checks_without_errors(kind: str, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "imported.yaml"
    result = invoke("import", kind, str(source), "-o", str(out))
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert errors_of(out) == []


def test_stdout_starts_with_the_source_and_the_importers_notes() -> None:
    source = MTREE / "virt-gicv3-kvm-flat.txt"
    result = invoke("import", "qemu-mtree", str(source))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"# Imported by gpa-plan import qemu-mtree from {source}."
    body = lines[lines.index("layout: 1") :]
    assert body[:3] == ["layout: 1", "name: qemu-mtree-arm64", "arch: arm64"]
    assert all(line.startswith("# ") for line in lines[: lines.index("layout: 1")])


def test_standard_input_is_read_with_a_dash() -> None:
    text = (DTB / "qemu-virt-gicv3.dtb").read_bytes()
    from_stdin = invoke("import", "dtb", "-", stdin=text)
    from_file = invoke("import", "dtb", str(DTB / "qemu-virt-gicv3.dtb"))
    assert from_stdin.exit_code == 0
    assert (
        from_stdin.stdout.splitlines()[0]
        == "# Imported by gpa-plan import dtb from standard input."
    )
    assert from_stdin.stdout.splitlines()[1:] == from_file.stdout.splitlines()[1:]


def test_a_malformed_mtree_range_is_refused_at_its_line(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text(
        'FlatView #0\n AS "memory", root: system\n Root memory region: system\n'
        "  0000000000000000-000000000000ffff (prio 0, ram) pc.ram\n"
    )
    out = tmp_path / "out.yaml"
    result = invoke("import", "qemu-mtree", str(source), "-o", str(out))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"{source}:4:3: error[import] ")
    assert not out.exists()


def test_a_file_that_is_not_a_device_tree_blob_is_refused_without_a_line(tmp_path: Path) -> None:
    source = tmp_path / "virt.dts"
    source.write_text("/dts-v1/;\n/ { };\n")
    out = tmp_path / "out.yaml"
    out.write_text("kept\n")
    result = invoke("import", "dtb", str(source), "-o", str(out))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{source}: error[import] ")
    assert "dtc -I dts -O dtb" in result.stderr
    assert out.read_text() == "kept\n"


def test_bytes_that_are_not_utf8_are_not_mtree_output(tmp_path: Path) -> None:
    source = tmp_path / "mtree.bin"
    source.write_bytes(b"FlatView #0\n\xff\xfe\n")
    result = invoke("import", "qemu-mtree", str(source))
    assert result.exit_code == 1
    assert result.stderr == (
        f"{source}:2:1: error[import] not UTF-8 text (byte 0xff at offset 12): expected the "
        "output of the QEMU monitor command `info mtree -f`\n"
    )


def test_a_byte_that_is_not_utf8_is_located_after_a_byte_order_mark(tmp_path: Path) -> None:
    # The offset counted from after the BOM, three bytes short, and no line was given.
    source = tmp_path / "mtree.txt"
    source.write_bytes(b"\xef\xbb\xbfFlatView #0\n AS \"memory\"\n  \xc3(\n")
    result = invoke("import", "qemu-mtree", str(source))
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"{source}:3:3: error[import] not UTF-8 text (byte 0xc3 at offset 30): "
    )


def test_arch_overrides_the_guess_for_mtree_and_is_a_usage_error_for_dtb() -> None:
    source = MTREE / "virt-gicv3-kvm-flat.txt"
    result = invoke("import", "qemu-mtree", str(source), "--arch", "x86_64")
    assert result.exit_code == 0
    assert "arch: x86_64" in result.stdout.splitlines()
    refused = invoke("import", "dtb", str(DTB / "qemu-virt-gicv3.dtb"), "--arch", "arm64")
    assert refused.exit_code == 2
    assert "--arch is for qemu-mtree" in refused.stderr


def test_unknown_kind_is_a_usage_error() -> None:
    result = invoke("import", "acpi", str(DTB / "qemu-virt-gicv3.dtb"))
    assert result.exit_code == 2


def test_a_byte_order_mark_before_mtree_output_is_read(tmp_path: Path) -> None:
    source = tmp_path / "saved.txt"
    source.write_bytes(b"\xef\xbb\xbf" + (MTREE / "virt-gicv3-kvm-flat.txt").read_bytes())
    result = invoke("import", "qemu-mtree", str(source))
    assert result.exit_code == 0
    assert "arch: arm64" in result.stdout.splitlines()


def test_an_output_that_cannot_be_written_is_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "vm.yaml"
    result = invoke("import", "dtb", str(DTB / "qemu-virt-gicv3.dtb"), "-o", str(out))
    assert result.exit_code == 2
    assert f"cannot write {out}" in result.stderr


def test_notes_and_names_with_characters_yaml_refuses_still_load(tmp_path: Path) -> None:
    from gpa_plan.layout.loader import load_text
    from gpa_plan.layout.validate import validate_layout
    from gpa_plan.plan.emit import to_yaml

    odd = "u\x7fart\u2028x\ufeff\x85"
    document = {
        "layout": 1,
        "name": odd,
        "arch": "arm64",
        "memslots": [{"name": odd, "base": 0, "size": 0x1000}],
    }
    text = to_yaml(document, [f"skipped {odd}"], f"src{odd}", made_by="Imported")
    layout = validate_layout(load_text(text, "odd.yaml"))
    assert layout.name == odd and layout.memslots[0].name == odd
    assert text.splitlines()[1] == "# skipped u\\x7fart\\u2028x\\ufeff\\x85"


def test_page_size_sets_the_host_page_for_mtree_and_is_a_usage_error_for_dtb(
    tmp_path: Path,
) -> None:
    out = tmp_path / "virt.yaml"
    source = MTREE / "virt-gicv3-kvm-flat.txt"
    result = invoke("import", "qemu-mtree", str(source), "--page-size", "64K", "-o", str(out))
    assert result.exit_code == 0
    assert yaml.safe_load(out.read_text())["page_size"] == 0x1_0000
    assert errors_of(out) == []
    bad = invoke("import", "qemu-mtree", str(source), "--page-size", "lots")
    assert bad.exit_code == 2 and "--page-size" in bad.stderr
    refused = invoke("import", "dtb", str(DTB / "qemu-virt-gicv3.dtb"), "--page-size", "64K")
    assert refused.exit_code == 2
    assert "--page-size is for qemu-mtree" in refused.stderr


@pytest.mark.parametrize("size", ["3K", "0", "2K", "12K", "0x1001"])
def test_a_page_size_that_is_no_page_is_a_usage_error(tmp_path: Path, size: str) -> None:
    out = tmp_path / "virt.yaml"
    source = MTREE / "virt-gicv3-kvm-flat.txt"
    result = invoke("import", "qemu-mtree", str(source), "--page-size", size, "-o", str(out))
    assert result.exit_code == 2
    assert "Invalid value for --page-size: host page size 0x" in result.stderr
    assert "is not a power of two of at least 4 KiB (4K, 16K, 64K ...)" in result.stderr
    assert not out.exists()


def test_an_error_in_standard_input_is_located_as_check_locates_it() -> None:
    result = invoke("import", "qemu-mtree", "-", stdin=b"hello\n")
    assert result.exit_code == 1
    assert result.stderr.startswith("<stdin>:1:1: error[import] ")
    check = invoke("check", "-", stdin=b"layout: 1\narch: aarch64\n")
    assert check.stdout.startswith("<stdin>:2:7: error[schema] ")
