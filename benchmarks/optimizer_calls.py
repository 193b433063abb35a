"""How many LM calls a 30-trial study over N and the teacher pool makes, with and without the bank.

Offline and deterministic: three fake teachers of different accuracy and a fake fusor that gets
the answer right when most of the candidates it reads are right. The same study (same seed, same
sampler) runs twice: once with the candidate bank, once re-sampling every draw in every trial
(``bank=False``, which also turns off the evaluation memo). Every engine counts its calls.

    python benchmarks/optimizer_calls.py [--trials 30] [--examples 20]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import time
from collections.abc import Sequence

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
import optuna  # noqa: E402
from fusion_dspy.optimizers import FusionOptimizer  # noqa: E402
from fusion_dspy.optimizers import SearchSpace  # noqa: E402

from fusion_dspy import Fuse  # noqa: E402
from fusion_dspy import Teacher  # noqa: E402
from fusion_dspy.testing import FakeEngine  # noqa: E402
from fusion_dspy.testing import FakeRequest  # noqa: E402

ACCURACY = {"good": 0.8, "fair": 0.55, "poor": 0.3}


def right(question: str) -> str:
    return f"{question}!"


def teacher_engine(name: str) -> FakeEngine:
    def respond(request: FakeRequest) -> dict[str, str]:
        question = request.inputs["question"]
        roll = int(hashlib.sha256(f"{name}:{question}:{request.seed}".encode()).hexdigest()[:8], 16) / 2**32
        return {"answer": right(question) if roll < ACCURACY[name] else f"wrong-{name}-{request.seed}"}

    return FakeEngine(name=name, responder=respond)


def fusor_engine() -> FakeEngine:
    def respond(request: FakeRequest) -> dict[str, str]:
        question = request.inputs["question"]
        shown = request.inputs.get("candidates", "")
        total = max(1, len(re.findall(r"<candidate id=", shown)))
        good = shown.count(right(question))
        return {"comparison": "compared", "answer": right(question) if 2 * good >= total else "fused-wrong"}

    return FakeEngine(name="fusor", responder=respond)


def run(*, bank: bool, trials: int, examples: Sequence[dspy.Example], seed: int) -> dict[str, float]:
    engines = {name: teacher_engine(name) for name in ACCURACY}
    fusor = fusor_engine()
    teachers = [Teacher(engine.lm(), name=name, temperature=0.7) for name, engine in engines.items()]
    fusor_lm = fusor.lm()
    space = SearchSpace(temperatures=None, modes=("fuse",), instructions=False, criteria=(("content",),),
                        discard_worst=(True,), length_control=(False,))
    opt = FusionOptimizer(
        metric=lambda example, prediction, trace=None: example.answer == prediction.answer,
        teachers=teachers, fusors=[fusor_lm], n_range=(1, 8), trials=trials, search_space=space,
        num_instructions=0, bank=bank, seed=seed, minibatch_size=5, num_threads=4,
    )
    started = time.perf_counter()
    compiled = opt.compile(Fuse("question -> answer", n=4, teachers=teachers, fusor=fusor_lm),
                           trainset=examples[:3], valset=examples)
    teacher_calls = sum(engine.calls for engine in engines.values())
    states = [t.state for t in opt.study.trials]
    partial = sum(t.user_attrs.get("result", {}).get("complete") is False for t in opt.study.trials)
    return {
        "teacher": teacher_calls,
        "fusor": fusor.calls,
        "total": teacher_calls + fusor.calls,
        "unique_draws": opt.bank.stats().size if bank else float("nan"),
        "fusor_hits": opt.bank.stats().fusor_hits if bank else 0,
        "score": compiled.score,
        "complete": states.count(optuna.trial.TrialState.COMPLETE),
        "stopped": states.count(optuna.trial.TrialState.PRUNED) + partial,  # Wilcoxon stops return a mean
        "seconds": time.perf_counter() - started,
        "config": f"N={compiled.n} {'+'.join(compiled.settings.teachers[: compiled.n])}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    examples = [dspy.Example(question=f"q{i}", answer=right(f"q{i}")).with_inputs("question")
                for i in range(args.examples)]

    with_bank = run(bank=True, trials=args.trials, examples=examples, seed=args.seed)
    naive = run(bank=False, trials=args.trials, examples=examples, seed=args.seed)
    print(f"{args.trials}-trial study over N (1..8) and a 3-teacher pool, {args.examples} validation examples")
    print(f"{'':22}{'teacher':>9}{'fusor':>8}{'total':>8}{'score':>7}{'stopped':>8}{'time':>8}  chosen")
    for label, row in (("bank + memo", with_bank), ("naive re-sampling", naive)):
        print(f"{label:22}{row['teacher']:>9}{row['fusor']:>8}{row['total']:>8}{row['score']:>7.2f}"
              f"{row['stopped']:>8}{row['seconds']:>7.1f}s  {row['config']}")
    bound = with_bank["unique_draws"] + with_bank["fusor"]
    print(f"unique teacher generations + fusor calls = {with_bank['unique_draws']:.0f} + {with_bank['fusor']} "
          f"= {bound:.0f} >= calls with the bank ({with_bank['total']}): {with_bank['total'] <= bound}")
    print(f"fusor replies answered by the bank (another configuration sent the same prompt, e.g. the guard "
          f"on and off): {with_bank['fusor_hits']}")
    print(f"ratio naive / bank = {naive['total'] / with_bank['total']:.1f}x "
          f"(teacher calls alone: {naive['teacher'] / max(1, with_bank['teacher']):.1f}x)")


if __name__ == "__main__":
    main()
