"""Does the optimizer's pick hold on held-out data? WMT24 en-de, 5 recorded systems, no LM call.

Issue 11 asks that the optimizer's pick never be below the best single teacher on its own valset, and
that this hold on a held-out split. Every answer here is a recorded system output, so a study costs
no model call: the search is over the pool, N and the selector in ``select`` mode (fusion would need
the local fusor; its cost is measured in ``fusion_quality.py``). For each of ``--splits`` random splits
of the segments into a valset and a held-out half, the script runs ``FusionOptimizer.compile`` on the
valset and scores, on both halves, paired on the same segments:

- the chosen configuration;
- the best single system *on the valset* (what a user would pick without us), and on held-out data;
- 5-way chrF-MBR selection.

It prints one row per split and the pooled held-out deltas with bootstrap CIs.

    python benchmarks/optimizer_pick.py --segments 300 --splits 5 --trials 30
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

SYSTEMS = ["GPT-4", "Claude-3.5", "Aya23", "Llama3-70B", "Phi-3-Medium"]


def _scores(program, examples, metric) -> list[float]:
    return [float(metric(example, program(**example.inputs()))) for example in examples]


def main() -> int:
    import optuna
    from fusion_dspy.optimizers import FusionOptimizer
    from fusion_dspy.optimizers import SearchSpace
    from fusion_dspy.optimizers.optimizer import CHOICE_ATTR
    from fusion_dspy.optimizers.reporting import describe_config
    from fusion_dspy.programs.recorded import recorded_teachers
    from fusion_dspy.programs.translate import Translate
    from fusion_dspy.programs.translate import chrf
    from fusion_dspy.programs.translate import load_wmt_general

    from fusion_dspy import Fuse
    from fusion_dspy.evaluate.stats import paired_bootstrap

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=300)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()

    examples = load_wmt_general(pair="en-de", systems=SYSTEMS, limit=args.segments)
    teachers = recorded_teachers(examples, SYSTEMS)
    singles = {t.name: Fuse(Translate, 1, teachers=[t], mode="select") for t in teachers}
    mbr = Fuse(Translate, 5, teachers=teachers, mode="select", selector="mbr")
    space = SearchSpace(n=(1, 5), temperatures=None, modes=("select",), selectors=("mbr", "majority"),
                        instructions=False)
    print("| split | chosen | val: chosen | val: best single | held-out: chosen | held-out: that single | "
          "held-out: MBR-5 |")
    print("|---|---|---|---|---|---|---|")
    pooled: dict[str, list[float]] = {"chosen": [], "single": [], "mbr": []}
    for split in range(args.splits):
        order = list(range(len(examples)))
        random.Random(split).shuffle(order)
        half = len(order) // 2
        val, held = [examples[i] for i in order[:half]], [examples[i] for i in order[half:]]
        opt = FusionOptimizer(metric=chrf, teachers=teachers, search_space=space, trials=args.trials,
                              num_instructions=0, pruner=None, seed=split, confirm=3)
        compiled = opt.compile(Fuse(Translate, 5, teachers=teachers, mode="select"), trainset=val, valset=val)
        choice = opt.study.user_attrs[CHOICE_ATTR]
        val_single = {name: sum(_scores(p, val, chrf)) / len(val) for name, p in singles.items()}
        best_single = max(val_single, key=val_single.get)
        chosen_held = _scores(compiled, held, chrf)
        single_held = _scores(singles[best_single], held, chrf)
        mbr_held = _scores(mbr, held, chrf)
        pooled["chosen"] += chosen_held
        pooled["single"] += single_held
        pooled["mbr"] += mbr_held
        config = describe_config({"self": compiled.settings.model_dump()})
        mean = sum(chosen_held) / len(held)
        print(f"| {split} | {config} | {choice['ci'][0]:.2f} | {val_single[best_single]:.2f} ({best_single}) | "
              f"{mean:.2f} | {sum(single_held) / len(held):.2f} | {sum(mbr_held) / len(held):.2f} |")
    for other, label in (("single", "the best single system on the valset"), ("mbr", "5-way chrF-MBR")):
        paired = paired_bootstrap(pooled["chosen"], pooled[other])
        print(f"held-out, chosen - {label}, pooled over {args.splits} splits ({len(pooled['chosen'])} scores): "
              f"{paired.diff:+.2f} [{paired.ci_low:+.2f}, {paired.ci_high:+.2f}], p = {paired.p_bootstrap:.3f}")
    print(f"{len(examples)} segments, {args.trials} trials per split; {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
