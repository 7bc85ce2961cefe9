"""Fixtures several test files share."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RECORD_DATA = Path(__file__).resolve().parent / "data" / "record"


@pytest.fixture(scope="session")
def vmm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/data/record/vmm.c compiled once (its warnings are errors); skips without a C
    compiler."""
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler (cc)")
    binary = tmp_path_factory.mktemp("vmm") / "vmm"
    subprocess.run(["cc", "-O1", "-Wall", "-Werror", "-o", str(binary),
                    str(RECORD_DATA / "vmm.c")], check=True, timeout=60)
    return binary
