from __future__ import annotations

import logging

from fusion_dspy.optimizers import FusionOptimizer
from fusion_dspy.optimizers import SearchSpace

from fusion_dspy.testing import FakeEngine
from tests.optimizers.builders import exact
from tests.optimizers.builders import examples
from tests.optimizers.builders import poisoned_pool


def test_proposals_are_grounded_in_real_candidates_and_searched():
    problem = poisoned_pool()
    texts = iter(["Check the answer against the question.", "Prefer the candidate that repeats the question."])
    writer = FakeEngine(name="writer", responder=lambda r: {"instruction": next(texts)})
    space = SearchSpace(temperatures=None, modes=("fuse",))
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=6,
                          search_space=space, num_instructions=2, prompt_model=writer.lm(),
                          instructions=["A user instruction."])
    compiled = opt.compile(problem.fuse(n=2), trainset=examples(2), valset=examples(4, prefix="v"))
    assert writer.calls == 2
    shown = writer.requests[0].inputs
    assert "Reference: answer = q0!" in shown["examples"] and "Candidate 1: answer = wrong" in shown["examples"]
    assert "Candidate 2: answer = q0!" in shown["examples"]
    candidates = opt.study.user_attrs["fusion_dspy.instructions"]["self"]
    assert candidates[1:] == ["A user instruction.", "Check the answer against the question.",
                              "Prefer the candidate that repeats the question."]
    searched = {t.params.get("self.instruction") for t in opt.study.get_trials()} - {None}
    assert searched and searched <= {0, 1, 2, 3}
    assert compiled.prompt.instruction in candidates
    assert problem.fusor.calls > 0  # the grounding itself ran in select mode: no fusor call was spent there


def test_report_has_a_row_per_trial_importances_and_png_plots(tmp_path, caplog):
    problem = poisoned_pool()
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=8,
                          search_space=SearchSpace(temperatures=None), num_instructions=0, minibatch_size=2)
    opt.compile(problem.fuse(n=3), trainset=examples(6))
    with caplog.at_level(logging.INFO):
        report = opt.report(plots_dir=tmp_path)
    lines = report.table.splitlines()
    assert len(lines) == 2 + 8 and "configuration" in lines[0]
    assert report.best[0]["quality"] == 1.0 and "strong" in report.best[0]["summary"]
    assert report.confirmed and report.confirmed[0]["quality"] == 1.0
    assert set(report.importances["quality"]) <= set().union(*(t.params for t in opt.study.get_trials()))
    for name in ("history", "importances"):
        assert report.plots[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "bank:" in str(report)


def test_proposals_run_when_a_teacher_temperature_is_not_a_choice_and_fusors_are_named():
    """The README's pool (a teacher at T=0.8, temperature choices 0.3/0.7/1.0, named fusors) with default
    proposals failed before any trial: 'Unknown teacher name(s)' (the grounding run named the teacher as it
    is, but the pool only knows its variants), then 'Unknown fusor name' (the student's own fusor name)."""
    from dataclasses import replace

    problem = poisoned_pool()
    problem = replace(problem, teachers=[t.replace(temperature=0.8) for t in problem.teachers])
    teachers = problem.teachers
    writer = FakeEngine(name="writer", responder=lambda r: {"instruction": "Check each candidate."})
    opt = FusionOptimizer(metric=exact, teachers=teachers, fusors={"judge": problem.fusor_lm}, trials=4,
                          search_space=SearchSpace(modes=("fuse",)), num_instructions=1, prompt_model=writer.lm())
    compiled = opt.compile(problem.fuse(n=2), trainset=examples(2), valset=examples(3, prefix="v"))
    assert writer.calls == 1
    assert "Check each candidate." in opt.study.user_attrs["fusion_dspy.instructions"]["self"]
    assert compiled is not None
