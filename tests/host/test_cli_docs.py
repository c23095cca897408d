"""docs/cli.md stays true: a section for every command, naming every one of its options."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from edgeladder.cli import edgeladder

DOC = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()


def _commands() -> list[tuple[str, click.Command]]:
    ctx = click.Context(edgeladder)
    out = []
    for name in edgeladder.list_commands(ctx):
        cmd = edgeladder.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            out += [(f"{name} {sub}", cmd.get_command(ctx, sub)) for sub in cmd.list_commands(ctx)]
        else:
            out.append((name, cmd))
    return out


def _section(name: str) -> str:
    m = re.search(rf"^## edgeladder {re.escape(name)}\n(.*?)(?=^## |\Z)", DOC, re.M | re.S)
    assert m, f"docs/cli.md has no section `## edgeladder {name}`"
    return m.group(1)


@pytest.mark.parametrize(
    ("name", "cmd"), _commands(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_command_and_option_is_documented(name, cmd):
    text = _section(name)
    for param in cmd.params:
        if isinstance(param, click.Option) and "--help" not in param.opts:
            longest = max(param.opts, key=len)
            assert re.search(rf"{re.escape(longest)}\b", text), (
                f"{name}: {longest} not in its section"
            )
