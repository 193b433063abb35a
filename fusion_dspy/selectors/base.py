"""The selector contract: pick one candidate out of N (Best-of-N)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from fusion_dspy.drivers import Invoke
from fusion_dspy.drivers import Steps
from fusion_dspy.drivers import adrive
from fusion_dspy.drivers import drive
from fusion_dspy.errors import SelectionError

if TYPE_CHECKING:
    import dspy

    from fusion_dspy.candidate import Candidate

__all__ = ["Selection", "SelectionError", "Selector", "check_selection"]


@dataclasses.dataclass(frozen=True)
class Selection:
    """The outcome of a selector.

    Attributes:
        position: Position of the chosen candidate in the sequence the selector was given.
        scores: One score per candidate (higher is better), when the selector scores them.
        rationale: A short explanation, when the selector produces one (LLM-based selectors).
    """

    position: int
    scores: tuple[float, ...] | None = None
    rationale: str | None = None


class Selector:
    """Picks the best of several candidates for one input.

    A subclass implements either :meth:`select` (plain code, possibly blocking) or :meth:`steps`
    (a sans-I/O generator that yields the LM requests of :mod:`fusion_dspy.drivers`, as the LLM
    judge and USC do). The other entry points derive from it: ``select`` and ``aselect`` drive
    ``steps`` with threads or asyncio, and the default ``steps`` runs ``select`` (``aselect`` in
    async, when a subclass overrides it; else ``select`` in a worker thread). A ``Fuse`` runs a
    selector through ``steps``, so its LM calls obey the Fuse's bounds and land in its report.

    Selectors must be deterministic for the same inputs and candidates (ties break towards the
    lower position), and return one score per candidate when they score.

    A selector declares :attr:`calls_lm`: whether ranking makes LM calls. It decides the default of
    the selection guard (``Fuse(guard=None)``, :meth:`fusion_dspy.FuseSettings.guard_enabled`): on
    when ranking is free, off when it would cost LM calls. The default is ``True`` (an undeclared
    selector is assumed to cost calls); declare ``calls_lm = False`` on a selector that ranks with
    plain code, and :class:`~fusion_dspy.testing.SelectorContract` checks that it then makes none.
    """

    #: Short stable name used in reports, saved configurations and the optimizer's search space.
    name: str = "selector"
    #: Whether ranking makes LM calls (an LLM judge, USC); ``False`` for reference-free code (MBR, votes, rewards).
    calls_lm: bool = True

    def steps(
        self,
        signature: type[dspy.Signature],
        inputs: Mapping[str, Any],
        candidates: Sequence[Candidate],
    ) -> Steps[Selection]:
        """The selection as a sans-I/O generator. Default: one blocking step running :meth:`select`."""
        cls = type(self)
        if cls.select is Selector.select:
            raise TypeError(f"{cls.__name__} must implement select() or steps().")
        arun = None
        if cls.aselect is not Selector.aselect:
            def arun() -> Any:
                return self.aselect(signature, inputs, candidates)
        result = yield Invoke(lambda: self.select(signature, inputs, candidates), arun)
        if result.error is not None:
            raise result.error
        return result.value

    def select(
        self,
        signature: type[dspy.Signature],
        inputs: Mapping[str, Any],
        candidates: Sequence[Candidate],
    ) -> Selection:
        """Return the chosen candidate's position in ``candidates`` (which is never empty)."""
        return drive(self.steps(signature, inputs, candidates))

    async def aselect(
        self,
        signature: type[dspy.Signature],
        inputs: Mapping[str, Any],
        candidates: Sequence[Candidate],
    ) -> Selection:
        """Async :meth:`select`: the same steps, with the LM calls as asyncio tasks."""
        return await adrive(self.steps(signature, inputs, candidates))

    def closest(
        self,
        signature: type[dspy.Signature],
        answer: Candidate,
        candidates: Sequence[Candidate],
    ) -> int:
        """Position of the candidate ``answer`` agrees with most: the one it was most likely copied from.

        The selection guard (:mod:`fusion_dspy.guard`) leaves that candidate out of the references
        it compares the fused answer on, so a copy cannot vote for itself. The default compares all
        output fields as text with chrF (MBR's utility); a selector that judges agreement on part of
        the answer overrides it (:class:`~fusion_dspy.selectors.MajorityVote` on its vote fields).
        Must not call an LM.
        """
        from fusion_dspy.selectors._common import candidate_texts
        from fusion_dspy.selectors._common import output_fields
        from fusion_dspy.selectors.mbr import closest_text

        fields = output_fields(signature, candidates)
        return closest_text(answer.text(fields), candidate_texts(candidates, fields))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def check_selection(selection: Any, count: int, selector: str) -> None:
    """Refuse a selection that does not fit ``count`` candidates, saying what is wrong."""
    if not isinstance(selection, Selection):
        raise TypeError(
            f"Selector {selector!r} returned {type(selection).__name__}, not a Selection; return "
            "Selection(position=..., scores=...)."
        )
    if not 0 <= selection.position < count:
        raise IndexError(
            f"Selector {selector!r} returned position {selection.position} for {count} candidates; "
            f"a position must be in 0..{count - 1}."
        )
    if selection.scores is not None and len(selection.scores) != count:
        raise ValueError(
            f"Selector {selector!r} returned {len(selection.scores)} scores for {count} candidates; "
            "return one score per candidate, in the order given, or scores=None."
        )
