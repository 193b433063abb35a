from __future__ import annotations

import json

import dspy
import pytest

pytest.importorskip("if_verifiable", reason="needs the instruct extra: pip install 'fusion-dspy[instruct]'")

from fusion_dspy.programs import get_task  # noqa: E402
from fusion_dspy.programs.instruct import InstructProgram  # noqa: E402
from fusion_dspy.programs.instruct import ifeval_scores  # noqa: E402
from fusion_dspy.programs.instruct import instruction_accuracy  # noqa: E402
from fusion_dspy.programs.instruct import load_ifeval  # noqa: E402
from fusion_dspy.programs.instruct import prompt_accuracy  # noqa: E402

from fusion_dspy import Teacher  # noqa: E402
from fusion_dspy.testing import FakeEngine  # noqa: E402


def example(ids, kwargs, prompt="Write something."):
    return dspy.Example(key=1, prompt=prompt, instruction_id_list=ids, kwargs=kwargs).with_inputs("prompt")


NO_COMMA_LOWER = example(["punctuation:no_comma", "change_case:english_lowercase"], [{}, {}])


@pytest.mark.parametrize(
    ("response", "prompt_score", "instruction_score"),
    [
        ("all lowercase and no commas here", 1.0, 1.0),
        ("all lowercase, but a comma", 0.0, 0.5),
        ("Capitals, and a comma", 0.0, 0.0),
        ("", 0.0, 0.0),
    ],
)
def test_metrics_on_hand_checked_responses(response, prompt_score, instruction_score):
    prediction = dspy.Prediction(response=response)
    assert prompt_accuracy(NO_COMMA_LOWER, prediction) == prompt_score
    assert instruction_accuracy(NO_COMMA_LOWER, prediction) == instruction_score


def test_loose_scores_forgive_a_markdown_wrapper():
    quoted = example(["startend:quotation"], [{}])
    scores = ifeval_scores(quoted, '**"a quoted answer"**')
    assert (scores.prompt_strict, scores.prompt_loose) == (0.0, 1.0)
    assert scores.passed == (("startend:quotation", False),)


def test_sentence_and_capital_word_checks_run_without_network_data():
    from fusion_dspy.programs.instruct import _has_punkt

    sentences = example(["length_constraints:number_sentences"], [{"relation": "less than", "num_sentences": 4}])
    assert ifeval_scores(sentences, "One thing. Another thing. A third thing.").prompt_strict == 1.0
    assert ifeval_scores(sentences, "One. Two. Three. Four. Five.").prompt_strict == 0.0
    capitals = example(["change_case:capital_word_frequency"],
                       [{"capital_relation": "at least", "capital_frequency": 3}])
    assert ifeval_scores(capitals, "THIS IS LOUD.").prompt_strict == 1.0
    scores = ifeval_scores(capitals, "This is NOT loud.")
    assert scores.prompt_strict == 0.0
    assert scores.approximate == (not _has_punkt())  # reported whenever the offline stand-in was used
    assert not ifeval_scores(NO_COMMA_LOWER, "fine").approximate  # never for checks that need no punkt


def test_loader_keeps_only_given_kwargs_and_checks_lengths(tmp_path):
    rows = [
        {"key": 7, "prompt": "P", "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
         "kwargs": [{}, {"relation": "at least", "num_words": 5}]},
    ]
    path = tmp_path / "ifeval.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    (loaded,) = load_ifeval(data_files=path)
    # datasets unifies the kwargs structs (every key in every dict, None where absent): dropped again.
    assert loaded.kwargs == [{}, {"relation": "at least", "num_words": 5}]
    assert set(loaded.inputs().keys()) == {"prompt"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"key": 8, "prompt": "P", "instruction_id_list": ["a", "b"], "kwargs": [{}]}))
    with pytest.raises(ValueError, match="2 instructions but 1 kwargs"):
        load_ifeval(data_files=bad)


def test_instruct_program_nested_and_fused():
    teacher = FakeEngine(name="t", responder=lambda r: {"response": f"Draft, number {r.seed}"})
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "response": "a fused draft without commas"})

    class Wrapper(dspy.Module):
        def __init__(self):
            super().__init__()
            self.writer = InstructProgram(n=2, teachers=[Teacher(teacher.lm(), name="t")], fusor=fusor.lm(),
                                          guard=False)

        def forward(self, prompt: str) -> dspy.Prediction:
            return self.writer(prompt=prompt)

    prediction = Wrapper()(prompt=NO_COMMA_LOWER.prompt)
    assert prediction.fusion.path == "fuse" and teacher.calls == 2
    assert prompt_accuracy(NO_COMMA_LOWER, prediction) == 1.0
    assert "writer.fuse.fusor" in dict(Wrapper().named_predictors())


def test_task_is_registered_for_the_cli():
    task = get_task("instruct")
    assert task.metric is prompt_accuracy and task.signature.output_fields.keys() == {"response"}


def test_every_real_ifeval_prompt_scores_offline(real_data):
    examples = load_ifeval()
    assert len(examples) == 541
    scores = [ifeval_scores(e, "A short reply. It follows little.") for e in examples]
    assert all(0.0 <= s.instruction_strict <= 1.0 for s in scores)
    assert sum(s.approximate for s in scores) in (0, 64)  # 64 prompts need punkt (0 if it is installed)


def test_eval_cli_runs_the_instruct_task(tmp_path, capsys):
    from fusion_dspy.cli import main
    from fusion_dspy.evaluate import EvalReport

    pool = {"teachers": [{"name": "a", "model": "fake/a"}, {"name": "b", "model": "fake/b"}],
            "fusors": [{"name": "f", "model": "fake/f"}]}
    (tmp_path / "pool.json").write_text(json.dumps(pool))
    data = tmp_path / "ifeval.jsonl"
    data.write_text("".join(json.dumps({"key": i, "prompt": f"Say hi {i} without commas.",
                                        "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}) + "\n"
                            for i in range(2)))
    out = tmp_path / "out"
    argv = ["eval", "--task", "instruct", "--data", str(data), "--config", str(tmp_path / "pool.json"), "--n", "2",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    report = EvalReport.model_validate_json((out / "report.json").read_text())
    assert report.task == "instruct" and report.examples == 2
    assert {m.method for m in report.methods} >= {"single:a", "bon-mbr", "fusion", "oracle"}
    assert "IFEval prompt strict" in capsys.readouterr().out


def test_limit_zero_is_no_rows_and_a_negative_limit_is_refused(tmp_path):
    path = tmp_path / "ifeval.jsonl"
    path.write_text("".join(json.dumps({"key": i, "prompt": f"P{i}", "instruction_id_list": ["punctuation:no_comma"],
                                        "kwargs": [{}]}) + "\n" for i in range(3)))
    assert load_ifeval(data_files=path, limit=0) == []  # was one row
    assert len(load_ifeval(data_files=path, limit=2)) == 2
    with pytest.raises(ValueError, match="limit"):
        load_ifeval(data_files=path, limit=-1)


def test_an_unknown_instruction_is_refused_not_skipped():
    # The checkers skip ids they do not know: a typo scored 1.0 on a response that follows the real instruction.
    typo = example(["punctuation:no_comma", "punctuation:no_commas"], [{}, {}])
    with pytest.raises(ValueError, match="punctuation:no_commas"):
        ifeval_scores(typo, "no commas here")


def test_missing_kwargs_are_refused_not_drawn_at_random():
    # Without kwargs IFEval's checkers draw a random threshold: the same response scored 0 or 1 from call to call.
    words = example(["length_constraints:number_words", "punctuation:no_comma"], [{}])
    with pytest.raises(ValueError, match="kwargs"):
        ifeval_scores(words, "hi there you go")


def test_an_empty_response_fails_every_instruction_and_the_feedback_says_which():
    from fusion_dspy.programs.instruct import instruction_feedback

    for response in ("", "   ", None):
        scores = ifeval_scores(NO_COMMA_LOWER, response)
        assert scores.passed == (("punctuation:no_comma", False), ("change_case:english_lowercase", False))
        assert scores.prompt_strict == scores.instruction_strict == 0.0
        result = instruction_feedback(NO_COMMA_LOWER, dspy.Prediction(response=response))
        # Was "Followed 0 of 0 instructions." with no failure named.
        assert "0 of 2" in result.feedback and "punctuation:no_comma" in result.feedback and result.score == 0.0


def test_a_missing_data_file_is_reported_as_a_file_not_a_hub_name():
    with pytest.raises(FileNotFoundError, match="ifeval_typo.jsonl"):
        get_task("instruct").load("ifeval_typo.jsonl")
