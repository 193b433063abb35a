"""What the optimizer may change in one ``Fuse``, and how a trial's parameters become its settings.

:class:`SearchSpace` is the user-facing declaration (pydantic, restrictable: fix a dimension by
giving it a single choice). :class:`FuseSpace` is that declaration resolved against one Fuse of the
program (its path, the teacher pool, the fusor LMs, the instruction candidates); it suggests Optuna
parameters and turns them into :class:`~fusion_dspy.FuseSettings`.

Parameters are named ``<fuse path>.<dimension>``, e.g. ``answer.n`` or ``answer.use.qwen-0.5b``, so
several nested Fuse modules get independent parameters and the Optuna dashboard reads naturally.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import optuna
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import field_validator
from pydantic import model_validator

from fusion_dspy import FuseSettings
from fusion_dspy import FusorPrompt
from fusion_dspy import Teacher
from fusion_dspy.config import Mode
from fusion_dspy.config import check_setting
from fusion_dspy.pool import Pool
from fusion_dspy.selectors import SELECTOR_NAMES
from fusion_dspy.strategies import STRATEGIES
from fusion_dspy.strategies import Strategy
from fusion_dspy.teacher import check_temperature

__all__ = ["FuseSpace", "InfeasibleConfigError", "SearchSpace", "resolve_space", "variant_name"]

#: Selectors the optimizer can rebuild from a name alone ("reward" needs a Python function).
SEARCHABLE_SELECTORS = tuple(name for name in SELECTOR_NAMES if name != "reward")

#: Name prefix of the self-MoA pools (one teacher sampled N times) added by ``SearchSpace.self_moa``.
SELF_MOA_PREFIX = "self:"


class InfeasibleConfigError(ValueError):
    """A sampled configuration that ``Fuse`` rejects, e.g. a temperature-0 teacher drawn twice."""


class SearchSpace(BaseModel):
    """The dimensions searched for one ``Fuse``. Every tuple is a set of choices; one choice fixes it.

    Defaults search everything the paper found to matter, but keep each dimension small and
    categorical: the candidate bank can only re-use a draw whose (teacher, temperature, sample)
    was seen before, so a continuous temperature would make every trial pay for new generations.

    Attributes:
        n: Inclusive range of N (candidates per call). ``None``: the optimizer's ``n_range``.
        teachers: Names of the teachers this Fuse may use (``None``: all of them).
        search_pool: Search which teachers are in the pool (one boolean per teacher). An all-false
            draw is repaired to the whole eligible pool, so no trial is wasted and the mapping from
            parameters to configuration stays deterministic (TPE simply sees two parameter points
            with the same value). ``False``: always use every eligible teacher.
        pools: Named teacher pools to choose from instead of per-teacher switches, e.g.
            ``{"diverse": ("qwen-0.5b", "smollm2", "gemma"), "strong": ("qwen-1.5b",)}``: one
            categorical parameter ``<path>.pool``. Use it when the pools worth trying are few and
            known (the paper's finding is that pool *diversity* matters most), or when there are
            too many teachers for 2^k subsets. Overrides ``search_pool``; the eligible teachers
            are the pools' members (and must lie within ``teachers`` when both are given).
            Include one-teacher pools (the strongest model alone is often the one to beat): the
            optimizer's "each teacher alone at N=1" baselines can only start from such pools.
        temperatures: Sampling temperature choices per teacher; ``None`` keeps each teacher's own.
            A value of 0 is allowed, but a trial that would draw a temperature-0 teacher twice is
            pruned without any LM call (its samples would be identical).
        fusors: Names of the fusor LMs to choose from (``None``: all of them).
        modes: ``fuse`` (the fusor writes the answer), ``select`` (Best-of-N) and/or ``auto``.
        selectors: Selector names tried in ``select`` mode (``judge``/``usc`` cost LM calls).
        agree: Agreement thresholds tried in ``auto`` mode.
        instructions: Search the fusor instruction among the candidates (the Fuse's current one,
            the optimizer's proposals and the user's). ``False``: keep the current instruction.
        criteria: Choices for the comparison criteria slot of :class:`~fusion_dspy.FusorPrompt`.
        discard_worst: Choices for the "explicitly discard weak parts" slot.
        length_control: Choices for the "no longer than the longest candidate" slot.
        languages: Choices for the output-language slot (``None``: the task's language).
        strategies: Fusor strategies to try (:mod:`fusion_dspy.strategies`: ``paper``, ``analyse``,
            ``edit``, ``vote``).
        guards: Choices for the selection guard (``Fuse(guard=...)``: keep the fused answer unless
            the selector's pick scores higher, :mod:`fusion_dspy.guard`); searched in ``fuse``/``auto`` mode. On a
            ``Fuse`` without the guard only ``False`` is possible and ``True`` is ignored.
        self_moa: With ``pools``, also offer every pool member alone as a pool named
            ``"self:<teacher>"``: one teacher sampled N times (Self-MoA), the counterpart of a
            mixed pool. Without ``pools`` the per-teacher switches already reach these pools.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: tuple[int, int] | None = None
    teachers: tuple[str, ...] | None = None
    search_pool: bool = True
    pools: dict[str, tuple[str, ...]] | None = None
    temperatures: tuple[float, ...] | None = (0.3, 0.7, 1.0)
    fusors: tuple[str, ...] | None = None
    modes: tuple[Mode, ...] = ("fuse", "select", "auto")
    selectors: tuple[str, ...] = ("mbr", "majority")
    agree: tuple[float, ...] = (0.6, 0.8, 1.0)
    instructions: bool = True
    criteria: tuple[tuple[str, ...], ...] = (
        ("content", "language quality", "responsibility"),
        ("correctness", "completeness"),
    )
    discard_worst: tuple[bool, ...] = (True, False)
    length_control: tuple[bool, ...] = (False, True)
    languages: tuple[str | None, ...] = Field(default=(None,))
    strategies: tuple[Strategy, ...] = STRATEGIES
    guards: tuple[bool, ...] = (False, True)
    self_moa: bool = False

    @field_validator("n")
    @classmethod
    def _check_n(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None:
            for bound in value:
                check_setting("n", bound, owner="SearchSpace")
            if value[0] > value[1]:
                raise ValueError(f"n must be (low, high) with 1 <= low <= high, got {value}.")
        return value

    @field_validator("temperatures")
    @classmethod
    def _check_temperatures(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("temperatures needs at least one choice, or None to keep each teacher's own.")
        return tuple(sorted({check_temperature(v, owner="SearchSpace.temperatures") for v in value}))

    @field_validator("agree")
    @classmethod
    def _check_agree(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(sorted({check_setting("agree", v, owner="SearchSpace") for v in value}))

    @field_validator("pools")
    @classmethod
    def _check_pools(cls, value: dict[str, tuple[str, ...]] | None) -> dict[str, tuple[str, ...]] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("pools needs at least one named pool, e.g. {'diverse': ('a', 'b')}, or None.")
        for name, members in value.items():
            if not name or not members:
                raise ValueError(f"pool {name!r} must have a non-empty name and at least one teacher.")
            if len(set(members)) != len(members):
                raise ValueError(f"pool {name!r} names a teacher twice: {list(members)}.")
        return value

    @field_validator("selectors")
    @classmethod
    def _check_selectors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in SEARCHABLE_SELECTORS]
        if unknown or not value:
            raise ValueError(
                f"selectors must be a non-empty subset of {list(SEARCHABLE_SELECTORS)}, got {list(value)}. "
                "('reward' needs a Python function: configure it on the Fuse and leave mode='select' fixed.)"
            )
        return value

    @model_validator(mode="after")
    def _check_non_empty(self) -> SearchSpace:
        for name in ("modes", "agree", "criteria", "discard_worst", "length_control", "languages", "strategies",
                     "guards"):
            if not getattr(self, name):
                raise ValueError(f"SearchSpace.{name} needs at least one choice (one choice fixes it).")
        if self.teachers is not None and not self.teachers:
            raise ValueError("SearchSpace.teachers needs at least one teacher name (or None for all).")
        if self.pools is not None and self.teachers is not None:
            outside = sorted({t for members in self.pools.values() for t in members} - set(self.teachers))
            if outside:
                raise ValueError(f"pools name teacher(s) {outside} that SearchSpace.teachers leaves out.")
        if self.fusors is not None and not self.fusors:
            raise ValueError("SearchSpace.fusors needs at least one fusor name (or None for all).")
        return self


def variant_name(teacher: Teacher, temperature: float) -> str:
    """The pool name of ``teacher`` sampled at ``temperature`` (its own name at its own temperature)."""
    if float(temperature) == teacher.temperature:
        return teacher.name
    return f"{teacher.name}@t{float(temperature):g}"


@dataclasses.dataclass(frozen=True)
class FuseSpace:
    """A :class:`SearchSpace` resolved for one Fuse of the program.

    Attributes:
        path: The Fuse's attribute path in the program (``"self"`` for a program that is a Fuse).
        space: The declaration.
        base: The Fuse's settings before optimization; unsearched fields keep these values.
        teachers: Eligible teachers, in pool order (the order decides who is drawn first).
        n_range: Inclusive range of N.
        fusors: Eligible fusor names.
        instructions: Fusor instruction candidates; index 0 is the Fuse's current instruction.
    """

    path: str
    space: SearchSpace
    base: FuseSettings
    teachers: tuple[Teacher, ...]
    n_range: tuple[int, int]
    fusors: tuple[str, ...]
    instructions: tuple[str, ...]

    def param(self, name: str) -> str:
        return f"{self.path}.{name}"

    # -- pool choice -----------------------------------------------------------------------------

    @property
    def pools(self) -> dict[str, tuple[str, ...]] | None:
        """The named pools, plus one self-MoA pool per member teacher when ``space.self_moa``."""
        if self.space.pools is None or not self.space.self_moa:
            return self.space.pools
        pools = dict(self.space.pools)
        alone = {members[0] for members in pools.values() if len(members) == 1}
        for teacher in self.teachers:
            if teacher.name not in alone:
                pools.setdefault(f"{SELF_MOA_PREFIX}{teacher.name}", (teacher.name,))
        return pools

    def pool_for(self, teachers: Sequence[str]) -> str | None:
        """The named pool whose members are exactly ``teachers`` (``None`` if there is none)."""
        wanted = set(teachers)
        return next((name for name, members in (self.pools or {}).items() if set(members) == wanted), None)

    def can_select(self, teachers: Sequence[str]) -> bool:
        """Whether some parameter values make exactly ``teachers`` the pool."""
        if self.pools is not None:
            return self.pool_for(teachers) is not None
        eligible = {t.name for t in self.teachers}
        if not set(teachers) <= eligible:
            return False
        return self.space.search_pool or set(teachers) == eligible

    # -- variants the Fuse's pool must know ------------------------------------------------------

    def temperature_choices(self, teacher: Teacher) -> tuple[float, ...]:
        return self.space.temperatures if self.space.temperatures is not None else (teacher.temperature,)

    def teacher_variants(self) -> list[Teacher]:
        """Every teacher object a trial may name: one per (teacher, temperature choice)."""
        out = []
        for teacher in self.teachers:
            for temperature in self.temperature_choices(teacher):
                name = variant_name(teacher, temperature)
                out.append(teacher if name == teacher.name else teacher.replace(temperature=temperature, name=name))
        return out

    # -- suggest ---------------------------------------------------------------------------------

    def suggest(self, trial: optuna.Trial) -> FuseSettings:
        """Suggest this Fuse's parameters on ``trial`` and return the effective settings.

        Raises:
            InfeasibleConfigError: The configuration cannot run (see ``SearchSpace.temperatures``).
        """
        low, high = self.n_range
        n = trial.suggest_int(self.param("n"), low, high) if low < high else low

        chosen = list(self.teachers)
        if self.pools is not None:
            members = set(self.pools[_choose(trial, self.param("pool"), tuple(self.pools))])
            chosen = [t for t in self.teachers if t.name in members]
        elif self.space.search_pool and len(self.teachers) > 1:
            chosen = [t for t in self.teachers if trial.suggest_categorical(self.param(f"use.{t.name}"), (True, False))]
            if not chosen:
                chosen = list(self.teachers)  # Deterministic repair; see SearchSpace.search_pool.
        names = []
        for teacher in self.teachers:  # Suggest every temperature: a static space suits multivariate TPE.
            temperature = _choose(trial, self.param(f"temperature.{teacher.name}"), self.temperature_choices(teacher))
            if teacher in chosen:
                names.append(variant_name(teacher, temperature))

        fusor = _choose(trial, self.param("fusor"), self.fusors)
        mode = _choose(trial, self.param("mode"), self.space.modes)
        selector, agree = self.base.selector, self.base.agree
        if mode == "select":
            selector = _choose(trial, self.param("selector"), self.space.selectors)
        if mode == "auto":
            agree = _choose(trial, self.param("agree"), self.space.agree)

        prompt = self.base.prompt
        if mode != "select":  # The fusor prompt only matters when the fusor runs.
            instruction = self.instructions[0]
            if self.space.instructions and len(self.instructions) > 1:
                instruction = self.instructions[trial.suggest_categorical(self.param("instruction"),
                                                                          tuple(range(len(self.instructions))))]
            criteria_index = _choose(trial, self.param("criteria"), tuple(range(len(self.space.criteria))))
            criteria = self.space.criteria[criteria_index]
            prompt = FusorPrompt(
                instruction=instruction,
                criteria=criteria,
                discard_worst=_choose(trial, self.param("discard_worst"), self.space.discard_worst),
                length_control=_choose(trial, self.param("length_control"), self.space.length_control),
                language=_choose(trial, self.param("language"), self.space.languages),
                constitution=self.base.prompt.constitution,
                strategy=_choose(trial, self.param("strategy"), self.space.strategies),
            )
        # The guard only acts on fused answers: select mode has nothing to guard.
        guard = _choose(trial, self.param("guard"), self.guard_choices) if mode != "select" else False
        return self.settings(n=n, teachers=names, fusor=fusor, mode=mode, selector=selector, agree=agree,
                             prompt=prompt, guard=guard)

    @property
    def guard_choices(self) -> tuple[bool, ...]:
        """The guard values a trial may take."""
        return tuple(dict.fromkeys(self.space.guards))

    def settings(self, **changes: Any) -> FuseSettings:
        """``base`` with ``changes`` applied, validated by :class:`~fusion_dspy.FuseSettings` itself.

        ``min_candidates`` follows a smaller N down (a search policy, not a rule of the settings);
        a different selector starts from its own default arguments.

        Raises:
            InfeasibleConfigError: The pool check fails (e.g. a temperature-0 teacher drawn twice).
        """
        if "selector" in changes and changes["selector"] != self.base.selector:
            changes.setdefault("selector_args", {})
        n = changes.get("n", self.base.n)
        changes.setdefault("min_candidates", min(self.base.min_candidates, n))
        settings = self.base.replaced(owner=f"SearchSpace for Fuse {self.path!r}", **changes)
        pool = Pool()
        pool.add_teachers(self.teacher_variants())
        pool.fusors = dict.fromkeys(self.fusors)
        try:
            settings.check_pool(pool)
        except ValueError as error:
            raise InfeasibleConfigError(str(error)) from error
        return settings

    # -- enqueue ---------------------------------------------------------------------------------

    def params_for(self, *, n: int, teachers: Sequence[str], temperature: float | None = None,
                   mode: str | None = None) -> dict[str, Any]:
        """Optuna parameters (a subset; the sampler fills the rest) that select a configuration.

        Used to enqueue known-good starting points such as the student's own configuration and
        "each teacher alone at N=1", which the local baseline showed can beat every fusion.
        """
        params: dict[str, Any] = {}
        low, high = self.n_range
        if low < high:
            params[self.param("n")] = min(max(n, low), high)
        if self.pools is not None:
            pool = self.pool_for(teachers)
            if pool is not None and len(self.pools) > 1:  # Otherwise the sampler picks a pool.
                params[self.param("pool")] = pool
        elif self.space.search_pool and len(self.teachers) > 1:
            for teacher in self.teachers:
                params[self.param(f"use.{teacher.name}")] = teacher.name in teachers
        for teacher in self.teachers:
            choices = self.temperature_choices(teacher)
            if len(choices) > 1:
                wanted = teacher.temperature if temperature is None else temperature
                params[self.param(f"temperature.{teacher.name}")] = min(choices, key=lambda t: abs(t - wanted))
        if mode is not None and len(self.space.modes) > 1 and mode in self.space.modes:
            params[self.param("mode")] = mode
        return params

    def params_of(self, settings: FuseSettings, *, fusor: str | None = None) -> dict[str, Any]:
        """The parameters that reproduce ``settings`` as closely as this space allows.

        N, pool and mode as :meth:`params_for`; then every other searched choice (fusor, selector,
        agreement, instruction, criteria, prompt switches, strategy, guard) pinned to the value of
        ``settings`` when the space offers it, left to the sampler when it does not. ``fusor`` is
        the name the optimizer gives the settings' fusor LM (``None``: ``settings.fusor``).
        """
        names = [name for name in settings.teachers if name in {t.name for t in self.teachers}]
        params = self.params_for(n=settings.n, teachers=names or [t.name for t in self.teachers], mode=settings.mode)
        mode = settings.mode if settings.mode in self.space.modes else None
        prompt = settings.prompt
        pins: list[tuple[str, Sequence[Any], Any, bool]] = [
            ("fusor", self.fusors, fusor if fusor is not None else settings.fusor, mode != "select"),
            ("selector", self.space.selectors, settings.selector, mode == "select"),
            ("agree", self.space.agree, settings.agree, mode == "auto"),
            ("criteria", tuple(range(len(self.space.criteria))),
             next((i for i, c in enumerate(self.space.criteria) if tuple(c) == tuple(prompt.criteria)), None),
             mode != "select"),
            ("discard_worst", self.space.discard_worst, prompt.discard_worst, mode != "select"),
            ("length_control", self.space.length_control, prompt.length_control, mode != "select"),
            ("language", self.space.languages, prompt.language, mode != "select"),
            ("strategy", self.space.strategies, prompt.strategy, mode != "select"),
            ("guard", self.guard_choices, settings.guard, mode != "select"),
        ]
        for name, choices, value, used in pins:
            if used and mode is not None and len(tuple(choices)) > 1 and value in tuple(choices):
                params[self.param(name)] = value
        if (mode not in (None, "select") and self.space.instructions and len(self.instructions) > 1
                and prompt.instruction == self.instructions[0]):
            params[self.param("instruction")] = 0
        return params

    def fingerprint(self) -> dict[str, Any]:
        """A JSON description of this space, to refuse resuming a study with a different one."""
        return {
            "path": self.path,
            "space": self.space.model_dump(mode="json"),
            "teachers": [t.name for t in self.teachers],
            "n_range": list(self.n_range),
            "fusors": list(self.fusors),
            "instructions": len(self.instructions),
        }


def _choose(trial: optuna.Trial, name: str, choices: Sequence[Any]) -> Any:
    """A categorical suggestion, or the only choice without creating a parameter."""
    choices = tuple(choices)
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)


def resolve_space(
    *,
    path: str,
    space: SearchSpace,
    base: FuseSettings,
    teachers: Mapping[str, Teacher],
    fusors: Sequence[str],
    instructions: Sequence[str],
    n_range: tuple[int, int],
) -> FuseSpace:
    """Check ``space`` against the pool and build the :class:`FuseSpace` (errors say how to fix)."""
    names = list(space.teachers) if space.teachers is not None else list(teachers)
    if space.pools is not None:
        # Eligible: the pools' members, in the pool's order (it decides who is drawn first); names
        # missing from the pool are kept so the check below reports them.
        members = list(dict.fromkeys(m for pool in space.pools.values() for m in pool))
        names = [name for name in names if name in members] + [m for m in members if m not in names]
    unknown = [name for name in names if name not in teachers]
    if unknown:
        raise ValueError(
            f"SearchSpace for Fuse {path!r} names unknown teacher(s) {unknown}; known: {sorted(teachers)}. "
            "Pass them as FusionOptimizer(teachers=[...]) or fix SearchSpace.teachers."
        )
    fusor_names = list(space.fusors) if space.fusors is not None else list(fusors)
    unknown = [name for name in fusor_names if name not in fusors]
    if unknown or not fusor_names:
        raise ValueError(
            f"SearchSpace for Fuse {path!r} names unknown fusor(s) {unknown or fusor_names}; known: {list(fusors)}. "
            "Pass them as FusionOptimizer(fusors=[...]) or fix SearchSpace.fusors."
        )
    return FuseSpace(
        path=path,
        space=space,
        base=base,
        teachers=tuple(teachers[name] for name in names),
        n_range=space.n or n_range,
        fusors=tuple(fusor_names),
        instructions=tuple(instructions),
    )
