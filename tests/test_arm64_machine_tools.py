"""The arm64 test machine's tools, without booting it: the cpio writer, the kernel image
unpacking, the console parsing, the initramfs's module search and the package resolution."""

from __future__ import annotations

import ast
import base64
import gzip
import json
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from arm64 import fetch, initramfs, machine


def read_newc(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """(name, mode, body, (rdev major, minor)) of each entry, checking the format on the way."""
    entries = []
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmajor, rminor, namesize = (
            fields[1],
            fields[6],
            fields[9],
            fields[10],
            fields[11],
        )
        name_at = pos + 110
        name = data[name_at : name_at + namesize - 1].decode()
        assert data[name_at + namesize - 1] == 0
        body_at = (name_at + namesize + 3) & ~3
        body = data[body_at : body_at + size]
        pos = (body_at + size + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(data)
            return entries
        entries.append((name, mode, body, (rmajor, rminor)))


def test_cpio_holds_files_directories_symlinks_and_devices_in_newc_format() -> None:
    archive = initramfs.Cpio()
    archive.file("usr/bin/tool", b"#!x\n", 0o755)
    archive.symlink("lib/ld.so", "aarch64/ld.so")
    archive.char_device("dev/kvm", 10, 232)
    archive.file("usr/bin/tool", b"again")  # a name is written once
    entries = {name: (mode, body, rdev) for name, mode, body, rdev in read_newc(archive.finish())}
    assert list(entries) == ["usr", "usr/bin", "usr/bin/tool", "lib", "lib/ld.so", "dev", "dev/kvm"]
    assert entries["usr/bin/tool"] == (stat.S_IFREG | 0o755, b"#!x\n", (0, 0))
    assert entries["lib/ld.so"] == (stat.S_IFLNK | 0o777, b"aarch64/ld.so", (0, 0))
    assert entries["dev/kvm"] == (stat.S_IFCHR | 0o600, b"", (10, 232))
    assert entries["usr"][0] == stat.S_IFDIR | 0o755


def test_a_module_comes_with_bytecode_the_guest_python_accepts_without_its_mtime() -> None:
    archive = initramfs.Cpio()
    archive.module("probe/x.py", b"A = 1\n")
    names = {name: body for name, _, body, _ in read_newc(archive.finish())}
    assert names["probe/x.py"] == b"A = 1\n"
    pyc = names.get("probe/__pycache__/x.cpython-311.pyc")
    if sys.implementation.cache_tag != "cpython-311":
        assert pyc is None
        return
    assert pyc is not None
    assert pyc[4:8] == (1).to_bytes(4, "little")  # hash-based, not checked against the source


def test_imports_found_are_those_made_at_load_time_and_lazy_ones_only_when_asked() -> None:
    source = (
        "import json\nfrom .kvm import ioctl\nfrom . import plan\n"
        "class A:\n    import struct\n"
        "def f():\n    import zipfile\n"
    )
    assert initramfs.imports_of(source, "probe") == [
        "json", "probe.kvm", "probe.kvm.ioctl", "probe", "probe.plan", "struct",
    ]  # fmt: skip
    assert "zipfile" in initramfs.imports_of(source, "probe", lazy=True)


def test_imports_only_a_type_checker_makes_are_left_out_when_asked() -> None:
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import big\nelse:\n"
        "    import small\nif typing.TYPE_CHECKING:\n    import huge\n"
    )
    assert {"big", "huge", "small"} <= set(initramfs.imports_of(source, ""))
    found = initramfs.imports_of(source, "", typing=False)
    assert "small" in found and "big" not in found and "huge" not in found


def test_record_closure_is_what_the_session_loads_and_only_standard_library_beside() -> None:
    """The machine carries only the package modules `record_command` loads; they, in turn,
    must import nothing outside the standard library, which is all the machine has."""
    script = (
        "import sys; before = set(sys.modules); import gpa_plan.record.session as s; "
        "new = set(sys.modules) - before; "
        "print(sorted(m for m in new if m.split('.')[0] == 'gpa_plan')); "
        "print(sorted(m for m in new if m.split('.')[0] not in sys.stdlib_module_names "
        "and m.split('.')[0] != 'gpa_plan'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=initramfs.PACKAGE.parent,
    )
    loaded, outside = (ast.literal_eval(line) for line in done.stdout.splitlines())
    assert outside == []
    closure = initramfs.package_closure(initramfs.RECORD_MODULE)
    as_modules = {
        name[: -len("/__init__.py")] if name.endswith("/__init__.py") else name[:-3]
        for name in closure
    }
    assert {m.replace(".", "/") for m in loaded} == as_modules


def fake_userland(root: Path) -> None:
    """Just the files `initramfs.build` copies whatever the plans: the interpreter, the
    loader, the libraries, and a standard library of the modules imported, each empty."""
    for name in (initramfs.PYTHON, "lib/ld-linux-aarch64.so.1"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    for soname in initramfs.SONAMES:
        (root / initramfs.LIB_DIRS[0]).mkdir(parents=True, exist_ok=True)
        (root / initramfs.LIB_DIRS[0] / soname).write_bytes(b"")
    for module in ("runpy", "subprocess", "ctypes/__init__"):
        path = root / initramfs.STDLIB / f"{module}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")


def test_recordings_bring_the_record_package_and_runpy_and_plain_boots_do_not(
    tmp_path: Path,
) -> None:
    fake_userland(tmp_path)
    plain = {name for name, *_ in read_newc(initramfs.build(tmp_path, []))}
    records = [{"name": "r"}]
    archive = {
        n: body for n, _, body, _ in read_newc(initramfs.build(tmp_path, [], records=records))
    }
    assert not any(name.startswith("gpa_plan") for name in plain)
    assert "records.json" not in plain and f"{initramfs.STDLIB}/runpy.py" not in plain
    assert json.loads(archive["records.json"]) == records
    assert f"{initramfs.STDLIB}/runpy.py" in archive
    assert {"gpa_plan/record/session.py", "gpa_plan/record/ptrace.py"} <= set(archive)
    assert f"{initramfs.STDLIB}/subprocess.py" in archive  # what ptrace.py imports
    assert "gpa_plan/check/run.py" not in archive
    programs = {f"programs/{p.name}" for p in initramfs.PROGRAMS.glob("*.py")}
    assert programs and programs <= set(archive)
    assert not any(name.startswith("programs/") for name in plain)


def test_a_plain_kernel_image_is_booted_as_it_is(tmp_path: Path) -> None:
    image = tmp_path / "vmlinuz"
    image.write_bytes(b"MZ\0\0" + b"\0" * 60 + b"ARMd")
    assert machine.kernel_image(image, tmp_path) == image


def test_an_efi_zboot_image_is_unpacked_to_its_payload(tmp_path: Path) -> None:
    payload = b"arm64 Image " * 1000
    packed = gzip.compress(payload)
    header = bytearray(0x40)
    header[0:2] = b"MZ"
    header[4:8] = b"zimg"
    struct.pack_into("<II", header, 8, 0x40, len(packed))
    header[24:29] = b"gzip\0"
    zboot = tmp_path / "vmlinuz"
    zboot.write_bytes(bytes(header) + packed + b"\0" * 16)
    out = machine.kernel_image(zboot, tmp_path)
    assert out != zboot
    assert out.read_bytes() == payload


def test_an_efi_zboot_image_of_an_unknown_compression_says_which(tmp_path: Path) -> None:
    header = bytearray(0x40)
    header[0:2], header[4:8], header[24:28] = b"MZ", b"zimg", b"lz4\0"
    zboot = tmp_path / "vmlinuz"
    zboot.write_bytes(bytes(header))
    with pytest.raises(machine.BootError, match="'lz4'"):
        machine.kernel_image(zboot, tmp_path)


def console(payload: object) -> list[str]:
    data = base64.b64encode(json.dumps(payload).encode()).decode()
    half = len(data) // 2
    return [
        "[    0.1] booting",
        machine.BEGIN,
        machine.LINE + data[:half],
        "[    9.9] kvm [1]: a kernel message between two lines",
        machine.LINE + data[half:],
        machine.END,
        "reboot: Power down",
    ]


def test_console_results_are_read_between_the_markers_past_kernel_messages() -> None:
    payload = {"machine": {"release": "6.1"}, "results": [{"probes": []}]}
    assert machine.parse_console(console(payload)) == payload


def test_a_failed_init_is_reported_with_its_traceback() -> None:
    lines = ["x", machine.ERROR_BEGIN, "Traceback", "ImportError: no probe", machine.ERROR_END]
    with pytest.raises(machine.BootError, match=r"(?s)init failed.*ImportError: no probe"):
        machine.parse_console(lines)


def test_a_console_without_results_is_reported_with_its_last_lines() -> None:
    lines = [f"line {n}" for n in range(100)] + ["Kernel panic - not syncing"]
    with pytest.raises(machine.BootError, match=r"(?s)no results.*Kernel panic") as info:
        machine.parse_console(lines)
    assert "line 0\n" not in str(info.value)


def test_qemu_command_asks_for_el2_the_gic_and_the_kvm_mode() -> None:
    vhe = machine.command(Path("k"), Path("i"), 3, True)
    nvhe = machine.command(Path("k"), Path("i"), 2, False)
    assert "virt,virtualization=on,gic-version=3" in vhe
    assert "virt,virtualization=on,gic-version=2" in nvhe
    assert "kvm-arm.mode=nvhe" not in vhe[-1]
    assert nvhe[-1].endswith("kvm-arm.mode=nvhe")


def test_kernel_package_is_the_image_a_metapackage_depends_on() -> None:
    stanza = {
        "Package": "linux-image-6.12-cloud-arm64",
        "Depends": "linux-image-6.12.118+deb12-cloud-arm64 (= 6.12.118-1~deb12u1)",
    }
    assert fetch.kernel_package(stanza) == "linux-image-6.12.118+deb12-cloud-arm64"
    with pytest.raises(fetch.FetchError, match="names no linux-image package"):
        fetch.kernel_package({"Package": "linux-image-cloud-arm64", "Depends": "initramfs-tools"})


def test_deb_file_names_write_an_epoch_as_apt_does() -> None:
    assert fetch.deb_name("zlib1g", "1:1.2.13.dfsg-1") == "zlib1g_1%3a1.2.13.dfsg-1_arm64.deb"


def test_cache_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fetch.CACHE_ENV, "/tmp/elsewhere")
    assert fetch.cache_dir() == Path("/tmp/elsewhere")
    monkeypatch.delenv(fetch.CACHE_ENV)
    assert fetch.cache_dir() == fetch.DEFAULT_CACHE
