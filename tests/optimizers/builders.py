"""Fake problems for the optimizer tests: a strong teacher, a poisoning weak one, a copying fusor."""

from __future__ import annotations

import dataclasses

import dspy

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.testing import FakeEngine


def right(question: str) -> str:
    return f"{question}!"


def exact(example: dspy.Example, prediction: dspy.Prediction, trace: object = None) -> bool:
    return example.answer == prediction.answer


def examples(count: int, prefix: str = "q") -> list[dspy.Example]:
    return [dspy.Example(question=f"{prefix}{i}", answer=right(f"{prefix}{i}")).with_inputs("question")
            for i in range(count)]


@dataclasses.dataclass
class Problem:
    """Engines are kept so tests can count calls; LMs are built once (pools compare LMs by identity)."""

    strong: FakeEngine
    weak: FakeEngine
    fusor: FakeEngine
    teachers: list[Teacher]
    fusor_lm: dspy.BaseLM

    @property
    def teacher_calls(self) -> int:
        return self.strong.calls + self.weak.calls

    def fuse(self, n: int = 4, **kwargs: object) -> Fuse:
        return Fuse("question -> answer", n=n, teachers=self.teachers, fusor=self.fusor_lm, **kwargs)


def poisoned_pool(*, strong_right: bool = True) -> Problem:
    """``weak`` is always wrong; the fusor copies the *first* candidate it is shown, so fusing a
    pool with the weak teacher is worse than the strong teacher alone, and selection by majority
    beats fusion whenever the strong teacher holds the majority."""
    strong = FakeEngine(name="strong", responder=lambda r: {"answer": right(r.inputs["question"])
                                                             if strong_right else "nope"})
    weak = FakeEngine(name="weak", responder=lambda r: {"answer": "wrong"})

    def fuse_first(request):
        shown = request.inputs.get("candidates", "")
        first = "wrong" if "wrong" in shown else right(request.inputs["question"])
        return {"comparison": "copied one", "answer": first}

    fusor = FakeEngine(name="fusor", responder=fuse_first)
    teachers = [Teacher(weak.lm(), name="weak", temperature=0.7), Teacher(strong.lm(), name="strong", temperature=0.7)]
    return Problem(strong=strong, weak=weak, fusor=fusor, teachers=teachers, fusor_lm=fusor.lm())
