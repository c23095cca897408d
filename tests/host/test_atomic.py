"""util.atomic: a file is replaced whole, and what is not a regular file is never replaced."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from edgeladder.errors import EdgeladderError
from edgeladder.util import atomic


def test_a_file_is_replaced_whole(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic.write_bytes(path, b"old")
    atomic.write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]  # no temp file left


def test_a_fifo_is_written_into_not_replaced(tmp_path):
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    atomic.write_bytes(fifo, b"through the pipe")
    reader.join(10)
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still the pipe, not a file renamed over it


def test_a_full_device_names_the_file():
    with pytest.raises(OSError) as e:
        atomic.write_bytes("/dev/full", b"x")
    assert e.value.filename == "/dev/full" and stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_an_output_folder_that_is_a_file_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    with pytest.raises(EdgeladderError, match="afile: is not a folder"):
        atomic.write_text(afile / "x.txt", "x")
    with pytest.raises(EdgeladderError, match="afile: is not a folder"), atomic.staged_dir(afile):
        pass
    assert afile.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["afile"]
