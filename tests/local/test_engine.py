"""The in-process llama.cpp engine with SmolLM2-135M (skipped without llama-cpp-python or the model package)."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import threading
from pathlib import Path
from typing import Literal

import dspy
import pytest
from dspy.lm15 import Config
from dspy.lm15 import Message
from dspy.lm15 import Request

from fusion_dspy import local
from fusion_dspy.local import LlamaCppEngine

pytestmark = pytest.mark.local_model

QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?"]


class Typed(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()
    count: int = dspy.OutputField()
    ok: bool = dspy.OutputField()
    kind: Literal["fruit", "vegetable"] = dspy.OutputField()
    fruits: list[str] = dspy.OutputField()


def chat() -> dspy.ChatAdapter:
    return dspy.ChatAdapter(use_json_adapter_fallback=False)


def test_predict_parses_and_reports_usage(smollm2: dspy.LM) -> None:
    with dspy.context(lm=smollm2, adapter=chat(), track_usage=True):
        pred = dspy.Predict("question -> answer")(question=QUESTIONS[0])
    assert isinstance(pred.answer, str) and pred.answer.strip()
    usage = pred.get_lm_usage()[smollm2.model]
    assert usage["prompt_tokens"] > 50 and usage["completion_tokens"] > 0
    response = smollm2.history[-1]["response"]
    assert response.usage.input_tokens == usage["prompt_tokens"]


def test_grammar_forces_the_format(smollm2: dspy.LM, smollm2_free: dspy.LM) -> None:
    """With the grammar, every reply is the adapter's exact format, even sampled hot; without it, none is sent."""
    raw = re.compile(
        r"\[\[ ## reasoning ## \]\]\n(?s:.+)\n\n\[\[ ## answer ## \]\]\n(?s:.+)\n\n\[\[ ## completed ## \]\]"
    )
    for question in QUESTIONS:
        for temperature, seed in ((0.0, None), (1.2, 7)):
            with dspy.context(lm=smollm2, adapter=chat()):
                pred = dspy.Predict("question -> reasoning, answer")(
                    question=question, config={"temperature": temperature, "seed": seed}
                )
            assert pred.answer.strip() and pred.reasoning.strip()
            assert "{" not in pred.answer  # no copied "{answer}" placeholder
            assert raw.fullmatch(smollm2.history[-1]["outputs"][0])
    request = Request(model="local/x", messages=(Message.user("Hi"),), config=Config(max_tokens=8))
    with dspy.context(adapter=chat()):
        chat_request = _capture_request(smollm2, "question -> answer")
    assert [f.name for f in smollm2.engine._request_body(chat_request)[2]] == ["answer"]  # fields to budget
    assert smollm2_free.engine._request_body(chat_request)[1:] == (None, None)
    assert smollm2.engine._request_body(request)[1:] == (None, None)  # a plain prompt has no format to force


def _capture_request(lm: dspy.LM, signature: str) -> Request:
    """The canonical request DSPy builds for ``signature`` (captured, not run)."""
    captured: list[Request] = []

    class Capture:
        def complete(self, request: Request) -> object:
            captured.append(request)
            raise RuntimeError("captured")

    with dspy.context(lm=dspy.LM(lm.model, engine=Capture(), cache=False, num_retries=0)):
        with pytest.raises(Exception, match="captured"):
            dspy.Predict(signature)(question="What is 2 + 2?")
    return captured[0]


def test_typed_numbers_stay_short_when_sampled_hot(smollm2: dspy.LM) -> None:
    """Issue 13: a float leaf under T>0 could run on into random digits; the grammar bounds them."""

    class Number(dspy.Signature):
        """Answer with a number."""

        question: str = dspy.InputField()
        value: float = dspy.OutputField()
        count: int = dspy.OutputField()

    shape = re.compile(r"-?(0|[1-9][0-9]{0,11})(\.[0-9]{1,6})?")
    for seed in range(6):
        with dspy.context(lm=smollm2, adapter=chat()):
            pred = dspy.Predict(Number)(question="What is 10 divided by 3?", config={"temperature": 1.5, "seed": seed})
        assert isinstance(pred.value, float) and isinstance(pred.count, int)
        text = smollm2.history[-1]["outputs"][0]
        value = text.split("[[ ## value ## ]]\n", 1)[1].split("\n", 1)[0]
        count = text.split("[[ ## count ## ]]\n", 1)[1].split("\n", 1)[0]
        assert shape.fullmatch(value), value
        assert re.fullmatch(r"-?(0|[1-9][0-9]{0,11})", count), count


def test_typed_fields_chat_adapter(smollm2: dspy.LM) -> None:
    with dspy.context(lm=smollm2, adapter=chat()):
        pred = dspy.Predict(Typed)(question="Name some fruits.")
    assert isinstance(pred.count, int) and isinstance(pred.ok, bool)
    assert pred.kind in ("fruit", "vegetable")
    assert isinstance(pred.fruits, list) and all(isinstance(x, str) for x in pred.fruits)


def test_json_adapter_uses_schema_grammar(smollm2: dspy.LM) -> None:
    with dspy.context(lm=smollm2, adapter=dspy.JSONAdapter()):
        pred = dspy.Predict(Typed)(question="Name some fruits.")
    assert isinstance(pred.count, int) and pred.kind in ("fruit", "vegetable")
    entry = smollm2.history[-1]
    assert entry["kwargs"]["response_format"] is not None  # the schema reached the engine (no ChatAdapter retry)
    assert list(json.loads(entry["outputs"][0])) == ["answer", "count", "ok", "kind", "fruits"]


def test_engine_json_schema_request(smollm2: dspy.LM) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "year": {"type": "integer"}},
        "required": ["city", "year"],
    }
    request = Request(
        model="local/smollm2-135m",
        messages=(Message.user("Where is the Eiffel Tower and when was it built? Answer in JSON."),),
        config=Config(max_tokens=64, temperature=0.0, response_format={"type": "json_schema", "schema": schema}),
    )
    response = smollm2.engine.complete(request)
    data = json.loads(response.message.text)
    assert set(data) == {"city", "year"} and isinstance(data["year"], int)
    assert response.usage.output_tokens > 0 and response.usage.total_tokens > response.usage.output_tokens


def test_truncation_reports_length(smollm2_free: dspy.LM) -> None:
    request = Request(
        model="local/smollm2-135m",
        messages=(Message.user("Write a long story about a dragon."),),
        config=Config(max_tokens=5, temperature=0.0),
    )
    response = smollm2_free.engine.complete(request)
    assert response.finish_reason == "length"
    assert response.usage.output_tokens == 5


def test_stop_sequences(smollm2_free: dspy.LM) -> None:
    request = Request(
        model="local/smollm2-135m",
        messages=(Message.user("Count from 1 to 10, separated by commas."),),
        config=Config(max_tokens=40, temperature=0.0),
    )
    full = smollm2_free.engine.complete(request).message.text
    assert "4" in full
    stopped = smollm2_free.engine.complete(
        Request(
            model=request.model, messages=request.messages, config=Config(max_tokens=40, temperature=0.0, stop=("4",))
        )
    ).message.text
    assert "4" not in stopped and full.startswith(stopped)


def test_determinism_and_seeds(smollm2_free: dspy.LM) -> None:
    prompt = "Write one sentence about a cat."
    greedy = {smollm2_free(prompt, temperature=0.0, seed=seed)[0] for seed in (1, 2)}
    assert len(greedy) == 1  # T=0 ignores the seed
    hot = [smollm2_free(prompt, temperature=0.9, seed=seed)[0] for seed in (1, 2, 3)]
    assert len(set(hot)) >= 2  # different seeds sample differently
    assert smollm2_free(prompt, temperature=0.9, seed=1)[0] == hot[0]  # the same seed repeats


def test_replies_do_not_depend_on_the_request_before(smollm2: dspy.LM) -> None:
    """Issue 13: with llama.cpp's prompt cache a reply depended on what ran before; each request now stands alone."""
    requests = [(q, t, seed) for q in QUESTIONS for t, seed in ((0.0, 0), (0.9, 1), (0.9, 2))]

    def ask(question: str, temperature: float, seed: int) -> str:
        with dspy.context(lm=smollm2, adapter=chat()):
            dspy.Predict("question -> reasoning, answer")(
                question=question, config={"temperature": temperature, "seed": seed}
            )
        return smollm2.history[-1]["outputs"][0]

    first = {key: ask(*key) for key in requests}
    again = {key: ask(*key) for key in [requests[i] for i in (5, 0, 3, 4, 1, 2, 5, 0)]}
    assert all(again[key] == first[key] for key in again)
    assert smollm2.history[-1]["response"].usage.cache_read_tokens == 0


def test_prompt_cache_option_reuses_the_prefix(smollm2_path: Path) -> None:
    """prompt_cache=True trades that guarantee for speed; the usage reports the cached prompt tokens."""
    engine = LlamaCppEngine(model=smollm2_path, n_threads=1, prompt_cache=True)
    assert engine.shared_server() is not None
    request = Request(model="local/x", messages=(Message.user("Name three colours."),), config=Config(max_tokens=4))
    engine.complete(request)
    usage = engine.complete(request).usage
    assert usage.input_tokens > 0 and 0 < usage.cache_read_tokens <= usage.input_tokens
    assert engine.dump_state()["prompt_cache"] is True


def test_deepcopy_shares_engine(smollm2: dspy.LM) -> None:
    engine = smollm2.engine
    assert copy.deepcopy(engine) is engine
    assert copy.deepcopy(smollm2._async_engine_spec) is smollm2._async_engine_spec
    program = dspy.Predict("question -> answer")
    program.lm = smollm2
    clone = program.deepcopy()
    assert clone.lm.engine is engine


def test_one_model_per_process(smollm2: dspy.LM, smollm2_free: dspy.LM, smollm2_path: Path) -> None:
    assert smollm2.engine.shared_server().server is smollm2_free.engine.shared_server().server
    other = LlamaCppEngine(model=smollm2_path, n_threads=1)  # a path to the same file shares too
    assert other.shared_server() is smollm2.engine.shared_server()
    with pytest.raises(ValueError, match="already loaded"):  # refused where the LM is built
        local.lm(smollm2_path, n_threads=1, n_ctx=1024)


def test_threads_are_serialised(smollm2: dspy.LM) -> None:
    sequential = [dspy.Predict("question -> answer")(question=q, lm=smollm2).answer for q in QUESTIONS]
    results: dict[int, str] = {}

    def run(i: int) -> None:
        results[i] = dspy.Predict("question -> answer")(question=QUESTIONS[i], lm=smollm2).answer

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(QUESTIONS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(QUESTIONS))] == sequential


def test_async_acall(smollm2: dspy.LM) -> None:
    async def main() -> list[str]:
        with dspy.context(lm=smollm2, adapter=chat()):
            preds = await asyncio.gather(*(dspy.Predict("question -> answer").acall(question=q) for q in QUESTIONS))
        return [p.answer for p in preds]

    answers = asyncio.run(main())
    assert answers == [dspy.Predict("question -> answer")(question=q, lm=smollm2).answer for q in QUESTIONS]


def test_context_overflow_is_a_clear_error(smollm2_path: Path) -> None:
    engine = LlamaCppEngine(model=smollm2_path, n_threads=1)
    request = Request(model="local/x", messages=(Message.user("word " * 5000),), config=Config(max_tokens=8))
    with pytest.raises(dspy.lm15.ContextLengthError, match="Raise n_ctx"):
        engine.complete(request)


def test_engine_state_round_trip(smollm2: dspy.LM) -> None:
    state = smollm2.engine.dump_state()
    assert state["model"] == "smollm2-135m" and state["grammar"] == "auto"
    rebuilt = LlamaCppEngine.load_state(state)
    assert rebuilt.path == smollm2.engine.path and rebuilt.shared_server() is smollm2.engine.shared_server()


def test_invalid_grammar_option() -> None:
    with pytest.raises(ValueError, match="'auto' or 'off'"):
        local.lm("smollm2-135m", grammar="on")  # type: ignore[arg-type]


def test_program_save_and_load_rebuilds_engine(smollm2: dspy.LM, tmp_path: Path) -> None:
    program = dspy.Predict("question -> answer")
    program.lm = smollm2
    program.save(tmp_path / "program.json")
    loaded = dspy.Predict("question -> answer")
    loaded.load(tmp_path / "program.json", allow_unsafe_lm_state=True)
    assert loaded.lm.model == smollm2.model
    assert isinstance(loaded.lm.engine, LlamaCppEngine)
    assert loaded.lm.engine.shared_server() is smollm2.engine.shared_server()


def test_unparsable_grammar_degrades_instead_of_crashing(
    smollm2: dspy.LM, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A grammar llama.cpp cannot parse (a derivation bug) degrades to free decoding, with a warning."""
    from fusion_dspy.local import engine as engine_module

    monkeypatch.setattr(engine_module, "derive_gbnf", lambda **_: "root ::= undefined-rule\n")
    request = Request(
        model="local/x", messages=(Message.user("Say hi."),), config=Config(max_tokens=4, temperature=0.0)
    )
    with caplog.at_level("WARNING", logger="fusion_dspy.local.engine"):
        response = smollm2.engine.complete(request)
    assert response.usage.output_tokens > 0
    assert "rejected the grammar" in caplog.text


def test_system_prompt_merged_for_templates_without_system(smollm2_path: Path) -> None:
    """Gemma's chat format drops system messages; the catalog entry merges them into the first user turn."""
    engine = LlamaCppEngine(model=smollm2_path, n_threads=1, merge_system_into_user=True)
    request = Request(model="local/x", system="Be brief.", messages=(Message.user("Hi"),))
    assert engine._messages(request) == [{"role": "user", "content": "Be brief.\n\nHi"}]
    plain = LlamaCppEngine(model=smollm2_path, n_threads=1)
    assert plain._messages(request)[0] == {"role": "system", "content": "Be brief."}


def test_chain_of_thought_gets_the_tokens_it_pays_for(smollm2_path: Path) -> None:
    """The repro: at max_tokens=256 the grammar bounded free text at 1 character per token of the budget left
    after the markers, (256 - 3 x 8) // 2 = 116 characters of reasoning, about a quarter of what the tokens buy.
    Now the fields share max_tokens in tokens: the reasoning may run past 116 characters, every reply parses, and
    no reply costs more than max_tokens."""
    lm = local.lm("smollm2-135m", n_threads=1, cache=False, max_tokens=256)
    lengths = []
    with dspy.context(lm=lm, adapter=chat()):
        for seed in range(3):
            prediction = dspy.ChainOfThought("question -> answer")(
                question="Explain in detail how a bicycle works.", config={"temperature": 1.0, "seed": seed})
            assert isinstance(prediction.reasoning, str) and isinstance(prediction.answer, str)
            assert lm.history[-1]["response"].usage.output_tokens <= 256
            lengths.append(len(prediction.reasoning))
    assert max(lengths) > 116, lengths


def test_a_field_closed_at_its_share_is_reported(smollm2_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A free-text value that runs out of its share of max_tokens is closed and the reply continued, so it
    parses and only a warning tells the user the model was stopped mid-thought. The property, whatever this
    build writes: every reply parses within max_tokens; the warnings name exactly the fields counted as cut,
    each once."""
    lm = local.lm("smollm2-135m", n_threads=1, cache=False, max_tokens=80)  # (80 - 3 markers x 10) / 2 = 25 tokens
    with caplog.at_level(logging.WARNING, logger="fusion_dspy.local.engine"):
        for seed in range(4):
            with dspy.context(lm=lm, adapter=chat()):
                prediction = dspy.Predict("question -> reasoning, answer")(
                    question="Explain in detail how a bicycle works.", config={"temperature": 1.0, "seed": seed})
            assert prediction.reasoning and prediction.answer
            assert lm.history[-1]["response"].usage.output_tokens <= 80
    cut = local.cut_counts(lm)
    assert cut, "a 135M model asked for detail fills 25 tokens at least once in four draws"
    warned = [name for record in caplog.records if "share of max_tokens" in record.getMessage()
              for name in ("reasoning", "answer") if f"`{name}`" in record.getMessage()]
    assert sorted(warned) == sorted(cut)  # every cut field, once
    assert local.cut_counts(dspy.LM("openai/none")) == {}


def test_a_continued_reply_does_not_depend_on_the_request_before(smollm2: dspy.LM) -> None:
    """A continuation reuses the KV cache of the call it continues (same lock, same request), so a reply that
    needed several calls is still a function of its request."""
    lm = local.lm("smollm2-135m", n_threads=1, cache=False, max_tokens=70)

    def ask(seed: int) -> tuple[str, int | None]:
        with dspy.context(lm=lm, adapter=chat()):
            dspy.Predict("question -> reasoning, answer")(
                question="Describe a city in detail.", config={"temperature": 0.9, "seed": seed})
        return lm.history[-1]["outputs"][0], lm.history[-1]["response"].usage.cache_read_tokens

    first = [ask(seed) for seed in (1, 2)]
    assert any(cached for _, cached in first), "at 70 tokens a detailed description needs a continuation"
    with dspy.context(lm=smollm2, adapter=chat()):
        dspy.Predict("question -> answer")(question=QUESTIONS[0])
    assert [ask(seed) for seed in (2, 1)] == first[::-1]
