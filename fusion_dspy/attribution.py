"""How much of a fused answer was copied from the candidates (the paper's difflib measure)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["copy_ratio"]


def copy_ratio(fused: str, candidates: Sequence[str], *, min_block: int = 4) -> float:
    """Share of ``fused``'s characters covered by blocks copied from any candidate.

    A character counts as copied when it lies in a matching block of at least ``min_block``
    characters between the fused text and some candidate (the blocks of
    ``difflib.SequenceMatcher(None, fused, candidate, autojunk=False).get_matching_blocks()``); blocks
    from different candidates may cover different parts. Paraphrase is not detected, so this is a
    lower bound on how much the fusor relied on the candidates. An empty answer scores 0.

    The blocks are found as difflib finds them (the longest match, ties to the earliest in ``fused``
    and then in the candidate, and again on each side of it), but each longest match is found with a
    suffix automaton in linear time: difflib's own search is quadratic on long texts (tens of seconds
    for a 15k-character answer), and a range whose longest match is shorter than ``min_block`` is
    not searched further (nothing in it could count).
    """
    if not fused:
        return 0.0
    covered = bytearray(len(fused))
    shortest = max(min_block, 1)
    for candidate in candidates:
        if not candidate:
            continue
        queue = [(0, len(fused), 0, len(candidate))]
        while queue:
            alo, ahi, blo, bhi = queue.pop()
            i, j, size = _longest_match(fused, candidate, alo, ahi, blo, bhi)
            if size < shortest:
                continue  # every block in this range is shorter still
            covered[i : i + size] = b"\x01" * size
            if alo < i and blo < j:
                queue.append((alo, i, blo, j))
            if i + size < ahi and j + size < bhi:
                queue.append((i + size, ahi, j + size, bhi))
    return sum(covered) / len(fused)


def _longest_match(a: str, b: str, alo: int, ahi: int, blo: int, bhi: int) -> tuple[int, int, int]:
    """``difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match(alo, ahi, blo, bhi)``:
    the longest common block of ``a[alo:ahi]`` and ``b[blo:bhi]``, the earliest in ``a`` among the
    longest, then the earliest in ``b``; ``(alo, blo, 0)`` when there is none."""
    # Suffix automaton of b[blo:bhi]: every substring of it is a path from state 0.
    link, length, moves = [-1], [0], [{}]
    last = 0
    for ch in b[blo:bhi]:
        state = len(length)
        length.append(length[last] + 1)
        link.append(0)
        moves.append({})
        p = last
        while p != -1 and ch not in moves[p]:
            moves[p][ch] = state
            p = link[p]
        if p != -1:
            q = moves[p][ch]
            if length[p] + 1 == length[q]:
                link[state] = q
            else:
                clone = len(length)
                length.append(length[p] + 1)
                link.append(link[q])
                moves.append(dict(moves[q]))
                while p != -1 and moves[p].get(ch) == q:
                    moves[p][ch] = clone
                    p = link[p]
                link[q] = link[state] = clone
        last = state
    # Walk a[alo:ahi]: after each character, the longest suffix of what was read that b[blo:bhi] holds.
    state = size = best = 0
    besti = alo
    for i in range(alo, ahi):
        ch = a[i]
        while size and ch not in moves[state]:
            state = link[state]
            size = length[state]
        following = moves[state].get(ch)
        if following is None:
            state = size = 0
            continue
        state, size = following, size + 1
        if size > best:  # strictly: the earliest end, so the earliest start, among the longest
            best, besti = size, i - size + 1
    if not best:
        return alo, blo, 0
    return besti, b.find(a[besti : besti + best], blo, bhi), best
