"""Offline re-scoring of a harness run: which rule should the selection guard decide by?

The selection guard (``fusion_dspy.guard``) lets a fused answer compete with the candidates under the
Fuse's selector, here chrF-MBR. The fused answer is not an independent draw (it is built from the
candidates, and a weak fusor often copies one verbatim), so which answers serve as MBR references
matters. This script compares three rules (and no guard, ``none``) on the candidates and fused answers a
``benchmarks/fusion_quality.py wmt`` run journaled, without any LM call:

- ``all``: the first guard: MBR over the N+1 answers, each against the N others; the best one is returned;
- ``draws``: the fused answer against the N draws, each draw against the other N-1 (plain MBR); the best
  one is returned;
- ``pick``: today's guard, run through ``fusion_dspy.guard_decision``: MBR's pick among the draws is
  the fallback; the fused answer replaces it only if it scores at least as well on the other draws,
  less the one it agrees with most.

It prints, per fused method and per half of the segments (a rule that only wins on one half is noise),
the mean metric of the guarded answer, its paired delta against ``bon-mbr`` with a bootstrap CI, W/T/L
and how often the fused answer was kept. The scores of the answers are the run's own (the journal holds
each candidate's score as ``single:<teacher>``, so this needs a pool of distinct teachers, as WMT's
recorded systems are).

Usage::

    python benchmarks/guard_references.py runs/wmt200/results.jsonl --field translation
"""

from __future__ import annotations

import argparse
import functools
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dspy

from fusion_dspy import Candidate
from fusion_dspy import guard_decision
from fusion_dspy.evaluate.journal import read_run
from fusion_dspy.selectors import MBRSelector
from fusion_dspy.selectors import mbr_scores

RULES = ("none", "all", "draws", "pick")


def _bootstrap(deltas: Sequence[float], *, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    rng = random.Random(seed)
    n = len(deltas)
    means = sorted(sum(deltas[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return sum(deltas) / n, means[int(0.025 * resamples)], means[int(0.975 * resamples)]


def _load(path: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, dict[str, Any]]]]:
    run = read_run(path)  # read-only: the run may still be going, or was killed
    candidates = {eid: [c for c in pool if c.get("outputs")] for eid, pool in run.candidates.items()}
    return candidates, run.results


@functools.cache
def _signature(field: str) -> type[dspy.Signature]:
    return dspy.Signature(f"source -> {field}")


def _guarded(fused: str, fused_score: float, texts: list[str], scores: list[float], rule: str,
             field: str) -> tuple[float, bool]:
    if rule == "none":  # unguarded: the fused answer as it is
        return fused_score, True
    if rule == "pick":
        pool = [Candidate(index=i, teacher=f"t{i}", sample=0, outputs={field: t}) for i, t in enumerate(texts)]
        decision = guard_decision(MBRSelector(), _signature(field), {}, pool, {field: fused})
        return (fused_score, True) if decision.kept_fused else (scores[decision.index], False)
    if rule == "all":
        ranked = mbr_scores([fused, *texts])
        fused_utility, utilities = ranked[0], ranked[1:]
    else:
        utilities = mbr_scores(texts)
        fused_utility = sum(mbr_scores([fused, text])[0] for text in texts) / len(texts)
    best = max(utilities)
    if fused_utility >= best:  # ties keep the fused answer, as the guard does
        return fused_score, True
    return scores[utilities.index(best)], False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("journal", type=Path, help="a harness run's results.jsonl")
    parser.add_argument("--field", default="translation", help="the output field MBR compares")
    args = parser.parse_args()
    candidates, results = _load(args.journal)
    fused_methods = sorted({m for per in results.values() for m in per if m.startswith("fusion") and "+" not in m})
    for method in fused_methods:
        rows = []
        for eid, per in results.items():
            if method not in per or "bon-mbr" not in per or not candidates.get(eid):
                continue
            pool = candidates[eid]
            texts = [str(c["outputs"][args.field]) for c in pool]
            scores = [per[f"single:{c['teacher']}"]["score"] for c in pool]
            fused = str((per[method]["output"] or {}).get(args.field, ""))
            row = {"mbr": per["bon-mbr"]["score"], "fused": per[method]["score"]}
            for rule in RULES:
                row[rule] = _guarded(fused, per[method]["score"], texts, scores, rule, args.field)
            rows.append(row)
        print(f"{method}: {len(rows)} segments with a fused answer")
        half = len(rows) // 2
        for rule in RULES:
            for label, part in (("all", rows), ("1st half", rows[:half]), ("2nd half", rows[half:])):
                deltas = [r[rule][0] - r["mbr"] for r in part]
                mean, low, high = _bootstrap(deltas)
                wins, losses = sum(d > 0 for d in deltas), sum(d < 0 for d in deltas)
                kept = sum(r[rule][1] for r in part) / len(part)
                quality = sum(r[rule][0] for r in part) / len(part)
                ties = len(part) - wins - losses
                print(f"  refs={rule:5s} {label:8s} n={len(part):3d} mean {quality:6.2f}"
                      f"  vs MBR {mean:+.2f} [{low:+.2f}, {high:+.2f}]  W/T/L {wins}/{ties}/{losses}  kept {kept:.0%}")
            mean, low, high = _bootstrap([r[rule][0] - r["fused"] for r in rows])
            if rule != "none":
                print(f"  refs={rule:5s} vs unguarded {method}: {mean:+.2f} [{low:+.2f}, {high:+.2f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
