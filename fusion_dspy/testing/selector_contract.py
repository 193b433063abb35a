"""The contract every :class:`~fusion_dspy.selectors.Selector` keeps, as a reusable pytest suite.

Subclass :class:`SelectorContract` in a test module, name the subclass ``Test...`` and implement
:meth:`~SelectorContract.make_selector`; pytest runs every contract test against it. Example::

    # tests/test_longest.py
    from fusion_dspy.testing import SelectorContract

    class TestLongestAnswer(SelectorContract):
        def make_selector(self):
            return LongestAnswer()

Selectors that call an LM use the context LM during the tests: :meth:`~SelectorContract.make_lm`
(a :class:`~fusion_dspy.testing.FakeEngine` that answers every request the same way, so every
candidate looks equally good) and :meth:`~SelectorContract.make_failing_lm` (every call fails).
Override them, or :meth:`~SelectorContract.make_failing_selector` for a selector whose failures
come from somewhere else (e.g. a reward function that raises).

The suite checks: a valid :class:`~fusion_dspy.selectors.Selection` (position in range, one score
per candidate, a number but never NaN (``-inf`` may mark a failure), or none), one candidate, empty
input (a clear ``ValueError``), ties (identical candidates: the lowest position), determinism,
``aselect`` agreeing with ``select``, failures (a valid selection anyway, or a
:class:`~fusion_dspy.errors.FusionError`, never a raw exception), use inside a ``Fuse`` through both
drivers (``forward`` and ``aforward``), and the ``calls_lm`` declaration (a bool; a selector
declaring ``calls_lm = False``, which turns the guard's auto default on, makes no LM call), and
:meth:`~fusion_dspy.selectors.Selector.closest` (a verbatim copy's closest candidate is the one it
copies; no LM call).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import dspy

from fusion_dspy.candidate import Candidate
from fusion_dspy.drivers import Batch
from fusion_dspy.drivers import Request
from fusion_dspy.drivers import Stepper
from fusion_dspy.drivers import Steps
from fusion_dspy.drivers import drive
from fusion_dspy.errors import FusionError
from fusion_dspy.selectors.base import Selection
from fusion_dspy.selectors.base import Selector

__all__ = ["SelectorContract"]

INPUTS = {"question": "What is the capital of France?"}
VARIED = ("Paris", "The capital is Paris.", "Lyon", "paris", "Marseille, I think")


def _watched(steps: Steps[Selection], seen: list[Request]) -> Steps[Selection]:
    """Pass ``steps`` through, keeping every request it makes in ``seen``."""
    with Stepper(steps) as stepper:
        request = stepper.send(None)
        while request is not None:
            seen.append(request)
            request = stepper.send((yield request))
        return stepper.value


def _same_answer(request: Any) -> dict[str, Any]:
    constants = {"int": 1, "float": 1.0, "bool": True}
    return {name: constants.get(kind, "same") for name, kind in request.outputs.items()}


class SelectorContract:
    """Contract tests for a selector; subclass it as ``Test<YourSelector>`` (see the module docstring).

    Attributes:
        deterministic: Whether repeated calls on the same input must pick the same candidate.
        signature: The task the candidates answer.
    """

    deterministic: bool = True
    signature: type[dspy.Signature] = dspy.ensure_signature("question -> answer")

    # -- hooks -------------------------------------------------------------------------------------

    def make_selector(self) -> Selector:
        raise NotImplementedError("Implement make_selector(self) to return the selector under test.")

    def make_lm(self) -> dspy.BaseLM:
        """The context LM of the tests: gives every request the same answer (``1`` for numbers)."""
        from fusion_dspy.testing.fake_lm import FakeEngine

        return FakeEngine(name="contract-judge", responder=_same_answer).lm()

    def make_failing_lm(self) -> dspy.BaseLM:
        """The context LM of the failure test: every call fails."""
        from fusion_dspy.testing.fake_lm import FakeEngine

        return FakeEngine(name="contract-broken", fail=True).lm()

    def make_failing_selector(self) -> Selector:
        """The selector of the failure test (run with :meth:`make_failing_lm` as the context LM)."""
        return self.make_selector()

    # -- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def candidates(*answers: Any) -> list[Candidate]:
        return [Candidate(index=i, teacher=f"t{i % 2}", sample=i // 2, outputs={"answer": a})
                for i, a in enumerate(answers)]

    def _select(self, selector: Selector, candidates: Sequence[Candidate], lm: dspy.BaseLM | None = None) -> Selection:
        with dspy.context(lm=lm or self.make_lm()):
            selection = selector.select(self.signature, dict(INPUTS), candidates)
        self._check(selection, candidates)
        return selection

    @staticmethod
    def _check(selection: Any, candidates: Sequence[Candidate]) -> None:
        assert isinstance(selection, Selection), f"select() must return a Selection, got {type(selection).__name__}"
        assert isinstance(selection.position, int) and 0 <= selection.position < len(candidates), (
            f"position {selection.position!r} is outside 0..{len(candidates) - 1}")
        if selection.scores is not None:
            assert len(selection.scores) == len(candidates), (
                f"{len(selection.scores)} scores for {len(candidates)} candidates: give one per candidate or None")
            assert all(isinstance(s, (int, float)) and not math.isnan(s) for s in selection.scores), (
                f"scores must be numbers (not NaN), got {selection.scores}")

    # -- the contract ------------------------------------------------------------------------------

    def test_returns_a_valid_selection(self) -> None:
        self._select(self.make_selector(), self.candidates(*VARIED))

    def test_a_single_candidate_is_chosen(self) -> None:
        assert self._select(self.make_selector(), self.candidates("Paris")).position == 0

    def test_no_candidates_is_a_clear_error(self) -> None:
        selector = self.make_selector()
        try:
            with dspy.context(lm=self.make_lm()):
                selector.select(self.signature, dict(INPUTS), [])
        except (ValueError, FusionError) as error:
            assert str(error), "the error must say what is wrong"
        else:
            raise AssertionError("select() with no candidates must raise ValueError (or a FusionError)")

    def test_identical_candidates_tie_to_the_lowest_position(self) -> None:
        selection = self._select(self.make_selector(), self.candidates(*["Paris"] * 4))
        assert selection.position == 0, f"a tie must go to the lowest position, got {selection.position}"

    def test_is_deterministic(self) -> None:
        if not self.deterministic:
            import pytest

            pytest.skip("the selector declares deterministic = False")
        candidates = self.candidates(*VARIED)
        first = self._select(self.make_selector(), candidates)
        again = self._select(self.make_selector(), candidates)
        assert (first.position, first.scores) == (again.position, again.scores)

    def test_aselect_agrees_with_select(self) -> None:
        candidates = self.candidates(*VARIED)
        selector = self.make_selector()
        lm = self.make_lm()
        expected = self._select(selector, candidates, lm)

        async def run() -> Selection:
            with dspy.context(lm=lm):
                return await selector.aselect(self.signature, dict(INPUTS), candidates)

        got = asyncio.run(run())
        self._check(got, candidates)
        assert (got.position, got.scores) == (expected.position, expected.scores), "aselect and select disagree"

    def test_failures_give_a_selection_or_a_fusion_error(self) -> None:
        selector = self.make_failing_selector()
        candidates = self.candidates(*VARIED)
        try:
            self._select(selector, candidates, self.make_failing_lm())
        except FusionError:
            pass  # e.g. SelectionError, naming each failure
        except Exception as error:
            raise AssertionError(
                "a failing selector must return a Selection or raise a FusionError, "
                f"not {type(error).__name__}: {error}"
            ) from error

    def test_declares_whether_it_calls_an_lm(self) -> None:
        from fusion_dspy.testing.fake_lm import FakeEngine

        selector = self.make_selector()
        assert isinstance(selector.calls_lm, bool), (
            f"calls_lm must be True or False (whether ranking makes LM calls), got {selector.calls_lm!r}")
        if selector.calls_lm:
            return  # may call an LM; nothing to hold it to (e.g. one candidate needs no call)
        engine = FakeEngine(name="contract-unused", responder=_same_answer)
        candidates = self.candidates(*VARIED)
        seen: list[Request] = []
        with dspy.context(lm=engine.lm()):
            selection = drive(_watched(selector.steps(self.signature, dict(INPUTS), candidates), seen))
        self._check(selection, candidates)
        batches = sum(len(r.calls) for r in seen if isinstance(r, Batch))
        assert batches == 0 and engine.calls == 0, (
            f"the selector declares calls_lm = False but made {batches + engine.calls} LM call(s); declare "
            "calls_lm = True (the selection guard then defaults to off for it)")

    def test_closest_names_a_candidate_without_an_lm_call(self) -> None:
        from fusion_dspy.guard import fused_candidate
        from fusion_dspy.testing.fake_lm import FakeEngine

        selector = self.make_selector()
        candidates = self.candidates(*VARIED)
        engine = FakeEngine(name="contract-unused", responder=_same_answer)
        with dspy.context(lm=engine.lm()):
            copy = selector.closest(self.signature, fused_candidate({"answer": VARIED[2]}), candidates)
            other = selector.closest(self.signature, fused_candidate({"answer": "Berlin"}), candidates)
        assert copy == 2, f"closest() of a verbatim copy of candidate 2 must be 2, got {copy!r}"
        assert isinstance(other, int) and 0 <= other < len(candidates), f"closest() returned {other!r}"
        assert engine.calls == 0, "closest() must not call an LM (the selection guard runs it on every fused answer)"

    def test_works_inside_a_fuse_through_both_drivers(self) -> None:
        from fusion_dspy import Fuse
        from fusion_dspy import Teacher
        from fusion_dspy.testing.fake_lm import FakeEngine

        teacher = FakeEngine(
            name="contract-teacher", responder=lambda r: {"answer": VARIED[(r.seed or 0) % len(VARIED)]}
        )
        fuse = Fuse(self.signature, 3, teachers=[Teacher(teacher.lm(), name="t")], mode="select",
                    selector=self.make_selector())
        with dspy.context(lm=self.make_lm()):
            sync = fuse(**INPUTS)
            asynchronous = asyncio.run(fuse.acall(**INPUTS))
        for prediction in (sync, asynchronous):
            assert prediction.fusion.path == "select"
            assert prediction.fusion.selection.selector == fuse.selector.name
        assert sync.answer == asynchronous.answer
