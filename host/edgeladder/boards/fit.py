"""Does a model fit a device board: ``fit`` counts what it costs there.

``fit`` compiles a model for the board (or reads a compiled ``.ldr``) and counts, from the
board file, what it costs on the device: heap (engine + model file + arena + load overhead +
application reserve), flash (image + engine files + model) and the filesystem partition; and
an estimated latency, MACs x ``per_mac_ns``.

A compiled model is checked by the board's own code: ``ladder.opsize.Plan`` (the header, the
sha256, the op table through ``ladder.mformat.ops``, every op's spans and scratch) is what
``Model.load`` runs on the board, imported here from the same file. So ``fit`` refuses every
file the engine refuses, with the engine's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeladder.boards import registry as boards
from edgeladder.boards.registry import Board, BoardError
from edgeladder.errors import ModelFileError
from ladder import mformat as F
from ladder import opsize

__all__ = ["Budget", "FitReport", "ModelFigures", "fit", "model_figures"]

# Multiply-accumulates per op of the board format, as products of named parameters (the
# same counts as edgeladder.model.tflite.summary: output elements x kernel taps [x input channels]).
_MAC_FIELDS: dict[str, tuple[str, ...]] = {
    "FULLY_CONNECTED": ("batches", "n_in", "n_out"),
    "CONV_2D": ("out_h", "out_w", "out_c", "k_h", "k_w", "in_c"),
    "DEPTHWISE_CONV_2D": ("out_h", "out_w", "out_c", "k_h", "k_w"),
}
# Model.load's own objects on a 32-bit port, in MicroPython's 16-byte GC blocks: the Model
# and its attributes, two Tensors, memoryviews, the arena and requant arrays' headers (an
# estimate of the VM's object sizes, not a figure of our code). 64-bit measurements
# (tests/device/test_engine_memory.py) put all load overhead at 1.3-2.8 KB for the digits
# tiers; this estimate comes to about 1 KB-2 KB on 32 bits.
_LOAD_FIXED = 512
_BLOCK = 16


def _blocks(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


@dataclass(frozen=True)
class ModelFigures:
    """What a model costs on any device: from its compiled form."""

    path: Path
    compiled: bool  # True when compiled here from a .tflite, False for a .ldr
    file_bytes: int
    arena_bytes: int
    ops: int
    macs: int
    load_bytes: int  # estimated heap Model.load takes beyond the file and the arena


_Ops = list[tuple[int, Any]]  # (opcode, params) of every op, as ladder.opsize.check gives them


def check_board_model(data: bytes, path: Path) -> tuple[opsize.Plan, _Ops]:
    """The board's own load-time check of a compiled model (ladder.opsize.Plan and its ops(),
    as Model.load runs them); ModelFileError with the engine's reason if the board refuses it."""
    try:
        plan = opsize.Plan(data)
        return plan, list(plan.ops())  # ops() checks each op as the engine walks it
    except ValueError as e:
        reason = str(e).removeprefix("model: ")
        raise ModelFileError(
            f"corrupt or invalid board model (.ldr), the board's engine refuses it: {reason}",
            path,
        ) from None


def _macs(ops: _Ops) -> int:
    total = 0
    for op, p in ops:
        fields = _MAC_FIELDS.get(F.NAMES[op], ())
        if fields:
            named = dict(zip(F.fields(op), p, strict=False))
            product = 1
            for f in fields:
                product *= named[f]
            total += product
    return total


def _load_bytes(plan: opsize.Plan, ops: _Ops) -> int:
    """Heap Model.load allocates beyond the file and the arena (32-bit estimate)."""
    per_op = sum(2 * _BLOCK + _blocks(4 * len(p)) for _, p in ops)  # params array, pair tuple
    requant = _BLOCK + _blocks(4 * opsize.requant_words(plan.need))
    op_tuple = _blocks(8 + 4 * len(ops))
    # array("b", bytearray(n)) holds a second copy of the arena while it is made.
    return _LOAD_FIXED + per_op + requant + op_tuple + _blocks(plan.header.arena_size)


def model_figures(model_path: str | Path) -> ModelFigures:
    """Compile ``model_path`` (.tflite) for the board, or check it (.ldr), and count its cost."""
    path = Path(model_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError("not found", path) from None
    except OSError as e:
        raise ModelFileError(f"cannot read: {e.strerror or e}", path) from None
    # A .ldr (or anything with the board format's magic) is a board model, even when corrupt.
    compiled = path.suffix.lower() != ".ldr" and data[:4] != F.MAGIC
    if compiled:  # anything else must be an int8 .tflite; the compiler says what is wrong
        from edgeladder.model.compiler import compile_model

        data = bytes(compile_model(path).data)
    plan, ops = check_board_model(data, path)
    return ModelFigures(
        path=path,
        compiled=compiled,
        file_bytes=len(data),
        arena_bytes=plan.header.arena_size,
        ops=len(ops),
        macs=_macs(ops),
        load_bytes=_load_bytes(plan, ops),
    )


@dataclass(frozen=True)
class Budget:
    """One resource of the board: what the model needs, part by part, against what there is."""

    name: str
    parts: tuple[tuple[str, int], ...]
    available: int

    @property
    def needed(self) -> int:
        return sum(n for _, n in self.parts)

    @property
    def fits(self) -> bool:
        return self.needed <= self.available

    @property
    def over_by(self) -> int:
        return max(0, self.needed - self.available)

    @property
    def spare(self) -> int:
        return max(0, self.available - self.needed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parts": dict(self.parts),
            "needed": self.needed,
            "available": self.available,
            "fits": self.fits,
            "over_by": self.over_by,
            "spare": self.spare,
        }


@dataclass(frozen=True)
class FitReport:
    model: ModelFigures
    board: Board
    budgets: tuple[Budget, ...]
    latency_ms: float  # an estimate: MACs x the board's per_mac_ns
    fits_on: tuple[str, ...]  # the device boards this model fits

    @property
    def fits(self) -> bool:
        return all(b.fits for b in self.budgets)

    def budget(self, name: str) -> Budget:
        return next(b for b in self.budgets if b.name == name)

    @property
    def message(self) -> str:
        head = f"{self.model.path.name} on {self.board.name}"
        if self.fits:
            heap = self.budget("heap")
            return (
                f"{head}: fits, {heap.spare:,} bytes of heap to spare; estimated latency"
                f" {self.latency_ms:.2f} ms"
            )
        over = "; ".join(
            f"{b.name} needs {b.needed:,} bytes of {b.available:,}: over by {b.over_by:,} bytes"
            for b in self.budgets
            if not b.fits
        )
        others = [n for n in self.fits_on if n != self.board.name]
        hint = f"choose a board it fits ({', '.join(others)})" if others else "choose a board"
        return (
            f"{head}: does NOT fit: {over}. Make the model smaller (fewer units, pruning, a"
            f" distilled student) or {hint}"
        )

    def to_dict(self) -> dict[str, Any]:
        m = self.model
        return {
            "model": str(m.path),
            "board": self.board.name,
            "fits": self.fits,
            "compiled": m.compiled,
            "model_bytes": m.file_bytes,
            "arena_bytes": m.arena_bytes,
            "ops": m.ops,
            "macs": m.macs,
            "per_mac_ns": self.board.per_mac_ns,
            "latency_ms_estimate": round(self.latency_ms, 3),
            "budgets": {b.name: b.to_dict() for b in self.budgets},
            "over_by": {b.name: b.over_by for b in self.budgets if not b.fits},
            "fits_on": list(self.fits_on),
            "message": self.message,
        }


def _device(board: Board | str) -> Board:
    board = boards.get(board) if isinstance(board, str) else board
    if not board.is_device:
        names = ", ".join(b.name for b in boards.devices())
        raise BoardError(
            f"{board.name} is a {board.role} board, which runs the .tflite with LiteRT; fit"
            f" checks a device board: {names}"
        )
    return board


def _budgets(m: ModelFigures, b: Board) -> tuple[Budget, ...]:
    heap = Budget(
        "heap",
        (
            ("engine (ladder, imported)", b.engine_heap_bytes or 0),
            ("model file (read into RAM)", m.file_bytes),
            ("arena", m.arena_bytes),
            ("load overhead (estimate)", m.load_bytes),
            ("application reserve", b.app_reserve_bytes or 0),
        ),
        b.heap_bytes or 0,
    )
    files = (("engine .mpy files", b.engine_flash_bytes or 0), ("model file", m.file_bytes))
    flash = Budget(
        "flash",
        (
            ("before the image", b.flash_offset or 0),
            ("MicroPython image", b.firmware_bytes or 0),
            *files,
        ),
        b.flash_bytes or 0,
    )
    filesystem = Budget("filesystem", files, b.vfs_bytes or 0)
    return heap, flash, filesystem


def fit(model_path: str | Path, board: Board | str) -> FitReport:
    """Whether the model at ``model_path`` (.tflite or .ldr) fits the device ``board``."""
    board = _device(board)
    m = model_figures(model_path)
    fits_on = tuple(d.name for d in boards.devices() if all(x.fits for x in _budgets(m, d)))
    return FitReport(
        model=m,
        board=board,
        budgets=_budgets(m, board),
        latency_ms=m.macs * (board.per_mac_ns or 0) / 1e6,
        fits_on=fits_on,
    )
