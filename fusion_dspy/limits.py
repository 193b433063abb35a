"""Provider limits, enforced client-side: requests per minute, tokens per minute, concurrent requests.

A pool config gives an LM a ``limits`` table::

    [[teachers]]
    name = "gpt-4o-mini"
    model = "openai/gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"
    settings = { num_retries = 6 }          # DSPy's own retry loop (backoff, honours Retry-After)
    limits = { requests_per_minute = 500, tokens_per_minute = 200000, max_concurrent = 32 }

and :meth:`~fusion_dspy.pool_config.LMSpec.build` returns a limited LM (:func:`limited_lm`): a ``dspy.LM`` whose
``__call__``/``acall`` first take a slot from its :class:`Limiter`, so the limits hold for every
caller (a Fuse's teachers, its fusor, a judge, an optimizer) and every thread of the process. One
limiter belongs to one LM object and its copies (``lm.copy()``, ``Module.deepcopy``).

Retries are DSPy's: ``dspy.LM(num_retries=...)`` retries rate limits (429), server errors (5xx),
timeouts and transport errors with exponential backoff, honouring the provider's ``Retry-After``.
There is no second retry loop here. The limiter adds what DSPy's loop lacks: after a call that
ended in a rate limit it holds the LM's admissions for a jittered pause, so K workers that were
throttled together do not come back together.

A *hard* quota (billing, an exhausted credit, a revoked key: ``dspy`` raises ``LMBillingError`` or
``LMAuthError``) is not transient; :func:`stop_cause` names it so a long run stops cleanly
instead of turning every remaining prompt into a failure, and resumes once the quota is back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import logging
import random
import threading
import time
from collections.abc import Iterable
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

from fusion_dspy.errors import FusionError

__all__ = [
    "HARD_QUOTA_ERRORS",
    "LMLimits",
    "Limiter",
    "QuotaExhaustedError",
    "applies_limits",
    "limited_lm",
    "report_error_types",
    "stop_cause",
]

_logger = logging.getLogger(__name__)

#: Error type names (as recorded in reports) that mean "stop the run": retrying cannot help.
HARD_QUOTA_ERRORS = frozenset({"LMBillingError", "LMAuthError", "BillingError", "AuthError"})

_WINDOW_S = 60.0
_ASYNC_POLL_S = 0.01
#: Engine attempts of the limited call running in this context (DSPy's retries happen inside it).
_ATTEMPTS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("fusion_dspy_attempts", default=None)


class QuotaExhaustedError(FusionError):
    """A run stopped on a hard quota or auth error; what finished before is kept, run again to resume."""


class LMLimits(BaseModel):
    """Client-side limits of one LM (each ``None``: unlimited).

    Attributes:
        requests_per_minute: Calls started in any 60 s window.
        tokens_per_minute: Input + output tokens of the calls finished in any 60 s window; a call
            starts only while the window is under the limit (in-flight calls can overshoot it by
            their own size).
        max_concurrent: Calls in flight at once.
        rate_limit_pause_s: Base pause after a call that ended in a rate limit; the actual pause is
            uniformly jittered in [0.5, 1.5] x this.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    max_concurrent: int | None = Field(default=None, ge=1)
    rate_limit_pause_s: float = Field(default=1.0, ge=0)

    @property
    def unlimited(self) -> bool:
        return self.requests_per_minute is None and self.tokens_per_minute is None and self.max_concurrent is None


class Limiter:
    """Admission control for one LM: thread-safe, and usable from asyncio (:meth:`aacquire`).

    Attributes:
        calls: Calls admitted. ``waited_s``: total time calls spent waiting for admission.
        rate_limited: Calls that ended in a rate-limit error after DSPy's retries.
        attempts: Engine attempts of those calls, counted on custom engines (``local/``, ``fake/``,
            any ``engine=``); :attr:`retries` counts the attempts beyond the first of each call (cache
            hits make none).
    """

    def __init__(self, limits: LMLimits, *, window_s: float = _WINDOW_S, clock: Any = time.monotonic) -> None:
        self.limits = limits
        self.window_s = window_s
        self._clock = clock
        self._cond = threading.Condition()
        self._starts: collections.deque[float] = collections.deque()
        self._tokens: collections.deque[tuple[float, int]] = collections.deque()
        self._token_sum = 0
        self._in_flight = 0
        self._paused_until = 0.0
        self.calls = 0
        self.waited_s = 0.0
        self.rate_limited = 0
        self.max_in_flight = 0
        self.attempts = 0
        self.counted = False
        self._retries = 0

    # -- admission -----------------------------------------------------------------------------------

    def acquire(self) -> None:
        """Block until a call may start, then count it as started (pair with :meth:`release`)."""
        started = self._clock()
        with self._cond:
            while (delay := self._delay(self._clock())) > 0:
                self._cond.wait(timeout=None if delay == float("inf") else delay)
            self._admit(started)

    async def aacquire(self) -> None:
        """:meth:`acquire` for asyncio: waits with ``asyncio.sleep`` (never a worker thread, which the
        calls in flight may need to finish)."""
        started = self._clock()
        while True:
            with self._cond:
                delay = self._delay(self._clock())
                if delay == 0:
                    self._admit(started)
                    return
            await asyncio.sleep(_ASYNC_POLL_S if delay == float("inf") else min(delay, _ASYNC_POLL_S))

    def count_attempt(self) -> None:
        attempts = _ATTEMPTS.get()
        if attempts is not None:
            attempts[0] += 1
        with self._cond:
            self.attempts += 1
            self.counted = True

    @property
    def retries(self) -> int | None:
        """Retries DSPy made (engine attempts beyond the first of a call); ``None`` when the engine is a
        provider's (DSPy does not expose its attempt count there)."""
        return self._retries if self.counted else None

    def _admit(self, started: float) -> None:
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        now = self._clock()
        self._starts.append(now)
        self.calls += 1
        self.waited_s += now - started

    def release(self, *, tokens: int = 0, rate_limited: bool = False, attempts: int = 0) -> None:
        """A call finished (after ``attempts`` engine attempts): free its slot, account its tokens."""
        with self._cond:
            self._in_flight -= 1
            self._retries += max(0, attempts - 1)
            now = self._clock()
            if tokens:
                self._tokens.append((now, tokens))
                self._token_sum += tokens
            if rate_limited:
                self.rate_limited += 1
                pause = self.limits.rate_limit_pause_s * random.uniform(0.5, 1.5)
                self._paused_until = max(self._paused_until, now + pause)
            self._cond.notify_all()

    def _delay(self, now: float) -> float:
        """Seconds until a call may start (0: now; inf: when a call finishes). Caller holds the lock."""
        limits = self.limits
        window = self.window_s
        while self._starts and self._starts[0] <= now - window:
            self._starts.popleft()
        while self._tokens and self._tokens[0][0] <= now - window:
            self._token_sum -= self._tokens.popleft()[1]
        waits = [0.0, self._paused_until - now]
        if limits.max_concurrent is not None and self._in_flight >= limits.max_concurrent:
            waits.append(float("inf"))
        if limits.requests_per_minute is not None and len(self._starts) >= limits.requests_per_minute:
            waits.append(self._starts[0] + window - now)
        if limits.tokens_per_minute is not None and self._token_sum >= limits.tokens_per_minute:
            waits.append(self._tokens[0][0] + window - now if self._tokens else 0.0)
        return max(0.0, *waits)

    def __deepcopy__(self, memo: dict[int, Any]) -> Limiter:
        return self  # copies of an LM share its provider's limits

    def __repr__(self) -> str:
        return f"Limiter({self.limits!r}, calls={self.calls}, in_flight={self._in_flight})"


def _limited_lm_class() -> type:
    import dspy

    class LimitedLM(dspy.LM):
        """A ``dspy.LM`` that takes a slot from its :class:`Limiter` around every call."""

        limiter: Limiter

        def __call__(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
            self.limiter.acquire()
            with self._slot():
                return super().__call__(prompt, messages=messages, **kwargs)

        async def acall(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
            await self.limiter.aacquire()
            with self._slot():
                return await super().acall(prompt, messages=messages, **kwargs)

        @contextlib.contextmanager
        def _slot(self) -> Iterator[None]:
            """One acquired call: count its engine attempts and tokens, then give the slot back."""
            attempts = [0]
            token = _ATTEMPTS.set(attempts)
            with _TokenMeter(self.model) as meter:
                try:
                    yield
                except Exception as error:
                    meter.error = error
                    raise
                finally:
                    _ATTEMPTS.reset(token)
                    self.limiter.release(tokens=meter.tokens(), rate_limited=meter.rate_limited,
                                         attempts=attempts[0])

    return LimitedLM


class _TokenMeter:
    """Reads the tokens of the LM call it wraps from the active ``dspy.track_usage`` tracker (one is
    opened when none is active), without taking them from the caller's accounting."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.error: BaseException | None = None

    def __enter__(self) -> _TokenMeter:
        import dspy

        self._own = None
        self._tracker = dspy.settings.usage_tracker
        if self._tracker is None:
            from dspy.utils.usage_tracker import UsageTracker

            self._tracker = UsageTracker()
            self._own = dspy.context(usage_tracker=self._tracker)
            self._own.__enter__()
        self._before = len(self._tracker.usage_data.get(self.model, ()))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._own is not None:
            self._own.__exit__(*exc)

    def tokens(self) -> int:
        entries = list(self._tracker.usage_data.get(self.model, ()))[self._before:]
        total = 0
        for entry in entries:
            if isinstance(entry, dict):
                total += int(entry.get("prompt_tokens") or entry.get("input_tokens") or 0)
                total += int(entry.get("completion_tokens") or entry.get("output_tokens") or 0)
        return total

    @property
    def rate_limited(self) -> bool:
        return type(self.error).__name__ in ("LMRateLimitError", "RateLimitError")


_CLASS: type | None = None


def limited_lm(lm: Any, limits: LMLimits | None, *, window_s: float = _WINDOW_S) -> Any:
    """``lm`` under ``limits``: the same object when there are none, else a limited ``dspy.LM`` that
    takes over ``lm``'s state (use it instead of ``lm``). ``window_s`` shortens the minute in tests."""
    import dspy

    if limits is None or limits.unlimited:
        return lm
    if not isinstance(lm, dspy.LM):
        raise TypeError(f"limits apply to dspy.LM objects, got {type(lm).__name__}; build the LM with dspy.LM(...).")
    global _CLASS
    if _CLASS is None:
        _CLASS = _limited_lm_class()
    limited = _CLASS.__new__(_CLASS)
    limited.__dict__.update(lm.__dict__)
    limiter = limited.limiter = Limiter(limits, window_s=window_s)
    if not isinstance(limited._engine_spec, str):  # a custom engine: count DSPy's attempts on it
        limited._engine_spec = _CountingEngine(limited._engine_spec, limiter)
        if limited._async_engine_spec is not None:
            limited._async_engine_spec = _CountingEngine(limited._async_engine_spec, limiter, asynchronous=True)
    return limited


class _CountingEngine:
    """Counts every attempt DSPy's retry loop makes on a custom engine (``Limiter.attempts``)."""

    def __init__(self, engine: Any, limiter: Limiter, *, asynchronous: bool = False) -> None:
        self._engine = engine
        self._limiter = limiter
        if asynchronous:
            async def complete(request: Any) -> Any:
                limiter.count_attempt()
                return await engine.complete(request)
        else:
            def complete(request: Any) -> Any:
                limiter.count_attempt()
                return engine.complete(request)
        self.complete = complete

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def __deepcopy__(self, memo: dict[int, Any]) -> _CountingEngine:
        return self


def applies_limits(build: Any) -> Any:
    """Decorate an LM spec's ``build()`` so the LM it returns obeys the spec's ``limits``."""

    @functools.wraps(build)
    def wrapper(spec: Any) -> Any:
        return limited_lm(build(spec), getattr(spec, "limits", None))

    return wrapper


def stop_cause(error: BaseException | None = None, error_types: Iterable[tuple[str, str | None]] = ()) -> str | None:
    """Why a run must stop rather than record a failure: a hard quota or auth error, or ``None``.

    ``error`` is an exception a call raised (its chain is searched); ``error_types`` are
    ``(where, error_type)`` pairs from a report's candidates and fusor.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ in HARD_QUOTA_ERRORS:
            return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        report = getattr(error, "report", None)
        if report is not None:
            cause = stop_cause(None, report_error_types(report))
            if cause:
                return cause
        error = error.__cause__ or error.__context__
    for where, error_type in error_types:
        if error_type in HARD_QUOTA_ERRORS:
            return f"{where}: {error_type}"
    return None


def report_error_types(report: Any) -> list[tuple[str, str | None]]:
    """``(where, error_type)`` of every failed draw and of the fusor in a ``FusionReport``."""
    pairs = [(f"teacher {c.teacher!r}", c.error_type) for c in report.candidates if c.error_type]
    if report.fusor is not None and report.fusor.error_type:
        pairs.append((f"fusor {report.fusor.lm!r}", report.fusor.error_type))
    return pairs
