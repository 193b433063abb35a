"""``fusion-dspy synth``: a fused synthetic dataset from a prompt file and a teacher pool, resumable.

Run it again with the same arguments after an interruption (even ``kill -9``): finished prompts are
skipped, the one in flight is redone from its stored teacher draws, and the dataset is exported
once every prompt is done.
"""

from __future__ import annotations

import argparse
import functools
import itertools
from pathlib import Path
from typing import Any

from fusion_dspy.cli.argtypes import positive_int

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", required=True, help="JSON Lines file: one object per prompt (or a string)")
    parser.add_argument("--config", required=True, help="pool config (.toml/.yaml/.json) with teachers and fusors")
    parser.add_argument("--out", required=True, help="output directory (created; reused to resume)")
    parser.add_argument("--signature", default="prompt -> response",
                        help="task signature (default: prompt -> response)")
    parser.add_argument("--n", type=positive_int, default=None,
                        help="candidates per prompt (default: one per teacher sample)")
    parser.add_argument("--fusor", default=None, help="fusor name from the config (default: the first one)")
    parser.add_argument("--pool", default=None, help="a named pool from the config's [pools] (default: every teacher)")
    parser.add_argument("--mode", choices=("fuse", "auto"), default="fuse",
                        help="auto skips the fusor when the candidates agree")
    parser.add_argument("--also-select", nargs="?", const="mbr", default=None, metavar="SELECTOR",
                        help="also store the Best-of-N pick (default selector: mbr)")
    parser.add_argument("--format", choices=("records", "chat"), default="records",
                        help="chat: also write sft.jsonl with messages lists for SFT")
    parser.add_argument("--shard-size", type=int, default=500, help="records per checkpoint shard")
    parser.add_argument("--limit", type=positive_int, default=None, help="only the first LIMIT prompts")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the draws")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--concurrency", type=int, default=1, metavar="K",
                        help="prompts in flight at once (default 1); bound providers with [limits] in --config")
    parser.add_argument("--max-attempts", type=int, default=3,
                        help="tries per prompt before it is written to failed.jsonl (default 3)")
    parser.add_argument("--retry-failed", action="store_true", help="try the prompts in failed.jsonl again")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="run on Ray Data (the [ray] extra: pip install 'ray[data]>=2.60,<3'): 'local' starts "
                             "a local runtime, 'auto' joins this node's cluster, ray://host:10001 a remote one")
    parser.add_argument("--actors", type=int, default=2,
                        help="with --ray: actors in the pool, each with --concurrency prompts in flight")


def build_fuse(config_path: str, pool: str | None, fusor: str | None, signature: str, n: int | None, mode: str,
               seed: int) -> Any:
    """The Fuse of a ``synth`` command line (module-level, so Ray actors can build it too)."""
    from fusion_dspy import Fuse
    from fusion_dspy.pool_config import load_pool_config
    from fusion_dspy.pool_config import pick_fusor

    config = load_pool_config(config_path)
    teachers = config.build_teachers(pool)
    fusors = config.build_fusors()
    fusor_name = pick_fusor(fusors, fusor, source=config_path)
    if fusor_name is None:
        raise ValueError(f"{config_path} has no [[fusors]] entry; add one to fuse the candidates.")
    n = n if n is not None else sum(t.samples for t in teachers)
    return Fuse(signature, n, teachers=teachers, fusor=fusors[fusor_name], mode=mode, seed=seed)


def run(args: argparse.Namespace) -> int:
    from fusion_dspy.ray_options import RayOptions
    from fusion_dspy.synth import iter_prompts
    from fusion_dspy.synth import synthesize

    # A bad --ray/--actors/--concurrency fails before the pool config and the prompts are read.
    ray = None if args.ray is None else RayOptions(address=args.ray, actors=args.actors, concurrency=args.concurrency)
    make = functools.partial(build_fuse, str(Path(args.config).resolve()), args.pool, args.fusor, args.signature,
                             args.n, args.mode, args.seed)
    fuse = make()
    fields = list(fuse.signature.input_fields)
    # One pass checks the whole file (bad lines, duplicate ids) and counts it; the run then streams it.
    total = sum(1 for _ in itertools.islice(iter_prompts(args.prompts, fields), args.limit))
    prompts = itertools.islice(iter_prompts(args.prompts, fields), args.limit)
    options = dict(also_select=args.also_select, shard_size=args.shard_size, output_format=args.format,
                   progress=not args.no_progress, max_attempts=args.max_attempts, retry_failed=args.retry_failed,
                   total=total)
    if ray is not None:
        from fusion_dspy.synth.ray import synthesize_ray

        result = synthesize_ray(make, prompts, args.out, ray=ray, **options)
    else:
        result = synthesize(fuse, prompts, args.out, concurrency=args.concurrency, **options)
    print(f"{result.generated} generated, {result.resumed} resumed, {len(result.failed)} failed "
          f"of {result.total} prompts (config {result.config_hash}; {result.rows_per_s:.2f} rows/s, "
          f"{result.input_tokens + result.output_tokens} tokens)")
    for name, stats in result.limits.items():
        print(f"limits {name}: " + ", ".join(f"{key} {value}" for key, value in stats.items()))
    if result.stopped:
        print(f"stopped: {result.stopped}. Run the same command again once the quota is back.")
        return 1
    if result.failed_total:
        print(f"{result.failed_total} prompt(s) failed (causes in {result.out_dir}/failed.jsonl); "
              "add --retry-failed to try them again")
    if result.generated + result.resumed == 0:
        print("no prompt succeeded: nothing to export")
        return 1
    print(f"dataset: {result.out_dir}/dataset (Arrow), data.parquet, data.jsonl"
          + (", sft.jsonl" if args.format == "chat" else ""))
    return 0
