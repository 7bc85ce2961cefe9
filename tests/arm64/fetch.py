"""Fetch the Debian 12 arm64 packages the arm64 test machine boots, into a cache directory.

    python3 tests/arm64/fetch.py [--cache DIR]

The cache (default /var/cache/gpa-plan-arm64, or $GPA_PLAN_ARM64_CACHE) receives the .deb
files under ``debs/``, the userland the initramfs is made of under ``root/`` (``dpkg-deb -x``
of every package but the kernels), each kernel's image under ``kernels/<series>/`` and a
``manifest.json`` naming them. The kernels are resolved through their metapackages each run,
so a kernel update in the archive is picked up; nothing is fetched again while the cache holds
the current versions. It needs root (``dpkg --add-architecture arm64``, ``apt-get``) on Debian
12, and uses only the standard library so that it runs before the project is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

CACHE_ENV = "GPA_PLAN_ARM64_CACHE"
DEFAULT_CACHE = Path("/var/cache/gpa-plan-arm64")
MANIFEST = "manifest.json"

# Kernel series -> the metapackage whose Depends names the current image package.
KERNEL_METAPACKAGES = {
    "6.1": "linux-image-cloud-arm64",
    "6.12": "linux-image-6.12-cloud-arm64",
}
# The userland: Python with json, ctypes (_ctypes needs libffi8) and mmap, and the libraries
# the interpreter links (libc6, libm in it, zlib, expat).
USERLAND_PACKAGES = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libffi8",
    "libc6",
    "zlib1g",
    "libexpat1",
)
ARCH = "arm64"
# Downloading into a directory that apt's unprivileged sandbox user cannot write is fine for
# root; this keeps apt from warning about it.
APT_OPTIONS = ("-q", "-o", "APT::Sandbox::User=root")


class FetchError(Exception):
    """The packages could not be fetched; the message says why and what to do."""


def cache_dir() -> Path:
    """The cache directory: $GPA_PLAN_ARM64_CACHE, else /var/cache/gpa-plan-arm64."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def _run(args: list[str]) -> str:
    try:
        done = subprocess.run(args, check=False, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise FetchError(f"{args[0]} is not installed: this needs Debian's dpkg and apt") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise FetchError(f"{' '.join(args)} failed: {' / '.join(tail)}")
    return done.stdout


def ensure_arm64_architecture() -> bool:
    """Add arm64 to dpkg's foreign architectures; True when it was not there (lists stale)."""
    if ARCH in _run(["dpkg", "--print-foreign-architectures"]).split():
        return False
    _run(["dpkg", "--add-architecture", ARCH])
    return True


def apt_update() -> None:
    _run(["apt-get", *APT_OPTIONS, "update"])


def candidates(packages: list[str]) -> dict[str, dict[str, str]]:
    """Each package's candidate stanza (``apt-cache show --no-all-versions``), in one call."""
    out = _run(["apt-cache", "show", "--no-all-versions", *(f"{p}:{ARCH}" for p in packages)])
    stanzas: dict[str, dict[str, str]] = {}
    for block in out.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", block, re.MULTILINE))
        if "Package" in fields:
            stanzas[fields["Package"]] = fields
    for package in packages:
        if package not in stanzas:
            raise FetchError(f"{package}:{ARCH} has no candidate version; run apt-get update")
    return stanzas


def kernel_package(stanza: dict[str, str]) -> str:
    """The image package a kernel metapackage's candidate depends on."""
    names = re.findall(r"(linux-image-[^\s,(|]+)", stanza.get("Depends", ""))
    if not names:
        raise FetchError(f"{stanza['Package']}:{ARCH} names no linux-image package")
    return names[0]


def deb_name(package: str, version: str) -> str:
    """The file name apt-get download gives (an epoch's colon is written %3a)."""
    return f"{package}_{version.replace(':', '%3a')}_{ARCH}.deb"


def download(packages: dict[str, str], debs: Path) -> dict[str, Path]:
    """Download every package (name -> version) not yet in ``debs``; their files by name."""
    debs.mkdir(parents=True, exist_ok=True)
    files = {name: debs / deb_name(name, version) for name, version in packages.items()}
    missing = [
        f"{name}:{ARCH}={packages[name]}" for name, path in files.items() if not path.exists()
    ]
    if missing:
        args = ["apt-get", *APT_OPTIONS, "download", *missing]
        done = subprocess.run(args, cwd=debs, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            raise FetchError(f"apt-get download failed: {' / '.join(tail)}")
    for path in files.values():
        if not path.exists():
            raise FetchError(f"apt-get download did not write {path.name}")
    for stale in set(debs.glob("*.deb")) - set(files.values()):
        stale.unlink()  # a version Debian has since replaced
    return files


def extract(deb: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(into)])


def resolve() -> tuple[dict[str, str], dict[str, str]]:
    """(every package to fetch -> its candidate version, kernel series -> image package)."""
    metas = candidates(list(KERNEL_METAPACKAGES.values()))
    kernels = {s: kernel_package(metas[meta]) for s, meta in KERNEL_METAPACKAGES.items()}
    names = [*kernels.values(), *USERLAND_PACKAGES]
    stanzas = candidates(names)
    return {name: stanzas[name]["Version"] for name in names}, kernels


def _current(manifest: dict[str, object], versions: dict[str, str]) -> bool:
    kernels = manifest.get("kernels")
    return (
        manifest.get("versions") == versions
        and Path(str(manifest.get("root"))).is_dir()
        and isinstance(kernels, dict)
        and all(Path(k["image"]).is_file() for k in kernels.values())
    )


def fetch(cache: Path) -> dict[str, object]:
    """Bring the cache up to date and return its manifest (also written to manifest.json)."""
    if shutil.which("dpkg") is None or shutil.which("apt-get") is None:
        raise FetchError("dpkg and apt-get are needed (Debian 12)")
    if os.geteuid() != 0:
        raise FetchError("dpkg --add-architecture and apt-get need root: run it as root")
    if ensure_arm64_architecture():
        apt_update()
    try:
        versions, kernel_packages = resolve()
        files = download(versions, cache / "debs")
    except FetchError:
        # Stale package lists name versions the archive no longer has: update once, retry.
        apt_update()
        versions, kernel_packages = resolve()
        files = download(versions, cache / "debs")

    manifest_path = cache / MANIFEST
    old: dict[str, object] = {}
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
    if _current(old, versions):
        return old

    root = cache / "root"
    shutil.rmtree(root, ignore_errors=True)
    for name in USERLAND_PACKAGES:
        extract(files[name], root)
    kernels: dict[str, dict[str, str]] = {}
    for series, package in kernel_packages.items():
        tree = cache / "kernels" / series
        shutil.rmtree(tree, ignore_errors=True)
        extract(files[package], tree)
        images = sorted((tree / "boot").glob("vmlinuz-*"))
        if not images:
            raise FetchError(f"{package} holds no /boot/vmlinuz-*")
        release = images[0].name.removeprefix("vmlinuz-")
        image = tree / "vmlinuz"
        images[0].rename(image)
        # Only the image is needed; the modules are not (CONFIG_KVM=y, the initramfs has none).
        for child in tree.iterdir():
            if child != image:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        kernels[series] = {"package": package, "release": release, "image": str(image)}
    manifest: dict[str, object] = {"versions": versions, "root": str(root), "kernels": kernels}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache", type=Path, default=None, help=f"default: ${CACHE_ENV} or {DEFAULT_CACHE}"
    )
    args = parser.parse_args(argv)
    cache = args.cache or cache_dir()
    try:
        manifest = fetch(cache)
    except FetchError as exc:
        print(f"fetch: {exc}", file=sys.stderr)
        return 1
    kernels = manifest["kernels"]
    assert isinstance(kernels, dict)
    for series, kernel in kernels.items():
        print(f"{series}: {kernel['release']} ({kernel['image']})")
    print(f"userland: {manifest['root']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
