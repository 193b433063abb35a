"""Where a Fuse call's candidates come from: the candidate store, a concurrent call, or the teachers.

For each planned draw, in this order:

1. the store has it: replayed at its original cost, no LM call (failures stored as parse errors are
   replayed as failures, so a re-run sees the same candidate set);
2. another call is generating it right now (a :class:`~fusion_dspy.store.ClaimingStore`): wait for
   that result instead of paying twice. A call waits only after its own draws are done and their
   claims released, so two calls never wait on each other;
3. otherwise the teacher is called, and the result is stored (answers and parse failures; transient
   faults are not, so the next call retries them).

Without a store every draw goes straight to its teacher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from fusion_dspy.errors import StoredFailure
from fusion_dspy.fuse_call import error_text
from fusion_dspy.sampling import DrawOutcome
from fusion_dspy.sampling import Tracked
from fusion_dspy.sampling import arun_draws
from fusion_dspy.sampling import merge_into_parent_tracker
from fusion_dspy.sampling import run_draws
from fusion_dspy.store import CandidateStore
from fusion_dspy.store import ClaimingStore
from fusion_dspy.store import StoredDraw
from fusion_dspy.store import draw_key
from fusion_dspy.teacher import Draw

__all__ = ["acollect_draws", "collect_draws"]


def collect_draws(
    generate: dspy.Predict,
    draws: Sequence[Draw],
    inputs: dict[str, Any],
    *,
    signature: type[dspy.Signature],
    store: CandidateStore | None,
    timeout: float | None,
    max_threads: int | None,
) -> list[DrawOutcome]:
    """Every planned draw's outcome, in plan order (see the module docs for the sources)."""
    book = _StoreBook(store, signature, generate, draws, inputs)
    found, missing = book.lookup()
    mine, theirs = book.claim(missing)
    try:
        fresh = run_draws(generate, mine, inputs, timeout=timeout, max_threads=max_threads)
        book.remember(fresh)
    finally:
        book.release(mine)
    if theirs:
        waited, leftover = book.replay(theirs, [book.wait(draw, timeout) for draw in theirs])
        more = run_draws(generate, leftover, inputs, timeout=timeout, max_threads=max_threads)
        book.remember(more)
        found, fresh = found + waited, fresh + more
    return sorted([*found, *fresh], key=lambda o: o.draw.index)


async def acollect_draws(
    generate: dspy.Predict,
    draws: Sequence[Draw],
    inputs: dict[str, Any],
    *,
    signature: type[dspy.Signature],
    store: CandidateStore | None,
    timeout: float | None,
) -> list[DrawOutcome]:
    """The asyncio counterpart of :func:`collect_draws`; waiting for other calls happens off the loop."""
    book = _StoreBook(store, signature, generate, draws, inputs)
    found, missing = book.lookup()
    mine, theirs = book.claim(missing)
    try:
        fresh = await arun_draws(generate, mine, inputs, timeout=timeout)
        book.remember(fresh)
    finally:
        book.release(mine)
    if theirs:
        entries = await asyncio.gather(*(asyncio.to_thread(book.wait, draw, timeout) for draw in theirs))
        waited, leftover = book.replay(theirs, list(entries))
        more = await arun_draws(generate, leftover, inputs, timeout=timeout)
        book.remember(more)
        found, fresh = found + waited, fresh + more
    return sorted([*found, *fresh], key=lambda o: o.draw.index)


class _StoreBook:
    """The store side of one call: each draw's key, and what is read, claimed and written."""

    def __init__(
        self,
        store: CandidateStore | None,
        signature: type[dspy.Signature],
        generate: dspy.Predict,
        draws: Sequence[Draw],
        inputs: dict[str, Any],
    ) -> None:
        self.store = store
        self.signature = signature
        self.draws = list(draws)
        self.keys: dict[int, str] = {}
        if store is not None:
            # The generate predictor's instruction and demos are part of the key: an optimizer that
            # changes them must not be served candidates made under the old prompt.
            demos = [dict(demo) for demo in generate.demos]
            for draw in self.draws:
                self.keys[draw.index] = draw_key(
                    signature=signature.signature,
                    instructions=generate.signature.instructions,
                    demos=demos,
                    inputs=inputs,
                    teacher=draw.teacher.name,
                    sample=draw.sample,
                    temperature=draw.teacher.temperature,
                    seed=draw.seed,
                )
        self._claims = isinstance(store, ClaimingStore)

    def lookup(self) -> tuple[list[DrawOutcome], list[Draw]]:
        if self.store is None:
            return [], self.draws
        return self.replay(self.draws, [self.store.get(self.keys[d.index]) for d in self.draws])

    def replay(self, draws: list[Draw], entries: list[StoredDraw | None]) -> tuple[list[DrawOutcome], list[Draw]]:
        """Outcomes of the draws that have a stored entry, and the draws that have none."""
        found, missing = [], []
        for draw, entry in zip(draws, entries, strict=True):
            if entry is None:
                missing.append(draw)
            elif not entry.ok:
                failure = StoredFailure(entry.error_type or "Error", entry.error or "")
                found.append(DrawOutcome(draw, Tracked(error=failure), stored=entry))
            else:
                prediction = dspy.Prediction(**_typed_outputs(self.signature, entry.outputs or {}))
                found.append(DrawOutcome(draw, Tracked(value=prediction), stored=entry))
        return found, missing

    def claim(self, missing: list[Draw]) -> tuple[list[Draw], list[Draw]]:
        """Split missing draws into those this call generates and those another call is generating."""
        if not self._claims:
            return missing, []
        mine, theirs = [], []
        for draw in missing:
            (mine if self.store.claim(self.keys[draw.index]) else theirs).append(draw)
        return mine, theirs

    def release(self, claimed: list[Draw]) -> None:
        if self._claims:
            for draw in claimed:
                self.store.release(self.keys[draw.index])

    def wait(self, draw: Draw, timeout: float | None) -> StoredDraw | None:
        return self.store.wait(self.keys[draw.index], timeout)

    def remember(self, fresh: list[DrawOutcome]) -> None:
        """Account for fresh draws in the caller's tracker and store them (answers and parse failures)."""
        merge_into_parent_tracker([o.result for o in fresh])
        if self.store is None:
            return
        for outcome in fresh:
            result = outcome.result
            if result.error is None:
                outputs = {name: result.value[name] for name in self.signature.output_fields}
                entry = StoredDraw(outputs=_jsonable(outputs), usage=result.usage, latency_s=result.latency_s)
            elif isinstance(result.error, AdapterParseError):
                entry = StoredDraw(
                    outputs=None,
                    usage=result.usage,
                    latency_s=result.latency_s,
                    error=error_text(result.error),
                    error_type=type(result.error).__name__,
                )
            else:
                continue  # A transient fault: the next call asks this teacher again.
            self.store.put(self.keys[outcome.draw.index], entry)


def _jsonable(outputs: dict[str, Any]) -> dict[str, Any]:
    import pydantic

    return {name: pydantic.TypeAdapter(Any).dump_python(value, mode="json") for name, value in outputs.items()}


def _typed_outputs(signature: type[dspy.Signature], outputs: dict[str, Any]) -> dict[str, Any]:
    """Re-type stored JSON values with the signature's annotations (pydantic models, lists...)."""
    import pydantic

    return {
        name: pydantic.TypeAdapter(field.annotation).validate_python(outputs[name])
        for name, field in signature.output_fields.items()
    }
