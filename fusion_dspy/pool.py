"""The named teachers and fusor LMs a Fuse can switch between.

Saved programs store *names* (never LM objects or keys); loading resolves them here. Optimizers
register a whole pool once and then switch the active subset by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fusion_dspy.teacher import Teacher

__all__ = ["CONTEXT_LM", "Pool", "lm_name"]

#: The name under which "the LM configured in dspy.configure / dspy.context" is known.
CONTEXT_LM = "default"


def lm_name(lm: Any) -> str:
    """The registry name of an LM: its model string, or :data:`CONTEXT_LM` for ``None``."""
    return CONTEXT_LM if lm is None else str(lm.model)


class Pool:
    """A registry of teachers and fusor LMs by name.

    ``copy.deepcopy`` gives an independent registry that shares the Teacher and LM objects, so a
    compiled copy of a program can register teachers without touching the original's pool, and no
    model is ever cloned.
    """

    def __init__(self) -> None:
        self.teachers: dict[str, Teacher] = {}
        self.fusors: dict[str, Any] = {}

    def add_teachers(self, teachers: Iterable[Teacher]) -> list[str]:
        names = []
        for teacher in teachers:
            if not isinstance(teacher, Teacher):
                raise TypeError(
                    f"teachers must be Teacher objects, got {type(teacher).__name__}. "
                    "Wrap an LM as Teacher(lm, temperature=0.7)."
                )
            known = self.teachers.get(teacher.name)
            if known is not None and known != teacher:
                raise ValueError(
                    f"Two different teachers are named {teacher.name!r}; give them distinct names, "
                    f"e.g. Teacher(lm, name='{teacher.name}-hot')."
                )
            self.teachers[teacher.name] = teacher
            names.append(teacher.name)
        return names

    def add_fusor(self, lm: Any, name: str | None = None) -> str:
        import dspy

        if lm is not None and not isinstance(lm, dspy.BaseLM):
            raise TypeError(f"fusor must be a dspy.LM (or None for the configured LM), got {type(lm).__name__}.")
        name = name or lm_name(lm)
        known = self.fusors.get(name, lm)
        if known is not lm:
            raise ValueError(f"Two different fusor LMs are named {name!r}; register one under another name.")
        self.fusors[name] = lm
        return name

    def resolve_teachers(self, names: Iterable[str]) -> list[Teacher]:
        names = list(names)
        unknown = [name for name in names if name not in self.teachers]
        if unknown:
            raise ValueError(
                f"Unknown teacher name(s) {unknown}; this Fuse knows {sorted(self.teachers)}. Pass the "
                "missing teachers to Fuse(teachers=...) or fuse.register(teachers=[...]) before loading."
            )
        return [self.teachers[name] for name in names]

    def resolve_fusor(self, name: str) -> Any:
        if name not in self.fusors:
            raise ValueError(
                f"Unknown fusor name {name!r}; this Fuse knows {sorted(self.fusors)}. Pass the LM as "
                "Fuse(fusor=...) or fuse.register(fusors=[...]) before loading."
            )
        return self.fusors[name]

    def __deepcopy__(self, memo: dict[int, Any]) -> Pool:
        copy = Pool()
        copy.teachers = dict(self.teachers)
        copy.fusors = dict(self.fusors)
        memo[id(self)] = copy
        return copy
