from __future__ import annotations

import json

import dspy
import pytest
from fusion_dspy.programs.translate import Translate
from fusion_dspy.programs.translate import TranslationProgram
from fusion_dspy.programs.translate import chrf
from fusion_dspy.programs.translate import chrf_pp
from fusion_dspy.programs.translate import corpus_bleu
from fusion_dspy.programs.translate import corpus_chrf
from fusion_dspy.programs.translate import load_translation
from fusion_dspy.programs.translate import load_wmt24pp
from fusion_dspy.programs.translate import load_wmt_general
from sacrebleu.metrics import BLEU
from sacrebleu.metrics import CHRF

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.testing import FakeEngine

REF = "Die Katze sitzt auf der Matte."
HYP = "Die Katze saß auf einer Matte."


def example(target: str = REF) -> dspy.Example:
    return dspy.Example(source="The cat sits on the mat.", source_language="English",
                        target_language="German", target=target).with_inputs("source", "source_language",
                                                                               "target_language")


def test_chrf_matches_sacrebleu_and_hand_checked_bounds():
    pred = dspy.Prediction(translation=HYP)
    assert chrf(example(), pred) == pytest.approx(CHRF().sentence_score(HYP, [REF]).score)
    assert chrf_pp(example(), pred) == pytest.approx(CHRF(word_order=2).sentence_score(HYP, [REF]).score)
    assert chrf(example(), dspy.Prediction(translation=REF)) == pytest.approx(100.0)
    assert chrf(example(), dspy.Prediction(translation="qqq vvv")) == pytest.approx(0.0)
    assert 0 < chrf(example(), pred) < 100
    # chrF++ adds word bigrams, which this near miss mostly lacks: it must score lower than chrF.
    assert chrf_pp(example(), pred) < chrf(example(), pred)


def test_corpus_chrf_is_sacrebleus_corpus_score_not_a_mean():
    examples = [example(REF), example("Guten Morgen, liebe Freunde.")]
    preds = [dspy.Prediction(translation=HYP), dspy.Prediction(translation="Guten Morgen, Freunde.")]
    expected = CHRF().corpus_score([HYP, "Guten Morgen, Freunde."], [[REF, "Guten Morgen, liebe Freunde."]]).score
    assert corpus_chrf(examples, preds) == pytest.approx(expected)
    mean = (chrf(examples[0], preds[0]) + chrf(examples[1], preds[1])) / 2
    assert corpus_chrf(examples, preds) != pytest.approx(mean)


def test_load_wmt24pp_from_local_file_skips_canary_and_bad_sources(tmp_path):
    rows = [
        {"lp": "en-de_DE", "domain": "canary", "source": "CANARY", "target": "CANARY", "is_bad_source": True},
        {"lp": "en-de_DE", "domain": "news", "source": "Hello.", "target": "Hallo.", "is_bad_source": False,
         "segment_id": 1, "document_id": "d1"},
        {"lp": "en-de_DE", "domain": "news", "source": "???", "target": "???", "is_bad_source": True},
        {"lp": "en-de_DE", "domain": "social", "source": "Bye.", "target": "Tschüss.", "is_bad_source": False},
    ]
    path = tmp_path / "en-de_DE.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    examples = load_wmt24pp("en-de_DE", data_files=path)
    assert [e.source for e in examples] == ["Hello.", "Bye."]
    assert examples[0].target_language == "German" and examples[0].source_language == "English"
    assert set(examples[0].inputs().keys()) == {"source", "source_language", "target_language"}
    assert load_translation(path, limit=1)[0].target == "Hallo."


def write_general(root, sources, references, systems):
    root.mkdir(parents=True)
    (root / "system-outputs").mkdir()
    (root / "source.txt").write_text("".join(s + "\n" for s in sources))
    (root / "reference.refA.txt").write_text("".join(s + "\n" for s in references))
    (root / "documents.docs").write_text("".join(
        ("canary\tcanary" if i == 0 else f"news\tdoc{i}") + "\n" for i in range(len(sources))))
    for name, lines in systems.items():
        (root / "system-outputs" / f"{name}.txt").write_text("".join(s + "\n" for s in lines))


def test_load_wmt_general_attaches_every_system_and_keeps_line_alignment(tmp_path):
    root = tmp_path / "en-de"
    # U+2028 inside a segment must not split it (str.splitlines would).
    sources = ["CANARY GUID x", "One.", "Two\u2028lines.", "A very long third segment."]
    write_general(root, sources, ["CANARY", "Eins.", "Zwei.", "Drei."],
                  {"A": ["c", "Eins!", "Zwei!", "Drei!"], "B": ["c", "1.", "2.", "3."]})
    examples = load_wmt_general(root)
    assert [e.source for e in examples] == sources[1:]
    assert examples[1].system_outputs == {"A": "Zwei!", "B": "2."}
    assert examples[1].target == "Zwei." and examples[1].line == 2 and examples[1].document_id == "doc2"
    assert [e.source for e in load_wmt_general(root, max_source_chars=12)] == ["One.", "Two\u2028lines."]
    assert list(load_wmt_general(root, systems=["B"], limit=1)[0].system_outputs) == ["B"]


def test_load_wmt_general_rejects_misaligned_files(tmp_path):
    root = tmp_path / "en-de"
    write_general(root, ["c", "One."], ["c", "Eins."], {"A": ["c"]})
    with pytest.raises(ValueError, match="A has 1 lines but source.txt has 2"):
        load_wmt_general(root)


def make_program(answer: str = "Guten Morgen.") -> tuple[TranslationProgram, FakeEngine, FakeEngine]:
    teacher = FakeEngine(name="t", responder=lambda r: {"translation": f"Morgen {r.seed}"})
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "translation": answer})
    # guard=False: these tests follow the fusor's answer (the guard has its own tests).
    program = TranslationProgram(n=3, teachers=[Teacher(teacher.lm(), name="t")], fusor=fusor.lm(), guard=False)
    return program, teacher, fusor


def test_translation_program_runs_nested_in_a_larger_module():
    class Pipeline(dspy.Module):
        def __init__(self):
            super().__init__()
            self.translate = make_program()[0]

        def forward(self, text: str) -> dspy.Prediction:
            return self.translate(source=text.strip(), target_language="German")

    pipeline = Pipeline()
    pred = pipeline(text="  Good morning.  ")
    assert pred.translation == "Guten Morgen." and pred.fusion.path == "fuse"
    assert [name for name, _ in pipeline.named_predictors()] == ["translate.fuse.generate", "translate.fuse.fusor"]


def test_translation_program_fuser_sees_all_inputs():
    program, teacher, fusor = make_program()
    program(source="Good morning.", target_language="German")
    assert teacher.calls == 3 and fusor.calls == 1
    assert fusor.requests[0].inputs["target_language"] == "German"
    assert fusor.requests[0].inputs["source"] == "Good morning."
    assert isinstance(program.fuse, Fuse) and program.fuse.signature is Translate


def test_real_wmt_data_loads(real_data):
    if not (real_data / "wmt24pp" / "en-de_DE.jsonl").exists():
        pytest.skip("no wmt24pp in the data directory")
    examples = load_wmt24pp("en-de_DE")
    assert 900 < len(examples) < 998 and all(e.source and e.target for e in examples)
    general = load_wmt_general(limit=5)
    assert len(general) == 5 and len(general[0].system_outputs) == 10


def test_corpus_bleu_uses_the_chinese_tokenizer():
    refs = [example("我喜欢吃苹果。"), example("今天天气很好。")]
    hyps = [dspy.Prediction(translation="我喜欢吃苹果。"), dspy.Prediction(translation="今天天气不错。")]
    texts, references = [h.translation for h in hyps], [[r.target for r in refs]]
    expected = BLEU(tokenize="zh").corpus_score(texts, references).score
    assert corpus_bleu(refs, hyps, target_language="zh_CN") == pytest.approx(expected)
    # The default 13a tokenizer sees each unspaced sentence as one token: a different (wrong) score.
    assert BLEU().corpus_score(texts, references).score != pytest.approx(expected)


def test_corpus_chrf_statistics_sum_to_the_corpus_score():
    examples = [example(REF), example("Guten Morgen, liebe Freunde."), example("Bis bald.")]
    preds = [dspy.Prediction(translation=t) for t in (HYP, "Guten Morgen, Freunde.", "Bis später.")]
    rows = corpus_chrf.statistics(examples, preds)
    totals = [sum(column) for column in zip(*rows, strict=True)]
    assert len(rows) == 3 and corpus_chrf.from_statistics(totals) == pytest.approx(corpus_chrf(examples, preds))
    # A resample that repeats the first segment equals scoring that repeated corpus directly.
    repeated = [a + a + c for a, c in zip(rows[0], rows[2], strict=True)]
    direct = corpus_chrf([examples[0], examples[0], examples[2]], [preds[0], preds[0], preds[2]])
    assert corpus_chrf.from_statistics(repeated) == pytest.approx(direct)


def test_limit_zero_is_no_rows_and_a_negative_limit_is_refused(tmp_path):
    path = tmp_path / "en-de_DE.jsonl"
    path.write_text("".join(json.dumps({"lp": "en-de_DE", "source": f"S{i}", "target": f"T{i}"}) + "\n"
                            for i in range(3)))
    root = tmp_path / "en-de"
    write_general(root, ["CANARY GUID x", "One.", "Two."], ["c", "Eins.", "Zwei."], {"A": ["c", "1", "2"]})
    assert load_wmt24pp(data_files=path, limit=0) == [] and load_wmt_general(root, limit=0) == []  # were one row
    assert len(load_wmt24pp(data_files=path, limit=2)) == 2 and len(load_wmt_general(root, limit=9)) == 2
    for load in (lambda: load_wmt24pp(data_files=path, limit=-1), lambda: load_wmt_general(root, limit=-1),
                 lambda: load_translation(path, limit=-1)):
        with pytest.raises(ValueError, match="limit"):
            load()


@pytest.mark.parametrize("language", ["zh_CN", "zh-CN", "zh", "ZH-TW", "Chinese", "Simplified Chinese"])
def test_corpus_bleu_reads_codes_with_hyphens_and_language_names(language):
    refs = [example("我喜欢吃苹果。"), example("今天天气很好。")]
    hyps = [dspy.Prediction(translation="我喜欢吃苹果。"), dspy.Prediction(translation="今天天气不错。")]
    expected = BLEU(tokenize="zh").corpus_score([h.translation for h in hyps], [[r.target for r in refs]]).score
    # "zh-CN" and the examples' own target_language ("Simplified Chinese") fell back to 13a: 0.0.
    assert corpus_bleu(refs, hyps, target_language=language) == pytest.approx(expected)


def test_corpus_metrics_refuse_misaligned_examples_and_predictions():
    examples = [example("Hallo Welt."), example("Guten Tag.")]
    one = [dspy.Prediction(translation="Hallo Welt.")]
    # corpus chrF scored the one aligned pair (100.0) and dropped the other segment; BLEU gave 0.0.
    for score in (lambda: corpus_chrf(examples, one), lambda: corpus_chrf.statistics(examples, one),
                  lambda: corpus_bleu(examples, one, target_language="de")):
        with pytest.raises(ValueError, match="2 examples but 1 predictions"):
            score()
