"""Load a compiled program: make the pool it names known, then ``program.load(path)``.

A compiled program stores teacher and fusor *names* (never LMs). A teacher the optimizer sampled
at another temperature is saved as ``"<teacher>@t<temperature>"``; this loader derives it from the
base teacher, so the caller only passes the same pool the study used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dspy
from fusion_dspy.optimizers.fuses import ROOT
from fusion_dspy.optimizers.fuses import find_fuses

from fusion_dspy import Teacher

__all__ = ["load_compiled"]


def load_compiled(
    program: dspy.Module,
    path: str | os.PathLike[str],
    *,
    teachers: Sequence[Teacher] = (),
    fusors: Sequence[dspy.BaseLM | None] | Mapping[str, dspy.BaseLM | None] = (),
) -> dspy.Module:
    """Restore every Fuse's configuration (and the rest of the saved state) into ``program``.

    Args:
        program: A freshly built program of the same structure as the compiled one.
        path: The JSON file written by ``compiled.save(path)``.
        teachers: The teacher pool (as used by the study); temperature variants are derived.
        fusors: The fusor LMs, as a list or a ``{name: lm}`` mapping.

    Returns:
        ``program``, loaded in place.

    Raises:
        ValueError: A saved teacher or fusor name is unknown (the message lists the known ones).
    """
    state = json.loads(Path(path).read_text(encoding="utf-8"))
    named = dict(fusors) if isinstance(fusors, Mapping) else {_model(lm): lm for lm in fusors}
    for fuse_path, fuse in find_fuses(program).items():
        fuse.register(teachers=teachers, fusors=named)
        saved = state.get("config" if fuse_path == ROOT else f"{fuse_path}.config", {})
        for name in saved.get("teachers", []):
            if name in fuse.pool.teachers or "@t" not in name:
                continue
            base_name, _, temperature = name.rpartition("@t")
            base = fuse.pool.teachers.get(base_name)
            if base is not None:
                fuse.register(teachers=[base.replace(temperature=float(temperature), name=name)])
    program.load(str(path))
    return program


def _model(lm: Any) -> str:
    from fusion_dspy.pool import lm_name

    return lm_name(lm)
