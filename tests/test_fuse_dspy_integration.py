"""Fuse as a citizen of DSPy: nesting, optimizers, save/load, deepcopy, Evaluate."""

from __future__ import annotations

import json

import dspy
import pytest

from fusion_dspy import Fuse
from fusion_dspy import FusorPrompt
from fusion_dspy import Teacher
from fusion_dspy.testing import FakeEngine
from tests.helpers import fusor_engine
from tests.helpers import teacher_engine


class Pipeline(dspy.Module):
    """A larger program: rewrite the question, then fuse an answer."""

    def __init__(self, fuse: Fuse) -> None:
        super().__init__()
        self.rewrite = dspy.Predict("question -> rewritten")
        self.fuse = fuse

    def forward(self, question: str) -> dspy.Prediction:
        rewritten = self.rewrite(question=question).rewritten
        return self.fuse(question=rewritten)


def pool():
    return [Teacher(teacher_engine("a").lm(), name="a"), Teacher(teacher_engine("b").lm(), name="b")]


def test_predictors_are_visible_by_path_and_independent_of_pool_size():
    small = Pipeline(Fuse("question -> answer", 2, teachers=pool()[:1], fusor=fusor_engine().lm()))
    large = Pipeline(Fuse("question -> answer", 6, teachers=pool(), fusor=fusor_engine().lm()))
    names = [name for name, _ in small.named_predictors()]
    assert names == ["rewrite", "fuse.generate", "fuse.fusor"]
    assert names == [name for name, _ in large.named_predictors()]


def test_nested_fuse_runs_inside_a_program():
    engine = FakeEngine(responder=lambda r: {"rewritten": "better q", "answer": "A", "comparison": "c"})
    with dspy.context(lm=engine.lm()):
        pred = Pipeline(Fuse("question -> answer", 3))(question="q")
    assert pred.answer == "A" and pred.fusion.path == "fuse"


def test_save_and_load_round_trip_configuration_and_instruction(tmp_path):
    fuse = Fuse("question -> answer", 3, teachers=pool(), fusor=fusor_engine().lm(), mode="auto", agree=0.6,
                prompt=FusorPrompt(language="French", length_control=True), selector="majority")
    fuse.fusor.signature = fuse.fusor.signature.with_instructions("A tuned fusor instruction.")
    fuse.configure(teachers=["b"])
    path = tmp_path / "fuse.json"
    fuse.save(str(path))
    state = json.loads(path.read_text())
    assert state["config"]["n"] == 3 and state["config"]["teachers"] == ["b"]
    assert "lm" not in json.dumps(state["config"])  # names only, never LM objects

    fresh = Fuse("question -> answer", 5, teachers=pool(), fusor=fusor_engine().lm())
    fresh.load(str(path))
    assert fresh.n == 3 and fresh.mode == "auto" and fresh.settings.agree == 0.6
    assert [t.name for t in fresh.teachers] == ["b"]
    assert fresh.prompt.language == "French" and fresh.selector.name == "majority"
    assert fresh.fusor.signature.instructions == "A tuned fusor instruction."
    assert fresh(question="q").fusion.mode == "auto"


def test_loading_unknown_teacher_names_fails_clearly(tmp_path):
    fuse = Fuse("question -> answer", 2, teachers=pool(), fusor=fusor_engine().lm())
    path = tmp_path / "fuse.json"
    fuse.save(str(path))
    stranger = Fuse("question -> answer", 2, teachers=[Teacher(teacher_engine("z").lm(), name="z")],
                    fusor=fusor_engine().lm())
    with pytest.raises(ValueError, match=r"Unknown teacher name\(s\) \['a', 'b'\]"):
        stranger.load(str(path))
    stranger.register(teachers=pool())
    stranger.load(str(path))
    assert [t.name for t in stranger.teachers] == ["a", "b"]


def test_deepcopy_shares_models_but_not_configuration():
    teachers = pool()
    fusor = fusor_engine().lm()
    fuse = Fuse("question -> answer", 2, teachers=teachers, fusor=fusor)
    clone = fuse.deepcopy()
    assert clone.teachers[0] is teachers[0] and clone.teachers[0].lm is teachers[0].lm
    clone.configure(n=4, teachers=["a"])
    clone.register(teachers=[Teacher(teacher_engine("c").lm(), name="c")])
    assert fuse.n == 2 and [t.name for t in fuse.teachers] == ["a", "b"]
    assert "c" not in fuse.pool.teachers  # the copy's registry is its own
    reset = fuse.reset_copy()
    assert reset.n == 2


def test_fuse_inside_evaluate():
    engine = FakeEngine(responder=lambda r: {"answer": "yes", "comparison": "c"})
    devset = [dspy.Example(question=f"q{i}", answer="yes").with_inputs("question") for i in range(4)]
    with dspy.context(lm=engine.lm()):
        result = dspy.Evaluate(devset=devset, metric=lambda ex, pred, trace=None: ex.answer == pred.answer,
                               num_threads=2, display_progress=False)(Fuse("question -> answer", 2))
    assert result.score == 100.0


def test_miprov2_compiles_a_program_that_nests_fuse():
    """MIPROv2 proposes and searches instructions for fuse.generate and fuse.fusor, offline."""

    def respond(request):
        if "proposed_instruction" in request.outputs:
            return {"proposed_instruction": f"Answer precisely. ({request.seed})"}
        if "answer" in request.outputs:
            # The fused answer is right only under a tuned fusor instruction (one MIPRO wrote).
            tuned = "Answer precisely" in request.system
            return {"comparison": "c", "answer": "right" if tuned else "wrong", "rewritten": "q"}
        return {}

    engine = FakeEngine(responder=respond)
    lm = engine.lm()
    trainset = [dspy.Example(question=f"q{i}", answer="right").with_inputs("question") for i in range(8)]
    # guard=False: the fused answer is scored, not a teacher's (which the selection guard could return).
    program = Pipeline(Fuse("question -> answer", 2, mode="fuse", guard=False))
    with dspy.context(lm=lm):
        optimizer = dspy.MIPROv2(metric=lambda ex, pred, trace=None: ex.answer == pred.answer,
                                 prompt_model=lm, task_model=lm, auto=None, num_candidates=3,
                                 max_bootstrapped_demos=0, max_labeled_demos=0, verbose=False, num_threads=1)
        compiled = optimizer.compile(program, trainset=trainset, num_trials=6, minibatch=False)
        pred = compiled(question="q")
    assert isinstance(compiled.fuse, Fuse)
    assert "Answer precisely" in compiled.fuse.fusor.signature.instructions
    assert pred.answer == "right"
    assert program.fuse.fusor.signature.instructions != compiled.fuse.fusor.signature.instructions
