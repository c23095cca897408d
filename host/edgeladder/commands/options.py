"""Options that several commands share, declared once: the same name, type and help everywhere."""

from __future__ import annotations

from pathlib import Path

import click

FILE = click.Path(dir_okay=False, path_type=Path)
FOLDER = click.Path(file_okay=False, path_type=Path)


def json_option(what: str = "the result"):
    """``--json``: print ``what`` as JSON on stdout (the command's ``as_json`` parameter)."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON on stdout.")


def board_option(f):
    """``--board NAME``: a board file in boards/ (default esp32)."""
    return click.option(
        "--board", default="esp32", show_default=True, help="Board file name (boards/)."
    )(f)


def port_option(f):
    """``--port/-p PORT``: the serial port of a real or virtual board (required)."""
    return click.option(
        "--port",
        "-p",
        required=True,
        help="Serial port, a virtual board's pty, or rfc2217://HOST:PORT.",
    )(f)


def target_options(accuracy_help: str, escalation_help: str, accuracy_default: float | None):
    """``--target-accuracy DELTA`` and ``--max-escalation RATE``: what a calibration aims at."""

    def decorate(f):
        f = click.option(
            "--max-escalation", type=float, default=None, metavar="RATE", help=escalation_help
        )(f)
        return click.option(
            "--target-accuracy",
            type=float,
            default=accuracy_default,
            show_default=accuracy_default is not None,
            metavar="DELTA",
            help=accuracy_help,
        )(f)

    return decorate
