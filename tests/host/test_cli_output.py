"""Output that cannot be written (a full disk, a closed pipe) ends in one line, for every command.

`edgeladder … > /dev/full` and `edgeladder … | true` (the reader gone) used to end in a
traceback, or silently: the CLI edge (cli.main) turns any write error on stdout into
`error: cannot write to standard output: …` and exit status 1, whatever printed (click, rich).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tflite_models


def _outputs(tmp: str) -> list[list[str]]:
    model = str(tflite_models.mlp_int8())
    return [
        ["--help"],
        ["--version"],
        ["inspect", "--help"],
        ["inspect", model],  # a rich table
        ["inspect", "--json", model],
        ["fit", model, "--board", "esp32"],
        ["compile", model, "-o", f"{tmp}/m.ldr"],
        ["select-hardware", "--latency-ms", "10", "--model-size-mb", "2", "--json"],
        ["calibrate", "--help"],
        ["sim", "--help"],
    ]


def _edgeladder(argv: list[str], stdout) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgeladder.cli", *argv],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return _outputs(str(tmp_path_factory.mktemp("out")))


@pytest.mark.parametrize("i", range(10))
def test_a_full_stdout_is_one_error_line(outputs, i):
    with open("/dev/full", "w") as full:
        p = _edgeladder(outputs[i], full)
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip() == "error: cannot write to standard output: No space left on device"


@pytest.mark.parametrize("i", range(10))
def test_a_closed_pipe_is_one_error_line(outputs, i):
    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write is EPIPE
    with os.fdopen(write, "w") as pipe:
        p = _edgeladder(outputs[i], pipe)
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip() == "error: cannot write to standard output: Broken pipe"


def test_an_output_file_on_a_full_device_is_named(tmp_path):
    p = _edgeladder(["compile", str(tflite_models.mlp_int8()), "-o", "/dev/full"], None)
    assert p.returncode == 1
    assert p.stderr.strip() == "error: cannot write to /dev/full: No space left on device"
