"""The one input reader: regular files only, bounded, never waiting on a FIFO."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from gpa_plan.inputs import InputError, open_input, read_input


def test_a_regular_file_and_a_symlink_to_it_are_read(tmp_path: Path) -> None:
    target = tmp_path / "layout.yaml"
    target.write_bytes(b"layout: 1\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    assert read_input(str(target)) == b"layout: 1\n"
    assert read_input(str(link)) == b"layout: 1\n"


def test_a_fifo_without_a_writer_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="a FIFO"):
        read_input(str(fifo))


def test_a_character_device_is_refused_before_it_is_read() -> None:
    with pytest.raises(InputError, match="a character device, not a regular file"):
        read_input("/dev/zero")


def test_a_socket_is_refused_as_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "layout.yaml"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()
    with pytest.raises(InputError) as refused:
        read_input(str(path))
    assert refused.value.reason == "it is a socket, not a regular file; give the path of a file"


def test_a_directory_and_a_missing_path_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="a directory"):
        read_input(str(tmp_path))
    with pytest.raises(InputError, match="no such file"):
        read_input(str(tmp_path / "absent.yaml"))


def test_content_beyond_the_limit_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 101)
    assert read_input(str(big), limit=101) == b"#" * 101
    with pytest.raises(InputError, match="larger than"):
        read_input(str(big), limit=100)


def test_a_file_whose_size_is_past_the_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as stream:
        stream.truncate(1 << 40)  # sparse: a terabyte that costs no disk

    def no_read(fd: int, size: int) -> bytes:
        raise AssertionError("read past the limit")

    monkeypatch.setattr("gpa_plan.inputs.os.read", no_read)
    with pytest.raises(InputError, match="larger than 16 MiB"):
        read_input(str(big))


def test_open_input_refuses_what_read_input_refuses_and_opens_a_file(tmp_path: Path) -> None:
    fifo = tmp_path / "guest.elf"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="a FIFO"):
        open_input(str(fifo))
    with pytest.raises(InputError, match="standard input is not read here"):
        open_input("-")
    target = tmp_path / "guest"
    target.write_bytes(b"\x7fELF")
    with open_input(str(target)) as stream:
        assert stream.read(2) == b"\x7fE"


def test_dash_is_standard_input_only_when_allowed() -> None:
    with pytest.raises(InputError, match=r"give the path of a file \(\./- for a file named -\)"):
        read_input("-")
