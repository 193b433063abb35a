"""Offline re-scoring of a math harness run: should the vote guard give ties to the pick?

The selection guard (``fusion_dspy.guard``) keeps the fused answer when it scores at least as well as the
selector's pick (``margin <= 0``). With majority vote the scores are vote shares, so ties are common: when
every candidate gives another answer, the fused answer and the pick both have one vote and the fused
answer is kept. The **strict** rule keeps it only with more support than the pick (``margin < 0``) and
returns the pick on a tie. RESULTS section 12 registered this comparison before its held-out problems ran.

For every example a ``benchmarks/fusion_quality.py math`` run journaled, this script runs the guard
again on the journaled candidates and fused answer (majority vote needs no LM call), and scores:

- ``today``: the fused answer if ``margin <= 0``, else majority's pick (it must agree with the journaled
  ``<method>+guard`` row; the count of rows that agree is printed as a check);
- ``strict``: the fused answer if ``margin < 0``, else majority's pick (registered first; it turned out to be
  majority vote itself, see RESULTS section 12);
- ``supported``: the fused answer if ``margin <= 0`` and some draw gave its answer (on ``--field``,
  normalized as majority vote compares answers), else majority's pick.

The pick is ``bon-majority``'s answer (the same selector over the same candidates), so its score is that
row's. Each rule is paired against ``bon-majority`` (mean, delta with a 95% bootstrap CI, W/T/L, share of
fused answers kept), over the examples before ``--held-out-from`` (in-sample) and from it on (held out),
in the order of the data, and the registered decision on the held-out examples is printed: adopt
``supported`` only if its lower bound against majority is above today's rule's and its mean is not
lower. No LM is loaded.

Usage::

    python benchmarks/guard_ties.py benchmarks/runs/gsm8k-mixed/results.jsonl --problems 100 --held-out-from 36
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RULES = ("today", "strict", "supported")


def _load(path: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, dict[str, Any]]]]:
    from fusion_dspy.evaluate.journal import read_run

    run = read_run(path)  # read-only: the run may still be going
    candidates = {eid: [c for c in pool if c.get("outputs")] for eid, pool in run.candidates.items()}
    return candidates, run.results


def _supported(pool: list[dict[str, Any]], fused: dict[str, Any], field: str) -> bool:
    from fusion_dspy.normalize import answer_key

    return any(answer_key(c["outputs"], [field]) == answer_key(fused, [field]) for c in pool)


def _margin(pool: list[dict[str, Any]], fused: dict[str, Any], field: str) -> float | None:
    import dspy

    from fusion_dspy import Candidate
    from fusion_dspy import guard_decision
    from fusion_dspy.selectors import MajorityVote

    fields = list(pool[0]["outputs"])
    signature = dspy.Signature(f"question -> {', '.join(fields)}")
    candidates = [Candidate(index=c["index"], teacher=c["teacher"], sample=c["sample"], outputs=c["outputs"])
                  for c in pool]
    decision = guard_decision(MajorityVote(fields=[field]), signature, {}, candidates, fused)
    return decision.margin


def _rows(path: Path, order: Sequence[str], method: str, field: str) -> tuple[list[dict[str, Any]], int]:
    candidates, results = _load(path)
    rows, agree = [], 0
    for position, eid in enumerate(order, start=1):
        per = results.get(eid, {})
        fused_row, majority = per.get(method), per.get("bon-majority")
        journaled = per.get(f"{method}+guard")
        if fused_row is None or majority is None or not candidates.get(eid):
            continue
        if fused_row.get("error") or not fused_row.get("output"):
            # No fused answer to judge (the fusor failed): every rule gives what the harness gave.
            if journaled is not None:
                rows.append({"position": position, "majority": majority["score"],
                             **{rule: (journaled["score"], False) for rule in RULES}})
                agree += 1
            continue
        fused = fused_row["output"]
        margin = _margin(candidates[eid], fused, field)
        row = {"position": position, "majority": majority["score"]}
        today = margin is None or margin <= 0
        kept_by = {"today": today, "strict": margin is not None and margin < 0,
                   "supported": today and _supported(candidates[eid], fused, field)}
        for rule, kept in kept_by.items():
            row[rule] = (fused_row["score"] if kept else majority["score"], kept)
        agree += journaled is not None and journaled["score"] == row["today"][0]
        rows.append(row)
    return rows, agree


def _line(label: str, rows: list[dict[str, Any]], rule: str) -> str:
    from fusion_dspy.evaluate.stats import paired_bootstrap

    if not rows:
        return f"| {label} | {rule} | 0 | | | | |"
    scores = [r[rule][0] for r in rows]
    baseline = [r["majority"] for r in rows]
    paired = paired_bootstrap(scores, baseline)
    kept = sum(r[rule][1] for r in rows) / len(rows)
    return (f"| {label} | {rule} | {len(rows)} | {sum(scores) / len(scores):.2f} | {paired.diff:+.2f} "
            f"[{paired.ci_low:+.2f}, {paired.ci_high:+.2f}] | {paired.wins}/{paired.ties}/{paired.losses} | "
            f"{kept:.0%} |")


def _verdict(method: str, rows: list[dict[str, Any]]) -> str:
    """The registered decision (RESULTS section 12) on held-out ``rows``: adopt 'supported' for vote selectors
    only if its lower bound against majority is above today's rule's and its mean is not lower."""
    from fusion_dspy.evaluate.stats import paired_bootstrap

    baseline = [r["majority"] for r in rows]
    today, supported = (paired_bootstrap([r[rule][0] for r in rows], baseline) for rule in ("today", "supported"))
    adopt = supported.ci_low > today.ci_low and supported.diff >= today.diff
    return (f"registered test, `{method}`, {len(rows)} held-out examples: lower bound vs bon-majority "
            f"{supported.ci_low:+.2f} (supported) vs {today.ci_low:+.2f} (today), mean delta {supported.diff:+.2f} vs "
            f"{today.diff:+.2f}: {'adopt' if adopt else 'do not adopt'} 'supported'")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("journal", type=Path, help="a math harness run's results.jsonl")
    parser.add_argument("--problems", type=int, required=True, help="the run's --problems (the data's order)")
    parser.add_argument("--data", default=None, help="the run's --data (default: GSM8K)")
    parser.add_argument("--held-out-from", type=int, default=None,
                        help="1-based position of the first held-out example (default: all in-sample)")
    parser.add_argument("--field", default="answer", help="the output field majority votes on")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.journal.is_file():
        parser.error(f"journal {args.journal} does not exist; give a run's results.jsonl.")
    if args.problems < 1:
        parser.error(f"--problems must be >= 1, got {args.problems}.")

    from fusion_dspy.programs.math import load_math

    from fusion_dspy.evaluate import example_ids

    order = example_ids(load_math(args.data, limit=args.problems))
    print("| examples | rule | n | exact match | Δ vs bon-majority [95% CI] | W/T/L | fused kept |")
    print("|---|---|---|---|---|---|---|")
    checks = []
    for method in ("fusion", "fusion:vote"):
        rows, agree = _rows(args.journal, order, method, args.field)
        if not rows:
            continue
        checks.append(f"`{method}`: today's rule matches the journaled `{method}+guard` score on {agree} of "
                      f"{len(rows)} examples")
        cut = args.held_out_from or len(order) + 1
        parts = (("in-sample", [r for r in rows if r["position"] < cut]),
                 ("held out", [r for r in rows if r["position"] >= cut]))
        for label, part in parts:
            if not part:
                continue
            first, last = part[0]["position"], part[-1]["position"]
            for rule in RULES:
                print(_line(f"`{method}` {label} ({first}-{last})", part, rule))
            if label == "held out":
                checks.append(_verdict(method, part))
    print()
    for check in checks:
        print(f"- {check}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
