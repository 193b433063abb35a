from __future__ import annotations

import itertools

import pytest
from fusion_dspy.optimizers import CostModel
from fusion_dspy.optimizers import FusionOptimizer
from fusion_dspy.optimizers import Price
from fusion_dspy.optimizers import SearchSpace

from fusion_dspy import TokenUsage
from tests.optimizers.builders import exact
from tests.optimizers.builders import examples
from tests.optimizers.builders import poisoned_pool

_unique = itertools.count()
USAGE = {"local/strong": TokenUsage(input_tokens=1000, output_tokens=100, calls=2),
         "local/fusor": TokenUsage(input_tokens=2000, output_tokens=500, calls=1)}


def test_tokens_by_default_and_money_from_a_price_table_keyed_by_pool_name():
    assert CostModel().cost(USAGE) == 3600
    prices = CostModel(prices={"strong": Price(input=1.0, output=2.0), "local/fusor": Price(input=10, output=20)})
    priced = prices.with_aliases({"strong": "local/strong"})
    assert priced.cost(USAGE) == pytest.approx((1000 * 1 + 100 * 2 + 2000 * 10 + 500 * 20) / 1e6)
    with pytest.raises(ValueError, match="No price for LM 'local/strong'"):
        prices.cost(USAGE)


def test_bank_hits_keep_their_original_cost():
    problem = poisoned_pool()
    space = SearchSpace(n=(1, 1), teachers=("strong",), temperatures=None)
    opt = FusionOptimizer(metric=exact, teachers=problem.teachers, fusors=[problem.fusor_lm], trials=3,
                          search_space=space, num_instructions=0, pruner=None,
                          prices={"strong": {"input": 1e6, "output": 0}})
    opt.compile(problem.fuse(n=1), trainset=examples(3))
    first, *later = [t.user_attrs["result"] for t in opt.study.trials]
    assert first["lm_calls"] == 3 and first["cost"] > 0
    for result in later:  # the same configuration again: no call, same cost
        assert result["lm_calls"] == 0 and result["cost"] == first["cost"]


def test_a_fusor_answered_from_dspys_cache_costs_what_it_did_when_it_was_called():
    """A second study with a warm DSPy cache must see the same costs (a cache hit reports no usage).

    Found on a resumed WMT study (benchmarks/optimizer_pick.py): the fused trials' replies came from
    DSPy's disk cache of an earlier run, counted 0 tokens, and fusion looked free to the cost rule.
    """
    from fusion_dspy import Fuse
    from fusion_dspy import Teacher
    from fusion_dspy.testing import FakeEngine

    problem = poisoned_pool()
    name = f"cached-fusor-{next(_unique)}"  # DSPy's cache is process-wide: a name of its own
    fusor = FakeEngine(name=name, responder=lambda r: {"comparison": "c", "answer": r.inputs["question"] + "!"})
    fusor_lm = fusor.lm(cache=True)
    teachers = [Teacher(problem.strong.lm(), name="strong", temperature=0.7),
                Teacher(problem.weak.lm(), name="weak", temperature=0.7)]
    space = SearchSpace(n=(2, 2), temperatures=None, modes=("fuse",), guards=(False,), instructions=False,
                        criteria=(("content",),), discard_worst=(True,), length_control=(False,))

    def study() -> dict[str, float]:
        opt = FusionOptimizer(metric=exact, teachers=teachers, fusors=[fusor_lm], trials=2, search_space=space,
                              num_instructions=0, pruner=None)
        opt.compile(Fuse("question -> answer", n=2, teachers=teachers, fusor=fusor_lm), trainset=examples(3))
        return {t.user_attrs["result"]["config_key"]: t.user_attrs["result"]["cost"] for t in opt.study.trials}

    first = study()
    calls = fusor.calls
    assert calls > 0 and all(cost > 0 for cost in first.values())
    again = study()  # a new in-memory study: no memo, but DSPy's cache holds every fusor reply
    assert again == first
    assert fusor.calls > calls  # the fusor was asked again rather than read from DSPy's cache


def test_configurations_sending_the_fusor_the_same_prompt_share_one_paid_call():
    """Guard on and off fuse the same candidates with the same prompt: the bank pays for the fusor once,
    and both configurations cost what that call cost."""
    from fusion_dspy.optimizers.bank import CandidateBank
    from fusion_dspy.optimizers.memo import EvaluationMemo
    from fusion_dspy.optimizers.objective import Evaluator

    problem = poisoned_pool()
    fuse = problem.fuse(n=2, mode="fuse", store=CandidateBank.open(None))  # the session attaches its bank so
    evaluator = Evaluator(template=fuse, metric=exact, examples=examples(3), memo=EvaluationMemo(),
                          cost_model=CostModel(), num_threads=1)
    first = evaluator.evaluate({"self": fuse.settings.model_copy(update={"guard": False})}, [0, 1, 2],
                               minibatch_size=3).summary()
    second = evaluator.evaluate({"self": fuse.settings.model_copy(update={"guard": True})}, [0, 1, 2],
                                minibatch_size=3).summary()
    assert first["fusor_calls"] == 3, "the first configuration pays for one fusor call per example"
    assert second["fusor_calls"] == second["memo_hits"] == second["lm_calls"] == 0, \
        "the second sends the same prompts: every reply comes from the bank, not from the memo"
    assert problem.fusor.calls == 3
    assert second["cost"] == first["cost"] > 0, "a replayed reply costs what it cost when it was made"


def test_the_guard_is_part_of_a_configurations_identity():
    """The memo answers a configuration by its key: guard on and off give different answers, so
    different keys. (Before, the key left the guard out, and the second of the two was scored with
    the first one's results.)"""
    from fusion_dspy.optimizers.memo import EvaluationMemo
    from fusion_dspy.optimizers.objective import Evaluator

    from fusion_dspy import Fuse
    from fusion_dspy import Teacher
    from fusion_dspy.testing import FakeEngine
    from tests.optimizers.builders import right

    strong = FakeEngine(name="strong", responder=lambda r: {"answer": right(r.inputs["question"])})
    inventing = FakeEngine(name="inventing", responder=lambda r: {"comparison": "c", "answer": "invented"})
    fuse = Fuse("question -> answer", n=3, teachers=[Teacher(strong.lm(), name="strong", temperature=0.7)],
                fusor=inventing.lm(), selector="majority", mode="fuse")
    evaluator = Evaluator(template=fuse, metric=exact, examples=examples(2), memo=EvaluationMemo(),
                          cost_model=CostModel(), num_threads=1)
    off = {"self": fuse.settings.model_copy(update={"guard": False})}
    on = {"self": fuse.settings.model_copy(update={"guard": True})}
    assert evaluator.config_key(off) != evaluator.config_key(on)
    assert evaluator.evaluate(off, [0, 1], minibatch_size=2).quality == 0.0  # the invented answer
    guarded = evaluator.evaluate(on, [0, 1], minibatch_size=2)
    assert guarded.quality == 1.0, "the guard returns the majority's answer, not the memo's unguarded score"
    assert not any(result.memo_hit for result in guarded.results.values())


def test_every_setting_a_fused_answer_depends_on_changes_the_configuration_key():
    from fusion_dspy.optimizers.memo import EvaluationMemo
    from fusion_dspy.optimizers.objective import Evaluator

    from fusion_dspy import Fuse
    from fusion_dspy import FuseSettings
    from fusion_dspy import Teacher
    from fusion_dspy.testing import FakeEngine

    a, b = FakeEngine(name="a"), FakeEngine(name="b")
    fusors = {"f1": FakeEngine(name="f1").lm(), "f2": FakeEngine(name="f2").lm()}
    fuse = Fuse("question -> answer", n=3, teachers=[Teacher(a.lm(), name="a"), Teacher(b.lm(), name="b")],
                fusor=fusors["f1"], mode="auto")
    fuse.register(fusors=fusors)
    base = fuse.settings.model_copy(update={"fusor": "f1"})
    evaluator = Evaluator(template=fuse, metric=exact, examples=examples(1), memo=EvaluationMemo(),
                          cost_model=CostModel())
    changes = {
        "n": 4, "mode": "fuse", "teachers": ["a"], "fusor": "f2", "selector": "majority",
        "selector_args": {"metric": "bleu"}, "agree": 0.5, "min_candidates": 2, "seed": 7, "shuffle": False,
        "prompt": base.prompt.model_copy(update={"strategy": "edit"}), "guard": True,
    }
    assert set(changes) == set(FuseSettings.model_fields), "a new FuseSettings field needs a case here"
    key = evaluator.config_key({"self": base})
    same = [name for name, value in changes.items()
            if evaluator.config_key({"self": base.model_copy(update={name: value})}) == key]
    assert same == [], f"changing {same} left the configuration key as it was"
