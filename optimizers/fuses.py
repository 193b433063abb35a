"""Find the ``Fuse`` modules of a program and apply settings to them by path."""

from __future__ import annotations

from collections.abc import Mapping

import dspy

from fusion_dspy import Fuse
from fusion_dspy import FuseSettings

__all__ = ["ROOT", "apply_settings", "find_fuses"]

#: The path of a program that is itself a Fuse.
ROOT = "self"


def find_fuses(program: dspy.Module) -> dict[str, Fuse]:
    """Every Fuse in ``program`` by attribute path (``"answer"``, ``"steps[1].fuse"``; ``"self"`` for the root).

    Paths follow ``dspy.Module.named_sub_modules`` (the names DSPy uses for predictors), so the
    optimizer's parameter names match ``program.named_predictors()``.

    Raises:
        ValueError: If the program contains no Fuse (there would be nothing to tune).
    """
    found = {}
    for name, module in program.named_sub_modules(type_=Fuse):
        path = ROOT if name == "self" else name.removeprefix("self.")
        found[path] = module
    if not found:
        raise ValueError(
            f"{type(program).__name__} contains no fusion_dspy.Fuse module; FusionOptimizer tunes Fuse "
            "configurations. Use a Fuse in the program (e.g. self.answer = Fuse('question -> answer', n=4, ...))."
        )
    return found


def apply_settings(program: dspy.Module, settings: Mapping[str, FuseSettings]) -> dspy.Module:
    """Configure every Fuse of ``program`` named in ``settings`` (in place) and return ``program``.

    Each Fuse adopts its settings whole (:meth:`fusion_dspy.Fuse.use_settings`, which owns every
    check); the fusor instruction is only re-rendered when the prompt changes, so an instruction
    another optimizer wrote into ``fuse.fusor`` survives a configuration that keeps the prompt.
    """
    fuses = find_fuses(program)
    unknown = sorted(set(settings) - set(fuses))
    if unknown:
        raise ValueError(f"No Fuse at path(s) {unknown} in {type(program).__name__}; it has {sorted(fuses)}.")
    for path, wanted in settings.items():
        fuses[path].use_settings(wanted)
    return program
