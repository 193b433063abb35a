"""Small builders shared by the test modules."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path
from typing import Any
from typing import Literal

import dspy
import pydantic

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.testing import FakeEngine


def teacher_engine(name: str, answer: Any = None, **kwargs: Any) -> FakeEngine:
    """A teacher whose ``answer`` field is ``answer`` (or ``"<name>-<seed>"`` when ``None``)."""

    def respond(request):
        if answer is not None:
            return {"answer": answer}
        return {"answer": f"{name}-{request.seed}"}

    return FakeEngine(name=name, responder=respond, **kwargs)


def fusor_engine(answer: str = "fused", **kwargs: Any) -> FakeEngine:
    """A fusor that writes a fixed comparison and ``answer``."""
    return FakeEngine(
        name="fusor",
        responder=lambda request: {"comparison": "A is better than B.", "answer": answer},
        **kwargs,
    )


def make_fuse(n=3, *, teachers=None, fusor=None, **kwargs):
    teachers = teachers or [Teacher(teacher_engine("a").lm(), name="a"), Teacher(teacher_engine("b").lm(), name="b")]
    fusor = fusor or fusor_engine().lm()
    return Fuse("question -> answer", n, teachers=teachers, fusor=fusor, **kwargs)


class Person(pydantic.BaseModel):
    name: str
    age: int


class Typed(dspy.Signature):
    """Answer with typed fields."""

    question: str = dspy.InputField()
    count: int = dspy.OutputField()
    tags: list[str] = dspy.OutputField()
    person: Person = dspy.OutputField()
    verdict: Literal["yes", "no"] = dspy.OutputField()


def load_script(path: Path, name: str) -> types.ModuleType:
    """Import a benchmark or example script (not a package module) by its file path."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
