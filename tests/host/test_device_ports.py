"""The device layer's one port check and one set of port errors, and flash's pure parts.

`flash`, `deploy` and `console` meet the same port failures through different tools (esptool,
mpremote, pyserial); each must end in the same one-line message. Nothing here needs a board:
refused addresses are loopback ports that nobody listens on.
"""

from __future__ import annotations

import os
import pty
import socket
from pathlib import Path

import pytest

from edgeladder.cli import main
from edgeladder.device import flash, ports
from edgeladder.device.deploy.transport import Board

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def refused_url():
    """``rfc2217://127.0.0.1:N`` where N is bound but not listening: connecting is refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield f"rfc2217://127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


def _one_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- the check before any tool opens the port ----------------------------------------------


@pytest.mark.parametrize(
    ("port", "says"),
    [
        ("/dev/ttyNOPE9", "does not exist"),
        ("", "no serial port given"),
        ("  ", "no serial port given"),
        ("/tmp", "is a folder, not a serial port"),
    ],
)
def test_check_port_refuses_what_cannot_be_a_port(port, says):
    with pytest.raises(ports.PortError, match=says):
        ports.check_port(port)


def test_urls_and_ptys_pass_the_check():
    master, slave = pty.openpty()
    try:
        ports.check_port(os.ttyname(slave))
        assert not ports.has_reset_lines(os.ttyname(slave))  # a virtual board's pty
    finally:
        os.close(master)
        os.close(slave)
    for url in ("rfc2217://127.0.0.1:1", "socket://h:2", "RFC2217://h:3"):
        ports.check_port(url)
        assert ports.is_url(url) and ports.has_reset_lines(url)


# --- translating a failure to open, whoever wrapped it -------------------------------------


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Could not open port rfc2217://h:1: [Errno 111] Connection refused", "nothing answers"),
        ("[Errno 110] Connection timed out", "nothing answers"),
        ("could not open port socket://10.0.0.9:1: [Errno 113] No route to host", "nothing answer"),
        ("Could not open port rfc2217://x.invalid:1: [Errno -2] Name or service not known", "host"),
        ("Could not exclusively lock port /dev/pts/3: [Errno 11] Resource temp", "is busy"),
        ("could not open port /dev/ttyUSB0: [Errno 16] Device or resource busy", "is busy"),
        ("could not open port /dev/ttyUSB0: [Errno 13] Permission denied", "dialout"),
        ("could not open port /dev/x: [Errno 2] No such file or directory", "does not exist"),
        ("Could not configure port: (25, 'Inappropriate ioctl for device')", "not a serial port"),
        ("invalid URL, protocol 'foo' not known", "unknown URL scheme"),
        ('expected a string in the form "rfc2217://<host>:<port>"', "not a valid address"),
    ],
)
def test_open_errors_are_named_by_what_happened(text, says):
    err = ports.open_error("PORT", OSError(text))
    assert isinstance(err, ports.PortError) and says in str(err)
    assert "\n" not in str(err)


def test_a_busy_message_is_never_given_where_nothing_listens():
    err = ports.open_error("rfc2217://127.0.0.1:1", OSError("[Errno 111] Connection refused"))
    assert "close the program" not in str(err)


def test_board_not_answering_text_is_not_a_port_error():
    # esptool's "Timed out waiting for packet header" is the board's silence, not the port's
    assert ports.open_error("P", OSError("Timed out waiting for packet header")) is None


# --- the same message from every command ----------------------------------------------------


def test_deploy_to_an_address_where_nothing_listens(capsys, tmp_path, refused_url):
    (tmp_path / "task.json").write_text("{}")  # a build that passes the pre-port check
    argv = ["deploy", "--port", refused_url, str(REPO / "models" / "digits")]
    line = _one_error(capsys, [*argv, "--build", str(tmp_path)])
    assert f"nothing answers at {refused_url}" in line
    assert "close the program" not in line


@pytest.mark.parametrize("scheme", ["rfc2217", "socket"])
def test_every_tool_says_nothing_answers_there(capsys, tmp_path, refused_url, scheme):
    url = refused_url.replace("rfc2217", scheme)
    with pytest.raises(ports.PortError, match=f"nothing answers at {url}"):
        Board(url)
    fw = tmp_path / "fw.bin"
    fw.write_bytes(_image("esp32"))
    flash_line = _one_error(capsys, ["flash", "--port", url, "--firmware", str(fw)])
    console_line = _one_error(capsys, ["console", url, "--seconds", "0.1"])
    for line in (flash_line, console_line):
        assert f"nothing answers at {url}" in line and "close the program" not in line


def test_a_missing_port_reads_the_same_for_flash_deploy_and_console(capsys, tmp_path):
    (tmp_path / "task.json").write_text("{}")
    fw = tmp_path / "fw.bin"
    fw.write_bytes(_image("esp32"))
    port = "/dev/ttyNOPE9"
    lines = {
        _one_error(capsys, ["flash", "--port", port, "--firmware", str(fw)]),
        _one_error(capsys, ["deploy", "--port", port, str(REPO), "--build", str(tmp_path)]),
        _one_error(capsys, ["console", port, "--seconds", "0.1"]),
    }
    assert len(lines) == 1 and "does not exist" in lines.pop()


def test_a_held_pty_is_busy_for_deploy_too():
    import fcntl

    master, slave = pty.openpty()
    name = os.ttyname(slave)
    fd = os.open(name, os.O_RDWR | os.O_NOCTTY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # pyserial's exclusive lock is flock
        with pytest.raises(ports.PortError, match="is busy"):
            Board(name)
    finally:
        for f in (fd, slave, master):
            os.close(f)


# --- flash: the image checks and esptool's errors -------------------------------------------


def _image(chip: str, size: int = 64) -> bytes:
    chip_id = {v: k for k, v in flash.chip_ids().items()}[chip]
    head = bytes([0xE9, 1, 2, 0x20]) + bytes(8) + chip_id.to_bytes(2, "little")
    return head + bytes(size - len(head))


def test_an_esp_image_for_the_chip_passes():
    flash.check_image(_image("esp32"), "esp32")


@pytest.mark.parametrize(
    ("data", "error", "says"),
    [
        (b"\x7fELF" + bytes(60), flash.FirmwareError, "first byte 7f, expected e9"),
        (b"", flash.FirmwareError, "first byte none"),
        (b"\xe9" * 10, flash.FirmwareError, "not an ESP firmware image"),
        (_image("esp32s3"), flash.WrongChipError, "built for esp32s3, but the board's chip is"),
    ],
)
def test_images_that_are_not_for_the_chip_are_refused(data, error, says):
    with pytest.raises(error, match=says):
        flash.check_image(data, "esp32", "fw.bin")


def test_an_image_larger_than_the_flash_is_refused_before_the_port(tmp_path):
    fw = tmp_path / "big.bin"
    fw.write_bytes(_image("esp32", 5 * 1024 * 1024))
    with pytest.raises(flash.FirmwareError, match="do not fit"):
        flash.flash_firmware("/dev/ttyNOPE9", fw, "esp32")  # the port is never looked at


@pytest.mark.parametrize(
    ("text", "error", "says"),
    [
        ("Failed to connect to ESP32: No serial data received.", ports.BoardNotAnsweringError,
         "no ESP bootloader answers on P"),
        ("Could not open port P: [Errno 111] Connection refused", ports.PortError,
         "nothing answers at P"),
        ("Could not exclusively lock port P: [Errno 11] Resource", ports.PortError, "is busy"),
        ("Wrong chip argument?", flash.WrongChipError, "use firmware and --board"),
        ("Timed out waiting for packet header\nmore", flash.FlashError,
         "flashing over P failed: Timed out waiting for packet header"),
    ],
)  # fmt: skip
def test_esptool_errors_become_one_line_of_the_right_kind(text, error, says):
    err = flash._translate(RuntimeError(text), "P", [])
    assert type(err) is error and says in str(err) and "\n" not in str(err)
