from __future__ import annotations

import dspy
import pytest
from fusion_dspy.optimizers import FusionOptimizer
from fusion_dspy.optimizers import SearchSpace
from fusion_dspy.optimizers import load_compiled

from tests.optimizers.builders import exact
from tests.optimizers.builders import examples
from tests.optimizers.builders import poisoned_pool


class Pipeline(dspy.Module):
    def __init__(self, problem) -> None:
        super().__init__()
        self.answer = problem.fuse(n=2)

    def forward(self, question: str) -> dspy.Prediction:
        return self.answer(question=question)


def test_saved_program_restores_every_fuse_configuration(tmp_path):
    problem = poisoned_pool()
    space = SearchSpace(temperatures=(0.3,), modes=("fuse",), n=(2, 3), search_pool=False)
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=4,
                          search_space=space, instructions=["Keep only candidates that answer the question."],
                          num_instructions=0)
    compiled = opt.compile(Pipeline(problem), trainset=examples(3))
    settings = compiled.answer.settings
    assert settings.teachers == ["weak@t0.3", "strong@t0.3"]  # temperature variants are named
    path = tmp_path / "compiled.json"
    compiled.save(str(path))

    fresh = Pipeline(problem)
    load_compiled(fresh, path, teachers=problem.teachers, fusors=[problem.fusor_lm])
    assert fresh.answer.settings == settings
    assert fresh.answer.fusor.signature.instructions == compiled.answer.fusor.signature.instructions
    assert fresh.answer.teachers[0].temperature == 0.3

    lost = Pipeline(problem)
    lost.answer.pool.teachers.clear()
    with pytest.raises(ValueError, match="Unknown teacher name"):
        load_compiled(lost, path, teachers=[], fusors=[problem.fusor_lm])
