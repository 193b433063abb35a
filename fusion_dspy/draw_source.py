"""Where a Fuse call's candidates come from: the candidate store, a concurrent call, or the teachers.

For each planned draw, in this order:

1. the store has it: replayed at its original cost, no LM call (failures stored as parse errors are
   replayed as failures, so a re-run sees the same candidate set). An entry that no longer validates
   against the signature is a miss (logged): the draw is generated again and replaces it;
2. another call is generating it right now (a :class:`~fusion_dspy.store.ClaimingStore`): wait for
   that result instead of paying twice. A call waits only after its own draws are done and their
   claims released, so two calls never wait on each other. The wait has no deadline of its own: the
   generating call applies its ``timeout`` (time queued for a slot excluded) and always releases its
   claim, also when it fails, times out or is cancelled; a draw it did not store is then generated
   by the waiting call itself;
3. otherwise the teacher is called, and the result is stored (answers and parse failures; transient
   faults are not, so the next call retries them).

Without a store every draw goes straight to its teacher. :func:`stored_call_steps` applies the same
sources and rules to a single call, the fusor's. :func:`draw_steps` is a sans-I/O step of
the call engine: it yields the requests of :mod:`fusion_dspy.drivers` and returns the outcomes.
A draw that times out and answers later is stored then (it was paid for), unless another call has
stored that draw meanwhile or is generating it: a replay gives the candidates a call used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from fusion_dspy.drivers import Batch
from fusion_dspy.drivers import Invoke
from fusion_dspy.drivers import LMCall
from fusion_dspy.drivers import Steps
from fusion_dspy.errors import StoredFailure
from fusion_dspy.errors import error_text
from fusion_dspy.outcomes import DrawOutcome
from fusion_dspy.outcomes import Tracked
from fusion_dspy.store import CandidateStore
from fusion_dspy.store import ClaimingStore
from fusion_dspy.store import StoredDraw
from fusion_dspy.store import draw_key
from fusion_dspy.teacher import Draw

__all__ = ["draw_keys", "draw_steps", "replayed", "storable", "stored_call_steps"]

_logger = logging.getLogger(__name__)

#: ``on_late(draw, tracked)``: a timed-out draw answered after all.
LateHook = Callable[[Draw, Tracked], None]


def draw_steps(
    generate: dspy.Predict,
    draws: Sequence[Draw],
    inputs: dict[str, Any],
    *,
    signature: type[dspy.Signature],
    store: CandidateStore | None,
    timeout: float | None,
    max_threads: int | None,
    on_late: LateHook | None = None,
) -> Steps[list[DrawOutcome]]:
    """Every planned draw's outcome, in plan order (see the module docs for the sources)."""
    book = _StoreBook(store, signature, generate, draws, inputs)
    found, missing = book.lookup()
    mine, theirs = book.claim(missing)
    try:
        fresh = yield from _generate(book, generate, mine, inputs, timeout, max_threads, on_late)
    finally:
        book.release(mine)
    if theirs:
        waited = yield Invoke(lambda: book.wait_all(theirs))
        entries = waited.value if waited.error is None else [None] * len(theirs)
        replayed, leftover = book.replay(theirs, entries)
        more = yield from _generate(book, generate, leftover, inputs, timeout, max_threads, on_late)
        found, fresh = found + replayed, fresh + more
    return sorted([*found, *fresh], key=lambda o: o.draw.index)


def _generate(
    book: _StoreBook,
    generate: dspy.Predict,
    draws: list[Draw],
    inputs: Mapping[str, Any],
    timeout: float | None,
    max_threads: int | None,
    on_late: LateHook | None,
) -> Steps[list[DrawOutcome]]:
    if not draws:
        return []

    def late(position: int, result: Tracked) -> None:
        # Runs in the late call's thread (or as a loop callback), after this call has moved on.
        try:
            if on_late is not None:
                on_late(draws[position], result)
            book.remember([DrawOutcome(draws[position], result)], late=True)
        except Exception as error:  # nobody is left to raise to: say so, once
            _logger.warning("Fuse: could not keep the late answer of draw #%d: %r", draws[position].index, error)

    calls = tuple(LMCall(generate, _call_kwargs(draw, inputs)) for draw in draws)
    results = yield Batch(calls, timeout=timeout, max_concurrency=max_threads, on_late=late)
    outcomes = [DrawOutcome(draw, result) for draw, result in zip(draws, results, strict=True)]
    book.remember(outcomes)
    return outcomes


def draw_keys(generate: dspy.Predict, draws: Sequence[Draw], inputs: Mapping[str, Any]) -> dict[int, str]:
    """The candidate-store key of each draw, by draw index: the one place a Fuse's draw keys are made.

    The generate predictor's signature (instructions, field types and descriptions) and demos are part
    of the key: an optimizer that changes them must not be served candidates made under the old prompt.
    """
    demos = [dict(demo) for demo in generate.demos]
    return {
        draw.index: draw_key(signature=generate.signature, demos=demos, inputs=inputs, teacher=draw.teacher.name,
                             sample=draw.sample, temperature=draw.teacher.temperature, seed=draw.seed)
        for draw in draws
    }


def _call_kwargs(draw: Draw, inputs: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = dict(inputs)
    kwargs["config"] = draw.config
    if draw.teacher.lm is not None:
        kwargs["lm"] = draw.teacher.lm
    return kwargs


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
        self._stale: set[int] = set()  # draws whose stored entry does not fit the signature
        self._claimed: set[int] = set()
        if store is not None:
            self.keys = draw_keys(generate, self.draws, inputs)
        self._claims = isinstance(store, ClaimingStore)

    def lookup(self) -> tuple[list[DrawOutcome], list[Draw]]:
        if self.store is None:
            return [], self.draws
        return self.replay(self.draws, [self.store.get(self.keys[d.index]) for d in self.draws])

    def replay(self, draws: list[Draw], entries: list[StoredDraw | None]) -> tuple[list[DrawOutcome], list[Draw]]:
        """Outcomes of the draws that have a usable stored entry, and the draws that have none."""
        found, missing = [], []
        for draw, entry in zip(draws, entries, strict=True):
            result = None if entry is None else _replay(entry, self.signature, self.keys[draw.index])
            if result is None:
                if entry is not None:
                    self._stale.add(draw.index)
                missing.append(draw)
            else:
                found.append(DrawOutcome(draw, result, stored=entry))
        return found, missing

    def claim(self, missing: list[Draw]) -> tuple[list[Draw], list[Draw]]:
        """Split missing draws into those this call generates and those another call is generating.

        A draw whose stored entry is stale is generated without a claim (a stored key is never claimed).
        """
        if not self._claims:
            return missing, []
        mine, theirs = [], []
        try:
            for draw in missing:
                if draw.index in self._stale:
                    mine.append(draw)
                elif self.store.claim(self.keys[draw.index]):
                    self._claimed.add(draw.index)
                    mine.append(draw)
                else:
                    theirs.append(draw)
        except BaseException:
            self.release(mine)  # a claim that failed must not leave the ones before it held forever
            raise
        return mine, theirs

    def release(self, draws: list[Draw]) -> None:
        """Release this call's claims among ``draws``."""
        for draw in draws:
            if draw.index in self._claimed:
                self._claimed.discard(draw.index)
                self.store.release(self.keys[draw.index])

    def wait_all(self, draws: list[Draw]) -> list[StoredDraw | None]:
        """Wait for other calls' results (see the module docs: the generating call bounds the wait)."""
        return [self.store.wait(self.keys[draw.index]) for draw in draws]

    def remember(self, fresh: list[DrawOutcome], *, late: bool = False) -> None:
        """Store fresh draws: answers and parse failures (transient faults are asked again next time).

        ``late``: answers of draws that timed out. Meanwhile a later call may have generated the draw
        again and answered with it; its entry is kept (a replay must give the candidates a call used),
        and the late answer is stored only where the store has no entry and no other call is making one.
        """
        if self.store is None:
            return
        for outcome in fresh:
            entry = storable(outcome.result, self.signature)
            if entry is None:
                continue
            key = self.keys[outcome.draw.index]
            if late:
                self._keep_late(outcome.draw.index, key, entry)
            else:
                self.store.put(key, entry)

    def _keep_late(self, index: int, key: str, entry: StoredDraw) -> None:
        """Store a late answer unless the draw was stored meanwhile or another call is generating it."""
        if index in self._claimed or index in self._stale:  # still ours (claimed, or replacing a stale entry)
            self.store.put(key, entry)
            return
        if isinstance(self.store, ClaimingStore):
            if not self.store.claim(key):  # a claim, not a get: a counting layer sees no lookup
                return
            try:
                self.store.put(key, entry)
            finally:
                self.store.release(key)
            return
        stored = self.store.get(key)
        if stored is None or _replay(stored, self.signature, key) is None:
            self.store.put(key, entry)


def storable(result: Tracked, signature: type[dspy.Signature]) -> StoredDraw | None:
    """What a store keeps of a reply: an answer or a parse failure; ``None`` for a transient fault
    (a timeout, a connection or rate-limit error), which the next call asks again."""
    if result.error is None:
        outputs = {name: result.value[name] for name in signature.output_fields}
        return StoredDraw(outputs=_jsonable(outputs), usage=result.usage, latency_s=result.latency_s)
    if isinstance(result.error, AdapterParseError):
        return StoredDraw(outputs=None, usage=result.usage, latency_s=result.latency_s,
                          error=error_text(result.error), error_type=type(result.error).__name__)
    return None


def replayed(entry: StoredDraw, signature: type[dspy.Signature]) -> Tracked:
    """A stored entry as the call's outcome: the typed prediction, or the stored failure."""
    if not entry.ok:
        return Tracked(error=StoredFailure(entry.error_type or "Error", entry.error or ""))
    return Tracked(value=dspy.Prediction(**_typed_outputs(signature, entry.outputs or {})))


def stored_call_steps(
    call: LMCall, *, key: str, signature: type[dspy.Signature], store: CandidateStore | None
) -> Steps[tuple[Tracked, StoredDraw | None]]:
    """One LM call (the fusor's), answered by ``store`` under ``key`` when it can, by the same rules
    as the draws: the stored entry; else another call's result if one is making it (single flight);
    else the call, whose reply is stored. Returns the outcome and the entry it was replayed from
    (``None``: the call was made now)."""
    entry = None if store is None else store.get(key)
    result = None if entry is None else _replay(entry, signature, key)
    claimed = False
    if entry is None and isinstance(store, ClaimingStore):  # a stale entry is generated unclaimed
        claimed = store.claim(key)
        if not claimed:
            waited = yield Invoke(lambda: store.wait(key))
            entry = waited.value if waited.error is None else None
            result = None if entry is None else _replay(entry, signature, key)
    if result is not None:
        return result, entry
    try:
        (result,) = yield Batch((call,))
        if store is not None and (kept := storable(result, signature)) is not None:
            store.put(key, kept)
    finally:
        if claimed:
            store.release(key)
    return result, None


def _replay(entry: StoredDraw, signature: type[dspy.Signature], key: str) -> Tracked | None:
    """:func:`replayed`, or ``None`` (a miss, logged) when the entry does not fit ``signature``:
    written by an older program or by hand, it must cost a new call, not the whole Fuse call."""
    try:
        return replayed(entry, signature)
    except (KeyError, TypeError, ValueError) as error:  # pydantic's ValidationError is a ValueError
        first_line = (str(error) or repr(error)).splitlines()[0]
        _logger.warning("Fuse: the stored entry %s does not fit the signature (%s: %s); generating it again.",
                        key, type(error).__name__, first_line)
        return None


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
