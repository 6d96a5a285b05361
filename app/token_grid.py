"""Where an attention block lies in the video: block index -> tokens -> (frame, row, col).

Diffusers orders video tokens frame-major (f, h, w); block ``b`` of size ``B`` covers tokens
``[b*B, (b+1)*B)`` (the last block may be short), i.e. a thin strip of one frame that may wrap onto
the next rows or the next frame. Only ``"fhw"`` order is understood; other orders are reported as such.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlockSpan:
    """First and last token of a block and their (frame, row, col) positions."""

    block: int
    first_token: int
    last_token: int
    first: tuple[int, int, int]
    last: tuple[int, int, int]

    def describe(self) -> str:
        """Compact text such as ``f0 r29 c28 – f1 r2 c11`` (first to last token)."""
        f0, r0, c0 = self.first
        f1, r1, c1 = self.last
        if (f0, r0) == (f1, r1):
            return f"f{f0} r{r0} c{c0}–{c1}"
        if f0 == f1:
            return f"f{f0} r{r0} c{c0} – r{r1} c{c1}"
        return f"f{f0} r{r0} c{c0} – f{f1} r{r1} c{c1}"


def token_position(grid: tuple[int, int, int], token: int) -> tuple[int, int, int]:
    """(frame, row, col) of ``token`` in a frame-major sequence over ``grid = (frames, height, width)``."""
    _, height, width = grid
    return token // (height * width), (token // width) % height, token % width


def block_span(grid: tuple[int, int, int], block_size: int, block: int, token_order: str = "fhw") -> BlockSpan:
    """The tokens block ``block`` covers; raises ``ValueError`` for a block outside the sequence."""
    if token_order != "fhw":
        raise ValueError(f"token order {token_order!r} is not understood (only 'fhw', frame-major)")
    tokens = grid[0] * grid[1] * grid[2]
    first = block * block_size
    if block < 0 or first >= tokens:
        raise ValueError(f"block {block} is outside the {-(-tokens // block_size)} blocks of the sequence")
    last = min(first + block_size, tokens) - 1
    return BlockSpan(block, first, last, token_position(grid, first), token_position(grid, last))
