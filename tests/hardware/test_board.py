"""On a board at --port (real, or the port `edgeladder sim board` prints): deploy, then run.

Marked ``hardware``: without ``pytest --port PORT [--board NAME]`` these are skipped, and the
summary says why (edgeladder_sim.fixtures.hardware). They ship the real digits build
(tests/conftest.py's ``digits_build``), run the tiny tier on the board through the raw REPL
and compare its int8 output with the build's golden vectors (LiteRT), byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeladder.device.deploy import deploy
from edgeladder.device.deploy.transport import Board

pytestmark = pytest.mark.hardware

TASK = Path(__file__).resolve().parents[2] / "models" / "digits"
BANNER = "edgeladder ladder"  # what firmware/main.py prints once ladder imports

RUN_ON_BOARD = """\
import json, ladder
c = json.load(open('/ladder.json'))
m = ladder.Model.load(c['model'])
out = []
for x in %r:
    m.set_input(x)
    m.invoke()
    out.append(list(m.output.data))
print(json.dumps({'out': out, 'labels': c['labels']}))
"""


def test_deploy_then_the_board_answers_like_the_build(hardware_port, hardware_board, digits_build):
    first = deploy(hardware_port, TASK, hardware_board, build_dir=digits_build.out)
    assert BANNER in first.boot_log, first.boot_log  # main.py ran after the soft reset
    assert "/models/digits_tiny.ldr" in {p for p, _ in first.copied} | set(first.unchanged)

    golden = json.loads((Path(digits_build.out) / "tiny" / "golden.json").read_text())
    inputs = golden["inputs"][:4]
    board = Board(hardware_port)
    try:
        board.enter()
        got = json.loads(board.exec(RUN_ON_BOARD % (inputs,)))
    finally:
        board.close()
    assert got["out"] == golden["outputs"][: len(inputs)]
    assert got["labels"] == [str(n) for n in range(10)]

    again = deploy(hardware_port, TASK, hardware_board, build_dir=digits_build.out)
    assert again.copied == [] and again.removed == []  # the board kept what it was sent
