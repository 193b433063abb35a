"""Settings own their validity: one rule per field, checked once, with messages that say what to pass."""

from __future__ import annotations

import pytest

from fusion_dspy import Fuse
from fusion_dspy import FuseSettings
from fusion_dspy import Teacher
from fusion_dspy.config import SettingsError
from fusion_dspy.config import check_setting
from fusion_dspy.selectors import MajorityVote
from fusion_dspy.store import MemoryStore
from fusion_dspy.testing import FakeEngine
from tests.helpers import make_fuse
from tests.helpers import teacher_engine


@pytest.mark.parametrize(
    "kwargs, named, advice",
    [
        ({"timeout": "5"}, "timeout='5'", "timeout=5.0"),
        ({"timeout": 0}, "timeout=0", "> 0"),
        ({"timeout": float("nan")}, "timeout=nan", "> 0"),
        ({"max_threads": 0}, "max_threads=0", "int >= 1"),
        ({"max_threads": -1}, "max_threads=-1", "int >= 1"),
        ({"max_threads": 2.5}, "max_threads=2.5", "int >= 1"),
        ({"store": "bank.jsonl"}, "store='bank.jsonl'", "fusion_dspy.store.JsonlStore('bank.jsonl')"),
        ({"n": True}, "n=True", "int >= 1"),
        ({"n": "3"}, "n='3'", "int >= 1"),
        ({"seed": "0"}, "seed='0'", "seed must be an int"),
        ({"shuffle": "yes"}, "shuffle='yes'", "True or False"),
        ({"agree": 0}, "agree=0", "share in (0, 1]"),
        ({"min_candidates": 4}, "min_candidates=4 exceeds n=3", "min_candidates in [1, n]"),
        ({"guard": "auto"}, "guard='auto'", "or None for auto"),
        ({"guard": 1}, "guard=1", "True or False"),
    ],
)
def test_every_constructor_argument_is_checked_at_construction(kwargs, named, advice):
    kwargs = {"n": 3, **kwargs}
    with pytest.raises(SettingsError) as info:
        make_fuse(kwargs.pop("n"), **kwargs)
    message = str(info.value)
    assert named in message and advice in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


def test_valid_call_options_are_kept():
    store = MemoryStore()
    fuse = make_fuse(3, timeout=5, max_threads=2, store=store)
    assert (fuse.timeout, fuse.max_threads, fuse.store) == (5.0, 2, store)


def test_a_failed_configure_changes_nothing():
    fuse = make_fuse(3)
    before = fuse.settings
    selector = fuse.selector
    newcomer = Teacher(teacher_engine("c").lm(), name="c")
    with pytest.raises(SettingsError, match="n=0"):
        fuse.configure(selector=MajorityVote(fields=["answer"]), teachers=["a", newcomer], n=0)
    assert fuse.settings == before
    assert fuse.selector is selector  # today: the new selector was set before validation
    assert "c" not in fuse.pool.teachers  # nor was the teacher registered
    with pytest.raises(ValueError, match="temperature 0"):
        fuse.configure(teachers=[Teacher(teacher_engine("z").lm(), name="z", temperature=0)])
    assert "z" not in fuse.pool.teachers and fuse.settings == before


def test_a_failed_register_registers_nothing():
    fuse = make_fuse(3)
    before = (dict(fuse.pool.teachers), dict(fuse.pool.fusors))
    newcomer = Teacher(teacher_engine("c").lm(), name="c")
    impostor = Teacher(teacher_engine("other").lm(), name="a")  # a different teacher under a known name
    fusor = FakeEngine(name="f2").lm()
    with pytest.raises(ValueError, match="'a'"):
        fuse.register(teachers=[newcomer, impostor])
    with pytest.raises(TypeError, match="Teacher"):
        fuse.register(teachers=[newcomer, "d"])
    with pytest.raises(TypeError, match="fusor"):
        fuse.register(teachers=[newcomer], fusors={"f2": fusor, "f3": "not an LM"})
    with pytest.raises(ValueError, match="local/f9"):  # two different LMs under one name in one call
        fuse.register(teachers=[newcomer], fusors=[FakeEngine(name="f9").lm(), FakeEngine(name="f9").lm()])
    assert (dict(fuse.pool.teachers), dict(fuse.pool.fusors)) == before
    fuse.register(teachers=[newcomer], fusors={"f2": fusor})  # a valid call still lands as a whole
    assert fuse.pool.teachers["c"] is newcomer and fuse.pool.fusors["f2"] is fusor


def test_configure_applies_everything_when_valid():
    fuse = make_fuse(3)
    newcomer = Teacher(teacher_engine("c").lm(), name="c")
    fuse.configure(selector=MajorityVote(fields=["answer"]), teachers=["a", newcomer], n=4, min_candidates=2)
    assert fuse.settings.teachers == ["a", "c"] and fuse.n == 4 and fuse.settings.min_candidates == 2
    assert fuse.settings.selector == "majority" and fuse.settings.selector_args == {"fields": ["answer"]}


def test_loading_a_fuse_saved_for_another_signature_is_refused(tmp_path):
    path = tmp_path / "fuse.json"
    make_fuse(2).save(str(path))
    other = Fuse("query -> reply", 2, teachers=[Teacher(teacher_engine("a").lm(), name="a")])
    with pytest.raises(ValueError, match=r"saved Fuse is for the signature 'question -> answer'.*'query -> reply'"):
        other.load(str(path))
    same = make_fuse(2)
    same.load(str(path))  # the matching signature still loads


def test_check_setting_is_the_field_rule():
    assert check_setting("agree", 1) == 1.0
    with pytest.raises(SettingsError, match="agree must be a share"):
        check_setting("agree", 1.5)
    with pytest.raises(SettingsError, match="mode must be one of"):
        FuseSettings.validated({"mode": "vote"})


def test_assigning_a_call_option_is_validated_like_the_argument():
    fuse = make_fuse(2)
    fuse.timeout = 2
    assert fuse.timeout == 2.0
    with pytest.raises(SettingsError, match=r"Fuse\(timeout='5'\)"):
        fuse.timeout = "5"
    with pytest.raises(SettingsError, match=r"Fuse\(store='bank.jsonl'\)"):
        fuse.store = "bank.jsonl"
    assert fuse.timeout == 2.0 and fuse.store is None
