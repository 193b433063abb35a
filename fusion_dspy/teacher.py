"""Teachers: the LMs that generate candidates, and the rule that spreads N draws over them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from fusion_dspy.hashing import derive_seed

__all__ = ["Draw", "Teacher", "check_temperature", "draw_seed", "plan_draws"]

#: Temperature used when a teacher does not set one (the paper samples at T=0.7).
DEFAULT_TEMPERATURE = 0.7


def check_temperature(value: Any, *, owner: str = "Teacher(temperature=...)") -> float:
    """The one rule for a sampling temperature: a finite number >= 0. Returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner} must be a finite number >= 0 (e.g. 0.7), got {value!r}.")
    return float(value)


class Teacher:
    """One member of the teacher pool.

    Args:
        lm: The ``dspy.LM`` (or any ``dspy.BaseLM``) that generates candidates. ``None`` means the
            LM configured with ``dspy.configure``/``dspy.context`` at call time.
        temperature: Sampling temperature for this teacher's draws. Must be > 0 if the teacher is
            drawn more than once per call, or its repeated draws would be identical.
        samples: Weight of this teacher in the pool: how many draws it gets per round of the
            round-robin (see :func:`plan_draws`).
        name: Stable name used in reports, saved configurations and pool config files. Defaults to
            the LM's model string (``"default"`` for the context LM).

    Teachers are immutable; copying a ``Fuse`` (``deepcopy``, optimizers) shares them, so model
    weights and HTTP clients are never cloned.
    """

    __slots__ = ("lm", "temperature", "samples", "name")

    lm: Any
    temperature: float
    samples: int
    name: str

    def __init__(
        self,
        lm: Any = None,
        *,
        temperature: float = DEFAULT_TEMPERATURE,
        samples: int = 1,
        name: str | None = None,
    ) -> None:
        import dspy

        if lm is not None and not isinstance(lm, dspy.BaseLM):
            raise TypeError(
                f"Teacher(lm=...) must be a dspy.LM (or dspy.BaseLM), got {type(lm).__name__}. "
                "Wrap a model name as dspy.LM('provider/model'), or pass lm=None to use the configured LM."
            )
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"Teacher(samples=...) must be an int >= 1, got {samples!r}.")
        temperature = check_temperature(temperature)
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ValueError(f"Teacher(name=...) must be a non-empty string, got {name!r}.")
        object.__setattr__(self, "lm", lm)
        object.__setattr__(self, "temperature", temperature)
        object.__setattr__(self, "samples", samples)
        object.__setattr__(self, "name", name or (lm.model if lm is not None else "default"))

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Teacher is immutable; use teacher.replace(...) to derive a new one.")

    def replace(self, **changes: Any) -> Teacher:
        """A copy with some attributes changed, e.g. ``teacher.replace(temperature=0.3)``."""
        fields = {"lm": self.lm, "temperature": self.temperature, "samples": self.samples, "name": self.name}
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"Teacher.replace() got unknown attributes {sorted(unknown)}; valid: {sorted(fields)}.")
        fields.update(changes)
        lm = fields.pop("lm")
        return Teacher(lm, **fields)

    def __deepcopy__(self, memo: dict[int, Any]) -> Teacher:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling (``save_program=True``) rebuilds through the constructor: the default protocol
        # would restore the slots with setattr, which an immutable Teacher refuses.
        return (_rebuild_teacher, (self.lm, self.temperature, self.samples, self.name))

    def __copy__(self) -> Teacher:
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Teacher):
            return NotImplemented
        return (self.lm is other.lm and self.temperature == other.temperature
                and self.samples == other.samples and self.name == other.name)

    def __hash__(self) -> int:
        return hash((id(self.lm), self.temperature, self.samples, self.name))

    def __repr__(self) -> str:
        return f"Teacher(name={self.name!r}, temperature={self.temperature}, samples={self.samples})"


def _rebuild_teacher(lm: Any, temperature: float, samples: int, name: str) -> Teacher:
    return Teacher(lm, temperature=temperature, samples=samples, name=name)


@dataclasses.dataclass(frozen=True)
class Draw:
    """One planned candidate: which teacher, which of its samples, and the sampling settings.

    ``rollout_id`` is the sample index and ``seed`` is derived from the Fuse's base seed, the
    teacher's name and the sample index (:func:`draw_seed`), so repeated draws from one teacher are
    distinct samples (different cache key *and* different engine seed), two teachers over the same
    LM do not send the same request, and two base seeds share no draw; the same call repeated is
    reproducible and hits the DSPy cache.
    """

    index: int
    teacher: Teacher
    sample: int
    seed: int

    @property
    def config(self) -> dict[str, Any]:
        """The per-call ``config`` passed to the generate predictor.

        At temperature 0 a draw is deterministic and DSPy ignores (and warns about) ``rollout_id``,
        so it is sent only when sampling.
        """
        config: dict[str, Any] = {"seed": self.seed, "temperature": self.teacher.temperature}
        if self.teacher.temperature > 0:
            config["rollout_id"] = self.sample
        return config


def draw_seed(seed: int, teacher: str, sample: int) -> int:
    """The engine seed of one draw: a hash of the base ``seed``, the teacher's name and the sample index.

    ``seed + sample`` made ``Fuse(seed=0)`` and ``Fuse(seed=1)`` share all but one draw, and gave two
    teachers over one LM (same temperature) identical requests, so a pool listing one model twice
    silently held duplicate candidates. The hash keeps every (seed, teacher, sample) its own stream.
    """
    return derive_seed("draw", seed, teacher, sample)


def plan_draws(teachers: Sequence[Teacher], n: int, *, seed: int = 0) -> list[Draw]:
    """Spread ``n`` draws over the pool by weighted round-robin.

    Round ``r`` takes one draw from every teacher whose ``samples`` exceeds ``r``, in pool order;
    rounds repeat until ``n`` draws are planned. So the first draws cover every teacher once
    (diversity first), and over many rounds each teacher gets draws in proportion to ``samples``.
    For ``[A(samples=1), B(samples=2)]`` and ``n=5`` the plan is ``A B B A B``.

    Raises:
        ValueError: if a teacher with temperature 0 would be drawn more than once (its samples
            would all be identical).
    """
    if not teachers:
        raise ValueError("plan_draws needs at least one teacher.")
    cycle = [t for r in range(max(t.samples for t in teachers)) for t in teachers if t.samples > r]
    draws: list[Draw] = []
    per_teacher: dict[int, int] = {}
    for index in range(n):
        teacher = cycle[index % len(cycle)]
        sample = per_teacher.get(id(teacher), 0)
        per_teacher[id(teacher)] = sample + 1
        draws.append(Draw(index=index, teacher=teacher, sample=sample,
                          seed=draw_seed(seed, teacher.name, sample)))
    for teacher in teachers:
        if teacher.temperature == 0 and per_teacher.get(id(teacher), 0) > 1:
            raise ValueError(
                f"Teacher {teacher.name!r} has temperature 0 but gets {per_teacher[id(teacher)]} of the "
                f"{n} draws: its samples would be identical. Give it a temperature > 0, add teachers, "
                "or lower n."
            )
    return draws
