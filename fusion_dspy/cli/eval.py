"""``fusion-dspy eval``: single vs Best-of-N vs Fusion vs oracle on a ready task, resumable.

Wires a task from :mod:`fusion_dspy.programs` (signature, metric, loader) to the task-agnostic
:class:`fusion_dspy.evaluate.Harness`. Teachers come from a pool config file, or are recorded system
outputs replayed from the data (``--recorded``), so only the fusor runs live. ``--ray ADDRESS``
runs the same harness on Ray Data (:func:`fusion_dspy.evaluate.ray.run_harness_ray`).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from fusion_dspy.cli.argtypes import ints
from fusion_dspy.cli.argtypes import positive_int

__all__ = ["add_arguments", "build_harness", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="translate, chat, factqa, math or instruct")
    parser.add_argument("--data", default=None,
                        help="data file, directory or hub name (default: the task's set in $FUSION_DSPY_DATA_DIR)")
    parser.add_argument("--config", default=None, help="pool config (.toml/.yaml/.json) with teachers and fusors")
    parser.add_argument("--recorded", default=None, metavar="SYSTEMS",
                        help="comma-separated recorded systems from the data (e.g. WMT system outputs) as teachers")
    parser.add_argument("--fusor", default=None,
                        help="fusor: a name from --config, or a model string (e.g. local/qwen2.5-1.5b)")
    parser.add_argument("--judge", default=None,
                        help="LM for the judge selector and the chat metric (name or model string; default: fusor)")
    parser.add_argument("--pool", default=None, help="a named pool from the config's [pools] (default: every teacher)")
    parser.add_argument("--n", type=ints, default=[1, 2, 4, 8], help="N values to compare (default 1,2,4,8)")
    parser.add_argument("--selectors", default=None, help="Best-of-N selectors, comma-separated (default: per task)")
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first LIMIT examples")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the draws")
    parser.add_argument("--out", default=None, help="output directory (default: runs/eval-<task>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--guard", action="store_true",
                        help="also report each fused method under the selection guard (fusion+guard; no LM call for "
                             "mbr/majority)")
    parser.add_argument("--strategies", default=None, metavar="NAMES",
                        help="also fuse the same candidates with these fusor strategies, comma-separated "
                             "(e.g. edit,vote; reported as fusion:<name> at the largest N)")
    parser.add_argument("--concurrency", type=int, default=1, metavar="K",
                        help="examples evaluated at once (default 1; with --ray: per actor); bound providers "
                             "with [limits] in --config")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="run on Ray Data (the [ray] extra: pip install 'ray[data]>=2.60,<3'): 'local' starts "
                             "a local runtime, 'auto' joins this node's cluster, ray://host:10001 a remote one")
    parser.add_argument("--actors", type=int, default=2,
                        help="with --ray: actors in the pool, each with --concurrency examples in flight")


def _build_lm(spec: str, fusors: dict[str, Any]) -> Any:
    from fusion_dspy.pool_config import LMSpec

    if spec in fusors:
        return fusors[spec]
    if "/" not in spec:
        raise ValueError(f"{spec!r} is neither a fusor in --config ({sorted(fusors)}) nor a model string like "
                         "local/qwen2.5-1.5b.")
    return LMSpec(name=spec, model=spec).build()


def _selectors(names: list[str], task: Any, judge: Any) -> list[Any]:
    from fusion_dspy.selectors import LLMJudge
    from fusion_dspy.selectors import MajorityVote
    from fusion_dspy.selectors import UniversalSelfConsistency
    from fusion_dspy.selectors import get_selector

    built = []
    for name in names:
        if name == "judge":
            built.append(LLMJudge(lm=judge))
        elif name == "usc":
            built.append(UniversalSelfConsistency(lm=judge))
        elif name == "majority":
            built.append(MajorityVote(fields=task.answer_fields))
        else:
            built.append(get_selector(name))
    return built


def build_harness(args: argparse.Namespace, out_dir: str) -> Any:
    """The Harness of an ``eval`` command line writing to ``out_dir`` (module-level, so Ray actors
    can build it too)."""
    from fusion_dspy import Fuse
    from fusion_dspy.evaluate import Harness
    from fusion_dspy.pool_config import load_pool_config
    from fusion_dspy.programs import get_task
    from fusion_dspy.programs.chat import PairwiseJudge
    from fusion_dspy.programs.recorded import recorded_teachers

    task = get_task(args.task)
    if args.config is None and args.recorded is None:
        raise ValueError("Give teachers: --config pool.toml, or --recorded SYSTEM1,SYSTEM2 to replay recorded outputs.")
    config = load_pool_config(args.config) if args.config else None  # a bad config fails before data loads
    examples = task.load(args.data, limit=args.limit)
    fusors = config.build_fusors() if config else {}
    if args.recorded:
        systems = [s.strip() for s in args.recorded.split(",") if s.strip()]
        available = set(examples[0].get("system_outputs") or {}) if examples else set()
        unknown = [s for s in systems if s not in available]
        if unknown:
            raise ValueError(f"--recorded: no outputs of {unknown} in the data; available: {sorted(available)}.")
        teachers = recorded_teachers(examples, systems)
    else:
        teachers = config.build_teachers(args.pool)
    fusor_spec = args.fusor or next(iter(fusors), None)
    if fusor_spec is None:
        raise ValueError("No fusor: add a [[fusors]] entry to --config or pass --fusor local/qwen2.5-1.5b.")
    fusor = _build_lm(fusor_spec, fusors)
    judge = _build_lm(args.judge, fusors) if args.judge else fusor
    selector_names = [s.strip() for s in args.selectors.split(",")] if args.selectors else list(task.selectors)
    selectors = _selectors(selector_names, task, judge)
    metric = PairwiseJudge(lm=judge) if isinstance(task.metric, PairwiseJudge) else task.metric

    fuse = Fuse(task.signature, max(args.n), teachers=teachers, fusor=fusor, selector=selectors[0], seed=args.seed)
    return Harness(
        fuse=fuse, metric=metric, examples=examples, ns=args.n, selectors=selectors, out_dir=out_dir,
        corpus_metric=task.corpus_metric, metric_name=task.metric_name, task=task.name,
        progress=not args.no_progress, concurrency=args.concurrency, guard=bool(getattr(args, "guard", False)),
        strategies=[name.strip() for name in (getattr(args, "strategies", None) or "").split(",") if name.strip()],
    )


def _portable(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments with local paths made absolute (Ray workers do not share the driver's cwd)."""
    values = {key: value for key, value in vars(args).items() if not callable(value) and not key.startswith("_")}
    for key in ("config", "data"):
        if values.get(key) is not None and Path(values[key]).exists():
            values[key] = str(Path(values[key]).resolve())
    return argparse.Namespace(**values)


def run(args: argparse.Namespace) -> int:
    from fusion_dspy.programs import get_task

    out = Path(args.out or f"runs/eval-{get_task(args.task).name}")
    if args.ray is not None:
        from fusion_dspy.evaluate.ray import RayOptions
        from fusion_dspy.evaluate.ray import run_harness_ray

        options = RayOptions(address=args.ray, actors=args.actors, concurrency=args.concurrency)
        report = run_harness_ray(functools.partial(build_harness, _portable(args)), out, ray=options)
    else:
        report = build_harness(args, str(out)).run()
    print(report.to_markdown())
    print(f"wrote {out}/report.json, report.md, sample_efficiency.png, cost_quality.png")
    return 0
