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
