"""normalize_value / answer_key: formatting noise folds away, different answers stay different."""

from __future__ import annotations

import enum

import pytest
from pydantic import BaseModel

from fusion_dspy.normalize import answer_key
from fusion_dspy.normalize import normalize_value


@pytest.mark.parametrize("value", [42, 42.0, "42", " 42 ", "42.", "+42.00", "4.2e1", "42,", '"42"'])
def test_spellings_of_a_number_agree(value):
    assert normalize_value(value) == "42"


@pytest.mark.parametrize(
    ("left", "right"),
    [(0.1, "0.1"), (0.5, ".5"), (1000, "1,000"), (-3, "-3.0"), (1e20, "100000000000000000000"), (0, "-0.0")],
)
def test_number_pairs_agree(left, right):
    assert normalize_value(left) == normalize_value(right)


@pytest.mark.parametrize(
    ("left", "right"), [(42, 42.5), (42, 420), ("1,000", "1.000"), ("4 2", "42"), (1, True)]
)
def test_different_numbers_stay_different(left, right):
    assert normalize_value(left) != normalize_value(right)


@pytest.mark.parametrize("value", [-4, -4.0, "-4", "\u22124", " \u22124.0 ", "\u22124."])
def test_a_typeset_minus_sign_is_the_same_number(value):
    # U+2212 MINUS SIGN, common in typeset model output; NFKC leaves it alone, so "\u22124" and -4 split a vote.
    assert normalize_value(value) == "-4"


def test_long_integers_keep_every_digit():
    big = 10**40 + 1
    assert normalize_value(big) == str(big)
    assert normalize_value(str(big)) == str(big)
    assert normalize_value(big) != normalize_value(10**40)


def test_huge_exponent_stays_short():
    assert len(normalize_value("1e999999")) < 20


def test_exponents_beyond_the_default_decimal_range():
    """"1e9999999" raised decimal.Overflow (crashing a vote) and "1e-9999999" collapsed to "0"."""
    assert normalize_value("1e9999999") == normalize_value("10e9999998") == "1e9999999"
    assert normalize_value("1e-9999999") == "1e-9999999"
    assert normalize_value("1e-9999999") != normalize_value("0")
    assert normalize_value("1e9999999999999999999") == "1e9999999999999999999"  # beyond decimal: kept as written


def test_non_finite_floats():
    assert normalize_value(float("nan")) == "nan"
    assert normalize_value(float("inf")) == "inf"
    assert normalize_value(float("-inf")) == "-inf"


@pytest.mark.parametrize(
    "value", ["Paris", "paris", "Paris.", " PARIS! ", '"Paris"', "'Paris.'", '"Paris".', "«Paris»"]
)
def test_spellings_of_a_word_agree(value):
    assert normalize_value(value) == "paris"


def test_unicode_compatibility_forms_and_whitespace_fold():
    assert normalize_value("ＰＡＲＩＳ") == "paris"  # fullwidth letters
    assert normalize_value("ﬁne") == "fine"  # ligature
    assert normalize_value("Straße") == normalize_value("STRASSE")  # casefold, not lower
    assert normalize_value("New   York\n") == normalize_value("new york")


def test_wording_is_never_touched():
    assert normalize_value("Paris") != normalize_value("Paris, France")
    assert normalize_value("it's") == "it's"  # an apostrophe is not a surrounding quote
    assert normalize_value("a.b") == "a.b"


def test_none_bool_and_enum():
    class Color(enum.Enum):
        RED = "Red"

    assert normalize_value(None) == ""
    assert normalize_value(True) == "true"
    assert normalize_value(False) == "false"
    assert normalize_value(Color.RED) == "red"


class City(BaseModel):
    name: str
    population: int


def test_structures_compare_by_normalized_content():
    model = City(name="Paris.", population=2_100_000)
    as_dict = {"population": "2,100,000", "name": "paris"}
    assert normalize_value(model) == normalize_value(as_dict)
    assert normalize_value([1, "Two."]) == normalize_value(["1.0", "two"])
    assert normalize_value({3, 1, 2}) == normalize_value({2, 3, 1})
    assert normalize_value([1, 2]) != normalize_value([2, 1])  # lists keep order
    assert normalize_value({"a": [1, {"b": "X"}]}) == '{"a":["1",{"b":"x"}]}'


def test_answer_key_orders_values_like_fields():
    outputs = {"reasoning": "Because.", "answer": "Paris.", "confidence": 0.9}
    assert answer_key(outputs, ["answer"]) == ("paris",)
    assert answer_key(outputs, ("confidence", "answer")) == ("0.9", "paris")
    assert answer_key(outputs, "answer") == ("paris",)


def test_answer_key_errors_say_what_is_wrong():
    with pytest.raises(KeyError, match="answer"):
        answer_key({"reasoning": "x"}, ["answer"])
    with pytest.raises(ValueError, match="at least one field"):
        answer_key({"answer": 1}, [])


class Tagged(BaseModel):
    tags: set[str]
    label: str = "x"


def _same_set_iterating_differently() -> tuple[list[str], list[str]]:
    """Two orders of the same strings whose sets iterate differently (colliding hashes keep insertion order).

    This is what two teachers writing the same JSON list in another order give after parsing.
    """
    for start in range(0, 4000, 6):
        words = [f"tag-{i}" for i in range(start, start + 6)]
        if list(set(words)) != list(set(reversed(words))):
            return words, words[::-1]
    pytest.skip("no two iteration orders found for this hash seed")


def test_a_set_inside_a_pydantic_answer_votes_by_its_members_not_its_iteration_order():
    one, other = _same_set_iterating_differently()
    first, second = Tagged(tags=one), Tagged(tags=other)  # validated from lists, as DSPy parses a reply
    assert first == second and list(first.tags) != list(second.tags)
    assert normalize_value(first) == normalize_value(second)
    assert normalize_value({"tags": set(one)}) == normalize_value({"tags": set(other)})
    assert normalize_value(first) != normalize_value(Tagged(tags=[*one, "epsilon"]))
