"""The optimizer's configuration as a few validated value objects.

``FusionOptimizer`` takes *what* to search as plain arguments (metric, pool, search space,
objectives) and *how* to run the study as these four objects:

* :class:`Budget`: how much to spend (trials, minibatch size, confirmation, cost cap, baselines).
* :class:`Parallelism`: trials in threads and examples in threads.
* :class:`Storage`: where the study and the candidate bank live, and how dead workers are found.
* :class:`Proposals`: the fusor instructions to try and who proposes more.

Every field can also be given to ``FusionOptimizer`` as a keyword of the same name
(``FusionOptimizer(metric=m, trials=40, n_jobs=2)``), the form the README uses; a field may be
given one way only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from typing import TypedDict

import optuna
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError
from pydantic import field_validator
from pydantic import model_validator

__all__ = ["Budget", "Parallelism", "Proposals", "Shortcuts", "Storage", "group_options"]


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class Budget(_Options):
    """How much a study may spend.

    Attributes:
        trials: Trial budget of the study (a resumed study runs only the missing ones).
        minibatch_size: Examples per step between pruning decisions.
        confirm: How many of the best configurations are scored on the full valset before one is
            chosen (single objective; results already measured are re-used, not re-run). Each
            teacher alone at N=1, when it ran, is scored too: it is the floor of the choice.
        max_cost: With two objectives, the cost budget ``compile`` selects under.
        baselines: Run the student's configuration and each teacher alone at N=1 first.
    """

    trials: int = Field(default=40, ge=1, strict=True)
    minibatch_size: int = Field(default=10, ge=1, strict=True)
    confirm: int = Field(default=3, ge=1, strict=True)
    max_cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    baselines: bool = True


class Parallelism(_Options):
    """How many things run at once.

    Attributes:
        n_jobs: Trials run concurrently in threads (``dspy.context`` is carried into each).
        num_threads: Examples scored concurrently within a trial.
    """

    n_jobs: int = Field(default=1, ge=1, strict=True)
    num_threads: int = Field(default=4, ge=1, strict=True)


class Storage(_Options):
    """Where the study and its candidate bank live.

    Attributes:
        url: ``None`` (in memory), a database URL, a journal file path, or an Optuna storage.
        study_name: Needed to resume; defaults to ``"fusion-<program class>"``.
        bank: Share teacher draws between trials (``False`` re-samples every trial, for comparison).
        bank_dir: Where banks live (default: beside the study; see :mod:`~fusion_dspy.optimizers.storage`).
        bank_name: The bank's folder under ``bank_dir`` (default: the study name). Studies that name
            the same bank share its teacher draws and fusor replies, so splits, seeds or metrics over
            one dataset pay for each draw once; each study keeps its own memo of scores.
        heartbeat_interval: Seconds between heartbeats of a running trial (database storages).
        grace_period: Seconds without heartbeat after which a trial counts as dead and is retried.
        max_retry: How often a dead worker's trial is retried (``None``: without limit).
    """

    url: str | os.PathLike[str] | optuna.storages.BaseStorage | None = None
    study_name: str | None = Field(default=None, min_length=1)
    bank: bool = True
    bank_dir: str | os.PathLike[str] | None = None
    bank_name: str | None = None
    heartbeat_interval: int = Field(default=10, ge=1, strict=True)
    grace_period: int = Field(default=30, ge=1, strict=True)
    max_retry: int | None = Field(default=3, ge=0, strict=True)

    @field_validator("bank_name")
    @classmethod
    def _plain_folder_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value in ("", ".", "..") or value != value.strip() or any(c in value for c in "/\\\0"):
            raise ValueError(
                f"bank_name must be a plain folder name (no path separators, not '.' or '..', no surrounding "
                f"spaces), got {value!r}; to put banks elsewhere, set bank_dir."
            )
        return value

    @model_validator(mode="after")
    def _check_heartbeat(self) -> Storage:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"grace_period ({self.grace_period} s) must exceed heartbeat_interval ({self.heartbeat_interval} s), "
                "or every live trial would look dead."
            )
        return self


class Proposals(_Options):
    """The fusor instructions a study tries.

    Attributes:
        instructions: Extra fusor instructions to try (beside the current one and the proposals).
        num_instructions: How many fusor instructions an LM proposes per Fuse (0: none).
        prompt_model: The LM that proposes instructions (default: the first fusor, else the configured LM).
    """

    instructions: tuple[str, ...] = ()
    num_instructions: int = Field(default=3, ge=0, strict=True)
    prompt_model: Any = None

    @field_validator("instructions", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("instructions must be a list of strings, e.g. instructions=['Be concise.'].")
        return tuple(value)


class Shortcuts(TypedDict, total=False):
    """The value objects' fields, accepted as ``FusionOptimizer`` keywords of the same name."""

    trials: int
    minibatch_size: int
    confirm: int
    max_cost: float | None
    baselines: bool
    n_jobs: int
    num_threads: int
    study_name: str | None
    bank: bool
    bank_dir: str | os.PathLike[str] | None
    bank_name: str | None
    heartbeat_interval: int
    grace_period: int
    max_retry: int | None
    instructions: Any
    num_instructions: int
    prompt_model: Any


_GROUPS: dict[str, type[_Options]] = {
    "budget": Budget, "parallelism": Parallelism, "storage": Storage, "proposals": Proposals,
}


def group_options(given: Mapping[str, _Options | None], shortcuts: Mapping[str, Any]) -> dict[str, _Options]:
    """Merge value objects and keyword shortcuts into one validated object per group.

    Raises:
        TypeError: An unknown keyword (the message lists the valid ones).
        ValueError: A field given both in its object and as a keyword, or an invalid value (the
            message names the keyword).
    """
    owner = {name: group for group, cls in _GROUPS.items() for name in cls.model_fields if name != "url"}
    unknown = sorted(set(shortcuts) - set(owner))
    if unknown:
        raise TypeError(f"FusionOptimizer got unknown keyword(s) {unknown}; valid: {sorted(owner)}.")
    out = {}
    for group, cls in _GROUPS.items():
        base = given.get(group)
        if base is not None and not isinstance(base, cls):
            raise TypeError(f"FusionOptimizer({group}=...) must be a {cls.__name__}, got {type(base).__name__}.")
        mine = {name: value for name, value in shortcuts.items() if owner[name] == group}
        twice = sorted(name for name in mine if base is not None and name in base.model_fields_set)
        if twice:
            raise ValueError(f"{twice} given both in {group}={cls.__name__}(...) and as keyword(s); give each once.")
        try:
            out[group] = cls(**{**(base.model_dump() if base is not None else {}), **mine}) if mine else (base or cls())
        except ValidationError as error:
            raise ValueError(_explain(error, group, cls)) from None
    return out


def _explain(error: ValidationError, group: str, cls: type[_Options]) -> str:
    problems = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["loc"]:
            problems.append(f"FusionOptimizer({item['loc'][0]}={item.get('input')!r}): {message} "
                            f"(a field of {cls.__name__}).")
        else:
            problems.append(f"FusionOptimizer {group}: {message}")
    return "\n".join(problems)
