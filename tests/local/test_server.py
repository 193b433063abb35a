"""The HTTP path users take: llama.cpp's OpenAI-compatible server on loopback + ``dspy.LM("openai/<alias>")``.

The runtime's in-process server also listens on 127.0.0.1; the test talks to the very model the in-process
engine has loaded, over HTTP, as any OpenAI client would.
"""

from __future__ import annotations

import json
import urllib.request

import dspy
import pytest

pytestmark = pytest.mark.local_model

ALIAS = "smollm2-135m"


@pytest.fixture(scope="module")
def server(smollm2: dspy.LM) -> str:
    base = smollm2.engine.base_url
    assert base.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{base}/models", timeout=10) as reply:
        models = json.load(reply)
    assert len(models["data"]) == 1  # one model per server
    return base


def server_lm(base: str) -> dspy.LM:
    return dspy.LM(f"openai/{ALIAS}", api_base=base, api_key="sk-local", cache=False, temperature=0.0, max_tokens=48)


def test_plain_call_returns_text_and_usage(server: str) -> None:
    lm = server_lm(server)
    [text] = lm("Say hello.")
    assert isinstance(text, str) and text.strip()
    usage = lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


def test_predict_through_server(server: str) -> None:
    """OpenAI's ``json_schema`` response format, sent per call, makes even SmolLM2 produce JSON the adapter parses."""
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    lm = server_lm(server)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter(), track_usage=True):
        pred = dspy.Predict("question -> answer")(
            question="What is the capital of France?",
            config={"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}},
        )
    assert isinstance(pred.answer, str)
    assert set(json.loads(lm.history[-1]["outputs"][0])) == {"answer"}
    usage = pred.get_lm_usage()[f"openai/{ALIAS}"]
    assert usage["prompt_tokens"] > 50 and usage["completion_tokens"] > 0


def test_fuse_over_an_http_teacher_and_an_in_process_teacher(server: str, smollm2: dspy.LM) -> None:
    """Issue #3's provider path: one Fuse whose pool mixes the HTTP server and the in-process engine."""
    from fusion_dspy import Fuse
    from fusion_dspy import Teacher

    remote = server_lm(server)
    fuse = Fuse(
        "question -> answer",
        2,
        teachers=[Teacher(remote, temperature=0.0, name="http"), Teacher(smollm2, temperature=0.0, name="in-process")],
        fusor=smollm2,
    )
    pred = fuse(question="What is the capital of France?")
    records = {r.teacher: r for r in pred.fusion.candidates}
    assert set(records) == {"http", "in-process"}
    assert remote.history, "the HTTP teacher never reached the server"
    # SmolLM2 may break DSPy's format over HTTP (no grammar there): that is a recorded parse failure,
    # never a transport error, and the call still answers from the in-process teacher.
    assert records["http"].ok or records["http"].error_type == "AdapterParseError"
    if records["http"].ok:
        assert records["http"].usage[f"openai/{ALIAS}"].input_tokens > 0
    assert records["in-process"].ok
    assert isinstance(pred.answer, str) and pred.fusion.path in ("fuse", "select", "single")
