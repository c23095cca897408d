"""Hardware selection: which board runs a tier (``edgeladder.boards.fit`` checks that a model
fits a device board).

``select_hardware`` applies the selection rules we design from, in the issue's order (the
first rule that applies decides; latency comes first because it is the one requirement a
slower board cannot make up for):

1. latency < 10 ms: Coral USB if the model is < 5 MB, else Jetson Orin Nano;
2. offline: Raspberry Pi 5 under a 10 W power budget, else Jetson Orin Nano;
3. several streams (2 or more): Jetson AGX Orin;
4. otherwise: Raspberry Pi 5.

Each rule names its board first and then, in order, the boards to fall back on. Every
candidate then passes fit checks from its board file: its power (with its host's, for an
accessory) within ``power_w``, and the model within its ``max_model_mb``. The first candidate
that passes wins; each exclusion is a reason. When none passes, :class:`HardwareError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeladder.boards import registry as boards
from edgeladder.boards.registry import Board
from edgeladder.errors import EdgeladderError

__all__ = ["HardwareError", "Selection", "select_hardware"]


class HardwareError(EdgeladderError):
    """No board meets the needs, or the needs themselves are invalid."""


LATENCY_MS = 10.0  # a budget under this needs an accelerator
SMALL_MODEL_MB = 5.0  # under this the Coral's Edge TPU keeps the model on chip
OFFLINE_POWER_W = 10.0  # an offline site with a budget under this gets the Pi 5


@dataclass(frozen=True)
class Needs:
    latency_ms: float
    model_size_mb: float
    offline: bool
    power_w: float | None
    streams: int


@dataclass(frozen=True)
class Selection:
    board: str
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"board": self.board, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Rule:
    condition: str  # as the rule table says it
    applies: Callable[[Needs], bool]
    # -> candidates (first choice first), and why the rule picks the first one
    choose: Callable[[Needs], tuple[tuple[str, ...], str]]
    # why the rule does not apply, for the rules before the deciding one
    skip: Callable[[Needs], str]


def _title(name: str) -> str:
    return boards.get(name).title


def _latency(n: Needs) -> tuple[tuple[str, ...], str]:
    if n.model_size_mb < SMALL_MODEL_MB:
        why = (
            f"{n.latency_ms:g} ms needs an accelerator, and the model ({n.model_size_mb:g} MB)"
            f" is under {SMALL_MODEL_MB:g} MB, small enough for the Edge TPU's on-chip memory:"
            f" {_title('coral-usb')}"
        )
        return ("coral-usb", "jetson-orin-nano", "jetson-agx-orin"), why
    why = (
        f"{n.latency_ms:g} ms needs an accelerator, and the model ({n.model_size_mb:g} MB) is"
        f" not under {SMALL_MODEL_MB:g} MB, too large for the Edge TPU's on-chip memory:"
        f" {_title('jetson-orin-nano')}"
    )
    return ("jetson-orin-nano", "jetson-agx-orin"), why


def _offline(n: Needs) -> tuple[tuple[str, ...], str]:
    if n.power_w is not None and n.power_w < OFFLINE_POWER_W:
        why = f"the power budget ({n.power_w:g} W) is under {OFFLINE_POWER_W:g} W: {_title('rpi5')}"
        return ("rpi5",), why
    budget = "no power budget" if n.power_w is None else f"a {n.power_w:g} W power budget"
    why = f"{budget} (not under {OFFLINE_POWER_W:g} W) allows more: {_title('jetson-orin-nano')}"
    return ("jetson-orin-nano", "jetson-agx-orin", "rpi5"), why


def _streams(n: Needs) -> tuple[tuple[str, ...], str]:
    why = f"{n.streams} concurrent streams need the most compute: {_title('jetson-agx-orin')}"
    return ("jetson-agx-orin", "jetson-orin-nano"), why


def _default(n: Needs) -> tuple[tuple[str, ...], str]:
    why = f"nothing demanding, so the general gateway: {_title('rpi5')}"
    return ("rpi5", "jetson-orin-nano", "jetson-agx-orin"), why


RULES: tuple[Rule, ...] = (
    Rule(
        f"latency < {LATENCY_MS:g} ms",
        lambda n: n.latency_ms < LATENCY_MS,
        _latency,
        lambda n: f"latency {n.latency_ms:g} ms is not under {LATENCY_MS:g} ms",
    ),
    Rule("offline", lambda n: n.offline, _offline, lambda n: "the tier is online"),
    Rule(
        "several streams",
        lambda n: n.streams > 1,
        _streams,
        lambda n: "one stream",
    ),
    Rule("default", lambda n: True, _default, lambda n: ""),
)


def _power(board: Board) -> tuple[float, str]:
    """The power a board draws in use, with its host's for an accessory, and how it adds up."""
    if board.host is None:
        return board.power_w, f"{board.power_w:g} W"
    host = boards.get(board.host)
    total = board.power_w + host.power_w
    return (
        total,
        f"{board.power_w:g} W + {host.power_w:g} W for its host {host.title} = {total:g} W",
    )


def _exclusion(board: Board, n: Needs) -> str | None:
    """Why ``board`` cannot take the tier, or None if it can."""
    power, how = _power(board)
    if n.power_w is not None and power > n.power_w:
        return f"{board.title} excluded: it draws {how}, over the {n.power_w:g} W power budget"
    if board.max_model_mb is not None and n.model_size_mb > board.max_model_mb:
        return (
            f"{board.title} excluded: the model ({n.model_size_mb:g} MB) is over the"
            f" {board.max_model_mb:g} MB it takes"
        )
    return None


def _check_needs(n: Needs) -> None:
    for name, value in (("latency_ms", n.latency_ms), ("model_size_mb", n.model_size_mb)):
        if not value > 0:
            raise HardwareError(f"{name} must be a number above 0, got {value!r}")
    if n.power_w is not None and not n.power_w > 0:
        raise HardwareError(f"power_w must be a number above 0, got {n.power_w!r}")
    if isinstance(n.streams, bool) or not isinstance(n.streams, int) or n.streams < 1:
        raise HardwareError(f"streams must be a whole number >= 1, got {n.streams!r}")


def select_hardware(
    latency_ms: float,
    model_size_mb: float,
    offline: bool = False,
    power_w: float | None = None,
    streams: int = 1,
) -> Selection:
    """The board for a tier with these needs, and the reasons, one per step of the decision."""
    needs = Needs(latency_ms, model_size_mb, offline, power_w, streams)
    _check_needs(needs)
    reasons: list[str] = []
    for number, rule in enumerate(RULES, 1):
        if not rule.applies(needs):
            reasons.append(f"rule {number} ({rule.condition}) does not apply: {rule.skip(needs)}")
            continue
        candidates, why = rule.choose(needs)
        reasons.append(f"rule {number} ({rule.condition}): {why}")
        break
    excluded: list[str] = []
    for name in candidates:
        board = boards.get(name)
        reason = _exclusion(board, needs)
        if reason is not None:
            excluded.append(reason)
            continue
        reasons += excluded
        if excluded:
            reasons.append(f"falls back to {board.title}, the rule's next choice that fits")
        _, how = _power(board)
        budget = "" if power_w is None else f", within the {power_w:g} W budget"
        reasons.append(
            f"{board.title} ({board.role}): {how}{budget}; {board.tops:g} TOPS; ${board.cost_usd:g}"
        )
        return Selection(board.name, reasons)
    raise HardwareError(
        "no board meets these needs: " + "; ".join(excluded) + ". Raise the power budget,"
        " or make the model smaller"
    )
