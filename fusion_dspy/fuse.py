"""``Fuse``: Fusion-of-N as a DSPy module."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import dspy

from fusion_dspy.config import FuseConfig
from fusion_dspy.config import FuseSettings
from fusion_dspy.draw_source import acollect_draws
from fusion_dspy.draw_source import collect_draws
from fusion_dspy.fuse_call import FuseCall
from fusion_dspy.fusion_signature import fusion_signature
from fusion_dspy.fusion_signature import resolve_signature
from fusion_dspy.pool import Pool
from fusion_dspy.prediction import FusedPrediction
from fusion_dspy.prompt import FusorPrompt
from fusion_dspy.sampling import DrawOutcome
from fusion_dspy.sampling import Tracked
from fusion_dspy.sampling import atracked
from fusion_dspy.sampling import merge_into_parent_tracker
from fusion_dspy.sampling import tracked
from fusion_dspy.selectors.base import Selector
from fusion_dspy.store import CandidateStore
from fusion_dspy.teacher import Draw
from fusion_dspy.teacher import Teacher
from fusion_dspy.teacher import plan_draws

__all__ = ["Fuse"]

_logger = logging.getLogger(__name__)

_MODES = ("fuse", "select", "auto")


class Fuse(dspy.Module):
    """Sample ``n`` candidates from a teacher pool in parallel, then fuse them into one answer.

    Fusion-of-N (Khairi et al., 2025, "Making, not Taking, the Best of N"): instead of keeping the
    best candidate, a *fusor* LM compares all of them and writes a new answer that keeps their
    strengths and drops their weaknesses. ``mode="select"`` keeps one instead (Best-of-N), and
    ``mode="auto"`` skips the fusor when the candidates already agree.

    The module holds two predictors that DSPy optimizers see and tune: ``generate`` (the task
    signature, shared by every teacher) and ``fusor`` (task inputs + ``candidates`` ->
    ``comparison`` + the task outputs). LMs are never saved; teachers and the fusor are saved by
    name and resolved against the Fuse's pool on load.

    Args:
        signature: The task, as a string (``"question -> answer"``) or a ``dspy.Signature`` class.
            Typed outputs (int, list, pydantic models, Literal) come back typed.
        n: Number of candidates per call, spread over the teachers by weighted round-robin
            (see :func:`fusion_dspy.teacher.plan_draws`).
        teachers: The teacher pool: ``Teacher`` objects (or bare LMs, wrapped with defaults).
            ``None`` draws every candidate from the configured LM at temperature 0.7.
        fusor: The LM that fuses; ``None`` uses the configured LM.
        mode: ``"fuse"``, ``"select"`` or ``"auto"``.
        selector: The Best-of-N selector for ``select`` and for the fallback when the fusor
            fails: a :class:`~fusion_dspy.selectors.Selector` or a registered name
            (``"mbr"`` by default: chrF minimum Bayes risk, no extra LM calls).
        prompt: The fusor prompt configuration (:class:`FusorPrompt`).
        agree: Share of candidates that must agree for ``auto`` to skip the fusor.
        min_candidates: Fewest successful candidates to continue with; fewer raises
            :class:`~fusion_dspy.errors.CandidatesExhaustedError` naming every failure.
        timeout: Seconds to wait for the teachers; late teachers are dropped and reported.
        seed: Base seed of the draws (seed + sample index) and of the candidate shuffle.
        shuffle: Shuffle candidates before the fusor reads them (the paper saw a position bias).
        max_threads: Cap on concurrent teacher calls (default: ``n``).
        store: A :class:`~fusion_dspy.store.CandidateStore`: draws found there are not generated
            again, and new draws are added: answers, and malformed answers as failures; transient
            faults are retried on the next call (see :mod:`fusion_dspy.store`).

    Example:
        >>> fuse = Fuse("question -> answer", n=4,
        ...             teachers=[Teacher(lm_a, temperature=0.7), Teacher(lm_b, samples=2)],
        ...             fusor=lm_c)
        >>> pred = fuse(question="What is the capital of Australia?")
        >>> pred.answer, pred.fusion.path
    """

    def __init__(
        self,
        signature: str | type[dspy.Signature],
        n: int = 5,
        *,
        teachers: Sequence[Teacher | dspy.BaseLM] | None = None,
        fusor: dspy.BaseLM | None = None,
        mode: str = "fuse",
        selector: Selector | str | None = None,
        prompt: FusorPrompt | None = None,
        agree: float = 0.8,
        min_candidates: int = 1,
        timeout: float | None = None,
        seed: int = 0,
        shuffle: bool = True,
        max_threads: int | None = None,
        store: CandidateStore | None = None,
    ) -> None:
        super().__init__()
        self.signature = resolve_signature(signature)
        _check_n(n)
        _check_mode(mode)
        if prompt is not None and not isinstance(prompt, FusorPrompt):
            raise TypeError(f"prompt must be a FusorPrompt, got {type(prompt).__name__}.")
        if not isinstance(agree, (int, float)) or not 0 < agree <= 1:
            raise ValueError(f"agree must be a share in (0, 1], got {agree!r}.")
        if isinstance(min_candidates, bool) or not isinstance(min_candidates, int) or not 1 <= min_candidates <= n:
            raise ValueError(f"min_candidates must be an int in [1, n={n}], got {min_candidates!r}.")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout!r}.")

        self.pool = Pool()
        teacher_names = self.pool.add_teachers(_as_teachers(teachers))
        fusor_name = self.pool.add_fusor(fusor)
        self._selector = _as_selector(selector)
        prompt = prompt or FusorPrompt()
        self.config = FuseConfig(
            FuseSettings(
                n=n,
                mode=mode,
                teachers=teacher_names,
                fusor=fusor_name,
                selector=self._selector.name,
                agree=float(agree),
                min_candidates=min_candidates,
                seed=seed,
                shuffle=shuffle,
                prompt=prompt,
            ),
            self.pool,
        )
        plan_draws(self.teachers, n, seed=seed)  # Fail now, not at call time, on an impossible plan.
        self.generate = dspy.Predict(self.signature)
        fused_signature, self.fusion_fields = fusion_signature(self.signature, prompt)
        self.fusor = dspy.Predict(fused_signature)
        self.timeout = timeout
        self.max_threads = max_threads
        self.store = store

    # -- configuration -------------------------------------------------------------------------------

    @property
    def settings(self) -> FuseSettings:
        return self.config.settings

    @property
    def n(self) -> int:
        return self.settings.n

    @property
    def mode(self) -> str:
        return self.settings.mode

    @property
    def teachers(self) -> list[Teacher]:
        """The active teachers (resolved by name from the pool)."""
        return self.pool.resolve_teachers(self.settings.teachers)

    @property
    def fusor_lm(self) -> dspy.BaseLM | None:
        """The active fusor LM (``None``: the configured LM)."""
        return self.pool.resolve_fusor(self.settings.fusor)

    @property
    def prompt(self) -> FusorPrompt:
        return self.settings.prompt

    @property
    def selector(self) -> Selector:
        if self._selector.name != self.settings.selector:
            from fusion_dspy.selectors import get_selector

            self._selector = get_selector(self.settings.selector)
        return self._selector

    def register(
        self,
        *,
        teachers: Iterable[Teacher] = (),
        fusors: Iterable[dspy.BaseLM] | Mapping[str, dspy.BaseLM] = (),
    ) -> Fuse:
        """Make more teachers and fusor LMs known by name (for ``load`` and ``configure``).

        ``fusors`` is a list (each named by its model string) or a mapping from the names you want,
        e.g. the names of a pool config file, to LMs.
        """
        self.pool.add_teachers(teachers)
        named = fusors.items() if isinstance(fusors, Mapping) else ((None, lm) for lm in fusors)
        for name, lm in named:
            self.pool.add_fusor(lm, name)
        return self

    def configure(
        self,
        *,
        n: int | None = None,
        mode: str | None = None,
        teachers: Sequence[str | Teacher] | None = None,
        fusor: str | dspy.BaseLM | None = None,
        selector: Selector | str | None = None,
        prompt: FusorPrompt | None = None,
        agree: float | None = None,
        min_candidates: int | None = None,
        seed: int | None = None,
        shuffle: bool | None = None,
    ) -> Fuse:
        """Change the configuration in place, validated as a whole; unset arguments keep their value.

        ``teachers`` and ``fusor`` take pool names (or objects, which are registered). A new
        ``prompt`` re-renders the fusor instruction, replacing any instruction an optimizer wrote.
        """
        changes: dict[str, Any] = {}
        if n is not None:
            _check_n(n)
            changes["n"] = n
        if mode is not None:
            _check_mode(mode)
            changes["mode"] = mode
        if teachers is not None:
            names = [t if isinstance(t, str) else self.pool.add_teachers([t])[0] for t in teachers]
            self.pool.resolve_teachers(names)
            if not names:
                raise ValueError("teachers must name at least one teacher.")
            changes["teachers"] = names
        if fusor is not None:
            changes["fusor"] = fusor if isinstance(fusor, str) else self.pool.add_fusor(fusor)
            self.pool.resolve_fusor(changes["fusor"])
        if selector is not None:
            self._selector = _as_selector(selector)
            changes["selector"] = self._selector.name
        for key, value in (("prompt", prompt), ("agree", agree), ("min_candidates", min_candidates),
                           ("seed", seed), ("shuffle", shuffle)):
            if value is not None:
                changes[key] = value
        settings = FuseSettings.model_validate({**self.settings.model_dump(), **changes})
        if settings.min_candidates > settings.n:
            raise ValueError(f"min_candidates={settings.min_candidates} exceeds n={settings.n}.")
        plan_draws(self.pool.resolve_teachers(settings.teachers), settings.n, seed=settings.seed)
        self.config.settings = settings
        if prompt is not None:
            fused_signature, self.fusion_fields = fusion_signature(self.signature, prompt)
            name = self.fusion_fields.comparison
            wanted = fused_signature.output_fields[name].json_schema_extra["desc"]
            if self.fusor.signature.output_fields[name].json_schema_extra.get("desc") == wanted:
                self.fusor.signature = self.fusor.signature.with_instructions(fused_signature.instructions)
            else:
                # Another strategy describes the comparison differently: a fresh signature (DSPy's
                # with_updated_fields nests deeper on every call and overflows after ~70 switches).
                self.fusor.signature = fused_signature
        return self

    # -- calls ---------------------------------------------------------------------------------------

    def forward(self, **kwargs: Any) -> FusedPrediction:
        inputs, draws, started = self._begin(kwargs)
        outcomes = collect_draws(self.generate, draws, inputs, signature=self.signature, store=self.store,
                                 timeout=self.timeout, max_threads=self.max_threads)
        call = self._call(inputs, outcomes, started)
        path = call.initial_path()
        if path == "fuse":
            fusor_inputs, order = call.fusor_inputs(self.fusion_fields)
            result = tracked(lambda: self.fusor(**fusor_inputs, **self._fusor_lm_kwargs()))
            if self._accept_fusion(call, result, order):
                return call.finish("fuse")
            path = "select"
        if path == "select":
            selector = self.selector
            result = tracked(lambda: selector.select(self.signature, inputs, call.candidates))
            self._accept_selection(call, result, selector.name)
        return self._finish(call, path)

    async def aforward(self, **kwargs: Any) -> FusedPrediction:
        inputs, draws, started = self._begin(kwargs)
        outcomes = await acollect_draws(self.generate, draws, inputs, signature=self.signature, store=self.store,
                                        timeout=self.timeout)
        call = self._call(inputs, outcomes, started)
        path = call.initial_path()
        if path == "fuse":
            fusor_inputs, order = call.fusor_inputs(self.fusion_fields)
            result = await atracked(lambda: self.fusor.acall(**fusor_inputs, **self._fusor_lm_kwargs()))
            if self._accept_fusion(call, result, order):
                return call.finish("fuse")
            path = "select"
        if path == "select":
            selector = self.selector
            result = await atracked(lambda: selector.aselect(self.signature, inputs, call.candidates))
            self._accept_selection(call, result, selector.name)
        return self._finish(call, path)

    # -- the steps forward and aforward share ----------------------------------------------------------

    def _begin(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[Draw], float]:
        inputs = self._inputs(kwargs)
        started = time.perf_counter()
        return inputs, plan_draws(self.teachers, self.settings.n, seed=self.settings.seed), started

    def _call(self, inputs: dict[str, Any], outcomes: list[DrawOutcome], started: float) -> FuseCall:
        call = FuseCall(
            signature=self.signature, settings=self.settings, inputs=inputs, outcomes=outcomes, started=started
        )
        call.check_enough()
        return call

    def _accept_fusion(self, call: FuseCall, result: Tracked, order: list[int]) -> bool:
        merge_into_parent_tracker([result])
        if call.accept_fusion(result, lm_name=self.settings.fusor, order=order, fields=self.fusion_fields):
            return True
        _logger.warning("Fuse: the fusor failed (%s); falling back to select.", call.fusor_record.error_type)
        return False

    @staticmethod
    def _accept_selection(call: FuseCall, result: Tracked, selector_name: str) -> None:
        # A selector that calls LMs (judge, usc, reward) costs tokens: they belong to this call's report.
        merge_into_parent_tracker([result])
        if result.error is not None:
            raise result.error
        call.accept_selection(result.value, selector_name, usage=result.usage, latency_s=result.latency_s)

    @staticmethod
    def _finish(call: FuseCall, path: str) -> FusedPrediction:
        if path == "consensus":
            call.take_consensus()
        elif path == "single":
            call.take_candidate(0)
        return call.finish(path)

    # -- helpers -------------------------------------------------------------------------------------

    def _fusor_lm_kwargs(self) -> dict[str, Any]:
        lm = self.fusor_lm
        return {} if lm is None else {"lm": lm}

    def _inputs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        expected = list(self.signature.input_fields)
        missing = [name for name in expected if name not in kwargs]
        unexpected = [name for name in kwargs if name not in expected]
        if missing or unexpected:
            problems = []
            if missing:
                problems.append(f"missing input field(s) {missing}")
            if unexpected:
                problems.append(f"unexpected argument(s) {unexpected}")
            raise ValueError(
                f"Fuse({self.signature.signature!r}) got {' and '.join(problems)}. "
                f"Call it with exactly the signature's inputs: {', '.join(f'{n}=...' for n in expected)}."
            )
        return {name: kwargs[name] for name in expected}

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"Fuse({self.signature.signature!r}, n={s.n}, mode={s.mode!r}, teachers={s.teachers}, "
            f"fusor={s.fusor!r}, selector={s.selector!r})"
        )


def _check_n(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1 (the number of candidates), got {n!r}.")


def _check_mode(mode: Any) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")


def _as_teachers(teachers: Sequence[Teacher | dspy.BaseLM] | None) -> list[Teacher]:
    if teachers is None:
        return [Teacher()]
    if isinstance(teachers, (Teacher, dspy.BaseLM)):
        raise TypeError("teachers must be a list, e.g. teachers=[Teacher(lm)].")
    teachers = list(teachers)
    if not teachers:
        raise ValueError(
            "teachers is empty; pass at least one Teacher, or leave teachers=None to use the configured LM."
        )
    out = []
    for teacher in teachers:
        if isinstance(teacher, Teacher):
            out.append(teacher)
        elif isinstance(teacher, dspy.BaseLM):
            out.append(Teacher(teacher))
        else:
            raise TypeError(
                f"Each teacher must be a Teacher or a dspy.LM, got {type(teacher).__name__}: {teacher!r}. "
                "Build LMs with dspy.LM('provider/model') and wrap them as Teacher(lm, temperature=...)."
            )
    return out


def _as_selector(selector: Selector | str | None) -> Selector:
    from fusion_dspy.selectors import get_selector

    if selector is None:
        return get_selector("mbr")
    if isinstance(selector, str):
        return get_selector(selector)
    if isinstance(selector, Selector):
        return selector
    raise TypeError(
        f"selector must be a Selector or one of the registered names, got {type(selector).__name__}."
    )
