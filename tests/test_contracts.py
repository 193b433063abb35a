"""Every CandidateStore and every Selector of the library runs its contract suite (fusion_dspy.testing)."""

from __future__ import annotations

from pathlib import Path

from fusion_dspy.selectors import LLMJudge
from fusion_dspy.selectors import MajorityVote
from fusion_dspy.selectors import MBRSelector
from fusion_dspy.selectors import RewardSelector
from fusion_dspy.selectors import UniversalSelfConsistency
from fusion_dspy.store import JsonlStore
from fusion_dspy.store import LayeredStore
from fusion_dspy.store import MemoryStore
from fusion_dspy.testing import CandidateStoreContract
from fusion_dspy.testing import SelectorContract

# -- stores -----------------------------------------------------------------------------------------


class TestMemoryStore(CandidateStoreContract):
    def make_store(self, path: Path) -> MemoryStore:
        return MemoryStore()


class TestJsonlStore(CandidateStoreContract):
    def make_store(self, path: Path) -> JsonlStore:
        return JsonlStore(path / "bank.jsonl")

    def reopen(self, store: JsonlStore, path: Path) -> JsonlStore:
        return JsonlStore(path / "bank.jsonl")

    def tear_tail(self, store: JsonlStore, path: Path) -> bool:
        with (path / "bank.jsonl").open("a", encoding="utf-8") as handle:
            handle.write('{"key": "torn", "outputs": {"ans')
        return True


class TestLayeredStore(CandidateStoreContract):
    """A layer that changes nothing behaves as the store under it, claims included."""

    def make_store(self, path: Path) -> LayeredStore:
        return LayeredStore(JsonlStore(path / "bank.jsonl"))

    def reopen(self, store: LayeredStore, path: Path) -> LayeredStore:
        return LayeredStore(JsonlStore(path / "bank.jsonl"))


class TestCandidateBank(CandidateStoreContract):
    """The optimizer's bank is a store too."""

    def make_store(self, path: Path):
        from fusion_dspy.optimizers.bank import CandidateBank

        return CandidateBank.open(path / "draws.jsonl")

    def reopen(self, store, path: Path):
        from fusion_dspy.optimizers.bank import CandidateBank

        return CandidateBank.open(path / "draws.jsonl")

    def tear_tail(self, store, path: Path) -> bool:
        with (path / "draws.jsonl").open("a", encoding="utf-8") as handle:
            handle.write('{"key": "to')
        return True


# -- selectors --------------------------------------------------------------------------------------


class TestMBR(SelectorContract):
    def make_selector(self) -> MBRSelector:
        return MBRSelector()


class TestMBRChrfPlusPlus(SelectorContract):
    def make_selector(self) -> MBRSelector:
        return MBRSelector(metric="chrf++")


class TestMajority(SelectorContract):
    def make_selector(self) -> MajorityVote:
        return MajorityVote()


class TestJudge(SelectorContract):
    def make_selector(self) -> LLMJudge:
        return LLMJudge(scale=5)


class TestUSC(SelectorContract):
    def make_selector(self) -> UniversalSelfConsistency:
        return UniversalSelfConsistency()


class TestReward(SelectorContract):
    def make_selector(self) -> RewardSelector:
        return RewardSelector(reward_fn=lambda inputs, prediction: float("paris" in prediction.answer.lower()))

    def make_failing_selector(self) -> RewardSelector:
        def broken(inputs, prediction):
            raise RuntimeError("reward model offline")

        return RewardSelector(reward_fn=broken)


# -- the suites catch broken implementations ----------------------------------------------------------


def test_the_store_contract_fails_a_store_that_loses_claims(tmp_path):
    import pytest

    class NoSingleFlight(MemoryStore):
        def claim(self, key: str) -> bool:
            return True  # everyone generates

    class Broken(CandidateStoreContract):
        def make_store(self, path):
            return NoSingleFlight()

    with pytest.raises(AssertionError, match="second claim"):
        Broken().test_the_first_claim_wins_and_a_stored_key_is_never_claimed(tmp_path)
    with pytest.raises(AssertionError, match="single flight allows 4"):
        Broken().test_concurrent_fuse_calls_generate_each_draw_once(tmp_path)


def test_the_selector_contract_fails_a_selector_that_breaks_ties_high_or_raises_raw_errors():
    import pytest

    from fusion_dspy.selectors import Selection
    from fusion_dspy.selectors import Selector

    class Last(Selector):
        name = "last"

        def select(self, signature, inputs, candidates):
            if len(candidates) == 0:
                raise ValueError("no candidates")
            if any("Marseille" in c.outputs["answer"] for c in candidates):
                raise KeyError("raw")
            return Selection(position=len(candidates) - 1, scores=(1.0,) * (len(candidates) + 1))

    class Broken(SelectorContract):
        def make_selector(self):
            return Last()

    with pytest.raises(AssertionError, match="lowest position|scores for"):
        Broken().test_identical_candidates_tie_to_the_lowest_position()
    with pytest.raises(AssertionError, match="FusionError, not KeyError"):
        Broken().test_failures_give_a_selection_or_a_fusion_error()


def test_the_selector_contract_holds_a_selector_to_its_calls_lm_declaration():
    import dspy
    import pytest

    from fusion_dspy.drivers import Batch
    from fusion_dspy.drivers import LMCall
    from fusion_dspy.selectors import Selection
    from fusion_dspy.selectors import Selector
    from fusion_dspy.testing import FakeEngine

    class AsksTheContextLM(Selector):
        name = "asks-context"
        calls_lm = False  # wrong: select() calls the context LM

        def select(self, signature, inputs, candidates):
            if not candidates:
                raise ValueError("no candidates")
            dspy.Predict("question -> verdict")(question="which?")
            return Selection(position=0)

    class AsksItsOwnLM(Selector):
        name = "asks-own"
        calls_lm = False  # wrong: steps() yields a batch of LM calls on its own LM

        def steps(self, signature, inputs, candidates):
            if not candidates:
                raise ValueError("no candidates")
            own = FakeEngine(name="own").lm()
            yield Batch((LMCall(dspy.Predict("question -> verdict"), {"question": "which?", "lm": own}),))
            return Selection(position=0)

    class Undeclared(Selector):
        name = "undeclared"
        calls_lm = None

        def select(self, signature, inputs, candidates):
            return Selection(position=0)

    for selector, message in ((AsksTheContextLM(), "declares calls_lm = False but made 1 LM call"),
                              (AsksItsOwnLM(), "declares calls_lm = False but made 1 LM call"),
                              (Undeclared(), "calls_lm must be True or False")):
        class Broken(SelectorContract):
            def make_selector(self, selector=selector):
                return selector

        with pytest.raises(AssertionError, match=message):
            Broken().test_declares_whether_it_calls_an_lm()
