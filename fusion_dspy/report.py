"""``pred.fusion``: what happened inside one Fuse call, in a JSON-serialisable form."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any
from typing import Literal

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

__all__ = [
    "CandidateRecord",
    "FusionReport",
    "FusorRecord",
    "GuardRecord",
    "Path",
    "SelectionRecord",
    "SelectorFailure",
    "TokenUsage",
    "usage_from_tracker",
]

#: How the returned prediction was produced.
#: ``fuse``: written by the fusor; ``select``: a candidate chosen by the selector;
#: ``consensus``: ``mode="auto"`` found enough agreeing candidates and skipped the fusor;
#: ``single``: only one candidate survived (or ``n=1``), returned as is;
#: ``guarded``: the fusor wrote an answer, but the selection guard (on by default for LM-free
#: selectors) returned a candidate that its selector ranked above it (see :class:`GuardRecord`).
Path = Literal["fuse", "select", "consensus", "single", "guarded"]


class TokenUsage(BaseModel):
    """Token counts of one or more LM calls. ``calls`` counts calls that reached a model."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            calls=self.calls + other.calls,
        )


def usage_from_tracker(usage_data: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, TokenUsage]:
    """Convert DSPy's ``UsageTracker.usage_data`` into per-LM :class:`TokenUsage`.

    DSPy records no entry for a cache hit, so cached calls contribute nothing here; the report
    marks such candidates ``cached=True`` instead of pretending they were free model calls.
    """
    totals: dict[str, TokenUsage] = {}
    for lm_name, entries in usage_data.items():
        total = totals.get(lm_name, TokenUsage())
        for entry in entries:
            total = total + TokenUsage(
                input_tokens=int(entry.get("prompt_tokens", entry.get("input_tokens")) or 0),
                output_tokens=int(entry.get("completion_tokens", entry.get("output_tokens")) or 0),
                calls=1,
            )
        totals[lm_name] = total
    return totals


class CandidateRecord(BaseModel):
    """One teacher draw: its settings, and either its outputs or the error that dropped it.

    ``usage`` and ``latency_s`` are what producing the candidate cost (for a stored candidate, the
    original call's). ``late_usage`` is filled in when a draw that timed out answers after all:
    the record is updated in place when the answer arrives (possibly after the call returned), and
    the answer is stored if the Fuse has a store. ``cached`` means no model was called for it in
    this call: it came from a candidate store (whose ``usage`` is the original call's) or from
    DSPy's cache (which reports no usage, so ``usage`` is empty). ``sanitized`` counts characters of
    the outputs that no file could hold (lone surrogates, NUL) and were replaced by U+FFFD
    (:mod:`fusion_dspy.text_safety`); 0 means the outputs are exactly what the model returned.
    """

    index: int
    teacher: str
    sample: int
    temperature: float
    seed: int
    outputs: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    usage: dict[str, TokenUsage] = Field(default_factory=dict)
    latency_s: float = 0.0
    cached: bool = False
    sanitized: int = 0
    late_usage: dict[str, TokenUsage] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


class FusorRecord(BaseModel):
    """The fusor call: which LM, the order the candidates were shown in, and what it said.

    ``sanitized`` counts unencodable characters replaced in its answer, as for a candidate.
    ``cached``: the reply came from the candidate store (an earlier call sent the fusor the same
    prompt); ``usage`` and ``latency_s`` are then the original call's, and no model was called now.
    """

    lm: str
    order: list[int]
    comparison: str | None = None
    error: str | None = None
    error_type: str | None = None
    usage: dict[str, TokenUsage] = Field(default_factory=dict)
    latency_s: float = 0.0
    sanitized: int = 0
    cached: bool = False


class SelectionRecord(BaseModel):
    """A Best-of-N pick: the selector, the chosen candidate's ``index``, and per-candidate scores.

    ``usage`` and ``latency_s`` are the selector's own LM calls (a judge, USC or a reward model);
    ``mbr`` and ``majority`` call no model and cost nothing.
    """

    selector: str
    index: int
    scores: dict[int, float] | None = None
    rationale: str | None = None
    usage: dict[str, TokenUsage] = Field(default_factory=dict)
    latency_s: float = 0.0


class GuardRecord(BaseModel):
    """What the selection guard decided (:mod:`fusion_dspy.guard`): the fused answer or the selector's pick.

    ``pick`` is the selector's choice among the draws (what ``mode="select"`` returns), ``index`` the
    returned answer (``-1``: the fused answer, else the pick). The comparison ranked the fused answer,
    the pick and the ``references`` (the other draws, less ``source``: the draw the fused answer agrees
    with most). ``scores`` maps each compared answer's index (the fused one under ``-1``) to the
    selector's score, and ``margin`` is the pick's score minus the fused answer's (when the selector
    scores). ``rule`` names the decision rule (``None``: a report written before the rule had a name,
    which ranked all N+1 answers). ``usage`` and ``latency_s`` are the selector's, both rankings (no LM
    call for mbr, majority, reward).
    """

    selector: str
    kept_fused: bool
    index: int
    pick: int | None = None
    references: list[int] = Field(default_factory=list)
    source: int | None = None
    scores: dict[int, float] | None = None
    margin: float | None = None
    rationale: str | None = None
    rule: str | None = None
    usage: dict[str, TokenUsage] = Field(default_factory=dict)
    latency_s: float = 0.0


class SelectorFailure(BaseModel):
    """A selector that raised, or returned a selection that does not fit (``role``: ``select`` or ``guard``)."""

    selector: str
    role: Literal["select", "guard"] = "select"
    error: str
    error_type: str
    usage: dict[str, TokenUsage] = Field(default_factory=dict)
    latency_s: float = 0.0


class FusionReport(BaseModel):
    """Everything a Fuse call did, attached to the prediction as ``pred.fusion``.

    Attributes:
        mode: The requested mode (``fuse``, ``select`` or ``auto``).
        path: How the answer was produced (see :data:`Path`).
        fallback: Why the requested path was not taken, e.g. the fusor's error; ``None`` if it was.
        candidates: Every planned draw, successful or not, in plan order.
        fusor: The fusor call, if one was made.
        selection: The selector's pick, when the answer came from (or fell back to) selection.
        agreement: Share of candidates agreeing with the most common answer (``mode="auto"``).
        attribution: Share of the fused text's characters copied from the candidates (difflib).
        guard: The guard's decision, when the guard was on (:meth:`~fusion_dspy.FuseSettings.guard_enabled`:
            by default whenever the selector ranks without an LM call) and the fusor answered.
        selector_failure: The selector's failure, in the report of a :class:`SelectorFailedError`.
        wall_time_s: Wall-clock time of the whole call.
    """

    mode: str
    path: Path
    fallback: str | None = None
    candidates: list[CandidateRecord]
    fusor: FusorRecord | None = None
    selection: SelectionRecord | None = None
    agreement: float | None = None
    attribution: float | None = None
    guard: GuardRecord | None = None
    selector_failure: SelectorFailure | None = None
    wall_time_s: float = 0.0

    @property
    def succeeded(self) -> list[CandidateRecord]:
        return [c for c in self.candidates if c.ok]

    @property
    def failed(self) -> list[CandidateRecord]:
        return [c for c in self.candidates if not c.ok]

    @property
    def paid_fusor(self) -> FusorRecord | None:
        """The fusor call this call made: ``None`` without one, or when its reply was replayed from the
        store (the call that made it paid for it)."""
        return self.fusor if self.fusor is not None and not self.fusor.cached else None

    def _model_calls(self, *, spent: bool = False) -> list[dict[str, TokenUsage]]:
        """Usage of the calls made besides the draws: the fusor, the selector, the guard, late answers.

        ``spent``: leave out a fusor reply replayed from the store (paid for by the call that made it).
        """
        parts = (self.paid_fusor if spent else self.fusor, self.selection, self.guard, self.selector_failure)
        return [part.usage for part in parts if part is not None] + [c.late_usage for c in self.candidates]

    @property
    def usage(self) -> dict[str, TokenUsage]:
        """Token usage per LM over all candidates, the fusor and the selector."""
        totals: dict[str, TokenUsage] = {}
        for part in [c.usage for c in self.candidates] + self._model_calls():
            for lm_name, usage in part.items():
                totals[lm_name] = totals.get(lm_name, TokenUsage()) + usage
        return totals

    @property
    def spent_usage(self) -> TokenUsage:
        """Tokens actually spent by this call (candidates from a store or cache excluded)."""
        parts = [c.usage for c in self.candidates if not c.cached] + self._model_calls(spent=True)
        total = TokenUsage()
        for part in parts:
            for usage in part.values():
                total = total + usage
        return total

    @property
    def total_usage(self) -> TokenUsage:
        """Tokens the call's answer costs, stored candidates counted at their original cost."""
        total = TokenUsage()
        for usage in self.usage.values():
            total = total + usage
        return total

    def summary(self) -> str:
        """A few readable lines: path, candidates kept and dropped, tokens and time."""
        lines = [
            f"path={self.path} (mode={self.mode})"
            + (f", fallback: {self.fallback}" if self.fallback else ""),
            f"candidates: {len(self.succeeded)} ok, {len(self.failed)} failed",
        ]
        for record in self.failed:
            lines.append(f"  dropped #{record.index} from {record.teacher}: {record.error_type}: {record.error}")
        replayed = [c for c in self.candidates if c.cached]
        if replayed:
            unknown = sum(1 for c in replayed if not c.usage)
            lines.append(
                f"replayed without a model call: {len(replayed)} (counted at their original cost"
                + (f"; {unknown} answered by DSPy's cache, whose cost is unknown)" if unknown else ")")
            )
        if self.fusor is not None and self.fusor.cached:
            lines.append("fusor reply replayed from the store (same prompt as an earlier call; counted at its "
                         "original cost)")
        if self.guard is not None:
            guard = self.guard
            kept = "kept the fused answer" if guard.kept_fused else f"returned the pick, candidate #{guard.index}"
            margin = f", margin {guard.margin:+.3g}" if guard.margin is not None else ""
            lines.append(f"guard ({guard.selector}): {kept}{margin}")
        if self.selector_failure is not None:
            failure = self.selector_failure
            lines.append(f"selector {failure.selector} ({failure.role}) failed: {failure.error_type}: {failure.error}")
        late = [c for c in self.candidates if c.late_usage]
        if late:
            lines.append(f"late answers after timeout: {len(late)} (usage counted)")
        total = self.total_usage
        lines.append(
            f"tokens: {total.input_tokens} in / {total.output_tokens} out over {total.calls} calls; "
            f"wall time {self.wall_time_s:.2f}s"
        )
        return "\n".join(lines)
