"""How much of a fused answer was copied from the candidates (the paper's difflib measure)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = ["copy_ratio"]


def copy_ratio(fused: str, candidates: Sequence[str], *, min_block: int = 4) -> float:
    """Share of ``fused``'s characters covered by blocks copied from any candidate.

    A character counts as copied when it lies in a matching block of at least ``min_block``
    characters between the fused text and some candidate (``difflib.SequenceMatcher``); blocks
    from different candidates may cover different parts. Paraphrase is not detected, so this is a
    lower bound on how much the fusor relied on the candidates. An empty answer scores 0.
    """
    if not fused:
        return 0.0
    covered = bytearray(len(fused))
    for candidate in candidates:
        if not candidate:
            continue
        matcher = difflib.SequenceMatcher(None, fused, candidate, autojunk=False)
        for block in matcher.get_matching_blocks():
            if block.size >= min_block:
                covered[block.a : block.a + block.size] = b"\x01" * block.size
    return sum(covered) / len(fused)
