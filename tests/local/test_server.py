"""The HTTP path users take: ``python -m llama_cpp.server`` on loopback + ``dspy.LM("openai/<alias>")``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dspy
import pytest

pytestmark = pytest.mark.local_model

ALIAS = "smollm2-135m"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(smollm2_path), "--model_alias", ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--n_threads", "1", "--verbose", "False",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as reply:
                    models = json.load(reply)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not answer within 60 s:\n{log.read_text()[-2000:]}")
                time.sleep(0.25)
        assert [m["id"] for m in models["data"]] == [ALIAS]
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def server_lm(base: str) -> dspy.LM:
    return dspy.LM(f"openai/{ALIAS}", api_base=base, api_key="sk-local", cache=False, temperature=0.0, max_tokens=48)


def test_plain_call_returns_text_and_usage(server: str) -> None:
    lm = server_lm(server)
    [text] = lm("Say hello.")
    assert isinstance(text, str) and text.strip()
    usage = lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


def test_predict_through_server(server: str) -> None:
    """llama_cpp.server accepts only ``json_object`` (+ its own ``schema`` key), not OpenAI's ``json_schema``.

    Passing that response format per call makes even SmolLM2 produce JSON the adapter parses.
    """
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    lm = server_lm(server)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter(), track_usage=True):
        pred = dspy.Predict("question -> answer")(
            question="What is the capital of France?",
            config={"response_format": {"type": "json_object", "schema": schema}},
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
