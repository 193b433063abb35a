"""Attacks on the compile promises: save/load identity and what a traced step teaches."""

from __future__ import annotations

import json

import dspy
import pytest

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.testing import FakeEngine


def _pool():
    return [Teacher(FakeEngine(name="a", responder=lambda r: {"answer": "7"}).lm(), name="a"),
            Teacher(FakeEngine(name="b", responder=lambda r: {"answer": "8"}).lm(), name="b")]


def _fusor(answer="7"):
    return FakeEngine(name="fusor", responder=lambda r: {"comparison": "c", "answer": answer}).lm()


@pytest.mark.parametrize("other", ["question -> answer: int", "question: int -> answer"])
def test_load_refuses_a_save_whose_field_types_differ(tmp_path, other):
    path = tmp_path / "fuse.json"
    Fuse("question -> answer", 2, teachers=_pool(), fusor=_fusor()).save(str(path))
    typed = Fuse(other, 2, teachers=_pool(), fusor=_fusor())
    before = typed.dump_state()
    with pytest.raises(ValueError, match=r"other field types: .*str \(saved\) vs int \(here\)"):
        typed.load(str(path))  # the field names match; the types do not
    assert typed.dump_state() == before  # refused before anything was loaded


def test_a_save_without_field_types_still_loads(tmp_path):
    path = tmp_path / "fuse.json"
    Fuse("question -> answer", 3, teachers=_pool(), fusor=_fusor()).save(str(path))
    state = json.loads(path.read_text())
    assert state["config"].pop("signature_types") == {"question": "str", "answer": "str"}
    path.write_text(json.dumps(state))  # as an earlier version wrote it
    fresh = Fuse("question -> answer", 2, teachers=_pool(), fusor=_fusor())
    fresh.load(str(path))
    assert fresh.n == 3


def test_a_traced_fusor_step_holds_the_returned_text_and_saves(tmp_path):
    """A fusor reply with a lone surrogate and a NUL: the call returns U+FFFD; its demo must too."""
    fuse = Fuse("question -> answer", 2, teachers=_pool(), fusor=_fusor("7\ud800\x00"), guard=False)
    with dspy.context(trace=[]):
        pred = fuse(question="q")
        trace = list(dspy.settings.trace)
    (fused,) = [out for predictor, _, out in trace if predictor is fuse.fusor]
    assert fused.answer == pred.answer == "7\ufffd\ufffd"

    trainset = [dspy.Example(question=f"q{i}", answer="x").with_inputs("question") for i in range(2)]
    compiled = dspy.BootstrapFewShot(metric=lambda *a, **k: True, max_bootstrapped_demos=2,
                                     max_labeled_demos=0).compile(fuse, trainset=trainset)
    assert compiled.fusor.demos
    compiled.save(str(tmp_path / "compiled.json"))  # before: "surrogates not allowed"
    loaded = Fuse("question -> answer", 2, teachers=_pool(), fusor=_fusor())
    loaded.load(str(tmp_path / "compiled.json"))
    assert [d["answer"] for d in loaded.fusor.demos] == ["7\ufffd\ufffd"] * len(compiled.fusor.demos)


def test_a_variant_of_a_fuse_keeps_its_field_types_for_load():
    from fusion_dspy.concurrency import fuse_variant

    variant = fuse_variant(Fuse("question -> answer: int", 2, teachers=_pool(), fusor=_fusor()), n=1)
    assert variant.dump_state()["config"]["signature_types"] == {"question": "str", "answer": "int"}
