"""The token budget of a ChatAdapter reply (fusion_dspy.local.budget), driven by a scripted model: no llama.cpp.

The scripted model writes the values it intends for each field, costs tokens the way a tokenizer would (a fixed
number of characters per token of free text, a few tokens per marker), stops on ``length`` like the server, and
checks that everything it writes is allowed by the step's grammar.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence

import pytest

from fusion_dspy.local.budget import MARKER_TOKENS
from fusion_dspy.local.budget import Outcome
from fusion_dspy.local.budget import Reply
from fusion_dspy.local.budget import Step
from fusion_dspy.local.budget import field_shares
from fusion_dspy.local.budget import reply_steps
from fusion_dspy.local.grammar import OutputField
from fusion_dspy.local.grammar import chat_adapter_gbnf
from tests.local.gbnf import gbnf_regex

COMPLETED = "\n\n[[ ## completed ## ]]"


def marker(fields: Sequence[OutputField], index: int) -> str:
    if index == len(fields):
        return COMPLETED
    text = f"[[ ## {fields[index].name} ## ]]\n"
    return text if index == 0 else f"\n\n{text}"


class ScriptedModel:
    """Writes ``values`` into ``fields``: ``chars_per_token`` characters of free text per token, one token per
    character of a typed value, ``marker_tokens`` per marker."""

    def __init__(self, fields: Sequence[OutputField], values: Sequence[str], *, chars_per_token: int = 4,
                 marker_tokens: int = 6) -> None:
        self.fields, self.values = list(fields), list(values)
        self.chars_per_token, self.marker_tokens = chars_per_token, marker_tokens
        self.steps: list[Step] = []

    def segments(self, step: Step) -> list[tuple[str, float]]:
        """What the model writes after the prefill: (text, tokens per character) pieces."""
        present = [i for i in range(len(self.fields)) if marker(self.fields, i) in step.prefill or
                   (i == 0 and step.prefill.startswith(marker(self.fields, 0)))]
        last = max(present, default=-1)
        open_ = step.gbnf.startswith("root ::= field-")
        pieces: list[tuple[str, float]] = []
        if open_:
            written = step.prefill[step.prefill.rindex(marker(self.fields, last)) + len(marker(self.fields, last)):]
            assert self.values[last].startswith(written), "a continued value is a prefix of what the model meant"
            pieces.append((self.values[last][len(written):], self.cost(last)))
        for index in range(last + 1, len(self.fields)):
            pieces.append((marker(self.fields, index), self.marker_tokens / len(marker(self.fields, index))))
            pieces.append((self.values[index], self.cost(index)))
        pieces.append((COMPLETED, self.marker_tokens / len(COMPLETED)))
        return pieces

    def cost(self, index: int) -> float:
        return 1 / self.chars_per_token if self.fields[index].kind == "text" else 1.0

    def __call__(self, step: Step) -> Outcome:
        self.steps.append(step)
        pieces = self.segments(step)
        whole = "".join(text for text, _ in pieces)
        assert gbnf_regex(step.gbnf).fullmatch(whole), (step.gbnf, whole)
        written, spent = [], 0.0
        for text, per_char in pieces:
            for char in text:
                if spent + per_char > step.max_tokens + 1e-9:
                    return Outcome(text=step.prefill + "".join(written), length=True, completion_tokens=step.max_tokens)
                spent += per_char
                written.append(char)
        return Outcome(text=step.prefill + whole, length=False, completion_tokens=max(1, math.ceil(spent - 1e-9)))


def run(model: ScriptedModel, max_tokens: int) -> Reply:
    steps = reply_steps(model.fields, max_tokens)
    step = next(steps)
    while True:
        try:
            step = steps.send(model(step))
        except StopIteration as stop:
            return stop.value


def values_of(fields: Sequence[OutputField], text: str) -> list[str]:
    assert gbnf_regex(chat_adapter_gbnf(fields)).fullmatch(text), text
    out = []
    for index in range(len(fields)):
        start = text.index(marker(fields, index)) + len(marker(fields, index))
        out.append(text[start : text.index(marker(fields, index + 1), start)])
    return out


COT = [OutputField(name="reasoning"), OutputField(name="answer")]


def test_chain_of_thought_reasoning_is_bounded_in_tokens_not_characters() -> None:
    """The repro: at max_tokens=256 the old grammar gave `reasoning` 116 characters, so prose (about 4 characters
    per token) was cut at a quarter of what the budget pays for. 400 characters of reasoning cost 100 tokens."""
    reasoning = "A bicycle turns the push on its pedals into a pull on its chain. " * 6
    model = ScriptedModel(COT, [reasoning.strip(), "Pedals, chain and wheels."])
    reply = run(model, 256)
    assert values_of(COT, reply.text) == [reasoning.strip(), "Pedals, chain and wheels."]
    assert len(reasoning.strip()) > 116 * 3
    assert (reply.calls, reply.cut, reply.length) == (1, (), False)
    assert reply.completion_tokens <= 256


def test_a_looping_field_costs_its_share_and_the_reply_still_closes() -> None:
    """SmolLM2 loops on "1\\n2\\n3..." at one character per token; the loop ends at its field's share and the
    next field still gets written in full."""
    loop = "\n".join(str(i % 10) for i in range(2000))
    model = ScriptedModel(COT, [loop, "42"], chars_per_token=1)
    reply = run(model, 256)
    reasoning, answer = values_of(COT, reply.text)
    share = field_shares(COT, 256)[0] - MARKER_TOKENS
    assert answer == "42" and loop.startswith(reasoning)
    assert share - 2 <= len(reasoning) <= share + MARKER_TOKENS  # plus what its marker did not use
    assert (reply.cut, reply.length, reply.calls) == (("reasoning",), False, 2)
    assert reply.completion_tokens <= 256


def test_a_field_started_on_spare_tokens_is_continued_not_closed() -> None:
    """`answer` starts in the first call on the tokens `reasoning` left, runs out of that call's budget, and is
    continued in a second call: it keeps what `reasoning` left plus its own share, so here it is not cut."""
    shares = field_shares(COT, 200)
    answer = ("The pedals drive the chain and the chain drives the rear wheel. " * 7).strip()
    model = ScriptedModel(COT, ["Short.", answer])
    assert shares[1] - MARKER_TOKENS < len(answer) / 4 < 2 * (shares[1] - MARKER_TOKENS)
    reply = run(model, 200)
    assert values_of(COT, reply.text) == ["Short.", answer]
    assert (reply.calls, reply.cut) == (2, ())
    assert model.steps[1].gbnf.startswith("root ::= field-1-answer")  # continued inside the value
    assert model.steps[1].prefill.endswith(answer[: len(model.steps[1].prefill) - model.steps[1].prefill.index(
        "[[ ## answer ## ]]\n") - len("[[ ## answer ## ]]\n")])


def test_a_cut_typed_value_is_written_again_in_full() -> None:
    fields = [OutputField(name="reasoning"), OutputField(name="n", kind="int"), OutputField(name="ok", kind="bool")]
    model = ScriptedModel(fields, ["x" * 3000, "123456789012", "True"], chars_per_token=1)
    reply = run(model, 120)
    assert values_of(fields, reply.text)[1:] == ["123456789012", "True"]
    assert reply.cut == ("reasoning",)


def test_a_budget_below_the_markers_ends_as_a_truncated_reply() -> None:
    model = ScriptedModel(COT, ["x" * 100, "y"], chars_per_token=1, marker_tokens=40)
    reply = run(model, 30)
    assert reply.length and reply.completion_tokens <= 30


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="fields"):
        next(reply_steps([], 100))
    with pytest.raises(ValueError, match="max_tokens"):
        next(reply_steps(COT, 0))


KINDS = [("text", None), ("int", "17"), ("bool", "False"), ("choice", "no way")]


@pytest.mark.parametrize("seed", range(300))
def test_random_replies_keep_every_promise(seed: int) -> None:
    """Any fields, any model behaviour (prose, loops, early stops), any budget that holds the markers: the reply
    parses; it never costs more than max_tokens; a field that fits its share is written in full; a cut field keeps
    a prefix of what the model wrote; typed values are exact; at most 2 calls per field, plus one."""
    rng = random.Random(seed)
    fields, values = [], []
    for index in range(rng.randint(1, 4)):
        kind, value = rng.choice(KINDS)
        if kind == "text":
            vocabulary = ["pedal", "chain", "1", "2\n3", "wheel", "(ok)", "é"]
            words = [rng.choice(vocabulary) for _ in range(rng.randint(1, 150))]
            value = " ".join(words)
        fields.append(OutputField(name=f"f{index}", kind=kind, choices=("yes", "no way") if kind == "choice" else ()))
        values.append(value)
    if not any(field.kind == "text" for field in fields):
        fields.append(OutputField(name="note"))
        values.append("fine")
    chars_per_token = rng.choice([1, 2, 4])
    model = ScriptedModel(fields, values, chars_per_token=chars_per_token)
    shares = field_shares(fields, 10_000)
    minimum = sum(field_shares(fields, 1)) + MARKER_TOKENS  # every text field at its smallest share
    max_tokens = rng.randint(minimum, minimum + 400)
    shares = field_shares(fields, max_tokens)
    reply = run(model, max_tokens)
    assert not reply.length
    assert reply.completion_tokens <= max_tokens
    assert sum(step.max_tokens for step in model.steps[:1]) <= max_tokens
    assert reply.calls <= 2 * len(fields) + 1
    got = values_of(fields, reply.text)
    for field, value, written, share in zip(fields, values, got, shares, strict=True):
        if field.kind != "text":
            assert written == value
            continue
        assert value.startswith(written)
        fits = len(value) / chars_per_token <= share - MARKER_TOKENS
        if fits:
            assert written == value, (field.name, share)
        if written != value:
            assert field.name in reply.cut  # (a complete value cut at the next marker's first newline counts too)


def test_a_json_value_shares_the_free_tokens_instead_of_starving() -> None:
    """A JSON field (a list, an object) was promised 48 tokens whatever max_tokens was, and a cut JSON value is
    rolled back, so a list longer than that ended every reply as truncated, even at max_tokens=4096."""
    fields = [OutputField(name="numbers", kind="json", schema={"type": "array", "items": {"type": "integer"}}),
              OutputField(name="answer")]
    numbers = json.dumps(list(range(100, 160)))  # 300 characters: 300 tokens at one token per character
    for max_tokens in (1024, 4096):
        model = ScriptedModel(fields, [numbers, "Sixty numbers."])
        reply = run(model, max_tokens)
        assert not reply.length, (max_tokens, field_shares(fields, max_tokens))
        assert values_of(fields, reply.text) == [numbers, "Sixty numbers."]
        assert reply.completion_tokens <= max_tokens
    assert sum(field_shares(fields, 1024)) + MARKER_TOKENS <= 1024
