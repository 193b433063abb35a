"""Optimize a Fuse end to end on the bundled local models: which pool, which N, fuse or select?

Three teachers of very different strength (SmolLM2-135M, Qwen2.5-0.5B, Qwen2.5-1.5B) answer small
arithmetic word problems; Qwen2.5-1.5B is also the fusor. The local baseline (math word problems:
naive fusion 24%, the 1.5B model alone 68%) found that with teachers weaker than the fusor, fusion
copies their errors and the strong model alone wins. The optimizer starts from the student's
configuration and from each teacher alone at N=1, then lets TPE search N, the pool and
fuse-vs-select.

Everything runs offline on CPU (``pip install 'fusion-dspy[local]'``): about 9 minutes on 2 busy cores,
most of it the first trial (28 calls); later trials re-use the banked draws and pay only for fusor calls.
Re-running with the same ``--storage`` resumes the study and re-uses every banked generation.

    python examples/optimize_local.py [--trials 8] [--storage sqlite:///optimize_local.db]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
from fusion_dspy.optimizers import FusionOptimizer  # noqa: E402
from fusion_dspy.optimizers import SearchSpace  # noqa: E402
from fusion_dspy.optimizers.reporting import describe_config  # noqa: E402
from fusion_dspy.programs.math import exact_number_match  # noqa: E402

from fusion_dspy import Fuse  # noqa: E402
from fusion_dspy import Teacher  # noqa: E402
from fusion_dspy import local  # noqa: E402

PROBLEMS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "7"),
    ("A box holds 6 eggs. How many eggs are in 5 boxes?", "30"),
    ("Sara had 20 dollars and spent 8. How many dollars are left?", "12"),
    ("There are 4 rows of 7 chairs. How many chairs are there?", "28"),
    ("A train travels 60 km each hour for 3 hours. How many km does it travel?", "180"),
    ("Ben reads 15 pages a day. How many pages does he read in 4 days?", "60"),
    ("A pack has 12 pencils. Ann gives away 5. How many pencils remain?", "7"),
]


class Arithmetic(dspy.Signature):
    """Solve the word problem. Reply with the final answer as a single number."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="one number only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--storage", default=None, help="Optuna storage (default: a temporary SQLite file)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    storage = args.storage or f"sqlite:///{tempfile.mkdtemp(prefix='fusion-opt-')}/study.db"

    # cache=False: the optimizer's bank re-uses draws itself, and DSPy's cache would hide token costs.
    small = local.lm("smollm2-135m", max_tokens=24, cache=False)
    medium = local.lm("qwen2.5-0.5b", max_tokens=24, cache=False)
    large = local.lm("qwen2.5-1.5b", max_tokens=24, cache=False)
    teachers = [Teacher(small, name="smollm2-135m", temperature=0.7),
                Teacher(medium, name="qwen2.5-0.5b", temperature=0.7),
                Teacher(large, name="qwen2.5-1.5b", temperature=0.3)]
    # The naive setup: everyone, fused. max_threads=1: llama.cpp gains nothing from concurrent draws on
    # 2 cores, and llama-cpp-python's output suppression (verbose=False) is not thread-safe: concurrent
    # calls to different models can leave this process's stdout/stderr pointing at /dev/null.
    student = Fuse(Arithmetic, n=3, teachers=teachers, fusor=large, max_threads=1)

    examples = [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in PROBLEMS]
    space = SearchSpace(n=(1, 3), temperatures=None, modes=("fuse", "select"), selectors=("majority",),
                        instructions=False, criteria=(("correctness",),), discard_worst=(True,),
                        length_control=(False,))
    opt = FusionOptimizer(metric=exact_number_match, teachers=teachers, fusors={"qwen2.5-1.5b": large},
                          trials=args.trials, storage=storage, study_name="optimize-local", search_space=space,
                          num_instructions=0, pruner=None, num_threads=1, confirm=2)
    started = time.perf_counter()
    compiled = opt.compile(student, trainset=examples[:2], valset=examples)
    elapsed = time.perf_counter() - started

    print(opt.report())
    stats = opt.bank.stats()
    calls = sum(t.user_attrs.get("result", {}).get("lm_calls", 0) for t in opt.study.trials)
    print(f"\n{len(opt.study.trials)} trials, {elapsed:.0f} s in this run; {calls} LM calls made by the trials; "
          f"{stats.size} teacher generations in the bank ({stats.generated} new in this run, {stats.hits} re-used), "
          f"{stats.fusor_size} fusor replies ({stats.fusor_stored} new, {stats.fusor_hits} re-used)")
    print(f"student (naive fusion of all three): {describe_config({'self': student.settings.model_dump()})}")
    print(f"chosen configuration:                {describe_config({'self': compiled.settings.model_dump()})} "
          f"-> exact match {compiled.score:.2f} on {len(examples)} problems")


if __name__ == "__main__":
    main()
