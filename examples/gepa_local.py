"""Compile a Fuse with ``dspy.GEPA`` on the bundled models, then measure it on held-out segments.

The task is WMT24 en-de translation of short segments; the candidates are five real systems' outputs
replayed from the WMT24 release (GPT-4, Claude-3.5, Aya23, Llama3-70B, Phi-3-Medium), so only the
fusor (Qwen2.5-Coder-1.5B) and GEPA's reflection model (the same model) run live. GEPA evolves the
fusor's instruction from its traces and the metric's feedback (:func:`chrf_feedback`: the fused
answer's chrF, what the best candidate scored, the reference). The Fuse's other predictor
(``generate``) only asks the recorded teachers, whose answers cannot change, so GEPA is told to
reflect on the fusor alone.

The same segments are never used twice: the first ``--train`` segments feed GEPA's reflection, the
next ``--val`` are its validation set, and the ``--test`` after those measure the uncompiled and the
compiled program on the same candidates (paired bootstrap over segments).

Needs the benchmark data (``$FUSION_DSPY_DATA_DIR`` with ``wmt24_general/en-de``) and
``pip install 'fusion-dspy[local]'``. At the defaults, about 30 fusor calls and a few reflection calls:
~12 minutes on an idle 2-core CPU.

    python examples/gepa_local.py [--budget 16] [--train 4 --val 4 --test 8]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
from fusion_dspy.programs.recorded import recorded_teachers  # noqa: E402
from fusion_dspy.programs.translate import Translate  # noqa: E402
from fusion_dspy.programs.translate import chrf  # noqa: E402
from fusion_dspy.programs.translate import chrf_feedback  # noqa: E402
from fusion_dspy.programs.translate import load_wmt_general  # noqa: E402

from fusion_dspy import Fuse  # noqa: E402
from fusion_dspy import local  # noqa: E402
from fusion_dspy.evaluate.stats import paired_bootstrap  # noqa: E402

SYSTEMS = ["GPT-4", "Claude-3.5", "Aya23", "Llama3-70B", "Phi-3-Medium"]


def fusor_only(state, trajectories, subsample_scores, candidate_idx, candidate) -> list[str]:
    """GEPA component selector: reflect on the fusor's instruction, never on ``generate``'s."""
    return [name for name in candidate if name.endswith("fusor")]


def score(program: dspy.Module, examples: list[dspy.Example]) -> list[float]:
    return [chrf(example, program(**example.inputs())) for example in examples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=16, help="GEPA's max_metric_calls")
    parser.add_argument("--train", type=int, default=4)
    parser.add_argument("--val", type=int, default=4)
    parser.add_argument("--test", type=int, default=8)
    parser.add_argument("--max-chars", type=int, default=60, help="only segments with sources this short")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (1 when the CPU is shared)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    segments = load_wmt_general(pair="en-de", systems=SYSTEMS, max_source_chars=args.max_chars,
                                limit=args.train + args.val + args.test)
    if len(segments) < args.train + args.val + args.test:
        raise SystemExit(f"only {len(segments)} segments with sources of at most {args.max_chars} characters")
    train = segments[: args.train]
    val = segments[args.train : args.train + args.val]
    test = segments[args.train + args.val :]

    threads = {"n_threads": args.threads} if args.threads else {}
    fusor = local.lm("qwen2.5-1.5b", temperature=0.0, max_tokens=200, **threads)
    reflection = local.lm("qwen2.5-1.5b", temperature=0.7, max_tokens=400, **threads)
    student = Fuse(Translate, 5, teachers=recorded_teachers(segments, SYSTEMS), fusor=fusor, max_threads=1)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as log_dir:
        optimizer = dspy.GEPA(metric=chrf_feedback, max_metric_calls=args.budget, reflection_lm=reflection,
                              reflection_minibatch_size=2, component_selector=fusor_only, perfect_score=100.0,
                              use_merge=False, num_threads=1, log_dir=log_dir, seed=0)
        compiled = optimizer.compile(student, trainset=train, valset=val)
    compile_s = time.perf_counter() - started

    started = time.perf_counter()
    before = score(student, test)
    after = score(compiled, test)
    test_s = time.perf_counter() - started
    diff = paired_bootstrap(after, before, resamples=2000)

    print(f"GEPA budget {args.budget} metric calls on {len(train)} train / {len(val)} val segments: "
          f"{compile_s:.0f} s")
    print("compiled fusor instruction:\n  " + compiled.fusor.signature.instructions.replace("\n", "\n  "))
    print(f"held-out chrF on {len(test)} segments ({test_s:.0f} s):")
    print(f"  uncompiled {statistics.mean(before):.2f}")
    print(f"  compiled   {statistics.mean(after):.2f}")
    print(f"  delta {diff.diff:+.2f} [{diff.ci_low:+.2f}, {diff.ci_high:+.2f}] (paired bootstrap 95% CI), "
          f"p={diff.p_bootstrap:.3f}; W/T/L {diff.wins}/{diff.ties}/{diff.losses}")


if __name__ == "__main__":
    main()
