"""Tokens per second: raw llama-cpp-python vs ``LlamaCppEngine`` vs ``dspy.Predict``, same prompts, same model.

Every path uses the same loaded ``Llama`` and the same chat messages (DSPy's ChatAdapter rendering of
``question -> answer``), greedy, DSPy cache off. The KV cache is cleared before every measured call so each
path processes the full prompt; paths are interleaved (rotating order) so machine load hits them alike.
Throughput = completion tokens / wall seconds of the whole call (prompt processing included).

Rows ``engine`` and ``dspy`` decode without a grammar, like ``raw``, so the ratios show pure overhead (goal:
>= 0.9). The ``+grammar`` rows show the cost of the default ``grammar="auto"`` on the same prompts.

    python benchmarks/local_throughput.py --model smollm2-135m --rounds 3
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import logging
import statistics
import time
from collections.abc import Callable

import dspy
from dspy.lm15 import Config
from dspy.lm15 import Message
from dspy.lm15 import Request

from fusion_dspy import local

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote Romeo and Juliet?",
    "Why is the sky blue?",
    "What is 17 + 25?",
    "Name three primary colours.",
]


def chat_messages(question: str) -> list[dict[str, str]]:
    adapter = dspy.ChatAdapter()
    signature = dspy.Predict("question -> answer").signature
    return adapter.format(signature, demos=[], inputs={"question": question})


def to_request(model: str, messages: list[dict[str, str]], max_tokens: int) -> Request:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system") or None
    turns = tuple(
        Message.user(m["content"]) if m["role"] == "user" else Message.assistant(m["content"])
        for m in messages
        if m["role"] != "system"
    )
    return Request(model=model, messages=turns, system=system, config=Config(max_tokens=max_tokens, temperature=0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="catalog name or .gguf path")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1 is fastest on a busy machine)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("dspy").setLevel(logging.ERROR)  # truncation warnings are expected here

    free = local.lm(args.model, n_threads=args.threads, grammar="off", max_tokens=args.max_tokens, cache=False)
    constrained = local.lm(args.model, n_threads=args.threads, max_tokens=args.max_tokens, cache=False)
    llama = free.engine.shared_llama().llama
    assert constrained.engine.shared_llama().llama is llama
    prompts = [chat_messages(q) for q in QUESTIONS]

    def raw(i: int) -> tuple[int, str]:
        out = llama.create_chat_completion(messages=prompts[i], temperature=0.0, max_tokens=args.max_tokens)
        return out["usage"]["completion_tokens"], out["choices"][0]["message"]["content"]

    def via_engine(lm: dspy.LM) -> Callable[[int], tuple[int, str]]:
        def call(i: int) -> tuple[int, str]:
            response = lm.engine.complete(to_request(lm.model, prompts[i], args.max_tokens))
            return response.usage.output_tokens or 0, response.message.text or ""

        return call

    def via_dspy(lm: dspy.LM) -> Callable[[int], tuple[int, str]]:
        def call(i: int) -> tuple[int, str]:
            try:
                with dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
                    dspy.Predict("question -> answer")(question=QUESTIONS[i], lm=lm)
            except dspy.utils.exceptions.AdapterParseError:
                pass  # unconstrained small models often ignore the format; the tokens were still generated
            entry = lm.history[-1]
            return entry["response"].usage.output_tokens or 0, entry["outputs"][0]

        return call

    paths: dict[str, Callable[[int], tuple[int, str]]] = {
        "raw": raw,
        "engine": via_engine(free),
        "dspy": via_dspy(free),
        "engine+grammar": via_engine(constrained),
        "dspy+grammar": via_dspy(constrained),
    }
    rates: dict[str, list[float]] = {name: [] for name in paths}
    totals: dict[str, list[float]] = {name: [0.0, 0.0] for name in paths}
    texts: dict[str, dict[int, str]] = {name: {} for name in paths}
    llama.reset()
    raw(0)  # warm-up: page cache, first-call allocations
    load_before = os.getloadavg()[0]
    names = list(paths)
    for round_ in range(args.rounds):
        for i in range(len(prompts)):
            shift = (round_ * len(prompts) + i) % len(names)
            for name in names[shift:] + names[:shift]:
                llama.reset()  # every path processes the whole prompt
                start = time.perf_counter()
                tokens, text = paths[name](i)
                seconds = time.perf_counter() - start
                rates[name].append(tokens / seconds)
                totals[name][0] += tokens
                totals[name][1] += seconds
                texts[name].setdefault(i, text)
    load_after = os.getloadavg()[0]

    same = all(texts["engine"][i] == texts["raw"][i] == texts["dspy"][i] for i in texts["raw"])
    base = statistics.median(rates["raw"])
    print(
        f"model={args.model} threads={args.threads} max_tokens={args.max_tokens} rounds={args.rounds} "
        f"calls/path={len(rates['raw'])} load average {load_before:.1f} -> {load_after:.1f}"
    )
    print(f"engine and dspy outputs identical to raw: {same}\n")
    print("| path | median tok/s | total tokens | total s | tok/s (total) | ratio to raw (median) |")
    print("|---|---|---|---|---|---|")
    for name in names:
        tokens, seconds = totals[name]
        median = statistics.median(rates[name])
        print(
            f"| {name} | {median:.1f} | {tokens:.0f} | {seconds:.1f} | {tokens / seconds:.1f} | {median / base:.2f} |"
        )


if __name__ == "__main__":
    main()
