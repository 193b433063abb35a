"""get_selector / SELECTOR_NAMES: names round-trip, mistakes get clear errors."""

from __future__ import annotations

import pytest

import fusion_dspy.selectors as selectors
from fusion_dspy.selectors import SELECTOR_NAMES
from fusion_dspy.selectors import LLMJudge
from fusion_dspy.selectors import MajorityVote
from fusion_dspy.selectors import MBRSelector
from fusion_dspy.selectors import RewardSelector
from fusion_dspy.selectors import Selector
from fusion_dspy.selectors import UniversalSelfConsistency
from fusion_dspy.selectors import get_selector
from fusion_dspy.testing import FakeEngine


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("mbr", MBRSelector),
        ("majority", MajorityVote),
        ("judge", LLMJudge),
        ("usc", UniversalSelfConsistency),
    ],
)
def test_names_build_their_selector_and_round_trip(name, cls):
    selector = get_selector(name)
    assert type(selector) is cls
    assert selector.name == name
    assert type(get_selector(selector.name)) is cls


def test_every_name_is_listed_and_matches_a_class():
    classes = [MBRSelector, MajorityVote, LLMJudge, UniversalSelfConsistency, RewardSelector]
    assert sorted(SELECTOR_NAMES) == sorted(cls.name for cls in classes)


def test_kwargs_reach_the_constructor():
    lm = FakeEngine().lm()
    assert get_selector("mbr", metric="chrf++").metric == "chrf++"
    assert get_selector(" Majority ", fields=["answer"]).fields == ("answer",)
    judge = get_selector("judge", lm=lm, scale=5, criteria="Be brief.")
    assert (judge.lm, judge.scale, judge.criteria) == (lm, 5, "Be brief.")
    assert get_selector("usc", lm=lm).lm is lm

    def reward(inputs, prediction):
        return 1.0

    assert get_selector("reward", reward_fn=reward).reward_fn is reward


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        get_selector("best")
    for name in SELECTOR_NAMES:
        assert repr(name) in str(info.value)


def test_reward_needs_a_reward_fn():
    with pytest.raises(ValueError, match="reward_fn"):
        get_selector("reward")


def test_bad_kwargs_name_the_selector():
    with pytest.raises(ValueError, match="'mbr'"):
        get_selector("mbr", temperature=0.5)


def test_package_exports():
    for name in selectors.__all__:
        assert hasattr(selectors, name), name
    assert issubclass(LLMJudge, Selector) and "Selection" in selectors.__all__


# -- specs: a selector's arguments survive save/load -------------------------------------------------


def _fuse(selector=None):
    from fusion_dspy import Fuse
    from fusion_dspy import Teacher

    teacher = Teacher(FakeEngine(name="t").lm(), name="t")
    return Fuse("question -> reasoning, answer", 3, teachers=[teacher], selector=selector)


def test_majority_fields_survive_save_and_load(tmp_path):
    path = tmp_path / "fuse.json"
    _fuse(MajorityVote(fields=["reasoning"])).save(str(path))
    fresh = _fuse()
    fresh.load(str(path))
    assert isinstance(fresh.selector, MajorityVote)
    assert fresh.selector.fields == ("reasoning",)  # today: MajorityVote() (every field votes)


@pytest.mark.parametrize("max_chars", [500, None])
def test_mbr_max_chars_survives_the_spec_and_save_and_load(tmp_path, max_chars):
    from fusion_dspy.selectors import build_selector
    from fusion_dspy.selectors import selector_spec

    rebuilt = build_selector(*selector_spec(MBRSelector(metric="chrf++", max_chars=max_chars)))
    assert (rebuilt.metric, rebuilt.max_chars) == ("chrf++", max_chars)
    path = tmp_path / "fuse.json"
    _fuse(MBRSelector(max_chars=max_chars)).save(str(path))
    fresh = _fuse()
    fresh.load(str(path))
    assert isinstance(fresh.selector, MBRSelector) and fresh.selector.max_chars == max_chars


def test_builtin_specs_round_trip():
    from fusion_dspy.selectors import build_selector
    from fusion_dspy.selectors import selector_spec

    for selector in (MBRSelector(metric="chrf++"), MajorityVote(fields=["answer"]), MajorityVote(),
                     LLMJudge(scale=5, criteria="Be brief.")):
        name, args = selector_spec(selector)
        rebuilt = build_selector(name, args)
        assert type(rebuilt) is type(selector) and repr(rebuilt) == repr(selector)
    assert selector_spec(RewardSelector(reward_fn=lambda i, p: 1.0)) == ("reward", None)


def test_custom_selectors_opt_in_by_registering(tmp_path):
    from fusion_dspy.selectors import Selection
    from fusion_dspy.selectors import register_selector
    from fusion_dspy.selectors import registry
    from fusion_dspy.selectors import selector_spec

    class Nth(Selector):
        name = "nth-test"

        def __init__(self, *, k: int = 0) -> None:
            self.k = k

        def spec_args(self):
            return {"k": self.k}

        def select(self, signature, inputs, candidates):
            return Selection(position=min(self.k, len(candidates) - 1))

    assert selector_spec(Nth(k=2)) == ("nth-test", None)  # not registered: saved by name only
    register_selector(Nth)
    try:
        assert selector_spec(Nth(k=2)) == ("nth-test", {"k": 2})
        path = tmp_path / "fuse.json"
        _fuse(Nth(k=2)).save(str(path))
        fresh = _fuse()
        fresh.load(str(path))
        assert isinstance(fresh.selector, Nth) and fresh.selector.k == 2
        with pytest.raises(ValueError, match="taken"):
            register_selector(MajorityVote, name="mbr")
    finally:
        registry._custom.pop("nth-test")


def test_loading_a_selector_that_cannot_be_rebuilt_fails_at_load_not_mid_run(tmp_path):
    path = tmp_path / "fuse.json"
    _fuse(RewardSelector(reward_fn=lambda inputs, prediction: 1.0)).save(str(path))
    fresh = _fuse()
    with pytest.raises(ValueError, match="reward function"):
        fresh.load(str(path))
    assert fresh.settings.selector == "mbr"  # nothing changed
    same = _fuse(RewardSelector(reward_fn=lambda inputs, prediction: 0.0))
    same.load(str(path))  # a Fuse that already holds a reward selector keeps it
    assert isinstance(same.selector, RewardSelector)
