"""The unmodified mpremote against a virtual board's pty, as against a real ESP32."""

from __future__ import annotations

import hashlib
import os

import pytest

SHA_ON_BOARD = (
    "import hashlib, binascii\n"
    "def sha(p):\n"
    "    h = hashlib.sha256()\n"
    "    with open(p, 'rb') as f:\n"
    "        while True:\n"
    "            b = f.read(512)\n"
    "            if not b:\n"
    "                break\n"
    "            h.update(b)\n"
    "    return binascii.hexlify(h.digest()).decode()\n"
)


@pytest.fixture
def board(sim_board_factory):
    sim = sim_board_factory()
    sim.board.wait_booted(20)
    return sim


def test_exec_prints_output(board):
    assert board.mpremote("exec", "print(6 * 7)").stdout == "42\n"


def test_exec_reports_the_exception(board):
    result = board.mpremote("exec", "raise ValueError('bad input')", check=False)
    assert result.returncode != 0
    assert "ValueError: bad input" in result.stdout + result.stderr


def test_run_streams_a_local_script(board, tmp_path):
    script = tmp_path / "count.py"
    script.write_text(
        "import time\nfor i in range(3):\n    print('tick', i)\n    time.sleep_ms(50)\n"
    )
    assert board.mpremote("run", str(script)).stdout == "tick 0\ntick 1\ntick 2\n"


def test_copied_files_hash_the_same_on_the_board(board, tmp_path):
    files = {
        "small.py": b"print('hello')\n",
        "blob.bin": os.urandom(50_000),  # every byte value, several raw-paste windows
        "ctrl.bin": bytes(range(32)) * 40,  # Ctrl-A..Ctrl-E, SLIP bytes: data, not commands
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        board.mpremote("fs", "cp", str(tmp_path / name), f":{name}")
    listing = board.mpremote("fs", "ls").stdout
    for name, data in files.items():
        assert f"{len(data)} {name}" in " ".join(listing.split())
    code = SHA_ON_BOARD + "".join(f"print(sha({n!r}))\n" for n in files)
    got = board.mpremote("exec", code).stdout.split()
    assert got == [hashlib.sha256(d).hexdigest() for d in files.values()]
    assert board.mpremote("fs", "cat", ":small.py").stdout == "print('hello')\n"


def test_rm_removes_the_file(board, tmp_path):
    (tmp_path / "gone.py").write_text("x = 1\n")
    board.mpremote("fs", "cp", str(tmp_path / "gone.py"), ":gone.py")
    board.mpremote("fs", "rm", ":gone.py")
    assert "gone.py" not in board.mpremote("fs", "ls").stdout


def test_soft_reset_restarts_and_files_persist(board, tmp_path):
    (tmp_path / "keep.py").write_text("VALUE = 7\n")
    board.mpremote("fs", "cp", str(tmp_path / "keep.py"), ":keep.py")
    board.mpremote("exec", "marker = 1")
    boots = board.board.boots
    board.mpremote("soft-reset")
    assert board.board.boots == boots + 1
    assert b"MPY: soft reboot\r\n" in board.board.output()
    # a fresh VM: the old globals are gone, the flash is not
    out = board.mpremote(
        "resume", "exec", "print('marker' in globals())\nimport keep\nprint(keep.VALUE)"
    ).stdout
    assert out == "False\n7\n"


def test_reset_is_a_hard_reset_through_boot_py_and_main_py(sim_board_factory, tmp_path):
    sim = sim_board_factory(
        files={"boot.py": b"print('boot.py ran')\n", "main.py": b"print('main.py ran')\n"}
    )
    sim.board.wait_booted(20)
    sim.mpremote("exec", "marker = 1")
    boots, start = sim.board.boots, len(sim.board.output())
    sim.mpremote("reset")  # machine.reset(), 100 ms after mpremote has let go of the port
    end = sim.board.wait_output(b"main.py ran", 20, start=start)
    # mpremote soft-resets as it enters the raw REPL; what follows its command is a hard reset
    after = sim.board.output()[start:end].rsplit(b"raw REPL", 1)[1]
    assert after.index(b"boot.py ran") < after.index(b"main.py ran")
    assert b"MPY: soft reboot" not in after
    sim.board.wait_booted(20)
    assert sim.board.boots == boots + 2 and sim.board.mode == "repl"
    # the same port, a fresh VM: the old globals are gone
    assert sim.mpremote("exec", "print('marker' in globals())").stdout == "False\n"
    # machine.reset() from a running main.py resets too (once: the flag file says so)
    (tmp_path / "main.py").write_text(
        "import os\n"
        "print('main.py ran')\n"
        "if 'again' not in os.listdir():\n"
        "    open('again', 'w').close()\n"
        "    import machine\n"
        "    machine.reset()\n"
        "print('after the reset')\n"
    )
    sim.mpremote("fs", "cp", str(tmp_path / "main.py"), ":main.py")
    start = len(sim.board.output())
    sim.mpremote("reset")
    sim.board.wait_output(b"after the reset", 30, start=start)
    assert sim.board.output()[start:].count(b"main.py ran") == 2
    sim.board.wait_booted(20)
    assert sim.mpremote("exec", "print(6 * 7)").stdout == "42\n"


def test_resume_keeps_the_session(board):
    board.mpremote("exec", "kept = 'yes'")
    assert board.mpremote("resume", "exec", "print(kept)").stdout == "yes\n"


def test_ctrl_c_interrupts_a_running_main_py(sim_board_factory):
    sim = sim_board_factory(
        files={"main.py": b"print('main running')\nwhile True:\n    pass\n"}, boot=True
    )
    sim.board.wait_output(b"main running", 20)
    # mpremote's first move is Ctrl-C; a busy main.py must yield the raw REPL to it
    assert sim.mpremote("exec", "print('got the REPL')").stdout == "got the REPL\n"
    assert b"KeyboardInterrupt" in sim.board.output()


def test_ctrl_c_interrupts_code_left_running(board):
    board.mpremote("exec", "--no-follow", "while True:\n    pass\n")
    assert board.mpremote("exec", "print('free again')").stdout == "free again\n"


def test_mount_exposes_a_local_folder(board, tmp_path):
    (tmp_path / "helper.py").write_text("print('from host', 6 * 7)\n")
    out = board.mpremote("mount", str(tmp_path), "exec", "import helper").stdout
    assert "from host 42" in out


def test_the_port_is_raw(board):
    # no "\r\n" -> "\r\r\n" translation (mpremote's raw REPL handshake depends on it)
    board.mpremote("exec", "pass")
    assert b"\r\r\n" not in board.board.output()
