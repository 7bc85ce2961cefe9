"""Boot the arm64 test machine under QEMU (TCG, emulated EL2) and collect the probe's results.

    run_plans(plans, kernel="6.12", vhe=True, gic=3) -> Boot     # the cached packages
    run_plans(plans, records=[plan, ...]) -> Boot                # and those under `record`
    boot(kernel, initrd, gic=3, vhe=True, timeout=...) -> Boot   # any kernel and initramfs

QEMU's ``virt`` board with ``virtualization=on`` gives the guest kernel EL2, so its KVM works
(nested under TCG); ``-cpu max,pauth-impdef=on`` keeps pointer authentication but with QEMU's
cheap implementation-defined algorithm, about three times faster than the architected one.
``kvm-arm.mode=nvhe`` boots KVM in nVHE mode (the hypervisor at EL2, the kernel at EL1); without
it the kernel runs at EL2 itself (VHE). ``panic=-1`` with ``-no-reboot`` turns a kernel panic into
QEMU's exit instead of a hang.
"""

from __future__ import annotations

import base64
import gzip
import json
import lzma
import os
import selectors
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from . import fetch, initramfs

QEMU = "qemu-system-aarch64"
BEGIN = "=== gpa-plan arm64 results begin ==="
LINE = "gpa-plan-results:"
END = "=== gpa-plan arm64 results end ==="
ERROR_BEGIN = "=== gpa-plan arm64 init failed ==="
ERROR_END = "=== gpa-plan arm64 init failure end ==="
TAIL = 30
ENABLE_ENV = "GPA_PLAN_ARM64"
BOOT_TIMEOUT = 240.0
# One initramfs build at a time: CPython 3.11's parser state is not safe to share between
# threads ("AST constructor recursion depth mismatch").
_BUILD_LOCK = threading.Lock()


class BootError(Exception):
    """The machine did not report results; the message ends with the console's last lines."""


class Boot(NamedTuple):
    results: list[dict[str, object]]  # one per plan, in order
    machine: dict[str, object]  # release, kvm_log, init_started, plans_done (guest seconds)
    seconds: float  # host wall-clock seconds from QEMU's start to its exit
    console: list[str]
    # One per plan given as ``records``, in order: what `gpa-plan record` made of the probe
    # running it (init.py's record_all); None when no recording was asked for.
    recordings: list[dict[str, Any]] | None = None


def qemu_available() -> str | None:
    """None when QEMU can run here, else why not."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (Debian: apt-get install qemu-system-arm)"
    return None


def unavailable() -> str | None:
    """None when `run_plans` can boot here, else why not (for a test's skip)."""
    if os.environ.get(ENABLE_ENV, "1") == "0":
        return f"{ENABLE_ENV}=0: the arm64 machine boots are turned off"
    reason = qemu_available()
    if reason:
        return reason
    if not (fetch.cache_dir() / fetch.MANIFEST).is_file():
        return f"no arm64 packages in {fetch.cache_dir()}: run tests/arm64/fetch.py (as root)"
    return None


def run_plans(
    plans: list[dict[str, Any]],
    *,
    kernel: str = "6.12",
    vhe: bool = True,
    gic: int = 3,
    timeout: float = BOOT_TIMEOUT,
    records: list[dict[str, Any]] | None = None,
) -> Boot:
    """Boot Debian's ``kernel`` series (a key of fetch.KERNEL_METAPACKAGES) from the package
    cache with ``plans`` in its initramfs; ``Boot.results`` holds their results, in order.
    ``records`` are plans the probe runs again afterwards under `gpa-plan record`, in the
    same boot; ``Boot.recordings`` holds what was recorded. Safe to call from several threads
    at once (each boot is its own QEMU)."""
    manifest = json.loads((fetch.cache_dir() / fetch.MANIFEST).read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="gpa-plan-arm64-") as tmp:
        initrd = Path(tmp) / "initrd.cpio"
        with _BUILD_LOCK:
            initrd.write_bytes(initramfs.build(Path(manifest["root"]), plans, records=records))
        image = kernel_image(Path(manifest["kernels"][kernel]["image"]), Path(tmp))
        return boot(image, initrd, gic=gic, vhe=vhe, timeout=timeout)


# --- the kernel image ------------------------------------------------------------------------


def kernel_image(vmlinuz: Path, workdir: Path) -> Path:
    """A kernel image QEMU can load: ``vmlinuz`` itself, or the payload of an EFI zboot image.

    An EFI zboot image (drivers/firmware/efi/libstub/zboot-header.S) starts with "MZ", then
    "zimg", the payload's offset and size (le32) and the compression's name; QEMU 7.2 loads
    only a plain (or gzipped) arm64 Image, so the payload is inflated here.
    """
    with vmlinuz.open("rb") as f:
        head = f.read(64)
    if head[:2] != b"MZ" or head[4:8] != b"zimg":
        return vmlinuz
    offset, size = struct.unpack_from("<II", head, 8)
    compression = head[24:56].split(b"\0", 1)[0].decode()
    out = workdir / f"{vmlinuz.name}.Image"
    if out.exists():
        return out
    payload = vmlinuz.read_bytes()[offset : offset + size]
    if compression == "gzip":
        image = gzip.decompress(payload)
    elif compression in ("xz", "lzma"):
        image = lzma.decompress(payload)
    elif compression == "zstd" and shutil.which("zstd"):
        image = subprocess.run(
            ["zstd", "-dc"], input=payload, capture_output=True, check=True
        ).stdout
    else:
        raise BootError(
            f"{vmlinuz}: EFI zboot payload compressed with {compression!r}, not inflatable here"
        )
    out.write_bytes(image)
    return out


# --- the run ---------------------------------------------------------------------------------


def command(kernel: Path, initrd: Path, gic: int, vhe: bool) -> list[str]:
    append = "console=ttyAMA0 quiet panic=-1" + ("" if vhe else " kvm-arm.mode=nvhe")
    return [
        QEMU,
        "-M", f"virt,virtualization=on,gic-version={gic}",
        "-cpu", "max,pauth-impdef=on",
        "-accel", "tcg",
        "-smp", "1",
        "-m", "1G",
        "-nographic",
        "-no-reboot",
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", append,
    ]  # fmt: skip


def parse_console(lines: list[str]) -> dict[str, object]:
    """The payload the init printed between the markers; BootError when there is none."""
    if ERROR_BEGIN in lines:
        start = lines.index(ERROR_BEGIN) + 1
        end = lines.index(ERROR_END) if ERROR_END in lines else len(lines)
        raise BootError("the init failed:\n" + "\n".join(lines[start:end]))
    if BEGIN not in lines or END not in lines:
        raise BootError("no results on the console; its last lines:\n" + "\n".join(lines[-TAIL:]))
    body = lines[lines.index(BEGIN) + 1 : lines.index(END)]
    data = "".join(line[len(LINE) :] for line in body if line.startswith(LINE))
    payload: dict[str, object] = json.loads(base64.b64decode(data))
    return payload


def boot(
    kernel: Path, initrd: Path, *, gic: int = 3, vhe: bool = True, timeout: float = 300
) -> Boot:
    """Boot, wait for QEMU to exit (the init powers off) at most ``timeout`` seconds, parse."""
    args = command(kernel, initrd, gic, vhe)
    started = time.monotonic()
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    output = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                proc.kill()
                proc.wait()
                lines = output.decode(errors="replace").splitlines()
                raise BootError(
                    f"no exit within {timeout:.0f} s ({' '.join(args)}); console's last lines:\n"
                    + "\n".join(lines[-TAIL:])
                )
            if sel.select(min(left, 1.0)):
                chunk = proc.stdout.read()
                if chunk == b"":
                    break
                if chunk:
                    output += chunk
    proc.wait()
    seconds = time.monotonic() - started
    lines = output.decode(errors="replace").replace("\r", "").splitlines()
    payload = parse_console(lines)
    results = payload["results"]
    machine = payload["machine"]
    recordings = payload.get("recordings")
    assert isinstance(results, list) and isinstance(machine, dict)
    assert recordings is None or isinstance(recordings, list)
    return Boot(results, machine, seconds, lines, recordings)
