"""The validated configuration of a Fuse: its saved settings and its per-process call options.

One rule lives in one place: every constraint on a Fuse's configuration is declared on a field of
:class:`FuseSettings` (what is saved, loaded and tuned) or :class:`CallOptions` (what belongs to
this process: timeout, thread cap, store), and the checks that need the teacher pool live in
:meth:`FuseSettings.check_pool`. ``Fuse.__init__``, ``Fuse.configure``, ``load`` and the optimizer
all go through these, and a failed check raises :class:`SettingsError`, whose message names the
argument and says what to pass (the field's description).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Annotated
from typing import Any
from typing import Literal

from dspy.predict.parameter import Parameter
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import JsonValue
from pydantic import TypeAdapter
from pydantic import ValidationError
from pydantic import field_validator
from pydantic import model_validator

from fusion_dspy.prompt import FusorPrompt

if TYPE_CHECKING:
    from fusion_dspy.pool import Pool
    from fusion_dspy.selectors.base import Selector

__all__ = ["CallOptions", "FuseConfig", "FuseSettings", "Mode", "SettingsError", "check_setting"]

Mode = Literal["fuse", "select", "auto"]


class SettingsError(ValueError, TypeError):
    """An invalid Fuse argument or setting. The message names it and says what to pass.

    It is both a ``ValueError`` and a ``TypeError``, so code that caught either before keeps working.
    """


class FuseSettings(BaseModel):
    """The validated, JSON-serialisable configuration of one Fuse.

    Attributes:
        n: Number of candidates drawn per call.
        mode: ``fuse`` (the fusor writes the answer), ``select`` (Best-of-N) or ``auto`` (return the
            consensus when at least ``agree`` of the candidates agree, else fuse).
        teachers: Names of the active teachers, in pool order.
        fusor: Name of the fusor LM (``"default"``: the configured LM).
        selector: Registered name of the selector used by ``select`` and as the fusor's fallback.
        selector_args: The selector's JSON constructor arguments (see
            :func:`fusion_dspy.selectors.selector_spec`), so e.g. ``MajorityVote(fields=["answer"])``
            survives save/load.
        agree: Agreement share that lets ``auto`` skip the fusor.
        min_candidates: Fewest successful candidates to proceed with; fewer raises.
        seed: Base seed of the draws and of the candidate-order shuffle.
        shuffle: Shuffle the candidates before the fusor sees them (position bias).
        prompt: The fusor prompt configuration.
        guard: Compare the fused answer with the selector's pick; keep it only if the pick does
            not score higher (see :mod:`fusion_dspy.guard`). ``None`` (the default) is auto:
            on when it is free, ``True``/``False`` force it; :meth:`guard_enabled` is the rule.

    The field descriptions are the "what to pass" half of every error message. Settings are
    immutable values: change them with :meth:`replaced` (or ``Fuse.configure``), which validates
    the whole again.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(default=5, ge=1, strict=True,
                   description="n must be an int >= 1: the number of candidates per call, e.g. n=5.")
    mode: Mode = Field(default="fuse", description="mode must be one of 'fuse', 'select' or 'auto'.")
    teachers: list[str] = Field(
        default_factory=lambda: ["default"], min_length=1,
        description="teachers must name at least one teacher of the pool (a non-empty list).",
    )
    fusor: str = Field(default="default", description="fusor must be the name of a fusor LM in the pool.")
    selector: str = Field(default="mbr", min_length=1,
                          description="selector must be a registered selector name, e.g. 'mbr' or 'majority'.")
    selector_args: dict[str, JsonValue] = Field(
        default_factory=dict, description="selector_args must be a dict of JSON values (the selector's arguments)."
    )
    agree: float = Field(default=0.8, gt=0.0, le=1.0, strict=True, allow_inf_nan=False,
                         description="agree must be a share in (0, 1], e.g. agree=0.8.")
    min_candidates: int = Field(default=1, ge=1, strict=True,
                                description="min_candidates must be an int in [1, n], e.g. min_candidates=1.")
    seed: int = Field(default=0, strict=True, description="seed must be an int, e.g. seed=0.")
    shuffle: bool = Field(default=True, strict=True, description="shuffle must be True or False.")
    prompt: FusorPrompt = Field(default_factory=FusorPrompt,
                                description="prompt must be a FusorPrompt, e.g. prompt=FusorPrompt(language='German').")
    guard: bool | None = Field(
        default=None, strict=True,
        description="guard must be True or False (rank the fused answer against the candidates), "
        "or None for auto (on when the selector ranks without an LM call).",
    )

    @model_validator(mode="after")
    def _check_min_candidates(self) -> FuseSettings:
        if self.min_candidates > self.n:
            raise ValueError(
                f"min_candidates={self.min_candidates} exceeds n={self.n}: pass min_candidates in [1, n] "
                "or raise n."
            )
        return self

    @classmethod
    def validated(cls, values: Mapping[str, Any], *, owner: str = "Fuse", pool: Pool | None = None) -> FuseSettings:
        """Build settings from ``values``; with ``pool``, also run :meth:`check_pool`.

        Raises:
            SettingsError: A value breaks a rule; the message names it and says what to pass.
            ValueError: ``pool`` does not know a name, or the draw plan is impossible.
        """
        try:
            settings = cls.model_validate(dict(values))
        except ValidationError as error:
            raise explain(error, cls, owner) from None
        if pool is not None:
            settings.check_pool(pool)
        return settings

    def replaced(self, *, owner: str = "Fuse", pool: Pool | None = None, **changes: Any) -> FuseSettings:
        """A validated copy with ``changes`` applied (the model itself is never left half-changed)."""
        return self.validated({**self.model_dump(), **changes}, owner=owner, pool=pool)

    def guard_enabled(self, selector: Selector) -> bool:
        """Whether the selection guard ranks the fused answers; the one place the guard is decided.

        ``guard=True`` or ``False`` is the answer as given (a forced guard with an LM selector costs
        its calls; in ``select`` mode nothing is fused, so it never acts). ``guard=None`` (auto) is on
        in ``fuse`` and ``auto`` mode when ``selector`` (the one :attr:`selector` names) declares
        ``calls_lm = False`` (MBR, majority vote, a reward function), and off for a selector that
        would need LM calls (LLM judge, USC, or one that does not declare it) and in ``select`` mode.

        Why on when free: on WMT24 en-de (5 recorded systems, bundled Qwen2.5-Coder-1.5B fusor, 196 short
        segments), plain fusion scored -7.5 chrF against chrF-MBR selection (95% CI [-10.5, -4.6]) and
        guarded fusion -0.03 ([-0.11, +0.02]), +7.5 above plain fusion. The guard gives back what a
        weak fusor loses, at no LM call; with that fusor it does not make fusion better than selection.
        """
        if self.guard is not None:
            return self.guard
        return self.mode != "select" and selector.calls_lm is False

    def check_pool(self, pool: Pool) -> None:
        """The rules that need the pool: every name resolves and the draw plan is possible.

        Raises:
            ValueError: An unknown teacher or fusor name (the message lists the known ones), or a
                teacher with temperature 0 that would be drawn more than once.
        """
        from fusion_dspy.teacher import plan_draws

        teachers = pool.resolve_teachers(self.teachers)
        pool.resolve_fusor(self.fusor)
        plan_draws(teachers, self.n, seed=self.seed)


class CallOptions(BaseModel):
    """Per-process options of a Fuse's calls: never saved, never tuned.

    Attributes:
        timeout: Seconds a teacher draw may take (``None``: no limit).
        max_threads: Cap on concurrent teacher calls (``None``: ``n``).
        store: A :class:`~fusion_dspy.store.CandidateStore` (or ``None``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    timeout: float | None = Field(
        default=None, gt=0, strict=True, allow_inf_nan=False,
        description="timeout must be seconds as a number > 0 (e.g. timeout=5.0), or None for no limit.",
    )
    max_threads: int | None = Field(
        default=None, ge=1, strict=True,
        description="max_threads must be an int >= 1 (e.g. max_threads=4), or None for one thread per draw.",
    )
    store: Any = Field(
        default=None,
        description="store must be a CandidateStore such as fusion_dspy.store.JsonlStore('bank.jsonl') or "
        "fusion_dspy.store.MemoryStore(), or None.",
    )

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: Any) -> Any:
        if value is not None and not all(callable(getattr(value, name, None)) for name in ("get", "put")):
            raise ValueError(f"got a {type(value).__name__}, which has no get(key)/put(key, draw) methods")
        return value

    def as_dict(self) -> dict[str, Any]:
        """The options as keyword arguments (the store object itself, not a dump of it)."""
        return {name: getattr(self, name) for name in type(self).model_fields}

    @classmethod
    def validated(cls, *, owner: str = "Fuse", **values: Any) -> CallOptions:
        try:
            return cls(**values)
        except ValidationError as error:
            raise explain(error, cls, owner) from None


def check_setting(name: str, value: Any, *, owner: str = "Fuse") -> Any:
    """Check one value against the rule of :class:`FuseSettings` field ``name`` (for search spaces).

    Returns the value as the field would store it.
    """
    try:
        return _field_adapter(name).validate_python(value)
    except ValidationError:
        field = FuseSettings.model_fields[name]
        raise SettingsError(f"{owner}({name}={_shown(value)}) is invalid: {field.description}") from None


@functools.cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    field = FuseSettings.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, field])


def explain(error: ValidationError, model: type[BaseModel], owner: str) -> SettingsError:
    """Turn pydantic's report into one message per problem: the argument, its value, what to pass."""
    problems = []
    for item in error.errors():
        name = item["loc"][0] if item["loc"] else None
        field = model.model_fields.get(name) if isinstance(name, str) else None
        message = str(item.get("msg", "")).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            problems.append(f"{owner}({name}={_shown(item.get('input'))}) is invalid: {owner} has no option {name!r}; "
                            f"pass only {', '.join(model.model_fields)}.")
            continue
        if field is None:  # A rule across fields (model validator): its message says what to do.
            problems.append(f"{owner}: {message}")
            continue
        hint = field.description or message
        detail = f" ({message})" if item["type"] == "value_error" else ""
        shown = _shown(item.get("input"))
        problems.append(f"{owner}({name}={shown}) is invalid{detail}: {hint}")
    return SettingsError("\n".join(dict.fromkeys(problems)))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class FuseConfig(Parameter):
    """A DSPy ``Parameter`` holding :class:`FuseSettings`, so ``save``/``load`` round-trip it as JSON.

    ``reset()`` keeps the configuration: it is structure chosen by the user or an optimizer, not a
    learned artefact like demos. The saved state records the task signature, and loading checks
    it and every teacher and fusor name against ``pool``, so a saved program that belongs to
    another task or names an LM this process does not know fails at load time, not mid-run.
    """

    def __init__(
        self, settings: FuseSettings, pool: Pool, signature: str | None = None,
        types: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.signature = signature
        #: The task fields' types (``{"answer": "int"}``): ``signature`` names the fields only, so
        #: without them a save of ``answer: int`` would load into ``answer: str`` unnoticed.
        self.types = dict(types) if types is not None else None

    def reset(self) -> None:
        pass

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        state = self.settings.model_dump(mode="json")
        if self.signature is not None:
            state["signature"] = self.signature
        types = getattr(self, "types", None)  # absent on a FuseConfig pickled by an earlier version
        if types is not None:
            state["signature_types"] = dict(types)
        return state

    def load_state(self, state: dict[str, Any]) -> FuseConfig:
        state = dict(state)
        saved_signature = state.pop("signature", None)
        if saved_signature is not None and self.signature is not None and saved_signature != self.signature:
            raise ValueError(
                f"The saved Fuse is for the signature {saved_signature!r}, but this Fuse is {self.signature!r}. "
                f"Load it into Fuse({saved_signature!r}, ...) (the program that saved it)."
            )
        saved_types = state.pop("signature_types", None)  # absent in saves of earlier versions
        types = getattr(self, "types", None)
        if saved_types is not None and types is not None and dict(saved_types) != types:
            differ = [*types, *(name for name in saved_types if name not in types)]
            shown = ", ".join(f"{name}: {saved_types.get(name)} (saved) vs {types.get(name)} (here)"
                              for name in differ if saved_types.get(name) != types.get(name))
            raise ValueError(
                f"The saved Fuse is for {self.signature or saved_signature!r} with other field types: {shown}. "
                "Load it into a Fuse whose signature has the saved types (the program that saved it)."
            )
        settings = FuseSettings.validated(state, owner="Fuse.load", pool=self.pool)
        if (settings.selector, settings.selector_args) != (self.settings.selector, self.settings.selector_args):
            from fusion_dspy.selectors.registry import build_selector

            build_selector(settings.selector, settings.selector_args)  # Fails now, not at the first call.
        self.settings = settings
        return self
