"""GSM8K accuracy of each bundled model, greedy and sampled, with and without the grammar.

One sample per problem (no voting): ``programs.math.SolveMath`` (reasoning, then ``answer: float``) through
``dspy.ChatAdapter`` and the local engine, scored by ``programs.math.exact_number_match``. The first
``--limit`` test problems, the same for every cell. Sampled cells use T=0.8 and seed = problem index, so a
rerun on the same machine gives the same numbers. A reply that does not parse counts as wrong and is counted.

    FUSION_DSPY_DATA_DIR=/path/to/data python benchmarks/local_gsm8k.py --models smollm2-135m,qwen2.5-0.5b --limit 20
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import time

import dspy
from fusion_dspy.programs.math import SolveMath
from fusion_dspy.programs.math import exact_number_match
from fusion_dspy.programs.math import load_gsm8k

from fusion_dspy import local


def cell(model: str, grammar: str, temperature: float, examples: list[dspy.Example], args: argparse.Namespace) -> dict:
    lm = local.lm(model, grammar=grammar, n_threads=args.threads, max_tokens=args.max_tokens, cache=False)
    predict = dspy.Predict(SolveMath)
    right = unparsed = 0
    start = time.perf_counter()
    for index, example in enumerate(examples):
        config = {"temperature": temperature, "seed": index}
        try:
            with dspy.context(lm=lm, adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
                prediction = predict(question=example.question, config=config)
        except dspy.utils.exceptions.AdapterParseError:
            unparsed += 1
            continue
        right += int(exact_number_match(example, prediction))
    return {"model": model, "grammar": grammar, "temperature": temperature, "n": len(examples), "right": right,
            "unparsed": unparsed, "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-0.5b,qwen2.5-1.5b")
    parser.add_argument("--limit", type=int, default=20, help="problems per cell")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=768)
    parser.add_argument("--json", default=None, help="append one JSON line per cell here")
    args = parser.parse_args()
    examples = load_gsm8k(limit=args.limit)
    print("| model | grammar | T | right | unparsed | s/problem |")
    print("|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for grammar in ("auto", "off"):
            for temperature in (0.0, 0.8):
                row = cell(model, grammar, temperature, examples, args)
                print(f"| {model} | {'on' if grammar == 'auto' else 'off'} | {temperature} | "
                      f"{row['right']}/{row['n']} | {row['unparsed']} | {row['seconds'] / row['n']:.1f} |", flush=True)
                if args.json:
                    with open(args.json, "a") as fh:
                        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
