"""Compare two harness runs of the same task, method by method, on the examples both have finished.

For an A/B of anything that is not a method of one run: the engine, a fusor budget, the library version. Both
runs read the same candidates when the teachers are recorded (WMT's systems) or replayed from one store, so
the comparison is paired per example. For every method both journals hold it prints the mean score of each
run, the paired delta B - A with a bootstrap CI, the sign test and W/T/L, and per run the mean output tokens,
the mean LM seconds and the mean length of the fusor's comparison (where the method has one).

Usage::

    python benchmarks/compare_runs.py runs/wmt-heldout runs/wmt-heldout-budget
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from fusion_dspy.evaluate import paired_bootstrap
from fusion_dspy.journal import read_entries


def load_results(run: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """method -> example id -> the journaled result (the last one, as the harness reads it on resume)."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in read_entries(run / "results.jsonl"):  # read-only: the run may still be going, or was killed
        if entry.get("kind") == "result" and entry["result"].get("error") is None:
            result = entry["result"]
            results.setdefault(result["method"], {})[result["example"]] = result
    return results


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.1f}" if values else ""


def compare(a: Path, b: Path, methods: list[str] | None = None) -> str:
    """The comparison table (Markdown) of run ``b`` against run ``a``."""
    left, right = load_results(a), load_results(b)
    names = methods or [name for name in left if name in right]
    lines = [
        f"A = `{a}`, B = `{b}`; Δ = B - A on the examples both finished (paired bootstrap, 95% CI; sign test).",
        "",
        "| method | examples | A mean | B mean | Δ [95% CI] | p boot | p sign | W/T/L | out tokens A / B "
        "| LM s A / B | comparison chars A / B |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        common = sorted(set(left.get(name, {})) & set(right.get(name, {})))
        if not common:
            continue
        ra, rb = [left[name][e] for e in common], [right[name][e] for e in common]
        sa, sb = [r["score"] for r in ra], [r["score"] for r in rb]
        test = paired_bootstrap(sb, sa)
        tokens = [[(r.get("usage") or {}).get("output_tokens") or 0 for r in rs] for rs in (ra, rb)]
        seconds = [[r.get("time_s") or 0.0 for r in rs] for rs in (ra, rb)]
        chars = [[len(r["comparison"]) for r in rs if r.get("comparison")] for rs in (ra, rb)]
        lines.append(
            f"| {name} | {len(common)} | {statistics.fmean(sa):.2f} | {statistics.fmean(sb):.2f} "
            f"| {test.diff:+.2f} [{test.ci_low:+.2f}, {test.ci_high:+.2f}] | {test.p_bootstrap:.3f} "
            f"| {test.p_sign:.3f} | {test.wins}/{test.ties}/{test.losses} | {_mean(tokens[0])} / {_mean(tokens[1])} "
            f"| {_mean(seconds[0])} / {_mean(seconds[1])} | {_mean(chars[0])} / {_mean(chars[1])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="baseline run directory (holds results.jsonl)")
    parser.add_argument("b", type=Path, help="run directory compared against it")
    parser.add_argument("--methods", default=None, help="comma-separated methods (default: all both runs have)")
    args = parser.parse_args()
    print(compare(args.a, args.b, args.methods.split(",") if args.methods else None))


if __name__ == "__main__":
    main()
