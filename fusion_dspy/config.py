"""``FuseConfig``: the part of a Fuse that is saved, loaded and tuned (never LM objects)."""

from __future__ import annotations

from typing import Any
from typing import Literal

from dspy.predict.parameter import Parameter
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

from fusion_dspy.pool import Pool
from fusion_dspy.prompt import FusorPrompt

__all__ = ["FuseConfig", "FuseSettings", "Mode"]

Mode = Literal["fuse", "select", "auto"]


class FuseSettings(BaseModel):
    """The validated, JSON-serialisable configuration of one Fuse.

    Attributes:
        n: Number of candidates drawn per call.
        mode: ``fuse`` (the fusor writes the answer), ``select`` (Best-of-N) or ``auto`` (return the
            consensus when at least ``agree`` of the candidates agree, else fuse).
        teachers: Names of the active teachers, in pool order.
        fusor: Name of the fusor LM (``"default"``: the configured LM).
        selector: Name of the selector used by ``select`` and as the fusor's fallback.
        agree: Agreement share that lets ``auto`` skip the fusor.
        min_candidates: Fewest successful candidates to proceed with; fewer raises.
        seed: Base seed of the draws and of the candidate-order shuffle.
        shuffle: Shuffle the candidates before the fusor sees them (position bias).
        prompt: The fusor prompt configuration.
        guard: Rank the fused answer against the candidates with the selector; keep it only if no
            candidate outranks it (see :mod:`fusion_dspy.guard`).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    n: int = Field(default=5, ge=1)
    mode: Mode = "fuse"
    teachers: list[str] = Field(default_factory=lambda: ["default"], min_length=1)
    fusor: str = "default"
    selector: str = "mbr"
    agree: float = Field(default=0.8, gt=0.0, le=1.0)
    min_candidates: int = Field(default=1, ge=1)
    seed: int = 0
    shuffle: bool = True
    prompt: FusorPrompt = Field(default_factory=FusorPrompt)
    guard: bool = False


class FuseConfig(Parameter):
    """A DSPy ``Parameter`` holding :class:`FuseSettings`, so ``save``/``load`` round-trip it as JSON.

    ``reset()`` keeps the configuration: it is structure chosen by the user or an optimizer, not a
    learned artefact like demos. Loading checks every teacher and fusor name against ``pool``, so a
    saved program that names an LM this process does not know fails at load time, not mid-run.
    """

    def __init__(self, settings: FuseSettings, pool: Pool) -> None:
        self.settings = settings
        self.pool = pool

    def reset(self) -> None:
        pass

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        return self.settings.model_dump(mode="json")

    def load_state(self, state: dict[str, Any]) -> FuseConfig:
        settings = FuseSettings.model_validate(state)
        self.pool.resolve_teachers(settings.teachers)
        self.pool.resolve_fusor(settings.fusor)
        self.settings = settings
        return self
