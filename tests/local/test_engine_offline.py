"""The llama.cpp engine against a scripted stand-in for xllamacpp's server: no model is loaded."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from dspy.lm15 import Config
from dspy.lm15 import Message
from dspy.lm15 import Request

pytest.importorskip("xllamacpp", reason="the engine checks for the runtime where it is built")

from fusion_dspy.local._shared import SharedServer  # noqa: E402
from fusion_dspy.local.engine import LlamaCppEngine  # noqa: E402


class ScriptedServer:
    """Answers every chat completion with one fixed reply and records the request bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def handle_chat_completions(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        return {"id": "r", "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def scripted_engine(tmp_path: Path) -> tuple[LlamaCppEngine, ScriptedServer]:
    path = tmp_path / "scripted.gguf"
    path.write_bytes(b"GGUF" + bytes(8))
    engine = LlamaCppEngine(model=path, n_threads=1)
    server = ScriptedServer()
    engine._shared = SharedServer(path=path, server=server, lock=threading.Lock(), settings={})
    return engine, server


def sent_seed(engine: LlamaCppEngine, server: ScriptedServer, seed: int) -> int:
    request = Request(model="local/x", messages=(Message.user("Hi"),), config=Config(temperature=0.8, seed=seed))
    engine.complete(request)
    return server.bodies[-1]["seed"]


def test_every_seed_reaches_llama_cpp_as_a_fixed_seed(tmp_path: Path) -> None:
    """llama.cpp reads seed 0xFFFFFFFF (LLAMA_DEFAULT_SEED) as "pick a random seed", so seed=-1 (e.g. the
    first draw of `fusion-dspy demo --seed -1`) gave a different reply on every run. Every seed now maps to
    a fixed one; the seeds that were already fixed keep their value (their cached replies stay valid)."""
    engine, server = scripted_engine(tmp_path)
    sent = {seed: sent_seed(engine, server, seed) for seed in (-2, -1, 0, 7, 2**32 - 2, 2**32 - 1, 2**32 + 7)}
    assert 0xFFFFFFFF not in sent.values()
    assert all(0 <= value < 0xFFFFFFFF for value in sent.values())
    assert sent[0] == 0 and sent[7] == 7 and sent[2**32 + 7] == 7 and sent[-2] == 2**32 - 2  # unchanged
    assert len({sent[-2], sent[-1], sent[0]}) == 3  # neighbouring seeds stay distinct samples
