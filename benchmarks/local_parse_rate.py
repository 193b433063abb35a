"""How often do the bundled models produce replies DSPy can parse, with and without grammar-constrained decoding?

Runs 5 short prompts (plain, two-field, int and list[str] outputs) through ``dspy.Predict`` for each model,
adapter (ChatAdapter without its JSON fallback, JSONAdapter) and grammar mode, greedy and uncached, and prints a
Markdown table: parsed replies, loosely correct answers and mean seconds per call.

    python benchmarks/local_parse_rate.py --models smollm2-135m,qwen2.5-0.5b

The machine's load is printed too: on a shared 2-core machine wall times vary several-fold.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dspy

from fusion_dspy import local


@dataclass(frozen=True)
class Case:
    signature: str
    question: str
    check: Callable[[Any], bool]


CASES = [
    Case("question -> answer", "What is the capital of France?", lambda p: "paris" in str(p.answer).lower()),
    Case("question -> answer", "Who wrote Romeo and Juliet?", lambda p: "shakespeare" in str(p.answer).lower()),
    Case(
        "question -> reasoning, answer",
        "I have 3 apples and eat one. How many apples do I have now?",
        lambda p: "2" in str(p.answer) or "two" in str(p.answer).lower(),
    ),
    Case("question -> answer: int", "What is 17 + 25?", lambda p: p.answer == 42),
    Case(
        "question -> answer: list[str]",
        "Name the three primary colours of light.",
        lambda p: isinstance(p.answer, list) and {"red", "green", "blue"} <= {str(x).lower() for x in p.answer},
    ),
]

ADAPTERS: dict[str, Callable[[], dspy.Adapter]] = {
    "ChatAdapter": lambda: dspy.ChatAdapter(use_json_adapter_fallback=False),
    "JSONAdapter": lambda: dspy.JSONAdapter(),
}


def run(models: list[str], *, threads: int, max_tokens: int, verbose: bool) -> list[tuple[Any, ...]]:
    rows = []
    for model in models:
        for grammar in ("off", "auto"):
            lm = local.lm(model, grammar=grammar, n_threads=threads, max_tokens=max_tokens, cache=False)
            for adapter_name, make_adapter in ADAPTERS.items():
                parsed = correct = 0
                seconds = 0.0
                for case in CASES:
                    start = time.perf_counter()
                    try:
                        with dspy.context(lm=lm, adapter=make_adapter()):
                            pred = dspy.Predict(case.signature)(question=case.question)
                        parsed += 1
                        correct += bool(case.check(pred))
                        shown = {k: pred[k] for k in pred.keys()}
                    except dspy.utils.exceptions.AdapterParseError:
                        shown = "PARSE ERROR: " + repr(lm.history[-1]["outputs"][0][:120])
                    seconds += time.perf_counter() - start
                    if verbose:
                        print(f"  {model} {grammar} {adapter_name}: {case.question!r} -> {shown}", flush=True)
                rows.append((model, adapter_name, grammar, parsed, correct, seconds / len(CASES)))
                print(f"{model:14s} {adapter_name:12s} grammar={grammar:4s} parsed {parsed}/{len(CASES)}", flush=True)
            local.release_shared_llama(lm.engine.path)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-0.5b")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1 is fastest on a busy machine)")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--verbose", action="store_true", help="print every prediction")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load_before = os.getloadavg()[0]
    rows = run(args.models.split(","), threads=args.threads, max_tokens=args.max_tokens, verbose=args.verbose)
    print(f"\nload average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f}; threads={args.threads}\n")
    print("| model | adapter | grammar | parsed | correct | s/call |")
    print("|---|---|---|---|---|---|")
    for model, adapter, grammar, parsed, correct, seconds in rows:
        n = len(CASES)
        print(f"| {model} | {adapter} | {grammar} | {parsed}/{n} | {correct}/{n} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
