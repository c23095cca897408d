"""The offline arena plan: every activation buffer gets a fixed offset in one arena.

Like TFLite Micro's GreedyMemoryPlanner: a buffer is alive from the op that writes it to the
last op that reads it (the graph input from before the first op, the graph output until
after the last); buffers are placed largest first, each at the lowest aligned offset where
it overlaps no already-placed buffer that is alive at the same time. Aliased tensors
(reshapes) are one buffer, alive over the union of their lifetimes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ALIGN = 4  # int32 reads in viper need 4-aligned addresses; int8 tensors need nothing more


@dataclass
class Buffer:
    tensor: int  # the root tensor owning the bytes
    size: int  # bytes, before alignment
    first: int  # index of the op that writes it (-1: the graph input)
    last: int  # index of the last op that reads it (n_ops: the graph output)
    offset: int = -1

    def alive_with(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


def _align(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def lifetimes(
    ops: Iterable[tuple[tuple[int, ...], tuple[int, ...]]],
    root,
    sizes: dict[int, int],
    graph_input: int,
    graph_output: int,
) -> list[Buffer]:
    """Buffers from (inputs, outputs) per op in execution order; ``root`` resolves aliases."""
    spans: dict[int, list[int]] = {}

    def touch(t: int, k: int) -> None:
        r = root(t)
        span = spans.setdefault(r, [k, k])
        span[0], span[1] = min(span[0], k), max(span[1], k)

    n = 0
    for k, (ins, outs) in enumerate(ops):
        for t in (*ins, *outs):
            touch(t, k)
        n = k + 1
    touch(graph_input, -1)
    touch(graph_output, n)
    return [Buffer(r, sizes[r], a, b) for r, (a, b) in spans.items()]


def plan(buffers: list[Buffer], align: int = ALIGN) -> int:
    """Assign ``offset`` to every buffer; return the arena size (a multiple of ``align``)."""
    placed: list[Buffer] = []
    # Largest first; ties in the order the buffers appear (stable sort), as TFLM does.
    for buf in sorted(buffers, key=lambda b: -b.size):
        size = _align(max(buf.size, 1), align)
        offset = 0
        for other in sorted((p for p in placed if p.alive_with(buf)), key=lambda p: p.offset):
            if other.offset >= offset + size:
                break  # the gap before `other` fits
            offset = max(offset, _align(other.offset + other.size, align))
        buf.offset = offset
        placed.append(buf)
    return max((_align(b.offset + max(b.size, 1), align) for b in buffers), default=0)


def conflicts(buffers: list[Buffer]) -> list[tuple[int, int]]:
    """Pairs of buffers alive at the same time whose bytes overlap (empty for a valid plan)."""
    bad = []
    for i, a in enumerate(buffers):
        for b in buffers[i + 1 :]:
            if a.alive_with(b) and a.offset < b.offset + b.size and b.offset < a.offset + a.size:
                bad.append((a.tensor, b.tensor))
    return bad
