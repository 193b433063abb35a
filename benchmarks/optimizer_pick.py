"""Does the optimizer's pick hold on held-out data? WMT24 en-de, 5 recorded systems.

Issue 11 asks that the optimizer's pick never be below the best single teacher on its own valset, and
that this hold on a held-out split. Every candidate here is a recorded system output. For each of
``--splits`` random splits of the segments into a valset and a held-out half, the script runs
``FusionOptimizer.compile`` on the valset and scores, on both halves, paired on the same segments:

- the chosen configuration;
- the best single system *on the valset* (what a user would pick without us), and on held-out data;
- 5-way chrF-MBR selection.

It prints one row per split and the pooled held-out deltas with bootstrap CIs.

Without ``--fusor`` no model is called: the search is over the pool (any subset), N and the selector in
``select`` mode. With ``--fusor <catalog model>`` the space adds ``fuse`` mode, the selection guard and the
fusor strategies of ``--strategies``; to keep the fusor's calls few, the pool is then one of six named pools
(all five systems, or one system alone), so a fused configuration reads one of four candidate sets per segment
(N = 2..5 of the five) and a guard or selector change re-uses those fusor replies. The first trial is guarded
fusion of all five.

    python benchmarks/optimizer_pick.py --segments 300 --splits 5 --trials 30
    python benchmarks/optimizer_pick.py --segments 80 --max-chars 80 --splits 1 --trials 16 --fusor qwen2.5-1.5b
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

SYSTEMS = ["GPT-4", "Claude-3.5", "Aya23", "Llama3-70B", "Phi-3-Medium"]


def _scores(program, examples, metric) -> list[float]:
    return [float(metric(example, program(**example.inputs()))) for example in examples]


def search_space(*, fusion: bool, strategies: tuple[str, ...] = ("paper",), systems: list[str] = SYSTEMS):
    """The space searched: selection only, or with fusion, the guard and ``strategies`` (see the module doc)."""
    from fusion_dspy.optimizers import SearchSpace

    if not fusion:
        return SearchSpace(n=(1, 5), temperatures=None, modes=("select",), selectors=("mbr", "majority"),
                           instructions=False)
    from fusion_dspy import FusorPrompt

    pools = {"all": tuple(systems), **{name: (name,) for name in systems}}
    # The prompt's slots stay at FusorPrompt's defaults: each choice there would be another fusor call per segment.
    prompt = FusorPrompt()
    return SearchSpace(n=(1, 5), temperatures=None, pools=pools, modes=("select", "fuse"),
                       selectors=("mbr", "majority"), guards=(False, True), strategies=strategies,
                       instructions=False, criteria=(prompt.criteria,), discard_worst=(prompt.discard_worst,),
                       length_control=(prompt.length_control,))


def run(examples, *, systems: list[str], fusor=None, strategies: tuple[str, ...] = ("paper",), splits: int = 5,
        trials: int = 30, storage_dir: str | None = None, emit=print) -> dict:
    """Optimize on each split's valset and score its held-out half; ``emit`` gets the table lines.

    With ``storage_dir`` each split's study lives in ``<storage_dir>/split-<k>.jsonl`` and its memo of
    scores in ``<storage_dir>/banks/optimizer-pick-<k>/``; the splits share one candidate bank,
    ``<storage_dir>/banks/splits/``, so a fusor prompt is paid for once across splits and a killed run
    resumes where it stopped.

    Returns ``{"rows": [...], "pooled": {"chosen": [...], "single": [...], "mbr": [...]}, "studies": [...],
    "banks": [...]}`` (each split's :class:`~fusion_dspy.optimizers.BankStats`).
    """
    from fusion_dspy.optimizers import FusionOptimizer
    from fusion_dspy.optimizers.optimizer import CHOICE_ATTR
    from fusion_dspy.optimizers.reporting import describe_config
    from fusion_dspy.programs.recorded import recorded_teachers
    from fusion_dspy.programs.translate import Translate
    from fusion_dspy.programs.translate import chrf

    from fusion_dspy import Fuse

    teachers = recorded_teachers(examples, systems)
    singles = {t.name: Fuse(Translate, 1, teachers=[t], mode="select") for t in teachers}
    mbr = Fuse(Translate, len(teachers), teachers=teachers, mode="select", selector="mbr")
    space = search_space(fusion=fusor is not None, strategies=strategies, systems=systems)
    # The student is the optimizer's first trial: with a fusor, guarded fusion of the whole pool.
    student = (Fuse(Translate, len(teachers), teachers=teachers, mode="select") if fusor is None else
               Fuse(Translate, len(teachers), teachers=teachers, fusor=fusor, mode="fuse", guard=True))
    emit("| split | chosen | val: chosen | val: best single | held-out: chosen | held-out: that single | "
         "held-out: MBR-5 |")
    emit("|---|---|---|---|---|---|---|")
    pooled: dict[str, list[float]] = {"chosen": [], "single": [], "mbr": []}
    rows, studies, banks = [], [], []
    for split in range(splits):
        order = list(range(len(examples)))
        random.Random(split).shuffle(order)
        half = len(order) // 2
        val, held = [examples[i] for i in order[:half]], [examples[i] for i in order[half:]]
        # One bank for every split: a segment's draws and fusor replies are paid for once, whichever split
        # (valset or held-out half) asks first; each split keeps its own study and memo of scores.
        storage = {} if storage_dir is None else {
            "storage": str(Path(storage_dir) / f"split-{split}.jsonl"), "study_name": f"optimizer-pick-{split}",
            "bank_dir": str(Path(storage_dir) / "banks"), "bank_name": "splits"}
        opt = FusionOptimizer(metric=chrf, teachers=teachers, search_space=space, trials=trials,
                              num_instructions=0, pruner=None, seed=split, confirm=3, **storage,
                              **({"fusors": {"fusor": fusor}} if fusor is not None else {}))
        compiled = opt.compile(student, trainset=val, valset=val)
        studies.append(opt.study)
        banks.append(opt.bank.stats())
        choice = opt.study.user_attrs[CHOICE_ATTR]
        val_single = {name: sum(_scores(p, val, chrf)) / len(val) for name, p in singles.items()}
        best_single = max(val_single, key=val_single.get)
        compiled.store = opt.bank  # the held-out half's fusor replies are banked too (a resumed run re-uses them)
        chosen_held = _scores(compiled, held, chrf)
        single_held = _scores(singles[best_single], held, chrf)
        mbr_held = _scores(mbr, held, chrf)
        pooled["chosen"] += chosen_held
        pooled["single"] += single_held
        pooled["mbr"] += mbr_held
        row = {"split": split, "config": describe_config({"self": compiled.settings.model_dump()}),
               "val_chosen": choice["ci"][0], "val_single": val_single[best_single], "single": best_single,
               "held_chosen": sum(chosen_held) / len(held), "held_single": sum(single_held) / len(held),
               "held_mbr": sum(mbr_held) / len(held)}
        rows.append(row)
        emit(f"| {split} | {row['config']} | {row['val_chosen']:.2f} | {row['val_single']:.2f} ({best_single}) | "
             f"{row['held_chosen']:.2f} | {row['held_single']:.2f} | {row['held_mbr']:.2f} |")
    return {"rows": rows, "pooled": pooled, "studies": studies, "banks": banks}


def main() -> int:
    import optuna
    from fusion_dspy.programs.translate import load_wmt_general

    from fusion_dspy.evaluate.stats import paired_bootstrap

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=300)
    parser.add_argument("--max-chars", type=int, default=None, help="only segments whose source is this short")
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--fusor", default=None,
                        help="catalog model that fuses (e.g. qwen2.5-1.5b); adds fuse mode and the guard to the space")
    parser.add_argument("--fusor-max-tokens", type=int, default=160)
    parser.add_argument("--strategies", default="paper", help="fusor strategies searched, comma-separated")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads for the fusor")
    parser.add_argument("--out", default=None, help="directory for the studies (Optuna journals); a rerun resumes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()

    fusor = None
    if args.fusor is not None:
        from fusion_dspy import local

        if not local.is_installed(args.fusor):
            parser.error(f"--fusor: {args.fusor!r} is not installed (see `fusion-dspy models`).")
        threads = {"n_threads": args.threads} if args.threads else {}
        fusor = local.lm(args.fusor, temperature=0.0, max_tokens=args.fusor_max_tokens, **threads)
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    examples = load_wmt_general(pair="en-de", systems=SYSTEMS, max_source_chars=args.max_chars, limit=args.segments)
    result = run(examples, systems=SYSTEMS, fusor=fusor, strategies=strategies, splits=args.splits,
                 trials=args.trials, storage_dir=args.out)
    pooled = result["pooled"]
    for split, study in enumerate(result["studies"]):
        print(f"\nsplit {split}, completed trials (valset chrF; pruned ones are duplicate draws of a recorded system):")
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            params = ", ".join(f"{k.removeprefix('self.')}={v}" for k, v in sorted(trial.params.items()))
            print(f"- trial {trial.number}: {trial.value:.2f} ({params})")
        bank = result["banks"][split]
        print(f"bank: {bank.fusor_size} fusor replies ({bank.fusor_stored} paid in this run, {bank.fusor_hits} "
              f"re-used by another configuration or a resumed trial); {bank.size} recorded draws")
    print()
    for other, label in (("single", "the best single system on the valset"), ("mbr", "5-way chrF-MBR")):
        paired = paired_bootstrap(pooled["chosen"], pooled[other])
        print(f"held-out, chosen - {label}, pooled over {args.splits} splits ({len(pooled['chosen'])} scores): "
              f"{paired.diff:+.2f} [{paired.ci_low:+.2f}, {paired.ci_high:+.2f}], p = {paired.p_bootstrap:.3f}")
    print(f"{len(examples)} segments, {args.trials} trials per split; {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
