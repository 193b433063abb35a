"""Fusion quality on real data with the bundled local models: does fusing beat selecting?

Two parts, both through :class:`fusion_dspy.evaluate.Harness` (same candidates for every method,
paired comparisons, bootstrap CIs, costs), both resumable (re-run the same command to continue):

* ``wmt``: WMT24 general en-de. The candidates are 5 real system outputs (GPT-4, Claude-3.5, Aya23,
  Llama3-70B, Phi-3-Medium) replayed by recorded teachers, so only the fusor and the LLM judge run
  live (the bundled Qwen2.5-Coder-1.5B). Methods at N=5: random pick, chrF-MBR selection,
  LLM-judge selection, Fusion, and the per-segment oracle; plus each system alone.
* ``wmt-select``: the same pool, selection methods only (no LM call), on many more segments; its
  first-300-paragraphs run reproduces the reference-free numbers in the data README.
* ``math``: GSM8K (or MGSM) with local teachers (4 samples at T=0.8 of one bundled model): single
  sample vs majority vote vs chrF-MBR vs Fusion (Qwen2.5-Coder-1.5B) vs oracle, at one or more N.
* ``ifeval``: IFEval instruction following with a mixed pool of bundled models (one draw each):
  each model alone vs chrF-MBR vs Fusion vs oracle, scored by Google's rule-based checkers.

Every part that fuses also reports, on the same candidates and the same fused answers
(``Harness(guard=True, strategies=...)``):

* ``fusion+guard``: the selection guard (:mod:`fusion_dspy.guard`): the baseline selector (chrF-MBR,
  or majority for math) picks among the candidates, and its pick replaces the fused answer if it
  scores higher on the other candidates. No LM call; ``path`` says what it kept, and
  the report ends with how often each guard kept the fused answer.
* ``fusion:<strategy>`` and ``fusion:<strategy>+guard`` for every ``--strategies`` choice
  (:mod:`fusion_dspy.strategies`, e.g. ``edit`` or ``vote``), at the largest N only.

``--prompt-cache`` turns on llama.cpp's prompt-prefix reuse for every local model: faster, but a
reply may then depend on the requests before it (runs reproduce when the requests come in the same order).

Needs the benchmark data directory (``$FUSION_DSPY_DATA_DIR`` or ``../shared/data``) and
``pip install 'fusion-dspy[local]'``. Example::

    python benchmarks/fusion_quality.py wmt --segments 50 --max-chars 60 --out runs/bench-wmt
    python benchmarks/fusion_quality.py math --problems 12 --out runs/bench-math
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SYSTEMS = ["GPT-4", "Claude-3.5", "Aya23", "Llama3-70B", "Phi-3-Medium"]


def run_wmt(args: argparse.Namespace) -> str:
    from fusion_dspy.programs.recorded import recorded_teachers
    from fusion_dspy.programs.translate import Translate
    from fusion_dspy.programs.translate import chrf
    from fusion_dspy.programs.translate import corpus_chrf
    from fusion_dspy.programs.translate import load_wmt_general

    from fusion_dspy import Fuse
    from fusion_dspy import local
    from fusion_dspy.evaluate import Harness
    from fusion_dspy.selectors import LLMJudge
    from fusion_dspy.selectors import MBRSelector

    examples = load_wmt_general(pair="en-de", systems=SYSTEMS, max_source_chars=args.max_chars,
                                limit=None if args.exclude_run else args.segments)
    if args.exclude_run:
        examples = _held_out(examples, args.exclude_run)[: args.segments]
    fusor = local.lm(args.fusor, temperature=0.0, max_tokens=args.fusor_max_tokens or args.max_tokens,
                     grammar=args.grammar, **_local(args))
    # A separate judge model keeps the fusor's llama.cpp prompt-prefix cache warm (one Llama per model).
    selectors = [MBRSelector()]
    if args.judge != "none":
        judge_lm = fusor if args.judge == args.fusor else local.lm(args.judge, temperature=0.0, max_tokens=96,
                                                                   grammar=args.grammar, **_local(args))
        selectors.append(LLMJudge(lm=judge_lm, scale=10,
                                  criteria="Accuracy and fluency of the German translation of the source."))
    fuse = Fuse(Translate, 5, teachers=recorded_teachers(examples, SYSTEMS), fusor=fusor)
    harness = Harness(fuse=fuse, metric=chrf, corpus_metric=corpus_chrf, examples=examples, ns=[5],
                      selectors=selectors, out_dir=args.out, metric_name="chrF",
                      task="wmt24 en-de (5 recorded systems)", guard=True, strategies=_strategies(args))
    return _finish(harness, args, {args.fusor: fusor})


def run_wmt_select(args: argparse.Namespace) -> str:
    """Selection methods only (no LM call at all): a large sample, and a check against the data README."""
    from fusion_dspy.programs.recorded import recorded_teachers
    from fusion_dspy.programs.translate import Translate
    from fusion_dspy.programs.translate import chrf
    from fusion_dspy.programs.translate import corpus_chrf
    from fusion_dspy.programs.translate import load_wmt_general

    from fusion_dspy import Fuse
    from fusion_dspy.evaluate import Harness
    from fusion_dspy.selectors import MBRSelector

    examples = load_wmt_general(pair="en-de", systems=SYSTEMS, max_source_chars=args.max_chars, limit=args.segments)
    fuse = Fuse(Translate, 5, teachers=recorded_teachers(examples, SYSTEMS))
    harness = Harness(fuse=fuse, metric=chrf, corpus_metric=corpus_chrf, examples=examples, ns=[2, 5],
                      selectors=[MBRSelector()], out_dir=args.out, metric_name="chrF",
                      task="wmt24 en-de (5 recorded systems, selection only)", include_fusion=False)
    return harness.run().to_markdown()


def run_math(args: argparse.Namespace) -> str:
    from fusion_dspy.programs.math import SolveMath
    from fusion_dspy.programs.math import exact_number_match
    from fusion_dspy.programs.math import load_math

    from fusion_dspy import Fuse
    from fusion_dspy import Teacher
    from fusion_dspy import local
    from fusion_dspy.evaluate import Harness
    from fusion_dspy.selectors import MajorityVote
    from fusion_dspy.selectors import MBRSelector

    examples = load_math(args.data, limit=args.problems)
    names = [name.strip() for name in args.teacher.split(",") if name.strip()]
    # One name: self-MoA (that teacher sampled N times); several: a mixed pool, drawn round-robin.
    teachers = [Teacher(local.lm(name, max_tokens=args.max_tokens, grammar=args.grammar, **_local(args)),
                        temperature=0.8,
                        samples=args.samples if len(names) == 1 else 1, name=name) for name in names]
    fusor = local.lm(args.fusor, temperature=0.0, max_tokens=args.fusor_max_tokens or args.max_tokens,
                     grammar=args.grammar, **_local(args))
    fuse = Fuse(SolveMath, args.samples, teachers=teachers, fusor=fusor, max_threads=1)
    pool = f"self-MoA {names[0]} x{args.samples}" if len(names) == 1 else f"mixed pool {'+'.join(names)}"
    ns = sorted({int(n) for n in args.ns.split(",")}) if args.ns else [args.samples]
    if ns[-1] != args.samples:
        raise SystemExit(f"--ns must end at --samples ({args.samples}): candidates are drawn once, at the largest N.")
    harness = Harness(fuse=fuse, metric=exact_number_match, examples=examples, ns=ns,
                      selectors=[MajorityVote(fields=["answer"]), MBRSelector()], out_dir=args.out,
                      metric_name="exact match", task=f"math ({args.data or 'gsm8k'}, {pool})",
                      guard=True, strategies=_strategies(args))
    return _finish(harness, args, {**{t.name: t.lm for t in teachers}, args.fusor: fusor})


def run_ifeval(args: argparse.Namespace) -> str:
    """IFEval with a mixed local pool; the strongest model is also a teacher, so its single-sample
    score is in the table (the bar fusion must clear, as the local baseline showed)."""
    from fusion_dspy.programs.instruct import FollowInstructions
    from fusion_dspy.programs.instruct import instruction_accuracy
    from fusion_dspy.programs.instruct import load_ifeval

    from fusion_dspy import Fuse
    from fusion_dspy import Teacher
    from fusion_dspy import local
    from fusion_dspy.evaluate import Harness
    from fusion_dspy.selectors import MBRSelector

    examples = load_ifeval(limit=args.prompts)
    names = [name.strip() for name in args.teachers.split(",") if name.strip()]
    teachers = [Teacher(local.lm(name, max_tokens=args.max_tokens, grammar=args.grammar, **_local(args)),
                        temperature=0.8, name=name)
                for name in names]
    fusor = local.lm(args.fusor, temperature=0.0, max_tokens=args.fusor_max_tokens or args.max_tokens,
                     grammar=args.grammar, **_local(args))
    fuse = Fuse(FollowInstructions, len(teachers), teachers=teachers, fusor=fusor, max_threads=1)
    harness = Harness(fuse=fuse, metric=instruction_accuracy, examples=examples, ns=[len(teachers)],
                      selectors=[MBRSelector()], out_dir=args.out, metric_name="IFEval instruction strict",
                      task="ifeval (local pool)", guard=True, strategies=_strategies(args))
    return _finish(harness, args, {**{t.name: t.lm for t in teachers}, args.fusor: fusor})


def _held_out(examples: list, run_dir: str) -> list:
    """``examples`` less those another run directory's journal holds (by harness example id)."""
    from fusion_dspy.evaluate import example_id
    from fusion_dspy.journal import read_entries

    journal = Path(run_dir) / "results.jsonl"
    if not journal.is_file():
        raise SystemExit(f"--exclude-run: {journal} does not exist; give a run directory of this script.")
    used = set()
    for entry in read_entries(journal):  # read-only: that run may still be going
        if entry.get("kind") == "candidates":
            used.add(entry["example"].split("-")[0])  # "<id>-<k>" is the k-th repeat of <id>
    kept = [e for e in examples if example_id(e) not in used]
    logging.getLogger(__name__).warning("--exclude-run: %d of %d segments are held out from %s",
                                        len(kept), len(examples), run_dir)
    return kept


def _finish(harness: Any, args: argparse.Namespace, models: dict[str, Any] | None = None) -> str:
    """Run the harness (resuming its journal), or with ``--report-only`` just report what the journal holds.

    ``models`` (name -> local LM): after a run, say how many of their replies filled the grammar's
    share of max_tokens (they parse, but were most likely cut short), counted in this process.
    """
    if args.report_only:
        return harness.report().to_markdown()
    table = harness.run(time_budget_s=args.budget_min * 60).to_markdown()
    from fusion_dspy import local

    cut = {name: local.cut_counts(lm) for name, lm in (models or {}).items()}
    text = "; ".join(f"{name} {field} x{count}" for name, fields in cut.items() for field, count in fields.items())
    if text:
        table += f"\nClosed at their share of max_tokens (in this process; they parse, but end mid-sentence): {text}.\n"
    return table


def _local(args: argparse.Namespace) -> dict:
    """``local.lm`` options shared by every model of a part: ``--threads``, ``--n-ctx`` and ``--prompt-cache``."""
    options: dict = {"n_threads": args.threads} if getattr(args, "threads", None) else {}
    if getattr(args, "n_ctx", None):
        options["n_ctx"] = args.n_ctx
    if getattr(args, "prompt_cache", False):
        options["prompt_cache"] = True
    return options


def _strategies(args: argparse.Namespace) -> list[str]:
    from fusion_dspy.strategies import STRATEGIES

    chosen = [s.strip() for s in (args.strategies or "").split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STRATEGIES]
    if unknown:
        raise SystemExit(f"--strategies: unknown {unknown}; choose from {list(STRATEGIES)}.")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parts = parser.add_subparsers(dest="part", required=True)
    wmt = parts.add_parser("wmt", help="WMT24 en-de, 5 recorded systems, local fusor")
    wmt.add_argument("--segments", type=int, default=50)
    wmt.add_argument("--max-chars", type=int, default=60, help="only segments with sources this short")
    wmt.add_argument("--exclude-run", default=None,
                     help="a run directory of this script: leave out the segments its journal holds (held-out data)")
    wmt.add_argument("--judge", default="qwen2.5-0.5b",
                     help="LLM-judge model (default: the 0.5B, for speed); 'none' skips bon-judge")
    select = parts.add_parser("wmt-select", help="WMT24 en-de, selection methods only (no LM calls)")
    select.add_argument("--segments", type=int, default=300)
    select.add_argument("--max-chars", type=int, default=None)
    select.add_argument("--out", required=True)
    math = parts.add_parser("math", help="GSM8K/MGSM with local teachers")
    math.add_argument("--data", default=None, help="gsm8k (default), mgsm_<lang>, or a file")
    math.add_argument("--problems", type=int, default=12)
    math.add_argument("--teacher", default="qwen2.5-0.5b",
                      help="one bundled model (self-MoA: sampled --samples times) or a comma-separated mixed pool")
    math.add_argument("--samples", type=int, default=4)
    math.add_argument("--ns", default=None, help="comma-separated N values to compare, e.g. 2,4 (default: --samples)")
    ifeval = parts.add_parser("ifeval", help="IFEval with a mixed pool of bundled models")
    ifeval.add_argument("--prompts", type=int, default=20)
    ifeval.add_argument("--teachers", default="qwen2.5-0.5b,smollm2-135m,qwen2.5-1.5b",
                        help="comma-separated bundled models, one draw each (N = their number)")
    for sub in (wmt, math, ifeval):
        sub.add_argument("--fusor", default="qwen2.5-1.5b")
        sub.add_argument("--max-tokens", type=int, default=200,
                         help="teachers' budget, shared in tokens by the reply's free-text fields "
                              "(GSM8K reasoning needs about 1024, long IFEval answers 2048+)")
        sub.add_argument("--fusor-max-tokens", type=int, default=None,
                         help="the fusor's budget (default: --max-tokens), shared in tokens by the comparison and "
                              "the answer's fields")
        sub.add_argument("--grammar", choices=("auto", "off"), default="auto")
        sub.add_argument("--budget-min", type=float, default=60.0, help="start no new example after this")
        sub.add_argument("--threads", type=int, default=None,
                         help="llama.cpp threads per model (1 when another model job shares the CPU)")
        sub.add_argument("--n-ctx", type=int, default=None,
                         help="llama.cpp context window per model (default 4096); the fusor's prompt holds every "
                              "candidate, so long answers (IFEval at 2048 tokens) need about N x max-tokens + 2048")
        sub.add_argument("--strategies", default="",
                         help="extra fusor strategies to run on the same candidates, e.g. edit,vote")
        sub.add_argument("--prompt-cache", action="store_true",
                         help="reuse llama.cpp's KV cache across requests with a common prompt prefix (faster; "
                              "a reply may then depend on the requests before it, so results reproduce only "
                              "when the requests run in the same order)")
        sub.add_argument("--out", required=True)
        sub.add_argument("--report-only", action="store_true",
                         help="no LM call: report what the run directory's journal holds (e.g. while it runs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    table = {"wmt": run_wmt, "wmt-select": run_wmt_select, "math": run_math, "ifeval": run_ifeval}[args.part](args)
    print(table)
    print(f"command: python {' '.join(sys.argv)}\nwall time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
