from __future__ import annotations

from fusion_dspy.attribution import copy_ratio


def test_verbatim_copy_is_fully_attributed():
    assert copy_ratio("The capital is Canberra.", ["The capital is Canberra.", "Sydney"]) == 1.0


def test_new_text_is_not_attributed():
    assert copy_ratio("zzzzzzzz", ["abcdefgh"]) == 0.0


def test_union_of_blocks_from_different_candidates():
    fused = "alpha beta gamma delta"
    ratio = copy_ratio(fused, ["alpha beta", "gamma delta"])
    assert 0.85 < ratio < 1.0  # everything but the joining space


def test_empty_answer():
    assert copy_ratio("", ["x"]) == 0.0


def _difflib_copy_ratio(fused, candidates, min_block=4):
    """The paper's measure, straight from difflib: the reference the fast implementation must equal."""
    import difflib

    if not fused:
        return 0.0
    covered = bytearray(len(fused))
    for candidate in candidates:
        if candidate:
            matcher = difflib.SequenceMatcher(None, fused, candidate, autojunk=False)
            for block in matcher.get_matching_blocks():
                if block.size >= min_block:
                    covered[block.a : block.a + block.size] = b"\x01" * block.size
    return sum(covered) / len(fused)


def test_the_measure_is_exactly_difflibs_matching_blocks():
    import random

    rng = random.Random(7)
    for _ in range(1500):
        alphabet = rng.choice(["ab", "abc", "abcdef ", "aé😀 \n"])
        fused = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        candidates = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
                      for _ in range(rng.randint(1, 3))]
        min_block = rng.choice([0, 1, 2, 4, 7])
        assert copy_ratio(fused, candidates, min_block=min_block) == _difflib_copy_ratio(fused, candidates, min_block)


def test_long_answers_are_measured_in_reasonable_time():
    """A long-form fused answer (15k characters, three candidates of the same size) is measured within a few
    seconds; difflib's character matcher is quadratic here (tens of seconds per call on one core)."""
    import random
    import time

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij klmnop") for _ in range(rng.randint(2, 8))) for _ in range(500)]

    def text(size):
        out = []
        while sum(map(len, out)) < size:
            out.append(rng.choice(words))
        return " ".join(out)

    candidates = [text(15_000) for _ in range(3)]
    fused = candidates[0][:7_500] + text(7_500)
    started = time.perf_counter()
    ratio = copy_ratio(fused, candidates)
    elapsed = time.perf_counter() - started
    assert 0.45 < ratio < 0.6
    assert elapsed < 5, f"copy_ratio took {elapsed:.1f}s on a 15k-character answer"
    assert copy_ratio("ab" * 20_000, ["ab" * 20_000]) == 1.0  # one repeated pattern: no blow-up either
