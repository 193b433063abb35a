"""``Fuse``: Fusion-of-N as a DSPy module."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import dspy

from fusion_dspy.config import CallOptions
from fusion_dspy.config import FuseConfig
from fusion_dspy.config import FuseSettings
from fusion_dspy.config import SettingsError
from fusion_dspy.drivers import adrive
from fusion_dspy.drivers import drive
from fusion_dspy.fuse_call import FuseCall
from fusion_dspy.fusion_signature import fusion_signature
from fusion_dspy.fusion_signature import resolve_signature
from fusion_dspy.fusion_signature import signature_types
from fusion_dspy.pool import Pool
from fusion_dspy.prediction import FusedPrediction
from fusion_dspy.prompt import FusorPrompt
from fusion_dspy.selectors.base import Selector
from fusion_dspy.selectors.registry import build_selector
from fusion_dspy.selectors.registry import selector_spec
from fusion_dspy.store import CandidateStore
from fusion_dspy.teacher import Teacher
from fusion_dspy.text_safety import clean_value

__all__ = ["Fuse"]

_logger = logging.getLogger(__name__)


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
        timeout: Seconds one teacher call may take once it has started (time queued for a slot of its
            LM never counts); a call still running then is dropped and reported as
            :class:`~fusion_dspy.TeacherTimeoutError`, and its late answer is stored and its usage
            added to the report when it arrives (see :mod:`fusion_dspy.drivers`).
        seed: Base seed of the draws (each draw's engine seed hashes it with the teacher's name and
            sample index, :func:`~fusion_dspy.teacher.draw_seed`) and of the candidate shuffle.
        shuffle: Shuffle candidates before the fusor reads them (the paper saw a position bias).
        max_threads: Cap on this call's concurrent teacher calls (default: no cap beyond the per-LM
            bound, :func:`fusion_dspy.lm_slots.set_lm_concurrency`); the same in sync and async.
        store: A :class:`~fusion_dspy.store.CandidateStore`: draws found there are not generated
            again, and new draws are added: answers, and malformed answers as failures; transient
            faults are retried on the next call (see :mod:`fusion_dspy.store`).
        guard: After fusing, compare the fused answer with ``selector``'s pick among the N
            candidates and return the pick if it scores higher on the other candidates (see
            :mod:`fusion_dspy.guard`); the decision is in ``pred.fusion.guard``. ``None`` (auto, the
            default): on in ``fuse`` and ``auto`` mode when the selector ranks without an LM call
            (mbr, majority, reward), off for an LLM judge or USC (it would cost calls);
            ``True``/``False`` force it. The rule is :meth:`FuseSettings.guard_enabled`;
            :meth:`summary` shows what it resolved to.

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
        guard: bool | None = None,
    ) -> None:
        super().__init__()
        self.signature = resolve_signature(signature)
        options = CallOptions.validated(timeout=timeout, max_threads=max_threads, store=store)
        self.pool = Pool()
        teacher_names = self.pool.add_teachers(_as_teachers(teachers))
        fusor_name = self.pool.add_fusor(fusor)
        self._selector = _as_selector(selector)
        selector_name, selector_args = selector_spec(self._selector)
        settings = FuseSettings.validated(
            {
                "n": n,
                "mode": mode,
                "teachers": teacher_names,
                "fusor": fusor_name,
                "selector": selector_name,
                "selector_args": selector_args or {},
                "agree": agree,
                "min_candidates": min_candidates,
                "seed": seed,
                "shuffle": shuffle,
                "guard": guard,
                **({} if prompt is None else {"prompt": prompt}),
            },
            pool=self.pool,  # Fail now, not at call time, on an unknown name or an impossible plan.
        )
        self.config = FuseConfig(settings, self.pool, signature=self.signature.signature,
                                 types=signature_types(self.signature))
        self.generate = dspy.Predict(self.signature)
        fused_signature, self.fusion_fields = fusion_signature(self.signature, settings.prompt)
        self.fusor = dspy.Predict(fused_signature)
        self.options = options

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

    # Per-process call options (never saved): assigning one is validated like the constructor argument.

    @property
    def timeout(self) -> float | None:
        return self.options.timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._set_option("timeout", value)

    @property
    def max_threads(self) -> int | None:
        return self.options.max_threads

    @max_threads.setter
    def max_threads(self, value: int | None) -> None:
        self._set_option("max_threads", value)

    @property
    def store(self) -> CandidateStore | None:
        return self.options.store

    @store.setter
    def store(self, value: CandidateStore | None) -> None:
        self._set_option("store", value)

    def _set_option(self, name: str, value: Any) -> None:
        self.options = CallOptions.validated(owner="Fuse", **{**self.options.as_dict(), name: value})

    @property
    def selector(self) -> Selector:
        """The selector the settings name; rebuilt from their spec when they name another one."""
        settings = self.settings
        name, args = selector_spec(self._selector)
        if name != settings.selector or (args is not None and args != settings.selector_args):
            self._selector = build_selector(settings.selector, settings.selector_args)
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
        All or nothing: when any teacher or fusor is refused, none of this call's is registered.
        """
        pool = copy.deepcopy(self.pool)  # Staged: the objects land only if every one is accepted.
        pool.add_teachers(teachers)
        named = fusors.items() if isinstance(fusors, Mapping) else ((None, lm) for lm in fusors)
        for name, lm in named:
            pool.add_fusor(lm, name)
        self.pool.teachers, self.pool.fusors = pool.teachers, pool.fusors
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
        guard: bool | None = None,
    ) -> Fuse:
        """Change the configuration in place, validated as a whole; unset arguments keep their value.

        ``teachers`` and ``fusor`` take pool names (or objects, which are registered). A new
        ``prompt`` re-renders the fusor instruction, replacing any instruction an optimizer wrote.
        ``guard=True``/``False`` forces the guard; as ``None`` means "unchanged" here, go back to
        auto with ``fuse.use_settings(fuse.settings.replaced(guard=None))``.
        All or nothing: when any check fails, the Fuse (settings, pool, selector) is unchanged.
        """
        pool = copy.deepcopy(self.pool)  # Staged: objects registered here only land if all checks pass.
        changes: dict[str, Any] = {
            key: value
            for key, value in (("n", n), ("mode", mode), ("prompt", prompt), ("agree", agree),
                               ("min_candidates", min_candidates), ("seed", seed), ("shuffle", shuffle),
                               ("guard", guard))
            if value is not None
        }
        if teachers is not None:
            if isinstance(teachers, (str, Teacher)):
                raise SettingsError(
                    f"Fuse.configure(teachers={teachers!r}) is invalid: teachers must be a list of pool names "
                    "or Teacher objects, e.g. teachers=['a', 'b']."
                )
            changes["teachers"] = [t if isinstance(t, str) else pool.add_teachers([t])[0] for t in teachers]
        if fusor is not None:
            changes["fusor"] = fusor if isinstance(fusor, str) else pool.add_fusor(fusor)
        new_selector = None
        if selector is not None:
            new_selector = _as_selector(selector)
            name, args = selector_spec(new_selector)
            changes["selector"], changes["selector_args"] = name, args or {}
        settings = self.settings.replaced(owner="Fuse.configure", pool=pool, **changes)
        return self._commit(settings, pool=pool, selector=new_selector, render_prompt=prompt is not None)

    def use_settings(self, settings: FuseSettings) -> Fuse:
        """Adopt ``settings`` as a whole (checked against the pool); the fusor instruction is only
        re-rendered when the prompt changes, so an instruction another optimizer wrote survives."""
        if not isinstance(settings, FuseSettings):
            raise SettingsError(f"use_settings needs a FuseSettings, got {type(settings).__name__}.")
        settings = FuseSettings.validated(settings.model_dump(), owner="Fuse.use_settings", pool=self.pool)
        return self._commit(settings, pool=self.pool, selector=None,
                            render_prompt=settings.prompt != self.settings.prompt)

    def _commit(self, settings: FuseSettings, *, pool: Pool, selector: Selector | None, render_prompt: bool) -> Fuse:
        """Apply already validated settings; nothing here can fail half-way."""
        rendered = fusion_signature(self.signature, settings.prompt) if render_prompt else None
        if pool is not self.pool:
            self.pool.teachers, self.pool.fusors = pool.teachers, pool.fusors
        self.config.settings = settings
        if selector is not None:
            self._selector = selector
        if rendered is not None:
            fused_signature, self.fusion_fields = rendered
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
    # Both are thin drivers of one FuseCall engine (fusion_dspy.fuse_call): they only do the I/O.

    def forward(self, **kwargs: Any) -> FusedPrediction:
        call = self._start(kwargs)
        return self._traced(call, drive(call.steps()))

    async def aforward(self, **kwargs: Any) -> FusedPrediction:
        call = self._start(kwargs)
        return self._traced(call, await adrive(call.steps()))

    def _start(self, kwargs: dict[str, Any]) -> FuseCall:
        return FuseCall(
            signature=self.signature, settings=self.settings, inputs=self._inputs(kwargs), teachers=self.teachers,
            generate=self.generate, fusor=self.fusor, fusor_lm=self.fusor_lm, fields=self.fusion_fields,
            selector=self.selector, store=self.store, timeout=self.timeout, max_threads=self.max_threads,
        )

    @staticmethod
    def _traced(call: FuseCall, prediction: FusedPrediction) -> FusedPrediction:
        """Record the steps the engine accepted in DSPy's trace, when DSPy is recording one."""
        trace = dspy.settings.trace
        if trace is not None and dspy.settings.max_trace_size > 0:
            for predictor, inputs, outputs in call.trace_entries:
                if len(trace) >= dspy.settings.max_trace_size:
                    trace.pop(0)
                trace.append((predictor, inputs, _clean_outputs(outputs)))
        return prediction

    # -- helpers -------------------------------------------------------------------------------------

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

    def summary(self) -> str:
        """A few readable lines: the configuration, and the selection guard it resolves to and why."""
        s = self.settings
        selector = self.selector
        cost = "LM calls" if selector.calls_lm is not False else "no LM call"
        enabled = "on" if s.guard_enabled(selector) else "off"
        if s.guard is not None:
            why = f"set: guard={s.guard}"
        elif s.mode == "select":
            why = "auto: mode='select' fuses nothing"
        else:
            why = f"auto: {selector.name} ranks with {cost}"
        return "\n".join([
            f"Fuse({self.signature.signature!r}): n={s.n}, mode={s.mode}, teachers={s.teachers}, fusor={s.fusor}",
            f"selector: {selector.name} ({cost})",
            f"guard: {enabled} ({why})",
        ])

    def __repr__(self) -> str:
        s = self.settings
        guard = "" if s.guard is None else f", guard={s.guard}"
        return (
            f"Fuse({self.signature.signature!r}, n={s.n}, mode={s.mode!r}, teachers={s.teachers}, "
            f"fusor={s.fusor!r}, selector={s.selector!r}{guard})"
        )


def _clean_outputs(outputs: dspy.Prediction) -> dspy.Prediction:
    """A traced step's outputs as the call returned them: lone surrogates and NULs made U+FFFD.

    A step becomes a demo, and demos are saved: a raw fusor reply holding ``"\\ud800"`` would make
    ``program.save`` fail, and would teach an answer the call never returned.
    """
    values = dict(outputs.items()) if isinstance(outputs, dspy.Prediction) else dict(outputs)
    cleaned, changes = clean_value(values)
    return dspy.Prediction(**cleaned) if changes else outputs


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
