"""``fusion-dspy optimize``: tune a program's Fuse modules with Optuna and write the compiled program.

Examples::

    fusion-dspy optimize --program math --config pool.toml --valset dev.jsonl --trials 40 \\
        --storage sqlite:///study.db --output math_fused.json
    fusion-dspy optimize --program mypkg.qa:program --config pool.toml --trainset train.jsonl \\
        --valset dev.jsonl --metric mypkg.qa:metric --storage postgresql://... --study-name qa
    fusion-dspy optimize ... --storage postgresql://... --study-name qa --worker   # on more machines
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fusion_dspy.cli.argtypes import int_range
from fusion_dspy.cli.argtypes import modes
from fusion_dspy.cli.argtypes import positive_int
from fusion_dspy.cli.argtypes import temperature_choices

__all__ = ["add_arguments", "parse_pools", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--program", required=True,
                        help="a task name (see fusion_dspy.programs.TASKS) or module:attr (a dspy.Module, a class "
                             "or a zero-argument factory)")
    parser.add_argument("--config", required=True, help="teacher pool config (.toml, .yaml or .json)")
    parser.add_argument("--trainset", help="training examples (.jsonl/.json); ground the instruction proposals")
    parser.add_argument("--valset", help="validation examples that score configurations (default: the trainset)")
    parser.add_argument("--limit", type=positive_int, help="use at most this many examples of each set")
    parser.add_argument("--inputs", help="comma-separated input fields of the records (default: the Fuse signature's)")
    parser.add_argument("--metric", default=None,
                        help="module:function, or 'exact' / 'chrf' (default: the task's metric, else 'exact')")
    parser.add_argument("--trials", type=positive_int, default=40, help="trial budget of the study (default 40)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage: sqlite:///study.db, postgresql://..., or a journal file path "
                             "(default: in memory)")
    parser.add_argument("--study-name", default=None, help="study name (needed to resume or to add workers)")
    parser.add_argument("--worker", action="store_true",
                        help="join an existing study as a worker and run queued trials (no output file); needs a "
                             "database --storage (sqlite:///... on one machine, postgresql://... across machines)")
    parser.add_argument("--objectives", default="quality", choices=["quality", "quality,cost"],
                        metavar="quality|quality,cost",
                        help="maximize quality, or find the quality/cost Pareto front")
    parser.add_argument("--max-cost", type=float, default=None, help="with quality,cost: pick the best under this cost")
    parser.add_argument("--n-range", type=int_range, default=(1, 8), help="inclusive range of N, e.g. 1,8")
    parser.add_argument("--temperatures", type=temperature_choices, default="0.3,0.7,1.0",
                        help="teacher temperature choices, or 'keep' for each teacher's own")
    parser.add_argument("--modes", type=modes, default="fuse,select,auto", help="modes to search")
    parser.add_argument("--pools", default=None,
                        help="named teacher pools to choose from instead of every subset, "
                             "e.g. 'diverse=qwen-0.5b,smollm2;strong=qwen-1.5b' (default: the config's [pools])")
    parser.add_argument("--num-instructions", type=int, default=3, help="fusor instructions to propose per Fuse")
    parser.add_argument("--minibatch-size", type=int, default=10, help="examples between pruning decisions")
    parser.add_argument("--n-jobs", type=int, default=1, help="trials run concurrently (threads)")
    parser.add_argument("--num-threads", type=int, default=4, help="examples scored concurrently within a trial")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heartbeat-interval", type=int, default=10, help="seconds (database storages)")
    parser.add_argument("--grace-period", type=int, default=30,
                        help="seconds without heartbeat before a trial counts as dead and is retried")
    parser.add_argument("--bank-dir", default=None, help="where the candidate bank lives (default: beside the study)")
    parser.add_argument("--bank-name", default=None,
                        help="the bank's folder under --bank-dir (default: the study name); studies naming one bank "
                             "share its draws and fusor replies")
    parser.add_argument("--no-bank", action="store_true", help="re-sample every trial (for comparison only)")
    parser.add_argument("--output", default=None, help="write the compiled program here (JSON)")
    parser.add_argument("--plots", default=None, help="write PNG plots to this directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import dspy

    from fusion_dspy.optimizers import FusionOptimizer
    from fusion_dspy.optimizers import SearchSpace
    from fusion_dspy.optimizers.reporting import describe_config
    from fusion_dspy.pool_config import load_pool_config

    pool = load_pool_config(args.config)
    teachers = pool.build_teachers()
    fusors = pool.build_fusors() or None
    program, metric, loader = _resolve_program(args.program, teachers, fusors)
    if args.metric is not None:
        metric = _resolve_metric(args.metric)
    elif metric is None:
        metric = _resolve_metric("exact")
    inputs = args.inputs.split(",") if args.inputs else None
    trainset = _load(args.trainset, loader, program, inputs, args.limit)
    valset = _load(args.valset, loader, program, inputs, args.limit) if args.valset else None
    if not trainset and not valset and loader is not None:
        valset = list(loader(None, limit=args.limit))  # The task's own data (FUSION_DSPY_DATA_DIR).
    if not trainset and not valset:
        raise ValueError("Give --trainset and/or --valset: the optimizer needs examples to score.")

    low, high = args.n_range
    space = SearchSpace(temperatures=args.temperatures, modes=args.modes,
                        pools=parse_pools(args.pools) if args.pools else pool.pools or None)
    progress = None if args.no_progress else _ProgressBar(args.trials)
    opt = FusionOptimizer(
        metric=metric, teachers=teachers, fusors=fusors, n_range=(low, high), trials=args.trials,
        storage=args.storage, study_name=args.study_name, objectives=tuple(args.objectives.split(",")),
        search_space=space, num_instructions=args.num_instructions, minibatch_size=args.minibatch_size,
        max_cost=args.max_cost, bank=not args.no_bank, bank_dir=args.bank_dir, bank_name=args.bank_name,
        seed=args.seed, n_jobs=args.n_jobs,
        num_threads=args.num_threads, heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
        callbacks=[progress.callback] if progress else [],
    )
    lm = next((lm for lm in (fusors or {}).values() if lm is not None), None)
    with dspy.context(**({"lm": lm} if lm is not None else {})):
        try:
            if args.worker:
                ran = opt.work(program, trainset=trainset or valset, valset=valset)
                print(f"worker finished: {ran} trial(s) run here", file=sys.stderr)
                return 0
            compiled = opt.compile(program, trainset=trainset or valset, valset=valset)
        finally:
            if progress:
                progress.close()
    report = opt.report(plots_dir=args.plots)
    print(report)
    print(f"\nchosen configuration (score {compiled.score:.4f}):")
    from fusion_dspy.optimizers import find_fuses

    print("  " + describe_config({path: fuse.settings.model_dump(mode="json")
                                  for path, fuse in find_fuses(compiled).items()}))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        compiled.save(args.output)
        print(f"compiled program written to {args.output}")
    return 0


def _resolve_program(spec: str, teachers: list[Any], fusors: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    """(program, metric or None, task loader or None) for a task name or ``module:attr``."""
    import dspy

    if ":" not in spec:
        from fusion_dspy import Fuse
        from fusion_dspy.programs import get_task

        task = get_task(spec)
        fusor = next(iter(fusors.values())) if fusors else None
        program = Fuse(task.signature, n=min(4, max(2, len(teachers))), teachers=teachers, fusor=fusor)
        return program, task.metric, task.load
    target = _import(spec)
    if isinstance(target, dspy.Module):
        return target, None, None
    if callable(target):
        program = target()
        if isinstance(program, dspy.Module):
            return program, None, None
    raise TypeError(f"{spec} is not a dspy.Module, a Module class or a factory returning one.")


def _import(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"Expected module:attr, got {spec!r}.")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ValueError(f"Cannot import {module_name!r} ({error}); is it on PYTHONPATH?") from error
    try:
        return getattr(module, attr)
    except AttributeError as error:
        raise ValueError(f"Module {module_name!r} has no attribute {attr!r}.") from error


def _resolve_metric(spec: str) -> Callable[..., float]:
    if spec == "exact":
        return _exact_match
    if spec == "chrf":
        return _chrf
    metric = _import(spec)
    if not callable(metric):
        raise TypeError(f"{spec} is not callable; a metric is metric(example, prediction, trace=None).")
    return metric


def _exact_match(example: Any, prediction: Any, trace: Any = None) -> float:
    """1.0 when every label field the prediction has matches after trimming and case folding."""
    labels = {k: v for k, v in example.labels().items() if k in prediction}
    if not labels:
        return 0.0
    return float(all(_norm(prediction[k]) == _norm(v) for k, v in labels.items()))


def _chrf(example: Any, prediction: Any, trace: Any = None) -> float:
    import sacrebleu

    labels = [k for k in example.labels() if k in prediction]
    if not labels:
        return 0.0
    key = labels[0]
    return sacrebleu.sentence_chrf(str(prediction[key]), [str(example[key])]).score / 100


def _norm(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value)).strip().casefold()


def _load(path: str | None, loader: Any, program: Any, inputs: list[str] | None, limit: int | None) -> list[Any]:
    import dspy

    if path is None:
        return []
    if loader is not None and inputs is None:
        return list(loader(path, limit=limit))
    text = Path(path).read_text(encoding="utf-8")
    records = json.loads(text) if path.endswith(".json") else [json.loads(line) for line in text.splitlines()
                                                              if line.strip()]
    if limit is not None:
        records = records[:limit]
    if inputs is None:
        from fusion_dspy.optimizers import find_fuses

        fuse = next(iter(find_fuses(program).values()))
        inputs = [name for name in fuse.signature.input_fields if records and name in records[0]]
        if not inputs:
            raise ValueError(f"Cannot tell the input fields of {path}; pass --inputs field1,field2.")
    return [dspy.Example(**record).with_inputs(*inputs) for record in records]


class _ProgressBar:
    """A tqdm bar over the study's trial budget, advanced by an optimizer callback."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="trial", file=sys.stderr)

    def callback(self, study: Any, trial: Any) -> None:
        import optuna

        if trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            self.bar.update(1)
            result = trial.user_attrs.get("result", {})
            if "quality" in result:
                self.bar.set_postfix(quality=f"{result['quality']:.3f}", calls=result["lm_calls"])

    def close(self) -> None:
        self.bar.close()


def parse_pools(text: str) -> dict[str, tuple[str, ...]]:
    """``"diverse=a,b;strong=c"`` -> ``{"diverse": ("a", "b"), "strong": ("c",)}``."""
    pools: dict[str, tuple[str, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, members = part.partition("=")
        teachers = tuple(filter(None, (m.strip() for m in members.split(","))))
        if not sep or not name.strip() or not teachers:
            raise ValueError(
                f"--pools: cannot read {part!r}; write NAME=TEACHER[,TEACHER...] and separate pools with ';', "
                "e.g. 'diverse=qwen-0.5b,smollm2;strong=qwen-1.5b' (teacher names from the pool config)."
            )
        if name.strip() in pools:
            raise ValueError(f"--pools: pool {name.strip()!r} is defined twice.")
        pools[name.strip()] = teachers
    if not pools:
        raise ValueError("--pools is empty; write NAME=TEACHER[,TEACHER...];... or leave it out.")
    return pools
