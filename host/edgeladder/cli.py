"""The ``edgeladder`` command line: parsing only.

Subcommands live in ``edgeladder.commands`` and load lazily, so ``edgeladder --help`` stays
fast although ``build`` imports TensorFlow. Other packages add commands through the
``edgeladder.commands`` entry-point group: the simulator adds ``sim`` and ``demo`` that way, so
the host never imports the simulator (the dependency goes simulator -> host only). Every
:class:`EdgeladderError` is translated here, once, into a one-line ``error: ...`` on stderr and
exit status 1.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from importlib import metadata

import click

from edgeladder import __version__
from edgeladder.errors import EdgeladderError

# name -> "module:attribute"; adding a command means adding a module and one line here.
COMMANDS: dict[str, str] = {
    "build": "edgeladder.commands.build:build",
    "inspect": "edgeladder.commands.inspect:inspect",
    "convert": "edgeladder.commands.convert:convert",
    "compile": "edgeladder.commands.compile:compile",
    "select-hardware": "edgeladder.commands.hardware:select_hardware",
    "fit": "edgeladder.commands.hardware:fit",
    "console": "edgeladder.commands.console:console",
    "flash": "edgeladder.commands.flash:flash",
    "deploy": "edgeladder.commands.deploy:deploy",
    "calibrate": "edgeladder.commands.calibrate:calibrate",
    "evaluate": "edgeladder.commands.evaluate:evaluate",
    "serve": "edgeladder.commands.serve:serve",
}

_HELP = {
    "build": "Train, distil, prune and quantize a task's tiers; write artifacts and a report.",
    "inspect": "Show a .tflite model's ops, tensors, quantization and MACs.",
    "convert": "Export a .tflite model as C arrays or a MicroPython module.",
    "compile": "Compile an int8 .tflite model into the board's model file (.ldr).",
    "select-hardware": "Recommend a board for a tier from latency, model size, power, streams.",
    "fit": "Check that a model fits a device board's heap and flash; estimate its latency.",
    "console": "Stream what a board prints on its serial port.",
    "flash": "Write firmware to a real or virtual board with esptool, verify, reset.",
    "deploy": "Copy changed firmware (.mpy), a task's device model and config to a board.",
    "calibrate": "Fit the ladder's gates and thresholds on validation data; write ladder.json.",
    "evaluate": "Report the calibrated ladder on the test split, with confidence intervals.",
    "serve": "Serve a remote ladder stage (gateway/cloud) with LiteRT over MQTT or serial.",
}


PLUGIN_GROUP = "edgeladder.commands"


def _plugins() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=PLUGIN_GROUP)}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(_plugins()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module, attr = COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        plugin = _plugins().get(name)
        return plugin.load() if plugin is not None else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help without importing the built-in command modules; a plugin's command module
        # is imported for its help line (plugins keep their imports inside the command body).
        rows = []
        for name in self.list_commands(ctx):
            if name in _HELP:
                rows.append((name, _HELP[name]))
            else:
                cmd = self.get_command(ctx, name)
                rows.append((name, cmd.get_short_help_str(limit=80) if cmd else ""))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeladder")
def edgeladder() -> None:
    """Tiered edge inference for fleets of microcontrollers.

    Tiny int8 models decide on ESP32 boards under MicroPython; uncertain inputs climb a
    ladder of larger models on a gateway or in the cloud.
    """


def main(argv: list[str] | None = None) -> int:
    import errno
    import os

    # A full disk, a closed pipe (`| head`), /dev/full: writing the output failed.
    output_errors = {errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG}

    def stdout_file() -> tuple[int, int] | None:
        try:
            st = os.fstat(sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            return None
        return st.st_dev, st.st_ino

    stdout_at_start = stdout_file()
    try:
        # Without standalone mode click returns what ctx.exit(n) was given instead of exiting.
        rv = edgeladder.main(args=argv, prog_name="edgeladder", standalone_mode=False)
        # What is still buffered is written here, where a failure can be reported, not at exit.
        sys.stdout.flush()
    except EdgeladderError as e:
        click.echo(f"error: {e}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except (OSError, SystemExit) as e:
        if isinstance(e, SystemExit):
            # Both swallow an EPIPE and exit quietly: click wraps stdout and stderr, rich puts
            # /dev/null under stdout's file descriptor.
            if type(sys.stdout).__name__ == "_PacifyFlushWrapper":
                sys.stdout, sys.stderr = sys.stdout.wrapped, sys.stderr.wrapped
            elif e.code != 1 or stdout_file() == stdout_at_start:
                raise
            e = OSError(errno.EPIPE, os.strerror(errno.EPIPE))
        if e.errno not in output_errors:
            raise
        where = e.filename if e.filename is not None else "standard output"
        click.echo(f"error: cannot write to {where}: {e.strerror or e}", err=True)
        # The interpreter flushes stdout again at exit: let that land nowhere, not in a traceback.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
