"""Rows per second of ``synthesize(..., concurrency=K)`` against the sequential run, measured in one run.

Teachers and fusor are FakeEngine LMs that sleep a fixed time per call (a stand-in for API latency:
0.2 s per teacher call, 0.4 s per fusor call by default), so the numbers isolate what the
framework adds: a prompt's critical path is one teacher call plus the fusor call. Every K writes a
real run directory (draw store, fsync'ed shards); the export is skipped (it is the same at any K).

    python benchmarks/synth_throughput.py [--teachers 5] [--ks 1,4,16,32,64] [--rpm 0]
    python benchmarks/synth_throughput.py --ray [--actors 2] [--ray-k 8]     # needs fusion-dspy[ray]

Goal (issue #12): rows/s at K >= 0.8 x K x the sequential rows/s, up to K = 32 (bounded by the LM
limits you set: ``--rpm`` and ``--max-concurrent`` put a client-side limit on every LM).

``--ray`` measures the Ray Data path on a local runtime (``ray.init(num_cpus=2)``) against the
in-process run at the same total concurrency (actors x K): the time per prompt after start-up is
the slope between a short and a long run (start-up, actor creation and the export cancel out).
Goal: overhead < 20 ms per prompt.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402

from fusion_dspy import Fuse  # noqa: E402
from fusion_dspy import Teacher  # noqa: E402
from fusion_dspy.limits import LMLimits  # noqa: E402
from fusion_dspy.limits import limited_lm  # noqa: E402
from fusion_dspy.synth import make_prompts  # noqa: E402
from fusion_dspy.synth import synthesize  # noqa: E402
from fusion_dspy.testing import FakeEngine  # noqa: E402


def build(teachers: int, teacher_delay: float, fusor_delay: float, limits: LMLimits | None) -> Fuse:
    pool = [
        Teacher(limited_lm(FakeEngine(name=f"t{i}", delay=teacher_delay).lm(), limits), name=f"t{i}")
        for i in range(teachers)
    ]
    fusor = FakeEngine(name="fusor", delay=fusor_delay, responder=lambda r: {"comparison": "c"})
    return Fuse("prompt -> response", teachers, teachers=pool, fusor=limited_lm(fusor.lm(), limits))


def measure(k: int, prompts: int, args: argparse.Namespace, limits: LMLimits | None, root: str) -> float:
    fuse = build(args.teachers, args.teacher_delay, args.fusor_delay, limits)
    work = make_prompts([{"prompt": f"k{k} prompt {i}"} for i in range(prompts)], ["prompt"])
    start = time.perf_counter()
    out = tempfile.mkdtemp(prefix=f"k{k}-", dir=root)
    result = synthesize(fuse, work, out, concurrency=k, progress=False, export=False)
    elapsed = time.perf_counter() - start
    assert result.generated == prompts and not result.failed, result
    return prompts / elapsed


def ray_overhead(args: argparse.Namespace, root: str) -> None:
    import functools

    import ray

    from fusion_dspy.synth.ray import RayOptions
    from fusion_dspy.synth.ray import synthesize_ray

    make = functools.partial(build, args.teachers, args.teacher_delay, args.fusor_delay, None)
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - started:.1f} s")
    total_k = args.actors * args.ray_k
    options = RayOptions(actors=args.actors, concurrency=args.ray_k)
    timings: dict[str, dict[int, float]] = {"local": {}, "ray": {}}
    for count in (args.short, args.long):
        work = make_prompts([{"prompt": f"n{count} prompt {i}"} for i in range(count)], ["prompt"])
        start = time.perf_counter()
        synthesize(make(), work, tempfile.mkdtemp(dir=root), concurrency=total_k, progress=False, export=False)
        timings["local"][count] = time.perf_counter() - start
        start = time.perf_counter()
        result = synthesize_ray(make, work, tempfile.mkdtemp(dir=root), ray=options, progress=False, export=False)
        timings["ray"][count] = time.perf_counter() - start
        assert result.generated == count, result
    span = args.long - args.short
    slope = {path: (t[args.long] - t[args.short]) / span for path, t in timings.items()}
    print(f"{args.actors} actors x K={args.ray_k} vs in-process K={total_k}; {args.short} and {args.long} prompts")
    print("| path | s (short) | s (long) | s/prompt after start-up |")
    print("|---|---|---|---|")
    for path, t in timings.items():
        print(f"| {path} | {t[args.short]:.2f} | {t[args.long]:.2f} | {slope[path] * 1000:.1f} ms |")
    overhead = (slope["ray"] - slope["local"]) * 1000
    print(f"Ray overhead per prompt after start-up: {overhead:.1f} ms (goal < 20 ms); "
          f"start-up (short run, Ray minus local): {timings['ray'][args.short] - timings['local'][args.short]:.1f} s")
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", type=int, default=5, help="teachers per prompt (one draw each)")
    parser.add_argument("--teacher-delay", type=float, default=0.2)
    parser.add_argument("--fusor-delay", type=float, default=0.4)
    parser.add_argument("--ks", default="1,4,16,32,64")
    parser.add_argument("--waves", type=int, default=4, help="prompts per K = waves x K (at least 8)")
    parser.add_argument("--rpm", type=float, default=0, help="requests per minute per LM (0: no limit)")
    parser.add_argument("--max-concurrent", type=int, default=0, help="calls in flight per LM (0: no limit)")
    parser.add_argument("--ray", action="store_true", help="measure the Ray path's overhead instead")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--ray-k", type=int, default=8, help="prompts in flight per actor")
    parser.add_argument("--short", type=int, default=48)
    parser.add_argument("--long", type=int, default=240)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    limits = LMLimits(requests_per_minute=args.rpm or None, max_concurrent=args.max_concurrent or None)
    ks = [int(k) for k in args.ks.split(",")]

    if args.ray:
        with tempfile.TemporaryDirectory() as root:
            ray_overhead(args, root)
        return
    with tempfile.TemporaryDirectory() as root:
        sequential = measure(1, 8, args, limits, root)
        path = args.teacher_delay + args.fusor_delay
        print(f"{args.teachers} teachers at {args.teacher_delay}s, fusor at {args.fusor_delay}s "
              f"(critical path {path:.1f}s); limits: {limits.model_dump(exclude_none=True)}")
        print(f"sequential: {sequential:.2f} rows/s ({1 / sequential:.3f} s/row, ideal {1 / path:.2f} rows/s)")
        # Every LM gets one call per prompt, so its limit caps the rows/s: K x sequential is the goal
        # only below that cap.
        caps = [float("inf")]
        if args.max_concurrent:
            caps += [args.max_concurrent / args.teacher_delay, args.max_concurrent / args.fusor_delay]
        if args.rpm:
            caps.append(args.rpm / 60)
        cap = min(caps)
        if cap != float("inf"):
            print(f"the limits cap the run at {cap:.1f} rows/s")
        print("| K | prompts | rows/s | speedup | speedup / K | goal (>= 0.8 x min(K x sequential, cap), K <= 32) |")
        print("|---|---|---|---|---|---|")
        for k in ks:
            prompts = max(8, args.waves * k)
            rate = measure(k, prompts, args, limits, root)
            speedup = rate / sequential
            goal = "" if k > 32 else ("met" if rate >= 0.8 * min(k * sequential, cap) else "missed")
            print(f"| {k} | {prompts} | {rate:.2f} | {speedup:.1f}x | {speedup / k:.2f} | {goal} |", flush=True)


if __name__ == "__main__":
    main()
