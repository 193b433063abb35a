"""Run many Fuse calls at once: a bounded concurrent map, and Fuse variants that share everything but settings.

``bounded_map`` keeps at most ``concurrency`` items in flight, pulls the next item from the (possibly
lazy) iterable only when a slot frees up, and yields each outcome as soon as it is ready, so memory
holds ``concurrency`` items and results, never the whole run. Workers are threads: a Fuse call is
I/O-bound (it waits on LMs), the sync path works with every LM (API, llama.cpp, recorded outputs),
and DSPy's thread-local ``dspy.context`` overrides are carried into each worker, as
``dspy.Parallel`` does.

``fuse_variant`` gives a Fuse with other settings (N, mode, selector) that shares the original's
predictors, pool, LMs and candidate store. Concurrent calls must never ``configure`` a shared
Fuse (a call reads its settings while it runs); each configuration gets its own variant instead.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import threading
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from typing import Any
from typing import Generic
from typing import TypeVar

from fusion_dspy.config import FuseConfig

__all__ = ["Outcome", "bounded_map", "check_concurrency", "fuse_variant"]

T = TypeVar("T")
R = TypeVar("R")


def check_concurrency(concurrency: Any, *, name: str = "concurrency") -> int:
    """Validate a concurrency argument (an int >= 1) and return it."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"{name} must be an int >= 1 (how many prompts run at once), got {concurrency!r}.")
    return concurrency


@dataclasses.dataclass(frozen=True)
class Outcome(Generic[T, R]):
    """One item and what its work returned, or the exception it raised."""

    item: T
    value: R | None = None
    error: BaseException | None = None


class bounded_map(Generic[T, R]):  # noqa: N801 - used like a function
    """Iterate ``Outcome``s of ``work(item)`` in completion order, at most ``concurrency`` at once.

    Call :meth:`stop` to start no new item; the items in flight still complete and are yielded.
    With ``concurrency=1`` the work runs in the calling thread (no thread hop, same tracebacks).

    Example:
        >>> for outcome in bounded_map(fetch, urls, concurrency=8):
        ...     write(outcome.item, outcome.value)
    """

    def __init__(self, work: Callable[[T], R], items: Iterable[T], *, concurrency: int) -> None:
        self.work = work
        self.items = iter(items)
        self.concurrency = check_concurrency(concurrency)
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def __iter__(self) -> Iterator[Outcome[T, R]]:
        if self.concurrency == 1:
            yield from self._serial()
        else:
            yield from self._threaded()

    def _run(self, item: T) -> Outcome[T, R]:
        try:
            return Outcome(item, value=self.work(item))
        except Exception as error:  # handed to the consumer, which decides what is fatal
            return Outcome(item, error=error)

    def _serial(self) -> Iterator[Outcome[T, R]]:
        for item in self.items:
            if self.stopped:
                return
            yield self._run(item)

    def _threaded(self) -> Iterator[Outcome[T, R]]:
        from fusion_dspy.threads import bind_context

        run = bind_context(self._run)  # the caller's dspy.context, in every worker thread
        executor = concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="fuse-work")
        in_flight: set[concurrent.futures.Future[Outcome[T, R]]] = set()
        try:
            exhausted = False
            while True:
                while not exhausted and not self.stopped and len(in_flight) < self.concurrency:
                    item = next(self.items, _END)
                    if item is _END:
                        exhausted = True
                        break
                    in_flight.add(executor.submit(run, item))
                if not in_flight:
                    return
                done, in_flight = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            # A consumer that stops early (an exception, Ctrl-C) abandons queued work; running calls
            # finish in their threads and their results are dropped (resume redoes them).
            for future in in_flight:
                future.cancel()
            executor.shutdown(wait=False, cancel_futures=True)


_END: Any = object()


def fuse_variant(fuse: Any, **changes: Any) -> Any:
    """A shallow copy of ``fuse`` with its own settings (``Fuse.configure`` arguments), sharing the rest.

    The copy shares the predictors (so an optimizer's instructions and demos apply), the pool and
    its LMs, and the candidate store; configuring it never changes ``fuse``. A new ``prompt``
    re-renders the fusor's instruction, so the variant then gets its own fusor predictor (same
    demos) rather than rewriting the shared one.
    """
    variant = copy.copy(fuse)
    variant.config = FuseConfig(fuse.settings, fuse.pool, signature=fuse.config.signature,
                                types=getattr(fuse.config, "types", None))
    if "prompt" in changes:
        variant.fusor = copy.copy(fuse.fusor)
    return variant.configure(**changes) if changes else variant
