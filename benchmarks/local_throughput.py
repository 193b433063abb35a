"""Two llama.cpp runtimes side by side: xllamacpp (prebuilt wheel, the engine's runtime) vs llama-cpp-python.

Same GGUF, same chat messages (DSPy's ChatAdapter rendering of ``question -> reasoning, answer``), same GBNF
grammar (derived by ``fusion_dspy.local.grammar``), same threads, in one process; the runtimes alternate per
measurement so machine load hits both alike. Reported as ratios xllamacpp / llama-cpp-python:

* **one call**: a fresh prompt (no KV cache), greedy, ``--max-tokens`` new tokens. Prompt tok/s from a
  ``max_tokens=1`` call, generation tok/s from the difference.
* **N draws of one prompt** (T=0.8, seeds 0..N-1) one after another: with prefix reuse (llama-cpp-python's
  default; xllamacpp ``cache_prompt=True``) and without (the engine's default, ``cache_prompt=False``).
* **parse rate**: ChatAdapter replies that parse, with and without the grammar.
* **determinism**: every request (T=0, and T=0.8 with a seed) run again after other requests in a shuffled
  order; counted as identical to its first reply, with and without prefix reuse.

    python benchmarks/local_throughput.py --model qwen2.5-0.5b --threads 2

llama-cpp-python is optional (it compiles from source); without it only the xllamacpp column is measured.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import dspy

from fusion_dspy.local import catalog
from fusion_dspy.local.grammar import derive_gbnf

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote Romeo and Juliet?",
    "Why is the sky blue?",
    "What is 17 + 25?",
    "Name three primary colours.",
    "How many legs does a spider have?",
]
SIGNATURE = "question -> reasoning, answer"

Call = Callable[..., dict[str, Any]]


def chat_messages(question: str) -> list[dict[str, str]]:
    adapter = dspy.ChatAdapter()
    return adapter.format(dspy.Signature(SIGNATURE), demos=[], inputs={"question": question})


def grammar_for(messages: list[dict[str, str]]) -> str:
    gbnf = derive_gbnf(system=messages[0]["content"], messages=messages, response_format=None)
    assert gbnf is not None
    return gbnf


def parses(text: str) -> bool:
    try:
        out = dspy.ChatAdapter(use_json_adapter_fallback=False).parse(dspy.Signature(SIGNATURE), text)
    except Exception:
        return False
    return bool(str(out.get("answer", "")).strip())


class Xllamacpp:
    name = "xllamacpp"

    def __init__(self, path: str, threads: int, n_ctx: int) -> None:
        import xllamacpp as xlc

        params = xlc.CommonParams()
        params.model.path = path
        params.n_ctx = n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.verbosity = -1
        self.server = xlc.Server(params)
        self.version = getattr(xlc, "__version__", "?")

    def call(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float = 0.0,
             seed: int | None = None, grammar: str | None = None, reuse: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                                "cache_prompt": reuse}
        if seed is not None:
            body["seed"] = seed
        if grammar is not None:
            body["grammar"] = grammar
        out = self.server.handle_chat_completions(body)
        if out.get("error"):
            raise RuntimeError(out["error"])
        return {"text": out["choices"][0]["message"]["content"] or "", "prompt": out["usage"]["prompt_tokens"],
                "completion": out["usage"]["completion_tokens"]}


class LlamaCppPython:
    name = "llama-cpp-python"

    def __init__(self, path: str, threads: int, n_ctx: int) -> None:
        import contextlib
        import io

        import llama_cpp

        self.llama_cpp = llama_cpp
        with contextlib.redirect_stderr(io.StringIO()):
            self.llama = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                         verbose=False)
        self.version = llama_cpp.__version__
        self._grammars: dict[str, Any] = {}

    def call(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float = 0.0,
             seed: int | None = None, grammar: str | None = None, reuse: bool = False) -> dict[str, Any]:
        if not reuse:
            self.llama.reset()
        kwargs: dict[str, Any] = {}
        if grammar is not None:
            if grammar not in self._grammars:
                self._grammars[grammar] = self.llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)
            kwargs["grammar"] = self._grammars[grammar]
        out = self.llama.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=temperature,
                                                seed=seed, **kwargs)
        return {"text": out["choices"][0]["message"]["content"] or "", "prompt": out["usage"]["prompt_tokens"],
                "completion": out["usage"]["completion_tokens"]}


def timed(fn: Callable[[], dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure(runtimes: list[Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {rt.name: {"version": rt.version} for rt in runtimes}
    prompts = [chat_messages(q) for q in QUESTIONS]
    for rt in runtimes:  # warm-up: page cache, first-call allocations
        rt.call(prompts[0], max_tokens=4)

    # One call, fresh prompt.
    for rt in runtimes:
        results[rt.name].update(one_call_s=[], pp_tok_s=[], tg_tok_s=[])
    for round_ in range(args.rounds):
        order = runtimes if round_ % 2 == 0 else runtimes[::-1]
        for messages in prompts[:3]:
            for rt in order:
                t1, first = timed(lambda rt=rt, messages=messages: rt.call(messages, max_tokens=1))
                tn, full = timed(lambda rt=rt, messages=messages: rt.call(messages, max_tokens=args.max_tokens))
                r = results[rt.name]
                r["one_call_s"].append(tn)
                r["pp_tok_s"].append(first["prompt"] / t1)
                if full["completion"] > 1 and tn > t1:
                    r["tg_tok_s"].append((full["completion"] - 1) / (tn - t1))

    # N draws of one prompt, one after another.
    for rt in runtimes:
        results[rt.name].update(draws_reuse_s=[], draws_fresh_s=[])
    for round_ in range(args.rounds):
        order = runtimes if round_ % 2 == 0 else runtimes[::-1]
        messages = prompts[round_ % len(prompts)]
        for rt in order:
            for reuse, key in ((True, "draws_reuse_s"), (False, "draws_fresh_s")):
                rt.call(prompts[-1], max_tokens=1)  # something else in the cache first
                start = time.perf_counter()
                for seed in range(args.draws):
                    rt.call(messages, max_tokens=args.max_tokens, temperature=0.8, seed=seed, reuse=reuse)
                results[rt.name][key].append(time.perf_counter() - start)

    # Parse rate with and without the grammar (greedy).
    for rt in runtimes:
        free = [parses(rt.call(m, max_tokens=args.max_tokens)["text"]) for m in prompts]
        constrained = [parses(rt.call(m, max_tokens=args.max_tokens, grammar=grammar_for(m))["text"])
                       for m in prompts]
        results[rt.name]["parse_free"] = f"{sum(free)}/{len(free)}"
        results[rt.name]["parse_grammar"] = f"{sum(constrained)}/{len(constrained)}"

    # Determinism: first reply of each request vs the same request later, after others, shuffled.
    requests = [(i, t, s) for i in range(len(prompts)) for t, s in ((0.0, None), (0.8, 1), (0.8, 2))]
    for rt in runtimes:
        for reuse in (False, True):
            def ask(key: tuple[int, float, int | None], reuse: bool = reuse, rt: Any = rt) -> str:
                index, temperature, seed = key
                return rt.call(prompts[index], max_tokens=args.max_tokens, temperature=temperature, seed=seed,
                               reuse=reuse)["text"]

            first = {key: ask(key) for key in requests}
            later = requests * 2
            random.Random(0).shuffle(later)
            same = sum(ask(key) == first[key] for key in later)
            results[rt.name][f"same_{'reuse' if reuse else 'fresh'}"] = f"{same}/{len(later)}"
    return results


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    med = statistics.median
    names = list(results)
    rows = [
        ("one call, s (fresh prompt, greedy)", "one_call_s", med, "{:.2f}"),
        ("prompt tok/s", "pp_tok_s", med, "{:.0f}"),
        ("generation tok/s", "tg_tok_s", med, "{:.1f}"),
        (f"{args.draws} draws of one prompt, s, prefix reused", "draws_reuse_s", med, "{:.2f}"),
        (f"{args.draws} draws of one prompt, s, prompt re-read", "draws_fresh_s", med, "{:.2f}"),
    ]
    header = "| | " + " | ".join(f"{n} {results[n]['version']}" for n in names)
    header += " | xllamacpp / llama-cpp-python |" if len(names) == 2 else " |"
    lines = [header, "|---" * (len(names) + 1 + (len(names) == 2)) + "|"]
    for label, key, agg, fmt in rows:
        values = [agg(results[n][key]) if results[n][key] else float("nan") for n in names]
        cells = [fmt.format(v) for v in values]
        if len(names) == 2:
            cells.append(f"{values[0] / values[1]:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, key in (
        ("ChatAdapter replies that parse, no grammar", "parse_free"),
        ("... with the grammar", "parse_grammar"),
        ("same reply on repeat, prompt re-read (engine default)", "same_fresh"),
        ("same reply on repeat, prefix reused", "same_reuse"),
    ):
        cells = " | ".join(str(results[n][key]) for n in names)
        lines.append(f"| {label} | {cells}" + (" | |" if len(names) == 2 else " |"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-0.5b", help="catalog name or .gguf path")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--json", default=None, help="also write the raw measurements here")
    args = parser.parse_args()
    path = str(catalog.resolve_model_path(args.model))
    runtimes: list[Any] = [Xllamacpp(path, args.threads, args.n_ctx)]
    try:
        runtimes.append(LlamaCppPython(path, args.threads, args.n_ctx))
    except ImportError:
        print("llama-cpp-python is not installed: measuring xllamacpp only.")
    results = measure(runtimes, args)
    print(f"model {args.model}, {args.threads} threads, {args.max_tokens} new tokens, {args.rounds} rounds\n")
    print(report(results, args))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
